/*
 * test_suspend.c - SPEC §5 and issue 7 item 3: a thread stopped anywhere
 * inside the manager - holding a stripe lock, or half-way through publishing a
 * reservation's runs - does not stop VirtualQuery from another thread, which
 * still answers consistently; and with a lock timeout configured, operations
 * that need the stopped thread's lock return HOST_E_TIMEOUT instead of hanging.
 *
 * The worker is stopped by a signal whose handler waits on a semaphore, so it
 * stops at whatever instruction it was running, as a runtime's thread
 * suspension does. An alarm fails the test if anything hangs.
 */
#define COBJMACROS
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static size_t P;
static sem_t resume;
static _Atomic int stopped, quit;
static IHostMemoryManager *manager;
static char *region;

static void on_stop(int sig)
{
    (void)sig;
    atomic_store(&stopped, 1);
    while (sem_wait(&resume) != 0)
        ;
    atomic_store(&stopped, 0);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char text[] = "test_suspend: a call hung (alarm)\ntest_suspend: 0 passed, 1 failed\n";
    if (write(1, text, sizeof text - 1) < 0)
        _exit(1);
    _exit(1);
}

static void *worker(void *arg)
{
    (void)arg;
    void *p;
    DWORD old;
    while (!atomic_load(&quit)) {
        IHostMemoryManager_VirtualAlloc(manager, region + P, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        IHostMemoryManager_VirtualProtect(manager, region + 2 * P, P, PAGE_READONLY, &old);
        IHostMemoryManager_VirtualFree(manager, region + P, 2 * P, MEM_DECOMMIT);
    }
    return NULL;
}

/* SPEC §5: VirtualQuery never waits on a lock a suspended thread could hold;
 * SPEC §2: a lock wait times out with HOST_E_TIMEOUT. */
__attribute__((unused)) TEST(stopped_thread_inside_the_manager_query_answers_others_time_out)
{
    hostmem_config c = {sizeof c};
    c.lock_timeout_ms = 5;
    REQUIRE_HR(hostmem_create(&c, &manager), S_OK);
    void *base;
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(manager, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base),
               S_OK);
    region = base;
    sem_init(&resume, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGALRM, on_alarm);
    alarm(60);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    int rounds = getenv("HOSTMEM_ITERATIONS") ? 100 : 400, timeouts = 0, answered = 0, changed = 0;
    for (int i = 0; i < rounds; i++) {
        pthread_kill(t, SIGUSR1);
        while (!atomic_load(&stopped))
            ;
        /* the worker is stopped at an arbitrary instruction */
        for (int k = 0; k < 4; k++) {
            MEMORY_BASIC_INFORMATION info;
            SIZE_T n;
            HRESULT hr = IHostMemoryManager_VirtualQuery(manager, region + (size_t)k * P, &info, sizeof info, &n);
            if (hr != S_OK || info.AllocationBase != base || (info.State != MEM_COMMIT && info.State != MEM_RESERVE) ||
                info.RegionSize == 0 || info.RegionSize % P || (uintptr_t)info.BaseAddress != (uintptr_t)(region + k * P)) {
                TEST_FAIL_AT("round %d: VirtualQuery of page %d was not a consistent answer", i, k);
                break;
            }
            answered++;
        }
        /* an operation on the same reservation needs the worker's lock if it holds it */
        HRESULT hr = IHostMemoryManager_VirtualFree(manager, region + 8 * P, P, MEM_DECOMMIT);
        if (hr == HOST_E_TIMEOUT)
            timeouts++;
        else if (hr == S_OK)
            changed++;
        else
            TEST_FAIL_AT("round %d: VirtualFree -> 0x%08X", i, (unsigned)hr);
        /* an operation elsewhere does not wait for it */
        void *other;
        hr = IHostMemoryManager_VirtualAlloc(manager, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &other);
        if (hr == S_OK)
            IHostMemoryManager_VirtualFree(manager, other, 0, MEM_RELEASE);
        else if (hr != HOST_E_TIMEOUT)
            TEST_FAIL_AT("round %d: reserve elsewhere -> 0x%08X", i, (unsigned)hr);
        sem_post(&resume);
        while (atomic_load(&stopped))
            ;
    }
    atomic_store(&quit, 1);
    pthread_join(t, NULL);
    alarm(0);
    printf("test_suspend: %d stops, %d queries answered, %d timed out behind the stopped thread, %d went through\n",
           rounds, answered, timeouts, changed);
    CHECK(timeouts > 0);  /* the worker was stopped holding its lock at least once */
    CHECK(changed > 0);   /* and outside it at least once */
    char why[256];
    CHECK_HR(hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(manager), 0);
}

int main(void)
{
    P = hostmem_page_size();
#ifdef UNDER_TSAN
    SKIP(stopped_thread_inside_the_manager_query_answers_others_time_out,
         "ThreadSanitizer defers signals to safe points, so a thread cannot be stopped inside the manager");
#else
    RUN(stopped_thread_inside_the_manager_query_answers_others_time_out);
#endif
    return TEST_SUMMARY("test_suspend");
}
