/*
 * radix.c - which manager, reservation or arena owns an address.
 *
 * A process-wide two-level radix tree: the top level has one slot per GiB of the
 * 47-bit user address space; a leaf has one entry per granule of that GiB.
 * A top-level slot holds 0, a leaf, or (RADIX_TOP_WHOLE set) one entry that stands for
 * every granule of its GiB: a standalone reservation that covers whole GiBs
 * costs one word per GiB, not a leaf (a 256 GiB reservation: 256 words).
 *
 * Readers (VirtualQuery, the foreign-pointer check of VirtualFree) use atomic
 * loads only, so they never wait. Leaves are created on demand, installed with
 * a compare-and-swap, and never freed: a stale reader can always read a leaf.
 * A slot holding a whole-GiB entry is cleared before its address space can be
 * mapped again, so a slot never turns from such an entry into a leaf while the
 * entry is live. Each entry is written only by the manager whose id it carries.
 */
#include <errno.h>

#include "internal.h"

#define LEAF_SHIFT RADIX_LEAF_SHIFT
#define LEAF_SPAN ((uintptr_t)1 << LEAF_SHIFT)
#define TOP_WHOLE RADIX_TOP_WHOLE

_Atomic uintptr_t radix_top[(size_t)1 << (ADDRESS_BITS - LEAF_SHIFT)];

static size_t leaf_entries(void)
{
    return (size_t)1 << (LEAF_SHIFT - g_granule_shift);
}

/* A leaf: its entries, then one reservation slot per granule. An arena
 * reservation's record is the slot of its first granule, so a lookup can fetch
 * it at the same time as the entry that names it. */
static size_t leaf_bytes(void)
{
    return leaf_entries() * (sizeof(uintptr_t) + sizeof(struct reservation));
}

static inline struct reservation *slot_at(uintptr_t leaf, size_t i)
{
    return (struct reservation *)(leaf + leaf_entries() * sizeof(uintptr_t)) + i;
}

struct reservation *radix_slot(uintptr_t address)
{
    uintptr_t v = radix_top_load(address);
    if (!v || (v & TOP_WHOLE))
        return NULL;
    return slot_at(v, radix_leaf_index(address));
}

/* The entry for address, and starts fetching the granule's record slot (the
 * likely record: a reservation that starts there). */
uintptr_t radix_load_prefetch(uintptr_t address)
{
    uintptr_t v = radix_top_load(address);
    if (v && !(v & TOP_WHOLE)) {
        const char *slot = (const char *)slot_at(v, radix_leaf_index(address));
        __builtin_prefetch(slot);
        __builtin_prefetch(slot + sizeof(struct reservation) - 1);
    }
    return radix_load(address);
}

/* Does [start, end) cover the whole GiB of slot? */
static inline bool covers_slot(uintptr_t slot, uintptr_t start, uintptr_t end)
{
    return start <= slot << LEAF_SHIFT && end >= (slot + 1) << LEAF_SHIFT;
}

/*
 * Leaves come from 2 MiB chunks backed by huge pages where the kernel allows:
 * a random lookup over a million reservations then misses the TLB far less.
 * A chunk is carved with a compare-and-swap on one word; leaves are never freed.
 */
#define LEAF_CHUNK ((size_t)2 << 20)
/* the largest leaf: 64 KiB granules (larger pages make fewer, smaller leaves) */
_Static_assert(((size_t)1 << (LEAF_SHIFT - 16)) * (sizeof(uintptr_t) + sizeof(struct reservation)) <=
                   LEAF_CHUNK,
               "a leaf fits a chunk");
static _Atomic uintptr_t leaf_pool; /* next free byte; a chunk's end is 2 MiB aligned */
_Atomic size_t radix_leaf_bytes HIDDEN; /* address space kept for leaves (tests account for it) */

static int leaf_new(struct manager *m, size_t bytes, void **out)
{
    for (;;) {
        uintptr_t next = atomic_load_explicit(&leaf_pool, memory_order_acquire);
        uintptr_t used = next & (LEAF_CHUNK - 1); /* 0: no chunk, or the chunk is spent */
        if (used && used + bytes <= LEAF_CHUNK) {
            if (atomic_compare_exchange_weak_explicit(&leaf_pool, &next, next + bytes,
                                                      memory_order_acq_rel, memory_order_acquire)) {
                *out = (void *)next;
                return 0;
            }
            continue;
        }
        void *p;
        /* an inaccessible page on each side: leaves hold reservations' records,
         * never beside a page the runtime is handed (docs/security.md) */
        int err = os_map_books(m, LEAF_CHUNK, LEAF_CHUNK, &p);
        if (err)
            return err;
        uintptr_t aligned = (uintptr_t)p;
        os_advise_huge(p, LEAF_CHUNK);
        atomic_fetch_add(&radix_leaf_bytes, LEAF_CHUNK + 2 * g_page);
        /* the first leaf is ours; the rest of the chunk is offered to everyone
         * (if another thread refilled the pool meanwhile, the rest goes unused) */
        atomic_compare_exchange_strong_explicit(&leaf_pool, &next, aligned + bytes, memory_order_acq_rel,
                                                memory_order_acquire);
        *out = p;
        return 0;
    }
}

int radix_prepare(struct manager *m, uintptr_t start, uintptr_t end, bool whole_ok)
{
    hm_assert(start < end && end <= ADDRESS_LIMIT); /* callers pass mapped address space */
    if (end > ADDRESS_LIMIT || start >= end)
        return ENOMEM;
    for (uintptr_t slot = start >> LEAF_SHIFT; slot <= (end - 1) >> LEAF_SHIFT; slot++) {
        uintptr_t v = atomic_load_explicit(&radix_top[slot], memory_order_acquire);
        if (v & TOP_WHOLE) {
            hm_unreachable("a whole-GiB slot is cleared before its address space is mapped again");
            return ENOMEM;
        }
        if (v || (whole_ok && covers_slot(slot, start, end)))
            continue;
        void *fresh;
        int err = leaf_new(m, leaf_bytes(), &fresh);
        if (err)
            return err;
        uintptr_t expected = 0;
        /* a leaf that loses the race stays unused: leaves are never given back */
        atomic_compare_exchange_strong_explicit(&radix_top[slot], &expected, (uintptr_t)fresh,
                                                memory_order_acq_rel, memory_order_acquire);
    }
    return 0;
}

void radix_store_range(uintptr_t start, uintptr_t end, uintptr_t entry, bool whole_ok)
{
    uintptr_t a = granule_down(start);
    while (a < end) {
        uintptr_t slot = a >> LEAF_SHIFT;
        uintptr_t v = atomic_load_explicit(&radix_top[slot], memory_order_acquire);
        if (whole_ok && (!v || (v & TOP_WHOLE)) && covers_slot(slot, a, end)) {
            atomic_store_explicit(&radix_top[slot], entry ? entry | TOP_WHOLE : 0,
                                  memory_order_release);
            a = (slot + 1) << LEAF_SHIFT;
            continue;
        }
        _Atomic uintptr_t *leaf = (_Atomic uintptr_t *)v;
        uintptr_t stop = (slot + 1) << LEAF_SHIFT;
        for (; a < end && a < stop; a += g_granule)
            atomic_store_explicit(&leaf[radix_leaf_index(a)], entry, memory_order_release);
    }
}
