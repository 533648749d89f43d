/*
 * test_purge.c - issue 15 item 1: deferred discard (docs/policy.md). A
 * decommit makes its pages inaccessible and uncharged at once - VirtualQuery,
 * the budget and the statistics see it at once - but gives them back to the
 * kernel later: past purge_cap bytes, after purge_delay_ms, when memory is
 * short, on release and on hostmem_purge. A recommitted page reads zero.
 * Issue 24: the discard waits only in a reservation that has committed again
 * what it decommitted, and only while one thread decommits; otherwise a
 * decommit discards at once, and a release of a reservation left with no
 * committed page changes no page.
 */
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "test.h"

static size_t P;

static IHostMemoryManager *manager(DWORD delay_ms, size_t cap)
{
    hostmem_config c = {sizeof c};
    c.purge_delay_ms = delay_ms;
    c.purge_cap = cap;
    IHostMemoryManager *m = NULL;
    CHECK_HR(hostmem_create(&c, &m), S_OK);
    return m;
}

static int resident(void *page)
{
    unsigned char v = 0;
    return mincore(page, P, &v) == 0 && (v & 1);
}

static char *committed(IHostMemoryManager *m, size_t pages)
{
    void *p = NULL;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, pages * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             S_OK);
    char *b = p;
    if (!b)
        return NULL;
    /* its last page decommitted and committed again: from now on, its
     * decommits may wait */
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + (pages - 1) * P, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b + (pages - 1) * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    for (size_t i = 0; i < pages; i++)
        b[i * P] = (char)(i + 1);
    return b;
}

/* The kernel's calls, counted (the Linux seam underneath). */
static _Atomic size_t discards, protects;
static uintptr_t watched_lo, watched_hi; /* only calls on these pages (not the books') */
static int counting_discard(void *a, size_t s)
{
    discards += (uintptr_t)a >= watched_lo && (uintptr_t)a < watched_hi;
    return hostmem_os_linux.discard(a, s);
}
static int counting_protect(void *a, size_t s, int prot)
{
    protects += (uintptr_t)a >= watched_lo && (uintptr_t)a < watched_hi;
    return hostmem_os_linux.protect(a, s, prot);
}

static void validate(IHostMemoryManager *m)
{
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
}

/* The decommit is exact at once - reserved to VirtualQuery, uncharged, counted
 * as pending - while the pages stay resident until hostmem_purge. */
TEST(decommit_is_exact_at_once_and_discarded_later)
{
    IHostMemoryManager *m = manager(60000, (size_t)1 << 30);
    char *b = committed(m, 8);
    REQUIRE(b);
    hostmem_stats s0 = stats_of(m);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + 2 * P, 3 * P, MEM_DECOMMIT), S_OK);
    hostmem_stats s1 = stats_of(m);
    CHECK_EQ(s1.committed_bytes, s0.committed_bytes - 3 * P);
    CHECK_EQ(s1.purge_pending_bytes, 3 * P);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, b + 2 * P, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, 3 * P);
    CHECK(resident(b + 3 * P)); /* not given back yet */
    validate(m);
    CHECK_HR(hostmem_purge(m), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b + 3 * P));
    CHECK_EQ(b[P], 2);
    CHECK_EQ(b[5 * P], 6);
    validate(m);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* A recommitted pending page reads zero: zeroed where it may be written, else
 * discarded; committed pages between pending ones keep their contents (a
 * commit over a mixed range once discarded them). */
TEST(recommitted_pending_pages_read_zero_and_neighbours_keep_theirs)
{
    IHostMemoryManager *m = manager(60000, (size_t)1 << 30);
    char *b = committed(m, 12);
    REQUIRE(b);
    void *p;
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + 3 * P, 8 * P, MEM_DECOMMIT), S_OK);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b + 4 * P, 3 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(b[4 * P], 0);
    CHECK_EQ(b[6 * P], 0);
    b[4 * P] = 42;
    CHECK_EQ(stats_of(m).purge_pending_bytes, 5 * P);
    /* a commit over committed and pending pages, not writable: pending ones discarded */
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b + 2 * P, 8 * P, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &p), S_OK);
    CHECK_EQ(b[4 * P], 42);
    CHECK_EQ(b[2 * P], 3);
    CHECK_EQ(b[3 * P], 0);
    CHECK_EQ(b[8 * P], 0);
    CHECK_EQ(stats_of(m).purge_pending_bytes, P); /* page 10 */
    validate(m);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0); /* release discards them */
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* More than purge_cap bytes waiting: the decommit that passes it purges all. */
TEST(the_cap_bounds_what_waits)
{
    IHostMemoryManager *m = manager(60000, 4 * P);
    char *b = committed(m, 16);
    REQUIRE(b);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 4 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 4 * P);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + 8 * P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b));
    validate(m);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* After purge_delay_ms the next call that changes pages purges. The test waits
 * for the configured delay on the clock; nothing races. */
TEST(the_delay_bounds_how_long)
{
    IHostMemoryManager *m = manager(1, (size_t)1 << 30);
    char *b = committed(m, 8);
    REQUIRE(b);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 2 * P, MEM_DECOMMIT), S_OK);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 3000000L);
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b + 4 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b));
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* HOSTMEM_PURGE_AT_ONCE: every decommit discards at once; compact mode never
 * defers (reserved pages are readable there). */
TEST(off_and_compact_discard_at_once)
{
    IHostMemoryManager *m = manager(HOSTMEM_PURGE_AT_ONCE, 0);
    char *b = committed(m, 4);
    REQUIRE(b);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 2 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b));
    CHECK_EQ(m->lpVtbl->Release(m), 0);
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_COMPACT;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    b = committed(m, 4);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 2 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK_EQ(b[0], 0);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* A reservation that never committed again what it decommitted: the discard
 * comes at once, first (the mprotect then meets no page to flush); its release
 * then finds every page reserved and calls the kernel for none. Once a commit
 * follows a decommit, decommits wait. */
TEST(discards_wait_only_where_pages_are_committed_again)
{
    struct hostmem_os_ops counting = hostmem_os_linux;
    counting.discard = counting_discard;
    counting.protect = counting_protect;
    IHostMemoryManager *m = manager(60000, (size_t)1 << 30);
    void *p = NULL;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    char *b = p;
    REQUIRE(b);
    watched_lo = (uintptr_t)b;
    watched_hi = (uintptr_t)b + 16 * P;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b, 4 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    memset(b, 7, 4 * P);
    hostmem_os = &counting;
    discards = protects = 0;
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 4 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(discards, 1);
    CHECK_EQ(protects, 1);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b));
    validate(m);
    discards = protects = 0;
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(discards, 0);
    CHECK_EQ(protects, 0);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, b, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_FREE);
    validate(m);
    /* the same reservation's address again: its pages read zero */
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b, 16 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             S_OK);
    CHECK_EQ(p, (void *)b);
    CHECK_EQ(b[0], 0);
    CHECK_EQ(b[3 * P], 0);
    b[0] = 1;
    /* decommitted, committed again: now a decommit waits */
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(b[0], 0);
    b[P] = 5;
    discards = protects = 0;
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(discards, 0);
    CHECK_EQ(protects, 1);
    CHECK_EQ(stats_of(m).purge_pending_bytes, P);
    CHECK(resident(b + P));
    validate(m);
    /* a release with pages committed or waiting cleans them */
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    CHECK(discards >= 1);
    CHECK(!resident(b + P));
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    hostmem_os = &hostmem_os_linux;
    validate(m);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

struct decommitter {
    IHostMemoryManager *m;
    char *page;
    size_t pending_after; /* purge_pending_bytes after its decommit */
};

static void *decommit_one(void *arg)
{
    struct decommitter *d = arg;
    CHECK_HR(d->m->lpVtbl->VirtualFree(d->m, d->page, P, MEM_DECOMMIT), S_OK);
    d->pending_after = stats_of(d->m).purge_pending_bytes;
    return NULL;
}

/* While another thread has decommitted within the purge delay the discard
 * comes at once (a waiting one would flush the TLBs under the process's
 * mmap_lock, held for writing, which the other thread's mprotects wait for);
 * once the other thread's decommit is older than that, decommits wait again. A decommit at once over pages still
 * waiting discards them too: committed again, they read zero. Threads take
 * turns by join: no race. */
TEST(two_threads_decommitting_in_turn_discard_at_once)
{
    IHostMemoryManager *m = manager(60000, (size_t)1 << 30);
    char *b = committed(m, 8); /* its last decommit: this thread's */
    REQUIRE(b);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, P); /* alone: it waits */
    CHECK(resident(b));
    struct decommitter d = {m, b + P, 0};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, decommit_one, &d) == 0);
    pthread_join(t, NULL);
    CHECK_EQ(d.pending_after, P); /* the other thread's: at once */
    CHECK(!resident(b + P));
    /* the other thread's came between: at once, the waiting page 0 with it */
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, 3 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0);
    CHECK(!resident(b));
    CHECK(!resident(b + 2 * P));
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, b, 3 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(b[0], 0);
    CHECK_EQ(b[2 * P], 0);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + 3 * P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, 0); /* the other thread's is recent: at once still */
    CHECK_EQ(b[4 * P], 5);
    validate(m);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
    /* the other thread's decommit older than a manager's purge delay: alone */
    m = manager(2, (size_t)1 << 30);
    b = committed(m, 4);
    REQUIRE(b);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do /* the delay, on the clock, and a millisecond of its rounding */
        clock_gettime(CLOCK_MONOTONIC, &now);
    while ((now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec) < 4000000L);
    CHECK_HR(m->lpVtbl->VirtualFree(m, b, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).purge_pending_bytes, P);
    CHECK(resident(b));
    validate(m);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

int main(void)
{
    P = hostmem_page_size();
    RUN(decommit_is_exact_at_once_and_discarded_later);
    RUN(recommitted_pending_pages_read_zero_and_neighbours_keep_theirs);
    RUN(the_cap_bounds_what_waits);
    RUN(the_delay_bounds_how_long);
    RUN(off_and_compact_discard_at_once);
    RUN(discards_wait_only_where_pages_are_committed_again);
    RUN(two_threads_decommitting_in_turn_discard_at_once);
    return TEST_SUMMARY("test_purge");
}
