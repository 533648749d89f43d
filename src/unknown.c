/*
 * unknown.c - IUnknown for every object hostmem hands out: the interface ids
 * and the one QueryInterface both objects (the manager, com.c; a heap, heap.c)
 * answer with.
 *
 * Depends on nothing but the public header: the COM objects above it call
 * down to it, never to each other. Must never: take a lock or allocate.
 */
#include <string.h>

#include "internal.h"

const IID IID_IUnknown = {0x00000000, 0x0000, 0x0000, {0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x46}};
const IID IID_IHostMemoryManager = {0x7BC698D1, 0xF9E3, 0x4460, {0x9C, 0xDE, 0xD0, 0x42, 0x48, 0xE9, 0xFA, 0x25}};
const IID IID_IHostMalloc = {0x1831991C, 0xCC53, 0x4A31, {0xB2, 0x18, 0x04, 0xE9, 0x10, 0x44, 0x64, 0x79}};
const IID IID_ICLRMemoryNotificationCallback = {0x47EB8E57, 0x0846, 0x4546, {0xAF, 0x76, 0x6F, 0x42, 0xFC, 0xFC, 0x26, 0x49}};

static bool iid_equal(const IID *a, const IID *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

HRESULT unknown_query(void *self, _Atomic uint32_t *references, const IID *own, REFIID riid,
                      void **ppv)
{
    if (!ppv)
        return E_POINTER;
    if (!riid) {
        *ppv = NULL;
        return E_INVALIDARG;
    }
    if (iid_equal(riid, &IID_IUnknown) || iid_equal(riid, own)) {
        atomic_fetch_add(references, 1);
        *ppv = self;
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
