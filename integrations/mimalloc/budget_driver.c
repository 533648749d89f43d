/*
 * budget_driver.c - mimalloc on hostmem under a commit budget far below what
 * its threads want (issue 12: every refusal reaches the program as a NULL from
 * mimalloc; no crash, no corruption, the budget never exceeded).
 *
 * mimalloc's own stress test cannot do this: it dereferences what realloc
 * returns. Here THREADS threads allocate, reallocate, free and trade blocks of
 * random sizes (8 B to 24 MiB) with mimalloc's API and treat every NULL as an
 * answer. Every block carries its owner's tag in its first and last words and a
 * fill byte everywhere; the tag and a sample of the fill are checked before
 * every realloc and free, after a failed realloc (the block must be untouched),
 * and for every live block at the end. A sampler thread reads hostmem's
 * committed_bytes all the while.
 *
 *   budget_driver [LIMIT_MIB [SECONDS]]     (default 48 MiB, 3 s)
 *
 * The manager is the driver's own, created with hostmem_config.commit_limit and
 * handed to the OS layer with mi_hostmem_use() before mimalloc's first OS call.
 * Then the budget is lifted (hostmem_set_commit_limit) to show that mimalloc
 * recovers, everything is freed, and the manager is validated against the
 * kernel. Prints "budget_driver: N passed, N failed".
 */
#define COBJMACROS
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mimalloc.h>

#include "hostmem.h"
#include "mi_hostmem.h"

#define THREADS 4
#define SLOTS 512        /* live blocks per thread */
#define EXCHANGE 64      /* blocks in flight between threads */
#define MiB ((size_t)1 << 20)

/* ---- a tiny harness --------------------------------------------------------- */

static int passed, failed;

static void check(bool ok, const char *name, const char *detail_format, ...)
    __attribute__((format(printf, 3, 4)));
static void check(bool ok, const char *name, const char *detail_format, ...)
{
    if (ok) {
        passed++;
        printf("ok - %s\n", name);
        return;
    }
    failed++;
    char detail[512] = "";
    va_list args;
    va_start(args, detail_format);
    vsnprintf(detail, sizeof detail, detail_format, args);
    va_end(args);
    printf("  FAIL %s: %s\n", name, detail);
}

/* ---- blocks that can be checked ----------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t size;
    uint64_t tag; /* thread << 48 | sequence; 0 = empty */
} block;

static uint8_t fill_of(uint64_t tag)
{
    return (uint8_t)(tag * 0x9E3779B97F4A7C15ull >> 56) | 1;
}

/* Blocks under 16 bytes hold only the fill. */
static void block_write(block *b)
{
    memset(b->p, fill_of(b->tag), b->size);
    if (b->size >= 16) {
        memcpy(b->p, &b->tag, 8);
        memcpy(b->p + b->size - 8, &b->tag, 8);
    }
}

/* Checks the tag words, the fill at every 4 KiB and at both ends of the fill;
 * the first `size` bytes only (a realloc keeps a prefix). */
static bool block_intact(const uint8_t *p, size_t size, uint64_t tag, size_t full_size)
{
    const uint8_t fill = fill_of(tag);
    size_t from = full_size >= 16 ? 8 : 0, to = full_size >= 16 ? full_size - 8 : full_size;
    if (to > size)
        to = size;
    if (full_size >= 16) {
        uint64_t head;
        memcpy(&head, p, 8);
        if (head != tag)
            return false;
        if (size >= full_size) {
            uint64_t tail;
            memcpy(&tail, p + full_size - 8, 8);
            if (tail != tag)
                return false;
        }
    }
    for (size_t i = from; i < to; i += 4096)
        if (p[i] != fill)
            return false;
    return to <= from || (p[from] == fill && p[to - 1] == fill);
}

/* ---- the workload ------------------------------------------------------------------ */

static _Atomic(block *) exchange[EXCHANGE];
static atomic_bool stop;
static size_t limit;

struct worker {
    pthread_t thread;
    int id;
    uint64_t random;
    block slots[SLOTS];
    size_t ops, allocations, nulls, reallocs, realloc_nulls, frees, traded, corrupt;
    char first_corruption[160];
};

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Mostly small blocks, some medium, a few large and huge ones (huge: mimalloc
 * gives those a segment of their own, straight from the OS layer). */
static size_t random_size(uint64_t *state)
{
    uint64_t r = next_random(state);
    unsigned kind = (unsigned)(r % 1000);
    r >>= 10;
    if (kind < 700)
        return 8 + r % 1024;
    if (kind < 950)
        return 1024 + r % (64 * 1024);
    if (kind < 995)
        return 64 * 1024 + r % (2 * MiB);
    return 4 * MiB + r % (20 * MiB);
}

static void corrupted(struct worker *w, const char *where, const block *b)
{
    if (w->corrupt++ == 0)
        snprintf(w->first_corruption, sizeof w->first_corruption,
                 "%s: block %p of %zu bytes, tag %#llx", where, (void *)b->p, b->size,
                 (unsigned long long)b->tag);
}

static void free_checked(struct worker *w, block *b, const char *where)
{
    if (!block_intact(b->p, b->size, b->tag, b->size))
        corrupted(w, where, b);
    mi_free(b->p);
    w->frees++;
    b->p = NULL;
    b->tag = 0;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    uint64_t sequence = 0;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        block *b = &w->slots[next_random(&w->random) % SLOTS];
        unsigned what = (unsigned)(next_random(&w->random) % 10);
        w->ops++;
        if (b->p == NULL) {
            /* allocate: malloc, calloc (zero check) or aligned */
            size_t size = random_size(&w->random);
            w->allocations++;
            void *p;
            if (what < 6) {
                p = mi_malloc(size);
            } else if (what < 8) {
                p = mi_calloc(1, size);
                if (p != NULL) {
                    const uint8_t *z = p;
                    for (size_t i = 0; i < size; i += 4096)
                        if (z[i] != 0) {
                            block zb = {p, size, 0};
                            corrupted(w, "calloc not zero", &zb);
                            break;
                        }
                }
            } else {
                p = mi_malloc_aligned(size, (size_t)64 << (next_random(&w->random) % 8));
            }
            if (p == NULL) {
                w->nulls++;
                continue;
            }
            b->p = p;
            b->size = size;
            b->tag = ((uint64_t)(w->id + 1) << 48) | ++sequence;
            block_write(b);
        } else if (what < 4) {
            /* realloc: a NULL leaves the block as it was */
            size_t size = random_size(&w->random);
            w->reallocs++;
            if (!block_intact(b->p, b->size, b->tag, b->size))
                corrupted(w, "before realloc", b);
            uint8_t *q = mi_realloc(b->p, size);
            if (q == NULL) {
                w->realloc_nulls++;
                if (!block_intact(b->p, b->size, b->tag, b->size))
                    corrupted(w, "after a failed realloc", b);
                continue;
            }
            if (!block_intact(q, size < b->size ? size : b->size, b->tag, b->size)) {
                block moved = {q, b->size, b->tag};
                corrupted(w, "realloc lost the contents", &moved);
            }
            b->p = q;
            b->size = size;
            b->tag = ((uint64_t)(w->id + 1) << 48) | ++sequence;
            block_write(b);
        } else if (what < 6) {
            /* trade with another thread: its block may come back, freed here */
            block *out = mi_malloc(sizeof *out);
            if (out == NULL) {
                w->nulls++;
                continue;
            }
            *out = *b;
            b->p = NULL;
            b->tag = 0;
            block *in = atomic_exchange(&exchange[next_random(&w->random) % EXCHANGE], out);
            w->traded++;
            if (in != NULL) {
                free_checked(w, in, "traded block");
                mi_free(in);
            }
        } else {
            free_checked(w, b, "before free");
        }
    }
    return NULL;
}

/* ---- the sampler ---------------------------------------------------------------- */

static IHostMemoryManager *manager;
static atomic_bool sampling;
static size_t max_sampled, samples;

static void *sample(void *arg)
{
    (void)arg;
    struct timespec pause = {0, 20 * 1000};
    while (atomic_load(&sampling)) {
        hostmem_stats s;
        memset(&s, 0, sizeof s);
        s.size = sizeof s;
        if (hostmem_get_stats(manager, &s) == S_OK) {
            if (s.committed_bytes > max_sampled)
                max_sampled = s.committed_bytes;
            samples++;
        }
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static hostmem_stats stats_now(void)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(manager, &s);
    return s;
}

static bool validate(const char *name)
{
    char why[512] = "";
    HRESULT hr = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    check(hr == S_OK, name, "%s: %s", hostmem_result_name(hr) ? hostmem_result_name(hr) : "?", why);
    return hr == S_OK;
}

int main(int argc, char **argv)
{
    limit = (argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : 48) * MiB;
    double seconds = argc > 2 ? strtod(argv[2], NULL) : 3.0;

    /* The driver's manager, with the budget, before mimalloc makes an OS call. */
    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = sizeof config;
    config.commit_limit = limit;
    HRESULT hr = hostmem_create(&config, &manager);
    if (hr != S_OK) {
        printf("  FAIL create: %s\nbudget_driver: 0 passed, 1 failed\n", hostmem_result_name(hr));
        return 1;
    }
    check(mi_hostmem_use(manager), "the OS layer takes the driver's manager",
          "mimalloc made an OS call before main");
    check(mi_hostmem_manager() == manager, "mimalloc's OS calls go to that manager",
          "the layer uses %p", (void *)mi_hostmem_manager());

    static struct worker workers[THREADS];
    pthread_t sampler;
    atomic_store(&sampling, true);
    pthread_create(&sampler, NULL, sample, NULL);
    for (int i = 0; i < THREADS; i++) {
        workers[i].id = i;
        workers[i].random = 0x5EED0000u + (uint64_t)i;
        pthread_create(&workers[i].thread, NULL, work, &workers[i]);
    }
    struct timespec run = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&run, NULL);
    atomic_store(&stop, true);
    for (int i = 0; i < THREADS; i++)
        pthread_join(workers[i].thread, NULL);
    atomic_store(&sampling, false);
    pthread_join(sampler, NULL);

    size_t ops = 0, allocations = 0, nulls = 0, reallocs = 0, realloc_nulls = 0, corrupt = 0;
    const char *first = NULL;
    for (int i = 0; i < THREADS; i++) {
        struct worker *w = &workers[i];
        ops += w->ops;
        allocations += w->allocations;
        nulls += w->nulls;
        reallocs += w->reallocs;
        realloc_nulls += w->realloc_nulls;
        corrupt += w->corrupt;
        if (w->corrupt && !first)
            first = w->first_corruption;
    }
    hostmem_stats s = stats_now();
    mi_hostmem_counts c;
    mi_hostmem_get_counts(&c);
    printf("# %d threads, %.1f s, budget %zu MiB: %zu operations, %zu allocations (%zu NULL), "
           "%zu reallocs (%zu NULL)\n",
           THREADS, seconds, limit / MiB, ops, allocations, nulls, reallocs, realloc_nulls);
    printf("# committed: %zu samples, max sampled %zu bytes, peak %zu bytes, limit %zu bytes\n",
           samples, max_sampled, s.peak_committed_bytes, s.commit_limit);
    printf("# hostmem refused %zu commits over the budget; the layer saw %zu out-of-memory results "
           "(reserve %zu/%zu refused, commit %zu/%zu refused)\n",
           s.refusals[eTaskCritical], c.out_of_memory, c.reserve_refused, c.reserve,
           c.commit_refused, c.commit);

    check(allocations > 0 && allocations > nulls, "blocks were allocated under the budget",
          "%zu of %zu allocations failed", nulls, allocations);
    check(nulls + realloc_nulls > 0, "refusals reached the program as NULL",
          "no NULL in %zu allocations: the budget did not bite", allocations);
    check(s.refusals[eTaskCritical] > 0 && c.out_of_memory > 0,
          "hostmem refused commits over the budget",
          "refusals %zu, out-of-memory results %zu", s.refusals[eTaskCritical], c.out_of_memory);
    check(corrupt == 0, "every block stayed intact", "%zu corrupt, first: %s", corrupt,
          first ? first : "");
    check(samples > 100 && max_sampled <= limit, "sampled committed bytes never above the budget",
          "max %zu > limit %zu (%zu samples)", max_sampled, limit, samples);
    check(s.peak_committed_bytes <= limit, "peak committed bytes within the budget",
          "peak %zu > limit %zu", s.peak_committed_bytes, limit);
    validate("the manager validates against the kernel under the budget");

    /* Lift the budget: mimalloc recovers (a block bigger than the old budget). */
    hostmem_set_commit_limit(manager, HOSTMEM_UNLIMITED);
    uint8_t *big = mi_malloc(2 * limit);
    check(big != NULL, "with the budget lifted a block of twice the old budget is allocated",
          "mi_malloc(%zu) returned NULL", 2 * limit);
    if (big != NULL) {
        memset(big, 0x5A, 2 * limit);
        mi_free(big);
    }

    /* Free every live block (checked), then everything mimalloc caches. */
    size_t left_corrupt = 0;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < SLOTS; j++) {
            block *b = &workers[i].slots[j];
            if (b->p == NULL)
                continue;
            if (!block_intact(b->p, b->size, b->tag, b->size))
                left_corrupt++;
            mi_free(b->p);
        }
    for (int i = 0; i < EXCHANGE; i++) {
        block *b = atomic_exchange(&exchange[i], NULL);
        if (b == NULL)
            continue;
        if (!block_intact(b->p, b->size, b->tag, b->size))
            left_corrupt++;
        mi_free(b->p);
        mi_free(b);
    }
    check(left_corrupt == 0, "every live block intact at the end", "%zu corrupt", left_corrupt);
    mi_collect(true);
    validate("the manager validates against the kernel at the end");
    s = stats_now();
    printf("# after freeing everything and mi_collect(true): %zu reservations, %zu committed "
           "bytes\n",
           s.reservations, s.committed_bytes);
    printf("budget_driver: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
