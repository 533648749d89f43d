/*
 * threads.c - the two-thread figures: VirtualQuery, the commit cycle of one page
 * and the whole reserve-commit-decommit-release cycle on one thread and on two,
 * each thread on reservations of its own, against the raw system calls (mincore;
 * mprotect, madvise, mmap, munmap) doing the same on one thread and on two.
 *
 * A two-thread figure means something only when the machine gives the process
 * two CPUs: a control loop (arithmetic in a register, no memory, no calls) is
 * timed at 1 and 2 threads before and after the figures, and below 1.8x at
 * either no two-thread figure is reported. Never asserts a timing; never
 * reports a two-thread figure without the control's scaling beside it.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "harness.h"
#include "sections.h"

/* Each thread first keeps its CPU busy (cpu_warm), then waits here, spinning,
 * so that the timed part starts with both CPUs running. */
static void spin_barrier(_Atomic int *arrived, int threads)
{
    atomic_fetch_add(arrived, 1);
    while (atomic_load(arrived) < threads)
        ;
}

struct worker {
    IHostMemoryManager *manager; /* kinds 0, 2 and 5 */
    _Atomic int *barrier;
    int threads;
    int kind; /* 0 hostmem query, 1 raw mincore, 2 hostmem commit cycle, 3 raw commit cycle, 4 the control,
                 5 hostmem reserve+commit+decommit+release, 6 the same raw */
    char **addr;
    size_t naddr;
    char *base;
    size_t ops;
    double t0, t1;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    unsigned char vec;
    uintptr_t sink = 0;
    cpu_warm(0.02);
    spin_barrier(w->barrier, w->threads);
    w->t0 = now();
    if (w->kind == 4) { /* the control: arithmetic in a register, no memory, no calls */
        for (size_t i = 0; i < w->ops; i++)
            sink = sink * 6364136223846793005ull + i;
    } else {
        for (size_t i = 0; i < w->ops; i++) {
            char *a = w->addr ? w->addr[i % w->naddr] : NULL;
            char *p = w->base ? w->base + (i & 15) * P : NULL;
            void *q;
            switch (w->kind) {
            case 0:
                IHostMemoryManager_VirtualQuery(w->manager, a, &info, sizeof info, &got);
                sink += info.RegionSize;
                break;
            case 1:
                mincore((void *)((uintptr_t)a & ~(uintptr_t)(P - 1)), P, &vec);
                break;
            case 2:
                IHostMemoryManager_VirtualAlloc(w->manager, p, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q);
                *(volatile char *)p = 1;
                IHostMemoryManager_VirtualFree(w->manager, p, P, MEM_DECOMMIT);
                break;
            case 3:
                mprotect(p, P, PROT_READ | PROT_WRITE);
                *(volatile char *)p = 1;
                madvise(p, P, MADV_DONTNEED);
                mprotect(p, P, PROT_NONE);
                break;
            case 5: /* issue 15's cycle: reserve 64 KiB, commit 16 KiB, touch, decommit, release */
                IHostMemoryManager_VirtualAlloc(w->manager, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q);
                IHostMemoryManager_VirtualAlloc(w->manager, q, 16384, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &q);
                for (size_t b = 0; b < 16384; b += P)
                    ((volatile char *)q)[b] = 1;
                IHostMemoryManager_VirtualFree(w->manager, q, 16384, MEM_DECOMMIT);
                IHostMemoryManager_VirtualFree(w->manager, q, 0, MEM_RELEASE);
                break;
            case 6:
                q = mmap(NULL, K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
                mprotect(q, 16384, PROT_READ | PROT_WRITE);
                for (size_t b = 0; b < 16384; b += P)
                    ((volatile char *)q)[b] = 1;
                madvise(q, 16384, MADV_DONTNEED);
                mprotect(q, 16384, PROT_NONE);
                munmap(q, K64);
                break;
            }
        }
    }
    w->t1 = now();
    __asm__ volatile("" ::"r"(sink));
    return NULL;
}

struct mt {
    IHostMemoryManager *manager; /* for hostmem's kinds (0, 2, 5); NULL for the control */
    int threads, kind;
    char **addr[2];
    size_t naddr;
    char *base[2];
    size_t ops;
};

/* operations per microsecond, all threads together */
static double mt_rate(void *ctx)
{
    struct mt *m = ctx;
    _Atomic int barrier = 0;
    struct worker w[2];
    pthread_t t[2];
    for (int i = 0; i < m->threads; i++) {
        w[i] = (struct worker){m->manager, &barrier, m->threads, m->kind, m->addr[i], m->naddr, m->base[i],
                               m->ops, 0, 0};
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    double t0 = 1e300, t1 = 0;
    for (int i = 0; i < m->threads; i++) {
        pthread_join(t[i], NULL);
        t0 = w[i].t0 < t0 ? w[i].t0 : t0;
        t1 = w[i].t1 > t1 ? w[i].t1 : t1;
    }
    return (double)m->ops * m->threads / ((t1 - t0) * 1e6);
}

/* The control: a loop of arithmetic in a register (no memory, no calls) at 1
 * and 2 threads, taken in turn; its 2T/1T is what this machine gives two
 * threads now. *rate1 is its 1-thread rate (M iterations/s). */
static double control_scaling(double *rate1)
{
    struct mt one = {NULL, 1, 4, {NULL, NULL}, 0, {NULL, NULL}, 40 * n_query}, two = one;
    two.threads = 2;
    const run_fn fn[2] = {mt_rate, mt_rate};
    void *const ctx[2] = {&one, &two};
    double r[2];
    medians_interleaved(2, fn, ctx, r);
    *rate1 = r[0];
    return r[1] / r[0];
}

/* Two threads on disjoint reservations, each figure next to the control's
 * scaling, taken before and after them; below 1.8x at either, no 2-thread figure. */
void bench_threads(IHostMemoryManager *mgr)
{
    char note[512];
    HRESULT hr;
    say("2 threads on disjoint reservations\n");
    double control_rate, control_after_rate, control_after = 0;
    double control = control_scaling(&control_rate);
    say("  control loop (arithmetic, no memory): 2T/1T %.2f (1 thread %.0f M iterations/s)\n", control,
        control_rate);
    double r1 = 0, r2 = 0, f1 = 0, f2 = 0, h1 = 0, h2 = 0, c1r = 0, c2r = 0, v1 = 0, v2 = 0, v1r = 0, v2r = 0;
    if (control >= 1.8) {
        size_t per = 1000;
        void **res = malloc(2 * per * sizeof *res);
        char **addr[2] = {malloc(QADDR * sizeof(char *)), malloc(QADDR * sizeof(char *))};
        for (size_t i = 0; i < 2 * per; i++)
            if ((hr = IHostMemoryManager_VirtualAlloc(mgr, NULL, K64, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                      &res[i])) != S_OK)
                die("VirtualAlloc", hr);
        for (int t = 0; t < 2; t++)
            for (size_t i = 0; i < QADDR; i++)
                addr[t][i] = (char *)res[t * per + rnd() % per] + rnd() % K64;
        struct mt q1 = {mgr, 1, 0, {addr[0], addr[1]}, QADDR, {NULL, NULL}, 4 * n_query};
        struct mt q2 = q1;
        q2.threads = 2;
        struct mt m1 = q1, m2 = q2;
        m1.kind = m2.kind = 1;
        m1.ops = m2.ops = n_query / 4; /* mincore is ~20x slower: keep the runs about as long */
        /* hostmem and the raw calls in turn, run by run: a figure and its
         * counterpart see the same machine */
        const run_fn four[4] = {mt_rate, mt_rate, mt_rate, mt_rate};
        void *const queries[4] = {&q1, &q2, &m1, &m2};
        double r4[4];
        medians_interleaved(4, four, queries, r4);
        r1 = r4[0], r2 = r4[1], f1 = r4[2], f2 = r4[3];
        /* commit/decommit: each thread on its own reservation (disjoint stripes) */
        char *hb[2], *rb[2];
        for (int t = 0; t < 2; t++) {
            hb[t] = res[t * per + 7];
            rb[t] = mmap(NULL, K64, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        }
        struct mt c1 = {mgr, 1, 2, {NULL, NULL}, 0, {hb[0], hb[1]}, n_commit / 2};
        struct mt c2 = c1;
        c2.threads = 2;
        struct mt c1raw = c1, c2raw = c2;
        c1raw.kind = c2raw.kind = 3;
        c1raw.base[0] = c2raw.base[0] = rb[0];
        c1raw.base[1] = c2raw.base[1] = rb[1];
        void *const commits[4] = {&c1, &c2, &c1raw, &c2raw};
        medians_interleaved(4, four, commits, r4);
        h1 = r4[0], h2 = r4[1], c1r = r4[2], c2r = r4[3];
        /* the whole cycle: a private reservation each time */
        struct mt w1 = {mgr, 1, 5, {NULL, NULL}, 0, {NULL, NULL}, n_commit / 4};
        struct mt w2 = w1;
        w2.threads = 2;
        struct mt w1raw = w1, w2raw = w2;
        w1raw.kind = w2raw.kind = 6;
        void *const cycles[4] = {&w1, &w2, &w1raw, &w2raw};
        medians_interleaved(4, four, cycles, r4);
        v1 = r4[0], v2 = r4[1], v1r = r4[2], v2r = r4[3];
        for (size_t i = 0; i < 2 * per; i++)
            IHostMemoryManager_VirtualFree(mgr, res[i], 0, MEM_RELEASE);
        for (int t = 0; t < 2; t++)
            munmap(rb[t], K64);
        free(res);
        free(addr[0]);
        free(addr[1]);
        control_after = control_scaling(&control_after_rate);
        say("  control loop again, after the 2-thread figures: 2T/1T %.2f (1 thread %.0f M iterations/s)\n",
            control_after, control_after_rate);
    }
    double worst = control_after > 0 && control_after < control ? control_after : control;
    if (control_after > 0)
        snprintf(note, sizeof note, "before the 2-thread figures %.2f, after %.2f (the lower counts); "
                 "1 thread %.0f M iterations/s", control, control_after, control_rate);
    else
        snprintf(note, sizeof note, "1 thread %.0f M iterations/s; below 1.8x, the 2-thread figures were not "
                 "measured", control_rate);
    add("control loop (no memory calls), 2 threads / 1", worst, "x", 0, NULL, worst, ">= 1.8x to report 2T",
        INFO, note);
    if (worst < 1.8) {
        say("  the control loop scaled %.2fx, below 1.8x: two threads do not get two CPUs on this machine now "
            "(another process?); no two-thread figure reported\n", worst);
    } else {
        snprintf(note, sizeof note, "1 thread %.1f, 2 threads %.1f Mqueries/s; mincore 2T/1T %.2f; control "
                 "loop 2T/1T %.2f", r1, r2, f2 / f1, worst);
        add("VirtualQuery, 2 threads / 1 thread", r2 / r1, "x", worst, "control loop 2T/1T", r2 / r1, ">= 1.8x",
            ge(r2 / r1, 1.8), note);
        /* issue 15: hostmem's own scaling at least the raw calls', and two
         * threads at least as fast as the raw calls on two threads */
        snprintf(note, sizeof note, "1 page of a reservation each; 1 thread %.3f, 2 threads %.3f M cycles/s; raw "
                 "syscalls 1 thread %.3f, 2 threads %.3f; control loop 2T/1T %.2f", h1, h2, c1r, c2r, worst);
        add("commit/decommit, 2T/1T against the raw calls' 2T/1T", h2 / h1, "x", c2r / c1r, "raw syscalls 2T/1T",
            (h2 / h1) / (c2r / c1r), ">= 1.0x", ge((h2 / h1) / (c2r / c1r), 1.0), note);
        add("commit/decommit, 2 threads", h2 * 1e3, "k/s", c2r * 1e3, "raw syscalls, 2 threads", h2 / c2r, ">= 1.0x",
            ge(h2 / c2r, 1.0), "throughput: higher is better");
        add("commit/decommit, 1 thread", h1 * 1e3, "k/s", c1r * 1e3, "raw syscalls, 1 thread", h1 / c1r, ">= 1.0x",
            ge(h1 / c1r, 1.0), "throughput: higher is better; the same runs as the 2T/1T row");
        snprintf(note, sizeof note, "reserve 64 KiB, commit 16 KiB, touch, decommit, release; 1 thread %.3f, "
                 "2 threads %.3f M cycles/s; raw (mmap, mprotect, touch, madvise, mprotect, munmap) 1 thread "
                 "%.3f, 2 threads %.3f", v1, v2, v1r, v2r);
        add("whole cycle, 2T/1T against the raw calls' 2T/1T", v2 / v1, "x", v2r / v1r, "raw syscalls 2T/1T",
            (v2 / v1) / (v2r / v1r), ">= 1.0x", ge((v2 / v1) / (v2r / v1r), 1.0), note);
        add("whole cycle, 2 threads", v2 * 1e3, "k/s", v2r * 1e3, "raw syscalls, 2 threads", v2 / v2r, ">= 1.0x",
            ge(v2 / v2r, 1.0), "throughput: higher is better");
        add("whole cycle, 1 thread", v1 * 1e3, "k/s", v1r * 1e3, "raw syscalls, 1 thread", v1 / v1r, ">= 1.0x",
            ge(v1 / v1r, 1.0), "throughput: higher is better; the same runs as the 2T/1T row");
    }
}
