/*
 * range.c - a locked reservation and a range of its pages: finding and
 * locking the reservation that holds an address, walking the runs of a range
 * (pieces, the survey), the hardware protection its pages must have, changing
 * that protection with its undo, and the kernel mappings it implies.
 *
 * The floor of the files that change reservations (range.h): vm.c's Win32 rules,
 * watch.c, deferred.c and guard.c's signal change all stand on it. It owns no
 * policy: it never decides what a page becomes, only finds, walks, protects
 * and counts. Every refused system call goes through os_refused; an undo that
 * fails is the road to E_FAIL (manager_fail).
 *
 * Locks: a reservation's writers hold its stripe lock. With signal changes on
 * (guard pages, emulated write watch), a SIGSEGV handler changes reservations
 * too, and it can take no lock: a stripe's reservations are changed by whoever
 * holds its busy word - a writer, after its lock, or a handler. Handlers hold
 * it for one page's change, so a writer waits on it by spinning.
 */
#include <sched.h>
#include <string.h>

#include "range.h"

/* The hardware protection of a run's attribute: reserved-page protection for
 * reserved and pending pages, the committed protection's for stale ones (what
 * their hardware kept). */
int protect_to_os(unsigned attr, bool compact)
{
    if (attr == 0 || attr == ATTR_PENDING)
        return reserved_prot(compact);
    if (attr & PAGE_GUARD)
        return OS_PROT_NONE;
    int prot;
    switch (attr & PROTECT_BASE_MASK) {
    case PAGE_READONLY:
        prot = OS_PROT_READ;
        break;
    case PAGE_READWRITE:
        prot = OS_PROT_READ | OS_PROT_WRITE;
        break;
    case PAGE_EXECUTE:
        /* readable too, as on Windows x86-64 (and Wine): PROT_EXEC alone is
         * execute-only, unreadable, on CPUs with protection keys */
        prot = OS_PROT_READ | OS_PROT_EXEC;
        break;
    case PAGE_EXECUTE_READ:
        prot = OS_PROT_READ | OS_PROT_EXEC;
        break;
    case PAGE_EXECUTE_READWRITE:
        prot = OS_PROT_READ | OS_PROT_WRITE | OS_PROT_EXEC;
        break;
    default:
        return OS_PROT_NONE;
    }
    return prot;
}

/* ---- finding and locking the reservation that holds an address --------------- */

static void busy_enter(struct stripe *stripe)
{
    long self = thread_id(), free_ = 0;
    while (!atomic_compare_exchange_weak_explicit(&stripe->busy, &free_, self, memory_order_acquire,
                                                  memory_order_relaxed)) {
        free_ = 0;
        sched_yield();
    }
}

/* fork.c: every stripe's busy word held across fork (take), then let go in
 * parent and child, so that no SIGSEGV handler of another thread is halfway
 * through a change when the process is copied. */
void range_fork_busy(struct manager *m, bool take)
{
    if (!m->signals)
        return;
    for (int i = 0; i < STRIPES; i++) {
        if (take)
            busy_enter(&m->stripes[i]);
        else
            busy_leave(&m->stripes[i]);
    }
}

HRESULT range_lock_stripe(struct manager *m, uintptr_t base, struct locked *out)
{
    struct stripe *stripe = stripe_of(m, base);
    HRESULT hr = lock_enter(m, stripe->lock);
    if (hr != S_OK)
        return hr;
    if (m->signals)
        busy_enter(stripe);
    *out = (struct locked){NULL, stripe, base, base, false};
    return S_OK;
}

/* range_lock past its first look: e is address's entry, one of m's. */
HRESULT range_lock_entry(struct manager *m, uintptr_t address, uintptr_t e, HRESULT not_ours, unsigned flags,
                         struct locked *out)
{
    for (;; e = radix_load(address)) {
        if (entry_id(e) != m->id || entry_is_slack(e) || !e)
            return not_ours;
        if (!entry_is_heap(e) != !(flags & VM_HEAP))
            return not_ours; /* heap segments are the heap's alone */
        struct reservation *r = entry_pointer(e);
        struct run_snapshot view;
        int seen = reservation_read(r, e, address, &view);
        if (seen == 0)
            continue; /* changed under us: look again */
        if (seen == 2)
            return not_ours; /* the unused tail of the last granule */
        struct stripe *stripe = stripe_of(m, view.base);
        HRESULT hr = lock_enter(m, stripe->lock);
        if (hr != S_OK)
            return hr;
        if (radix_load(address) == e && atomic_load_explicit(&r->base, memory_order_relaxed) == view.base) {
            out->r = r;
            out->stripe = stripe;
            out->went_stale = false;
            out->base = view.base;
            out->end = view.base + (res_pages(r) << g_page_shift);
            if (address >= out->end) {
                lock_leave(m, stripe->lock);
                return not_ours;
            }
            if (m->signals)
                busy_enter(stripe);
            return S_OK;
        }
        hr = lock_leave(m, stripe->lock);
        if (hr != S_OK)
            return hr;
    }
}

/* ---- walking the old runs of a range ------------------------------------------ */

/* Calls fn for every piece of a run inside [start, end). Returns non-zero if fn did. */
int range_pieces(const struct reservation *r, uintptr_t base, uintptr_t start, uintptr_t end,
                 int (*fn)(void *, const struct piece *), void *context)
{
    struct runs_view w;
    reservation_view(r, &w);
    for (uint32_t i = 0; i < w.n; i++) {
        uint64_t run = runs_view_get(&w, i);
        uintptr_t s = base + (run_page(run) << g_page_shift);
        uintptr_t e = base + (runs_view_end(&w, i) << g_page_shift);
        if (e <= start)
            continue;
        if (s >= end)
            break;
        struct piece piece = {s > start ? s : start, e < end ? e : end, run_attr(run)};
        if (fn(context, &piece))
            return 1;
    }
    return 0;
}

static int survey_step(void *context, const struct piece *piece)
{
    struct survey *s = context;
    if (!s->first_seen) {
        s->first_attr = piece->attr;
        s->first_seen = true;
    }
    if (protect_to_os(piece->attr, s->compact) != s->new_prot)
        s->prot_differs = true;
    if (!attr_visible(piece->attr)) {
        s->any_reserved = true;
        if (piece->attr & ATTR_STALE) {
            if (!s->stale_start)
                s->stale_start = piece->start;
            s->stale_end = piece->end;
        }
    } else {
        s->committed_pages += (piece->end - piece->start) >> g_page_shift;
        if (!s->committed_start)
            s->committed_start = piece->start;
        s->committed_end = piece->end;
    }
    return 0;
}

/* What [start,end) holds now, and whether moving every page to hardware
 * protection target changes any. */
void range_survey_to(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int target,
                     struct survey *s)
{
    memset(s, 0, sizeof *s);
    s->compact = res_compact(m, l->r);
    s->new_prot = target;
    range_pieces(l->r, l->base, start, end, survey_step, s);
    if (l->r->flags & RES_WATCH_EMULATED)
        s->prot_differs = true; /* the runs do not say which pages lack write */
}

void range_survey(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, unsigned new_attr,
                  struct survey *s)
{
    range_survey_to(m, l, start, end, protect_to_os(new_attr, res_compact(m, l->r)), s);
}

/* ---- the hardware the books imply ------------------------------------------------ */

/* How many boundaries p in [a, b] (a >= 1) lie between a written and a clean
 * page: a word at a time. */
static size_t bit_changes(const struct watched *w, uint64_t a, uint64_t b)
{
    size_t n = 0;
    for (uint64_t p = a; p <= b;) {
        uint64_t word = p / 64, from = p % 64, to = word == b / 64 ? b % 64 : 63;
        uint64_t x = atomic_load_explicit(&w->bits[word], memory_order_relaxed);
        uint64_t before = word ? atomic_load_explicit(&w->bits[word - 1], memory_order_relaxed) >> 63 : 0;
        uint64_t changes = x ^ (x << 1 | before); /* bit k: page 64*word+k differs from the one before */
        uint64_t mask = (to == 63 ? ~(uint64_t)0 : ((uint64_t)1 << (to + 1)) - 1) & (~(uint64_t)0 << from);
        n += (size_t)__builtin_popcountll(changes & mask);
        p = (word + 1) * 64;
    }
    return n;
}

/* The hardware protection of page i, of attribute attr: protect_to_os's, less
 * write for a page with emulated write watch not written since the last reset. */
int range_page_prot(const struct watched *w, unsigned attr, bool compact, uint64_t i)
{
    int prot = protect_to_os(attr, compact);
    if (w && attr && (prot & OS_PROT_WRITE) && !written(w, i))
        prot &= ~OS_PROT_WRITE;
    return prot;
}

/* A stretch of pages of one run and one hardware protection. */
struct segment {
    uintptr_t start, end;
    unsigned attr;
    int prot;
};

struct segments {
    int (*fn)(void *, const struct segment *);
    void *context;
    const struct watched *w;
    bool compact;
    uintptr_t base;
};

static int segments_step(void *context, const struct piece *piece)
{
    struct segments *c = context;
    int prot = protect_to_os(piece->attr, c->compact);
    if (!c->w || !piece->attr || !(prot & OS_PROT_WRITE)) {
        struct segment seg = {piece->start, piece->end, piece->attr, prot};
        return c->fn(c->context, &seg);
    }
    uint64_t i = (piece->start - c->base) >> g_page_shift, end = (piece->end - c->base) >> g_page_shift;
    while (i < end) {
        bool on = written(c->w, i);
        uint64_t j = i + 1;
        while (j < end && written(c->w, j) == on)
            j++;
        struct segment seg = {c->base + (i << g_page_shift), c->base + (j << g_page_shift), piece->attr,
                              on ? prot : prot & ~OS_PROT_WRITE};
        if (c->fn(c->context, &seg))
            return 1;
        i = j;
    }
    return 0;
}

/* Calls fn for every segment of [start,end): the pieces of its runs, split
 * where an emulated write watch's bits change the hardware protection. */
static int hw_segments(struct manager *m, const struct reservation *r, uintptr_t base, uintptr_t start,
                       uintptr_t end, int (*fn)(void *, const struct segment *), void *context)
{
    struct segments c = {fn, context, watched_res(m, r), res_compact(m, r), base};
    return range_pieces(r, base, start, end, segments_step, &c);
}

struct restore {
    struct manager *m;
    bool failed;
};

static int restore_step(void *context, const struct segment *seg)
{
    struct restore *r = context;
    int err = os_protect((void *)seg->start, seg->end - seg->start, seg->prot);
    if (err) {
        os_refused(r->m, err, "mprotect to undo a refused mprotect");
        r->failed = true;
    }
    return 0;
}

/* After a refused mprotect in [start,end): every page back to what the runs
 * (and the written pages' bits) say; E_OUTOFMEMORY, or E_FAIL (and the manager
 * is disabled) if even that fails. */
HRESULT range_undo_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, HRESULT hr)
{
    struct restore undo = {m, false};
    hw_segments(m, l->r, l->base, start, end, restore_step, &undo);
    if (undo.failed)
        return manager_fail(m, "mprotect failed and could not be undone");
    return hr;
}

/*
 * Sets the hardware protection of [start,end) to prot. On failure puts every
 * page back to what the runs say and returns E_OUTOFMEMORY, or E_FAIL (and the
 * manager is disabled) if even that fails.
 */
HRESULT range_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int prot)
{
    hm_assert(lock_held(l->stripe->lock));
    int err = os_protect((void *)start, end - start, prot);
    if (!err)
        return S_OK;
    return range_undo_protect(m, l, start, end, os_refused(m, err, "mprotect"));
}

HRESULT range_protect_back(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int prot)
{
    hm_assert(lock_held(l->stripe->lock));
    hm_assert(prot == reserved_prot(res_compact(m, l->r)) || prot == reserved_prot(m->compact));
    int err = os_protect((void *)start, end - start, prot);
    if (!err)
        return S_OK;
    HRESULT hr = os_refused(m, err, "mprotect");
    struct restore undo = {m, false};
    hw_segments(m, l->r, l->base, start, end, restore_step, &undo);
    return hr; /* undone, or as safe as undone: see range.h */
}

struct export_segments {
    int (*fn)(void *, uintptr_t, uintptr_t, int);
    void *context;
};

static int export_step(void *context, const struct segment *seg)
{
    struct export_segments *c = context;
    return c->fn(c->context, seg->start, seg->end, seg->prot);
}

int range_hw_segments(struct manager *m, const struct reservation *r,
                      int (*fn)(void *context, uintptr_t start, uintptr_t end, int prot), void *context)
{
    uintptr_t base = atomic_load_explicit(&((struct reservation *)r)->base, memory_order_relaxed);
    struct export_segments c = {fn, context};
    return hw_segments(m, r, base, base, base + (res_pages(r) << g_page_shift), export_step, &c);
}

/*
 * Kernel mappings the map implies, counted as changes of hardware protection
 * at page boundaries [lo, hi] of one reservation (boundary p lies between pages
 * p-1 and p; the pages outside the reservation count as reserved). Summed over
 * reservations, plus one per arena, it bounds the kernel's count from above.
 */
size_t range_transitions(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi)
{
    struct runs_view w;
    reservation_view(r, &w);
    /* arena slack around it; a write-watched reservation's pages are a mapping
     * of their own whatever the slack's protection */
    int outside = kernel_watched(r) ? -1 : reserved_prot(m->compact);
    bool compact = res_compact(m, r);
    size_t count = 0;
    int previous = outside;
    const struct watched *watched = watched_res(m, r);
    if (watched) { /* written pages differ in hardware from clean ones inside a run */
        int last = outside; /* of the page before the run */
        for (uint32_t i = 0; i < w.n; i++) {
            uint64_t run = runs_view_get(&w, i), s = run_page(run), e = runs_view_end(&w, i);
            unsigned attr = run_attr(run);
            if (s > hi)
                return count;
            if (s >= lo && range_page_prot(watched, attr, compact, s) != last)
                count++;
            if (attr && (protect_to_os(attr, compact) & OS_PROT_WRITE)) {
                uint64_t a = s + 1 > lo ? s + 1 : lo, b = e - 1 < hi ? e - 1 : hi;
                if (a <= b)
                    count += bit_changes(watched, a, b);
            }
            last = range_page_prot(watched, attr, compact, e - 1);
        }
        if (w.pages >= lo && w.pages <= hi && last != outside)
            count++;
        return count;
    }
    for (uint32_t i = 0; i < w.n; i++) {
        uint64_t run = runs_view_get(&w, i);
        int prot = protect_to_os(run_attr(run), compact);
        uint64_t at = run_page(run);
        if (at > hi)
            return count;
        if (at >= lo && prot != previous)
            count++;
        previous = prot;
    }
    if (w.pages >= lo && w.pages <= hi && previous != outside)
        count++;
    return count;
}
