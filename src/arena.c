/*
 * arena.c - where reservations live: address space carved into granules.
 *
 * An arena is one kernel mapping (PROT_NONE in strict mode, read-write in
 * compact mode), G-aligned (or as aligned as the request that made it), whose
 * granules are handed to reservations. Its size follows the rule at
 * arena_size_for: small first, growing to m->arena_size, never more than a
 * quarter of what the process's address-space limit leaves. Neighbouring
 * reservations with the same hardware protection therefore share one kernel
 * mapping, and a reservation that is never committed costs no system call at
 * all. Reservations bigger than a quarter of m->arena_size (the largest arena),
 * and reservations at a caller's address outside every arena, get a kernel
 * mapping of their own (a standalone arena holding one reservation).
 *
 * Invariants: a granule's bit is set iff a live (or being-created) reservation
 * holds it; the address map says "slack of this arena" for every clear granule
 * and names the reservation for every granule a published reservation holds.
 * Arena pages that no reservation holds are zero and carry the reserved-page
 * protection. Allocation takes the manager's arena lock; freeing granules is a
 * lock-free atomic clear, so release never waits for an allocator.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * Where arenas go (docs/security.md). Nothing hostmem hands out is at an
 * address another process could predict, nor at a fixed offset from another
 * manager's memory:
 *   - bottom-up arenas are carved from a place whose start the process draws
 *     at random once, a granule of [PLACE_LOW, PLACE_LOW + PLACE_SPAN): 16 to
 *     80 TiB, 2^30 granules, 30 bits (the kernel gives its own mmap 28 on
 *     x86-64), between what low-placed programs use and the kernel's place
 *     for position-independent programs (85 TiB up). Each arena, of any
 *     manager, goes above the last after a random gap of up to PLACE_GAP
 *     granules (64 MiB) or the arena's own size if larger (1 GiB arenas: 14
 *     bits): Windows' bottom-up order holds, no manager is at a predictable
 *     offset from another, and the small arenas of managers under an
 *     address-space limit still share address-map leaves (radix.c: a leaf a
 *     GiB, 0.9 MiB of address space) as they did when they were packed;
 *   - top-down arenas, likewise downwards from a random granule of [TOP_LOW,
 *     TOP_LOW + TOP_SPAN), 96 to 112 TiB, never below TOP_FLOOR: MEM_TOP_DOWN
 *     reservations sit above bottom-up ones;
 *   - a bottom-up arena whose place the kernel does not give (a sanitizer's
 *     runtime holds that range) is carved from the fallback place instead,
 *     from a random granule of [FALLBACK_LOW, +FALLBACK_SPAN), 64 to 448 GiB;
 *   - a standalone reservation is asked for where the next arena would go.
 * A manager made with HOSTMEM_FIXED_PLACEMENT (the flag, or the environment
 * variable) keeps the fixed places of before, for reproducible traces: its
 * own bottom-up arenas from 32 TiB up, 64 GiB when that is held, and the
 * kernel's own top-down placement.
 */
#define PLACE_LOW ((uintptr_t)0x100000000000ull)
#define PLACE_SPAN ((uintptr_t)0x400000000000ull)
#define TOP_LOW ((uintptr_t)0x600000000000ull)
#define TOP_SPAN ((uintptr_t)0x100000000000ull)
#define TOP_FLOOR (PLACE_LOW + PLACE_SPAN)
#define FALLBACK_LOW ((uintptr_t)0x1000000000ull)
#define FALLBACK_SPAN ((uintptr_t)0x6000000000ull)
#define PLACE_GAP 1024u
#define PLACE_FIXED ((uintptr_t)0x200000000000ull)
#define FALLBACK_FIXED FALLBACK_LOW
#define ARENA_TABLE_CAPACITY ((uint32_t)1 << 20)
#define ARENA_TABLE_LIMITED ((uint32_t)1 << 12) /* the least under an address-space limit */
/* A manager's first arena, when no limit asks for less (arena_size_for), and
 * under a limit made when the manager was created, that limit / FIRST_ARENA_SHARE. */
#define FIRST_ARENA_SIZE ((size_t)64 << 20)
/* The give-back reserve's address space (slab.c): 64 MiB; under an address-space
 * limit a 512th of it (390 KiB under 200 MB), never less than the part kept
 * writable */
#define GIVE_BACK_RESERVE ((size_t)64 << 20)
#define GIVE_BACK_RESERVE_SHARE 512
#define FIRST_ARENA_SHARE 64

static size_t arena_struct_bytes(uint32_t granules)
{
    size_t bytes = sizeof(struct arena) + ((granules + 63) / 64) * sizeof(uint64_t);
    return bytes < 64 ? 64 : bytes; /* never the 48-byte class, which is reservations' (slab.c) */
}

static uintptr_t slack_entry(const struct manager *m, struct arena *a)
{
    return manager_tag(m) | (uintptr_t)a | ENTRY_SLACK;
}

/* A random granule of [low, low + span). */
static uintptr_t random_granule(uintptr_t low, uintptr_t span)
{
    return low + (uintptr_t)(os_random() % (span >> g_granule_shift) << g_granule_shift);
}

/* A place arenas are carved from (above): a process-wide cursor that moves
 * from its random start, up or down, past each arena claimed. */
struct place {
    _Atomic uintptr_t cursor; /* 0: not drawn yet */
    uintptr_t low, span;
    bool down;
};
static struct place bottom_place = {0, PLACE_LOW, PLACE_SPAN, false};
static struct place fallback_place = {0, FALLBACK_LOW, FALLBACK_SPAN, false};
static struct place top_place = {0, TOP_LOW, TOP_SPAN, true};

static uintptr_t place_cursor(struct place *p)
{
    uintptr_t cursor = atomic_load_explicit(&p->cursor, memory_order_relaxed);
    if (cursor)
        return cursor;
    uintptr_t drawn = random_granule(p->low, p->span);
    if (atomic_compare_exchange_strong_explicit(&p->cursor, &cursor, drawn, memory_order_relaxed,
                                                memory_order_relaxed))
        return drawn;
    return cursor; /* another manager drew first */
}

/* Where size bytes aligned to align go in p after a gap from cursor: their
 * start, with *next the cursor past them; 0 once the place is spent. */
static uintptr_t place_next(const struct place *p, uintptr_t cursor, uintptr_t gap, size_t size, size_t align,
                            uintptr_t *next)
{
    if (p->down) {
        if (cursor < TOP_FLOOR + gap + size + align)
            return 0;
        return *next = (cursor - gap - size) & ~(uintptr_t)(align - 1);
    }
    uintptr_t start = (cursor + gap + align - 1) & ~(uintptr_t)(align - 1);
    *next = start + size;
    return *next > ADDRESS_LIMIT ? 0 : start;
}

/* Claims size bytes aligned to align from p, after a random gap: where to ask
 * the kernel for them, or 0 (the kernel's own choice) once the place is spent. */
static uintptr_t place_claim(struct place *p, size_t size, size_t align)
{
    uintptr_t cursor = place_cursor(p);
    uint64_t gaps = size >> g_granule_shift > PLACE_GAP ? size >> g_granule_shift : PLACE_GAP;
    uintptr_t gap = (uintptr_t)(os_random() % gaps) << g_granule_shift;
    for (;;) {
        uintptr_t next, start = place_next(p, cursor, gap, size, align, &next);
        if (!start)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&p->cursor, &cursor, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return start;
    }
}

static bool placement_fixed(const struct manager *m)
{
    if (m->flags & HOSTMEM_FIXED_PLACEMENT)
        return true;
    const char *value = getenv("HOSTMEM_FIXED_PLACEMENT");
    return value && *value && strcmp(value, "0") != 0;
}

/*
 * The arena table has a slot for every arena and standalone reservation live at
 * once; each holds a granule at least, so under an address-space limit L no
 * more than L / G are live, and a million slots (8 MiB of address space) would
 * take 4% of a 200 MB limit for every manager. Under a limit the table has
 * L / G slots, never fewer than ARENA_TABLE_LIMITED (32 KiB), which is also
 * what such a manager holds at most if the limit is raised later: the table
 * cannot grow, because lock-free readers index it.
 *
 * A manager made under a limit L also starts with a first arena of L / 64 at
 * most (3 MiB under 200 MB) rather than 64 MiB: a quarter of what is left
 * (arena_size_for) alone would let the first few managers of a process that
 * makes many take the room of all the others.
 */
HRESULT arena_init(struct manager *m)
{
    uint64_t limit = os_address_limit();
    uint64_t fit = limit == UINT64_MAX ? ARENA_TABLE_CAPACITY : limit >> g_granule_shift;
    m->arena_capacity = fit >= ARENA_TABLE_CAPACITY ? ARENA_TABLE_CAPACITY
                        : fit <= ARENA_TABLE_LIMITED ? ARENA_TABLE_LIMITED
                                                     : (uint32_t)fit;
    m->fixed_placement = placement_fixed(m);
    m->next_hint = PLACE_FIXED;
    /* Without a limit the first arena is a whole one: address space is free
     * then, and VirtualQuery measured ~10 ns slower (35-40 against 53-55 M
     * queries/s, make bench's thread section) when a thousand reservations
     * spanned three growing arenas instead of one. Under a limit, arenas start
     * small and grow. */
    m->arena_next = limit == UINT64_MAX ? m->arena_size
                    : FIRST_ARENA_SIZE < m->arena_size ? FIRST_ARENA_SIZE
                                                        : m->arena_size;
    if (limit != UINT64_MAX && m->arena_next > limit / FIRST_ARENA_SHARE)
        m->arena_next = granule_down(limit / FIRST_ARENA_SHARE) ? granule_down(limit / FIRST_ARENA_SHARE)
                                                                : g_granule;
    void *table;
    int err = os_map_books(m, page_up((size_t)m->arena_capacity * sizeof *m->arenas), g_page, &table);
    if (err)
        return os_refused(m, err, "mmap of the arena table");
    m->arenas = table;
    /* The give-back reserve (slab.c): address space, writable as it is used;
     * under a limit a share of it, as arenas take theirs. */
    size_t reserve = GIVE_BACK_RESERVE;
    if (limit != UINT64_MAX && limit / GIVE_BACK_RESERVE_SHARE < reserve)
        reserve = limit / GIVE_BACK_RESERVE_SHARE > SLAB_RESERVE_READY ? (size_t)(limit / GIVE_BACK_RESERVE_SHARE)
                                                                       : SLAB_RESERVE_READY;
    if ((err = slab_reserve_init(&m->give_back, m, reserve)) != 0)
        return os_refused(m, err, "mmap of the give-back reserve");
    m->arena_slab.reserve = &m->give_back;
    for (int i = 0; i < STRIPES; i++)
        m->stripes[i].slab.reserve = &m->give_back;
    return S_OK;
}

void arena_fini(struct manager *m)
{
    slab_destroy(&m->arena_slab);
    slab_reserve_fini(&m->give_back); /* after every slab: they hold objects from it */
    if (m->arenas)
        os_unmap_books((void *)m->arenas, page_up((size_t)m->arena_capacity * sizeof *m->arenas));
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

static HRESULT map_aligned_at(struct manager *m, uintptr_t hint, size_t size, size_t align,
                              uintptr_t *out, int *refused);

/* An unmap the library makes to give address space back; a refusal leaves it
 * mapped, unused, and is counted. */
static void unmap_counted(struct manager *m, uintptr_t base, size_t size, const char *what)
{
    int err = os_unmap((void *)base, size);
    if (err)
        os_refused(m, err, what);
}

/*
 * Maps size bytes aligned to align (G or more) at hint (0: wherever the kernel
 * puts it). A bottom-up hint of the main range that the kernel does not
 * honour (a sanitizer runtime holds the range) is tried again at the fallback
 * place; when that is not honoured either, the kernel's first placement
 * stands. A refusal is counted and its errno left in *refused (arena_create
 * tries a smaller arena after ENOMEM).
 */
static HRESULT map_aligned(struct manager *m, uintptr_t hint, bool top_down, size_t size, size_t align,
                           uintptr_t *out, int *refused)
{
    HRESULT hr = map_aligned_at(m, hint, size, align, out, refused);
    if (hr != S_OK || top_down || !hint || *out == hint || hint < PLACE_LOW)
        return hr;
    uintptr_t fallback = m->fixed_placement ? FALLBACK_FIXED : place_claim(&fallback_place, size, align);
    uintptr_t second = 0;
    int ignored;
    if (fallback && map_aligned_at(m, fallback, size, align, &second, &ignored) == S_OK) {
        if (second == fallback) {
            unmap_counted(m, *out, size, "munmap of a misplaced arena");
            *out = second;
        } else {
            unmap_counted(m, second, size, "munmap of a misplaced arena");
        }
    }
    return S_OK;
}

/* Where a new arena of size bytes aligned to align is asked for (arena lock held). */
static uintptr_t arena_hint(struct manager *m, bool top_down, size_t size, size_t align)
{
    if (m->fixed_placement)
        return top_down ? 0 : (m->next_hint + align - 1) & ~(uintptr_t)(align - 1);
    return place_claim(top_down ? &top_place : &bottom_place, size, align);
}

/* Where a standalone reservation is asked for: where the next arena would go. */
static uintptr_t standalone_hint(struct manager *m, bool top_down, size_t size, size_t align)
{
    if (m->fixed_placement)
        return top_down ? 0 : m->next_hint;
    struct place *p = top_down ? &top_place : &bottom_place;
    uintptr_t next;
    return place_next(p, place_cursor(p), 0, size, align, &next); /* asked, not claimed */
}

static HRESULT map_aligned_at(struct manager *m, uintptr_t hint, size_t size, size_t align,
                              uintptr_t *out, int *refused)
{
    void *p;
    int err = os_map_aligned((void *)hint, size, align, reserved_prot(m->compact), &p);
    *refused = err;
    if (err)
        return os_refused(m, err, "mmap of an arena");
    *out = (uintptr_t)p;
    return S_OK;
}

/*
 * How big a new arena is. Without an address-space limit, arena_size (arena_init
 * starts arena_next there). Under one, a manager's first arena asks for FIRST_ARENA_SIZE and
 * each next one for twice the last, up to m->arena_size: a manager that makes a
 * few reservations does not take a GiB of address space, and one that makes a
 * million reaches full arenas after four. An arena that must hold a request of
 * more than a quarter of that size asks for more, up to m->arena_size (so a
 * reservation never fills an arena alone unless the limit below forces it).
 *
 * Under an address-space limit (RLIMIT_AS, read at every new arena, so a limit
 * changed mid-run is followed) an arena takes at most a quarter of what the
 * limit leaves, the limit less the address space the process has mapped now:
 * the rest stays for what else the process maps (thread stacks, malloc's own
 * arenas, other managers, hostmem's metadata), and later arenas take a quarter
 * of a smaller room. Never less than floor, the least that holds the request:
 * the kernel then says whether even that fits.
 */
static size_t arena_asked(const struct manager *m, size_t floor)
{
    size_t size = m->arena_next;
    while (size < m->arena_size && size / 4 < floor)
        size *= 2;
    return size < m->arena_size ? size : m->arena_size;
}

/* The address space the process has mapped (VmSize of /proc/self/status), or
 * 0 when it cannot be read (then the limit alone bounds an arena). */
static uint64_t process_mapped_bytes(void)
{
    char text[4096]; /* VmSize comes early; a longer file is cut, not misread */
    size_t length;
    if (os_read_file("/proc/self/status", text, sizeof text, &length) != 0)
        return 0;
    const char *field = strstr(text, "\nVmSize:");
    if (!field)
        return 0;
    field += strlen("\nVmSize:");
    while (*field == ' ' || *field == '\t')
        field++;
    uint64_t kib = 0;
    while (*field >= '0' && *field <= '9')
        kib = kib * 10 + (uint64_t)(*field++ - '0');
    return kib << 10;
}

static size_t arena_size_for(const struct manager *m, size_t floor)
{
    size_t size = arena_asked(m, floor);
    uint64_t limit = os_address_limit();
    if (limit != UINT64_MAX) {
        uint64_t mapped = process_mapped_bytes();
        uint64_t share = limit > mapped ? (limit - mapped) / 4 : 0;
        if (size > share)
            size = (size_t)share;
    }
    size = granule_down(size);
    return size > floor ? size : floor;
}

/* A new arena for a request of n granules aligned to align (arena lock held).
 * The arena is aligned as the request is, so its floor is the request itself,
 * not the request and the slack an alignment could cost (a heap's 4 MiB
 * segment needs 4 MiB, not 8, under a tight limit). When the kernel refuses
 * its size for want of memory (ENOMEM: the limit moved, another thread took
 * the room, or the kernel's overcommit accounting), the size halves down to
 * the floor; each refusal is counted (os_refused). */
static HRESULT arena_create(struct manager *m, bool top_down, uint32_t n, size_t align,
                            struct arena **out)
{
    hm_assert(lock_held(m->arena_lock));
    size_t base_align = align > g_granule ? align : g_granule;
    size_t floor = (size_t)n << g_granule_shift;
    size_t size = arena_size_for(m, floor);
    /* an aligned hint the kernel can honour in one mapping; a misaligned
     * placement costs size + align of address space for a moment */
    uintptr_t hint = arena_hint(m, top_down, size, base_align);
    bool fell_back = false;
    uintptr_t base;
    int refused;
    HRESULT hr;
    while ((hr = map_aligned(m, hint, top_down, size, base_align, &base, &refused)) != S_OK) {
        if (refused != ENOMEM || size == floor)
            return hr;
        size = granule_down(size / 2) > floor ? granule_down(size / 2) : floor;
        fell_back = true;
    }
    uint32_t granules = (uint32_t)(size >> g_granule_shift);
    void *fresh = NULL;
    int err = radix_prepare(m, base, base + size, false);
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
    /* Growth follows what was asked, so a limit that is raised again gives full
     * arenas at once; after a refusal it restarts from what the kernel gave, so
     * every later arena does not pay the same refusals again. */
    size_t grown = fell_back ? size : arena_asked(m, floor);
    m->arena_next = grown < m->arena_size / 2 ? 2 * grown : m->arena_size;
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

/* Standalone: its own kernel mapping at base (fixed) or wherever (base 0),
 * aligned to align when it is wherever (a heap's 4 MiB segment is standalone
 * whenever arena_size is under 16 MiB); large_prot >= 0: of huge pages with
 * that protection. The steps in order, the undo of each below it in the ladder. */
static HRESULT reserve_standalone(struct manager *m, uintptr_t base, size_t size, bool top_down,
                                  size_t align, unsigned attr, int large_prot, struct reservation **out)
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
        if ((err = radix_prepare(m, at, at + span, true)) != 0) {
            hr = os_refused(m, err, "mmap of an address-map leaf");
            goto unmap;
        }
    } else if (base) {
        if (base + span > ADDRESS_LIMIT || base + span < base)
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        if ((err = radix_prepare(m, base, base + span, true)) != 0)
            return os_refused(m, err, "mmap of an address-map leaf");
        void *p;
        if ((err = os_map((void *)base, span, reserved_prot(m->compact), true, &p)) != 0)
            return os_refused(m, err, "mmap of a reservation at a fixed address");
    } else {
        int refused;
        size_t base_align = align > g_granule ? align : g_granule;
        uintptr_t hint = standalone_hint(m, top_down, span, base_align);
        if ((hr = map_aligned(m, hint, top_down, span, base_align, &at, &refused)) != S_OK)
            return hr;
        if ((err = radix_prepare(m, at, at + span, true)) != 0) {
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
    a->record = r;
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
    uint32_t slot = 0;
    for (struct arena *c; (c = arena_next(m, &slot)) != NULL;) {
        if (!c->standalone && c->top_down == top_down && c != m->current[top_down] &&
            arena_find(c, n, align, first)) {
            m->current[top_down] = *arena = c;
            return S_OK;
        }
    }
    HRESULT hr = arena_create(m, top_down, n, align, &a);
    if (hr != S_OK)
        return hr;
    if (!arena_find(a, n, align, first)) {
        hm_unreachable("a fresh arena is never smaller than the request that made it");
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
        return reserve_standalone(m, 0, size, top_down, align, attr, -1, out);
    struct arena *a = NULL;
    if (base) {
        uintptr_t e = radix_load(base);
        if (entry_id(e) != m->id)
            return reserve_standalone(m, base, size, top_down, 0, attr, -1, out);
        if (!entry_is_slack(e))
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
        a = entry_pointer(e);
        if (a->standalone)
            return E_OUTOFMEMORY; /* stale slack the kernel would not unmap yet (deferred.c) */
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
    return reserve_standalone(m, address, size, false, 0, attr, prot, out);
}

/* The address-map entry that names a published r. */
static uintptr_t reservation_entry(const struct manager *m, const struct reservation *r)
{
    uintptr_t kind = (r->flags & RES_HEAP_LARGE) ? ENTRY_HEAP_LARGE : (r->flags & RES_HEAP) ? ENTRY_HEAP : 0;
    return manager_tag(m) | (uintptr_t)r | kind;
}

void arena_publish(struct manager *m, struct reservation *r)
{
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed), span = res_span(r);
    radix_store_range(base, base + span, reservation_entry(m, r), res_arena(m, r)->standalone);
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
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        radix_store_range(base, end, 0, a->standalone);
        unmap_counted(m, base, end - base, "munmap of an arena at shutdown");
        atomic_store_explicit(&m->arenas[a->index], NULL, memory_order_relaxed);
    }
}

size_t arena_trim(struct manager *m)
{
    if (lock_enter(m, m->arena_lock) != S_OK)
        return 0;
    size_t given = 0;
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        if (a->standalone || atomic_load(&a->free_granules) != a->granules)
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
        atomic_store_explicit(&m->arenas[a->index], NULL, memory_order_release);
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
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        if (base > address && base < best)
            best = base;
    }
    return best;
}

/* The stale slack whose first granule is at, in arena a (used in the bitmap,
 * free in the address map), or NULL. */
static struct reservation *stale_slack_starting(struct manager *m, struct arena *a, uintptr_t at)
{
    uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
    if (a->standalone) /* its mapping, kept whole */
        return at == base && radix_load(at) == slack_entry(m, a) && res_is_stale_slack(a->record) ? a->record : NULL;
    if (radix_load(at) != slack_entry(m, a) || !bit_test(a, (uint32_t)((at - base) >> g_granule_shift)))
        return NULL;
    struct reservation *r = radix_slot(at);
    return r && res_is_stale_slack(r) && atomic_load_explicit(&r->base, memory_order_relaxed) == at ? r : NULL;
}

int arena_walk(struct manager *m, struct arena *a, arena_walk_fn fn, void *context)
{
    uintptr_t g = atomic_load_explicit(&a->base, memory_order_relaxed);
    uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
    while (g < end) {
        uintptr_t e = radix_load(g), step = g_granule;
        struct reservation *r = NULL;
        if (e && entry_id(e) == m->id && !entry_is_slack(e)) {
            r = entry_pointer(e);
            if (atomic_load_explicit(&r->base, memory_order_relaxed) != g)
                r = NULL; /* not its first granule */
        } else if (entry_is_slack(e)) {
            r = stale_slack_starting(m, a, g);
        }
        if (r)
            step = res_span(r) > g_granule ? res_span(r) : g_granule;
        int stop = fn(context, g, e, r);
        if (stop)
            return stop;
        g += step;
    }
    return 0;
}

void arena_hide(struct manager *m, struct reservation *r)
{
    uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed);
    struct arena *a = res_arena(m, r);
    hm_assert(lock_held(stripe_of(m, base)->lock));
    radix_store_range(base, base + res_span(r), slack_entry(m, a), a->standalone);
}

struct reservation *arena_stale_slack_at(struct manager *m, uintptr_t address)
{
    uintptr_t e = radix_load(address);
    if (!e || entry_id(e) != m->id || !entry_is_slack(e))
        return NULL;
    struct arena *a = entry_pointer(e);
    uintptr_t first = atomic_load_explicit(&a->base, memory_order_relaxed);
    if (a->standalone)
        return stale_slack_starting(m, a, first);
    for (uintptr_t g = granule_down(address); g >= first; g -= g_granule) {
        if (!bit_test(a, (uint32_t)((g - first) >> g_granule_shift)))
            return NULL;
        struct reservation *r = stale_slack_starting(m, a, g);
        if (r)
            return g + res_span(r) > address ? r : NULL;
        if (g == first)
            break;
    }
    return NULL;
}

/* Is r published over its whole span (every granule names it)? */
static bool published(const struct manager *m, const struct reservation *r, uintptr_t base)
{
    uintptr_t entry = reservation_entry(m, r);
    for (uintptr_t g = base; g < base + res_span(r); g += g_granule)
        if (radix_load(g) != entry)
            return false;
    return true;
}

/*
 * Granules [g, g+n) of arena a, which a reservation a vanished thread was
 * making held (arena_after_fork), go back to slack whole: in the books and in
 * the kernel. That thread may have made their pages readable and writable for
 * the commit (alloc_reserve's mprotect comes before the publishing), so they
 * get the reserved-page protection back and are discarded, the whole span with
 * a last granule's unused tail (slack already, and left so by the same calls).
 * Nothing to unregister for the kernel's write tracking: the child's kernel
 * keeps no userfaultfd registration of the parent's (os_linux.c asks for no
 * UFFD_FEATURE_EVENT_FORK; docs/writewatch.md).
 *
 * Should the kernel refuse (at the mapping ceiling the mprotect may need a
 * mapping it cannot split off), the granules stay out of the free bitmap -
 * marked used, published by no one - so no reservation is handed pages that
 * are accessible while the books say reserved: address space lost to this
 * child, which validate reports as granules "in use" that the map calls
 * slack, until stale slack (deferred.c) can hold them as it holds released
 * pages at the ceiling. Each refusal is counted (os_refused).
 */
static void give_back_unpublished(struct manager *m, struct arena *a, uint32_t g, uint32_t n)
{
    uintptr_t at = atomic_load_explicit(&a->base, memory_order_relaxed) + ((uintptr_t)g << g_granule_shift);
    size_t bytes = (size_t)n << g_granule_shift;
    radix_store_range(at, at + bytes, slack_entry(m, a), false);
    int err = os_discard((void *)at, bytes);
    if (err) {
        os_refused(m, err, "madvise(MADV_DONTNEED) of a reservation a vanished thread was making");
        return;
    }
    if ((err = os_protect((void *)at, bytes, reserved_prot(m->compact))) != 0) {
        os_refused(m, err, "mprotect of a reservation a vanished thread was making");
        return;
    }
    range_clear(a, g, n);
}

/*
 * After a fork, in the child (every lock is this thread's): what reservations
 * in the making held - granules picked, or a standalone mapping made, but not
 * yet published by a thread the child does not have - goes back, arena
 * granules whole (give_back_unpublished). The counters are recounted after
 * (vm_after_fork).
 */
void arena_after_fork(struct manager *m)
{
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        uintptr_t base = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        if (a->standalone) {
            uintptr_t e = radix_load(base);
            struct reservation *r = entry_pointer(e);
            if (e && entry_id(e) == m->id && !entry_is_slack(e) &&
                atomic_load_explicit(&r->base, memory_order_relaxed) == base && published(m, r, base))
                continue;
            if (stale_slack_starting(m, a, base))
                continue; /* stale slack (deferred.c) is kept */
            radix_store_range(base, end, 0, true);
            unmap_counted(m, base, end - base, "munmap of a reservation a vanished thread was making");
            atomic_store_explicit(&m->arenas[a->index], NULL, memory_order_relaxed);
            slab_free(&m->arena_slab, a, arena_struct_bytes(0)); /* its record stays with the slab */
            continue;
        }
        for (uint32_t g = 0; g < a->granules;) {
            if (!bit_test(a, g)) {
                g++;
                continue;
            }
            uintptr_t at = base + ((uintptr_t)g << g_granule_shift);
            struct reservation *r = radix_slot(at);
            bool starts = r && atomic_load_explicit(&r->base, memory_order_relaxed) == at;
            uint32_t n = starts ? (uint32_t)(res_span(r) >> g_granule_shift) : 1;
            /* stale slack (deferred.c) is kept: its record is the truth about its hardware */
            if (!starts || (!published(m, r, at) && !res_is_stale_slack(r)))
                give_back_unpublished(m, a, g, n);
            g += n;
        }
    }
}
