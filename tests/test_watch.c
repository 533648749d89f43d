/*
 * test_watch.c - issue 14: MEM_WRITE_WATCH with GetWriteWatch / ResetWriteWatch
 * semantics (hostmem_get_write_watch, hostmem_reset_write_watch), and
 * PAGE_NOCACHE / PAGE_WRITECOMBINE as allocation-wide attributes. The rules are
 * Windows' as its conformance tests check them ([wine-k32] test_write_watch,
 * test_VirtualAlloc); docs/writewatch.md.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#ifdef UNDER_TSAN
#define UNDER_TSAN_FORK 1 /* hostmem's fork handlers are not installed under TSan (fork.c) */
#else
#define UNDER_TSAN_FORK 0
#endif

static size_t P;
static IHostMemoryManager *M;
static int EMULATED; /* M made with HOSTMEM_EMULATE_WRITE_WATCH: every test runs both ways */

#define INVALID HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define NOACCESS HRESULT_FROM_WIN32(ERROR_NOACCESS)

/* Whether M tracks writes: by emulation, or where the kernel can. */
static int kernel_tracks(void)
{
    return EMULATED || strcmp(hostmem_write_watch_mode(), "kernel") == 0;
}

static char *watched(size_t pages, DWORD type)
{
    void *p = NULL;
    HRESULT hr = M->lpVtbl->VirtualAlloc(M, NULL, pages * P, type | MEM_WRITE_WATCH, PAGE_READWRITE,
                                         eTaskCritical, &p);
    CHECK_HR(hr, S_OK);
    return p;
}

/* The written pages of [b, b+n) as page indexes from b, into got; their count. */
static size_t written(char *b, size_t n, DWORD flags, size_t max, size_t *got)
{
    void *a[64];
    uintptr_t count = max;
    ULONG granularity = 0;
    HRESULT hr = hostmem_get_write_watch(M, flags, b, n, a, &count, &granularity);
    CHECK_HR(hr, S_OK);
    if (hr != S_OK)
        return (size_t)-1;
    CHECK_EQ(granularity, P);
    for (size_t i = 0; i < count; i++) {
        got[i] = (size_t)((char *)a[i] - b) / P;
        if (i > 0)
            CHECK(got[i] > got[i - 1]); /* ascending */
    }
    return count;
}

/* GetWriteWatch: the pages written since the reservation was made or reset, in
 * order; a commit writes nothing; a 4-byte write across a boundary dirties both
 * pages; a sub-range sees its own pages only. */
TEST(get_write_watch_reports_written_pages_in_order)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(16, MEM_RESERVE | MEM_COMMIT);
    size_t got[64];
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 0);
    memset(b + 2 * P - 2, 1, 4); /* pages 1 and 2 */
    b[9 * P] = 1;
    (void)*(volatile char *)(b + 5 * P); /* a read is no write */
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 3);
    CHECK_EQ(got[0], 1);
    CHECK_EQ(got[1], 2);
    CHECK_EQ(got[2], 9);
    CHECK_EQ(written(b + 2 * P, 2 * P, 0, 64, got), 1); /* pages 2-3: page 2 */
    CHECK_EQ(got[0], 0);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* WRITE_WATCH_FLAG_RESET with a count smaller than the written pages: the
 * first ones are returned and only those reset; ResetWriteWatch resets a
 * range; a reserved-only watched region reports nothing. */
TEST(reset_flag_resets_only_the_pages_returned)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(16, MEM_RESERVE);
    size_t got[64];
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 0);
    void *p;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, b, 16 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    b[3 * P] = b[4 * P] = b[7 * P] = 1;
    CHECK_EQ(written(b, 16 * P, WRITE_WATCH_FLAG_RESET, 1, got), 1);
    CHECK_EQ(got[0], 3);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 2);
    CHECK_EQ(got[0], 4);
    CHECK_HR(hostmem_reset_write_watch(M, b, 5 * P), S_OK);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 7);
    CHECK_EQ(written(b, 16 * P, WRITE_WATCH_FLAG_RESET, 64, got), 1);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 0);
    b[7 * P] = 2; /* written again after a reset */
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Writes by the kernel count, as on Windows (ReadFile into the buffer) - but
 * under emulation, where the kernel's write into a clean page fails with EFAULT
 * (as under Wine's: docs/writewatch.md); a protection change neither writes nor
 * resets. */
TEST(kernel_writes_count_and_protection_changes_do_not)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(8, MEM_RESERVE | MEM_COMMIT);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    REQUIRE(write(fds[1], "hostmem", 7) == 7);
    if (EMULATED) {
        errno = 0;
        CHECK(read(fds[0], b + 5 * P, 7) == -1 && errno == EFAULT);
        b[5 * P] = 1; /* the program's own write is seen */
    } else {
        REQUIRE(read(fds[0], b + 5 * P, 7) == 7);
    }
    close(fds[0]);
    close(fds[1]);
    b[P] = 1;
    DWORD old;
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 8 * P, PAGE_READONLY, &old), S_OK);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 8 * P, PAGE_READWRITE, &old), S_OK);
    size_t got[64];
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 2);
    CHECK_EQ(got[0], 1);
    CHECK_EQ(got[1], 5);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Windows forgets the writes to decommitted pages: after decommit, and after a
 * recommit and a read, they are not reported; a range with decommitted pages
 * is no error. */
TEST(decommitted_pages_are_not_reported)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(8, MEM_RESERVE | MEM_COMMIT);
    b[2 * P] = b[3 * P] = b[6 * P] = 1;
    CHECK_HR(M->lpVtbl->VirtualFree(M, b + 2 * P, 2 * P, MEM_DECOMMIT), S_OK);
    size_t got[64];
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 6);
    void *p;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, b + 2 * P, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(*(volatile char *)(b + 2 * P), 0);
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 1);
    b[3 * P] = 5;
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 2);
    CHECK_EQ(got[0], 3);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Windows' latch ([wine-k32] test_write_watch, "initial protect doesn't
 * matter"): a VirtualProtect captures the pages written before it, and they
 * stay reported - through a decommit, and after a recommit - until they are
 * reset. The protection it sets does not matter (NOACCESS here). */
TEST(a_protection_change_latches_written_pages_through_decommit)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    void *v = NULL, *p;
    size_t got[64];
    DWORD old;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, NULL, 16 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_NOACCESS, eTaskCritical, &v),
             S_OK);
    char *b = v;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, b, 16 * P, MEM_COMMIT, PAGE_NOACCESS, eTaskCritical, &p), S_OK);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 0);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 6 * P, PAGE_READWRITE, &old), S_OK);
    CHECK_EQ(old, PAGE_NOACCESS);
    b[5 * P + 200] = 3;
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 6 * P, PAGE_NOACCESS, &old), S_OK);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 5);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 16 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1); /* Windows: still reported */
    CHECK_EQ(got[0], 5);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, b, 16 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(*(volatile char *)(b + 5 * P + 200), 0); /* the contents are gone, the report is not */
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 5);
    b[5 * P] = 1; /* written again: one page, reported once */
    CHECK_EQ(written(b, 16 * P, WRITE_WATCH_FLAG_RESET, 64, got), 1);
    CHECK_EQ(got[0], 5);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 0); /* reset: forgotten */
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Only the writes before the VirtualProtect are captured: a page written after
 * it, then decommitted, is forgotten as any decommitted page; ResetWriteWatch
 * forgets captured pages too. */
TEST(only_writes_before_the_protection_change_are_latched)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(8, MEM_RESERVE | MEM_COMMIT);
    size_t got[64];
    DWORD old;
    b[P] = 1;
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 8 * P, PAGE_READWRITE, &old), S_OK); /* the same protection */
    b[2 * P] = 1;
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 4 * P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 1);
    CHECK_HR(hostmem_reset_write_watch(M, b, 8 * P), S_OK);
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 0);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Latched and written pages answer as one list: in order, at most the count,
 * and with the reset flag only those returned are reset - the next call
 * returns the rest, latched or not. */
TEST(latched_and_written_pages_answer_in_order_within_the_count)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(16, MEM_RESERVE | MEM_COMMIT);
    size_t got[64];
    DWORD old;
    void *p;
    b[P] = b[3 * P] = b[9 * P] = 1;
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 16 * P, PAGE_READONLY, &old), S_OK);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, 16 * P, PAGE_READWRITE, &old), S_OK);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b + P, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b + 3 * P, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, b + 3 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    b[2 * P] = b[4 * P] = b[12 * P] = 1;
    /* 1, 3 latched (decommitted, recommitted); 9 latched and committed; 2, 4, 12 written */
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 6);
    size_t all[] = {1, 2, 3, 4, 9, 12};
    for (size_t i = 0; i < 6; i++)
        CHECK_EQ(got[i], all[i]);
    CHECK_EQ(written(b + 2 * P, 8 * P, 0, 64, got), 4); /* a sub-range: its own pages only (2, 3, 4, 9) */
    CHECK_EQ(written(b, 16 * P, WRITE_WATCH_FLAG_RESET, 3, got), 3);
    CHECK(got[0] == 1 && got[1] == 2 && got[2] == 3);
    CHECK_EQ(written(b, 16 * P, WRITE_WATCH_FLAG_RESET, 2, got), 2);
    CHECK(got[0] == 4 && got[1] == 9);
    CHECK_EQ(written(b, 16 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 12);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* A written page that a reset answer left out (the count was full of latched
 * pages) is still only written: a decommit forgets it. (Found by the fuzzer's
 * model: the kernel-tracked path had kept such a page as latched.) */
TEST(a_page_left_out_of_a_reset_answer_is_forgotten_by_decommit)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *b = watched(4, MEM_RESERVE | MEM_COMMIT);
    size_t got[64];
    DWORD old;
    b[0] = 1;
    CHECK_HR(M->lpVtbl->VirtualProtect(M, b, P, PAGE_READWRITE, &old), S_OK); /* page 0 latched */
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, P, MEM_DECOMMIT), S_OK);
    b[2 * P] = 1;
    CHECK_EQ(written(b, 4 * P, WRITE_WATCH_FLAG_RESET, 1, got), 1);
    CHECK_EQ(got[0], 0);
    CHECK_EQ(written(b, 4 * P, 0, 64, got), 1); /* page 2: still reported */
    CHECK_EQ(got[0], 2);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b + 2 * P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(written(b, 4 * P, 0, 64, got), 0);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* A collector stops the world with a signal, and its handler writes to the
 * heap (bdwgc's suspend handler does): such a signal may arrive while
 * hostmem's SIGSEGV handler marks a first write, holding the stripe's busy
 * word. hostmem's handler blocks every signal while it runs, so the other
 * handler's write comes after and is marked as any other; without that the
 * nested fault found the word held by its own thread and the process died. */
static char *volatile interrupt_page;
static _Atomic int interrupts;
static void interrupt_writes(int sig)
{
    (void)sig;
    interrupt_page[atomic_fetch_add(&interrupts, 1) % 64] = 1;
}

struct interrupted {
    char *base;
    _Atomic int done;
};

/* Writes pages 0-6 over and over: each first write after a reset faults. */
static void *interrupted_writer(void *arg)
{
    struct interrupted *w = arg;
    for (int i = 0; !atomic_load(&w->done); i++)
        for (size_t k = 0; k < 7; k++)
            ((volatile char *)w->base)[k * P] = (char)i;
    return NULL;
}

static void interrupted_first_writes(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = interrupt_writes;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    struct interrupted w = {watched(8, MEM_RESERVE | MEM_COMMIT), 0};
    interrupt_page = w.base + 7 * P;
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, interrupted_writer, &w) == 0);
    for (int i = 0; i < 20000; i++) { /* this thread resets; the writer's handler is interrupted */
        CHECK_HR(hostmem_reset_write_watch(M, w.base, 8 * P), S_OK);
        pthread_kill(t, SIGUSR1);
    }
    atomic_store(&w.done, 1);
    pthread_join(t, NULL);
    CHECK(atomic_load(&interrupts) > 0);
    interrupt_writes(SIGUSR1); /* page 7, now from this thread: marked as any write */
    size_t got[64];
    CHECK(written(w.base, 8 * P, 0, 64, got) >= 1);
    char why[256] = "";
    CHECK_HR(hostmem_validate(M, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_HR(M->lpVtbl->VirtualFree(M, w.base, 0, MEM_RELEASE), S_OK);
}

TEST(a_signal_during_the_first_write_fault_is_held_back)
{
    if (!EMULATED)
        return; /* the kernel's tracking takes no signal */
    test_in_child(interrupted_first_writes, "signals whose handler writes, during first-write faults");
}

/* The rules above at random against a model of Windows' (written since reset
 * while committed; captured by a VirtualProtect; both reported, in order,
 * within the count; decommit forgets the written, never the captured), over
 * 300 pages so that the maps' word edges are crossed. */
enum { MODEL_PAGES = 300 };
TEST(write_watch_follows_the_model_at_random)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    static unsigned char committed[MODEL_PAGES], writable_[MODEL_PAGES], dirty[MODEL_PAGES], latched[MODEL_PAGES];
    static void *a[MODEL_PAGES];
    char *b = watched(MODEL_PAGES, MEM_RESERVE | MEM_COMMIT);
    for (size_t i = 0; i < MODEL_PAGES; i++)
        committed[i] = writable_[i] = 1, dirty[i] = latched[i] = 0;
    unsigned seed = 12345;
    for (int step = 0; step < 3000 && !test_current_failed; step++) {
        seed = seed * 1103515245u + 12345u;
        unsigned op = (seed >> 16) % 8;
        seed = seed * 1103515245u + 12345u;
        size_t lo = (seed >> 8) % MODEL_PAGES;
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 8) % (op < 3 ? 1 : 80);
        size_t hi = lo + n > MODEL_PAGES ? MODEL_PAGES : lo + n;
        bool all_committed = true;
        for (size_t i = lo; i < hi; i++)
            all_committed &= committed[i] != 0;
        void *p;
        DWORD old;
        if (op < 3) { /* a write */
            if (committed[lo] && writable_[lo]) {
                ((volatile char *)b)[lo * P + (seed % P)] = (char)step;
                dirty[lo] = 1;
            }
        } else if (op == 3 && all_committed) { /* a protection change captures */
            DWORD prot = (seed >> 4) & 1 ? PAGE_READONLY : PAGE_READWRITE;
            CHECK_HR(M->lpVtbl->VirtualProtect(M, b + lo * P, (hi - lo) * P, prot, &old), S_OK);
            for (size_t i = lo; i < hi; i++)
                writable_[i] = prot == PAGE_READWRITE, latched[i] |= dirty[i];
        } else if (op == 4) {
            CHECK_HR(M->lpVtbl->VirtualFree(M, b + lo * P, (hi - lo) * P, MEM_DECOMMIT), S_OK);
            for (size_t i = lo; i < hi; i++)
                committed[i] = dirty[i] = 0;
        } else if (op == 5) {
            CHECK_HR(M->lpVtbl->VirtualAlloc(M, b + lo * P, (hi - lo) * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                             &p), S_OK);
            for (size_t i = lo; i < hi; i++)
                committed[i] = writable_[i] = 1;
        } else if (op == 6) {
            CHECK_HR(hostmem_reset_write_watch(M, b + lo * P, (hi - lo) * P), S_OK);
            for (size_t i = lo; i < hi; i++)
                dirty[i] = latched[i] = 0;
        } else { /* GetWriteWatch, resetting or not, with a count that may cut the list */
            bool reset = (seed >> 5) & 1;
            uintptr_t count = 1 + (seed >> 6) % 40;
            ULONG g;
            CHECK_HR(hostmem_get_write_watch(M, reset ? WRITE_WATCH_FLAG_RESET : 0, b + lo * P, (hi - lo) * P, a,
                                             &count, &g), S_OK);
            uintptr_t asked = 1 + (seed >> 6) % 40;
            size_t k = 0; /* the model's answers, checked against the call's */
            for (size_t i = lo; i < hi && k < asked; i++) {
                if (!dirty[i] && !latched[i])
                    continue;
                if (k < count && a[k] != b + i * P)
                    TEST_FAIL_AT("step %d: answer %zu is page %td, the model says %zu", step, k,
                                 ((char *)a[k] - b) / (ptrdiff_t)P, i);
                if (reset)
                    dirty[i] = latched[i] = 0;
                k++;
            }
            if (k != count)
                TEST_FAIL_AT("step %d: %zu answers, the model has %zu", step, (size_t)count, k);
        }
    }
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* hostmem_stats counts the answers (a host checks that its collector really
 * reads write watch): GetWriteWatch calls, those that reset and
 * ResetWriteWatch calls, and the pages reported; a refused call counts nothing. */
TEST(write_watch_answers_are_counted)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    hostmem_stats before = stats_of(M);
    char *b = watched(8, MEM_RESERVE | MEM_COMMIT);
    b[P] = b[4 * P] = b[7 * P] = 1;
    size_t got[64];
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 3);
    CHECK_EQ(written(b, 8 * P, WRITE_WATCH_FLAG_RESET, 2, got), 2);
    CHECK_HR(hostmem_reset_write_watch(M, b, 8 * P), S_OK);
    void *a[4];
    uintptr_t count = 0;
    ULONG granularity;
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 8 * P, a, &count, &granularity), INVALID);
    CHECK_HR(hostmem_reset_write_watch(M, b, 0), INVALID);
    hostmem_stats after = stats_of(M);
    CHECK_EQ(after.write_watch_gets - before.write_watch_gets, 2);
    CHECK_EQ(after.write_watch_resets - before.write_watch_resets, 2);
    CHECK_EQ(after.write_watch_pages - before.write_watch_pages, 5);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* Threads write while GetWriteWatch resets and another thread commits and
 * decommits elsewhere in the same reservation: every page written is reported
 * at least once, and no page that was never written ever is (no write lost to
 * a reset, none invented). */
enum { WPAGES = 32, WRITERS = 2 };
struct race {
    char *base;
    _Atomic int stop;
    _Atomic int written[WPAGES];
    _Atomic int failures;
};

static void *race_writer(void *arg)
{
    struct race *r = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    for (int i = 0; i < 20000; i++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % (WPAGES / 2)) * 2; /* even pages only: odd ones stay clean */
        atomic_store(&r->written[k], 1);
        __atomic_store_n(&r->base[(size_t)k * P + (seed >> 20) % 64], (char)i, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *race_changer(void *arg)
{
    struct race *r = arg;
    while (!atomic_load(&r->stop)) {
        void *p;
        if (M->lpVtbl->VirtualAlloc(M, r->base + WPAGES * P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) !=
                S_OK ||
            M->lpVtbl->VirtualFree(M, r->base + WPAGES * P, 8 * P, MEM_DECOMMIT) != S_OK)
            atomic_fetch_add(&r->failures, 1);
    }
    return NULL;
}

TEST(write_watch_under_concurrent_writes_and_changes)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    struct race r = {watched(2 * WPAGES, MEM_RESERVE), 0, {0}, 0};
    REQUIRE(r.base);
    void *p;
    REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, r.base, WPAGES * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    int seen[WPAGES] = {0};
    pthread_t w[WRITERS], c;
    REQUIRE(pthread_create(&c, NULL, race_changer, &r) == 0);
    for (int i = 0; i < WRITERS; i++)
        REQUIRE(pthread_create(&w[i], NULL, race_writer, &r) == 0);
    size_t got[64];
    for (int round = 0; round < 200; round++) {
        size_t n = written(r.base, WPAGES * P, WRITE_WATCH_FLAG_RESET, 64, got);
        for (size_t i = 0; i < n && n != (size_t)-1; i++)
            seen[got[i]] = 1;
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    atomic_store(&r.stop, 1);
    pthread_join(c, NULL);
    size_t n = written(r.base, WPAGES * P, WRITE_WATCH_FLAG_RESET, 64, got);
    for (size_t i = 0; i < n && n != (size_t)-1; i++)
        seen[got[i]] = 1;
    for (int k = 0; k < WPAGES; k++)
        if (seen[k] != atomic_load(&r.written[k]))
            TEST_FAIL_AT("page %d: written %d, reported %d", k, atomic_load(&r.written[k]), seen[k]);
    CHECK_EQ(atomic_load(&r.failures), 0);
    CHECK_HR(M->lpVtbl->VirtualFree(M, r.base, 0, MEM_RELEASE), S_OK);
}

/* docs/writewatch.md: a manager keeps write watch's books for 1,024
 * reservations at once - an emulated one from its birth, a kernel-tracked one
 * from its first VirtualProtect (its captured pages). Past that the emulated
 * reservation, or the VirtualProtect, is refused with E_OUTOFMEMORY and
 * nothing changed; a release makes room again. */
enum { BOOKS = 1024 };
static void *books[BOOKS];
TEST(write_watch_books_hold_1024_reservations)
{
    DWORD type = MEM_RESERVE | MEM_WRITE_WATCH | (EMULATED ? 0 : MEM_COMMIT), old = 0;
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    for (int i = 0; i < BOOKS; i++) {
        REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, type, PAGE_READWRITE, eTaskCritical, &books[i]), S_OK);
        if (!EMULATED)
            REQUIRE_HR(M->lpVtbl->VirtualProtect(M, books[i], P, PAGE_READONLY, &old), S_OK);
    }
    hostmem_stats before = stats_of(M);
    void *p = (void *)1;
    if (EMULATED) {
        CHECK_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, type, PAGE_READWRITE, eTaskCritical, &p), E_OUTOFMEMORY);
        CHECK(p == NULL);
    } else {
        REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, type, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        ((volatile char *)p)[0] = 1;
        CHECK_HR(M->lpVtbl->VirtualProtect(M, p, P, PAGE_READONLY, &old), E_OUTOFMEMORY);
        MEMORY_BASIC_INFORMATION info;
        SIZE_T got = 0;
        CHECK_HR(M->lpVtbl->VirtualQuery(M, p, &info, sizeof info, &got), S_OK);
        CHECK_EQ(info.Protect, PAGE_READWRITE); /* unchanged */
        CHECK_HR(M->lpVtbl->VirtualFree(M, p, 0, MEM_RELEASE), S_OK);
        before = stats_of(M);
    }
    hostmem_stats after = stats_of(M);
    CHECK_EQ(after.reservations, before.reservations);
    CHECK_EQ(after.reserved_bytes, before.reserved_bytes);
    CHECK_HR(M->lpVtbl->VirtualFree(M, books[7], 0, MEM_RELEASE), S_OK);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, type, PAGE_READWRITE, eTaskCritical, &books[7]), S_OK);
    if (!EMULATED)
        CHECK_HR(M->lpVtbl->VirtualProtect(M, books[7], P, PAGE_READONLY, &old), S_OK);
    for (int i = 0; i < BOOKS; i++)
        CHECK_HR(M->lpVtbl->VirtualFree(M, books[i], 0, MEM_RELEASE), S_OK);
}

/* docs/host.md, fork: a child's kernel registers nothing of its parent's, so
 * tracking starts again there - every page the child has reads as written
 * until it is reset (never fewer than were written); the parent's tracking
 * goes on undisturbed. */
TEST(write_watch_in_a_forked_child)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    if (UNDER_TSAN_FORK)
        TEST_SKIP("under TSan hostmem's fork handlers are off");
    char *b = watched(8, MEM_RESERVE | MEM_COMMIT);
    b[P] = 1;
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        size_t got[64];
        int bad = 0;
        size_t n1 = written(b, 8 * P, WRITE_WATCH_FLAG_RESET, 64, got), g1 = 0;
        for (size_t i = 0; i < n1 && i < 64; i++)
            g1 |= got[i] == 1; /* the page written before the fork is among them */
        size_t n2 = written(b, 8 * P, 0, 64, got);
        b[6 * P] = 1;
        size_t n3 = written(b, 8 * P, 0, 64, got), g3 = got[0];
        bad = n1 < 1 || !g1 || n2 != 0 || n3 != 1 || g3 != 6;
        if (bad)
            fprintf(stderr, "  child: %zu (page 1 %s), %zu, %zu (first %zu)\n", n1, g1 ? "in" : "not in", n2,
                    n3, g3);
        _exit(bad || test_current_failed);
    }
    REQUIRE(child > 0);
    int status = -1;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    size_t got[64];
    CHECK_EQ(written(b, 8 * P, 0, 64, got), 1);
    CHECK_EQ(got[0], 1);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* The parameters, in Windows' results: size 0, a range past the reservation's
 * end, an unwatched reservation, memory the manager never handed out, a bad
 * flag, *count 0 (checked before the pointers), NULL pointers. Nothing is
 * written on a failure. */
TEST(write_watch_parameters_as_windows)
{
    char *b = watched(4, MEM_RESERVE | MEM_COMMIT);
    if (!kernel_tracks()) {
        /* no tracking in this kernel: the reservation itself is refused */
        CHECK(b == NULL);
        return;
    }
    void *a[4] = {(void *)0xdeadbeef};
    uintptr_t count = 4;
    ULONG g = 7;
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 0, a, &count, &g), INVALID);
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 4 * P + 1, a, &count, &g), INVALID);
    CHECK_HR(hostmem_get_write_watch(M, 0, b + 3 * P, P + 1, a, &count, &g), INVALID);
    CHECK_HR(hostmem_get_write_watch(M, 0xdeadbeef, b, 4 * P, a, &count, &g), INVALID);
    CHECK_HR(hostmem_get_write_watch(M, 0, NULL, 4 * P, a, &count, &g), INVALID);
    int local;
    CHECK_HR(hostmem_get_write_watch(M, 0, &local, sizeof local, a, &count, &g), INVALID);
    count = 0;
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 4 * P, NULL, &count, &g), INVALID);
    count = 4;
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 4 * P, a, NULL, &g), NOACCESS);
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 4 * P, a, &count, NULL), NOACCESS);
    CHECK_HR(hostmem_get_write_watch(M, 0, b, 4 * P, NULL, &count, &g), NOACCESS);
    CHECK(a[0] == (void *)0xdeadbeef && count == 4 && g == 7);
    CHECK_HR(hostmem_reset_write_watch(M, b, 0), INVALID);
    CHECK_HR(hostmem_reset_write_watch(M, b, 4 * P + 1), INVALID);
    void *plain;
    REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                       &plain), S_OK);
    CHECK_HR(hostmem_get_write_watch(M, 0, plain, P, a, &count, &g), INVALID);
    CHECK_HR(hostmem_reset_write_watch(M, plain, P), INVALID);
    /* MEM_WRITE_WATCH is chosen at reservation: not with a commit alone */
    void *p = (void *)1;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, plain, P, MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE, eTaskCritical, &p),
             E_INVALIDARG);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, MEM_WRITE_WATCH, PAGE_READWRITE, eTaskCritical, &p),
             E_INVALIDARG);
    CHECK(p == NULL);
    CHECK_HR(M->lpVtbl->VirtualFree(M, plain, 0, MEM_RELEASE), S_OK);
    CHECK_HR(M->lpVtbl->VirtualFree(M, b, 0, MEM_RELEASE), S_OK);
}

/* A write-watched reservation is a kernel mapping of its own: the map's
 * estimate and the kernel check stay right, and its release gives the
 * registration back (the address space is plain slack again). */
TEST(watched_reservations_keep_the_map_exact)
{
    if (!kernel_tracks())
        TEST_SKIP("this kernel cannot track writes (%s); the emulated run covers it", hostmem_write_watch_mode());
    char *w[8];
    for (int i = 0; i < 8; i++)
        w[i] = watched(3, i % 2 ? MEM_RESERVE : MEM_RESERVE | MEM_COMMIT);
    w[0][P] = 1; /* written pages between clean ones: mappings of their own when emulated */
    w[2][0] = w[2][2 * P] = 1;
    hostmem_stats s = stats_of(M);
    size_t real = 0;
    CHECK_HR(hostmem_kernel_mappings(M, &real), S_OK);
    if (real > s.kernel_mappings)
        TEST_FAIL_AT("kernel mappings %zu, estimate %zu", real, s.kernel_mappings);
    char why[256];
    CHECK_HR(hostmem_validate(M, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    for (int i = 0; i < 8; i++)
        CHECK_HR(M->lpVtbl->VirtualFree(M, w[i], 0, MEM_RELEASE), S_OK);
    CHECK_HR(hostmem_validate(M, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    /* the same addresses, reserved again without the flag, are not watched */
    void *p;
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, w[0], 3 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             S_OK);
    void *a[4];
    uintptr_t count = 4;
    ULONG g;
    CHECK_HR(hostmem_get_write_watch(M, 0, p, P, a, &count, &g), INVALID);
    CHECK_HR(M->lpVtbl->VirtualFree(M, p, 0, MEM_RELEASE), S_OK);
}

/* PAGE_NOCACHE / PAGE_WRITECOMBINE belong to the allocation on current Windows
 * ([wine-k32] test_VirtualAlloc): VirtualProtect neither drops nor adds them,
 * its old protection includes them, and a commit inside such an allocation
 * gets them; a no-access or guard page has none. */
TEST(nocache_and_writecombine_are_allocation_wide)
{
    void *p, *q;
    DWORD old;
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T n;
    REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, 2 * P, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE | PAGE_NOCACHE,
                                       eTaskCritical, &p), S_OK);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, p, P, PAGE_READWRITE, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE | PAGE_NOCACHE);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, p, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE | PAGE_NOCACHE); /* dropping it is ignored */
    CHECK_EQ(mbi.RegionSize, 2 * P);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, p, P, PAGE_READONLY, &old), S_OK);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, p, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_READONLY | PAGE_NOCACHE);
    CHECK_EQ(mbi.RegionSize, P);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, p, P, PAGE_NOACCESS, &old), S_OK);
    CHECK_EQ(old, PAGE_READONLY | PAGE_NOCACHE);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, p, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_NOACCESS);
    /* adding it to a plain allocation is ignored */
    REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, P, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &q),
               S_OK);
    CHECK_HR(M->lpVtbl->VirtualProtect(M, q, P, PAGE_READONLY | PAGE_WRITECOMBINE, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, q, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_READONLY);
    CHECK_EQ(mbi.AllocationProtect, PAGE_READWRITE);
    CHECK_HR(M->lpVtbl->VirtualFree(M, q, 0, MEM_RELEASE), S_OK);
    CHECK_HR(M->lpVtbl->VirtualFree(M, p, 0, MEM_RELEASE), S_OK);
    /* a commit inside a WRITECOMBINE reservation gets it */
    REQUIRE_HR(M->lpVtbl->VirtualAlloc(M, NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE | PAGE_WRITECOMBINE,
                                       eTaskCritical, &p), S_OK);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, p, P, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &q), S_OK);
    CHECK_HR(M->lpVtbl->VirtualAlloc(M, (char *)p + P, P, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, eTaskCritical,
                                     &q), S_OK);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, p, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_READONLY | PAGE_WRITECOMBINE);
    CHECK_HR(M->lpVtbl->VirtualQuery(M, (char *)p + P, &mbi, sizeof mbi, &n), S_OK);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK_HR(M->lpVtbl->VirtualFree(M, p, 0, MEM_RELEASE), S_OK);
}

int main(void)
{
    P = hostmem_page_size();
    printf("write watch: the kernel's is %s here; the emulation runs everywhere\n", hostmem_write_watch_mode());
    for (EMULATED = 0; EMULATED < 2; EMULATED++) {
        hostmem_config c = {sizeof c};
        c.flags = EMULATED ? HOSTMEM_EMULATE_WRITE_WATCH : 0;
        if (hostmem_create(&c, &M) != S_OK) {
            printf("test_watch: cannot create a manager\n");
            return 1;
        }
        RUN(watched_reservations_keep_the_map_exact); /* first: the kernel merges mappings
                                                         less once pages were written, or forked */
        RUN(get_write_watch_reports_written_pages_in_order);
        RUN(reset_flag_resets_only_the_pages_returned);
        RUN(kernel_writes_count_and_protection_changes_do_not);
        RUN(decommitted_pages_are_not_reported);
        RUN(write_watch_answers_are_counted);
        RUN(a_protection_change_latches_written_pages_through_decommit);
        RUN(only_writes_before_the_protection_change_are_latched);
        RUN(latched_and_written_pages_answer_in_order_within_the_count);
        RUN(a_page_left_out_of_a_reset_answer_is_forgotten_by_decommit);
        RUN(a_signal_during_the_first_write_fault_is_held_back);
        RUN(write_watch_follows_the_model_at_random);
        RUN(write_watch_under_concurrent_writes_and_changes);
        RUN(write_watch_books_hold_1024_reservations);
        RUN(write_watch_parameters_as_windows);
        RUN(write_watch_in_a_forked_child);
        if (!EMULATED)
            RUN(nocache_and_writecombine_are_allocation_wide);
        CHECK_EQ(M->lpVtbl->Release(M), 0);
    }
    return TEST_SUMMARY("test_watch");
}
