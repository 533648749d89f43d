/*
 * lj_hostmem.c - LuaJIT's Win32 virtual-memory calls on an IHostMemoryManager.
 *
 * Owns: the attached manager, each calling thread's last error, the per-client
 * counts, and the list of live machine-code areas (for the host's checks).
 *
 * Every call is one method of the manager with the same arguments, so LuaJIT's
 * Windows code path sees Windows' answers: a reservation at a hint where the
 * address space is free and ERROR_INVALID_ADDRESS where it is not (lj_mcode.c
 * probes for space near the VM that way), MEM_RELEASE of a whole reservation
 * only, VirtualQuery runs that stop at a reservation's end (lj_alloc.c walks
 * coalesced segments with it), and protection changes on committed pages only.
 * The glue adds no policy of its own and must never touch memory itself: a
 * refusal is passed on as NULL or FALSE, and LuaJIT decides what it means -
 * also a refusal by the manager's dynamic-code policy, which LuaJIT reads as
 * GetLastError() == ERROR_DYNAMIC_CODE_BLOCKED, as under Windows' Arbitrary
 * Code Guard.
 *
 * Every request is eTaskCritical: LuaJIT copes with a refusal at once (its
 * allocator raises "not enough memory", its trace compiler abandons the trace),
 * so there is nothing to gain from waiting for memory and no reason to dip into
 * the host's emergency reserve.
 */
#define COBJMACROS
#include "lj_hostmem.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* Win32 error codes the glue reports itself. */
#define LJ_ERROR_GEN_FAILURE 31u /* the manager failed in a way Win32 has no code for */
#define LJ_ERROR_NOT_READY 21u   /* no manager attached */
#define LJ_FACILITY_WIN32 7

static _Atomic(IHostMemoryManager *) attached;
static _Thread_local DWORD last_error;

enum {
    COUNT_ALLOCS,
    COUNT_ALLOC_FAILURES,
    COUNT_FREES,
    COUNT_FREE_FAILURES,
    COUNT_QUERIES,
    COUNT_QUERY_FAILURES,
    COUNT_PROTECTS,
    COUNT_PROTECT_FAILURES,
    COUNT_TO_EXECUTABLE,
    COUNT_TO_WRITABLE,
    COUNT_WRITABLE_AND_EXECUTABLE,
    COUNT_OUT_OF_MEMORY,
    COUNT_CODE_BLOCKED,
    COUNTS
};
static atomic_size_t counts[LJ_HOSTMEM_CLIENTS][COUNTS];

/* Live code areas. LuaJIT keeps at most maxmcode/sizemcode trace areas (8 by
 * default) and one callback area; the table is generous so that scripts that
 * shrink sizemcode still fit. Past it, areas_lost says the list is incomplete. */
#define MAX_AREAS 1024
static pthread_mutex_t areas_lock = PTHREAD_MUTEX_INITIALIZER;
static lj_hostmem_area areas[MAX_AREAS];
static size_t area_count;
static int areas_lost;

static void count(int client, int what)
{
    atomic_fetch_add_explicit(&counts[client][what], 1, memory_order_relaxed);
}

/* Win32 keeps a failure's reason per thread; HRESULTs of FACILITY_WIN32 carry
 * it in their low word (E_OUTOFMEMORY is ERROR_OUTOFMEMORY, E_INVALIDARG is
 * ERROR_INVALID_PARAMETER, ...). */
static void fail(int client, int what, HRESULT hr)
{
    DWORD code = (DWORD)hr;
    count(client, what);
    if (hr == E_OUTOFMEMORY)
        count(client, COUNT_OUT_OF_MEMORY);
    else if (hr == HOSTMEM_E_DYNAMIC_CODE_BLOCKED)
        count(client, COUNT_CODE_BLOCKED);
    if (((code >> 16) & 0x1FFFu) == LJ_FACILITY_WIN32)
        last_error = code & 0xFFFFu;
    else
        last_error = LJ_ERROR_GEN_FAILURE;
}

static int is_code(int client)
{
    return client == LJ_HOSTMEM_MCODE || client == LJ_HOSTMEM_CALLBACK;
}

static int valid_client(int client)
{
    return client >= 0 && client < LJ_HOSTMEM_CLIENTS;
}

static int writable_and_executable(DWORD protect)
{
    return (protect & (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY)) != 0;
}

static void area_add(void *base, size_t size, int client)
{
    pthread_mutex_lock(&areas_lock);
    if (area_count < MAX_AREAS)
        areas[area_count++] = (lj_hostmem_area){base, size, client};
    else
        areas_lost = 1;
    pthread_mutex_unlock(&areas_lock);
}

static void area_remove(void *base)
{
    pthread_mutex_lock(&areas_lock);
    for (size_t i = 0; i < area_count; i++) {
        if (areas[i].base == base) {
            areas[i] = areas[--area_count];
            break;
        }
    }
    pthread_mutex_unlock(&areas_lock);
}

void lj_hostmem_attach(IHostMemoryManager *manager)
{
    if (manager)
        IHostMemoryManager_AddRef(manager);
    IHostMemoryManager *old = atomic_exchange(&attached, manager);
    if (old)
        IHostMemoryManager_Release(old);
}

void lj_hostmem_get_counts(int client, lj_hostmem_counts *out)
{
    memset(out, 0, sizeof *out);
    if (!valid_client(client))
        return;
    atomic_size_t *c = counts[client];
    out->allocs = atomic_load(&c[COUNT_ALLOCS]);
    out->alloc_failures = atomic_load(&c[COUNT_ALLOC_FAILURES]);
    out->frees = atomic_load(&c[COUNT_FREES]);
    out->free_failures = atomic_load(&c[COUNT_FREE_FAILURES]);
    out->queries = atomic_load(&c[COUNT_QUERIES]);
    out->query_failures = atomic_load(&c[COUNT_QUERY_FAILURES]);
    out->protects = atomic_load(&c[COUNT_PROTECTS]);
    out->protect_failures = atomic_load(&c[COUNT_PROTECT_FAILURES]);
    out->to_executable = atomic_load(&c[COUNT_TO_EXECUTABLE]);
    out->to_writable = atomic_load(&c[COUNT_TO_WRITABLE]);
    out->writable_and_executable = atomic_load(&c[COUNT_WRITABLE_AND_EXECUTABLE]);
    out->out_of_memory = atomic_load(&c[COUNT_OUT_OF_MEMORY]);
    out->code_blocked = atomic_load(&c[COUNT_CODE_BLOCKED]);
}

void lj_hostmem_reset_counts(void)
{
    for (int client = 0; client < LJ_HOSTMEM_CLIENTS; client++)
        for (int what = 0; what < COUNTS; what++)
            atomic_store(&counts[client][what], 0);
    pthread_mutex_lock(&areas_lock);
    areas_lost = 0;
    pthread_mutex_unlock(&areas_lock);
}

size_t lj_hostmem_code_areas(lj_hostmem_area *out, size_t max)
{
    pthread_mutex_lock(&areas_lock);
    size_t n = areas_lost ? (size_t)-1 : area_count;
    for (size_t i = 0; i < area_count && i < max; i++)
        out[i] = areas[i];
    pthread_mutex_unlock(&areas_lock);
    return n;
}

void *lj_hostmem_VirtualAlloc(int client, void *address, SIZE_T size, DWORD type, DWORD protect)
{
    IHostMemoryManager *m = atomic_load(&attached);
    void *mem = NULL;
    if (!valid_client(client)) {
        last_error = ERROR_INVALID_PARAMETER;
        return NULL;
    }
    count(client, COUNT_ALLOCS);
    if (writable_and_executable(protect))
        count(client, COUNT_WRITABLE_AND_EXECUTABLE);
    if (!m) {
        count(client, COUNT_ALLOC_FAILURES);
        last_error = LJ_ERROR_NOT_READY;
        return NULL;
    }
    HRESULT hr = IHostMemoryManager_VirtualAlloc(m, address, size, type, protect, eTaskCritical, &mem);
    if (hr != S_OK) {
        fail(client, COUNT_ALLOC_FAILURES, hr);
        return NULL;
    }
    /* LuaJIT runs code from [mem, mem + size): that is the area to check. */
    if (is_code(client) && (type & MEM_RESERVE))
        area_add(mem, size, client);
    return mem;
}

BOOL lj_hostmem_VirtualFree(int client, void *address, SIZE_T size, DWORD type)
{
    IHostMemoryManager *m = atomic_load(&attached);
    if (!valid_client(client)) {
        last_error = ERROR_INVALID_PARAMETER;
        return 0;
    }
    count(client, COUNT_FREES);
    if (!m) {
        count(client, COUNT_FREE_FAILURES);
        last_error = LJ_ERROR_NOT_READY;
        return 0;
    }
    HRESULT hr = IHostMemoryManager_VirtualFree(m, address, size, type);
    if (hr != S_OK) {
        fail(client, COUNT_FREE_FAILURES, hr);
        return 0;
    }
    if (is_code(client) && type == MEM_RELEASE)
        area_remove(address);
    return 1;
}

SIZE_T lj_hostmem_VirtualQuery(int client, const void *address, MEMORY_BASIC_INFORMATION *info,
                               SIZE_T length)
{
    IHostMemoryManager *m = atomic_load(&attached);
    SIZE_T written = 0;
    if (!valid_client(client)) {
        last_error = ERROR_INVALID_PARAMETER;
        return 0;
    }
    count(client, COUNT_QUERIES);
    if (!m) {
        count(client, COUNT_QUERY_FAILURES);
        last_error = LJ_ERROR_NOT_READY;
        return 0;
    }
    /* The interface takes a non-const address; VirtualQuery never writes there. */
    HRESULT hr = IHostMemoryManager_VirtualQuery(m, (void *)(uintptr_t)address, info, length,
                                                 &written);
    if (hr != S_OK) {
        fail(client, COUNT_QUERY_FAILURES, hr);
        return 0;
    }
    return written;
}

BOOL lj_hostmem_VirtualProtect(int client, void *address, SIZE_T size, DWORD protect,
                               DWORD *old_protect)
{
    IHostMemoryManager *m = atomic_load(&attached);
    if (!valid_client(client)) {
        last_error = ERROR_INVALID_PARAMETER;
        return 0;
    }
    count(client, COUNT_PROTECTS);
    if (protect == PAGE_EXECUTE_READ)
        count(client, COUNT_TO_EXECUTABLE);
    else if (protect == PAGE_READWRITE)
        count(client, COUNT_TO_WRITABLE);
    else if (writable_and_executable(protect))
        count(client, COUNT_WRITABLE_AND_EXECUTABLE);
    if (!m) {
        count(client, COUNT_PROTECT_FAILURES);
        last_error = LJ_ERROR_NOT_READY;
        return 0;
    }
    HRESULT hr = IHostMemoryManager_VirtualProtect(m, address, size, protect, old_protect);
    if (hr != S_OK) {
        fail(client, COUNT_PROTECT_FAILURES, hr);
        return 0;
    }
    return 1;
}

DWORD lj_hostmem_GetLastError(void)
{
    return last_error;
}

void lj_hostmem_SetLastError(DWORD error)
{
    last_error = error;
}
