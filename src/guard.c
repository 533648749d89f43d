/*
 * guard.c - one-shot guard pages and emulated write watch: the process's
 * SIGSEGV handler, and the change of books and hardware it makes.
 *
 * Installed once, by the first manager made with HOSTMEM_GUARD_PAGES or
 * HOSTMEM_EMULATE_WRITE_WATCH, on the
 * alternate stack when the thread has one, in front of whatever handler was
 * there. A fault on a guard page of such a manager clears that page's guard
 * (signal_change: books and hardware together, under the stripe's busy word,
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

#include "range.h"

/* ---- the change a fault makes ---------------------------------------------------------- */

/* What a fault on a page of a manager's led to. */
enum signal_outcome { SIGNAL_GUARD, SIGNAL_WRITTEN, SIGNAL_RETRY, SIGNAL_NOT_OURS, SIGNAL_CANNOT };

static bool writable(unsigned attr)
{
    unsigned base = attr & PROTECT_BASE_MASK;
    return base == PAGE_READWRITE || base == PAGE_EXECUTE_READWRITE;
}

/*
 * A fault on the page at page of m: the first access to a guard page clears its
 * guard (HOSTMEM_GUARD_PAGES), the first write to a clean page of an emulated
 * write-watched reservation marks it written; books and hardware together, as
 * Windows does. Runs in a SIGSEGV handler: no lock, no allocation but the
 * stripe's slab (its owner is whoever holds the busy word), only
 * async-signal-safe system calls. SIGNAL_RETRY when a writer or another handler
 * holds the stripe (the access faults again when retried, and finds it free);
 * SIGNAL_CANNOT when this very thread holds it (a signal interrupted it inside
 * hostmem) or the kernel refused the change; SIGNAL_NOT_OURS when the fault is
 * none of these (a real access violation). access: 0 read, 1 write, -1 unknown.
 */
static enum signal_outcome signal_change(struct manager *m, uintptr_t page, int access)
{
    uintptr_t e = radix_load(page);
    if (!e || entry_id(e) != m->id || entry_is_slack(e) || entry_is_heap(e))
        return SIGNAL_NOT_OURS;
    struct reservation *r = entry_pointer(e);
    struct run_snapshot view;
    if (reservation_read(r, e, page, &view) != 1)
        return SIGNAL_NOT_OURS;
    bool guard = (view.attr & PAGE_GUARD) && (m->flags & HOSTMEM_GUARD_PAGES);
    bool watch = !(view.attr & PAGE_GUARD) && access != 0 && writable(view.attr) &&
                 (m->flags & HOSTMEM_EMULATE_WRITE_WATCH);
    if (!guard && !watch) {
        /* Another thread's fault may have just made the page accessible (two
         * threads touching one guard page: one clears it, as on Windows): an
         * access the map allows now is retried. */
        int prot = protect_to_os(view.attr, m->compact);
        bool allowed = access == 1 ? (prot & OS_PROT_WRITE) != 0
                       : access == 0 ? (prot & OS_PROT_READ) != 0
                                     : (prot & OS_PROT_WRITE) != 0;
        return allowed ? SIGNAL_RETRY : SIGNAL_NOT_OURS;
    }
    struct stripe *stripe = stripe_of(m, view.base);
    long self = thread_id(), holder = 0;
    if (!atomic_compare_exchange_strong_explicit(&stripe->busy, &holder, self, memory_order_acquire,
                                                 memory_order_relaxed))
        return holder == self ? SIGNAL_CANNOT : SIGNAL_RETRY;
    enum signal_outcome outcome = SIGNAL_RETRY; /* changed meanwhile: the access tells again */
    if (radix_load(page) == e && atomic_load_explicit(&r->base, memory_order_relaxed) == view.base) {
        struct runs_view w;
        reservation_view(r, &w);
        uint64_t index = (page - view.base) >> g_page_shift;
        unsigned attr = 0;
        uint64_t run_first = 0, run_end = w.pages;
        for (uint32_t i = 0; i < w.n && run_page(runs_view_get(&w, i)) <= index; i++) {
            attr = run_attr(runs_view_get(&w, i));
            run_first = run_page(runs_view_get(&w, i));
            run_end = runs_view_end(&w, i);
        }
        bool compact = res_compact(m, r);
        struct watched *watched = watched_res(m, r);
        if (guard && (attr & PAGE_GUARD)) {
            unsigned changed = attr & ~(unsigned)PAGE_GUARD;
            uintptr_t spare[2];
            outcome = SIGNAL_CANNOT;
            int err = reservation_prepare(&stripe->slab, r, reservation_count_after(r, index, index + 1, changed),
                                          false, spare);
            if (!err && (err = os_protect((void *)page, g_page, range_page_prot(watched, changed, compact, index))) != 0) {
                counter_add(&m->os_refusals, 1); /* os_refused describes on stderr: not here */
                reservation_unprepare(&stripe->slab, spare);
            }
            if (!err) {
                size_t before = range_transitions(m, r, index, index + 1);
                reservation_apply(&stripe->slab, r, index, index + 1, changed, spare);
                counter_shift(&m->mapping_estimate, range_transitions(m, r, index, index + 1) - before);
                outcome = SIGNAL_GUARD;
            }
        } else if (watch && watched && attr_visible(attr) && writable(attr) && !(attr & PAGE_GUARD)) {
            if (written(watched, index)) {
                outcome = SIGNAL_RETRY; /* another thread marked it meanwhile */
            } else {
                int full = protect_to_os(attr, compact);
                uint64_t lo = index, hi = index + 1;
                size_t before = range_transitions(m, r, lo, hi);
                int err = os_protect((void *)page, g_page, full);
                if (err) {
                    /* At the mapping ceiling one page cannot have a mapping of
                     * its own. A write still must not fail: the clean stretch
                     * around it is marked written (more pages reported than
                     * were written, never fewer), a change of a whole mapping,
                     * which splits none. A guard is never cleared so. */
                    counter_add(&m->os_refusals, 1);
                    while (lo > run_first && !written(watched, lo - 1))
                        lo--;
                    while (hi < run_end && !written(watched, hi))
                        hi++;
                    before = range_transitions(m, r, lo, hi);
                    err = os_protect((void *)(view.base + (lo << g_page_shift)), (size_t)(hi - lo) << g_page_shift,
                                     full);
                    if (err)
                        counter_add(&m->os_refusals, 1);
                }
                outcome = SIGNAL_CANNOT;
                if (!err) {
                    mark_written(watched, lo, hi, true);
                    counter_shift(&m->mapping_estimate, range_transitions(m, r, lo, hi) - before);
                    outcome = SIGNAL_WRITTEN;
                }
            }
        } else {
            /* a guard another thread cleared meanwhile: the access tells again;
             * otherwise a real access violation */
            outcome = guard ? SIGNAL_RETRY : SIGNAL_NOT_OURS;
        }
    }
    atomic_store_explicit(&stripe->busy, 0, memory_order_release);
    return outcome;
}

/* ---- the handler ----------------------------------------------------------------------- */

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

/* Back to the signal mask a handler installed with extra would run under: the
 * mask when the fault came, with sig (unless the flags say SA_NODEFER) and
 * extra. The kernel restores the fault's own when the handler returns. */
static void unmask_as(int sig, const void *context, const sigset_t *extra, int flags)
{
    sigset_t mask = ((const ucontext_t *)context)->uc_sigmask;
    if (extra)
        for (int s = 1; s < NSIG; s++)
            if (sigismember(extra, s) == 1)
                sigaddset(&mask, s);
    if (!(flags & SA_NODEFER))
        sigaddset(&mask, sig);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
}

/* The fault is not hostmem's to handle: the handler before it takes it, or the
 * default action (set, and the signal raised again, so that an access that
 * now succeeds still dies as it would have). */
static void pass_on(int sig, siginfo_t *info, void *context, bool raise_again)
{
    if ((previous.sa_flags & SA_SIGINFO) ? previous.sa_sigaction != NULL
                                         : previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN)
        unmask_as(sig, context, &previous.sa_mask, previous.sa_flags);
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
        switch (signal_change(m, page, access)) {
        case SIGNAL_GUARD: {
            hostmem_guard_fn fn = atomic_load_explicit(&m->guard_fn, memory_order_acquire);
            void *fn_context = atomic_load_explicit(&m->guard_context, memory_order_relaxed);
            if (fn)
                unmask_as(sig, context, NULL, 0);
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
    /* Every signal waits while hostmem changes books and hardware: a handler
     * that interrupted it and touched a guard page or a clean watched one
     * would find the stripe's busy word held by its own thread (a collector's
     * stop-the-world handler writes to the heap). The runtime's callback and
     * the previous handler run with the mask of the fault (unmask_as). */
    sigfillset(&mine.sa_mask);
    if (sigaction(SIGSEGV, &mine, &previous)) {
        int err = errno;
        atomic_store(&installed, 0);
        return err;
    }
    atomic_store(&installed, 2);
    return 0;
}
