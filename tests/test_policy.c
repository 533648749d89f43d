/*
 * test_policy.c - SPEC §7 and issue 3: the commit budget and its critical
 * levels, GetMemoryLoad, memory notifications, the runtime's own address
 * space, statistics, and the cgroup limit read from a fixture directory.
 */
#define COBJMACROS
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

static size_t P;

static IHostMemoryManager *make(hostmem_config *c)
{
    IHostMemoryManager *m = NULL;
    if (hostmem_create(c, &m) != S_OK)
        return NULL;
    return m;
}

static HRESULT commit(IHostMemoryManager *m, void *at, size_t bytes, EMemoryCriticalLevel level)
{
    void *p;
    return IHostMemoryManager_VirtualAlloc(m, at, bytes, MEM_COMMIT, PAGE_READWRITE, level, &p);
}

static void *reserve(IHostMemoryManager *m, size_t bytes)
{
    void *p = NULL;
    IHostMemoryManager_VirtualAlloc(m, NULL, bytes, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
    return p;
}

/* ---- a runtime's notification callback ------------------------------------------------ */
struct runtime {
    ICLRMemoryNotificationCallback iface;
    _Atomic int references;
    int events[64];
    _Atomic int count;
    sem_t signal;
    /* what to do on Low: decommit this range through the manager (re-entrant call) */
    IHostMemoryManager *manager;
    char *free_on_low;
    size_t free_bytes;
    HRESULT reentrant_result;
};

static HRESULT STDMETHODCALLTYPE rt_query(ICLRMemoryNotificationCallback *self, REFIID riid, void **ppv)
{
    if (!memcmp(riid, &IID_IUnknown, sizeof(IID)) ||
        !memcmp(riid, &IID_ICLRMemoryNotificationCallback, sizeof(IID))) {
        *ppv = self;
        self->lpVtbl->AddRef(self);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE rt_add_ref(ICLRMemoryNotificationCallback *self)
{
    return (ULONG)atomic_fetch_add(&((struct runtime *)self)->references, 1) + 1;
}
static ULONG STDMETHODCALLTYPE rt_release(ICLRMemoryNotificationCallback *self)
{
    return (ULONG)atomic_fetch_sub(&((struct runtime *)self)->references, 1) - 1;
}
static HRESULT STDMETHODCALLTYPE rt_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable e)
{
    struct runtime *rt = (struct runtime *)self;
    int i = atomic_fetch_add(&rt->count, 1);
    if (i < 64)
        rt->events[i] = e;
    if (e == eMemoryAvailableLow && rt->free_on_low) {
        char *at = rt->free_on_low;
        rt->free_on_low = NULL;
        rt->reentrant_result = IHostMemoryManager_VirtualFree(rt->manager, at, rt->free_bytes, MEM_DECOMMIT);
    }
    sem_post(&rt->signal);
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl runtime_vtbl = {rt_query, rt_add_ref, rt_release, rt_notify};

static void runtime_init(struct runtime *rt)
{
    memset(rt, 0, sizeof *rt);
    rt->iface.lpVtbl = &runtime_vtbl;
    atomic_init(&rt->references, 1);
    sem_init(&rt->signal, 0, 0);
}

/* Waits for a notification (an event, not a guess at timing: the bound only keeps a
 * broken build from hanging). */
static int wait_event(struct runtime *rt)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 20;
    return sem_timedwait(&rt->signal, &t) == 0;
}

/* ---- budget ----------------------------------------------------------------------------- */

/* §7 budget: eTaskCritical is refused at once with E_OUTOFMEMORY and nothing changes. */
TEST(budget_task_critical_refused_at_once_nothing_changes)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 64 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    char *b = reserve(m, 128 * P);
    REQUIRE(b);
    CHECK_HR(commit(m, b, 64 * P, eTaskCritical), S_OK);
    b[0] = 9;
    CHECK_HR(commit(m, b + 64 * P, P, eTaskCritical), E_OUTOFMEMORY);
    /* recommitting pages already committed needs no budget */
    CHECK_HR(commit(m, b, 8 * P, eTaskCritical), S_OK);
    CHECK(b[0] == 9);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, b + 64 * P, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_RESERVE);
    void *p;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             E_OUTOFMEMORY);
    CHECK(p == NULL);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.committed_bytes, 64 * P);
    CHECK_EQ(s.refusals[eTaskCritical], 2);
    CHECK_EQ(s.commit_limit, 64 * P);
    CHECK_EQ(s.reservations, 1);
    /* freeing makes room again */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(commit(m, b + 64 * P, P, eTaskCritical), S_OK);
    /* so does raising the limit; lowering it takes nothing back */
    CHECK_HR(commit(m, b + 65 * P, 8 * P, eTaskCritical), E_OUTOFMEMORY);
    CHECK_HR(hostmem_set_commit_limit(m, 80 * P), S_OK);
    CHECK_HR(commit(m, b + 65 * P, 8 * P, eTaskCritical), S_OK);
    CHECK_HR(hostmem_set_commit_limit(m, 10 * P), S_OK);
    CHECK_EQ(stats_of(m).committed_bytes, 72 * P);
    CHECK_HR(commit(m, b + 73 * P, P, eTaskCritical), E_OUTOFMEMORY);
    CHECK_HR(hostmem_set_commit_limit(m, HOSTMEM_UNLIMITED), S_OK);
    CHECK_HR(commit(m, b + 73 * P, P, eTaskCritical), S_OK);
    CHECK_EQ(stats_of(m).commit_limit, 0);
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 budget: eProcessCritical may use the emergency reserve above the limit, no more. */
TEST(budget_process_critical_uses_emergency_reserve)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 32 * P;
    c.emergency_reserve = 8 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    char *b = reserve(m, 64 * P);
    CHECK_HR(commit(m, b, 32 * P, eTaskCritical), S_OK);
    CHECK_HR(commit(m, b + 32 * P, P, eTaskCritical), E_OUTOFMEMORY);
    CHECK_HR(commit(m, b + 32 * P, P, eAppDomainCritical), E_OUTOFMEMORY); /* after its wait */
    CHECK_HR(commit(m, b + 32 * P, 8 * P, eProcessCritical), S_OK);
    CHECK_HR(commit(m, b + 40 * P, P, eProcessCritical), E_OUTOFMEMORY);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.committed_bytes, 40 * P);
    CHECK_EQ(s.refusals[eTaskCritical], 1);
    CHECK_EQ(s.refusals[eAppDomainCritical], 1);
    CHECK_EQ(s.refusals[eProcessCritical], 1);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 budget: an invalid critical level is an invalid argument. */
TEST(budget_invalid_level_is_invalidarg)
{
    IHostMemoryManager *m = make(NULL);
    REQUIRE(m);
    void *p;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, (EMemoryCriticalLevel)7, &p),
             E_INVALIDARG);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

struct freer {
    struct runtime *rt;
    IHostMemoryManager *m;
    char *at;
    size_t bytes;
    HRESULT result;
};

static void *free_after_low(void *arg)
{
    struct freer *f = arg;
    if (wait_event(f->rt))
        f->result = IHostMemoryManager_VirtualFree(f->m, f->at, f->bytes, MEM_DECOMMIT);
    return NULL;
}

/* §7 budget: eAppDomainCritical tells the runtime memory is low, waits, and succeeds
 * when another thread frees memory in time. */
TEST(budget_appdomain_waits_and_succeeds_when_another_thread_frees)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 100 * P;
    c.notify_low_load = 100; /* so that filling to 99% is not Low yet */
    c.notify_high_load = 50;
    c.appdomain_wait_ms = 30000;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    char *b = reserve(m, 128 * P);
    CHECK_HR(commit(m, b, 99 * P, eTaskCritical), S_OK);
    int before = atomic_load(&rt.count);
    CHECK_EQ(before, 1); /* High -> Neutral on the way up */
    struct freer f = {&rt, m, b, 10 * P, E_FAIL};
    /* the first event the freer sees is the Low the waiting request sends */
    while (sem_trywait(&rt.signal) == 0)
        ;
    pthread_t t;
    pthread_create(&t, NULL, free_after_low, &f);
    CHECK_HR(commit(m, b + 99 * P, 2 * P, eAppDomainCritical), S_OK);
    pthread_join(t, NULL);
    CHECK_HR(f.result, S_OK);
    CHECK(rt.events[before] == eMemoryAvailableLow);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.committed_bytes, 91 * P);
    CHECK_EQ(s.refusals[eAppDomainCritical], 0);
    CHECK_EQ(s.notifications[eMemoryAvailableLow], 1);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    CHECK_EQ(atomic_load(&rt.references), 1);
}

/* §7 budget: eAppDomainCritical fails after its bounded wait when nobody frees. */
TEST(budget_appdomain_fails_after_bounded_wait_when_nobody_frees)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 16 * P;
    c.appdomain_wait_ms = 20;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    char *b = reserve(m, 32 * P);
    CHECK_HR(commit(m, b, 16 * P, eTaskCritical), S_OK);
    CHECK_HR(commit(m, b + 16 * P, P, eAppDomainCritical), E_OUTOFMEMORY);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.committed_bytes, 16 * P);
    CHECK_EQ(s.refusals[eAppDomainCritical], 1);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, b + 16 * P, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* docs/policy.md, issue 12: a refused eAppDomainCritical request tells the runtime
 * memory is Low before it waits, whatever band the load is in (16 MiB budget,
 * nothing committed, 32 MiB asked: the load says High, the request says Low);
 * exactly one notification, and Low stays until memory is given back. */
TEST(budget_appdomain_refusal_notifies_low_from_any_load)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 16u << 20;
    c.appdomain_wait_ms = 1;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    CHECK_EQ(atomic_load(&rt.count), 0); /* High: a new runtime is not told */
    void *p;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 32u << 20, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                             eAppDomainCritical, &p),
             E_OUTOFMEMORY);
    CHECK_EQ(atomic_load(&rt.count), 1);
    CHECK_EQ(rt.events[0], eMemoryAvailableLow);
    /* a second refusal while Low: no second notification */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 32u << 20, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                             eAppDomainCritical, &p),
             E_OUTOFMEMORY);
    CHECK_EQ(atomic_load(&rt.count), 1);
    CHECK_EQ(stats_of(m).notifications[eMemoryAvailableLow], 1);
    CHECK_EQ(stats_of(m).refusals[eAppDomainCritical], 2);
    /* memory given back: the state follows the load again (High, told once) */
    char *b = reserve(m, 4 * P);
    CHECK_HR(commit(m, b, P, eTaskCritical), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(atomic_load(&rt.count), 2);
    CHECK_EQ(rt.events[1], eMemoryAvailableHigh);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* hostmem.h, issue 12: HOSTMEM_NO_WAIT refuses an eAppDomainCritical request at
 * once, after the Low notification, and counts the refusal under its level; a
 * wait of 0 still means the default. */
TEST(budget_appdomain_no_wait_refuses_at_once_after_low)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 16 * P;
    c.appdomain_wait_ms = HOSTMEM_NO_WAIT;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    char *b = reserve(m, 32 * P);
    CHECK_HR(commit(m, b, 8 * P, eTaskCritical), S_OK); /* 50%: High, nothing said */
    CHECK_EQ(atomic_load(&rt.count), 0);
    CHECK_HR(commit(m, b + 8 * P, 9 * P, eAppDomainCritical), E_OUTOFMEMORY);
    CHECK_EQ(atomic_load(&rt.count), 1);
    CHECK_EQ(rt.events[0], eMemoryAvailableLow);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.refusals[eAppDomainCritical], 1);
    CHECK_EQ(s.committed_bytes, 8 * P);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 budget: the runtime frees memory from inside its Low notification (a re-entrant
 * call), and the waiting request gets it. */
TEST(budget_appdomain_runtime_frees_from_its_callback)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 100 * P;
    c.notify_low_load = 100;
    c.notify_high_load = 50;
    c.appdomain_wait_ms = 30000;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    char *b = reserve(m, 128 * P);
    CHECK_HR(commit(m, b, 100 * P, eTaskCritical), S_OK);
    rt.manager = m;
    rt.free_on_low = b;
    rt.free_bytes = 4 * P;
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    CHECK_HR(commit(m, b + 100 * P, P, eAppDomainCritical), S_OK);
    CHECK_HR(rt.reentrant_result, S_OK);
    CHECK_EQ(stats_of(m).committed_bytes, 97 * P);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- the limit under racing threads -------------------------------------------------------- */
struct racer {
    IHostMemoryManager *m;
    char *base;
    size_t pages;
    unsigned seed;
    unsigned char *committed; /* the thread's own view of its pages */
    size_t held;
    int failures;
};

static _Atomic int sampling;
static _Atomic size_t sampled_max;

static void *sampler(void *arg)
{
    IHostMemoryManager *m = arg;
    while (atomic_load(&sampling)) {
        size_t now = stats_of(m).committed_bytes;
        if (now > atomic_load(&sampled_max))
            atomic_store(&sampled_max, now);
    }
    return NULL;
}

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 3000; i++) {
        r->seed = r->seed * 1103515245u + 12345u;
        size_t first = (r->seed >> 8) % r->pages;
        size_t count = 1 + (r->seed >> 20) % 8;
        if (first + count > r->pages)
            count = r->pages - first;
        size_t newly = 0;
        for (size_t k = first; k < first + count; k++)
            newly += !r->committed[k];
        if ((r->seed >> 4) & 1) {
            HRESULT hr = commit(r->m, r->base + first * P, count * P, eTaskCritical);
            if (hr == S_OK) {
                for (size_t k = first; k < first + count; k++)
                    r->committed[k] = 1;
                r->held += newly;
            } else if (hr != E_OUTOFMEMORY) {
                r->failures++;
            }
        } else {
            HRESULT hr = IHostMemoryManager_VirtualFree(r->m, r->base + first * P, count * P, MEM_DECOMMIT);
            if (hr != S_OK) {
                r->failures++;
            } else {
                for (size_t k = first; k < first + count; k++) {
                    r->held -= r->committed[k];
                    r->committed[k] = 0;
                }
            }
        }
    }
    return NULL;
}

/* §7 budget: committed bytes never exceed the limit with threads racing to commit
 * (checked by a sampler thread), and the final figures are exact. */
TEST(budget_limit_holds_under_racing_threads)
{
    enum { THREADS = 4, PAGES = 256 };
    hostmem_config c = {sizeof c};
    c.commit_limit = 300 * P; /* less than the 1024 pages the threads could commit */
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct racer r[THREADS];
    pthread_t t[THREADS], s;
    for (int i = 0; i < THREADS; i++) {
        r[i] = (struct racer){m, reserve(m, PAGES * P), PAGES, 77u + (unsigned)i, calloc(PAGES, 1), 0, 0};
        REQUIRE(r[i].base && r[i].committed);
    }
    atomic_store(&sampling, 1);
    atomic_store(&sampled_max, 0);
    pthread_create(&s, NULL, sampler, m);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, race, &r[i]);
    size_t held = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        held += r[i].held;
        CHECK_EQ(r[i].failures, 0);
    }
    atomic_store(&sampling, 0);
    pthread_join(s, NULL);
    hostmem_stats st = stats_of(m);
    CHECK(atomic_load(&sampled_max) <= 300 * P);
    CHECK(st.peak_committed_bytes <= 300 * P);
    CHECK_EQ(st.committed_bytes, held * P);
    CHECK(st.refusals[eTaskCritical] > 0); /* the limit was really in the way */
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    for (int i = 0; i < THREADS; i++)
        free(r[i].committed);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- notifications ------------------------------------------------------------------------ */

/* §7 notifications: sent exactly on transitions across the watermarks, with
 * hysteresis, in order, never twice in a row for the same state. */
TEST(notifications_fire_exactly_on_transitions_in_order)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 100 * P;
    c.notify_low_load = 90;
    c.notify_high_load = 60;
    c.notify_hysteresis = 5;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    CHECK_EQ(atomic_load(&rt.references), 2); /* AddRef'd */
    char *b = reserve(m, 100 * P);
    /* load:            50  64  66  85  92  86  84  61  60  95  */
    const int path[] = {50, 64, 66, 85, 92, 86, 84, 61, 60, 95};
    const int expect_after[] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 5};
    const int expected[] = {eMemoryAvailableNeutral, eMemoryAvailableLow, eMemoryAvailableNeutral,
                            eMemoryAvailableHigh, eMemoryAvailableLow};
    int current = 0;
    for (size_t i = 0; i < sizeof path / sizeof path[0]; i++) {
        int target = path[i];
        if (target > current)
            CHECK_HR(commit(m, b + (size_t)current * P, (size_t)(target - current) * P, eTaskCritical), S_OK);
        else
            CHECK_HR(IHostMemoryManager_VirtualFree(m, b + (size_t)target * P, (size_t)(current - target) * P, MEM_DECOMMIT),
                     S_OK);
        current = target;
        if (atomic_load(&rt.count) != expect_after[i])
            TEST_FAIL_AT("at load %d: %d notifications, expected %d", target, atomic_load(&rt.count), expect_after[i]);
    }
    for (int i = 0; i < 5 && i < atomic_load(&rt.count); i++)
        CHECK_EQ(rt.events[i], expected[i]);
    for (int i = 1; i < atomic_load(&rt.count); i++)
        CHECK(rt.events[i] != rt.events[i - 1]);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.notifications[eMemoryAvailableLow], 2);
    CHECK_EQ(s.notifications[eMemoryAvailableNeutral], 2);
    CHECK_EQ(s.notifications[eMemoryAvailableHigh], 1);
    CHECK_EQ(s.memory_state, eMemoryAvailableLow);
    DWORD load;
    SIZE_T available;
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    CHECK_EQ(load, 95);
    CHECK_EQ(available, 5 * P);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    CHECK_EQ(atomic_load(&rt.references), 1); /* released on shutdown */
}

/* §7 notifications: a new registration replaces the old (AddRef the new, Release the old). */
TEST(notifications_registration_replaces_and_counts_references)
{
    IHostMemoryManager *m = make(NULL);
    REQUIRE(m);
    struct runtime a, b;
    runtime_init(&a);
    runtime_init(&b);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &a.iface), S_OK);
    CHECK_EQ(atomic_load(&a.references), 2);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &b.iface), S_OK);
    CHECK_EQ(atomic_load(&a.references), 1);
    CHECK_EQ(atomic_load(&b.references), 2);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK_EQ(atomic_load(&b.references), 1);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &a.iface), S_OK);
    CHECK_HR(hostmem_shutdown(m), S_OK);
    CHECK_EQ(atomic_load(&a.references), 1);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &b.iface), HOST_E_CLRNOTAVAILABLE);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 notifications: the callback is called with no lock held: it may allocate, free,
 * protect and query through the manager, even on the reservation that caused it. */
struct reentrant {
    ICLRMemoryNotificationCallback iface;
    IHostMemoryManager *m;
    char *base;
    HRESULT results[4];
    int calls;
};
static HRESULT STDMETHODCALLTYPE re_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable e)
{
    struct reentrant *r = (struct reentrant *)self;
    if (e != eMemoryAvailableLow || r->calls++)
        return S_OK;
    void *p;
    DWORD old, load;
    SIZE_T avail;
    r->results[0] = IHostMemoryManager_VirtualFree(r->m, r->base, 8 * P, MEM_DECOMMIT);
    r->results[1] = IHostMemoryManager_VirtualAlloc(r->m, r->base, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    r->results[2] = IHostMemoryManager_VirtualProtect(r->m, r->base, P, PAGE_READONLY, &old);
    r->results[3] = IHostMemoryManager_GetMemoryLoad(r->m, &load, &avail);
    return S_OK;
}
static ULONG STDMETHODCALLTYPE re_ref(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 1;
}
static const ICLRMemoryNotificationCallbackVtbl reentrant_vtbl = {rt_query, re_ref, re_ref, re_notify};

/* docs/policy.md, issue 13: a callback that registers again from inside its
 * notification - itself, or another callback and then itself - is told each
 * transition once; the call that caused it returns. (Bounded at 10 so that a
 * broken build fails instead of hanging.) */
struct reregister {
    ICLRMemoryNotificationCallback iface;
    IHostMemoryManager *m;
    ICLRMemoryNotificationCallback *other;
    _Atomic int count;
};
static HRESULT STDMETHODCALLTYPE rr_query(ICLRMemoryNotificationCallback *self, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = self;
    return S_OK;
}
static ULONG STDMETHODCALLTYPE rr_add_ref(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 2;
}
static ULONG STDMETHODCALLTYPE rr_release(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 1;
}
static HRESULT STDMETHODCALLTYPE rr_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable e)
{
    struct reregister *r = (struct reregister *)self;
    (void)e;
    if (atomic_fetch_add(&r->count, 1) < 10) {
        if (r->other)
            IHostMemoryManager_RegisterMemoryNotificationCallback(r->m, r->other);
        IHostMemoryManager_RegisterMemoryNotificationCallback(r->m, self);
    }
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl reregister_vtbl = {rr_query, rr_add_ref, rr_release, rr_notify};

TEST(notifications_reregistering_from_the_callback_is_told_once)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 10 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime other;
    runtime_init(&other);
    struct reregister same = {{&reregister_vtbl}, m, NULL, 0};
    struct reregister swap = {{&reregister_vtbl}, m, &other.iface, 0};
    char *b = reserve(m, 10 * P);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &same.iface), S_OK);
    CHECK_HR(commit(m, b, 9 * P, eTaskCritical), S_OK); /* 90%: Low */
    CHECK_EQ(atomic_load(&same.count), 1);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, 9 * P, MEM_DECOMMIT), S_OK); /* High */
    CHECK_EQ(atomic_load(&same.count), 2);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &swap.iface), S_OK);
    CHECK_HR(commit(m, b, 9 * P, eTaskCritical), S_OK); /* Low again */
    CHECK_EQ(atomic_load(&swap.count), 1);
    CHECK_EQ(atomic_load(&other.count), 0); /* registered inside: told nothing twice */
    CHECK_EQ(stats_of(m).notifications[eMemoryAvailableLow], 2);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

TEST(notifications_callback_may_call_back_into_the_manager)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 10 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct reentrant r = {{&reentrant_vtbl}, m, reserve(m, 16 * P), {E_FAIL, E_FAIL, E_FAIL, E_FAIL}, 0};
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &r.iface), S_OK);
    CHECK_HR(commit(m, r.base, 10 * P, eTaskCritical), S_OK); /* 100%: Low */
    CHECK_EQ(r.calls, 1);
    for (int i = 0; i < 4; i++)
        CHECK_HR(r.results[i], S_OK);
    CHECK_EQ(stats_of(m).committed_bytes, 3 * P);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- fixtures: /proc and /sys/fs/cgroup under a test root ------------------------------------- */
static char fixture_root[256];

static void put(const char *relative, const char *text)
{
    char path[512], dir[512];
    snprintf(path, sizeof path, "%s%s", fixture_root, relative);
    snprintf(dir, sizeof dir, "%s", path);
    for (char *s = dir + strlen(fixture_root) + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(dir, 0755);
            *s = '/';
        }
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void fixture_reset(void)
{
    char command[1024];
    snprintf(command, sizeof command, "rm -rf '%s' && mkdir -p '%s'", fixture_root, fixture_root);
    if (system(command) != 0)
        fprintf(stderr, "cannot reset %s\n", fixture_root);
}

/* §7 budget default: the cgroup's limit (v2 memory.max, the smallest on the path up;
 * v1 memory.limit_in_bytes), read from a fixture root. */
TEST(cgroup_limit_read_from_fixture_v2_v1_and_none)
{
    hostmem_config c = {sizeof c};
    c.system_root = fixture_root;

    fixture_reset();
    put("/proc/self/cgroup", "0::/app/worker\n");
    put("/sys/fs/cgroup/app/worker/memory.max", "max\n");
    put("/sys/fs/cgroup/app/memory.max", "268435456\n");
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    CHECK_EQ(stats_of(m).commit_limit, 268435456);
    IHostMemoryManager_Release(m);

    fixture_reset();
    put("/proc/self/cgroup", "12:cpu,cpuacct:/x\n4:memory:/job\n0::/\n");
    put("/sys/fs/cgroup/memory/job/memory.limit_in_bytes", "134217728\n");
    put("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    m = make(&c);
    REQUIRE(m);
    CHECK_EQ(stats_of(m).commit_limit, 134217728);
    IHostMemoryManager_Release(m);

    /* an explicit limit wins; HOSTMEM_UNLIMITED means none */
    c.commit_limit = HOSTMEM_UNLIMITED;
    m = make(&c);
    REQUIRE(m);
    CHECK_EQ(stats_of(m).commit_limit, 0);
    IHostMemoryManager_Release(m);
    c.commit_limit = 0;

    fixture_reset();
    put("/proc/self/cgroup", "0::/\n");
    put("/sys/fs/cgroup/memory.max", "max\n");
    m = make(&c);
    REQUIRE(m);
    CHECK_EQ(stats_of(m).commit_limit, 0);
    IHostMemoryManager_Release(m);
}

/* §7 GetMemoryLoad: with a limit, committed/limit; without, /proc/meminfo; E_POINTER. */
TEST(get_memory_load_matches_counters_and_meminfo)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 200 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    char *b = reserve(m, 100 * P);
    CHECK_HR(commit(m, b, 50 * P, eTaskCritical), S_OK);
    DWORD load = 0;
    SIZE_T available = 0;
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(load, s.committed_bytes * 100 / s.commit_limit);
    CHECK_EQ(load, 25);
    CHECK_EQ(available, s.commit_limit - s.committed_bytes);
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, NULL, &available), E_POINTER);
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, &load, NULL), E_POINTER);
    IHostMemoryManager_Release(m);

    fixture_reset();
    put("/proc/self/cgroup", "0::/\n");
    put("/proc/meminfo", "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     250000 kB\n");
    hostmem_config d = {sizeof d};
    d.system_root = fixture_root;
    m = make(&d);
    REQUIRE(m);
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, &load, &available), S_OK);
    CHECK_EQ(load, 75);
    CHECK_EQ(available, 250000ull * 1024);
    IHostMemoryManager_Release(m);
}

/* §7 notifications: the whole machine running short (MemAvailable, PSI) is noticed, by
 * hostmem_poll_system and by the monitor thread. */
TEST(machine_pressure_notifications_by_poll_and_monitor)
{
    fixture_reset();
    put("/proc/self/cgroup", "0::/\n");
    put("/proc/meminfo", "MemTotal: 1000000 kB\nMemAvailable: 50000 kB\n");
    hostmem_config c = {sizeof c};
    c.system_root = fixture_root;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    struct runtime rt;
    runtime_init(&rt);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface), S_OK);
    CHECK_HR(hostmem_poll_system(m), S_OK); /* 95% used: Low */
    CHECK_EQ(atomic_load(&rt.count), 1);
    CHECK_EQ(rt.events[0], eMemoryAvailableLow);
    CHECK_HR(hostmem_poll_system(m), S_OK); /* still Low: not sent again */
    CHECK_EQ(atomic_load(&rt.count), 1);
    put("/proc/meminfo", "MemTotal: 1000000 kB\nMemAvailable: 800000 kB\n");
    CHECK_HR(hostmem_poll_system(m), S_OK); /* 20%: High */
    CHECK_EQ(atomic_load(&rt.count), 2);
    CHECK_EQ(rt.events[1], eMemoryAvailableHigh);
    /* memory stalls (PSI) count as Low even with memory available */
    put("/proc/pressure/memory", "some avg10=25.00 avg60=10.00 avg300=2.00 total=1\nfull avg10=1.00 avg60=0 avg300=0 total=1\n");
    CHECK_HR(hostmem_poll_system(m), S_OK);
    CHECK_EQ(atomic_load(&rt.count), 3);
    CHECK_EQ(rt.events[2], eMemoryAvailableLow);
    IHostMemoryManager_Release(m);

    /* the monitor thread does the same by itself */
    put("/proc/pressure/memory", "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n");
    put("/proc/meminfo", "MemTotal: 1000000 kB\nMemAvailable: 10000 kB\n");
    c.monitor_interval_ms = 5;
    m = make(&c);
    REQUIRE(m);
    struct runtime rt2;
    runtime_init(&rt2);
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt2.iface), S_OK);
    CHECK(wait_event(&rt2));
    CHECK_EQ(rt2.events[0], eMemoryAvailableLow);
    IHostMemoryManager_Release(m);
    CHECK_EQ(atomic_load(&rt2.references), 1);
}

/* ---- the runtime's own address space --------------------------------------------------------- */

/* §7 address-space callbacks: tracked and counted, never touched; Needs gives back
 * cached address space and answers the address-space limit. */
TEST(address_space_callbacks_track_count_and_limit)
{
    hostmem_config c = {sizeof c};
    c.address_space_limit = (size_t)1 << 30;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    size_t mapped = 4 * P;
    char *own = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(own != MAP_FAILED);
    memset(own, 0x77, mapped);
    CHECK_HR(IHostMemoryManager_AcquiredVirtualAddressSpace(m, own, mapped), S_OK);
    CHECK_HR(IHostMemoryManager_AcquiredVirtualAddressSpace(m, own + P, P), E_INVALIDARG); /* overlap */
    CHECK_HR(IHostMemoryManager_AcquiredVirtualAddressSpace(m, NULL, P), E_INVALIDARG);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.external_bytes, mapped);
    CHECK_EQ(s.external_ranges, 1);
    /* it is not host memory: VirtualFree refuses it and nothing is touched */
    CHECK_HR(IHostMemoryManager_VirtualFree(m, own, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);

    /* the limit counts reservations and the runtime's own mappings */
    void *big;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, (size_t)512 << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &big),
             S_OK);
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, (size_t)600 << 20), E_OUTOFMEMORY);
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, (size_t)400 << 20), S_OK);
    void *p;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, (size_t)600 << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
             E_OUTOFMEMORY);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, big, 0, MEM_RELEASE), S_OK);

    /* Needs gives back the arenas no reservation uses */
    void *small = reserve(m, P);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, small, 0, MEM_RELEASE), S_OK);
    CHECK(stats_of(m).arenas >= 1);
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, P), S_OK);
    s = stats_of(m);
    CHECK_EQ(s.arenas, 0);
    CHECK_EQ(s.arena_bytes, 0);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, small, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_FREE);
    small = reserve(m, P); /* a new arena when needed */
    CHECK(small != NULL);

    CHECK_HR(IHostMemoryManager_ReleasedVirtualAddressSpace(m, own + P), HOST_E_INVALIDOPERATION);
    CHECK_HR(IHostMemoryManager_ReleasedVirtualAddressSpace(m, own), S_OK);
    CHECK_HR(IHostMemoryManager_ReleasedVirtualAddressSpace(m, own), HOST_E_INVALIDOPERATION);
    s = stats_of(m);
    CHECK_EQ(s.external_bytes, 0);
    CHECK_EQ(s.external_ranges, 0);
    for (size_t i = 0; i < mapped; i++)
        if ((unsigned char)own[i] != 0x77) {
            TEST_FAIL_AT("the runtime's own memory was touched at %zu", i);
            break;
        }
    munmap(own, mapped);
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- statistics ----------------------------------------------------------------------------- */

/* §8 statistics: the kernel-mapping figure bounds the kernel's own count from above,
 * and the other figures follow the operations. */
/* hostmem.h, issue 12: hostmem_stats counts the calls of every method, and of
 * each kind of VirtualAlloc and VirtualFree, with the ones that failed; the
 * heap's own page traffic is not the runtime's and is not counted. Calls from
 * several threads are all counted. */
struct counter_thread {
    IHostMemoryManager *m;
    int queries;
};
static void *count_queries(void *arg)
{
    struct counter_thread *t = arg;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    for (int i = 0; i < t->queries; i++)
        IHostMemoryManager_VirtualQuery(t->m, &info, &info, sizeof info, &n);
    return NULL;
}

TEST(stats_count_calls_and_failures_per_method)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = 256 * P;
    IHostMemoryManager *m = make(&c);
    REQUIRE(m);
    void *a, *b, *p;
    DWORD old, load;
    SIZE_T avail, n;
    MEMORY_BASIC_INFORMATION info;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &a), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &b), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, a, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, a, 32 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
             HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, a, P, MEM_RESET, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, a, P, 0, PAGE_READWRITE, eTaskCritical, &p), E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, a, P, PAGE_READONLY, &old), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, a, &info, sizeof info, &n), S_OK);
    CHECK_HR(IHostMemoryManager_GetMemoryLoad(m, &load, &avail), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, &load, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    IHostMalloc *heap;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    void *block;
    CHECK_HR(IHostMalloc_Alloc(heap, 100, eTaskCritical, &block), S_OK); /* the heap's VirtualAllocs are its own */
    CHECK_HR(IHostMalloc_Free(heap, block), S_OK);
    IHostMalloc_Release(heap);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], 6);
    CHECK_EQ(s.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC], 2);
    CHECK_EQ(s.calls[HOSTMEM_KIND_RESERVE], 2);
    CHECK_EQ(s.calls[HOSTMEM_KIND_COMMIT], 2);
    CHECK_EQ(s.call_failures[HOSTMEM_KIND_COMMIT], 1);
    CHECK_EQ(s.calls[HOSTMEM_KIND_RESET], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_FREE], 4);
    CHECK_EQ(s.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE], 1);
    CHECK_EQ(s.calls[HOSTMEM_KIND_DECOMMIT], 1);
    CHECK_EQ(s.calls[HOSTMEM_KIND_RELEASE], 3);
    CHECK_EQ(s.call_failures[HOSTMEM_KIND_RELEASE], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_GET_MEMORY_LOAD], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_CREATE_MALLOC], 1);
    CHECK_EQ(s.calls[HOSTMEM_METHOD_REGISTER_CALLBACK], 0);
    /* several threads, each on its own shard or not: every call counted */
    struct counter_thread t[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct counter_thread){m, 10000};
        REQUIRE(pthread_create(&th[i], NULL, count_queries, &t[i]) == 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK_EQ(stats_of(m).calls[HOSTMEM_METHOD_VIRTUAL_QUERY], 1 + 40000);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

TEST(stats_follow_operations_and_bound_kernel_mappings)
{
    IHostMemoryManager *m = make(NULL);
    REQUIRE(m);
    char *a = reserve(m, 64 * P), *b = reserve(m, 64 * P);
    void *p;
    DWORD old;
    CHECK_HR(commit(m, a + 4 * P, 8 * P, eTaskCritical), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, a + 6 * P, P, PAGE_READONLY, &old), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, b, 64 * P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), S_OK);
    size_t kernel = 0;
    CHECK_HR(hostmem_kernel_mappings(m, &kernel), S_OK);
    hostmem_stats s = stats_of(m);
    CHECK(s.kernel_mappings >= kernel);
    CHECK(s.kernel_mappings <= kernel + 4);
    CHECK_EQ(s.reservations, 2);
    CHECK_EQ(s.reserved_bytes, 128 * P);
    CHECK_EQ(s.committed_bytes, 72 * P);
    CHECK_EQ(s.peak_committed_bytes, 72 * P);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, a, 0, MEM_RELEASE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, b, 0, MEM_RELEASE), S_OK);
    s = stats_of(m);
    CHECK_EQ(s.kernel_mappings, s.arenas);
    CHECK_EQ(s.committed_bytes, 0);
    CHECK_EQ(s.peak_committed_bytes, 72 * P);
    /* an old, shorter struct gets only what it has room for */
    struct {
        size_t size, reserved, committed, peak, reservations, arenas, arena_bytes, guard;
    } old_stats = {offsetof(hostmem_stats, heap_bytes), 1, 1, 1, 1, 1, 1, 12345};
    CHECK_HR(hostmem_get_stats(m, (hostmem_stats *)&old_stats), S_OK);
    CHECK_EQ(old_stats.guard, 12345);
    CHECK_EQ(old_stats.committed, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

int main(void)
{
    P = hostmem_page_size();
    snprintf(fixture_root, sizeof fixture_root, "/tmp/hostmem-fixture-%d", (int)getpid());
    RUN(budget_task_critical_refused_at_once_nothing_changes);
    RUN(budget_process_critical_uses_emergency_reserve);
    RUN(budget_invalid_level_is_invalidarg);
    RUN(budget_appdomain_waits_and_succeeds_when_another_thread_frees);
    RUN(budget_appdomain_fails_after_bounded_wait_when_nobody_frees);
    RUN(budget_appdomain_runtime_frees_from_its_callback);
    RUN(budget_appdomain_refusal_notifies_low_from_any_load);
    RUN(budget_appdomain_no_wait_refuses_at_once_after_low);
    RUN(budget_limit_holds_under_racing_threads);
    RUN(notifications_fire_exactly_on_transitions_in_order);
    RUN(notifications_registration_replaces_and_counts_references);
    RUN(notifications_callback_may_call_back_into_the_manager);
    RUN(notifications_reregistering_from_the_callback_is_told_once);
    RUN(cgroup_limit_read_from_fixture_v2_v1_and_none);
    RUN(get_memory_load_matches_counters_and_meminfo);
    RUN(machine_pressure_notifications_by_poll_and_monitor);
    RUN(address_space_callbacks_track_count_and_limit);
    RUN(stats_follow_operations_and_bound_kernel_mappings);
    RUN(stats_count_calls_and_failures_per_method);
    fixture_reset();
    rmdir(fixture_root);
    return TEST_SUMMARY("test_policy");
}
