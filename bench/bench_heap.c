/*
 * bench_heap.c - IHostMalloc against glibc malloc, mimalloc and jemalloc, in
 * one process: random sizes 16-1024 B on 1 and 2 threads, and cross-thread
 * frees (one thread allocates, the other frees). Each figure is the median of
 * several runs after a warm-up, in millions of operations (an allocation or a
 * free) per second, with its ratio to glibc and to mimalloc.
 * Not a test: it asserts nothing. jemalloc and mimalloc are linked here only.
 */
#define COBJMACROS
#include <jemalloc/jemalloc.h>
#include <mimalloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hostmem.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

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
static void *je_alloc(size_t n)
{
    return mallocx(n, 0);
}
static void je_free(void *p)
{
    dallocx(p, 0);
}

static const struct allocator allocators[] = {
    {"glibc", __libc_malloc, __libc_free},
    {"mimalloc", mi_malloc, mi_free},
    {"jemalloc", je_alloc, je_free},
    {"hostmem", hm_alloc, hm_free},
};
#define ALLOCATORS 4

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define SLOTS 4096
#define OPS 2000000

struct job {
    const struct allocator *a;
    unsigned seed;
    double seconds;
    volatile uintptr_t sink;
};

/* Random sizes 16-1024 B over a working set of SLOTS blocks: each step frees a
 * random slot (if full) and allocates into it. */
static void *random_work(void *arg)
{
    struct job *j = arg;
    void **slots = calloc(SLOTS, sizeof *slots);
    unsigned seed = j->seed;
    double t0 = now();
    for (int i = 0; i < OPS / 2; i++) {
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
    for (int i = 0; i < OPS / 2; i++) {
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
    for (int i = 0; i < OPS / 2;) {
        size_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
        if (t == atomic_load_explicit(&r->head, memory_order_acquire))
            continue;
        r->a->release(r->slot[t % 1024]);
        atomic_store_explicit(&r->tail, t + 1, memory_order_release);
        i++;
    }
    return NULL;
}

static double run(const struct allocator *a, int scenario)
{
    double t0 = now();
    if (scenario == 0) {
        struct job j = {a, 1, 0, 0};
        random_work(&j);
        return OPS / j.seconds;
    }
    if (scenario == 1) {
        struct job j[2] = {{a, 1, 0, 0}, {a, 2, 0, 0}};
        pthread_t t[2];
        t0 = now();
        for (int i = 0; i < 2; i++)
            pthread_create(&t[i], NULL, random_work, &j[i]);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        return 2.0 * OPS / (now() - t0);
    }
    struct ring *r = calloc(1, sizeof *r);
    r->a = a;
    pthread_t p, c;
    t0 = now();
    pthread_create(&p, NULL, produce, r);
    pthread_create(&c, NULL, consume, r);
    pthread_join(p, NULL);
    pthread_join(c, NULL);
    double rate = OPS / (now() - t0);
    free(r);
    return rate;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    IHostMemoryManager *m;
    if (hostmem_create(NULL, &m) != S_OK ||
        IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &hostmem_heap) != S_OK) {
        fprintf(stderr, "bench_heap: cannot create the hostmem heap\n");
        return 1;
    }
    const char *scenarios[] = {"random 16-1024 B, 1 thread", "random 16-1024 B, 2 threads",
                               "cross-thread frees, 2 threads"};
    printf("IHostMalloc vs glibc, mimalloc, jemalloc: median of %d runs, Mops/s (ratio to glibc, to mimalloc)\n",
           runs);
    for (int s = 0; s < 3; s++) {
        double median[ALLOCATORS];
        for (int a = 0; a < ALLOCATORS; a++) {
            double rates[32];
            run(&allocators[a], s); /* warm-up */
            for (int r = 0; r < runs && r < 32; r++)
                rates[r] = run(&allocators[a], s);
            qsort(rates, (size_t)runs, sizeof rates[0], compare);
            median[a] = rates[runs / 2];
        }
        printf("%-30s", scenarios[s]);
        for (int a = 0; a < ALLOCATORS; a++)
            printf("  %s %6.1f", allocators[a].name, median[a] / 1e6);
        printf("   hostmem/glibc %.2f  hostmem/mimalloc %.2f\n", median[3] / median[0],
               median[3] / median[1]);
    }
    IHostMalloc_Release(hostmem_heap);
    IHostMemoryManager_Release(m);
    return 0;
}
