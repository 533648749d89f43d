/*
 * test_guard.c - issue 14 item 1: one-shot guard pages (HOSTMEM_GUARD_PAGES,
 * docs/guard.md). The first access to a PAGE_GUARD page clears the guard on
 * that page only, as Windows does ([wine-k32] test_guard_page: the first touch
 * raises STATUS_GUARD_PAGE_VIOLATION and VirtualQuery then shows the page
 * without PAGE_GUARD; a second touch succeeds); the runtime's callback decides
 * between retrying the access and the access violation; faults that are not on
 * a guard page go to the handler that was there before, untouched.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static size_t P;

/* ---- the handler that was there before hostmem's -------------------------------- */
static _Thread_local sigjmp_buf *escape;
static _Atomic(void *) previous_saw;
static _Atomic int previous_calls;

static void previous_handler(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    atomic_store(&previous_saw, info->si_addr);
    atomic_fetch_add(&previous_calls, 1);
    if (escape)
        siglongjmp(*escape, 1);
    fprintf(stderr, "  FAIL a fault nobody expected at %p (pid %d)\n", info->si_addr, (int)getpid());
    abort();
}

/* Touches a; 1 when the access faulted through to the previous handler. */
static int faults(volatile char *a, int write)
{
    sigjmp_buf here;
    escape = &here;
    if (sigsetjmp(here, 1)) {
        escape = NULL;
        return 1;
    }
    if (write)
        *a = 7;
    else
        (void)*a;
    escape = NULL;
    return 0;
}

/* ---- the runtime's callback ------------------------------------------------------------ */
struct seen {
    _Atomic int calls;
    _Atomic(void *) address;
    _Atomic int access;
    int answer;
};
static _Thread_local int fired_here;

static int on_guard(void *context, void *address, int access)
{
    struct seen *s = context;
    atomic_store(&s->address, address);
    atomic_store(&s->access, access);
    fired_here++;
    atomic_fetch_add(&s->calls, 1);
    return s->answer;
}

static IHostMemoryManager *guarded(struct seen *s)
{
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_GUARD_PAGES;
    IHostMemoryManager *m = NULL;
    CHECK_HR(hostmem_create(&c, &m), S_OK);
    if (m)
        CHECK_HR(hostmem_set_guard_handler(m, on_guard, s), S_OK);
    return m;
}

static MEMORY_BASIC_INFORMATION query(IHostMemoryManager *m, void *a)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    memset(&info, 0, sizeof info);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, a, &info, sizeof info, &n), S_OK);
    return info;
}

/* Windows: the first access clears the guard on that page only, and tells;
 * the access then goes on; later accesses are plain. */
TEST(first_access_clears_the_guard_of_that_page_only)
{
    struct seen s = {0, NULL, -2, HOSTMEM_GUARD_RETRY};
    IHostMemoryManager *m = guarded(&s);
    REQUIRE(m);
    void *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD,
                                       eTaskCritical, &p), S_OK);
    char *b = p;
    CHECK_EQ(faults(b + P + 5, 0), 0); /* read: retried after the callback */
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK(atomic_load(&s.address) == b + P);
#if defined(__x86_64__)
    CHECK_EQ(atomic_load(&s.access), 0);
#endif
    MEMORY_BASIC_INFORMATION info = query(m, b + P);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK_EQ(info.RegionSize, P);
    info = query(m, b);
    CHECK_EQ(info.Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK_EQ(info.RegionSize, P);
    info = query(m, b + 2 * P);
    CHECK_EQ(info.Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK_EQ(info.RegionSize, 2 * P);
    CHECK_EQ(faults(b + P, 1), 0); /* the second access is plain */
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK_EQ(faults(b + 3 * P, 1), 0); /* a write, on another guard page */
    CHECK_EQ(atomic_load(&s.calls), 2);
    CHECK(atomic_load(&s.address) == b + 3 * P);
#if defined(__x86_64__)
    CHECK_EQ(atomic_load(&s.access), 1);
#endif
    CHECK_EQ(b[3 * P], 7);
    /* VirtualProtect arms it again, and it fires again */
    DWORD old;
    CHECK_HR(m->lpVtbl->VirtualProtect(m, b + P, P, PAGE_READONLY | PAGE_GUARD, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK_EQ(faults(b + P, 0), 0);
    CHECK_EQ(atomic_load(&s.calls), 3);
    CHECK_EQ(query(m, b + P).Protect, PAGE_READONLY);
    CHECK_EQ(atomic_load(&previous_calls), 0);
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* HOSTMEM_GUARD_RAISE: the access violation goes to the handler that was there
 * before hostmem's, the guard cleared all the same (as Windows clears it before
 * it raises); so do faults on no-access pages of ours and on memory not ours. */
TEST(raise_and_other_faults_go_to_the_previous_handler)
{
    struct seen s = {0, NULL, -2, HOSTMEM_GUARD_RAISE};
    IHostMemoryManager *m = guarded(&s);
    REQUIRE(m);
    void *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 2 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD,
                                       eTaskCritical, &p), S_OK);
    char *b = p;
    int before = atomic_load(&previous_calls);
    CHECK_EQ(faults(b, 1), 1);
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK_EQ(atomic_load(&previous_calls), before + 1);
    CHECK(atomic_load(&previous_saw) == b);
    CHECK_EQ(query(m, b).Protect, PAGE_READWRITE);
    CHECK_EQ(faults(b, 1), 0);
    DWORD old;
    CHECK_HR(m->lpVtbl->VirtualProtect(m, b + P, P, PAGE_NOACCESS, &old), S_OK);
    CHECK_EQ(faults(b + P + 1, 0), 1);
    CHECK(atomic_load(&previous_saw) == b + P + 1);
    char *foreign = mmap(NULL, P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(foreign != MAP_FAILED);
    CHECK_EQ(faults(foreign + 3, 0), 1);
    CHECK(atomic_load(&previous_saw) == foreign + 3);
    munmap(foreign, P);
    CHECK_EQ(atomic_load(&s.calls), 1);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Without HOSTMEM_GUARD_PAGES a guard page stays inaccessible (docs/contract.md)
 * and its fault is not hostmem's, even with the handler installed by another
 * manager. */
TEST(without_the_mode_a_guard_page_stays_a_guard)
{
    struct seen s = {0, NULL, -2, HOSTMEM_GUARD_RETRY};
    IHostMemoryManager *g = guarded(&s); /* the handler is installed */
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    CHECK_HR(hostmem_set_guard_handler(m, on_guard, &s), E_INVALIDARG);
    void *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD,
                                       eTaskCritical, &p), S_OK);
    CHECK_EQ(faults(p, 0), 1);
    CHECK_EQ(faults(p, 0), 1);
    CHECK_EQ(query(m, p).Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK_EQ(atomic_load(&s.calls), 0);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
    CHECK_EQ(g->lpVtbl->Release(g), 0);
}

static _Atomic(char *) alt_low;
static _Atomic(char *) alt_high;

/* On the alternate stack when the thread has one: a thread whose stack is
 * exhausted must still have its guard handled. */
static void *altstack_thread(void *arg)
{
    IHostMemoryManager *m = arg;
    size_t size = 64 * 1024;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED)
        return (void *)1;
    stack_t ss = {stack, 0, size};
    sigaltstack(&ss, NULL);
    atomic_store(&alt_low, stack);
    atomic_store(&alt_high, stack + size);
    void *p;
    if (m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, eTaskCritical,
                                &p) != S_OK)
        return (void *)2;
    *(volatile char *)p = 1;
    stack_t off = {NULL, SS_DISABLE, 0};
    sigaltstack(&off, NULL);
    munmap(stack, size);
    m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE);
    return NULL;
}

static _Atomic(char *) callback_stack;
static int on_guard_where(void *context, void *address, int access)
{
    (void)address;
    (void)access;
    char here;
    atomic_store(&callback_stack, &here);
    atomic_fetch_add(&((struct seen *)context)->calls, 1);
    return HOSTMEM_GUARD_RETRY;
}

TEST(handled_on_the_alternate_stack)
{
    struct seen s = {0, NULL, -2, HOSTMEM_GUARD_RETRY};
    IHostMemoryManager *m = guarded(&s);
    REQUIRE(m);
    CHECK_HR(hostmem_set_guard_handler(m, on_guard_where, &s), S_OK);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, altstack_thread, m) == 0);
    void *result;
    pthread_join(t, &result);
    CHECK(result == NULL);
    CHECK_EQ(atomic_load(&s.calls), 1);
    /* the callback's local lay on the alternate stack */
    char *at = atomic_load(&callback_stack);
    CHECK(at >= atomic_load(&alt_low) && at < atomic_load(&alt_high));
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Several threads fault on their own guard pages, re-armed by VirtualProtect,
 * while others commit, decommit, protect and query the same reservation: every
 * arming fires exactly once, on its own thread, and the map and the kernel
 * agree at the end. */
enum { TOUCHERS = 3, CHANGERS = 2, ROUNDS = 400, PAGES = 64 };
struct shared {
    IHostMemoryManager *m;
    char *base;
    struct seen *seen;
    _Atomic int stop;
    _Atomic int failures;
};
struct toucher {
    struct shared *s;
    int index;
    int armed, fired;
};

static void *toucher_thread(void *arg)
{
    struct toucher *t = arg;
    IHostMemoryManager *m = t->s->m;
    fired_here = 0;
    for (int r = 0; r < ROUNDS; r++) {
        char *page = t->s->base + (size_t)(t->index * 8 + r % 8) * P;
        DWORD old;
        if (m->lpVtbl->VirtualProtect(m, page, P, PAGE_READWRITE | PAGE_GUARD, &old) != S_OK) {
            atomic_fetch_add(&t->s->failures, 1);
            break;
        }
        t->armed++;
        if (r % 2)
            *(volatile char *)(page + r % 100) = (char)r;
        else
            (void)*(volatile char *)page;
    }
    t->fired = fired_here;
    return NULL;
}

static void *changer_thread(void *arg)
{
    struct shared *s = arg;
    IHostMemoryManager *m = s->m;
    unsigned seed = 12345;
    while (!atomic_load(&s->stop)) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 32 + (seed >> 8) % 32;
        char *page = s->base + k * P;
        void *p;
        DWORD old;
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        HRESULT hr = S_OK;
        switch ((seed >> 20) % 4) {
        case 0:
            hr = m->lpVtbl->VirtualAlloc(m, page, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
            break;
        case 1:
            hr = m->lpVtbl->VirtualFree(m, page, P, MEM_DECOMMIT);
            break;
        case 2:
            hr = m->lpVtbl->VirtualProtect(m, page, P, PAGE_READONLY, &old);
            if (hr == HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS))
                hr = S_OK; /* decommitted by now */
            break;
        default:
            hr = m->lpVtbl->VirtualQuery(m, s->base + ((seed >> 4) % PAGES) * P, &info, sizeof info, &n);
            break;
        }
        if (hr != S_OK)
            atomic_fetch_add(&s->failures, 1);
    }
    return NULL;
}

TEST(guards_fire_once_each_while_other_threads_change_the_reservation)
{
    struct seen seen = {0, NULL, -2, HOSTMEM_GUARD_RETRY};
    struct shared s = {guarded(&seen), NULL, &seen, 0, 0};
    REQUIRE(s.m);
    void *p;
    REQUIRE_HR(s.m->lpVtbl->VirtualAlloc(s.m, NULL, PAGES * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                         eTaskCritical, &p), S_OK);
    s.base = p;
    pthread_t changers[CHANGERS], touchers[TOUCHERS];
    struct toucher t[TOUCHERS];
    for (int i = 0; i < CHANGERS; i++)
        REQUIRE(pthread_create(&changers[i], NULL, changer_thread, &s) == 0);
    for (int i = 0; i < TOUCHERS; i++) {
        t[i] = (struct toucher){&s, i, 0, 0};
        REQUIRE(pthread_create(&touchers[i], NULL, toucher_thread, &t[i]) == 0);
    }
    int armed = 0;
    for (int i = 0; i < TOUCHERS; i++) {
        pthread_join(touchers[i], NULL);
        CHECK_EQ(t[i].fired, t[i].armed);
        armed += t[i].armed;
    }
    atomic_store(&s.stop, 1);
    for (int i = 0; i < CHANGERS; i++)
        pthread_join(changers[i], NULL);
    CHECK_EQ(armed, TOUCHERS * ROUNDS);
    CHECK_EQ(atomic_load(&seen.calls), armed);
    CHECK_EQ(atomic_load(&s.failures), 0);
    char why[256];
    CHECK_HR(hostmem_validate(s.m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    printf("guard pages: %d fired from %d threads while %d threads changed the same reservation\n", armed,
           TOUCHERS, CHANGERS);
    CHECK_EQ(s.m->lpVtbl->Release(s.m), 0);
}

/* docs/host.md, fork: a fork while other threads fault on guard pages copies no
 * handler halfway through a change (fork.c holds every stripe's busy word):
 * each child's manager agrees with its kernel, and can arm and fire a guard. */
static void *forking_toucher(void *arg)
{
    struct shared *s = arg;
    IHostMemoryManager *m = s->m;
    for (int r = 0; !atomic_load(&s->stop); r++) {
        char *page = s->base + (size_t)(r % 16) * P;
        DWORD old;
        if (m->lpVtbl->VirtualProtect(m, page, P, PAGE_READWRITE | PAGE_GUARD, &old) != S_OK) {
            atomic_fetch_add(&s->failures, 1);
            break;
        }
        (void)*(volatile char *)page;
    }
    return NULL;
}

TEST(fork_while_guards_fire_gives_a_consistent_child)
{
#ifdef UNDER_TSAN
    TEST_SKIP("under TSan hostmem's fork handlers are off");
#endif
    struct seen seen = {0, NULL, -2, HOSTMEM_GUARD_RETRY};
    struct shared s = {guarded(&seen), NULL, &seen, 0, 0};
    REQUIRE(s.m);
    void *p;
    REQUIRE_HR(s.m->lpVtbl->VirtualAlloc(s.m, NULL, 16 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                         &p), S_OK);
    s.base = p;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&t[i], NULL, forking_toucher, &s) == 0);
    int bad = 0;
    for (int k = 0; k < 40; k++) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            char why[256];
            if (hostmem_validate(s.m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why) != S_OK) {
                fprintf(stderr, "  FAIL (a child) validate after fork: %s\n", why);
                _exit(1);
            }
            DWORD old;
            int before = atomic_load(&seen.calls);
            if (s.m->lpVtbl->VirtualProtect(s.m, s.base + 15 * P, P, PAGE_READWRITE | PAGE_GUARD, &old) != S_OK)
                _exit(2);
            (void)*(volatile char *)(s.base + 15 * P);
            _exit(atomic_load(&seen.calls) == before + 1 ? 0 : 3);
        }
        int status = -1;
        if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
            bad++;
    }
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(bad, 0);
    CHECK_EQ(atomic_load(&s.failures), 0);
    CHECK_EQ(s.m->lpVtbl->Release(s.m), 0);
}

int main(void)
{
    P = hostmem_page_size();
    /* the handler hostmem's will stand in front of */
    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    mine.sa_sigaction = previous_handler;
    mine.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &mine, NULL);
    RUN(first_access_clears_the_guard_of_that_page_only);
    RUN(raise_and_other_faults_go_to_the_previous_handler);
    RUN(without_the_mode_a_guard_page_stays_a_guard);
    RUN(handled_on_the_alternate_stack);
    RUN(guards_fire_once_each_while_other_threads_change_the_reservation);
    RUN(fork_while_guards_fire_gives_a_consistent_child);
    return TEST_SUMMARY("test_guard");
}
