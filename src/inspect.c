/*
 * inspect.c - looking inside a manager: the region walk, the printed map, the
 * kernel-mapping count and validate(), which checks every invariant of the
 * address map, the arenas and the runs, and optionally that the kernel agrees.
 *
 * These are inspection calls, not hot paths: the walk, the mapping count and
 * validate's kernel check take pages for their lists (pool.c; never malloc);
 * validate of the books takes no memory at all (SPEC §4 rule 7). validate()
 * expects no other thread to be changing the manager while it runs.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static struct manager *manager_checked(IHostMemoryManager *i)
{
    return i ? manager_from(i) : NULL;
}

static inline uintptr_t arena_base(const struct arena *a)
{
    return atomic_load_explicit(&a->base, memory_order_relaxed);
}

/* Heapsort by base: in place, so that inspecting needs no malloc (qsort may
 * take a buffer from it). */
static void sift_down(struct arena **list, uint32_t root, uint32_t n)
{
    for (;;) {
        uint32_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && arena_base(list[child + 1]) > arena_base(list[child]))
            child++;
        if (arena_base(list[root]) >= arena_base(list[child]))
            return;
        struct arena *t = list[root];
        list[root] = list[child];
        list[child] = t;
        root = child;
    }
}

static void arenas_sort(struct arena **list, uint32_t n)
{
    for (uint32_t i = n / 2; i-- > 0;)
        sift_down(list, i, n);
    for (uint32_t end = n; end > 1; end--) {
        struct arena *t = list[0];
        list[0] = list[end - 1];
        list[end - 1] = t;
        sift_down(list, 0, end - 1);
    }
}

/* The manager's arenas sorted by address, in pages the caller gives back with
 * arenas_free. */
struct arena_list {
    struct manager *m;
    struct arena **items;
    uint32_t count, capacity;
};

static HRESULT arenas_sorted(struct manager *m, struct arena_list *l)
{
    uint32_t n = atomic_load_explicit(&m->arena_count, memory_order_acquire), k = 0, slot = 0;
    void *fresh;
    l->m = m;
    l->capacity = n ? n : 1;
    int err = pages_scratch_alloc(l->capacity * sizeof *l->items, &fresh);
    if (err)
        return os_refused(m, err, "mmap of a list of arenas");
    l->items = fresh;
    for (struct arena *a; k < n && (a = arena_next(m, &slot)) != NULL;)
        l->items[k++] = a;
    arenas_sort(l->items, k);
    l->count = k;
    return S_OK;
}

static void arenas_free(struct arena_list *l)
{
    pages_scratch_free(l->m, l->items, l->capacity * sizeof *l->items);
}

/* hostmem_walk, a reservation at a time: its regions, as VirtualQuery gives them. */
struct region_walk {
    hostmem_region_fn fn;
    void *context;
};

static int region_step(void *context, uintptr_t at, uintptr_t entry, struct reservation *r)
{
    struct region_walk *w = context;
    if (!r || res_is_stale_slack(r))
        return 0; /* free to every reader */
    int stop = 0;
    for (uintptr_t p = at, end = at + res_span(r); p < end && !stop;) {
        struct run_snapshot v;
        if (reservation_read(r, entry, p, &v) != 1)
            break;
        MEMORY_BASIC_INFORMATION info = {
            (void *)p, (void *)v.base, v.alloc_protect, v.base + (v.end << g_page_shift) - p,
            v.attr ? MEM_COMMIT : MEM_RESERVE, v.attr, MEM_PRIVATE};
        stop = w->fn(w->context, &info);
        p = v.base + (v.end << g_page_shift);
    }
    return stop;
}

HRESULT hostmem_walk(IHostMemoryManager *manager, hostmem_region_fn fn, void *context)
{
    struct manager *m = manager_checked(manager);
    if (!m || !fn)
        return E_POINTER;
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    struct arena_list arenas;
    if (arenas_sorted(m, &arenas) != S_OK)
        return E_OUTOFMEMORY;
    struct region_walk w = {fn, context};
    for (uint32_t i = 0; i < arenas.count && !arena_walk(m, arenas.items[i], region_step, &w); i++)
        ;
    arenas_free(&arenas);
    return S_OK;
}

static const char *protect_name(DWORD p, char *buffer, size_t size)
{
    const char *base;
    switch (p & 0xFF) {
    case 0: base = "-"; break;
    case PAGE_NOACCESS: base = "NOACCESS"; break;
    case PAGE_READONLY: base = "READONLY"; break;
    case PAGE_READWRITE: base = "READWRITE"; break;
    case PAGE_EXECUTE: base = "EXECUTE"; break;
    case PAGE_EXECUTE_READ: base = "EXECUTE_READ"; break;
    case PAGE_EXECUTE_READWRITE: base = "EXECUTE_READWRITE"; break;
    default: base = "?"; break;
    }
    snprintf(buffer, size, "%s%s%s%s", base, p & PAGE_GUARD ? "+GUARD" : "",
             p & PAGE_NOCACHE ? "+NOCACHE" : "", p & PAGE_WRITECOMBINE ? "+WRITECOMBINE" : "");
    return buffer;
}

static int print_region(void *context, const MEMORY_BASIC_INFORMATION *r)
{
    FILE *out = context;
    char p[48], a[48];
    fprintf(out, "%014jx-%014jx %10zu KiB  %-7s %-20s base %014jx (%s)\n",
            (uintmax_t)(uintptr_t)r->BaseAddress,
            (uintmax_t)((uintptr_t)r->BaseAddress + r->RegionSize), r->RegionSize / 1024,
            r->State == MEM_COMMIT ? "commit" : "reserve", protect_name(r->Protect, p, sizeof p),
            (uintmax_t)(uintptr_t)r->AllocationBase, protect_name(r->AllocationProtect, a, sizeof a));
    return 0;
}

HRESULT hostmem_print_map(IHostMemoryManager *manager, FILE *out)
{
    if (!out)
        return E_POINTER;
    return hostmem_walk(manager, print_region, out);
}

/* ---- kernel mappings ------------------------------------------------------------------ */
struct maps_list {
    struct manager *m;
    struct os_mapping *items;
    size_t count, capacity;
    int failed; /* the errno of a refused mmap */
};

static void maps_free(struct maps_list *l)
{
    pages_scratch_free(l->m, l->items, l->capacity * sizeof *l->items);
    l->items = NULL;
}

/* Grows by doubling, in pages (pool.c): never malloc. */
static int maps_collect(void *context, const struct os_mapping *m)
{
    struct maps_list *l = context;
    if (l->count == l->capacity) {
        size_t capacity = l->capacity ? l->capacity * 2 : 1024;
        void *p;
        int err = pages_scratch_alloc(capacity * sizeof *l->items, &p);
        if (err) {
            l->failed = err;
            return 1;
        }
        if (l->count)
            memcpy(p, l->items, l->count * sizeof *l->items);
        maps_free(l);
        l->items = p;
        l->capacity = capacity;
    }
    l->items[l->count++] = *m;
    return 0;
}

static HRESULT maps_read(struct manager *m, struct maps_list *l)
{
    memset(l, 0, sizeof *l);
    l->m = m;
    int err = os_walk_mappings(maps_collect, l);
    if (err || l->failed) {
        maps_free(l);
        return l->failed ? os_refused(m, l->failed, "mmap of a list of mappings")
                         : os_refused(m, err, "reading /proc/self/maps");
    }
    return S_OK;
}

HRESULT hostmem_kernel_mappings(IHostMemoryManager *manager, size_t *count)
{
    struct manager *m = manager_checked(manager);
    if (!m || !count)
        return E_POINTER;
    struct arena_list arenas;
    if (arenas_sorted(m, &arenas) != S_OK)
        return E_OUTOFMEMORY;
    struct arena **list = arenas.items;
    uint32_t n = arenas.count;
    struct maps_list maps;
    HRESULT hr = maps_read(m, &maps);
    if (hr != S_OK) {
        arenas_free(&arenas);
        return hr;
    }
    size_t total = 0, j = 0;
    for (size_t i = 0; i < maps.count; i++) {
        while (j < n && atomic_load_explicit(&list[j]->end, memory_order_relaxed) <= maps.items[i].start)
            j++;
        if (j < n && atomic_load_explicit(&list[j]->base, memory_order_relaxed) < maps.items[i].end)
            total++;
    }
    maps_free(&maps);
    arenas_free(&arenas);
    *count = total;
    return S_OK;
}

/* ---- validate --------------------------------------------------------------------------- */
struct problem {
    char *why;
    size_t size;
    int found;
};

static void complain(struct problem *p, const char *format, ...)
{
    if (p->found++)
        return;
    if (p->why && p->size) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(p->why, p->size, format, ap);
        va_end(ap);
    }
}

/* Checks one reservation's runs, and its count of committed pages. */
static void check_runs(struct reservation *r, struct problem *p)
{
    uint64_t seq = atomic_load(&r->seq);
    if (seq & 1)
        complain(p, "reservation %p: odd latch sequence", (void *)r);
    uint64_t pages = res_pages(r);
    uint32_t n = reservation_run_count(r);
    uint64_t committed = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t run = reservation_run(r, i);
        uint64_t end = i + 1 < n ? run_page(reservation_run(r, i + 1)) : pages;
        if (i == 0 && run_page(run) != 0)
            complain(p, "reservation %p: first run starts at page %ju", (void *)r,
                     (uintmax_t)run_page(run));
        if (end <= run_page(run) || end > pages)
            complain(p, "reservation %p: run %u [%ju,%ju) out of order", (void *)r, i,
                     (uintmax_t)run_page(run), (uintmax_t)end);
        if (i > 0 && run_attr(reservation_run(r, i - 1)) == run_attr(run))
            complain(p, "reservation %p: runs %u and %u not merged", (void *)r, i - 1, i);
        unsigned attr = run_attr(run), protect = attr & ~ATTR_STALE;
        if (attr && attr != ATTR_PENDING && !protect_valid(protect))
            complain(p, "reservation %p: bad attribute %#x", (void *)r, attr);
        if ((attr & ATTR_STALE) && !(r->flags & RES_STALE))
            complain(p, "reservation %p: stale run %u, not marked so", (void *)r, i);
        if (attr_visible(attr))
            committed += end - run_page(run);
        /* the two latch copies agree */
        if (reservation_copy_count(r, 1) != n || reservation_copy_run(r, 1, i) != run)
            complain(p, "reservation %p: latch copies differ", (void *)r);
    }
    if (reservation_committed(r) != committed)
        complain(p, "reservation %p: committed %ju, runs say %ju", (void *)r,
                 (uintmax_t)reservation_committed(r), (uintmax_t)committed);
}

struct expect_context {
    struct maps_list *maps;
    size_t cursor;
    struct problem *p;
};

/* The kernel must map [start,end) with prot, without holes. */
static void expect_kernel(struct expect_context *c, uintptr_t start, uintptr_t end, int prot)
{
    struct maps_list *l = c->maps;
    while (c->cursor < l->count && l->items[c->cursor].end <= start)
        c->cursor++;
    uintptr_t a = start;
    size_t i = c->cursor;
    while (a < end) {
        if (i >= l->count || l->items[i].start > a) {
            complain(c->p, "kernel: %#jx is not mapped", (uintmax_t)a);
            return;
        }
        if (l->items[i].prot != prot) {
            complain(c->p, "kernel: %#jx has protection %d, map says %d", (uintmax_t)a,
                     l->items[i].prot, prot);
            return;
        }
        a = l->items[i].end;
        i++;
    }
}

static int expect_segment(void *context, uintptr_t start, uintptr_t end, int prot)
{
    expect_kernel(context, start, end, prot);
    return 0;
}

/* hostmem_validate over one arena, a stretch at a time (arena_walk): the
 * bitmap, the address map and the runs agree, and with HOSTMEM_VALIDATE_KERNEL
 * the kernel; the counters' sums in tally. */
struct check {
    struct manager *m;
    struct arena *a;
    uint32_t flags;
    int slack_prot;
    uint32_t free_count;
    struct expect_context kernel;
    struct problem *p;
    struct tally tally;
    size_t watch_slots; /* write-watch slots the reservations name */
};

static int check_step(void *context, uintptr_t g, uintptr_t e, struct reservation *r)
{
    struct check *c = context;
    struct manager *m = c->m;
    struct arena *a = c->a;
    bool kernel = (c->flags & HOSTMEM_VALIDATE_KERNEL) != 0;
    uint32_t index = (uint32_t)((g - atomic_load(&a->base)) >> g_granule_shift);
    bool used = a->standalone || (atomic_load(&a->bitmap[index / 64]) >> (index % 64) & 1);
    /* The map names one owner a granule: another arena's slack, or a
     * reservation of another arena, means the two arenas overlap. */
    struct arena *owner = entry_id(e) != m->id || !e ? a
                          : entry_is_slack(e)       ? entry_pointer(e)
                                                    : res_arena(m, entry_pointer(e));
    if (owner != a) {
        complain(c->p, "arenas %p and %p overlap at granule %#jx", (void *)a, (void *)owner, (uintmax_t)g);
        return 0;
    }
    if (!used) {
        c->free_count++;
        if (e != (manager_tag(m) | (uintptr_t)a | ENTRY_SLACK))
            complain(c->p, "granule %#jx: free in arena, map says %#jx", (uintmax_t)g, (uintmax_t)e);
        if (kernel)
            expect_kernel(&c->kernel, g, g + g_granule, c->slack_prot);
        return 0;
    }
    /* stale slack (deferred.c): free in the map, used in the arena */
    bool stale_slack = r && res_is_stale_slack(r);
    if ((entry_id(e) != m->id || entry_is_slack(e) || !e) && !stale_slack) {
        complain(c->p, "granule %#jx: in use, map says %#jx", (uintmax_t)g, (uintmax_t)e);
        return 0;
    }
    if (!r) {
        complain(c->p, "granule %#jx: reservation %p does not start here", (uintmax_t)g, entry_pointer(e));
        return 0;
    }
    uintptr_t span = res_span(r);
    for (uintptr_t x = g; x < g + span; x += g_granule)
        if (radix_load(x) != e)
            complain(c->p, "granule %#jx: not mapped to its reservation", (uintmax_t)x);
    uint32_t ap = res_alloc_protect(r) & ~ALLOC_STALE_SLACK;
    if (!protect_valid(ap))
        complain(c->p, "reservation %p: bad allocation protect %#x", (void *)r, ap);
    check_runs(r, c->p);
    /* write watch's books: its own slot, or none (docs/writewatch.md) */
    struct watched *w = watch_slot_of(m, r);
    if (w) {
        c->watch_slots++;
        if (!(r->flags & RES_WRITE_WATCH) || atomic_load(&w->base) != g || !w->captured || !w->bits)
            complain(c->p, "reservation %p: write-watch slot %u is not its own", (void *)r, r->watch_slot - 1u);
    } else if (r->flags & RES_WATCH_EMULATED) {
        complain(c->p, "reservation %p: emulated write watch without its slot", (void *)r);
    }
    vm_tally(m, r, &c->tally);
    uint64_t pages = res_pages(r);
    if (kernel && (r->flags & RES_WATCH_EMULATED)) {
        range_hw_segments(m, r, expect_segment, &c->kernel);
    } else if (kernel) {
        uint32_t runs = reservation_run_count(r);
        for (uint32_t k = 0; k < runs; k++) {
            uint64_t run = reservation_run(r, k);
            uint64_t run_end = k + 1 < runs ? run_page(reservation_run(r, k + 1)) : pages;
            expect_kernel(&c->kernel, g + (run_page(run) << g_page_shift), g + (run_end << g_page_shift),
                          protect_to_os(run_attr(run), res_compact(m, r)));
        }
    }
    if (kernel && (pages << g_page_shift) < span)
        expect_kernel(&c->kernel, g + (pages << g_page_shift), g + span, c->slack_prot);
    return 0;
}

/* One arena: its bounds, every granule (check_step), its count of free granules. */
static void check_arena(struct check *c, struct arena *a)
{
    uintptr_t base = atomic_load(&a->base), end = atomic_load(&a->end);
    if (base & (g_granule - 1) || end & (g_granule - 1) || end <= base)
        complain(c->p, "arena %p: bad bounds", (void *)a);
    c->a = a;
    c->free_count = 0;
    arena_walk(c->m, a, check_step, c);
    if (!a->standalone && c->free_count != atomic_load(&a->free_granules))
        complain(c->p, "arena %p: %u free granules, counter says %u", (void *)a, c->free_count,
                 atomic_load(&a->free_granules));
}

/*
 * The books alone need no memory (SPEC §4 rule 7: validate of the books is a
 * give-back path, and must work at vm.max_map_count or with RLIMIT_AS used
 * up): the arenas are checked in table order, without a list. That two arenas
 * never overlap needs no address order either: check_step finds every granule
 * of an arena's range carrying that arena's own slack entry or naming a
 * reservation of that arena, and the address map holds one entry a granule,
 * so a granule in two arenas fails the check of one of them ("overlap"); that
 * each table slot holds its own arena (the index check) rules out one arena
 * counted twice. Only the kernel's view needs memory - /proc/self/maps read
 * into a list, matched against the arenas in address order - and E_FAIL says
 * when it could not be had.
 */
HRESULT hostmem_validate(IHostMemoryManager *manager, uint32_t flags, char *why, size_t why_size)
{
    struct manager *m = manager_checked(manager);
    if (!m)
        return E_POINTER;
    if (why && why_size)
        why[0] = 0;
    struct problem p = {why, why_size, 0};
    bool kernel = (flags & HOSTMEM_VALIDATE_KERNEL) != 0;
    /* The header promises S_OK, or E_FAIL with a description: a check that
     * cannot be made (the kernel refused the memory for its lists, at
     * vm.max_map_count say) is a failure that says so. */
    struct arena_list arenas = {m, NULL, 0, 0};
    struct maps_list maps = {0};
    if (kernel && arenas_sorted(m, &arenas) != S_OK) {
        complain(&p, "cannot check the kernel's view: the kernel refused memory for the list of arenas");
        return E_FAIL;
    }
    if (kernel && maps_read(m, &maps) != S_OK) {
        arenas_free(&arenas);
        complain(&p, "cannot check the kernel's view: /proc/self/maps could not be read into memory");
        return E_FAIL;
    }
    struct check c = {m, NULL, flags, reserved_prot(m->compact), 0, {&maps, 0, &p}, &p, {0}};
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        if (a->index != slot - 1)
            complain(&p, "arena %p: in table slot %u, says %u", (void *)a, slot - 1, a->index);
        if (!kernel)
            check_arena(&c, a);
    }
    for (uint32_t i = 0; i < arenas.count; i++) { /* the kernel's view: in address order */
        if (i > 0 && atomic_load(&arenas.items[i - 1]->end) > atomic_load(&arenas.items[i]->base))
            complain(&p, "arenas %p and %p overlap", (void *)arenas.items[i - 1], (void *)arenas.items[i]);
        check_arena(&c, arenas.items[i]);
    }
    const struct tally *t = &c.tally;
    if (t->reservations != atomic_load(&m->reservations))
        complain(&p, "%zu reservations, counter says %zu", t->reservations, atomic_load(&m->reservations));
    if (t->reserved != atomic_load(&m->reserved_bytes))
        complain(&p, "%zu bytes reserved, counter says %zu", t->reserved, atomic_load(&m->reserved_bytes));
    if (t->committed != atomic_load(&m->committed_bytes))
        complain(&p, "%zu bytes committed, counter says %zu", t->committed, atomic_load(&m->committed_bytes));
    if (t->pending != atomic_load(&m->pending_pages))
        complain(&p, "%zu pages wait for their discard, counter says %zu", t->pending,
                 atomic_load(&m->pending_pages));
    if (t->stale_slacks != atomic_load(&m->stale_slacks))
        complain(&p, "%zu stale slacks, counter says %zu", t->stale_slacks, atomic_load(&m->stale_slacks));
    if (t->book_protected != atomic_load(&m->book_protected))
        complain(&p, "%zu pages protected only in the books, counter says %zu", t->book_protected,
                 atomic_load(&m->book_protected));
    size_t taken = 0;
    for (size_t i = 0; i < WATCHED_SLOTS; i++)
        taken += atomic_load(&m->watched[i].base) > 1;
    if (taken != c.watch_slots)
        complain(&p, "%zu write-watch slots taken, reservations name %zu", taken, c.watch_slots);
    maps_free(&maps);
    arenas_free(&arenas); /* none taken for the books alone */
    return p.found ? E_FAIL : S_OK;
}
