/*
 * arena.c - where reservations live: address space carved into granules.
 *
 * An arena is one kernel mapping of m->arena_size bytes (PROT_NONE in strict
 * mode, read-write in compact mode), G-aligned, whose granules are handed to
 * reservations. Neighbouring reservations with the same hardware protection
 * therefore share one kernel mapping, and a reservation that is never
 * committed costs no system call at all. Reservations bigger than a quarter of
 * an arena, and reservations at a caller's address outside every arena, get a
 * kernel mapping of their own (a standalone arena holding one reservation).
 *
 * Invariants: a granule's bit is set iff a live (or being-created) reservation
 * holds it; the address map says "slack of this arena" for every clear granule
 * and names the reservation for every granule a published reservation holds.
 * Arena pages that no reservation holds are zero and carry the reserved-page
 * protection. Allocation takes the manager's arena lock; freeing granules is a
 * lock-free atomic clear, so release never waits for an allocator.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

/* Where bottom-up arenas start: 32 TiB, above brk and below the kernel's
 * top-down mmap area; 64 GiB when a sanitizer's runtime holds that range. */
#define BOTTOM_UP_START ((uintptr_t)0x200000000000ull)
#define BOTTOM_UP_FALLBACK ((uintptr_t)0x1000000000ull)
#define ARENA_TABLE_CAPACITY ((uint32_t)1 << 20)

static size_t arena_struct_bytes(uint32_t granules)
{
    size_t bytes = sizeof(struct arena) + ((granules + 63) / 64) * sizeof(uint64_t);
    return bytes < 64 ? 64 : bytes; /* never the 48-byte class, which is reservations' (slab.c) */
}

static uintptr_t slack_entry(const struct manager *m, struct arena *a)
{
    return manager_tag(m) | (uintptr_t)a | ENTRY_SLACK;
}

HRESULT arena_init(struct manager *m)
{
    m->arena_capacity = ARENA_TABLE_CAPACITY;
    m->next_hint = BOTTOM_UP_START;
    void *table;
    int err = os_map(NULL, (size_t)m->arena_capacity * sizeof *m->arenas,
                     OS_PROT_READ | OS_PROT_WRITE, false, &table);
    if (err)
        return os_refused(m, err, "mmap of the arena table");
    m->arenas = table;
    return S_OK;
}

void arena_fini(struct manager *m)
{
    slab_destroy(&m->arena_slab);
    if (m->arenas)
        os_unmap((void *)m->arenas, (size_t)m->arena_capacity * sizeof *m->arenas);
    m->arenas = NULL;
}

/* Registers a in the manager's arena table (arena lock held). */
static HRESULT table_insert(struct manager *m, struct arena *a)
{
    hm_assert(lock_held(m->arena_lock));
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_relaxed);
    for (uint32_t i = 0; i < count; i++) {
        if (!atomic_load_explicit(&m->arenas[i], memory_order_relaxed)) {
            a->index = i;
            atomic_store_explicit(&m->arenas[i], a, memory_order_release);
            return S_OK;
        }
    }
    if (count == m->arena_capacity)
        return E_OUTOFMEMORY;
    a->index = count;
    atomic_store_explicit(&m->arenas[count], a, memory_order_release);
    atomic_store_explicit(&m->arena_count, count + 1, memory_order_release);
    return S_OK;
}

static HRESULT map_aligned_at(struct manager *m, uintptr_t hint, size_t size, uintptr_t *out);

/* An unmap the library makes to give address space back; a refusal leaves it
 * mapped, unused, and is counted. */
static void unmap_counted(struct manager *m, uintptr_t base, size_t size, const char *what)
{
    int err = os_unmap((void *)base, size);
    if (err)
        os_refused(m, err, what);
}

/*
 * Maps size bytes aligned to G. Bottom-up space is placed low (from
 * BOTTOM_UP_START) so that MEM_TOP_DOWN reservations, placed by the kernel's
 * own top-down search, sit above it. When a sanitizer runtime refuses that
 * hint, try BOTTOM_UP_FALLBACK.
 */
static HRESULT map_aligned(struct manager *m, uintptr_t hint, size_t size, uintptr_t *out)
{
    HRESULT hr = map_aligned_at(m, hint, size, out);
    if (hr != S_OK || !hint || *out == hint || hint < BOTTOM_UP_START)
        return hr;
    uintptr_t second = 0;
    if (map_aligned_at(m, BOTTOM_UP_FALLBACK, size, &second) == S_OK) {
        if (second == BOTTOM_UP_FALLBACK) {
            unmap_counted(m, *out, size, "munmap of a misplaced arena");
            *out = second;
        } else {
            unmap_counted(m, second, size, "munmap of a misplaced arena");
        }
    }
    return S_OK;
}

static HRESULT map_aligned_at(struct manager *m, uintptr_t hint, size_t size, uintptr_t *out)
{
    void *p;
    int err = os_map_aligned((void *)hint, size, g_granule, reserved_prot(m->compact), &p);
    if (err)
        return os_refused(m, err, "mmap of an arena");
    *out = (uintptr_t)p;
    return S_OK;
}

/* A new arena (arena lock held). */
static HRESULT arena_create(struct manager *m, bool top_down, struct arena **out)
{
    hm_assert(lock_held(m->arena_lock));
    size_t size = m->arena_size;
    uint32_t granules = (uint32_t)(size >> g_granule_shift);
    uintptr_t base;
    HRESULT hr = map_aligned(m, top_down ? 0 : m->next_hint, size, &base);
    if (hr != S_OK)
        return hr;
    void *fresh = NULL;
    int err = radix_prepare(base, base + size, false);
    if (!err)
        err = slab_alloc(&m->arena_slab, arena_struct_bytes(granules), &fresh);
    if (err) {
        unmap_counted(m, base, size, "munmap of an unused arena");
        return os_refused(m, err, "mmap of arena metadata");
    }
    struct arena *a = fresh;
    memset(a, 0, arena_struct_bytes(granules));
    atomic_store_explicit(&a->base, base, memory_order_relaxed);
    atomic_store_explicit(&a->end, base + size, memory_order_relaxed);
    a->manager = m;
    a->granules = granules;
    atomic_store_explicit(&a->free_granules, granules, memory_order_relaxed);
    a->hint = top_down ? granules : 0;
    a->top_down = top_down;
    if (table_insert(m, a) != S_OK) {
        slab_free(&m->arena_slab, a, arena_struct_bytes(granules));
        unmap_counted(m, base, size, "munmap of an unused arena");
        return E_OUTOFMEMORY; /* the arena table is full: no system call refused */
    }
    radix_store_range(base, base + size, slack_entry(m, a), false);
    if (!top_down)
        m->next_hint = base + size;
    counter_add(&m->arena_bytes, size);
    counter_add(&m->arenas_live, 1);
    counter_add(&m->mapping_estimate, 1);
    *out = a;
    return S_OK;
}

static inline bool bit_test(struct arena *a, uint32_t i)
{
    return atomic_load_explicit(&a->bitmap[i / 64], memory_order_relaxed) >> (i % 64) & 1;
}

static bool range_free(struct arena *a, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++) {
        if ((i % 64) == 0 && i + 64 <= first + n) {
            if (atomic_load_explicit(&a->bitmap[i / 64], memory_order_relaxed))
                return false;
            i += 63;
            continue;
        }
        if (bit_test(a, i))
            return false;
    }
    return true;
}

static void range_set(struct arena *a, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++)
        atomic_fetch_or_explicit(&a->bitmap[i / 64], (uint64_t)1 << (i % 64), memory_order_relaxed);
    atomic_fetch_sub_explicit(&a->free_granules, n, memory_order_relaxed);
}

static void range_clear(struct arena *a, uint32_t first, uint32_t n)
{
    for (uint32_t i = first; i < first + n; i++)
        atomic_fetch_and_explicit(&a->bitmap[i / 64], ~((uint64_t)1 << (i % 64)),
                                  memory_order_release);
    atomic_fetch_add_explicit(&a->free_granules, n, memory_order_relaxed);
}

/* Finds n free granules whose address is a multiple of align bytes (a power
 * of two above G): the first fit, scanning only the aligned starts. */
static bool arena_find_aligned(struct arena *a, uint32_t n, size_t align, uint32_t *out)
{
    uintptr_t abase = atomic_load_explicit(&a->base, memory_order_relaxed);
    uintptr_t first = (abase + align - 1) & ~(uintptr_t)(align - 1);
    uint32_t step = (uint32_t)(align >> g_granule_shift);
    for (uint32_t i = (uint32_t)((first - abase) >> g_granule_shift); i + n <= a->granules; i += step) {
        if (range_free(a, i, n)) {
            *out = i;
            return true;
        }
    }
    return false;
}

/* Finds n free granules: next-fit upwards, or the highest fit for top-down. */
static bool arena_find(struct arena *a, uint32_t n, size_t align, uint32_t *out)
{
    hm_assert(lock_held(a->manager->arena_lock));
    if (atomic_load_explicit(&a->free_granules, memory_order_relaxed) < n)
        return false;
    if (align > g_granule)
        return arena_find_aligned(a, n, align, out);
    uint32_t total = a->granules;
    if (a->top_down) {
        uint32_t top = a->hint < total ? a->hint + 1 : total;
        for (int pass = 0; pass < 2; pass++) {
            uint32_t run = 0;
            for (uint32_t i = top; i-- > 0;) {
                if ((i % 64) == 63 && run == 0 &&
                    atomic_load_explicit(&a->bitmap[i / 64], memory_order_relaxed) == ~(uint64_t)0) {
                    i -= 63;
                    continue;
                }
                run = bit_test(a, i) ? 0 : run + 1;
                if (run == n) {
                    *out = i;
                    a->hint = i ? i - 1 : total;
                    return true;
                }
            }
            top = total;
        }
        return false;
    }
    uint32_t start = a->hint;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t run = 0;
        for (uint32_t i = start; i < total; i++) {
            if ((i % 64) == 0 && run == 0 &&
                atomic_load_explicit(&a->bitmap[i / 64], memory_order_relaxed) == ~(uint64_t)0) {
                i += 63;
                continue;
            }
            run = bit_test(a, i) ? 0 : run + 1;
            if (run == n) {
                *out = i + 1 - n;
                a->hint = i + 1 < total ? i + 1 : 0;
                return true;
            }
        }
        start = 0;
    }
    return false;
}

/* Leaves the arena lock after a reservation was made: S_OK and *out, or, when
 * the host's lock reports a failure, the reservation given back and that answer. */
static HRESULT reserve_done(struct manager *m, struct reservation *r, struct reservation **out)
{
    HRESULT hr = lock_leave(m, m->arena_lock);
    if (hr != S_OK) {
        arena_abandon(m, r);
        return hr;
    }
    *out = r;
    return S_OK;
}

/* Standalone: its own kernel mapping at base (fixed) or wherever (base 0);
 * large_prot >= 0: of huge pages with that protection. The steps in order, the
 * undo of each below it in the ladder. */
static HRESULT reserve_standalone(struct manager *m, uintptr_t base, size_t size, bool top_down,
                                  unsigned attr, int large_prot, struct reservation **out)
{
    size_t span = granule_up(size);
    uintptr_t at = base;
    HRESULT hr;
    int err;
    if (large_prot >= 0) {
        if (base && (base + span > ADDRESS_LIMIT || base + span < base))
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        void *p;
        if ((err = os_map_large((void *)base, span, large_prot, base != 0, &p)) != 0) {
            hr = os_refused(m, err, "mmap of huge pages");
            /* none to be had: Windows' answer, never a downgrade to small pages */
            return hr == E_OUTOFMEMORY ? HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES) : hr;
        }
        at = (uintptr_t)p;
        if ((err = radix_prepare(at, at + span, true)) != 0) {
            hr = os_refused(m, err, "mmap of an address-map leaf");
            goto unmap;
        }
    } else if (base) {
        if (base + span > ADDRESS_LIMIT || base + span < base)
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        if ((err = radix_prepare(base, base + span, true)) != 0)
            return os_refused(m, err, "mmap of an address-map leaf");
        void *p;
        if ((err = os_map((void *)base, span, reserved_prot(m->compact), true, &p)) != 0)
            return os_refused(m, err, "mmap of a reservation at a fixed address");
    } else {
        if ((hr = map_aligned(m, top_down ? 0 : m->next_hint, span, &at)) != S_OK)
            return hr;
        if ((err = radix_prepare(at, at + span, true)) != 0) {
            hr = os_refused(m, err, "mmap of an address-map leaf");
            goto unmap;
        }
    }
    if ((hr = lock_enter(m, m->arena_lock)) != S_OK)
        goto unmap;
    void *fresh_arena, *fresh_reservation;
    if ((err = slab_alloc(&m->arena_slab, arena_struct_bytes(0), &fresh_arena)) != 0) {
        hr = os_refused(m, err, "mmap of arena metadata");
        goto unlock;
    }
    if ((err = slab_alloc(&m->arena_slab, sizeof(struct reservation), &fresh_reservation)) != 0) {
        hr = os_refused(m, err, "mmap of arena metadata");
        goto free_arena;
    }
    struct arena *a = fresh_arena;
    struct reservation *r = fresh_reservation;
    memset(a, 0, sizeof *a);
    atomic_store_explicit(&a->base, at, memory_order_relaxed);
    atomic_store_explicit(&a->end, at + span, memory_order_relaxed);
    a->manager = m;
    a->standalone = true;
    a->top_down = top_down;
    if ((hr = table_insert(m, a)) != S_OK)
        goto free_reservation;
    counter_add(&m->mapping_estimate, 1);
    reservation_init(r, at, size, attr, RES_STANDALONE | (large_prot >= 0 ? RES_LARGE_PAGES : 0), a->index);
    return reserve_done(m, r, out);

free_reservation:
    slab_free(&m->arena_slab, r, sizeof *r);
free_arena:
    slab_free(&m->arena_slab, fresh_arena, arena_struct_bytes(0));
unlock:
    lock_leave(m, m->arena_lock);
unmap:
    unmap_counted(m, at, span, "munmap of an unused reservation");
    return hr;
}

/* Picks n granules for a reservation of a fixed or any address (arena lock
 * held): S_OK with the arena and the first granule, or the answer. */
static HRESULT arena_pick(struct manager *m, uintptr_t base, uint32_t n, bool top_down,
                          size_t align, struct arena **arena, uint32_t *first)
{
    hm_assert(lock_held(m->arena_lock));
    struct arena *a = *arena;
    if (base) {
        /* the arena may have been trimmed while we looked */
        *first = (uint32_t)((base - atomic_load_explicit(&a->base, memory_order_relaxed)) >> g_granule_shift);
        if (radix_load(base) != slack_entry(m, a) || !range_free(a, *first, n))
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        return S_OK;
    }
    a = m->current[top_down];
    if (a && arena_find(a, n, align, first)) {
        *arena = a;
        return S_OK;
    }
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_relaxed);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *c = atomic_load_explicit(&m->arenas[i], memory_order_relaxed);
        if (c && !c->standalone && c->top_down == top_down && c != m->current[top_down] &&
            arena_find(c, n, align, first)) {
            m->current[top_down] = *arena = c;
            return S_OK;
        }
    }
    HRESULT hr = arena_create(m, top_down, &a);
    if (hr != S_OK)
        return hr;
    if (!arena_find(a, n, align, first)) {
        hm_unreachable("a fresh arena fits every reservation of a quarter arena or less");
        return E_OUTOFMEMORY;
    }
    m->current[top_down] = *arena = a;
    return S_OK;
}

HRESULT arena_reserve(struct manager *m, uintptr_t base, size_t size, bool top_down, size_t align,
                      unsigned attr, struct reservation **out)
{
    uint32_t n = (uint32_t)((size + g_granule - 1) >> g_granule_shift);
    if (base == 0 && size > m->arena_size / 4)
        return reserve_standalone(m, 0, size, top_down, attr, -1, out);
    struct arena *a = NULL;
    if (base) {
        uintptr_t e = radix_load(base);
        if (entry_id(e) != m->id)
            return reserve_standalone(m, base, size, top_down, attr, -1, out);
        if (!entry_is_slack(e))
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        a = entry_pointer(e);
        if (base + size > atomic_load_explicit(&a->end, memory_order_relaxed) || base + size < base)
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
    }
    HRESULT hr = lock_enter(m, m->arena_lock);
    if (hr != S_OK)
        return hr;
    uint32_t first;
    hr = arena_pick(m, base, n, top_down, align, &a, &first);
    if (hr != S_OK) {
        lock_leave(m, m->arena_lock);
        return hr;
    }
    uintptr_t at = atomic_load_explicit(&a->base, memory_order_relaxed) +
                   ((uintptr_t)first << g_granule_shift);
    /* An arena reservation's record is its first granule's slot in the address
     * map's leaf: type-stable, never freed, reused with the granule. */
    struct reservation *r = radix_slot(at);
    if (!r) {
        hm_unreachable("an arena's address space has address-map leaves");
        lock_leave(m, m->arena_lock);
        return E_OUTOFMEMORY;
    }
    range_set(a, first, n);
    reservation_init(r, at, size, attr, 0, a->index);
    return reserve_done(m, r, out);
}

HRESULT arena_reserve_large(struct manager *m, uintptr_t address, size_t size, unsigned attr,
                            int prot, struct reservation **out)
{
    if (address && radix_load(address)) /* this manager's, or another's: taken */
        return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
    return reserve_standalone(m, address, size, false, attr, prot, out);
}

void arena_publish(struct manager *m, struct reservation *r)
{
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed), span = res_span(r);
    uintptr_t kind = (r->flags & RES_HEAP_LARGE) ? ENTRY_HEAP_LARGE : (r->flags & RES_HEAP) ? ENTRY_HEAP : 0;
    radix_store_range(base, base + span, manager_tag(m) | (uintptr_t)r | kind, res_arena(m, r)->standalone);
}

/* Gives r's granules and records back; its address-map entries are already gone. */
static void give_back(struct manager *m, struct reservation *r, uintptr_t base, uintptr_t span)
{
    struct arena *a = res_arena(m, r);
    if (a->standalone) {
        atomic_store_explicit(&m->arenas[a->index], NULL, memory_order_release);
        counter_sub(&m->mapping_estimate, 1);
        slab_free_remote(&m->arena_slab, a, arena_struct_bytes(0));
        slab_free_remote(&m->arena_slab, r, sizeof *r);
    } else {
        /* after this the granules, and so r's slot, may be taken again: r is not touched */
        uintptr_t abase = atomic_load_explicit(&a->base, memory_order_relaxed);
        range_clear(a, (uint32_t)((base - abase) >> g_granule_shift),
                    (uint32_t)(span >> g_granule_shift));
    }
}

void arena_abandon(struct manager *m, struct reservation *r)
{
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed), span = res_span(r);
    if (res_arena(m, r)->standalone)
        unmap_counted(m, base, span, "munmap of an unused reservation");
    give_back(m, r, base, span);
}

void arena_unreserve(struct manager *m, struct reservation *r)
{
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed), span = res_span(r);
    hm_assert(lock_held(stripe_of(m, base)->lock));
    struct arena *a = res_arena(m, r);
    /* A standalone reservation left the map before its munmap (vm.c): storing
     * now could wipe a new reservation made at the same address since. */
    if (!a->standalone)
        radix_store_range(base, base + span, slack_entry(m, a), false);
    reservation_clear(&stripe_of(m, base)->slab, r);
    give_back(m, r, base, span);
}

void arena_destroy_all(struct manager *m)
{
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_relaxed);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *a = atomic_load_explicit(&m->arenas[i], memory_order_relaxed);
        if (!a)
            continue;
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        radix_store_range(base, end, 0, a->standalone);
        unmap_counted(m, base, end - base, "munmap of an arena at shutdown");
        atomic_store_explicit(&m->arenas[i], NULL, memory_order_relaxed);
    }
}

size_t arena_trim(struct manager *m)
{
    if (lock_enter(m, m->arena_lock) != S_OK)
        return 0;
    size_t given = 0;
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_relaxed);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *a = atomic_load_explicit(&m->arenas[i], memory_order_relaxed);
        if (!a || a->standalone || atomic_load(&a->free_granules) != a->granules)
            continue;
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        radix_store_range(base, end, 0, false);
        int err = os_unmap((void *)base, end - base);
        if (err) {
            os_refused(m, err, "munmap of an unused arena");
            radix_store_range(base, end, slack_entry(m, a), false); /* keep it */
            continue;
        }
        atomic_store_explicit(&m->arenas[i], NULL, memory_order_release);
        for (int d = 0; d < 2; d++)
            if (m->current[d] == a)
                m->current[d] = NULL;
        counter_sub(&m->arena_bytes, end - base);
        counter_sub(&m->arenas_live, 1);
        counter_sub(&m->mapping_estimate, 1);
        slab_free(&m->arena_slab, a, arena_struct_bytes(a->granules));
        given += end - base;
    }
    lock_leave(m, m->arena_lock);
    return given;
}

uintptr_t arena_next_start(struct manager *m, uintptr_t address)
{
    uintptr_t best = UINTPTR_MAX;
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_acquire);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *a = atomic_load_explicit(&m->arenas[i], memory_order_acquire);
        if (!a)
            continue;
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        if (base > address && base < best)
            best = base;
    }
    return best;
}
