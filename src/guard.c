/*
 * guard.c - one-shot guard pages and emulated write watch: the process's
 * SIGSEGV handler.
 *
 * Installed once, by the first manager made with HOSTMEM_GUARD_PAGES or
 * HOSTMEM_EMULATE_WRITE_WATCH, on the
 * alternate stack when the thread has one, in front of whatever handler was
 * there. A fault on a guard page of such a manager clears that page's guard
 * (vm_signal_fire: books and hardware together, under the stripe's busy word,
 * never a lock), then the manager's callback decides: retry the access, or
 * raise the access violation Windows raises when nobody handles the guard
 * page's exception. The first write to a clean page of an emulated
 * write-watched reservation marks it written and goes on. Every other fault
 * goes to the previous handler untouched.
 *
 * Must never: lock, allocate (but the stripe's slab, whose owner it is while it
 * holds the busy word), or call anything that is not async-signal-safe.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

#include "internal.h"

static struct sigaction previous;   /* the handler hostmem's stands in front of */
static _Atomic int installed;       /* 0 no, 1 being installed, 2 yes */

/* 0 read, 1 write, -1 the machine does not say. */
static int access_kind(const void *context)
{
#if defined(__x86_64__)
    const ucontext_t *uc = context;
    return (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
    (void)context;
    return -1;
#endif
}

/* The fault is not hostmem's to handle: the handler before it takes it, or the
 * default action (set, and the signal raised again, so that an access that
 * now succeeds still dies as it would have). */
static void pass_on(int sig, siginfo_t *info, void *context, bool raise_again)
{
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) {
            previous.sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
        previous.sa_handler(sig);
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    if (raise_again)
        raise(sig); /* blocked until the handler returns, then the default action */
}

static void on_fault(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    uintptr_t page = page_down((uintptr_t)info->si_addr);
    uintptr_t e = radix_load(page);
    struct manager *m = e ? registry_find(entry_id(e)) : NULL;
    if (m && m->signals) {
        int access = access_kind(context);
        switch (vm_signal_fire(m, page, access)) {
        case SIGNAL_GUARD: {
            hostmem_guard_fn fn = atomic_load_explicit(&m->guard_fn, memory_order_acquire);
            void *fn_context = atomic_load_explicit(&m->guard_context, memory_order_relaxed);
            if (fn && fn(fn_context, (void *)page, access) == HOSTMEM_GUARD_RETRY) {
                errno = saved;
                return;
            }
            pass_on(sig, info, context, true);
            errno = saved;
            return;
        }
        case SIGNAL_WRITTEN: /* the write goes on, and is seen by GetWriteWatch */
            errno = saved;
            return;
        case SIGNAL_RETRY:
            sched_yield(); /* another thread holds the stripe: the access comes back */
            errno = saved;
            return;
        case SIGNAL_CANNOT:
        case SIGNAL_NOT_OURS:
            break;
        }
    }
    pass_on(sig, info, context, false);
    errno = saved;
}

int guard_install(void)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) {
        while (atomic_load(&installed) == 1)
            sched_yield();
        return atomic_load(&installed) == 2 ? 0 : EAGAIN;
    }
    struct sigaction mine;
    memset(&mine, 0, sizeof mine);
    mine.sa_sigaction = on_fault;
    mine.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&mine.sa_mask);
    if (sigaction(SIGSEGV, &mine, &previous)) {
        int err = errno;
        atomic_store(&installed, 0);
        return err;
    }
    atomic_store(&installed, 2);
    return 0;
}
