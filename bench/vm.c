/*
 * vm.c - the VM calls one at a time, each against the raw system calls doing the
 * same work in the same process: reserve + release of 64 KiB (mmap + munmap),
 * and commit + first touch + decommit of one page (mprotect, touch, madvise,
 * mprotect) on an interior page and on an edge page, with the deferred discard
 * and without.
 *
 * Figures are medians (median_of, medians_interleaved for those compared with
 * each other); the raw floor and hostmem's figure use the same kind of page, so
 * a ratio compares like with like. Never asserts a timing: a target missed is
 * printed MISSED, and the run goes on. Leaves no reservation or mapping behind.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/mman.h>

#include "harness.h"
#include "sections.h"

/* ---- reserve + release 64 KiB ---------------------------------------------------- */

static double raw_reserve_release(void *ctx)
{
    (void)ctx;
    double t0 = now();
    for (size_t i = 0; i < n_pairs; i++) {
        void *p = mmap(NULL, K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            die("mmap", E_OUTOFMEMORY);
        munmap(p, K64);
    }
    return (now() - t0) * 1e9 / (double)n_pairs;
}

static double hm_reserve_release(void *ctx)
{
    IHostMemoryManager *mgr = ctx;
    double t0 = now();
    for (size_t i = 0; i < n_pairs; i++) {
        void *p;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(mgr, NULL, K64, MEM_RESERVE, PAGE_READWRITE,
                                                     eTaskCritical, &p);
        if (hr != S_OK)
            die("VirtualAlloc(MEM_RESERVE)", hr);
        IHostMemoryManager_VirtualFree(mgr, p, 0, MEM_RELEASE);
    }
    return (now() - t0) * 1e9 / (double)n_pairs;
}

/* ---- commit + first touch + decommit of one page -------------------------------- */

/*
 * Two places for the page, because the kernel's work differs:
 *   interior: pages 1..14 of a 64 KiB range, in turn, whose neighbours on both
 *     sides are reserved (PROT_NONE) pages of the same mapping: the commit's
 *     mprotect splits the mapping in two places, the decommit's merges it back;
 *   edge: page 0 of a 64 KiB mapping of its own with nothing mapped before it
 *     (a raw mmap; a hostmem reservation at an address outside every arena,
 *     which gets a kernel mapping of its own): one split, one merge.
 */
struct cycle {
    char *base; /* a raw 64 KiB PROT_NONE mapping, or a hostmem reservation */
    size_t first, count; /* the pages used, in turn: first .. first + count - 1 */
    size_t ops;
    IHostMemoryManager *m; /* the reservation's manager (unused by the raw calls) */
    bool resident;         /* raw: no discard (the two mprotects alone: the least a
                              decommit that makes the page inaccessible at once costs) */
};

static double raw_commit_cycle(void *ctx)
{
    struct cycle *c = ctx;
    double t0 = now();
    for (size_t i = 0; i < c->ops; i++) {
        char *p = c->base + (c->first + i % c->count) * P;
        mprotect(p, P, PROT_READ | PROT_WRITE);
        *(volatile char *)p = 1;
        if (!c->resident)
            madvise(p, P, MADV_DONTNEED);
        mprotect(p, P, PROT_NONE);
    }
    return (now() - t0) * 1e9 / (double)c->ops;
}

static double hm_commit_cycle(void *ctx)
{
    struct cycle *c = ctx;
    IHostMemoryManager *m = c->m;
    double t0 = now();
    for (size_t i = 0; i < c->ops; i++) {
        char *p = c->base + (c->first + i % c->count) * P;
        void *got;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(m, p, P, MEM_COMMIT, PAGE_READWRITE,
                                                     eTaskCritical, &got);
        if (hr != S_OK)
            die("VirtualAlloc(MEM_COMMIT)", hr);
        *(volatile char *)p = 1;
        IHostMemoryManager_VirtualFree(m, p, P, MEM_DECOMMIT);
    }
    return (now() - t0) * 1e9 / (double)c->ops;
}

/* whether anything is mapped at the page at p (mincore: ENOMEM for a hole) */
static int page_mapped(const void *p)
{
    unsigned char vec;
    return !(mincore((void *)((uintptr_t)p & ~(uintptr_t)(P - 1)), P, &vec) && errno == ENOMEM);
}

/* A place for a 64 KiB mapping of its own: 64 KiB-aligned, with at least 64 KiB
 * unmapped on each side once gap_close has run. Until then the middle and its
 * sides are mapped PROT_NONE (nothing else can take them); the caller keeps the
 * middle, or unmaps it and puts a hostmem reservation there, then gap_close. */
struct gap {
    char *map, *middle;
};
static struct gap gap_open(void)
{
    struct gap g;
    g.map = mmap(NULL, 4 * K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g.map == MAP_FAILED)
        die("mmap", E_OUTOFMEMORY);
    g.middle = (char *)(((uintptr_t)g.map + 2 * K64 - 1) & ~(uintptr_t)(K64 - 1));
    return g;
}
static void gap_close(const struct gap *g)
{
    munmap(g->map, (size_t)(g->middle - g->map));
    munmap(g->middle + K64, (size_t)(g->map + 4 * K64 - (g->middle + K64)));
}

/* Reserve + release 64 KiB, against mmap + munmap. */
void bench_reserve(IHostMemoryManager *mgr)
{
    char note[512];
    say("reserve + release 64 KiB\n");
    double raw_rr = median_of(raw_reserve_release, NULL);
    double hm_rr = median_of(hm_reserve_release, mgr);
    snprintf(note, sizeof note, "aim <= 0.25x: %s", hm_rr / raw_rr <= 0.25 ? "met" : "missed");
    add("reserve + release 64 KiB", hm_rr, "ns", raw_rr, "mmap+munmap", hm_rr / raw_rr,
        "<= 1.0x (aim <= 0.25x)", le(hm_rr / raw_rr, 1.0), note);
}

/* Commit + first touch + decommit: an interior page and an edge page, each
 * against the raw calls on the same kind of page, all seven taken in turn */
void bench_commit(IHostMemoryManager *mgr)
{
    char note[512];
    HRESULT hr;
    say("commit + first touch + decommit of one page: interior (2 splits) and edge (1 split)\n");
    void *r, *spacer[2], *first;
    /* interior: pages 1..14 of a reservation inside an arena; of a raw mapping */
    struct cycle raw_in = {mmap(NULL, K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), 1, 14,
                           n_commit};
    if (raw_in.base == MAP_FAILED)
        die("mmap", E_OUTOFMEMORY);
    if ((hr = IHostMemoryManager_VirtualAlloc(mgr, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r)) != S_OK)
        die("VirtualAlloc", hr);
    struct cycle hm_in = {r, 1, 14, n_commit, mgr};
    /* edge: page 0 of a 64 KiB mapping of its own with holes on both sides */
    struct gap raw_gap = gap_open(), hm_gap = gap_open();
    gap_close(&raw_gap);
    munmap(hm_gap.middle, K64);
    if ((hr = IHostMemoryManager_VirtualAlloc(mgr, hm_gap.middle, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                              &r)) != S_OK)
        die("VirtualAlloc at an address outside the arenas", hr);
    gap_close(&hm_gap);
    struct cycle raw_edge = {raw_gap.middle, 0, 1, n_commit}, hm_edge = {r, 0, 1, n_commit, mgr};
    /* and, for the note: page 0 of a reservation between two others in an arena
     * (the first page of a reservation, but to the kernel an interior page) */
    for (int i = 0; i < 3; i++)
        if ((hr = IHostMemoryManager_VirtualAlloc(mgr, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                  i == 1 ? &first : &spacer[i / 2])) != S_OK)
            die("VirtualAlloc", hr);
    struct cycle hm_first = {first, 0, 1, n_commit, mgr};
    int edges_are_edges = !page_mapped(raw_edge.base - P) && !page_mapped(hm_edge.base - P);
    int first_is_interior = page_mapped((char *)first - P);

    /* the protection changes alone, on a raw interior page of its own range */
    struct cycle raw_pair = {mmap(NULL, K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), 1, 14,
                             n_commit, NULL, true};
    if (raw_pair.base == MAP_FAILED)
        die("mmap", E_OUTOFMEMORY);
    /* the trade of the deferred discard: the same interior cycle with it off */
    IHostMemoryManager *at_once;
    hostmem_config once = {sizeof once};
    once.purge_delay_ms = HOSTMEM_PURGE_AT_ONCE;
    if ((hr = hostmem_create(&once, &at_once)) != S_OK)
        die("hostmem_create(HOSTMEM_PURGE_AT_ONCE)", hr);
    if ((hr = IHostMemoryManager_VirtualAlloc(at_once, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                              &r)) != S_OK)
        die("VirtualAlloc", hr);
    struct cycle hm_once = {r, 1, 14, n_commit, at_once};
    const run_fn fn[7] = {raw_commit_cycle, hm_commit_cycle, raw_commit_cycle, hm_commit_cycle,
                          hm_commit_cycle,  raw_commit_cycle, hm_commit_cycle};
    void *const ctx[7] = {&raw_in, &hm_in, &raw_edge, &hm_edge, &hm_first, &raw_pair, &hm_once};
    double t[7];
    medians_interleaved(7, fn, ctx, t);
    /* issue 15: a page decommitted recently (these pages cycle), <= 0.6x the raw
     * calls; the note says what no strict design can go under */
    snprintf(note, sizeof note, "interior page (neighbours reserved on both sides: 2 splits); edge %.2fx the "
             "interior floor; the two mprotects alone (the page resident, no discard, no fault: the least a "
             "decommit that makes the page inaccessible at once can cost) %.0f ns = %.2fx the floor; with the "
             "discard at once (HOSTMEM_PURGE_AT_ONCE) %.0f ns = %.2fx",
             t[2] / t[0], t[5], t[5] / t[0], t[6], t[6] / t[0]);
    add("commit + touch + decommit 1 page (strict)", t[1], "ns", t[0], "mprotect+touch+madvise+mprotect",
        t[1] / t[0], "<= 0.6x", le(t[1] / t[0], 0.6), note);
    snprintf(note, sizeof note, "page 0 of its own mapping%s; 1st page of an arena reservation %.0f ns (%.2fx the "
             "interior floor%s)", edges_are_edges ? ", nothing mapped before it" : " (BUT mapped before it)",
             t[4], t[4] / t[0], first_is_interior ? "" : "; at the arena's start");
    add("commit + touch + decommit 1 page (strict), edge", t[3], "ns", t[2], "the same, raw edge page",
        t[3] / t[2], "", INFO, note);
    IHostMemoryManager_VirtualFree(mgr, hm_in.base, 0, MEM_RELEASE);
    IHostMemoryManager_VirtualFree(mgr, hm_edge.base, 0, MEM_RELEASE);
    IHostMemoryManager_VirtualFree(mgr, first, 0, MEM_RELEASE);
    for (int i = 0; i < 2; i++)
        IHostMemoryManager_VirtualFree(mgr, spacer[i], 0, MEM_RELEASE);
    munmap(raw_in.base, K64);
    munmap(raw_edge.base, K64);
    munmap(raw_pair.base, K64);
    IHostMemoryManager_VirtualFree(at_once, hm_once.base, 0, MEM_RELEASE);
    IHostMemoryManager_Release(at_once);
}
