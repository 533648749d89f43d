/*
 * fork.c - a process that forks while other threads are inside a manager.
 *
 * The child has only the forking thread. Anything another thread held at the
 * moment of fork - a lock, a change half-made - would stay held or half-made
 * in the child forever. So, as malloc does: before fork, the forking thread
 * enters every lock of every live manager (through the host's own lock
 * callbacks, which so get to act on fork too) in one order, outermost first;
 * after fork, the parent leaves them, and the child leaves them (re-creating a
 * host lock that refuses the leave), then puts right what threads that are
 * gone were making between locks (vm_after_fork, policy_after_fork). Then the
 * child may do everything (docs/host.md).
 *
 * The order: the registry; each manager's arena lock, stripe locks, callback
 * and external-range locks; the heaps' list and each heap's lock; the pools'
 * mutexes (leaves, last). No thread holds one of these while waiting for an
 * earlier one, so taking them in this order cannot deadlock.
 *
 * Reached only through pthread_atfork, installed once by the first
 * hostmem_create (fork_install); calls down only. A lock that cannot be entered before the fork (a host lock
 * that timed out) is left alone in the parent and disables that manager in
 * the child: its holder is gone, and what it guarded may be half-changed.
 */
#include <pthread.h>

#include "internal.h"

static void manager_prepare(struct manager *m)
{
    m->fork_stripes = 0;
    m->fork_others = 0;
    if (!m->locks_created)
        return;
    if (lock_fork_enter(m, m->arena_lock))
        m->fork_others |= 1;
    for (int i = 0; i < STRIPES; i++)
        if (lock_fork_enter(m, m->stripes[i].lock))
            m->fork_stripes |= (uint64_t)1 << i;
    range_fork_busy(m, true); /* and no SIGSEGV handler mid-change */
    if (m->policy.callback_lock && lock_fork_enter(m, m->policy.callback_lock))
        m->fork_others |= 2;
    if (m->policy.external_lock && lock_fork_enter(m, m->policy.external_lock))
        m->fork_others |= 4;
}

static void manager_finish(struct manager *m, bool child)
{
    if (!m->locks_created)
        return;
    uint8_t others = 1 | (m->policy.callback_lock ? 2 : 0) | (m->policy.external_lock ? 4 : 0);
    bool all = m->fork_others == others && m->fork_stripes == ~(uint64_t)0;
    if (m->fork_others & 4)
        lock_fork_leave(m, &m->policy.external_lock, child);
    if (m->fork_others & 2)
        lock_fork_leave(m, &m->policy.callback_lock, child);
    range_fork_busy(m, false);
    for (int i = STRIPES; i-- > 0;)
        if (m->fork_stripes >> i & 1)
            lock_fork_leave(m, &m->stripes[i].lock, child);
    if (m->fork_others & 1)
        lock_fork_leave(m, &m->arena_lock, child);
    if (child) {
        policy_after_fork(m);
        if (!all)
            manager_fail(m, "a lock was held across fork by a thread the child does not have");
        else if (!m->torn_down)
            vm_after_fork(m);
    }
}

static void manager_parent(struct manager *m)
{
    manager_finish(m, false);
}

static void manager_child(struct manager *m)
{
    manager_finish(m, true);
}

static void on_prepare(void)
{
    registry_fork_prepare(manager_prepare);
    heap_fork_prepare();
    pool_fork_prepare();
}

static void on_parent(void)
{
    pool_fork_finish();
    heap_fork_finish(false);
    registry_fork_finish(manager_parent);
}

static void on_child(void)
{
    pool_fork_finish();
    thread_slots_after_fork();
    heap_fork_finish(true);
    registry_fork_finish(manager_child);
}

/* ThreadSanitizer supports fork only without other threads, and its deadlock
 * detector cannot follow one thread holding more than 64 locks (it stops the
 * program): a ThreadSanitizer build of the library does without the handlers,
 * and the fork tests are skipped there (tests/test_host.c). */
#define FORK_HANDLERS (!HM_TSAN)

static void install(void)
{
    if (FORK_HANDLERS)
        pthread_atfork(on_prepare, on_parent, on_child);
}

static pthread_once_t installed = PTHREAD_ONCE_INIT;

void fork_install(void)
{
    pthread_once(&installed, install);
}
