/*
 * scale.c - hostmem against many live reservations: VirtualQuery and a foreign
 * VirtualFree (an address no reservation holds) at 1 .. 1,000,000 live
 * reservations, against mincore and the cheapest system call, with the chart's
 * data; then at 1,000,000: a query random over all of them against a pointer
 * chase over as many bytes as their metadata, the kernel mappings and the
 * metadata's RSS, one committed page each until vm.max_map_count refuses, and
 * compact mode's million (in a child process of its own, for a true RSS).
 *
 * Figures are medians against the raw system calls in the same process. Never
 * asserts a timing; releases every reservation it made, and its managers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "sections.h"

/* a number from /proc/sys, or dflt */
static size_t read_sysctl(const char *path, size_t dflt)
{
    FILE *f = fopen(path, "r");
    size_t v = dflt;
    if (f) {
        if (fscanf(f, "%zu", &v) != 1)
            v = dflt;
        fclose(f);
    }
    return v;
}

static size_t kernel_mappings(IHostMemoryManager *m)
{
    size_t n = 0;
    if (hostmem_kernel_mappings(m, &n) != S_OK)
        return (size_t)-1;
    return n;
}

/* ---- VirtualQuery and foreign VirtualFree against live reservations ------------- */

static char **qaddr; /* QADDR random addresses of the live reservations, one level's */
static IHostMemoryManager *qmgr; /* the section's own manager (strict mode), made and released by it */

static void pick_addresses(void **res, size_t live)
{
    for (size_t i = 0; i < QADDR; i++)
        qaddr[i] = (char *)res[rnd() % live] + (rnd() % K64);
}

static double hm_query(void *ctx)
{
    size_t n = *(size_t *)ctx;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    uintptr_t sink = 0;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        IHostMemoryManager_VirtualQuery(qmgr, qaddr[i & (QADDR - 1)], &info, sizeof info, &got);
        sink += info.RegionSize;
    }
    double t = now() - t0;
    __asm__ volatile("" ::"r"(sink));
    return t * 1e9 / (double)n;
}

/*
 * VirtualQuery of addresses spread at random over every live reservation (not
 * a set picked beforehand, whose metadata a cache would hold): each query is of
 * a random byte of a random one of res[0..count). Dependent: the next address
 * is made from the last answer too (its RegionSize >> 63, 0 at run time but
 * unknown to the compiler and the processor), so queries do not overlap - as
 * the floor's loads do not. Independent: they may overlap, as a caller's
 * queries of unrelated addresses do. The index of the query 16 ahead is drawn
 * and its res[] slot prefetched, so reading res[] is not on the queries' path.
 */
struct query_all {
    void **res;
    size_t count, ops;
    uint64_t state;
};

static inline __attribute__((always_inline)) double query_all(struct query_all *q, const int dependent)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    uint64_t x = q->state;
    uintptr_t carry = 0, sink = 0;
    uint32_t ahead[16];
    for (int k = 0; k < 16; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ahead[k] = (uint32_t)(((x & 0xffffffffu) * q->count) >> 32);
    }
    double t0 = now();
    for (size_t i = 0; i < q->ops; i++) {
        uint32_t index = ahead[i & 15];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t next = (uint32_t)(((x & 0xffffffffu) * q->count) >> 32);
        ahead[i & 15] = next;
        __builtin_prefetch(&q->res[next]);
        char *a = (char *)q->res[index] + ((x >> 40) & (K64 - 1)) + carry;
        IHostMemoryManager_VirtualQuery(qmgr, a, &info, sizeof info, &got);
        sink += info.RegionSize;
        if (dependent)
            carry = (uintptr_t)info.RegionSize >> 63;
    }
    double t = now() - t0;
    __asm__ volatile("" ::"r"(sink));
    q->state = x;
    return t * 1e9 / (double)q->ops;
}
static double hm_query_all_dependent(void *ctx)
{
    return query_all(ctx, 1);
}
static double hm_query_all_independent(void *ctx)
{
    return query_all(ctx, 0);
}

/* The floor of a query whose metadata no cache holds: one dependent load from
 * a buffer as big as that metadata, at random - a pointer chase along a random
 * cyclic permutation of its 64-byte lines (Sattolo's shuffle: one cycle through
 * every line). Each run goes on from where the last one stopped. */
struct chase {
    void **buffer, **at;
    size_t bytes, ops;
};

static void chase_open(struct chase *c, size_t bytes, size_t ops)
{
    size_t lines = bytes / 64, stride = 64 / sizeof(void *);
    c->bytes = lines * 64;
    c->ops = ops;
    c->buffer = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *order = malloc(lines * sizeof *order);
    if (c->buffer == MAP_FAILED || !order)
        die("mmap", E_OUTOFMEMORY);
    for (size_t i = 0; i < lines; i++)
        order[i] = (uint32_t)i;
    for (size_t i = lines - 1; i > 0; i--) {
        size_t j = rnd() % i;
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < lines; i++)
        c->buffer[i * stride] = &c->buffer[(size_t)order[i] * stride];
    free(order);
    c->at = c->buffer;
}

static double chase_run(void *ctx)
{
    struct chase *c = ctx;
    void **p = c->at;
    double t0 = now();
    for (size_t i = 0; i < c->ops; i++)
        p = *p;
    double t = now() - t0;
    c->at = p;
    return t * 1e9 / (double)c->ops;
}

/* floor of a query: mincore() of the page - the kernel's own per-page question */
static double raw_query(void *ctx)
{
    size_t n = *(size_t *)ctx;
    unsigned char vec;
    double t0 = now();
    for (size_t i = 0; i < n; i++)
        mincore((void *)((uintptr_t)qaddr[i & (QADDR - 1)] & ~(uintptr_t)(P - 1)), P, &vec);
    return (now() - t0) * 1e9 / (double)n;
}

static double hm_foreign_free(void *ctx)
{
    size_t n = *(size_t *)ctx;
    volatile int local = 0;
    double t0 = now();
    for (size_t i = 0; i < n; i++)
        IHostMemoryManager_VirtualFree(qmgr, (void *)&local, 0, MEM_RELEASE);
    return (now() - t0) * 1e9 / (double)n;
}

/* floor of a refusal: one kernel entry (the cheapest system call) */
static double raw_null_syscall(void *ctx)
{
    size_t n = *(size_t *)ctx;
    double t0 = now();
    for (size_t i = 0; i < n; i++)
        syscall(SYS_getppid);
    return (now() - t0) * 1e9 / (double)n;
}

/* ---- a million reservations with one committed page each, compact mode --------- */

struct million_result {
    double reserve_commit_ns, release_ns, mappings, arenas, rss_per_reservation, data_per_reservation;
};

/* In a child: the address map's leaves are process-wide and never freed, so a
 * fresh process gives a true RSS growth. */
static void compact_child(int unused, int fd)
{
    (void)unused;
    struct million_result r = {0};
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_COMPACT;
    IHostMemoryManager *m;
    size_t n = n_million;
    void **res = mmap(NULL, n * sizeof *res, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(res, 0, n * sizeof *res);
    if (hostmem_create(&c, &m) != S_OK)
        _exit(1);
    size_t rss0 = status_bytes("RssAnon"), data0 = status_bytes("VmData");
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
        void *p;
        if (IHostMemoryManager_VirtualAlloc(m, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &res[i]) != S_OK ||
            IHostMemoryManager_VirtualAlloc(m, (char *)res[i] + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) != S_OK)
            _exit(2);
    }
    r.reserve_commit_ns = (now() - t0) * 1e9 / (double)n;
    size_t rss1 = status_bytes("RssAnon"), data1 = status_bytes("VmData");
    hostmem_stats s = {sizeof s};
    hostmem_get_stats(m, &s);
    r.arenas = (double)s.arenas;
    r.mappings = (double)kernel_mappings(m);
    r.rss_per_reservation = (double)(rss1 - rss0) / (double)n;
    /* VmData counts the read-write arenas themselves; take their bytes out */
    r.data_per_reservation = ((double)data1 - (double)data0 - (double)s.arena_bytes) / (double)n;
    t0 = now();
    for (size_t i = 0; i < n; i++)
        if (IHostMemoryManager_VirtualFree(m, res[i], 0, MEM_RELEASE) != S_OK)
            _exit(3);
    r.release_ns = (now() - t0) * 1e9 / (double)n;
    IHostMemoryManager_Release(m);
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(1);
    _exit(0);
}

/* A million reservations with one committed page each, compact mode (child). */
void bench_compact(void)
{
    char note[512];
    say("1,000,000 reservations, one committed page each, compact mode\n");
    struct million_result r;
    if (in_child(compact_child, 0, &r, sizeof r)) {
        say("  compact run failed\n");
    } else {
        snprintf(note, sizeof note, "released in %.0f ns each", r.release_ns);
        add("1M reserve + commit 1 page (compact), each", r.reserve_commit_ns, "ns", 0, NULL, 0, "", INFO, note);
        snprintf(note, sizeof note, "%.0f arenas; vm.max_map_count %zu", r.arenas,
                 read_sysctl("/proc/sys/vm/max_map_count", 65530));
        add("1M w/ 1 committed page (compact): kernel maps", r.mappings, "maps", 0, NULL, 0,
            "<< 65530 (<= 6553)", le(r.mappings, 6553), note);
        snprintf(note, sizeof note, "RSS growth / 1M (VmData growth less the arenas: %.1f B)",
                 r.data_per_reservation);
        add("1M w/ 1 committed page (compact): metadata", r.rss_per_reservation, "B/res", 0, NULL, 0,
            "<= 64 B + 2 bits/page", le(r.rss_per_reservation, 68), note);
    }
}

/* VirtualQuery and foreign VirtualFree against 1 .. 1,000,000 live reservations. */
void bench_scale(void)
{
    char note[512], buf[96];
    HRESULT hr;
    say("VirtualQuery and foreign VirtualFree against live reservations (strict)\n");
    if ((hr = hostmem_create(NULL, &qmgr)) != S_OK)
        die("hostmem_create", hr);
    size_t n = n_million;
    void **res = mmap(NULL, n * sizeof *res, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(res, 0, n * sizeof *res);
    qaddr = malloc(QADDR * sizeof *qaddr);
    memset(qaddr, 0, QADDR * sizeof *qaddr);
    size_t live = 0, rss0 = status_bytes("RssAnon");
    double reserve_time = 0;
    for (int l = 0; l < LEVELS; l++) {
        double t0 = now();
        for (; live < level_count[l]; live++)
            if ((hr = IHostMemoryManager_VirtualAlloc(qmgr, NULL, K64, MEM_RESERVE, PAGE_READWRITE,
                                                      eTaskCritical, &res[live])) != S_OK)
                die("VirtualAlloc(MEM_RESERVE)", hr);
        reserve_time += now() - t0;
        pick_addresses(res, live);
        level_query[l] = median_of(hm_query, &n_query);
        level_mincore[l] = median_of(raw_query, &n_query);
        level_foreign[l] = median_of(hm_foreign_free, &n_foreign);
        nlevels = l + 1;
        say("  %8zu live: VirtualQuery %6.1f ns, mincore %6.1f ns, foreign VirtualFree %6.1f ns\n", live,
            level_query[l], level_mincore[l], level_foreign[l]);
    }
    size_t rss1 = status_bytes("RssAnon");
    double nullsys = median_of(raw_null_syscall, &n_foreign);
    add("VirtualQuery, 1 live reservation", level_query[0], "ns", level_mincore[0], "mincore",
        level_query[0] / level_mincore[0], "", INFO, NULL);
    add("VirtualQuery, 1,000 live reservations", level_query[3], "ns", level_mincore[3], "mincore",
        level_query[3] / level_mincore[3], "", INFO, NULL);
    add("VirtualQuery, 1,000,000 live (cached: 65,536 addrs)", level_query[6], "ns", level_mincore[6], "mincore",
        level_query[6] / level_mincore[6], "<= 100 ns", le(level_query[6], 100),
        "cached case: 65,536 addresses picked once, queried in turn (their metadata stays in cache)");
    add("VirtualQuery, 1,000,000 / 1,000 (cached)", level_query[6] / level_query[3], "x", 0, NULL,
        level_query[6] / level_query[3], "<= 2.0x", le(level_query[6] / level_query[3], 2.0), NULL);

    /* random over all 1,000,000, against a pointer chase over as many bytes as
     * their metadata took (the RSS growth while reserving, at least 64 B each) */
    size_t meta = rss1 > rss0 ? rss1 - rss0 : 0;
    meta = meta > 64 * live ? meta : 64 * live;
    struct query_all qa = {res, live, n_query, 0x2545F4914F6CDD1Dull};
    struct chase ch;
    chase_open(&ch, meta, n_query);
    const run_fn fn[3] = {hm_query_all_dependent, chase_run, hm_query_all_independent};
    void *const ctx[3] = {&qa, &ch, &qa};
    double t[3];
    medians_interleaved(3, fn, ctx, t);
    munmap(ch.buffer, ch.bytes);
    snprintf(buf, sizeof buf, "pointer chase over %.1f MB", (double)ch.bytes / 1e6);
    snprintf(note, sizeof note, "each address random over all %zu and made from the last answer; not made "
             "from it (queries may overlap): %.1f ns; chase: RSS growth while reserving", live, t[2]);
    add("VirtualQuery, 1,000,000 live, random over all", t[0], "ns", t[1], buf, t[0] / t[1], "<= 1.25x",
        le(t[0] / t[1], 1.25), note);
    add("VirtualFree foreign (stack), 1,000,000 live", level_foreign[6], "ns", nullsys, "getppid syscall",
        level_foreign[6] / nullsys, "<= 50 ns", le(level_foreign[6], 50), NULL);

    hostmem_stats s = {sizeof s};
    hostmem_get_stats(qmgr, &s);
    double k = (double)kernel_mappings(qmgr);
    snprintf(note, sizeof note, "%.2f per arena, %zu arenas (adjacent arenas merge); reserved in %.0f ns each", k / (double)s.arenas,
             s.arenas, reserve_time * 1e9 / (double)n);
    add("1M reservations (strict): kernel mappings", k, "maps", 0, NULL, 0, "a few per arena (<= 4)",
        le(k, 4.0 * (double)s.arenas + 2), note);
    add("1M reservations (strict): metadata", (double)(rss1 - rss0) / (double)n, "B/res", 0, NULL, 0,
        "<= 64 B + 2 bits/page", le((double)(rss1 - rss0) / (double)n, 68),
        "RSS growth while reserving / 1M (includes the address map's leaves)");

    /* strict mode, one committed page each: the kernel's limit ends it */
    say("1,000,000 reservations, one committed page each, strict mode (until vm.max_map_count)\n");
    size_t committed = 0;
    HRESULT refusal = S_OK;
    double t0 = now();
    for (; committed < n; committed++) {
        void *p;
        refusal = IHostMemoryManager_VirtualAlloc(qmgr, (char *)res[committed] + P, P, MEM_COMMIT, PAGE_READWRITE,
                                                  eTaskCritical, &p);
        if (refusal != S_OK)
            break;
    }
    double commit_ns = (now() - t0) * 1e9 / (double)(committed ? committed : 1);
    hostmem_get_stats(qmgr, &s);
    size_t implied = s.kernel_mappings;
    /* make room before anything else maps memory (reading /proc/self/maps needs none) */
    t0 = now();
    for (size_t i = 0; i < committed; i++)
        IHostMemoryManager_VirtualFree(qmgr, (char *)res[i] + P, P, MEM_DECOMMIT);
    double decommit_ns = (now() - t0) * 1e9 / (double)(committed ? committed : 1);
    const char *why = hostmem_result_name(refusal);
    snprintf(note, sizeof note, "%s at commit %zu (%zu kernel mappings implied); %.0f ns per commit, %.0f per decommit",
             refusal == S_OK ? "all committed" : why ? why : "refused", committed, implied, commit_ns, decommit_ns);
    add("1M w/ 1 committed page (strict): got through", (double)committed, "res", 0, NULL, 0,
        "(result: vm.max_map_count)", INFO, note);

    t0 = now();
    for (size_t i = 0; i < live; i++)
        if ((hr = IHostMemoryManager_VirtualFree(qmgr, res[i], 0, MEM_RELEASE)) != S_OK)
            die("VirtualFree(MEM_RELEASE)", hr);
    double rel = (now() - t0) * 1e9 / (double)live;
    hostmem_get_stats(qmgr, &s);
    snprintf(note, sizeof note, "%zu left, %zu bytes committed", s.reservations, s.committed_bytes);
    add("1M reservations (strict): release, each", rel, "ns", 0, NULL, 0, "", INFO, note);
    IHostMemoryManager_Release(qmgr);
    munmap(res, n * sizeof *res);
    free(qaddr);
}
