/*
 * lock.c - every internal lock goes through the host's synchronisation.
 *
 * The host supplies create/enter/leave/destroy (hostmem_lock_ops); without one,
 * POSIX mutexes are used: robust (an owner that dies is reported, not hung on)
 * and error-checking (an unlock by a non-owner is reported). The errno of the
 * mutex maps to the host's codes here and nowhere else:
 *   ETIMEDOUT -> HOST_E_TIMEOUT, EOWNERDEAD -> HOST_E_ABANDONED,
 *   EPERM (unlock) -> HOST_E_NOT_OWNER.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "internal.h"

/* The default locks' memory: a pool, not malloc (pool.c). */
static struct pool mutex_pool = POOL_INIT(sizeof(pthread_mutex_t));

/* The default create; *refused gets the errno when the pool's memory was refused. */
static HRESULT posix_create_err(void **lock, int *refused)
{
    void *fresh;
    int err = pool_alloc(&mutex_pool, &fresh);
    if (err) {
        *refused = err;
        return E_OUTOFMEMORY;
    }
    pthread_mutex_t *mutex = fresh;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    err = pthread_mutex_init(mutex, &attr);
    pthread_mutexattr_destroy(&attr);
    if (err) {
        pool_free(&mutex_pool, mutex);
        return E_OUTOFMEMORY;
    }
    *lock = mutex;
    return S_OK;
}

static HRESULT posix_create(void *context, void **lock)
{
    (void)context;
    int refused = 0;
    return posix_create_err(lock, &refused);
}

static HRESULT posix_enter(void *context, void *lock, DWORD timeout_ms)
{
    (void)context;
    pthread_mutex_t *mutex = lock;
    int err;
    if (timeout_ms == HOSTMEM_INFINITE) {
        err = pthread_mutex_lock(mutex);
    } else {
        /* pthread_mutex_timedlock measures CLOCK_REALTIME; clocklock would take
         * CLOCK_MONOTONIC but is invisible to ThreadSanitizer's interceptors. */
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        err = pthread_mutex_timedlock(mutex, &deadline);
    }
    switch (err) {
    case 0:
        return S_OK;
    case ETIMEDOUT:
        return HOST_E_TIMEOUT;
    case EOWNERDEAD:
        /* We own it now, but what it protected may be half-changed by the dead
         * owner: report, and leave the lock usable for the next caller. */
        pthread_mutex_consistent(mutex);
        pthread_mutex_unlock(mutex);
        return HOST_E_ABANDONED;
    case EDEADLK:
        return HOST_E_NOT_OWNER; /* already ours: a re-entrant call through a callback */
    default:
        return E_FAIL;
    }
}

static HRESULT posix_leave(void *context, void *lock)
{
    (void)context;
    int err = pthread_mutex_unlock(lock);
    if (err == 0)
        return S_OK;
    return err == EPERM ? HOST_E_NOT_OWNER : E_FAIL;
}

static void posix_destroy(void *context, void *lock)
{
    (void)context;
    pthread_mutex_destroy(lock);
    pool_free(&mutex_pool, lock);
}

const hostmem_lock_ops lock_posix_ops = {
    .context = NULL,
    .create = posix_create,
    .enter = posix_enter,
    .leave = posix_leave,
    .destroy = posix_destroy,
};

/* Builds with assertions keep the locks each thread holds through lock_enter,
 * so that functions can assert their lock-held preconditions (lock_held). A
 * release build never touches these. */
#define HELD_MAX 16
static __thread void *held[HELD_MAX];
static __thread unsigned held_count;

static void held_push(void *lock)
{
    hm_assert(held_count < HELD_MAX);
    if (held_count < HELD_MAX)
        held[held_count++] = lock;
}

static void held_pop(void *lock)
{
    for (unsigned i = held_count; i-- > 0;) {
        if (held[i] == lock) {
            held[i] = held[--held_count];
            return;
        }
    }
    hm_unreachable("a lock left that this thread did not enter");
}

bool lock_held(void *lock)
{
    for (unsigned i = 0; i < held_count; i++)
        if (held[i] == lock)
            return true;
    return false;
}

HRESULT lock_create(struct manager *m, void **lock)
{
    if (m->lock_ops.create != posix_create)
        return m->lock_ops.create(m->lock_ops.context, lock);
    int refused = 0;
    HRESULT hr = posix_create_err(lock, &refused);
    return refused ? os_refused(m, refused, "mmap of the lock pool") : hr;
}

void lock_destroy(struct manager *m, void *lock)
{
    m->lock_ops.destroy(m->lock_ops.context, lock);
}

/* Around a fork (fork.c): entered through the host's own callbacks, so that a
 * host lock sees the fork too, without lock_enter's state check (a disabled
 * manager's locks are taken as well). */
bool lock_fork_enter(struct manager *m, void *lock)
{
    return m->lock_ops.enter(m->lock_ops.context, lock, m->timeout_ms) == S_OK;
}

/* Leaves a lock entered before the fork; in the child, a lock the host will not
 * let the only thread leave is replaced by a new one. */
void lock_fork_leave(struct manager *m, void **lock, bool child)
{
    if (m->lock_ops.leave(m->lock_ops.context, *lock) != S_OK && child)
        lock_create(m, lock);
}

HRESULT lock_enter(struct manager *m, void *lock)
{
    HRESULT hr = m->lock_ops.enter(m->lock_ops.context, lock, m->timeout_ms);
    if (hr == E_FAIL)
        return manager_fail(m, "lock enter failed");
    if (hr == S_OK && manager_check(m) != S_OK) {
        /* Disabled or shut down while we waited. */
        m->lock_ops.leave(m->lock_ops.context, lock);
        return HOST_E_CLRNOTAVAILABLE;
    }
    if (HOSTMEM_ASSERT >= 1 && hr == S_OK)
        held_push(lock);
    return hr;
}

HRESULT lock_leave(struct manager *m, void *lock)
{
    if (HOSTMEM_ASSERT >= 1)
        held_pop(lock);
    HRESULT hr = m->lock_ops.leave(m->lock_ops.context, lock);
    if (hr == E_FAIL)
        return manager_fail(m, "lock leave failed");
    return hr;
}
