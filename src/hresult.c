/*
 * hresult.c - the names of the result codes, and the funnels every failure
 * goes through.
 *
 * The funnels, each the natural breakpoint for what it reports:
 *   os_refused()     every system call the kernel refused: counted, described
 *                    (HOSTMEM_DEBUG=1 in the environment), mapped to a result;
 *   corruption_found() a heap structure found overwritten (a free-list link, a
 *                    block's tag): counted in heap_corruptions, described
 *                    (HOSTMEM_DEBUG=1); the caller refuses and follows nothing;
 *   manager_fail()   the single way into the disabled state (SPEC §2): after it
 *                    every call on the manager returns HOST_E_CLRNOTAVAILABLE;
 *                    "the manager could not vouch for its state";
 *   assert_fail()    a broken invariant, in builds with HOSTMEM_ASSERT (internal.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* The library's books in a guarded mapping (os_map_guarded), each refused side
 * call (a trim, the undo) counted against m (NULL: nobody's); the errno of the
 * refusal that failed it is returned for the caller to count. */
int os_map_books(struct manager *m, size_t size, size_t align, void **out)
{
    hm_assert(SEAM_RANGE(0, size) && align >= g_page);
    struct os_side side;
    int err = os_map_guarded(size, align, out, &side);
    for (int i = 0; m && i < side.refused; i++)
        os_refused(m, side.err, "munmap trimming or undoing a guarded mapping");
    return err;
}

HRESULT manager_fail(struct manager *m, const char *why)
{
    int live = STATE_LIVE;
    if (atomic_compare_exchange_strong(&m->state, &live, STATE_DISABLED) &&
        getenv("HOSTMEM_DEBUG"))
        fprintf(stderr, "hostmem: manager %u disabled: %s\n", m->id, why);
    return E_FAIL;
}

HRESULT os_refused(struct manager *m, int err, const char *what)
{
    hm_assert(err > 0);
    if (err == EEXIST)
        return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS); /* the address is taken: an answer */
    atomic_fetch_add_explicit(&m->os_refusals, 1, memory_order_relaxed);
    if (getenv("HOSTMEM_DEBUG"))
        fprintf(stderr, "hostmem: manager %u: %s refused (errno %d)\n", m->id, what, err);
    return E_OUTOFMEMORY;
}

void corruption_found(struct manager *m, const char *what)
{
    atomic_fetch_add_explicit(&m->heap_corruptions, 1, memory_order_relaxed);
    if (getenv("HOSTMEM_DEBUG"))
        fprintf(stderr, "hostmem: manager %u: heap corruption: %s\n", m->id, what);
}

HRESULT os_refused_stuck(struct manager *m, int err, const char *what)
{
    os_refused(m, err, what);
    return manager_fail(m, what);
}

void assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "hostmem: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}

static const struct {
    HRESULT hr;
    const char *name;
} result_names[] = {
    {S_OK, "S_OK"},
    {S_FALSE, "S_FALSE"},
    {E_NOTIMPL, "E_NOTIMPL"},
    {E_NOINTERFACE, "E_NOINTERFACE"},
    {E_POINTER, "E_POINTER"},
    {E_FAIL, "E_FAIL"},
    {E_OUTOFMEMORY, "E_OUTOFMEMORY"},
    {E_INVALIDARG, "E_INVALIDARG"},
    {HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), "ERROR_INVALID_ADDRESS"},
    {HRESULT_FROM_WIN32(ERROR_BAD_LENGTH), "ERROR_BAD_LENGTH"},
    {HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES), "ERROR_NO_SYSTEM_RESOURCES"},
    {HOST_E_INVALIDOPERATION, "HOST_E_INVALIDOPERATION"},
    {HOST_E_CLRNOTAVAILABLE, "HOST_E_CLRNOTAVAILABLE"},
    {HOST_E_TIMEOUT, "HOST_E_TIMEOUT"},
    {HOST_E_NOT_OWNER, "HOST_E_NOT_OWNER"},
    {HOST_E_ABANDONED, "HOST_E_ABANDONED"},
    {HOSTMEM_E_CONTENTS_LOST, "HOSTMEM_E_CONTENTS_LOST"},
    {HOSTMEM_E_DYNAMIC_CODE_BLOCKED, "HOSTMEM_E_DYNAMIC_CODE_BLOCKED"},
    {E_ACCESSDENIED, "E_ACCESSDENIED"},
};

const char *hostmem_result_name(HRESULT hr)
{
    for (size_t i = 0; i < sizeof result_names / sizeof result_names[0]; i++)
        if (result_names[i].hr == hr)
            return result_names[i].name;
    return NULL;
}
