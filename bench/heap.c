/*
 * heap.c - IHostMalloc against glibc, mimalloc and jemalloc: throughput (random
 * sizes 16-1024 B on one thread, on two, and with frees on another thread than
 * the allocation's) and memory (peak RSS and RSS left after freeing, each
 * allocator in a child process of its own).
 *
 * jemalloc and mimalloc are linked into `make bench`'s program only, never the
 * library nor the tool: built into `hostmem bench` (HOSTMEM_BENCH_IN_TOOL) the
 * section says so and measures nothing, but its code is still compiled. Never
 * asserts a timing; never measures glibc through the name malloc, which in
 * `make bench`'s program is mimalloc's (see glibc_resolve).
 */
#include <dlfcn.h>
#ifndef HOSTMEM_BENCH_IN_TOOL
#include <jemalloc/jemalloc.h>
#include <mimalloc.h>
#endif
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "sections.h"

/* glibc's own malloc and free, looked up in libc.so.6 itself: libmimalloc.so
 * exports malloc and __libc_malloc too, so neither name reaches glibc in this
 * program (bench.c once measured mimalloc twice, under both names). */
static void *(*glibc_malloc)(size_t);
static void (*glibc_free)(void *);
void glibc_resolve(void)
{
#ifdef HOSTMEM_BENCH_IN_TOOL
    /* the tool links no other allocator: malloc is glibc's, even in a static build */
    glibc_malloc = malloc;
    glibc_free = free;
    return;
#endif
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (libc) {
        glibc_malloc = (void *(*)(size_t))dlsym(libc, "malloc");
        glibc_free = (void (*)(void *))dlsym(libc, "free");
    }
    if (!glibc_malloc || !glibc_free) {
        fprintf(stderr, "bench: glibc's malloc not found in libc.so.6: %s\n", dlerror());
        exit(3);
    }
}
static void *glibc_alloc(size_t n)
{
    return glibc_malloc(n);
}
static void glibc_release(void *p)
{
    glibc_free(p);
}

/* ---- the allocators ---------------------------------------------------------------- */

struct allocator {
    const char *name;
    void *(*alloc)(size_t);
    void (*release)(void *);
};

static IHostMalloc *hostmem_heap;
static void *hm_alloc(size_t n)
{
    void *p = NULL;
    IHostMalloc_Alloc(hostmem_heap, n, eTaskCritical, &p);
    return p;
}
static void hm_free(void *p)
{
    IHostMalloc_Free(hostmem_heap, p);
}
#ifdef HOSTMEM_BENCH_IN_TOOL
#define mi_malloc NULL
#define mi_free NULL
#define je_alloc NULL
#define je_free NULL
#else
static void *je_alloc(size_t n)
{
    return mallocx(n, 0);
}
static void je_free(void *p)
{
    dallocx(p, 0);
}
#endif

enum { A_GLIBC, A_MIMALLOC, A_JEMALLOC, A_HOSTMEM, ALLOCATORS };
static const struct allocator allocators[ALLOCATORS] = {
    {"glibc", glibc_alloc, glibc_release},
    {"mimalloc", mi_malloc, mi_free},
    {"jemalloc", je_alloc, je_free},
    {"hostmem", hm_alloc, hm_free},
};

#define SLOTS 4096

struct heap_job {
    const struct allocator *a;
    unsigned seed;
    double seconds;
};

/* Random sizes 16-1024 B over a working set of SLOTS blocks: each step frees a
 * random slot (if full) and allocates into it. The clock starts once the
 * working set is full and the thread's allocator warm (4 steps a slot,
 * untimed): a thread's first pages - its page faults, an allocator's purge of
 * pages its previous threads left - are not the churn this measures, and
 * runs taken in turn leave each allocator idle long enough for a purge. */
static void *random_work(void *arg)
{
    struct heap_job *j = arg;
    void **slots = malloc(SLOTS * sizeof *slots);
    memset(slots, 0, SLOTS * sizeof *slots);
    unsigned seed = j->seed;
    cpu_warm(0.02);
    for (size_t i = 0; i < 4 * SLOTS; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % SLOTS;
        if (slots[k])
            j->a->release(slots[k]);
        char *p = j->a->alloc(16 + (seed >> 16) % 1009);
        p[0] = 1;
        slots[k] = p;
    }
    double t0 = now();
    for (size_t i = 0; i < heap_ops / 2; i++) {
        seed = seed * 1103515245u + 12345u;
        unsigned k = (seed >> 8) % SLOTS;
        if (slots[k])
            j->a->release(slots[k]);
        size_t size = 16 + (seed >> 16) % 1009;
        char *p = j->a->alloc(size);
        p[0] = (char)i;
        slots[k] = p;
    }
    j->seconds = now() - t0;
    for (int k = 0; k < SLOTS; k++)
        if (slots[k])
            j->a->release(slots[k]);
    free(slots);
    return NULL;
}

/* Cross-thread: a producer allocates into a ring, a consumer frees. */
struct ring {
    void *slot[1024];
    _Atomic size_t head, tail;
    const struct allocator *a;
};

static void *produce(void *arg)
{
    struct ring *r = arg;
    unsigned seed = 9;
    for (size_t i = 0; i < heap_ops / 2; i++) {
        while (atomic_load_explicit(&r->head, memory_order_relaxed) -
                   atomic_load_explicit(&r->tail, memory_order_acquire) ==
               1024)
            ;
        seed = seed * 1103515245u + 12345u;
        char *p = r->a->alloc(16 + (seed >> 16) % 1009);
        p[0] = 1;
        size_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
        r->slot[h % 1024] = p;
        atomic_store_explicit(&r->head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consume(void *arg)
{
    struct ring *r = arg;
    for (size_t i = 0; i < heap_ops / 2;) {
        size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (t == atomic_load_explicit(&r->head, memory_order_acquire))
            continue;
        r->a->release(r->slot[t % 1024]);
        atomic_store_explicit(&r->tail, t + 1, memory_order_release);
        i++;
    }
    return NULL;
}

struct heap_case {
    const struct allocator *a;
    int scenario;
};

/* millions of operations (an allocation or a free) per second */
static double heap_rate(void *ctx)
{
    struct heap_case *c = ctx;
    if (c->scenario == 0) {
        struct heap_job j = {c->a, 1, 0};
        random_work(&j);
        return (double)heap_ops / j.seconds / 1e6;
    }
    if (c->scenario == 1) {
        struct heap_job j[2] = {{c->a, 1, 0}, {c->a, 2, 0}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&t[i], NULL, random_work, &j[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        double slower = j[0].seconds > j[1].seconds ? j[0].seconds : j[1].seconds;
        return 2.0 * (double)heap_ops / slower / 1e6;
    }
    struct ring *r = malloc(sizeof *r);
    memset(r, 0, sizeof *r);
    r->a = c->a;
    pthread_t p, q;
    double t0 = now();
    pthread_create(&p, NULL, produce, r);
    pthread_create(&q, NULL, consume, r);
    pthread_join(p, NULL);
    pthread_join(q, NULL);
    double rate = (double)heap_ops / (now() - t0) / 1e6;
    free(r);
    return rate;
}

/* Memory: in a child process of its own, each allocator holds a working set of
 * HEAP_RSS_BLOCKS random-size blocks (with churn: half freed and allocated again),
 * then frees everything. Reported: the peak RSS (VmHWM, reset by clear_refs
 * before the work) and the RSS left after freeing, both above the child's RSS
 * before the work. */
#define HEAP_RSS_BLOCKS 200000
struct rss_result {
    double peak_mib, after_mib;
};

static void rss_child(int a, int fd)
{
    struct rss_result r = {0, 0};
    IHostMemoryManager *m = NULL;
    if (a == A_HOSTMEM) {
        if (hostmem_create(NULL, &m) != S_OK ||
            IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &hostmem_heap) != S_OK)
            _exit(1);
    }
    const struct allocator *al = &allocators[a];
    size_t n = HEAP_RSS_BLOCKS;
    void **slots = mmap(NULL, n * sizeof *slots, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(slots, 0, n * sizeof *slots);
    /* start the allocator (and its thread state) before the baseline */
    al->release(al->alloc(16));
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
    size_t base = status_bytes("VmRSS");
    unsigned seed = 77;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        slots[i] = al->alloc(16 + (seed >> 16) % 1009);
        memset(slots[i], 1, 16);
    }
    for (size_t i = 0; i < n; i += 2) {
        al->release(slots[i]);
        seed = seed * 1103515245u + 12345u;
        slots[i] = al->alloc(16 + (seed >> 16) % 1009);
        memset(slots[i], 2, 16);
    }
    for (size_t i = 0; i < n; i++) { /* free in a scattered order */
        size_t k = (i * 7919) % n;
        al->release(slots[k]);
    }
    size_t hwm = status_bytes("VmHWM"), after = status_bytes("VmRSS");
    r.peak_mib = (double)(hwm > base ? hwm - base : 0) / 1048576.0;
    r.after_mib = (double)(after > base ? after - base : 0) / 1048576.0;
    if (write(fd, &r, sizeof r) != (ssize_t)sizeof r)
        _exit(1);
    _exit(0);
}

/* IHostMalloc against glibc, mimalloc and jemalloc: throughput, then memory. */
void bench_heap(IHostMemoryManager *mgr)
{
    char note[512], buf[96];
    HRESULT hr;
#ifdef HOSTMEM_BENCH_IN_TOOL
    /* the allocators' table holds NULL for the two the tool does not link: the
     * code below is compiled (so it cannot rot unseen) but never run */
    say("IHostMalloc against glibc, mimalloc and jemalloc: run `make bench` (the tool links no other allocator)\n");
    if (1)
        return;
#endif
    say("IHostMalloc against glibc, mimalloc, jemalloc (random 16-1024 B)\n");
    if ((hr = IHostMemoryManager_CreateMalloc(mgr, MALLOC_THREADSAFE, &hostmem_heap)) != S_OK)
        die("CreateMalloc", hr);
    const char *sname[3] = {"1 thread", "2 threads", "cross-thread frees"};
    for (int s = 0; s < 3; s++) {
        /* the allocators in turn, run by run: another process's load falls on
         * all of them alike, and the ratios are of one run */
        double rate[ALLOCATORS];
        struct heap_case c[ALLOCATORS];
        run_fn fn[ALLOCATORS];
        void *ctx[ALLOCATORS];
        for (int a = 0; a < ALLOCATORS; a++) {
            c[a] = (struct heap_case){&allocators[a], s};
            fn[a] = heap_rate;
            ctx[a] = &c[a];
        }
        medians_interleaved(ALLOCATORS, fn, ctx, rate);
        snprintf(note, sizeof note, "Mops/s: glibc %.1f, mimalloc %.1f, jemalloc %.1f, hostmem %.1f",
                 rate[0], rate[1], rate[2], rate[3]);
        snprintf(buf, sizeof buf, "IHostMalloc %s, vs glibc", sname[s]);
        add(buf, rate[A_HOSTMEM], "Mops/s", rate[A_GLIBC], "glibc", rate[A_HOSTMEM] / rate[A_GLIBC],
            s < 2 ? ">= 1.0x" : "", s < 2 ? ge(rate[A_HOSTMEM] / rate[A_GLIBC], 1.0) : INFO, note);
        snprintf(buf, sizeof buf, "IHostMalloc %s, vs mimalloc", sname[s]);
        add(buf, rate[A_HOSTMEM], "Mops/s", rate[A_MIMALLOC], "mimalloc",
            rate[A_HOSTMEM] / rate[A_MIMALLOC], s < 2 ? ">= 0.9x" : "",
            s < 2 ? ge(rate[A_HOSTMEM] / rate[A_MIMALLOC], 0.9) : INFO, NULL);
    }
    IHostMalloc_Release(hostmem_heap);
    hostmem_heap = NULL;
    struct rss_result rr[ALLOCATORS];
    for (int a = 0; a < ALLOCATORS; a++)
        if (in_child(rss_child, a, &rr[a], sizeof rr[a]))
            rr[a] = (struct rss_result){0, 0};
    snprintf(note, sizeof note, "MiB above the start, %d blocks: glibc %.1f, mimalloc %.1f, jemalloc %.1f, hostmem %.1f",
             HEAP_RSS_BLOCKS, rr[0].peak_mib, rr[1].peak_mib, rr[2].peak_mib, rr[3].peak_mib);
    add("IHostMalloc peak RSS (VmHWM), vs mimalloc", rr[A_HOSTMEM].peak_mib, "MiB", rr[A_MIMALLOC].peak_mib,
        "mimalloc", rr[A_HOSTMEM].peak_mib / rr[A_MIMALLOC].peak_mib, "<= 1.2x",
        le(rr[A_HOSTMEM].peak_mib, 1.2 * rr[A_MIMALLOC].peak_mib), note);
    snprintf(note, sizeof note, "MiB still resident after freeing all: glibc %.1f, mimalloc %.1f, jemalloc %.1f, hostmem %.1f",
             rr[0].after_mib, rr[1].after_mib, rr[2].after_mib, rr[3].after_mib);
    add("IHostMalloc RSS after freeing all, vs mimalloc", rr[A_HOSTMEM].after_mib, "MiB",
        rr[A_MIMALLOC].after_mib, "mimalloc",
        rr[A_MIMALLOC].after_mib > 0 ? rr[A_HOSTMEM].after_mib / rr[A_MIMALLOC].after_mib : 0, "<= 1.2x",
        le(rr[A_HOSTMEM].after_mib, 1.2 * rr[A_MIMALLOC].after_mib + 0.0625), note);
}
