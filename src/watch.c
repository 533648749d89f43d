/*
 * watch.c - write watch, both ways, and its API (docs/writewatch.md):
 * GetWriteWatch and ResetWriteWatch for reservations made with
 * MEM_WRITE_WATCH.
 *
 * Kernel-tracked (the default where the kernel has it): the reservation's
 * pages are registered for userfaultfd write-protection, PAGEMAP_SCAN reports
 * and resets the written ones (seam operations in os_linux.c). Emulated
 * (HOSTMEM_EMULATE_WRITE_WATCH): a slot of the manager's holds a bit a page
 * (range.h), and a clean page's hardware lacks write, so that its first write
 * faults into guard.c, which marks it.
 *
 * This file owns the slots' lifetime, the kernel's registration, and what a
 * commit, decommit or protection change does to the written pages; vm.c calls
 * it at those steps. It must never decide a Win32 rule, and never leave a page
 * that was written reading as clean: where the kernel refuses, more pages read
 * as written than were, never fewer.
 */
#include <string.h>

#include "watch.h"

/* ---- the slots and the kernel's registration ------------------------------------------ */

/* A refused write-watch call: counted as every refusal; where the kernel has
 * no such tracking, ERROR_NOT_SUPPORTED rather than a shortage. */
static HRESULT watch_refused(struct manager *m, int err, const char *what)
{
    HRESULT hr = os_refused(m, err, what);
    if (err == ENOSYS || err == EPERM || err == EINVAL || err == ENOTTY || err == EOPNOTSUPP)
        return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
    return hr;
}

/* A slot for r's books, all pages clean and none captured. The written
 * pages' map holds every written page when the write watch is emulated; under
 * the kernel's tracking, only those the kernel reset without their being
 * reported (kernel_get). E_OUTOFMEMORY when the kernel refuses the maps'
 * memory or the manager's WATCHED_SLOTS are taken. */
static HRESULT watched_take(struct manager *m, struct reservation *r, uintptr_t base, uint64_t pages)
{
    size_t words = (size_t)((pages + 63) / 64);
    size_t bytes = words * sizeof(uint64_t) * 2;
    bytes = (bytes + g_page - 1) & ~(g_page - 1);
    void *map;
    int err = pages_alloc(m, bytes, &map);
    if (err)
        return os_refused(m, err, "mmap of write watch's page maps");
    for (size_t i = 0; i < WATCHED_SLOTS; i++) {
        uintptr_t free_ = 0;
        if (atomic_compare_exchange_strong(&m->watched[i].base, &free_, 1)) {
            struct watched *w = &m->watched[i];
            w->bits = map;
            w->captured = (_Atomic uint64_t *)map + words;
            w->bytes = bytes;
            r->watch_slot = (uint16_t)(i + 1);
            atomic_store_explicit(&w->base, base, memory_order_release);
            return S_OK;
        }
    }
    pages_free(m, map, bytes);
    return E_OUTOFMEMORY;
}

void watch_give_back(struct manager *m, struct watched *w)
{
    if (!w)
        return;
    void *map = (void *)w->bits; /* both maps: one pages_alloc, the written pages' first */
    size_t bytes = w->bytes;
    atomic_store_explicit(&w->base, 1, memory_order_release);
    w->bits = NULL;
    w->captured = NULL;
    pages_free(m, map, bytes);
    atomic_store_explicit(&w->base, 0, memory_order_release);
}

HRESULT watch_begin(struct manager *m, struct reservation *r, uintptr_t base, size_t bytes, bool emulate)
{
    if (emulate) {
        HRESULT hr = watched_take(m, r, base, bytes >> g_page_shift);
        if (hr != S_OK)
            return hr;
        r->flags |= RES_WRITE_WATCH | RES_WATCH_EMULATED;
        return S_OK;
    }
    int err = os_watch_add((void *)base, bytes, true);
    if (err)
        return watch_refused(m, err, "userfaultfd registration of a write-watched reservation");
    r->flags |= RES_WRITE_WATCH;
    return S_OK;
}

HRESULT watch_abandon(struct manager *m, struct reservation *r, uintptr_t base, size_t bytes, HRESULT hr)
{
    watch_give_back(m, watch_slot_of(m, r));
    r->watch_slot = 0;
    /* a standalone mapping goes whole, and its registration with it */
    if (kernel_watched(r) && !(r->flags & RES_STANDALONE)) {
        int err = os_watch_remove((void *)base, bytes);
        if (err)
            return os_refused_stuck(m, err, "userfaultfd unregistration of a new reservation");
    }
    return hr;
}

HRESULT watch_unregister(struct manager *m, struct locked *l)
{
    int err;
    /* back to plain arena slack, which may merge with its neighbours again */
    if (kernel_watched(l->r) && (err = os_watch_remove((void *)l->base, l->end - l->base)) != 0)
        return os_refused_stuck(m, err, "userfaultfd unregistration on release");
    return S_OK;
}

void watch_after_fork(struct manager *m, const struct reservation *r, uintptr_t base)
{
    /* The kernel registers no range of a child: tracking starts again, every
     * page the child has reading as written until it is reset (more than were
     * written, never fewer). A refusal leaves the reservation's write watch
     * answering ERROR_NOT_SUPPORTED. */
    if (kernel_watched(r) && res_pages(r)) {
        int err = os_watch_add((void *)base, res_pages(r) << g_page_shift, false);
        if (err)
            os_refused(m, err, "userfaultfd registration in a forked child");
    }
}

void watch_slots_after_fork(struct manager *m)
{
    for (size_t i = 0; i < WATCHED_SLOTS; i++) {
        struct watched *w = &m->watched[i];
        uintptr_t base = atomic_load_explicit(&w->base, memory_order_relaxed);
        if (base == 1) { /* a vanished thread was filling or emptying it */
            if (w->bits && w->bytes)
                pages_free(m, (void *)w->bits, w->bytes);
            w->bits = NULL;
            w->captured = NULL;
            atomic_store_explicit(&w->base, 0, memory_order_relaxed);
            continue;
        }
        if (!base)
            continue;
        /* a reservation a vanished thread was making took it */
        uintptr_t e = radix_load(base);
        struct reservation *r = e && entry_id(e) == m->id && !entry_is_slack(e) ? entry_pointer(e)
                                                                                : arena_stale_slack_at(m, base);
        if (!r || atomic_load_explicit(&r->base, memory_order_relaxed) != base || watch_slot_of(m, r) != w)
            watch_give_back(m, w);
    }
}

void watch_release_all(struct manager *m)
{
    for (size_t i = 0; i < WATCHED_SLOTS; i++)
        if (atomic_load_explicit(&m->watched[i].base, memory_order_relaxed) > 1)
            watch_give_back(m, &m->watched[i]);
}

/* ---- what changes of pages do to the written ones ---------------------------------------- */

/* watch_protect, a piece at a time: written pages get the full protection,
 * the others - and pages committed by this change, which nothing wrote yet -
 * the same without write. */
struct watched_change {
    struct manager *m;
    const struct watched *w;
    bool compact;
    unsigned attr;
    uintptr_t base, failed_end;
    int err;
};

static int watched_change_step(void *context, const struct piece *piece)
{
    struct watched_change *c = context;
    int full = protect_to_os(c->attr, c->compact);
    uint64_t i = (piece->start - c->base) >> g_page_shift, end = (piece->end - c->base) >> g_page_shift;
    bool fresh = !attr_visible(piece->attr); /* committed now: clean */
    while (i < end) {
        bool on = !fresh && written(c->w, i);
        uint64_t j = i + 1;
        while (j < end && !fresh && written(c->w, j) == on)
            j++;
        if (fresh || !(full & OS_PROT_WRITE))
            j = end;
        int prot = on ? full : full & ~OS_PROT_WRITE;
        c->err = os_protect((void *)(c->base + (i << g_page_shift)), (size_t)(j - i) << g_page_shift, prot);
        if (c->err) {
            c->failed_end = c->base + (j << g_page_shift);
            return 1;
        }
        i = j;
    }
    return 0;
}

HRESULT watch_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, unsigned attr)
{
    hm_assert(lock_held(l->stripe->lock));
    struct watched_change c = {m, watched_res(m, l->r), res_compact(m, l->r), attr, l->base, 0, 0};
    if (!c.w)
        return range_protect(m, l, start, end, protect_to_os(attr, c.compact));
    if (!range_pieces(l->r, l->base, start, end, watched_change_step, &c))
        return S_OK;
    return range_undo_protect(m, l, start, c.failed_end, os_refused(m, c.err, "mprotect"));
}

/* Emulated write watch: a page committed now starts clean (a stale one kept its
 * bit until now). */
static int forget_uncommitted(void *context, const struct piece *piece)
{
    struct watched *w = context;
    if (!attr_visible(piece->attr)) {
        uintptr_t base = atomic_load_explicit(&w->base, memory_order_relaxed);
        mark_written(w, (piece->start - base) >> g_page_shift, (piece->end - base) >> g_page_shift, false);
    }
    return 0;
}

void watch_changed(struct manager *m, struct locked *l, const struct survey *s, uintptr_t start, uintptr_t end,
                   unsigned attr, unsigned applied)
{
    struct reservation *r = l->r;
    /* Windows forgets the writes to decommitted pages; a discarded page must
     * not read as written when it is read again (a refused clean leaves the
     * pages reading as written: more than were, never fewer) */
    int err;
    if (!attr && s->committed_pages && kernel_watched(r) &&
        (err = os_watch_clean((void *)s->committed_start, s->committed_end - s->committed_start)) != 0)
        os_refused(m, err, "userfaultfd write-protection of decommitted pages");
    struct watched *books = watch_slot_of(m, r);
    if (!attr && books && kernel_watched(r)) /* the kernel's written pages the books keep: forgotten too */
        mark_written(books, (start - l->base) >> g_page_shift, (end - l->base) >> g_page_shift, false);
    struct watched *watched = watched_res(m, r);
    if (!watched || applied == ATTR_STALE)
        return; /* a stale page keeps its bit, which its hardware still follows */
    /* decommitted pages are forgotten, committed ones start clean */
    if (!attr)
        mark_written(watched, (start - l->base) >> g_page_shift, (end - l->base) >> g_page_shift, false);
    else
        range_pieces(r, l->base, start, end, forget_uncommitted, watched);
}

/* ---- Windows' latch: a VirtualProtect captures the written pages ------------------------- */

HRESULT watch_capture_ready(struct manager *m, struct locked *l)
{
    hm_assert(lock_held(l->stripe->lock));
    if (!(l->r->flags & RES_WRITE_WATCH) || watch_slot_of(m, l->r))
        return S_OK;
    return watched_take(m, l->r, l->base, res_pages(l->r));
}

void watch_capture(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end)
{
    hm_assert(lock_held(l->stripe->lock));
    struct watched *w = watch_slot_of(m, l->r);
    if (!w)
        return;
    uint64_t first = (start - l->base) >> g_page_shift, last = (end - l->base) >> g_page_shift;
    bits_or(w->captured, w->bits, first, last); /* the written pages of the books */
    if (l->r->flags & RES_WATCH_EMULATED)
        return;
    /* and the kernel's: what it reports written, read without resetting it */
    void *found[64];
    for (uintptr_t at = start; at < end;) {
        size_t n = 0;
        int err = os_watch_scan((void *)at, end - at, false, found, 64, &n);
        if (err) { /* all of the rest reads as written: more than were, never fewer */
            os_refused(m, err, "PAGEMAP_SCAN of pages a VirtualProtect changed");
            bits_mark(w->captured, (at - l->base) >> g_page_shift, last, true);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            uint64_t page = ((uintptr_t)found[i] - l->base) >> g_page_shift;
            bits_mark(w->captured, page, page + 1, true);
        }
        if (n < 64)
            return;
        at = (uintptr_t)found[63] + g_page;
    }
}

/* ---- GetWriteWatch and ResetWriteWatch ----------------------------------------------------- */

/* Locks the write-watched reservation holding all of [base, base+size) and
 * gives its pages; ERROR_INVALID_PARAMETER for anything else, as Windows. */
static HRESULT watch_lock(struct manager *m, void *base, SIZE_T size, struct locked *l,
                          uintptr_t *start, uintptr_t *end)
{
    const HRESULT invalid = HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER);
    bool overflow = false;
    if (!base || !size)
        return invalid;
    *start = page_down((uintptr_t)base);
    *end = page_up_checked((uintptr_t)base, size, &overflow);
    if (overflow)
        return invalid;
    HRESULT hr = range_lock(m, *start, invalid, 0, l);
    if (hr != S_OK)
        return hr;
    if (*end > l->end || !(l->r->flags & RES_WRITE_WATCH))
        return range_unlock(m, l, invalid);
    return S_OK;
}

/* Emulated write watch: the written pages are the committed ones with their
 * bit set, and the captured ones, in order. */
struct dirty_scan {
    const struct watched *w;
    uintptr_t base;
    void **out;
    size_t max, n;
    uintptr_t last_end;
};

static int dirty_step(void *context, const struct piece *piece)
{
    struct dirty_scan *d = context;
    bool committed = attr_visible(piece->attr);
    uint64_t i = (piece->start - d->base) >> g_page_shift, end = (piece->end - d->base) >> g_page_shift;
    while (i < end) {
        uint64_t word = atomic_load_explicit(&d->w->captured[i / 64], memory_order_relaxed);
        if (committed)
            word |= atomic_load_explicit(&d->w->bits[i / 64], memory_order_relaxed);
        word >>= i % 64;
        if (!word) { /* none written in the rest of this word */
            i = (i / 64 + 1) * 64;
            continue;
        }
        i += (uint64_t)__builtin_ctzll(word);
        if (i >= end)
            break;
        if (d->n == d->max)
            return 1;
        d->out[d->n++] = (void *)(d->base + (i << g_page_shift));
        d->last_end = d->base + ((i + 1) << g_page_shift);
        i++;
    }
    return 0;
}

/* Emulated write watch: the written pages that may be written take write away
 * again (their bits are cleared after). On a refusal, what was changed is put
 * back. */
struct clean_step_context {
    bool compact;
    uintptr_t failed_end;
    int err;
};

/* One mprotect a committed piece that may be written, clean pages and all (as
 * Wine's reset does): it splits nothing inside the piece and merges what the
 * writes split. */
static int clean_step(void *context, const struct piece *piece)
{
    struct clean_step_context *c = context;
    int prot = protect_to_os(piece->attr, c->compact);
    if (attr_visible(piece->attr) && (prot & OS_PROT_WRITE)) {
        c->err = os_protect((void *)piece->start, piece->end - piece->start, prot & ~OS_PROT_WRITE);
        if (c->err) {
            c->failed_end = piece->end;
            return 1;
        }
    }
    return 0;
}

/* Emulated write watch: every committed page of [start,end) clean again, its
 * write permission taken so that the next write faults. Nothing changed on a
 * refusal. */
static HRESULT watch_clean_emulated(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end)
{
    struct reservation *r = l->r;
    struct watched *w = watched_res(m, r);
    if (!w)
        return S_OK;
    uint64_t first = (start - l->base) >> g_page_shift, last = (end - l->base) >> g_page_shift;
    size_t before = range_transitions(m, r, first, last);
    struct clean_step_context c = {res_compact(m, r), 0, 0};
    if (range_pieces(r, l->base, start, end, clean_step, &c))
        return range_undo_protect(m, l, start, c.failed_end, os_refused(m, c.err, "mprotect"));
    mark_written(w, first, last, false);
    bits_mark(w->captured, first, last, false);
    counter_shift(&m->mapping_estimate, range_transitions(m, r, first, last) - before);
    return S_OK;
}

/* Kernel-tracked write watch: word i of the pages its books report - captured,
 * or written and reset by the kernel before they were reported. */
static uint64_t books_word(const struct watched *w, uint64_t i)
{
    return atomic_load_explicit(&w->captured[i], memory_order_relaxed) |
           atomic_load_explicit(&w->bits[i], memory_order_relaxed);
}

/* The page of the books at or after page i and below end; end if none. */
static uint64_t books_next(const struct watched *w, uint64_t i, uint64_t end)
{
    while (i < end) {
        uint64_t word = books_word(w, i / 64) >> (i % 64);
        if (word) {
            i += (uint64_t)__builtin_ctzll(word);
            return i < end ? i : end;
        }
        i = (i / 64 + 1) * 64;
    }
    return end;
}

/* The last page of the books below page i and at or after lo; UINT64_MAX if none. */
static uint64_t books_prev(const struct watched *w, uint64_t i, uint64_t lo)
{
    while (i > lo) {
        uint64_t top = i - 1, bit = top % 64;
        uint64_t word = books_word(w, top / 64) & (bit == 63 ? ~(uint64_t)0 : ((uint64_t)2 << bit) - 1);
        if (word) {
            uint64_t page = top - bit + 63 - (uint64_t)__builtin_clzll(word);
            return page >= lo ? page : UINT64_MAX;
        }
        i = top - bit;
    }
    return UINT64_MAX;
}

/*
 * The kernel's tracking: the pages it reports written, and those of the books,
 * in order, at most max, into out. The kernel's go into out first; the first
 * max of the two lists together are then written from the back, so that no
 * page of the kernel's is overwritten before it is read. With reset, the
 * pages answered are reset in both; a page the kernel reset but that did not
 * fit goes into the books' written pages, so that it is still reported - and,
 * as any written page, forgotten by a decommit, captured by a VirtualProtect.
 */
static HRESULT kernel_get(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, bool reset,
                          void **out, size_t max, size_t *found)
{
    size_t k = 0;
    int err = os_watch_scan((void *)start, end - start, reset, out, max, &k);
    if (err)
        return watch_refused(m, err, "PAGEMAP_SCAN");
    struct watched *w = watch_slot_of(m, l->r);
    if (!w) {
        *found = k;
        return S_OK;
    }
#define PAGE_OF(address) (((uintptr_t)(address) - l->base) >> g_page_shift)
    uint64_t lo = PAGE_OF(start), hi = PAGE_OF(end), c = books_next(w, lo, hi), cut = lo;
    size_t n = 0, used = 0; /* answers, and the kernel's among them */
    while (n < max) {
        uint64_t kp = used < k ? PAGE_OF(out[used]) : hi;
        uint64_t page = kp < c ? kp : c;
        if (page == hi)
            break;
        used += kp == page;
        if (c == page)
            c = books_next(w, c + 1, hi);
        n++;
        cut = page + 1;
    }
    for (size_t i = used; reset && i < k; i++) /* reset by the kernel, not answered */
        bits_mark(w->bits, PAGE_OF(out[i]), PAGE_OF(out[i]) + 1, true);
    uint64_t cp = books_prev(w, cut, lo);
    for (size_t pos = n, kk = used; pos-- > 0;) {
        uint64_t page;
        if (kk && (cp == UINT64_MAX || PAGE_OF(out[kk - 1]) >= cp)) {
            page = PAGE_OF(out[--kk]);
            if (page == cp)
                cp = books_prev(w, cp, lo);
        } else {
            page = cp;
            cp = books_prev(w, cp, lo);
        }
        out[pos] = (void *)(l->base + (page << g_page_shift));
    }
#undef PAGE_OF
    if (reset) {
        bits_mark(w->captured, lo, cut, false);
        bits_mark(w->bits, lo, cut, false);
    }
    *found = n;
    return S_OK;
}

HRESULT watch_get(struct manager *m, DWORD flags, void *base, SIZE_T size, void **addresses,
                           uintptr_t *count, ULONG *granularity)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    if (flags & ~(DWORD)WRITE_WATCH_FLAG_RESET)
        return HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER);
    struct locked l;
    uintptr_t start, end;
    if ((hr = watch_lock(m, base, size, &l, &start, &end)) != S_OK)
        return hr;
    /* Windows' order: a zero count before the pointers' checks */
    if (!count)
        return range_unlock(m, &l, HRESULT_FROM_WIN32(ERROR_NOACCESS));
    if (!*count)
        return range_unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    if (!granularity || !addresses)
        return range_unlock(m, &l, HRESULT_FROM_WIN32(ERROR_NOACCESS));
    size_t found;
    if (l.r->flags & RES_WATCH_EMULATED) {
        struct dirty_scan d = {watched_res(m, l.r), l.base, addresses, *count, 0, 0};
        if (d.w)
            range_pieces(l.r, l.base, start, end, dirty_step, &d);
        found = d.n;
        if ((flags & WRITE_WATCH_FLAG_RESET) && found &&
            (hr = watch_clean_emulated(m, &l, start, d.last_end)) != S_OK)
            return range_unlock(m, &l, hr);
    } else if ((hr = kernel_get(m, &l, start, end, (flags & WRITE_WATCH_FLAG_RESET) != 0, addresses, *count,
                                &found)) != S_OK) {
        return range_unlock(m, &l, hr);
    }
    *count = found;
    *granularity = (ULONG)g_page;
    counter_add(&m->watch_gets, 1);
    counter_add(&m->watch_pages, found);
    if (flags & WRITE_WATCH_FLAG_RESET)
        counter_add(&m->watch_resets, 1);
    return range_unlock(m, &l, S_OK);
}

HRESULT watch_reset(struct manager *m, void *base, SIZE_T size)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    struct locked l;
    uintptr_t start, end;
    if ((hr = watch_lock(m, base, size, &l, &start, &end)) != S_OK)
        return hr;
    if (l.r->flags & RES_WATCH_EMULATED) {
        hr = watch_clean_emulated(m, &l, start, end);
    } else {
        int err = os_watch_clean((void *)start, end - start);
        hr = err ? watch_refused(m, err, "userfaultfd write-protection") : S_OK;
        struct watched *w = watch_slot_of(m, l.r);
        if (hr == S_OK && w) {
            uint64_t first = (start - l.base) >> g_page_shift, last = (end - l.base) >> g_page_shift;
            bits_mark(w->captured, first, last, false);
            mark_written(w, first, last, false);
        }
    }
    if (hr == S_OK)
        counter_add(&m->watch_resets, 1);
    return range_unlock(m, &l, hr);
}
