/*
 * embed_jemalloc.c - issue 4, item 3: a real allocator's page traffic through
 * hostmem's VM calls (SPEC §3, §4, §7).
 *
 * jemalloc 5.3 (Debian's libjemalloc-dev, unprefixed API) gets an arena whose
 * extent hooks reserve, commit, decommit and release through
 * IHostMemoryManager::VirtualAlloc / VirtualFree:
 *   alloc        VirtualAlloc(MEM_RESERVE [| MEM_COMMIT]) at the requested alignment
 *                (hostmem reservations are 64 KiB aligned; a bigger alignment is found
 *                by reserving size + alignment, releasing it and reserving again at the
 *                aligned address inside); a request for a given address is declined
 *   dalloc       MEM_RELEASE when the extent is a whole reservation; otherwise declined
 *                (jemalloc keeps the extent: hostmem cannot release part of one)
 *   destroy      decommit if committed; the reservation is released once every byte
 *                of it has been destroyed
 *   commit       VirtualAlloc(MEM_COMMIT) of the page range
 *   decommit     VirtualFree(MEM_DECOMMIT) of the page range
 *   purge_lazy   none (jemalloc then decommits)
 *   purge_forced declined (jemalloc decommits instead; a decommit + recommit could
 *                fail halfway under a budget and leave jemalloc with pages it believes
 *                are committed)
 *   split        allowed (both halves stay in their reservation)
 *   merge        allowed inside one reservation, declined across two (a commit or
 *                decommit spanning two reservations is an error in hostmem, as in Win32)
 * Every hook call and every VirtualAlloc/VirtualFree result is counted; the tests
 * check that none is refused when there is no budget, that hostmem's committed
 * bytes equal what jemalloc's statistics say the arena holds, and that a budget
 * stops the arena cleanly (mallocx returns NULL) and that it recovers.
 *
 * Links jemalloc, which replaces malloc for the whole program: the Makefile skips
 * this test under sanitizers.
 */
#define COBJMACROS
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ---- the manager the hooks talk to, and what they did ---------------------------------- */

static IHostMemoryManager *g_m;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* the reservation table */

enum { H_ALLOC, H_DALLOC, H_DESTROY, H_COMMIT, H_DECOMMIT, H_PURGE_FORCED, H_SPLIT, H_MERGE, H_N };
static const char *const hook_names[H_N] = {"alloc",  "dalloc",       "destroy", "commit",
                                            "decommit", "purge_forced", "split",   "merge"};

struct counters {
    size_t hook_calls[H_N];
    size_t hook_declined[H_N]; /* the hook said "no" by design (not a hostmem refusal) */
    size_t vm_calls;           /* VirtualAlloc + VirtualFree calls the hooks made */
    size_t vm_failed;          /* ... that did not return S_OK */
    size_t vm_out_of_memory;   /* ... of which E_OUTOFMEMORY (the budget) */
    HRESULT vm_last_failure;
    size_t bytes_committed;    /* bytes asked to commit (alloc with commit, commit hook) */
    size_t bytes_decommitted;
    size_t released;           /* reservations released */
    size_t escaped;            /* a hook saw a range outside the reservation table */
    size_t aligned_reserves;   /* reservations placed at an alignment above 64 KiB */
};
static struct counters g_c;

/* Every reservation the hooks made: extents never cross one (merge refuses). */
struct reservation {
    char *base;
    size_t size;
    size_t destroyed;
};
enum { MAX_RESERVATIONS = 4096 };
static struct reservation g_res[MAX_RESERVATIONS];
static size_t g_nres;

static HRESULT vm_alloc(void *at, size_t size, DWORD type, void **out)
{
    *out = NULL;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(g_m, at, size, type, PAGE_READWRITE, eTaskCritical, out);
    g_c.vm_calls++;
    if (hr != S_OK) {
        g_c.vm_failed++;
        g_c.vm_last_failure = hr;
        if (hr == E_OUTOFMEMORY)
            g_c.vm_out_of_memory++;
    } else if (type & MEM_COMMIT) {
        g_c.bytes_committed += size;
    }
    return hr;
}

static HRESULT vm_free(void *at, size_t size, DWORD type)
{
    HRESULT hr = IHostMemoryManager_VirtualFree(g_m, at, size, type);
    g_c.vm_calls++;
    if (hr != S_OK) {
        g_c.vm_failed++;
        g_c.vm_last_failure = hr;
        if (hr == E_OUTOFMEMORY)
            g_c.vm_out_of_memory++;
    } else if (type == MEM_DECOMMIT) {
        g_c.bytes_decommitted += size;
    }
    return hr;
}

/* The reservation holding [p, p+size), or NULL. Caller holds g_lock. */
static struct reservation *reservation_of(const void *p, size_t size)
{
    const char *c = p;
    for (size_t i = 0; i < g_nres; i++)
        if (c >= g_res[i].base && c + size <= g_res[i].base + g_res[i].size)
            return &g_res[i];
    g_c.escaped++;
    return NULL;
}

static void release_reservation(struct reservation *r)
{
    if (vm_free(r->base, 0, MEM_RELEASE) == S_OK) {
        g_c.released++;
        *r = g_res[--g_nres];
    }
}

static size_t align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment, bool *zero,
                        bool *commit, unsigned arena)
{
    (void)h, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_ALLOC]++;
    void *p = NULL;
    DWORD type = MEM_RESERVE | (*commit ? MEM_COMMIT : 0);
    if (new_addr != NULL || g_nres == MAX_RESERVATIONS) {
        /* growing in place would make a second reservation jemalloc wants to merge */
        g_c.hook_declined[H_ALLOC]++;
    } else if (alignment <= hostmem_granularity()) {
        vm_alloc(NULL, size, type, &p);
    } else {
        /* Find an aligned hole: reserve more than enough, give it back, take the
         * aligned part. Nothing else reserves meanwhile in this program; retry anyway. */
        for (int attempt = 0; attempt < 4 && p == NULL; attempt++) {
            void *probe;
            if (vm_alloc(NULL, size + alignment, MEM_RESERVE, &probe) != S_OK)
                break;
            vm_free(probe, 0, MEM_RELEASE);
            vm_alloc((void *)align_up((uintptr_t)probe, alignment), size, type, &p);
        }
        if (p)
            g_c.aligned_reserves++;
    }
    if (p) {
        g_res[g_nres++] = (struct reservation){p, size, 0};
        *zero = true; /* fresh pages (and recommitted ones) read zero in hostmem */
    }
    pthread_mutex_unlock(&g_lock);
    return p;
}

static bool hook_dalloc(extent_hooks_t *h, void *addr, size_t size, bool committed, unsigned arena)
{
    (void)h, (void)committed, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_DALLOC]++;
    bool declined = true;
    struct reservation *r = reservation_of(addr, size);
    if (r && r->base == addr && r->size == size) {
        size_t before = g_c.released;
        release_reservation(r);
        declined = g_c.released == before;
    } else {
        g_c.hook_declined[H_DALLOC]++;
    }
    pthread_mutex_unlock(&g_lock);
    return declined;
}

static void hook_destroy(extent_hooks_t *h, void *addr, size_t size, bool committed, unsigned arena)
{
    (void)h, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_DESTROY]++;
    struct reservation *r = reservation_of(addr, size);
    if (r) {
        if (committed)
            vm_free(addr, size, MEM_DECOMMIT);
        r->destroyed += size;
        if (r->destroyed == r->size)
            release_reservation(r);
    }
    pthread_mutex_unlock(&g_lock);
}

static bool hook_commit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                        unsigned arena)
{
    (void)h, (void)size, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_COMMIT]++;
    void *p;
    bool failed = !reservation_of((char *)addr + offset, length) ||
                  vm_alloc((char *)addr + offset, length, MEM_COMMIT, &p) != S_OK;
    pthread_mutex_unlock(&g_lock);
    return failed;
}

static bool hook_decommit(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                          unsigned arena)
{
    (void)h, (void)size, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_DECOMMIT]++;
    bool failed = !reservation_of((char *)addr + offset, length) ||
                  vm_free((char *)addr + offset, length, MEM_DECOMMIT) != S_OK;
    pthread_mutex_unlock(&g_lock);
    return failed;
}

static bool hook_purge_forced(extent_hooks_t *h, void *addr, size_t size, size_t offset, size_t length,
                              unsigned arena)
{
    (void)h, (void)addr, (void)size, (void)offset, (void)length, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_PURGE_FORCED]++;
    g_c.hook_declined[H_PURGE_FORCED]++;
    pthread_mutex_unlock(&g_lock);
    return true;
}

static bool hook_split(extent_hooks_t *h, void *addr, size_t size, size_t size_a, size_t size_b,
                       bool committed, unsigned arena)
{
    (void)h, (void)size_a, (void)size_b, (void)committed, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_SPLIT]++;
    bool refused = reservation_of(addr, size) == NULL;
    pthread_mutex_unlock(&g_lock);
    return refused;
}

static bool hook_merge(extent_hooks_t *h, void *addr_a, size_t size_a, void *addr_b, size_t size_b,
                       bool committed, unsigned arena)
{
    (void)h, (void)committed, (void)arena;
    pthread_mutex_lock(&g_lock);
    g_c.hook_calls[H_MERGE]++;
    struct reservation *a = reservation_of(addr_a, size_a), *b = reservation_of(addr_b, size_b);
    bool refused = a == NULL || a != b;
    if (refused)
        g_c.hook_declined[H_MERGE]++;
    pthread_mutex_unlock(&g_lock);
    return refused;
}

static extent_hooks_t g_hooks = {
    hook_alloc, hook_dalloc,       hook_destroy, hook_commit, hook_decommit,
    NULL /* purge_lazy */,       hook_purge_forced, hook_split,   hook_merge,
};

/* ---- jemalloc side ----------------------------------------------------------------------- */

static size_t g_page;

static unsigned arena_create(void)
{
    unsigned ind = 0;
    size_t sz = sizeof ind;
    extent_hooks_t *hooks = &g_hooks;
    if (mallctl("arenas.create", &ind, &sz, &hooks, sizeof hooks) != 0)
        return UINT32_MAX;
    return ind;
}

static int arena_ctl(unsigned ind, const char *what)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.%s", ind, what);
    return mallctl(name, NULL, NULL, NULL, 0);
}

static int arena_set_ssize(unsigned ind, const char *what, ssize_t value)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.%s", ind, what);
    return mallctl(name, NULL, NULL, &value, sizeof value);
}

struct je_stats {
    size_t pactive, pdirty, pmuzzy; /* pages */
    size_t mapped, retained, base, resident;
};

static size_t stat_of(unsigned ind, const char *what)
{
    char name[96];
    size_t v = 0, sz = sizeof v;
    snprintf(name, sizeof name, "stats.arenas.%u.%s", ind, what);
    if (mallctl(name, &v, &sz, NULL, 0) != 0)
        return (size_t)-1;
    return v;
}

static struct je_stats je_stats(unsigned ind)
{
    uint64_t epoch = 1;
    size_t sz = sizeof epoch;
    mallctl("epoch", &epoch, &sz, &epoch, sz);
    struct je_stats s;
    s.pactive = stat_of(ind, "pactive");
    s.pdirty = stat_of(ind, "pdirty");
    s.pmuzzy = stat_of(ind, "pmuzzy");
    s.mapped = stat_of(ind, "mapped");
    s.retained = stat_of(ind, "retained");
    s.base = stat_of(ind, "base");
    s.resident = stat_of(ind, "resident");
    return s;
}

static hostmem_stats hm_stats(void)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(g_m, &s);
    return s;
}

/* What jemalloc says the arena keeps committed: its extents' active, dirty and muzzy
 * pages (muzzy stays committed; this arena has no lazy purge, so it is 0), plus its
 * metadata blocks, which the base allocator also maps through the hooks and keeps
 * committed. "mapped" is that whole total in jemalloc 5.3 (base mapped + extents
 * mapped); both views are checked against hostmem. */
static size_t je_committed_pages_bytes(const struct je_stats *s)
{
    return (s->pactive + s->pdirty + s->pmuzzy) * g_page;
}

static void print_compare(const char *when, const struct je_stats *j, const hostmem_stats *h)
{
    if (!getenv("TEST_VERBOSE"))
        return;
    fprintf(stderr,
            "  %-22s hostmem committed %zu reserved %zu reservations %zu | jemalloc "
            "pages(active+dirty+muzzy) %zu (%zu+%zu+%zu) mapped %zu base %zu resident %zu retained %zu\n",
            when, h->committed_bytes, h->reserved_bytes, h->reservations, je_committed_pages_bytes(j),
            j->pactive * g_page, j->pdirty * g_page, j->pmuzzy * g_page, j->mapped, j->base, j->resident,
            j->retained);
}

static void print_hooks(void)
{
    if (!getenv("TEST_VERBOSE"))
        return;
    fprintf(stderr, "  hooks:");
    for (int i = 0; i < H_N; i++)
        fprintf(stderr, " %s %zu (declined %zu)", hook_names[i], g_c.hook_calls[i], g_c.hook_declined[i]);
    fprintf(stderr, "\n  vm calls %zu failed %zu (E_OUTOFMEMORY %zu) committed %zu decommitted %zu released %zu\n",
            g_c.vm_calls, g_c.vm_failed, g_c.vm_out_of_memory, g_c.bytes_committed, g_c.bytes_decommitted,
            g_c.released);
}

/* ---- a random workload ------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* 70% small (16 B - 4 KiB), 30% log-uniform from 4 KiB to 4 MiB. */
static size_t random_size(void)
{
    if (rnd() % 10 < 7)
        return 16 + rnd() % (4096 - 16);
    unsigned shift = 12 + (unsigned)(rnd() % 10); /* 4 KiB .. 2 MiB */
    return ((size_t)1 << shift) + rnd() % ((size_t)1 << shift);
}

enum { SLOTS = 1024 };
struct slot {
    uint64_t *p;
    size_t size;
    uint64_t tag;
};

/* A tag in every page the block touches and in its last word: the pages are really
 * committed and writable, and no two live blocks overlap. */
static void stamp(struct slot *s)
{
    char *c = (char *)s->p;
    for (size_t off = 0; off + 8 <= s->size; off += g_page)
        memcpy(c + off, &s->tag, 8);
    memcpy(c + (s->size & ~(size_t)7) - 8, &s->tag, 8);
}

static int intact(const struct slot *s)
{
    const char *c = (const char *)s->p;
    uint64_t v;
    for (size_t off = 0; off + 8 <= s->size; off += g_page) {
        memcpy(&v, c + off, 8);
        if (v != s->tag)
            return 0;
    }
    memcpy(&v, c + (s->size & ~(size_t)7) - 8, 8);
    return v == s->tag;
}

struct workload {
    size_t allocations, frees, failures, corrupt;
    size_t bytes_moved;
    size_t checkpoints, disagreements;
};

static int flags_for(unsigned ind) { return (int)(MALLOCX_ARENA(ind) | MALLOCX_TCACHE_NONE); }

static void release_slot(struct slot *s, unsigned ind, struct workload *w)
{
    if (!intact(s))
        w->corrupt++;
    dallocx(s->p, flags_for(ind));
    s->p = NULL;
    w->frees++;
}

/* At a quiet point (no call into the arena running), hostmem's committed bytes must equal
 * what jemalloc says the arena has mapped and not given back: "stats.arenas.<i>.mapped",
 * which in 5.3 is its extents' active + dirty + muzzy pages plus its metadata (base)
 * blocks, all of which live in pages the hooks committed. Tolerance: none, the two must
 * be equal to the byte. And the part that is not extent pages - the metadata - must be
 * small: at most METADATA_SLACK (jemalloc maps its base in 2 MiB blocks).
 * *metadata gets committed - (pactive + pdirty + pmuzzy) * page. */
#define METADATA_SLACK ((size_t)4 << 20)
static int agrees(const struct je_stats *j, const hostmem_stats *h, size_t *metadata)
{
    size_t pages = je_committed_pages_bytes(j);
    *metadata = h->committed_bytes - pages;
    return h->committed_bytes == j->mapped && h->committed_bytes >= pages &&
           *metadata <= METADATA_SLACK;
}

static void run_workload(unsigned ind, struct slot *slots, size_t target_bytes, struct workload *w)
{
    size_t step = 0;
    while (w->bytes_moved < target_bytes) {
        struct slot *s = &slots[rnd() % SLOTS];
        if (s->p) {
            release_slot(s, ind, w);
        } else {
            s->size = random_size();
            s->p = mallocx(s->size, flags_for(ind));
            if (!s->p) {
                w->failures++;
                continue;
            }
            s->tag = rnd() | 1;
            stamp(s);
            w->allocations++;
            w->bytes_moved += s->size;
        }
        if (++step % 1024 == 0) {
            struct je_stats j = je_stats(ind);
            hostmem_stats h = hm_stats();
            size_t meta;
            w->checkpoints++;
            if (!agrees(&j, &h, &meta)) {
                w->disagreements++;
                print_compare("checkpoint disagrees", &j, &h);
            }
        }
    }
}

static IHostMemoryManager *make_manager(size_t commit_limit)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = commit_limit;
    IHostMemoryManager *m = NULL;
    if (hostmem_create(&c, &m) != S_OK)
        return NULL;
    memset(&g_c, 0, sizeof g_c);
    g_nres = 0;
    g_m = m;
    return m;
}

/* Destroys the arena (jemalloc gives every extent back through dalloc/destroy) and the
 * manager; every reservation must have been released by then. */
static void finish(IHostMemoryManager *m, unsigned ind)
{
    CHECK_EQ(arena_ctl(ind, "destroy"), 0);
    hostmem_stats h = hm_stats();
    print_hooks();
    CHECK_EQ(g_nres, 0);
    CHECK_EQ(h.reservations, 0);
    CHECK_EQ(h.committed_bytes, 0);
    CHECK_EQ(g_c.escaped, 0);
    char why[256] = "";
    HRESULT hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        fprintf(stderr, "  validate: %s\n", why);
    CHECK_HR(hr, S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    g_m = NULL;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* §3/§4 through a real allocator: a random alloc/free workload moving gigabytes on an
 * arena whose extent hooks use VirtualAlloc/VirtualFree runs with every VM call S_OK,
 * every hook's range inside one reservation, every block intact, and hostmem's committed
 * bytes equal to what jemalloc's statistics say the arena holds at every checkpoint;
 * after a purge the decommits bring committed down to jemalloc's metadata. */
TEST(workload_page_traffic_through_vm_calls_no_refusal_committed_follows_stats)
{
    IHostMemoryManager *m = make_manager(HOSTMEM_UNLIMITED);
    REQUIRE(m);
    unsigned ind = arena_create();
    REQUIRE(ind != UINT32_MAX);
    static struct slot slots[SLOTS];
    memset(slots, 0, sizeof slots);
    struct workload w = {0};

    /* Phase 1: jemalloc's default decay (dirty pages stay committed a while). */
    run_workload(ind, slots, (size_t)3 << 30, &w);
    /* Phase 2: no decay: every freed run is decommitted at once (much more VM traffic). */
    CHECK_EQ(arena_set_ssize(ind, "dirty_decay_ms", 0), 0);
    CHECK_EQ(arena_set_ssize(ind, "muzzy_decay_ms", 0), 0);
    run_workload(ind, slots, (size_t)5 << 30, &w);

    struct je_stats j = je_stats(ind);
    hostmem_stats h = hm_stats();
    size_t meta = 0;
    print_compare("after workload", &j, &h);
    CHECK(agrees(&j, &h, &meta));
    size_t live = 0;
    for (int i = 0; i < SLOTS; i++)
        live += slots[i].p ? slots[i].size : 0;
    /* jemalloc's active pages cover the live blocks (size classes round up to 25%) */
    CHECK(j.pactive * g_page >= live);
    CHECK(j.pactive * g_page <= live + live / 2 + SLOTS * g_page);

    /* Free everything, purge: committed falls to the metadata alone. */
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].p)
            release_slot(&slots[i], ind, &w);
    CHECK_EQ(arena_set_ssize(ind, "dirty_decay_ms", 10000), 0);
    CHECK_EQ(arena_ctl(ind, "purge"), 0);
    j = je_stats(ind);
    h = hm_stats();
    print_compare("freed and purged", &j, &h);
    CHECK_EQ(j.pactive, 0);
    CHECK_EQ(j.pdirty, 0);
    CHECK(agrees(&j, &h, &meta));
    /* what is left is metadata: at most jemalloc's base bytes rounded to its blocks */
    CHECK(h.committed_bytes <= j.base + METADATA_SLACK);
    CHECK(h.peak_committed_bytes > ((size_t)64 << 20));

    if (getenv("TEST_VERBOSE"))
        fprintf(stderr,
                "  workload: %zu allocations, %zu frees, %.2f GiB moved, %zu checkpoints, "
                "peak committed %zu, left after purge %zu (jemalloc base %zu)\n",
                w.allocations, w.frees, (double)w.bytes_moved / (1 << 30), w.checkpoints,
                h.peak_committed_bytes, h.committed_bytes, j.base);
    CHECK(w.bytes_moved >= (size_t)5 << 30);
    CHECK_EQ(w.failures, 0);
    CHECK_EQ(w.corrupt, 0);
    CHECK(w.checkpoints > 0);
    CHECK_EQ(w.disagreements, 0);
    CHECK_EQ(g_c.vm_failed, 0);
    CHECK_EQ(g_c.escaped, 0);
    CHECK_EQ(h.os_refusals, 0);
    CHECK_EQ(h.refusals[eTaskCritical], 0);
    /* the traffic went through the hooks: reservations, commits and decommits */
    CHECK(g_c.hook_calls[H_ALLOC] > 0);
    CHECK(g_c.hook_calls[H_COMMIT] > 100);
    CHECK(g_c.hook_calls[H_DECOMMIT] > 100);
    CHECK(g_c.bytes_decommitted > ((size_t)1 << 30));
    finish(m, ind);
}

/* §3 alignment: jemalloc's aligned allocations (up to 16 MiB) come from the arena, are
 * aligned, and the hooks still see every range inside one reservation. */
TEST(aligned_allocations_inside_one_reservation)
{
    IHostMemoryManager *m = make_manager(HOSTMEM_UNLIMITED);
    REQUIRE(m);
    unsigned ind = arena_create();
    REQUIRE(ind != UINT32_MAX);
    void *blocks[16] = {0};
    for (int i = 0; i < 16; i++) {
        size_t align = (size_t)4096 << (i % 13); /* 4 KiB .. 16 MiB */
        size_t size = align + (size_t)i * 8192;
        blocks[i] = mallocx(size, flags_for(ind) | MALLOCX_ALIGN(align));
        CHECK(blocks[i] != NULL);
        if (!blocks[i])
            continue;
        CHECK_EQ((uintptr_t)blocks[i] % align, 0);
        memset(blocks[i], 0xA5, size);
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, blocks[i], &info, sizeof info, &n), S_OK);
        CHECK_EQ(info.State, MEM_COMMIT);
        CHECK_EQ(info.Type, MEM_PRIVATE);
    }
    /* jemalloc 5.3 with opt.retain (Debian's default) grows its retained space with
     * page-aligned requests and aligns inside them; the hook's over-aligned path
     * (reserve, release, reserve again at the aligned address inside) is driven here
     * directly, as jemalloc without retain would drive it. */
    size_t aligned_before = g_c.aligned_reserves;
    for (int i = 0; i < 4; i++) {
        size_t align = (size_t)1 << (20 + i * 2); /* 1, 4, 16, 64 MiB */
        bool zero = false, commit = (i % 2) == 0;
        char *p = g_hooks.alloc(&g_hooks, NULL, align / 2 + (size_t)i * 65536, align, &zero, &commit, ind);
        CHECK(p != NULL);
        if (!p)
            continue;
        CHECK_EQ((uintptr_t)p % align, 0);
        CHECK(zero);
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, p, &info, sizeof info, &n), S_OK);
        CHECK(info.AllocationBase == p);
        CHECK_EQ(info.State, commit ? MEM_COMMIT : MEM_RESERVE);
        if (commit)
            CHECK(p[0] == 0 && p[align / 2 - 1] == 0);
        /* a whole reservation: dalloc releases it */
        CHECK(!g_hooks.dalloc(&g_hooks, p, align / 2 + (size_t)i * 65536, commit, ind));
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, p, &info, sizeof info, &n), S_OK);
        CHECK_EQ(info.State, MEM_FREE);
    }
    CHECK_EQ(g_c.aligned_reserves - aligned_before, 4);

    struct je_stats j = je_stats(ind);
    hostmem_stats h = hm_stats();
    size_t meta;
    print_compare("aligned", &j, &h);
    CHECK(agrees(&j, &h, &meta));
    for (int i = 0; i < 16; i++)
        if (blocks[i])
            dallocx(blocks[i], flags_for(ind));
    CHECK_EQ(g_c.vm_failed, 0);
    CHECK_EQ(g_c.escaped, 0);
    finish(m, ind);
}

/* §7 budget through a real allocator: with a commit limit the arena runs out cleanly -
 * mallocx returns NULL (jemalloc's out of memory), the only refusals the hooks see are
 * E_OUTOFMEMORY, committed never passes the limit, live blocks stay intact - and after
 * freeing and raising the limit the same arena works again. */
TEST(budget_stops_arena_cleanly_then_recovers)
{
    const size_t limit = (size_t)48 << 20;
    IHostMemoryManager *m = make_manager(limit);
    REQUIRE(m);
    unsigned ind = arena_create();
    REQUIRE(ind != UINT32_MAX);
    static struct slot slots[4096];
    memset(slots, 0, sizeof slots);
    struct workload w = {0};
    size_t n = 0, nulls = 0;

    /* Fill: random sizes until jemalloc says no several times in a row. */
    while (n < 4096 && nulls < 64) {
        struct slot *s = &slots[n];
        s->size = random_size();
        s->p = mallocx(s->size, flags_for(ind));
        if (!s->p) {
            nulls++;
            continue;
        }
        s->tag = rnd() | 1;
        stamp(s);
        w.bytes_moved += s->size;
        n++;
    }
    hostmem_stats h = hm_stats();
    struct je_stats j = je_stats(ind);
    print_compare("at the limit", &j, &h);
    print_hooks();
    CHECK(nulls > 0);                        /* the budget stopped the arena */
    CHECK(n < 4096);
    CHECK(w.bytes_moved > limit / 2);        /* ... not before it was mostly used */
    CHECK(h.committed_bytes <= limit);
    CHECK(h.peak_committed_bytes <= limit);
    CHECK(h.refusals[eTaskCritical] > 0);
    CHECK(g_c.vm_out_of_memory > 0);
    CHECK_EQ(g_c.vm_failed, g_c.vm_out_of_memory); /* nothing but the budget refused */
    CHECK_EQ(g_c.escaped, 0);
    size_t meta;
    CHECK(agrees(&j, &h, &meta));
    for (size_t i = 0; i < n; i++)
        CHECK(intact(&slots[i]));

    /* Small allocations still fail or succeed cleanly; none crashes. */
    for (int i = 0; i < 1000; i++) {
        void *p = mallocx(16 + (size_t)i % 512, flags_for(ind));
        if (p)
            dallocx(p, flags_for(ind));
    }

    /* Free half: room again under the same limit (after a purge). */
    for (size_t i = 0; i < n; i += 2)
        release_slot(&slots[i], ind, &w);
    CHECK_EQ(arena_ctl(ind, "purge"), 0);
    void *big = mallocx((size_t)4 << 20, flags_for(ind));
    CHECK(big != NULL);
    if (big) {
        memset(big, 1, (size_t)4 << 20);
        dallocx(big, flags_for(ind));
    }
    /* Nothing fits at a limit below what is committed... */
    h = hm_stats();
    CHECK_HR(hostmem_set_commit_limit(m, h.committed_bytes), S_OK);
    void *none = mallocx((size_t)8 << 20, flags_for(ind));
    CHECK(none == NULL);
    /* ...and raising it makes the same arena work again, for much more than before. */
    size_t refused_before = g_c.vm_out_of_memory;
    CHECK_HR(hostmem_set_commit_limit(m, HOSTMEM_UNLIMITED), S_OK);
    void *many[64];
    int got = 0;
    for (int i = 0; i < 64; i++) {
        many[i] = mallocx((size_t)2 << 20, flags_for(ind));
        if (many[i]) {
            memset(many[i], 2, (size_t)2 << 20);
            got++;
        }
    }
    CHECK_EQ(got, 64); /* 128 MiB, well above the old limit */
    CHECK_EQ(g_c.vm_out_of_memory, refused_before);
    for (int i = 0; i < 64; i++)
        if (many[i])
            dallocx(many[i], flags_for(ind));
    for (size_t i = 1; i < n; i += 2) {
        CHECK(intact(&slots[i]));
        release_slot(&slots[i], ind, &w);
    }
    CHECK_EQ(w.corrupt, 0);
    CHECK_EQ(g_c.vm_failed, g_c.vm_out_of_memory);
    CHECK_EQ(arena_ctl(ind, "purge"), 0);
    j = je_stats(ind);
    h = hm_stats();
    print_compare("freed after recovery", &j, &h);
    CHECK(agrees(&j, &h, &meta));
    finish(m, ind);
}

int main(void)
{
    size_t sz = sizeof g_page;
    if (mallctl("arenas.page", &g_page, &sz, NULL, 0) != 0)
        g_page = 4096;
    RUN(workload_page_traffic_through_vm_calls_no_refusal_committed_follows_stats);
    RUN(aligned_allocations_inside_one_reservation);
    RUN(budget_stops_arena_cleanly_then_recovers);
    return TEST_SUMMARY("embed_jemalloc");
}
