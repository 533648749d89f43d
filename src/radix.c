/*
 * radix.c - which manager, reservation or arena owns an address.
 *
 * A process-wide two-level table: the top level has one slot per GiB of the
 * 47-bit user address space; a leaf has one entry per granule of that GiB.
 * Readers (VirtualQuery, the foreign-pointer check of VirtualFree) use atomic
 * loads only, so they never wait. Leaves are created on demand, installed with
 * a compare-and-swap, and never freed: a stale reader can always read a leaf.
 * Each entry is written only by the manager whose id it carries, under that
 * manager's rules (internal.h).
 */
#include "internal.h"

#define LEAF_SHIFT 30
#define TOP_SLOTS ((size_t)1 << (ADDRESS_BITS - LEAF_SHIFT))

static _Atomic(_Atomic uintptr_t *) radix_top[TOP_SLOTS];

static size_t leaf_entries(void)
{
    return (size_t)1 << (LEAF_SHIFT - g_granule_shift);
}

uintptr_t radix_load(uintptr_t address)
{
    if (address >= ADDRESS_LIMIT)
        return 0;
    _Atomic uintptr_t *leaf =
        atomic_load_explicit(&radix_top[address >> LEAF_SHIFT], memory_order_acquire);
    if (!leaf)
        return 0;
    size_t i = (address & (((uintptr_t)1 << LEAF_SHIFT) - 1)) >> g_granule_shift;
    return atomic_load_explicit(&leaf[i], memory_order_acquire);
}

HRESULT radix_prepare(uintptr_t start, uintptr_t end)
{
    if (end > ADDRESS_LIMIT || start >= end)
        return E_OUTOFMEMORY;
    for (uintptr_t slot = start >> LEAF_SHIFT; slot <= (end - 1) >> LEAF_SHIFT; slot++) {
        if (atomic_load_explicit(&radix_top[slot], memory_order_acquire))
            continue;
        void *fresh;
        size_t bytes = leaf_entries() * sizeof(uintptr_t);
        int err = hostmem_os->map(NULL, bytes, OS_PROT_READ | OS_PROT_WRITE, 0, &fresh);
        if (err)
            return E_OUTOFMEMORY;
        _Atomic uintptr_t *expected = NULL;
        if (!atomic_compare_exchange_strong_explicit(&radix_top[slot], &expected, fresh,
                                                     memory_order_acq_rel, memory_order_acquire))
            hostmem_os->unmap(fresh, bytes); /* another thread installed one */
    }
    return S_OK;
}

void radix_store_range(uintptr_t start, uintptr_t end, uintptr_t entry)
{
    for (uintptr_t a = granule_down(start); a < end; a += g_granule) {
        _Atomic uintptr_t *leaf =
            atomic_load_explicit(&radix_top[a >> LEAF_SHIFT], memory_order_acquire);
        size_t i = (a & (((uintptr_t)1 << LEAF_SHIFT) - 1)) >> g_granule_shift;
        atomic_store_explicit(&leaf[i], entry, memory_order_release);
    }
}
