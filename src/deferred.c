/*
 * deferred.c - the books ahead of the hardware: pages whose state the books
 * already give while the kernel has yet to follow.
 *
 * Stale pages (the mapping ceiling): at vm.max_map_count the kernel refuses an
 * mprotect that would split a mapping. A decommit must not fail for that
 * (Windows' never does, and a runtime decommits when memory is short): its
 * pages are discarded and reserved in the books, but keep their hardware
 * protection as stale runs (ATTR_STALE), counted in book_protected, which get
 * reserved-page protection when the kernel allows it - before the next change
 * of their reservation, and after any VirtualFree that gave mappings back.
 *
 * Pending pages (the deferred discard): a decommit in strict mode makes its
 * pages inaccessible and uncharged at once, and leaves their discard for later
 * (pending runs, ATTR_PENDING): in batches, when more than purge_cap bytes
 * wait, when the oldest has waited purge_delay_ms (looked at after every
 * decommit and commit), when a commit is refused for memory or memory is Low,
 * on release, and on hostmem_purge. A recommit of a pending page zeroes it (or
 * discards it, if its new protection cannot be written) instead of taking a
 * fresh page's fault. Not for heap segments, compact mode (reserved pages are
 * readable there), write-watched reservations or huge pages.
 *
 * The reservations that hold either are remembered by base (struct
 * remembered), so that catching up visits them, not the whole map. Catching up
 * takes each reservation's lock like any writer, only after the call's own
 * lock is left. Must never: let a page read as reserved that the runtime can
 * still reach uncounted, or call into vm.c's rules.
 */
#include <string.h>
#include <time.h>

#include "deferred.h"
#include "watch.h"

/* ---- the remembered reservations ---------------------------------------------------- */

#define REMEMBERED (sizeof ((struct remembered *)0)->bases / sizeof(uintptr_t))

/* Remembers the reservation at base (its lock held). */
static void remember(struct remembered *set, uintptr_t base)
{
    for (size_t i = 0; i < REMEMBERED; i++)
        if (atomic_load_explicit(&set->bases[i], memory_order_relaxed) == base)
            return;
    for (size_t i = 0; i < REMEMBERED; i++) {
        uintptr_t empty = 0;
        if (atomic_compare_exchange_strong(&set->bases[i], &empty, base))
            return;
    }
    atomic_store(&set->overflow, true);
}

static void forget(struct remembered *set, uintptr_t base)
{
    for (size_t i = 0; i < REMEMBERED; i++) {
        uintptr_t expected = base; /* read first: a failing CAS would take the line all the same */
        if (atomic_load_explicit(&set->bases[i], memory_order_relaxed) == base)
            atomic_compare_exchange_strong(&set->bases[i], &expected, 0);
    }
}

/*
 * One kind of remembered reservation: visit does its part on the one at base
 * (true when it needs no more remembering: done, or gone); is_one says whether
 * a reservation the map walk found (with its address-map entry) is of the
 * kind. flag and work are marked_visit's.
 */
struct remembered_kind {
    bool (*visit)(struct manager *m, uintptr_t base, const struct remembered_kind *kind);
    bool (*is_one)(uintptr_t entry, const struct reservation *r);
    uint16_t flag;
    bool (*work)(struct manager *m, struct locked *l);
};

/* A live reservation with runs marked kind->flag (stale, pending): locked, and
 * if it is still marked, work does its part. */
static bool marked_visit(struct manager *m, uintptr_t base, const struct remembered_kind *kind)
{
    struct locked l;
    HRESULT hr = range_lock(m, base, S_FALSE, 0, &l);
    if (hr != S_OK)
        return hr == S_FALSE; /* gone (or a heap's: never marked), or the lock refused: later */
    bool done = l.base != base || !(l.r->flags & kind->flag) || kind->work(m, &l);
    range_unlock(m, &l, S_OK);
    return done;
}

static bool live_one(uintptr_t entry, const struct reservation *r)
{
    (void)r;
    return !entry_is_slack(entry) && !entry_is_heap(entry);
}

/* remembered_each's walk of the whole map, a reservation at a time. */
struct visit {
    struct manager *m;
    struct remembered *set;
    const struct remembered_kind *kind;
};

static int visit_step(void *context, uintptr_t at, uintptr_t entry, struct reservation *r)
{
    struct visit *v = context;
    if (r && v->kind->is_one(entry, r) && !v->kind->visit(v->m, at, v->kind))
        remember(v->set, at);
    return 0;
}

/*
 * Has kind's visit do its part on the remembered reservations, then, if more
 * were than could be remembered and the remembered are all done, on every
 * reservation of m of that kind. No lock held.
 */
static void remembered_each(struct manager *m, struct remembered *set, const struct remembered_kind *kind)
{
    bool left = false;
    for (size_t i = 0; i < REMEMBERED; i++) {
        uintptr_t base = atomic_load_explicit(&set->bases[i], memory_order_relaxed);
        if (!base)
            continue;
        if (kind->visit(m, base, kind))
            atomic_compare_exchange_strong(&set->bases[i], &base, 0);
        else
            left = true;
    }
    if (left || !atomic_exchange(&set->overflow, false))
        return;
    struct visit v = {m, set, kind};
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;)
        arena_walk(m, a, visit_step, &v);
}

static const struct remembered_kind stale_slack_kind;


/* ---- stale pages ------------------------------------------------------------------- */

/* Pages of r in [lo, hi) whose run's attribute match says yes to. */
static size_t pages_where(const struct reservation *r, uint64_t lo, uint64_t hi,
                          bool (*match)(unsigned attr, bool compact), bool compact)
{
    struct runs_view w;
    reservation_view(r, &w);
    size_t pages = 0;
    for (uint32_t i = 0; i < w.n; i++) {
        uint64_t s = run_page(runs_view_get(&w, i)), e = runs_view_end(&w, i);
        if (!match(run_attr(runs_view_get(&w, i)), compact))
            continue;
        s = s > lo ? s : lo;
        e = e < hi ? e : hi;
        if (s < e)
            pages += e - s;
    }
    return pages;
}

static bool stale_unprotected(unsigned attr, bool compact)
{
    return (attr & ATTR_STALE) && protect_to_os(attr, compact) != protect_to_os(0, compact);
}

size_t stale_book_protected(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi)
{
    return (r->flags & RES_STALE) ? pages_where(r, lo, hi, stale_unprotected, res_compact(m, r)) : 0;
}

/* The stale runs' protection, one run at a time; a run the kernel still
 * refuses stays as it was. */
HRESULT stale_restore(struct manager *m, struct locked *l)
{
    hm_assert(lock_held(l->stripe->lock));
    struct reservation *r = l->r;
    bool compact = res_compact(m, r);
    int reserved = protect_to_os(0, compact);
    HRESULT result = S_OK;
    for (uint64_t from = 0;;) {
        struct runs_view w;
        reservation_view(r, &w);
        uint32_t i = 0;
        while (i < w.n && (runs_view_end(&w, i) <= from || !(run_attr(runs_view_get(&w, i)) & ATTR_STALE)))
            i++;
        if (i == w.n)
            break;
        uint64_t run = runs_view_get(&w, i), lo = run_page(run), hi = runs_view_end(&w, i);
        from = hi;
        uintptr_t spare[2];
        int err = reservation_prepare(&l->stripe->slab, r, reservation_count_after(r, lo, hi, 0), true, spare);
        if (err) { /* cannot happen: the runs only merge */
            hm_unreachable("a run buffer for fewer runs");
            return os_refused(m, err, "mmap of a run buffer");
        }
        if (protect_to_os(run_attr(run), compact) != reserved) {
            HRESULT hr = range_protect_back(m, l, l->base + (lo << g_page_shift), l->base + (hi << g_page_shift),
                                            reserved);
            if (hr != S_OK) {
                reservation_unprepare(&l->stripe->slab, spare);
                if (hr == E_FAIL)
                    return hr;
                result = hr;
                continue;
            }
        }
        size_t before = range_transitions(m, r, lo, hi), hidden = stale_book_protected(m, r, lo, hi);
        reservation_apply(&l->stripe->slab, r, lo, hi, 0, spare);
        struct watched *watched = watched_res(m, r);
        if (watched)
            mark_written(watched, lo, hi, false);
        counter_shift(&m->mapping_estimate, range_transitions(m, r, lo, hi) - before);
        counter_sub(&m->book_protected, hidden);
    }
    if (result == S_OK)
        r->flags &= ~RES_STALE;
    return result;
}

static bool stale_restored(struct manager *m, struct locked *l)
{
    return stale_restore(m, l) == S_OK;
}

/* The stale pages of every reservation get their protection where the kernel
 * allows it now. */
void stale_restore_remembered(struct manager *m)
{
    static const struct remembered_kind stale_kind = {marked_visit, live_one, RES_STALE, stale_restored};
    remembered_each(m, &m->stale, &stale_kind);
    remembered_each(m, &m->slack, &stale_slack_kind);
}

/* Discards the stale pieces only: committed pages may lie between them. */
struct discarding {
    int err;
};

static int discard_stale(void *context, const struct piece *piece)
{
    struct discarding *d = context;
    if (!(piece->attr & ATTR_STALE))
        return 0;
    d->err = os_discard((void *)piece->start, piece->end - piece->start);
    return d->err != 0;
}

HRESULT stale_discard(struct manager *m, struct locked *l, const struct survey *s)
{
    struct discarding d = {0};
    if (!range_pieces(l->r, l->base, s->stale_start, s->stale_end, discard_stale, &d))
        return S_OK;
    return os_refused(m, d.err, "madvise(MADV_DONTNEED) of stale pages");
}

/* ---- stale slack --------------------------------------------------------------------- */

size_t stale_slack_pages(struct manager *m, const struct reservation *r)
{
    struct runs_view w;
    reservation_view(r, &w);
    int slack = reserved_prot(m->compact);
    bool compact = res_compact(m, r);
    size_t pages = 0;
    for (uint32_t i = 0; i < w.n; i++)
        if (protect_to_os(run_attr(runs_view_get(&w, i)), compact) != slack)
            pages += runs_view_end(&w, i) - run_page(runs_view_get(&w, i));
    return pages;
}

void stale_slack_keep(struct manager *m, struct locked *l)
{
    hm_assert(lock_held(l->stripe->lock));
    struct reservation *r = l->r;
    res_set_alloc_protect(r, res_alloc_protect(r) | ALLOC_STALE_SLACK);
    arena_hide(m, r);
    counter_add(&m->book_protected, stale_slack_pages(m, r));
    counter_add(&m->stale_slacks, 1);
    remember(&m->slack, l->base);
    l->went_stale = true;
}

/* A standalone reservation's mapping, which the kernel would not unmap: out of
 * the address map before it goes (radix.c relies on it), back in if the kernel
 * still refuses. */
static bool stale_slack_unmap(struct manager *m, struct reservation *r, uintptr_t base)
{
    uintptr_t span = res_span(r), slack = radix_load(base);
    radix_store_range(base, base + span, 0, true);
    int err = os_unmap((void *)base, span);
    if (err) {
        os_refused(m, err, "munmap of stale slack");
        radix_store_range(base, base + span, slack, true);
    }
    return !err;
}

/* The stale slack at base, given slack protection and its granules back to
 * its arena, if the kernel allows now; true when it is gone (or was). */
static bool stale_slack_restore(struct manager *m, uintptr_t base)
{
    struct locked l;
    if (range_lock_stripe(m, base, &l) != S_OK)
        return false;
    struct reservation *r = arena_stale_slack_at(m, base);
    bool gone = !r || atomic_load_explicit(&r->base, memory_order_relaxed) != base;
    if (!gone) {
        uint64_t pages = res_pages(r);
        l.r = r;
        l.end = base + (pages << g_page_shift);
        size_t hidden = stale_slack_pages(m, r), mappings = range_transitions(m, r, 0, pages);
        /* one mprotect of the whole: it merges with the slack around, or is
         * refused whole; a standalone reservation's mapping goes whole */
        bool standalone = (r->flags & RES_STANDALONE) != 0;
        if (standalone ? stale_slack_unmap(m, r, base)
                       : range_protect_back(m, &l, l.base, l.end, reserved_prot(m->compact)) == S_OK) {
            struct watched *watched = watch_slot_of(m, r);
            res_set_alloc_protect(r, res_alloc_protect(r) & ~ALLOC_STALE_SLACK);
            counter_sub(&m->book_protected, hidden);
            counter_sub(&m->mapping_estimate, mappings);
            counter_sub(&m->stale_slacks, 1);
            arena_unreserve(m, r);
            watch_give_back(m, watched);
            gone = true;
        }
    }
    range_unlock(m, &l, S_OK);
    return gone;
}

static bool slack_visit(struct manager *m, uintptr_t base, const struct remembered_kind *kind)
{
    (void)kind;
    return stale_slack_restore(m, base);
}

static bool slack_one(uintptr_t entry, const struct reservation *r)
{
    return entry_is_slack(entry) && res_is_stale_slack(r);
}

static const struct remembered_kind stale_slack_kind = {slack_visit, slack_one, 0, NULL};

HRESULT stale_slack_clear(struct manager *m, uintptr_t start, uintptr_t end)
{
    for (uintptr_t g = granule_down(start); g < end;) {
        struct reservation *r = arena_stale_slack_at(m, g);
        if (!r) {
            g += g_granule;
            continue;
        }
        uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed);
        if (!stale_slack_restore(m, base))
            return E_OUTOFMEMORY; /* the kernel still refuses: nothing changed */
        forget(&m->slack, base);
        g = base + res_span(r);
    }
    return S_OK;
}

/* ---- pending pages ------------------------------------------------------------------- */

static bool is_pending(unsigned attr, bool compact)
{
    (void)compact;
    return attr == ATTR_PENDING;
}

size_t pending_in(const struct reservation *r, uint64_t lo, uint64_t hi)
{
    return (r->flags & RES_PENDING) ? pages_where(r, lo, hi, is_pending, false) : 0;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The process's last two decommitters, each (thread slot + 1) << 48 | the
 * millisecond of its last decommit: the last, and the one before it that was
 * another thread. A heuristic, read and written without a lock. */
static _Atomic uint64_t decommitter_last, decommitter_other;

bool pending_defers(const struct manager *m, const struct reservation *r)
{
    /* Only while one thread decommits: a deferred decommit's mprotect flushes
     * the other CPUs' TLBs holding the process's mmap_lock for writing, which
     * every other thread's mprotect then waits for; discarded first, the flush
     * is madvise's, under the mapping's own lock. Another thread's decommit
     * within the purge delay (10 ms by default) says two are at it. By time,
     * not by turns: a thread whose decommits wait cycles faster, and would
     * take more turns. */
    uint64_t me = (uint64_t)thread_slot_held << 48, ms = (now_ns() / 1000000u) & ((1ull << 48) - 1);
    uint64_t last = atomic_load_explicit(&decommitter_last, memory_order_relaxed);
    uint64_t other = atomic_load_explicit(&decommitter_other, memory_order_relaxed);
    if ((last & ~((1ull << 48) - 1)) != me) {
        other = last;
        atomic_store_explicit(&decommitter_other, last, memory_order_relaxed);
    }
    if (last != (me | ms))
        atomic_store_explicit(&decommitter_last, me | ms, memory_order_relaxed);
    bool alone = other == 0 || ms - (other & ((1ull << 48) - 1)) > m->purge_delay_ms;
    /* And only where a commit has followed a decommit: a waiting discard pays
     * off when its pages are committed again (no fault, no second TLB flush),
     * and costs a second flush when they are not - a reservation that is
     * decommitted and then released (the discard first, the mprotect then
     * finds no page to flush, and the release none to discard). */
    return alone && m->purge_delay_ms != UINT32_MAX && !m->compact && (r->flags & RES_RECOMMITS) &&
           !(r->flags & (RES_HEAP | RES_LARGE_PAGES | RES_WRITE_WATCH));
}

/* Discards the pending runs of a locked reservation; false when the kernel
 * refused one (it stays pending). */
static bool purge_locked(struct manager *m, struct locked *l)
{
    struct reservation *r = l->r;
    for (;;) {
        struct runs_view w;
        reservation_view(r, &w);
        uint32_t i = 0;
        while (i < w.n && run_attr(runs_view_get(&w, i)) != ATTR_PENDING)
            i++;
        if (i == w.n) {
            r->flags &= ~RES_PENDING;
            return true;
        }
        uint64_t lo = run_page(runs_view_get(&w, i)), hi = runs_view_end(&w, i);
        uintptr_t spare[2];
        int err = reservation_prepare(&l->stripe->slab, r, reservation_count_after(r, lo, hi, 0), true, spare);
        if (!err)
            err = os_discard((void *)(l->base + (lo << g_page_shift)), (size_t)(hi - lo) << g_page_shift);
        if (err) {
            os_refused(m, err, "madvise(MADV_DONTNEED) of pending pages");
            reservation_unprepare(&l->stripe->slab, spare);
            return false;
        }
        size_t waiting = pending_in(r, lo, hi); /* the hardware does not change: reserved either way */
        reservation_apply(&l->stripe->slab, r, lo, hi, 0, spare);
        counter_sub(&m->pending_pages, waiting);
    }
}

void deferred_purge(struct manager *m)
{
    if (!atomic_load_explicit(&m->pending_pages, memory_order_relaxed))
        return;
    static const struct remembered_kind pending_kind = {marked_visit, live_one, RES_PENDING, purge_locked};
    remembered_each(m, &m->pending, &pending_kind);
    if (!atomic_load_explicit(&m->pending_pages, memory_order_relaxed))
        atomic_store_explicit(&m->pending_since, 0, memory_order_relaxed);
}

/* The pending discards are due when more wait than the cap allows, the oldest
 * has waited the delay, or memory is Low. */
void deferred_purge_due(struct manager *m)
{
    size_t pages = atomic_load_explicit(&m->pending_pages, memory_order_relaxed);
    uint64_t since = atomic_load_explicit(&m->pending_since, memory_order_relaxed);
    if ((pages << g_page_shift) > m->purge_cap ||
        (since && now_ns() - since >= (uint64_t)m->purge_delay_ms * 1000000u) ||
        atomic_load_explicit(&m->policy.delivered, memory_order_relaxed) == eMemoryAvailableLow)
        deferred_purge(m);
}

/* pending_zero, a piece at a time. */
struct zeroing {
    bool writable;
    int err;
};

static int zero_pending(void *context, const struct piece *piece)
{
    struct zeroing *z = context;
    if (piece->attr != ATTR_PENDING)
        return 0;
    if (z->writable)
        memset((void *)piece->start, 0, piece->end - piece->start);
    else if ((z->err = os_discard((void *)piece->start, piece->end - piece->start)) != 0)
        return 1;
    return 0;
}

int pending_zero(struct locked *l, uintptr_t start, uintptr_t end, bool writable)
{
    struct zeroing z = {writable, 0};
    range_pieces(l->r, l->base, start, end, zero_pending, &z);
    return z.err;
}

/* ---- marking and forgetting ---------------------------------------------------------- */

void deferred_note(struct manager *m, struct locked *l, unsigned applied)
{
    struct reservation *r = l->r;
    if (applied == ATTR_PENDING) {
        if (!(r->flags & RES_PENDING)) {
            r->flags |= RES_PENDING;
            remember(&m->pending, l->base);
        }
        if (!atomic_load_explicit(&m->pending_since, memory_order_relaxed)) {
            uint64_t zero = 0;
            atomic_compare_exchange_strong(&m->pending_since, &zero, now_ns());
        }
    } else if (applied == ATTR_STALE) {
        r->flags |= RES_STALE;
        remember(&m->stale, l->base);
        l->went_stale = true;
    }
}

void deferred_forget(struct manager *m, struct locked *l)
{
    struct reservation *r = l->r;
    if (r->flags & RES_STALE) {
        counter_sub(&m->book_protected, stale_book_protected(m, r, 0, res_pages(r)));
        forget(&m->stale, l->base);
    }
    if (r->flags & RES_PENDING) { /* discarded with the rest just now */
        counter_sub(&m->pending_pages, pending_in(r, 0, res_pages(r)));
        forget(&m->pending, l->base);
    }
}
