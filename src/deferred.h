/*
 * deferred.h - the books ahead of the hardware (deferred.c): stale pages and
 * pending discards, as vm.c calls them; deferred_purge (hostmem_purge) is in
 * internal.h.
 */
#ifndef HOSTMEM_DEFERRED_H
#define HOSTMEM_DEFERRED_H

#include "range.h"

/* Pages of r in [lo, hi) protected only in the books (stale, hardware not
 * reserved-page protection), and waiting for their discard (pending). */
size_t stale_book_protected(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi) HIDDEN;
size_t pending_in(const struct reservation *r, uint64_t lo, uint64_t hi) HIDDEN;
/* Gives a locked reservation's stale runs reserved-page protection where the
 * kernel allows it now: S_OK when none is left, E_OUTOFMEMORY when some stay,
 * E_FAIL when a refusal could not be undone. */
HRESULT stale_restore(struct manager *m, struct locked *l) HIDDEN;
/* After a VirtualFree that gave mappings back; no lock held. The look at the
 * counter is inline: almost always there is nothing to do. */
void stale_restore_remembered(struct manager *m) HIDDEN;
static inline void stale_restore_all(struct manager *m)
{
    if (atomic_load_explicit(&m->book_protected, memory_order_relaxed) ||
        atomic_load_explicit(&m->stale_slacks, memory_order_relaxed))
        stale_restore_remembered(m);
}
/* Recommitted stale pages in the survey's range read zero: discarded first. */
HRESULT stale_discard(struct manager *m, struct locked *l, const struct survey *s) HIDDEN;
/* Would a decommit of r leave its discard for later? */
bool pending_defers(const struct manager *m, const struct reservation *r) HIDDEN;
/* Recommitted pending pages of [start,end) read zero: zeroed when writable, else
 * discarded. 0 or the refusal's errno. */
int pending_zero(struct locked *l, uintptr_t start, uintptr_t end, bool writable) HIDDEN;
/* A change left r with stale (ATTR_STALE) or pending (ATTR_PENDING) runs:
 * marked and remembered. */
void deferred_note(struct manager *m, struct locked *l, unsigned applied) HIDDEN;
/* r is being released: its stale and pending pages leave the counters, and it
 * is remembered no more. */
void deferred_forget(struct manager *m, struct locked *l) HIDDEN;
/* Stale slack: a release whose pages the kernel would not protect (the caller
 * discarded and uncharged them, and forgot their stale and pending runs) is
 * kept - out of the address map, its granules out of use, its pages counted
 * in book_protected - until the kernel allows. */
void stale_slack_keep(struct manager *m, struct locked *l) HIDDEN;
/* Its pages whose hardware is not slack protection. */
size_t stale_slack_pages(struct manager *m, const struct reservation *r) HIDDEN;
/* Before a reservation at an address: the stale slack in [start,end) given
 * slack protection and back to its arena. S_OK when none is left there,
 * E_OUTOFMEMORY when the kernel still refuses (nothing changed), or a lock's
 * failure. No lock held. */
HRESULT stale_slack_clear(struct manager *m, uintptr_t start, uintptr_t end) HIDDEN;

/* After a call that changed pages: the pending discards, if due. No lock held.
 * The look at the counter is inline, as stale_restore_all's. */
void deferred_purge_due(struct manager *m) HIDDEN;
static inline void deferred_purge_if_due(struct manager *m)
{
    if (atomic_load_explicit(&m->pending_pages, memory_order_relaxed))
        deferred_purge_due(m);
}

#endif /* HOSTMEM_DEFERRED_H */
