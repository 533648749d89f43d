/*
 * test_counters.c - the per-call counters (hostmem_stats.calls and
 * call_failures) stay exact however threads come and go (docs/policy.md).
 *
 * The rules: every call is counted once under its method (and its kind) and,
 * when it fails, once more as a failure - whatever thread made it; what a
 * thread counted stays counted after it ends, and the thread that takes its
 * slot next adds to it; threads beyond the slots (more live at once than
 * THREAD_SLOTS) share one block and lose nothing; a signal handler that calls
 * the manager while its thread is in the middle of counting is counted, and
 * so is the interrupted call; after fork the child counts what it inherited
 * plus its own calls, and the parent's counts do not move.
 */
#define COBJMACROS
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "test.h"

static char foreign[64]; /* no manager's: a VirtualFree of it fails */
static void *queried;     /* a reservation of the manager under test: queried */

/* A manager with one reservation for the queries. */
static IHostMemoryManager *make(void)
{
    IHostMemoryManager *m = NULL;
    if (hostmem_create(NULL, &m) != S_OK)
        return NULL;
    if (IHostMemoryManager_VirtualAlloc(m, NULL, 1 << 16, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &queried) !=
        S_OK) {
        IHostMemoryManager_Release(m);
        return NULL;
    }
    return m;
}

struct caller {
    IHostMemoryManager *m;
    int queries, foreign_frees;
    pthread_barrier_t *all_in; /* when set, wait until every thread lives */
};

static void *make_calls(void *arg)
{
    struct caller *c = arg;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    if (c->all_in)
        pthread_barrier_wait(c->all_in);
    for (int i = 0; i < c->queries; i++)
        IHostMemoryManager_VirtualQuery(c->m, queried, &info, sizeof info, &got);
    for (int i = 0; i < c->foreign_frees; i++)
        IHostMemoryManager_VirtualFree(c->m, foreign, 0, MEM_RELEASE);
    return NULL;
}

static void check_counts(IHostMemoryManager *m, size_t queries, size_t frees)
{
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY], queries);
    CHECK_EQ(s.call_failures[HOSTMEM_METHOD_VIRTUAL_QUERY], 0);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_FREE], frees);
    CHECK_EQ(s.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE], frees);
    CHECK_EQ(s.calls[HOSTMEM_KIND_RELEASE], frees);
    CHECK_EQ(s.call_failures[HOSTMEM_KIND_RELEASE], frees);
}

TEST(counts_outlive_their_threads_and_the_next_thread_adds_to_them)
{
    IHostMemoryManager *m = make();
    REQUIRE(m);
    size_t queries = 0, frees = 0;
    for (int round = 0; round < 20; round++) { /* each round's threads take the last round's slots */
        struct caller c[3];
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            c[i] = (struct caller){m, 1000 + round, 100 + i, NULL};
            REQUIRE(pthread_create(&t[i], NULL, make_calls, &c[i]) == 0);
        }
        for (int i = 0; i < 3; i++) {
            pthread_join(t[i], NULL);
            queries += (size_t)c[i].queries;
            frees += (size_t)c[i].foreign_frees;
        }
        check_counts(m, queries, frees);
    }
    /* a manager made after those threads ended counts from nothing */
    void *old_queried = queried;
    IHostMemoryManager *fresh = make();
    REQUIRE(fresh);
    check_counts(fresh, 0, 0);
    struct caller c = {fresh, 7, 3, NULL};
    make_calls(&c);
    check_counts(fresh, 7, 3);
    queried = old_queried;
    check_counts(m, queries, frees);
    CHECK_EQ(IHostMemoryManager_Release(fresh), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

#define CROWD 300 /* more threads alive at once than there are slots (256) */

TEST(threads_beyond_the_slots_share_a_block_and_lose_nothing)
{
    IHostMemoryManager *m = make();
    REQUIRE(m);
    static struct caller c[CROWD];
    static pthread_t t[CROWD];
    pthread_barrier_t all_in;
    pthread_barrier_init(&all_in, NULL, CROWD);
    pthread_attr_t small;
    pthread_attr_init(&small);
    pthread_attr_setstacksize(&small, 64 << 10);
    int made = 0;
    for (; made < CROWD; made++) {
        c[made] = (struct caller){m, 200, 50, &all_in};
        if (pthread_create(&t[made], &small, make_calls, &c[made]) != 0)
            break;
    }
    pthread_attr_destroy(&small);
    if (made < CROWD) { /* the barrier would wait forever: let the others go */
        for (int i = 0; i < made; i++)
            pthread_cancel(t[i]);
        for (int i = 0; i < made; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&all_in);
        IHostMemoryManager_Release(m);
        TEST_SKIP("only %d threads could be made", made);
    }
    for (int i = 0; i < CROWD; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&all_in);
    check_counts(m, CROWD * 200, CROWD * 50);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- a signal handler that calls the manager -------------------------------------------- */
static IHostMemoryManager *signal_manager;
static _Atomic size_t handler_calls;
static _Atomic bool loop_done;

static void on_signal(int sig)
{
    (void)sig;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    IHostMemoryManager_VirtualQuery(signal_manager, queried, &info, sizeof info, &got);
    IHostMemoryManager_VirtualFree(signal_manager, foreign, 0, MEM_RELEASE);
    atomic_fetch_add(&handler_calls, 1);
}

static void *send_signals(void *arg)
{
    pthread_t target = *(pthread_t *)arg;
    while (!atomic_load(&loop_done))
        pthread_kill(target, SIGUSR1);
    return NULL;
}

TEST(a_signal_handler_calling_mid_count_is_counted_and_so_is_the_call_it_interrupted)
{
    IHostMemoryManager *m = make();
    REQUIRE(m);
    signal_manager = m;
    atomic_store(&handler_calls, 0);
    atomic_store(&loop_done, false);
    struct sigaction sa = {.sa_handler = on_signal}, old;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    pthread_t self = pthread_self(), sender;
    REQUIRE(pthread_create(&sender, NULL, send_signals, &self) == 0);
    const int loops = 2000000;
    struct caller c = {m, loops, 0, NULL};
    make_calls(&c); /* queries: each counts one method; the handler's free counts four */
    atomic_store(&loop_done, true);
    pthread_join(sender, NULL);
    sigaction(SIGUSR1, &old, NULL);
    size_t handled = atomic_load(&handler_calls);
    printf("  %zu signals handled during %d queries\n", handled, loops);
    check_counts(m, (size_t)loops + handled, handled);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- fork ------------------------------------------------------------------------------- */
struct parked {
    IHostMemoryManager *m;
    pthread_barrier_t *counted, *go;
};

static __attribute__((unused)) void *count_then_park(void *arg)
{
    struct parked *p = arg;
    struct caller c = {p->m, 10, 1, NULL};
    make_calls(&c);
    pthread_barrier_wait(p->counted);
    pthread_barrier_wait(p->go);
    return NULL;
}

TEST(a_forked_child_counts_from_what_it_inherited_and_the_parent_is_unmoved)
{
#if UNDER_TSAN
    TEST_SKIP("ThreadSanitizer supports fork only without other threads");
#else
    IHostMemoryManager *m = make();
    REQUIRE(m);
    pthread_barrier_t counted, go;
    pthread_barrier_init(&counted, NULL, 4);
    pthread_barrier_init(&go, NULL, 4);
    struct parked p = {m, &counted, &go};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        REQUIRE(pthread_create(&t[i], NULL, count_then_park, &p) == 0);
    pthread_barrier_wait(&counted); /* three threads hold slots, and are gone in the child */
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        int bad = 0;
        hostmem_stats s = stats_of(m);
        bad |= s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY] != 30;
        struct caller c[4];
        pthread_t ct[4];
        for (int round = 0; round < 3; round++) { /* new threads, old slots */
            for (int i = 0; i < 4; i++) {
                c[i] = (struct caller){m, 100, 10, NULL};
                bad |= pthread_create(&ct[i], NULL, make_calls, &c[i]) != 0;
            }
            for (int i = 0; i < 4; i++)
                pthread_join(ct[i], NULL);
        }
        s = stats_of(m);
        bad |= s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY] != 30 + 1200;
        bad |= s.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE] != 3 + 120;
        _exit(bad ? 1 : 0);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    pthread_barrier_wait(&go);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&counted);
    pthread_barrier_destroy(&go);
    check_counts(m, 30, 3);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
#endif
}

int main(void)
{
    RUN(counts_outlive_their_threads_and_the_next_thread_adds_to_them);
    RUN(threads_beyond_the_slots_share_a_block_and_lose_nothing);
    RUN(a_signal_handler_calling_mid_count_is_counted_and_so_is_the_call_it_interrupted);
    RUN(a_forked_child_counts_from_what_it_inherited_and_the_parent_is_unmoved);
    return TEST_SUMMARY("test_counters");
}
