/*
 * vm.c - VirtualAlloc, VirtualFree and VirtualProtect: the Win32 rules, in
 * Windows' order, then the change.
 *
 * Every change follows one shape: validate everything (nothing has changed
 * yet, so any refusal is clean); pre-allocate the metadata the change needs;
 * make the system calls, undoing them if one fails; publish the new runs;
 * move the counters. Every refused system call goes through os_refused; one
 * whose change cannot be undone is the only road to E_FAIL (os_refused_stuck,
 * or manager_fail when the refusal was counted already).
 *
 * Locks: a reservation's writers hold its stripe lock; creating a reservation
 * holds the arena lock only while granules are chosen. No system call is made
 * under the arena lock except to map a new arena (and, in arena_trim, to unmap
 * unused ones).
 */
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "internal.h"

#define PROTECT_BASE_MASK 0xFFu
#define PROTECT_MODIFIERS (PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE)

bool protect_valid(DWORD protect)
{
    DWORD base = protect & PROTECT_BASE_MASK, modifiers = protect & ~PROTECT_BASE_MASK;
    if (modifiers & ~(DWORD)PROTECT_MODIFIERS)
        return false;
    if (modifiers & (modifiers - 1))
        return false; /* at most one modifier */
    switch (base) {
    case PAGE_NOACCESS:
        return modifiers == 0;
    case PAGE_READONLY:
    case PAGE_READWRITE:
    case PAGE_EXECUTE:
    case PAGE_EXECUTE_READ:
    case PAGE_EXECUTE_READWRITE:
        return true;
    default:
        return false; /* 0, WRITECOPY variants, two bases */
    }
}

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
        prot = OS_PROT_EXEC;
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

/* Its pages registered with the kernel's write tracking (not emulated). */
static inline bool kernel_watched(const struct reservation *r)
{
    return (r->flags & (RES_WRITE_WATCH | RES_WATCH_EMULATED)) == RES_WRITE_WATCH;
}

static inline uintptr_t page_up_checked(uintptr_t a, size_t size, bool *overflow)
{
    uintptr_t end = a + size;
    if (end < a || end > UINTPTR_MAX - g_page) {
        *overflow = true;
        return 0;
    }
    return page_up(end);
}

/* Huge pages change only whole (mprotect refuses less); a decommitted one would
 * go back to the pool, and a later touch could find the pool empty (SIGBUS). */
static bool large_aligned(uintptr_t start, uintptr_t end)
{
    size_t large = geometry_large_page();
    return large && start % large == 0 && end % large == 0;
}

/* ---- finding and locking the reservation that holds an address --------------- */

/*
 * With guard pages on, a SIGSEGV handler changes reservations too, and it can
 * take no lock: a stripe's reservations are changed by whoever holds its busy
 * word - a writer, after its lock, or a handler. Handlers hold it for one
 * page's change, so a writer waits on it by spinning.
 */
/* This thread, as the busy word holds it: glibc's pthread_self reads the thread
 * pointer, which a signal handler may do (no system call, unlike gettid). */
static long thread_id(void)
{
    return (long)pthread_self();
}

static void busy_enter(struct stripe *stripe)
{
    long self = thread_id(), free_ = 0;
    while (!atomic_compare_exchange_weak_explicit(&stripe->busy, &free_, self, memory_order_acquire,
                                                  memory_order_relaxed)) {
        free_ = 0;
        sched_yield();
    }
}

static void busy_leave(struct stripe *stripe)
{
    atomic_store_explicit(&stripe->busy, 0, memory_order_release);
}

struct locked {
    struct reservation *r;
    struct stripe *stripe;
    uintptr_t base, end; /* the reservation's pages */
    bool went_stale;     /* the change left pages stale (the mapping ceiling) */
};

/*
 * Finds this manager's live reservation holding address and takes its stripe
 * lock. S_OK, not_ours (no reservation of this manager holds the page), or a
 * lock failure.
 */
static HRESULT reservation_lock(struct manager *m, uintptr_t address, HRESULT not_ours,
                                unsigned flags, struct locked *out)
{
    for (;;) {
        uintptr_t e = radix_load(address);
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

static HRESULT unlock(struct manager *m, struct locked *l, HRESULT result)
{
    if (m->signals)
        busy_leave(l->stripe);
    HRESULT hr = lock_leave(m, l->stripe->lock);
    return result == S_OK ? hr : result;
}

/* ---- walking the old runs of a range ------------------------------------------ */

struct piece {
    uintptr_t start, end;
    unsigned attr;
};

/* Calls fn for every piece of a run inside [start, end). Returns non-zero if fn did. */
static int pieces(const struct reservation *r, uintptr_t base, uintptr_t start, uintptr_t end,
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

struct survey {
    bool compact;
    int new_prot;           /* hardware protection the range will have */
    bool prot_differs;      /* some page's hardware protection changes */
    bool any_reserved;
    size_t committed_pages; /* pages committed before the change */
    uintptr_t committed_start, committed_end;
    unsigned first_attr;
    bool first_seen;
    uintptr_t stale_start, stale_end; /* stale pages in the range: first and last piece */
};

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
static void survey_to(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end,
                      int target, struct survey *s)
{
    memset(s, 0, sizeof *s);
    s->compact = res_compact(m, l->r);
    s->new_prot = target;
    pieces(l->r, l->base, start, end, survey_step, s);
    if (l->r->flags & RES_WATCH_EMULATED)
        s->prot_differs = true; /* the runs do not say which pages lack write */
}

static void survey_range(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end,
                         unsigned new_attr, struct survey *s)
{
    survey_to(m, l, start, end, protect_to_os(new_attr, res_compact(m, l->r)), s);
}

static void heap_account(struct manager *m, const struct reservation *r, size_t added,
                         size_t removed)
{
    if (r->flags & RES_HEAP) {
        counter_add(&m->heap_bytes, added);
        counter_sub(&m->heap_bytes, removed);
    }
}

/* ---- emulated write watch: a reservation's written pages ------------------------ *
 * A write-watched reservation of a manager made with HOSTMEM_EMULATE_WRITE_WATCH
 * keeps one bit a page in a slot of its manager's (struct watched): set while
 * the page was written since the last reset. A committed page that may be
 * written but was not has its hardware protection without write, so that its
 * first write faults (guard.c, vm_signal_fire). The bits change only under the
 * stripe's busy word; the SIGSEGV handler finds the slot after taking it. */

static struct watched *watched_of(struct manager *m, uintptr_t base)
{
    for (size_t i = 0; i < WATCHED_SLOTS; i++)
        if (atomic_load_explicit(&m->watched[i].base, memory_order_acquire) == base)
            return &m->watched[i];
    return NULL;
}

static struct watched *watched_res(struct manager *m, const struct reservation *r)
{
    if (!(r->flags & RES_WATCH_EMULATED))
        return NULL;
    return watched_of(m, atomic_load_explicit(&((struct reservation *)r)->base, memory_order_relaxed));
}

static bool written(const struct watched *w, uint64_t page)
{
    return atomic_load_explicit(&w->bits[page / 64], memory_order_relaxed) >> (page % 64) & 1;
}

/* Pages [lo, hi) written (on) or clean. */
static void mark_written(struct watched *w, uint64_t lo, uint64_t hi, bool on)
{
    while (lo < hi) {
        uint64_t word = lo / 64, bit = lo % 64, n = hi - lo < 64 - bit ? hi - lo : 64 - bit;
        uint64_t mask = (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << bit;
        if (on)
            atomic_fetch_or_explicit(&w->bits[word], mask, memory_order_relaxed);
        else
            atomic_fetch_and_explicit(&w->bits[word], ~mask, memory_order_relaxed);
        lo += n;
    }
}

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
static int page_hw(const struct watched *w, unsigned attr, bool compact, uint64_t i)
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
    return pieces(r, base, start, end, segments_step, &c);
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
static HRESULT undo_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, HRESULT hr)
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
static HRESULT protect_range(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end,
                             int prot)
{
    hm_assert(lock_held(l->stripe->lock));
    int err = os_protect((void *)start, end - start, prot);
    if (!err)
        return S_OK;
    return undo_protect(m, l, start, end, os_refused(m, err, "mprotect"));
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

int vm_hw_segments(struct manager *m, const struct reservation *r,
                   int (*fn)(void *context, uintptr_t start, uintptr_t end, int prot), void *context)
{
    uintptr_t base = atomic_load_explicit(&((struct reservation *)r)->base, memory_order_relaxed);
    struct export_segments c = {fn, context};
    return hw_segments(m, r, base, base, base + (res_pages(r) << g_page_shift), export_step, &c);
}

/*
 * A commit or VirtualProtect of [start,end) to attr in a reservation with
 * emulated write watch: written pages get attr's protection, the others -
 * and pages committed by this change, which nothing wrote yet - the same
 * without write. On a refusal, undone as protect_range.
 */
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

static HRESULT protect_watched(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, unsigned attr)
{
    hm_assert(lock_held(l->stripe->lock));
    struct watched_change c = {m, watched_res(m, l->r), res_compact(m, l->r), attr, l->base, 0, 0};
    if (!c.w)
        return protect_range(m, l, start, end, protect_to_os(attr, c.compact));
    if (!pieces(l->r, l->base, start, end, watched_change_step, &c))
        return S_OK;
    return undo_protect(m, l, start, c.failed_end, os_refused(m, c.err, "mprotect"));
}

/*
 * Kernel mappings the map implies, counted as changes of hardware protection
 * at page boundaries [lo, hi] of one reservation (boundary p lies between pages
 * p-1 and p; the pages outside the reservation count as reserved). Summed over
 * reservations, plus one per arena, it bounds the kernel's count from above.
 */
static size_t transitions(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi)
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
            if (s >= lo && page_hw(watched, attr, compact, s) != last)
                count++;
            if (attr && (protect_to_os(attr, compact) & OS_PROT_WRITE)) {
                uint64_t a = s + 1 > lo ? s + 1 : lo, b = e - 1 < hi ? e - 1 : hi;
                if (a <= b)
                    count += bit_changes(watched, a, b);
            }
            last = page_hw(watched, attr, compact, e - 1);
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

/* ---- the mapping ceiling: stale pages ---------------------------------------------
 * At vm.max_map_count the kernel refuses an mprotect that would split a
 * mapping. A decommit must not fail for that (Windows' never does, and a
 * runtime decommits when memory is short): its pages are discarded and
 * reserved in the books, but keep their hardware protection as stale runs
 * (ATTR_STALE), which get reserved-page protection when the kernel allows it -
 * before the next change of their reservation, and after any VirtualFree that
 * gave mappings back (stale_restore_all). */

/* Pages of r in [lo, hi) protected only in the books: stale, with hardware
 * protection other than reserved pages have. */
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

static size_t book_protected(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi)
{
    return (r->flags & RES_STALE) ? pages_where(r, lo, hi, stale_unprotected, res_compact(m, r)) : 0;
}

size_t vm_book_protected(struct manager *m, const struct reservation *r)
{
    return book_protected(m, r, 0, res_pages(r));
}

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

/* Locks the reservation at base and, if it is marked flag, has work do its
 * part; true when it needs no more remembering (done, not marked, or gone);
 * next: where the reservation after it may start. */
static bool remembered_visit(struct manager *m, uintptr_t base, uintptr_t *next, uint16_t flag,
                             bool (*work)(struct manager *m, struct locked *l))
{
    struct locked l;
    HRESULT hr = reservation_lock(m, base, S_FALSE, 0, &l);
    if (hr != S_OK)
        return hr == S_FALSE; /* gone (or a heap's: never marked), or the lock refused: later */
    if (next)
        *next = l.base + granule_up(l.end - l.base);
    bool done = l.base != base || !(l.r->flags & flag) || work(m, &l);
    unlock(m, &l, S_OK);
    return done;
}

/*
 * Has work do its part on the remembered reservations marked flag, then, if
 * more were than could be remembered and the remembered are all done, on every
 * reservation of m so marked. No lock held.
 */
static void remembered_each(struct manager *m, struct remembered *set, uint16_t flag,
                            bool (*work)(struct manager *m, struct locked *l))
{
    bool left = false;
    for (size_t i = 0; i < REMEMBERED; i++) {
        uintptr_t base = atomic_load_explicit(&set->bases[i], memory_order_relaxed);
        if (!base)
            continue;
        if (remembered_visit(m, base, NULL, flag, work))
            atomic_compare_exchange_strong(&set->bases[i], &base, 0);
        else
            left = true;
    }
    if (left || !atomic_exchange(&set->overflow, false))
        return;
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_acquire);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *a = atomic_load_explicit(&m->arenas[i], memory_order_acquire);
        if (!a)
            continue;
        uintptr_t g = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        while (g < end) {
            uintptr_t e = radix_load(g), next = g + g_granule;
            if (e && entry_id(e) == m->id && !entry_is_slack(e) && !entry_is_heap(e) &&
                !remembered_visit(m, g, &next, flag, work))
                remember(set, g);
            g = next > g ? next : g + g_granule;
        }
    }
}

/*
 * Gives the stale runs of a locked reservation reserved-page protection where
 * the kernel allows it now. S_OK when none is left, E_OUTOFMEMORY when the
 * kernel still refuses some (they stay as they were), E_FAIL when a refusal
 * could not be undone.
 */
static HRESULT stale_restore(struct manager *m, struct locked *l)
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
        int err = reservation_prepare(&l->stripe->slab, r, reservation_count_after(r, lo, hi, 0), spare);
        if (err) { /* cannot happen: the runs only merge */
            hm_unreachable("a run buffer for fewer runs");
            return os_refused(m, err, "mmap of a run buffer");
        }
        if (protect_to_os(run_attr(run), compact) != reserved) {
            HRESULT hr = protect_range(m, l, l->base + (lo << g_page_shift), l->base + (hi << g_page_shift),
                                       reserved);
            if (hr != S_OK) {
                reservation_unprepare(&l->stripe->slab, spare);
                if (hr == E_FAIL)
                    return hr;
                result = hr;
                continue;
            }
        }
        size_t before = transitions(m, r, lo, hi), hidden = book_protected(m, r, lo, hi);
        reservation_apply(&l->stripe->slab, r, lo, hi, 0, spare);
        struct watched *watched = watched_res(m, r);
        if (watched)
            mark_written(watched, lo, hi, false);
        counter_shift(&m->mapping_estimate, transitions(m, r, lo, hi) - before);
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

/* After a VirtualFree that gave mappings back: the stale pages of every
 * reservation get their protection where the kernel allows it now. */
static void stale_restore_all(struct manager *m)
{
    if (atomic_load_explicit(&m->book_protected, memory_order_relaxed))
        remembered_each(m, &m->stale, RES_STALE, stale_restored);
}

/* ---- deferred discard: pending pages ------------------------------------------------
 * A decommit in strict mode makes its pages inaccessible and uncharged at once,
 * and leaves their discard for later (pending runs, ATTR_PENDING): in batches,
 * when more than purge_cap bytes wait, when the oldest has waited purge_delay_ms
 * (looked at after every decommit and commit), when a commit is refused for
 * memory or memory is Low, on release, and on hostmem_purge. A recommit of a
 * pending page zeroes it (or discards it, if its new protection cannot be
 * written) instead of taking a fresh page's fault. Not for heap segments,
 * compact mode (reserved pages are readable there), write-watched reservations
 * or huge pages. */

static bool is_pending(unsigned attr, bool compact)
{
    (void)compact;
    return attr == ATTR_PENDING;
}

static size_t pending_in(const struct reservation *r, uint64_t lo, uint64_t hi)
{
    return (r->flags & RES_PENDING) ? pages_where(r, lo, hi, is_pending, false) : 0;
}

static bool defers(const struct manager *m, const struct reservation *r)
{
    return m->purge_delay_ms != UINT32_MAX && !m->compact &&
           !(r->flags & (RES_HEAP | RES_LARGE_PAGES | RES_WRITE_WATCH));
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

size_t vm_pending_pages(const struct reservation *r)
{
    return pending_in(r, 0, res_pages(r));
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
        int err = reservation_prepare(&l->stripe->slab, r, reservation_count_after(r, lo, hi, 0), spare);
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

void vm_purge(struct manager *m)
{
    if (!atomic_load_explicit(&m->pending_pages, memory_order_relaxed))
        return;
    remembered_each(m, &m->pending, RES_PENDING, purge_locked);
    if (!atomic_load_explicit(&m->pending_pages, memory_order_relaxed))
        atomic_store_explicit(&m->pending_since, 0, memory_order_relaxed);
}

/* After a call that changed pages: the pending discards, if more wait than the
 * cap allows, or the oldest has waited the delay, or memory is Low. No lock held. */
static void purge_if_due(struct manager *m)
{
    size_t pages = atomic_load_explicit(&m->pending_pages, memory_order_relaxed);
    if (!pages)
        return;
    uint64_t since = atomic_load_explicit(&m->pending_since, memory_order_relaxed);
    if ((pages << g_page_shift) > m->purge_cap ||
        (since && now_ns() - since >= (uint64_t)m->purge_delay_ms * 1000000u) ||
        atomic_load_explicit(&m->policy.delivered, memory_order_relaxed) == eMemoryAvailableLow)
        vm_purge(m);
}

/* Recommitted pending pages read zero: zeroed where the new protection lets
 * them be written (no page fault), else discarded. */
struct zeroing {
    struct manager *m;
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

/* A decommit's discard of the committed pages it found; a refusal cannot be
 * undone (part of the range may be gone): the manager is disabled. */
static HRESULT discard_committed(struct manager *m, struct locked *l, const struct survey *s, uintptr_t spare[2])
{
    int err = os_discard((void *)s->committed_start, s->committed_end - s->committed_start);
    if (!err)
        return S_OK;
    reservation_unprepare(&l->stripe->slab, spare);
    return os_refused_stuck(m, err, "madvise(MADV_DONTNEED)");
}

/* Pages [start,end) of a locked reservation take attr (commit, decommit, protect).
 * A commit's bytes are already charged to the budget by the caller. */
static HRESULT change_range(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end,
                            unsigned attr, struct survey *s)
{
    hm_assert(lock_held(l->stripe->lock));
    hm_assert(l->base <= start && start < end && end <= l->end && page_aligned(start) && page_aligned(end));
    struct reservation *r = l->r;
    if ((r->flags & RES_LARGE_PAGES) && (attr == 0 || !large_aligned(start, end)))
        return E_INVALIDARG; /* huge pages are never decommitted, and change whole */
    if (r->flags & RES_STALE) {
        /* stale pages first get their protection if the kernel allows it now:
         * the change then starts from the hardware the books mean */
        if (stale_restore(m, l) == E_FAIL)
            return E_FAIL;
        survey_to(m, l, start, end, s->new_prot, s);
    }
    uint64_t first = (start - l->base) >> g_page_shift, last = (end - l->base) >> g_page_shift;
    uintptr_t spare[2];
    bool discard = attr == 0 && s->committed_pages;
    /* A decommit may end stale (below): buffers for either outcome, before
     * anything changes. */
    bool defer = discard && defers(m, r);
    uint32_t count = reservation_count_after(r, first, last, attr);
    if (discard && s->prot_differs) {
        uint32_t stale_count = reservation_count_after(r, first, last, ATTR_STALE);
        count = stale_count > count ? stale_count : count;
    }
    if (defer) {
        uint32_t pending_count = reservation_count_after(r, first, last, ATTR_PENDING);
        count = pending_count > count ? pending_count : count;
    }
    int err = reservation_prepare(&l->stripe->slab, r, count, spare);
    if (err)
        return os_refused(m, err, "mmap of a run buffer");
    HRESULT hr;
    /* Recommitted stale pages read zero, whatever was written to them while
     * only the books protected them. They are reserved in the books: a refused
     * discard leaves nothing changed. */
    if (attr && s->stale_start) {
        struct discarding d = {0};
        if (pieces(r, l->base, s->stale_start, s->stale_end, discard_stale, &d)) {
            reservation_unprepare(&l->stripe->slab, spare);
            return os_refused(m, d.err, "madvise(MADV_DONTNEED) of stale pages");
        }
    }
    /* Decommit: the memory goes back to the OS at once, and the pages read
     * zero when committed again. The discard comes first: the kernel then
     * changes the protection of no page it is about to drop (10-14% of the
     * calls' time), and flushes the other CPUs' TLBs once, not twice. A discard
     * cannot be undone, and need not be: should the mprotect after it be
     * refused (the mapping ceiling), the decommit stands, its pages stale until
     * the kernel lets them have their protection. */
    if (discard && !defer && (hr = discard_committed(m, l, s, spare)) != S_OK)
        return hr;
    unsigned applied = attr;
    struct watched *watched = watched_res(m, r);
    if (attr && watched) {
        if ((hr = protect_watched(m, l, start, end, attr)) != S_OK) {
            reservation_unprepare(&l->stripe->slab, spare);
            return hr;
        }
    } else if (s->prot_differs) {
        hr = protect_range(m, l, start, end, s->new_prot);
        if (hr == E_OUTOFMEMORY && discard) {
            applied = ATTR_STALE; /* the mapping ceiling: the decommit stands */
            hr = S_OK;
            if (defer) { /* a stale page is a discarded one */
                defer = false;
                if ((hr = discard_committed(m, l, s, spare)) != S_OK)
                    return hr;
            }
        }
        if (hr != S_OK) {
            reservation_unprepare(&l->stripe->slab, spare);
            return hr;
        }
    }
    if (defer)
        applied = ATTR_PENDING;
    if (attr && (r->flags & RES_PENDING)) {
        int base = protect_to_os(attr, res_compact(m, r));
        struct zeroing z = {m, (base & OS_PROT_WRITE) && !(attr & PAGE_GUARD) && !watched, 0};
        if (pieces(r, l->base, start, end, zero_pending, &z)) { /* before anything is published */
            reservation_unprepare(&l->stripe->slab, spare);
            return undo_protect(m, l, start, end, os_refused(m, z.err, "madvise(MADV_DONTNEED) of pending pages"));
        }
    }
    /* Windows forgets the writes to decommitted pages; a discarded page must
     * not read as written when it is read again (a refused clean leaves the
     * pages reading as written: more than were, never fewer) */
    if (discard && kernel_watched(r) &&
        (err = os_watch_clean((void *)s->committed_start, s->committed_end - s->committed_start)) != 0)
        os_refused(m, err, "userfaultfd write-protection of decommitted pages");
    if (applied == ATTR_PENDING && !(r->flags & RES_PENDING)) {
        r->flags |= RES_PENDING;
        remember(&m->pending, l->base);
    }
    if (applied == ATTR_PENDING && !atomic_load_explicit(&m->pending_since, memory_order_relaxed)) {
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&m->pending_since, &zero, now_ns());
    }
    if (applied == ATTR_STALE) {
        r->flags |= RES_STALE;
        remember(&m->stale, l->base);
        l->went_stale = true;
    }
    size_t before = transitions(m, r, first, last), hidden = book_protected(m, r, first, last);
    size_t waiting = pending_in(r, first, last);
    if (watched && applied != ATTR_STALE) {
        /* decommitted pages are forgotten, committed ones start clean; a stale
         * page keeps its bit, which its hardware still follows */
        if (!attr)
            mark_written(watched, first, last, false);
        else
            pieces(r, l->base, start, end, forget_uncommitted, watched);
    }
    reservation_apply(&l->stripe->slab, r, first, last, applied, spare);
    counter_shift(&m->mapping_estimate, transitions(m, r, first, last) - before);
    counter_shift(&m->book_protected, book_protected(m, r, first, last) - hidden);
    counter_shift(&m->pending_pages, pending_in(r, first, last) - waiting);
    if (attr) {
        size_t newly = ((end - start) >> g_page_shift) - s->committed_pages;
        r->flags |= RES_TOUCHED;
        heap_account(m, r, newly << g_page_shift, 0);
    } else {
        policy_uncharge(m, s->committed_pages << g_page_shift);
        heap_account(m, r, 0, s->committed_pages << g_page_shift);
    }
    return S_OK;
}

/* ---- VirtualAlloc ------------------------------------------------------------------ */

static bool alloc_type_valid(DWORD type)
{
    if ((type & MEM_WRITE_WATCH) && (!(type & MEM_RESERVE) || (type & MEM_LARGE_PAGES)))
        return false; /* write watch is chosen at reservation, on normal pages */
    DWORD core = type & ~(DWORD)(MEM_TOP_DOWN | MEM_LARGE_PAGES | MEM_WRITE_WATCH);
    switch (core) {
    case MEM_COMMIT:
    case MEM_RESERVE:
        return !(type & MEM_LARGE_PAGES);
    case MEM_COMMIT | MEM_RESERVE:
        return true;
    case MEM_RESET:
    case MEM_RESET_UNDO:
        return core == type;
    default:
        return false;
    }
}

/* Emulated write watch: a slot and its bitmap for the reservation at base, all
 * pages clean; E_OUTOFMEMORY when the kernel refuses the bitmap's memory or the
 * manager's WATCHED_SLOTS are taken. */
static HRESULT watched_take(struct manager *m, uintptr_t base, uint64_t pages)
{
    size_t bytes = (size_t)((pages + 63) / 64) * sizeof(uint64_t);
    bytes = (bytes + g_page - 1) & ~(g_page - 1);
    void *bits;
    int err = pages_alloc(bytes, &bits);
    if (err)
        return os_refused(m, err, "mmap of the written pages' bitmap");
    for (size_t i = 0; i < WATCHED_SLOTS; i++) {
        uintptr_t free_ = 0;
        if (atomic_compare_exchange_strong(&m->watched[i].base, &free_, 1)) {
            m->watched[i].bits = bits;
            m->watched[i].bytes = bytes;
            atomic_store_explicit(&m->watched[i].base, base, memory_order_release);
            return S_OK;
        }
    }
    pages_free(m, bits, bytes);
    return E_OUTOFMEMORY;
}

static void watched_give_back(struct manager *m, struct watched *w)
{
    if (!w)
        return;
    void *bits = (void *)w->bits;
    size_t bytes = w->bytes;
    atomic_store_explicit(&w->base, 1, memory_order_release);
    w->bits = NULL;
    pages_free(m, bits, bytes);
    atomic_store_explicit(&w->base, 0, memory_order_release);
}

/* A refused write-watch call: counted as every refusal; where the kernel has
 * no such tracking, ERROR_NOT_SUPPORTED rather than a shortage. */
static HRESULT watch_refused(struct manager *m, int err, const char *what)
{
    HRESULT hr = os_refused(m, err, what);
    if (err == ENOSYS || err == EPERM || err == EINVAL || err == ENOTTY || err == EOPNOTSUPP)
        return HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED);
    return hr;
}

/* A new reservation, committed too with MEM_COMMIT: the steps in order, the
 * undo of each below it in the ladder. */
static HRESULT alloc_reserve(struct manager *m, uintptr_t address, size_t size, DWORD type,
                             DWORD protect, EMemoryCriticalLevel level, void **out, unsigned flags)
{
    uintptr_t base, end;
    bool overflow = false;
    if (address) {
        if (address >= ADDRESS_LIMIT)
            return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS); /* outside user space, whatever the size */
        base = granule_down(address);
        end = page_up_checked(address, size, &overflow);
        if (overflow || end > ADDRESS_LIMIT)
            return overflow ? E_OUTOFMEMORY : HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
    } else {
        if (size > ADDRESS_LIMIT)
            return E_OUTOFMEMORY;
        base = 0;
        end = page_up_checked(0, size, &overflow);
    }
    size_t bytes = end - base;
    bool emulate = (type & MEM_WRITE_WATCH) && (m->flags & HOSTMEM_EMULATE_WRITE_WATCH);
    unsigned attr = (type & MEM_COMMIT) ? protect : 0;
    struct reservation *r;
    HRESULT hr;
    if (!policy_try_reserve(m, bytes))
        return policy_refuse(m, level); /* the address-space limit */
    /* The address first (Windows checks it before the commit charge), then the
     * budget: the reservation is not published yet, and no lock is held, so an
     * appdomain-critical request may wait here. */
    if (type & MEM_LARGE_PAGES)
        hr = arena_reserve_large(m, base, bytes, attr, protect_to_os(attr, m->compact), &r);
    else
        hr = arena_reserve(m, base, bytes, (type & MEM_TOP_DOWN) != 0,
                           (flags & VM_ALIGN_4M) ? (size_t)4 << 20 : 0, attr, &r);
    if (hr != S_OK)
        goto unreserve;
    uintptr_t at = atomic_load_explicit(&r->base, memory_order_relaxed);
    if (emulate) {
        if ((hr = watched_take(m, at, bytes >> g_page_shift)) != S_OK)
            goto abandon;
        r->flags |= RES_WRITE_WATCH | RES_WATCH_EMULATED;
    } else if (type & MEM_WRITE_WATCH) {
        int err = os_watch_add((void *)at, bytes, true);
        if (err) {
            hr = watch_refused(m, err, "userfaultfd registration of a write-watched reservation");
            goto abandon;
        }
        r->flags |= RES_WRITE_WATCH;
    }
    if (attr && (hr = policy_charge(m, bytes, level)) != S_OK)
        goto unwatch;
    if (flags & VM_HEAP)
        r->flags |= RES_HEAP | RES_TOUCHED | ((flags & VM_HEAP_LARGE) ? RES_HEAP_LARGE : 0);
    res_set_alloc_protect(r, protect); /* not published yet */
    /* (with emulated write watch, committed pages start clean: without write) */
    int prot = page_hw(watched_res(m, r), attr, res_compact(m, r), 0), slack = reserved_prot(m->compact);
    if (prot != slack && !(r->flags & RES_LARGE_PAGES)) { /* huge pages are mapped with it */
        int err = os_protect((void *)at, bytes, prot);
        if (err) {
            hr = os_refused(m, err, "mprotect of a new reservation");
            /* Nothing else has seen these pages: put back what we changed (a
             * standalone mapping goes whole, whatever its protection). */
            if ((err = os_protect((void *)at, bytes, slack)) != 0 && !(r->flags & RES_STANDALONE))
                hr = os_refused_stuck(m, err, "mprotect of a new reservation could not be undone");
            goto uncharge;
        }
    }
    if (attr)
        r->flags |= RES_TOUCHED;
    if (attr || kernel_watched(r))
        counter_add(&m->mapping_estimate, transitions(m, r, 0, bytes >> g_page_shift));
    heap_account(m, r, attr ? bytes : 0, 0);
    arena_publish(m, r);
    counter_add(&m->reservations, 1);
    *out = (void *)at;
    return S_OK;

uncharge:
    policy_uncharge(m, attr ? bytes : 0);
unwatch:
    if (r->flags & RES_WATCH_EMULATED)
        watched_give_back(m, watched_res(m, r));
    if (kernel_watched(r) && !(r->flags & RES_STANDALONE)) {
        int err = os_watch_remove((void *)at, bytes);
        if (err)
            hr = os_refused_stuck(m, err, "userfaultfd unregistration of a new reservation");
    }
abandon:
    arena_abandon(m, r);
unreserve:
    policy_unreserve(m, bytes);
    return hr;
}

/*
 * Locks the reservation that holds every page touched by [address,
 * address+size), or returns ERROR_INVALID_ADDRESS (or a lock failure).
 */
static HRESULT lock_pages(struct manager *m, uintptr_t address, size_t size, unsigned flags,
                          struct locked *l, uintptr_t *start, uintptr_t *end)
{
    bool overflow = false;
    *start = page_down(address);
    *end = page_up_checked(address, size, &overflow);
    if (overflow || !address)
        return HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
    HRESULT hr = reservation_lock(m, *start, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), flags, l);
    if (hr != S_OK)
        return hr;
    if (*end > l->end)
        return unlock(m, l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    return S_OK;
}

/*
 * PAGE_NOCACHE and PAGE_WRITECOMBINE belong to the whole allocation, as on
 * current Windows: set at VirtualAlloc, kept by every later commit and
 * VirtualProtect, which can neither add nor drop them (a no-access or guard
 * page has none).
 */
static DWORD allocation_wide(const struct reservation *r, DWORD protect)
{
    const DWORD cache = PAGE_NOCACHE | PAGE_WRITECOMBINE;
    DWORD base = protect & ~cache;
    if ((base & PROTECT_BASE_MASK) == PAGE_NOACCESS || (base & PAGE_GUARD))
        return base;
    return base | (res_alloc_protect(r) & cache);
}

static HRESULT alloc_commit(struct manager *m, uintptr_t address, size_t size, DWORD protect,
                            EMemoryCriticalLevel level, void **out, unsigned flags)
{
    size_t charged = 0; /* bytes charged to the budget for this call so far */
    for (;;) {
        struct locked l;
        uintptr_t start, end;
        HRESULT hr = lock_pages(m, address, size, flags, &l, &start, &end);
        if (hr != S_OK) {
            policy_uncharge(m, charged);
            return hr;
        }
        protect = allocation_wide(l.r, protect);
        struct survey s;
        survey_range(m, &l, start, end, protect, &s);
        size_t need = (((end - start) >> g_page_shift) - s.committed_pages) << g_page_shift;
        if (need > charged && !policy_try_charge(m, need - charged, level)) {
            hr = unlock(m, &l, S_OK);
            if (hr == S_OK)
                hr = level == eAppDomainCritical ? policy_charge(m, need - charged, level)
                                                 : policy_refuse(m, level);
            if (hr != S_OK) {
                policy_uncharge(m, charged);
                return hr;
            }
            charged = need; /* waited and got it: look at the pages again */
            continue;
        }
        if (need > charged)
            charged = need;
        /* What the change did decides the charge kept, whatever leaving the
         * lock says afterwards (a host lock may report HOST_E_NOT_OWNER). */
        HRESULT changed = change_range(m, &l, start, end, protect, &s);
        hr = unlock(m, &l, changed);
        policy_uncharge(m, changed == S_OK ? charged - need : charged);
        if (hr == S_OK)
            *out = (void *)start;
        return hr;
    }
}

static HRESULT alloc_reset(struct manager *m, uintptr_t address, size_t size, DWORD type,
                           void **out)
{
    struct locked l;
    uintptr_t start, end;
    HRESULT hr = lock_pages(m, address, size, 0, &l, &start, &end);
    if (hr != S_OK)
        return hr;
    if (l.r->flags & RES_LARGE_PAGES)
        return unlock(m, &l, E_INVALIDARG); /* huge pages are never discarded */
    struct survey s;
    survey_range(m, &l, start, end, 0, &s);
    /* Windows accepts reserved pages in the range and leaves them alone. */
    if (type == MEM_RESET && s.committed_pages) {
        int err = os_reset((void *)s.committed_start, s.committed_end - s.committed_start);
        if (err)
            return unlock(m, &l, os_refused(m, err, "madvise(MADV_FREE)"));
        l.r->flags |= RES_TOUCHED | RES_WAS_RESET;
    } else if (type == MEM_RESET_UNDO && (l.r->flags & RES_WAS_RESET)) {
        /* Linux cannot say whether the kernel dropped a lazily freed page: a
         * dropped page reads zero, like a page that was zero. hostmem vouches
         * only for reservations that were never reset. */
        return unlock(m, &l, HOSTMEM_E_CONTENTS_LOST);
    }
    hr = unlock(m, &l, S_OK);
    if (hr == S_OK)
        *out = (void *)start;
    return hr;
}

HRESULT vm_alloc(struct manager *m, void *address, SIZE_T size, DWORD type, DWORD protect,
                 EMemoryCriticalLevel level, void **out)
{
    return vm_alloc_ex(m, address, size, type, protect, level, out, 0);
}

HRESULT vm_alloc_ex(struct manager *m, void *address, SIZE_T size, DWORD type, DWORD protect,
                    EMemoryCriticalLevel level, void **out, unsigned flags)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    if (!alloc_type_valid(type))
        return E_INVALIDARG;
    if (!protect_valid(protect))
        return E_INVALIDARG;
    if (size == 0)
        return E_INVALIDARG;
    if ((unsigned)level > eProcessCritical)
        return E_INVALIDARG;
    uintptr_t a = (uintptr_t)address;
    if (type & MEM_LARGE_PAGES) {
        /* Windows: whole large pages, at a large-page address */
        size_t large = geometry_large_page();
        if (large && (size % large || a % large))
            return E_INVALIDARG;
        if (!large)
            return HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES);
    }
    if (type == MEM_RESET || type == MEM_RESET_UNDO)
        return alloc_reset(m, a, size, type, out);
    if ((type & MEM_RESERVE) || !address)
        hr = alloc_reserve(m, a, size, type, protect, level, out, flags);
    else
        hr = alloc_commit(m, a, size, protect, level, out, flags);
    if (hr == E_OUTOFMEMORY)
        vm_purge(m); /* memory is short: the pending discards at once */
    else if (hr == S_OK)
        purge_if_due(m);
    return hr;
}

/* ---- VirtualFree ------------------------------------------------------------------- */

static HRESULT release_locked(struct manager *m, struct locked *l)
{
    struct reservation *r = l->r;
    size_t bytes = l->end - l->base;
    if (r->flags & RES_STANDALONE) {
        /* Out of the address map before the address space can be mapped again
         * by anyone (radix.c relies on it); back in if the kernel refuses. */
        size_t span = granule_up(bytes);
        radix_store_range(l->base, l->base + span, 0, true);
        int err = os_unmap((void *)l->base, span);
        if (err) {
            arena_publish(m, r);
            return os_refused(m, err, "munmap of a reservation");
        }
    } else if ((r->flags & RES_TOUCHED) || res_compact(m, r)) {
        /* back to what arena slack is: reserved-page protection, zero */
        struct survey s;
        survey_to(m, l, l->base, l->end, reserved_prot(m->compact), &s);
        if (s.prot_differs) {
            HRESULT hr = protect_range(m, l, l->base, l->end, s.new_prot);
            if (hr != S_OK)
                return hr;
        }
        int err = os_discard((void *)l->base, bytes);
        if (err)
            return os_refused_stuck(m, err, "madvise(MADV_DONTNEED) on release");
        /* back to plain arena slack, which may merge with its neighbours again */
        if (kernel_watched(r) && (err = os_watch_remove((void *)l->base, bytes)) != 0)
            return os_refused_stuck(m, err, "userfaultfd unregistration on release");
    }
    size_t committed = reservation_committed(r);
    heap_account(m, r, 0, committed << g_page_shift);
    struct watched *watched = watched_res(m, r);
    if (r->flags & RES_STALE) {
        counter_sub(&m->book_protected, book_protected(m, r, 0, res_pages(r)));
        forget(&m->stale, l->base);
    }
    if (r->flags & RES_PENDING) { /* discarded with the rest just now */
        counter_sub(&m->pending_pages, pending_in(r, 0, res_pages(r)));
        forget(&m->pending, l->base);
    }
    atomic_fetch_sub_explicit(&m->mapping_estimate,
                              transitions(m, r, 0, res_pages(r)), memory_order_relaxed);
    arena_unreserve(m, r);
    watched_give_back(m, watched);
    policy_uncharge(m, committed << g_page_shift);
    policy_unreserve(m, bytes);
    counter_sub(&m->reservations, 1);
    return S_OK;
}

HRESULT vm_free(struct manager *m, void *address, SIZE_T size, DWORD type)
{
    return vm_free_ex(m, address, size, type, 0);
}

HRESULT vm_free_ex(struct manager *m, void *address, SIZE_T size, DWORD type, unsigned flags)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        return E_INVALIDARG; /* rule 1 */
    if (type == MEM_RELEASE && size != 0)
        return E_INVALIDARG; /* rule 2 */
    uintptr_t page = page_down((uintptr_t)address);
    struct locked l;
    hr = reservation_lock(m, page, HOST_E_INVALIDOPERATION, flags, &l); /* rule 3 */
    if (hr != S_OK)
        return hr;
    if (size == 0 && page != l.base)
        return unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)); /* rule 4 */
    uintptr_t start = page, end = l.end;
    if (size != 0) {
        bool overflow = false;
        end = page_up_checked((uintptr_t)address, size, &overflow);
        if (overflow || end > l.end)
            return unlock(m, &l, E_INVALIDARG); /* rule 5 */
    }
    if (type == MEM_RELEASE) {
        hr = unlock(m, &l, release_locked(m, &l));
    } else {
        struct survey s;
        survey_range(m, &l, start, end, 0, &s);
        if (s.committed_pages == 0)
            return unlock(m, &l, S_OK);
        hr = unlock(m, &l, change_range(m, &l, start, end, 0, &s));
    }
    if (hr == S_OK && !l.went_stale)
        stale_restore_all(m); /* mappings may have come back */
    purge_if_due(m);
    return hr;
}

/* ---- VirtualProtect ---------------------------------------------------------------- */

HRESULT vm_protect(struct manager *m, void *address, SIZE_T size, DWORD protect, DWORD *old)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    if (!old)
        return E_POINTER;
    if (!protect_valid(protect))
        return E_INVALIDARG;
    struct locked l;
    uintptr_t start, end;
    hr = lock_pages(m, (uintptr_t)address, size ? size : 1, 0, &l, &start, &end);
    if (hr != S_OK)
        return hr;
    protect = allocation_wide(l.r, protect);
    struct survey s;
    survey_range(m, &l, start, end, protect, &s);
    if (s.any_reserved)
        return unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    DWORD previous = attr_visible(s.first_attr);
    hr = unlock(m, &l, change_range(m, &l, start, end, protect, &s));
    if (hr == S_OK)
        *old = previous;
    return hr;
}

/* ---- write watch (docs/writewatch.md) ---------------------------------------------------- */

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
    HRESULT hr = reservation_lock(m, *start, invalid, 0, l);
    if (hr != S_OK)
        return hr;
    if (*end > l->end || !(l->r->flags & RES_WRITE_WATCH))
        return unlock(m, l, invalid);
    return S_OK;
}

/* Emulated write watch: the written pages are the committed ones with their
 * bit set, in order. */
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
    if (!attr_visible(piece->attr))
        return 0;
    uint64_t i = (piece->start - d->base) >> g_page_shift, end = (piece->end - d->base) >> g_page_shift;
    while (i < end) {
        uint64_t word = atomic_load_explicit(&d->w->bits[i / 64], memory_order_relaxed) >> (i % 64);
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
    size_t before = transitions(m, r, first, last);
    struct clean_step_context c = {res_compact(m, r), 0, 0};
    if (pieces(r, l->base, start, end, clean_step, &c))
        return undo_protect(m, l, start, c.failed_end, os_refused(m, c.err, "mprotect"));
    mark_written(w, first, last, false);
    counter_shift(&m->mapping_estimate, transitions(m, r, first, last) - before);
    return S_OK;
}

HRESULT vm_get_write_watch(struct manager *m, DWORD flags, void *base, SIZE_T size, void **addresses,
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
        return unlock(m, &l, HRESULT_FROM_WIN32(ERROR_NOACCESS));
    if (!*count)
        return unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER));
    if (!granularity || !addresses)
        return unlock(m, &l, HRESULT_FROM_WIN32(ERROR_NOACCESS));
    size_t found;
    if (l.r->flags & RES_WATCH_EMULATED) {
        struct dirty_scan d = {watched_res(m, l.r), l.base, addresses, *count, 0, 0};
        if (d.w)
            pieces(l.r, l.base, start, end, dirty_step, &d);
        found = d.n;
        if ((flags & WRITE_WATCH_FLAG_RESET) && found &&
            (hr = watch_clean_emulated(m, &l, start, d.last_end)) != S_OK)
            return unlock(m, &l, hr);
    } else {
        int err = os_watch_scan((void *)start, end - start, (flags & WRITE_WATCH_FLAG_RESET) != 0, addresses,
                                *count, &found);
        if (err)
            return unlock(m, &l, watch_refused(m, err, "PAGEMAP_SCAN"));
    }
    *count = found;
    *granularity = (ULONG)g_page;
    return unlock(m, &l, S_OK);
}

HRESULT vm_reset_write_watch(struct manager *m, void *base, SIZE_T size)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    struct locked l;
    uintptr_t start, end;
    if ((hr = watch_lock(m, base, size, &l, &start, &end)) != S_OK)
        return hr;
    if (l.r->flags & RES_WATCH_EMULATED)
        return unlock(m, &l, watch_clean_emulated(m, &l, start, end));
    int err = os_watch_clean((void *)start, end - start);
    return unlock(m, &l, err ? watch_refused(m, err, "userfaultfd write-protection") : S_OK);
}

/* ---- the SIGSEGV handler's changes (guard.c, docs/guard.md, docs/writewatch.md) ------------- */

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
enum signal_outcome vm_signal_fire(struct manager *m, uintptr_t page, int access)
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
                                          spare);
            if (!err && (err = os_protect((void *)page, g_page, page_hw(watched, changed, compact, index))) != 0) {
                counter_add(&m->os_refusals, 1); /* os_refused describes on stderr: not here */
                reservation_unprepare(&stripe->slab, spare);
            }
            if (!err) {
                size_t before = transitions(m, r, index, index + 1);
                reservation_apply(&stripe->slab, r, index, index + 1, changed, spare);
                counter_shift(&m->mapping_estimate, transitions(m, r, index, index + 1) - before);
                outcome = SIGNAL_GUARD;
            }
        } else if (watch && watched && attr_visible(attr) && writable(attr) && !(attr & PAGE_GUARD)) {
            if (written(watched, index)) {
                outcome = SIGNAL_RETRY; /* another thread marked it meanwhile */
            } else {
                int full = protect_to_os(attr, compact);
                uint64_t lo = index, hi = index + 1;
                size_t before = transitions(m, r, lo, hi);
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
                    before = transitions(m, r, lo, hi);
                    err = os_protect((void *)(view.base + (lo << g_page_shift)), (size_t)(hi - lo) << g_page_shift,
                                     full);
                    if (err)
                        counter_add(&m->os_refusals, 1);
                }
                outcome = SIGNAL_CANNOT;
                if (!err) {
                    mark_written(watched, lo, hi, true);
                    counter_shift(&m->mapping_estimate, transitions(m, r, lo, hi) - before);
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

/* fork.c: every stripe's busy word held across fork (take), then let go in
 * parent and child, so that no SIGSEGV handler of another thread is halfway
 * through a change when the process is copied. */
void vm_fork_busy(struct manager *m, bool take)
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

/* ---- shutdown -------------------------------------------------------------------------- */

void vm_release_all(struct manager *m)
{
    arena_destroy_all(m);
    for (size_t i = 0; i < WATCHED_SLOTS; i++)
        if (atomic_load_explicit(&m->watched[i].base, memory_order_relaxed) > 1)
            watched_give_back(m, &m->watched[i]);
    atomic_store(&m->committed_bytes, 0);
    atomic_store(&m->reserved_bytes, 0);
    atomic_store(&m->reservations, 0);
}

/* ---- fork -------------------------------------------------------------------------------- */
/*
 * After a fork, in the child: what vanished threads were making goes
 * (arena_after_fork), then the counters are recounted from the map - a thread
 * the child does not have may have charged the budget or reserved address space
 * for a change it never made. Every lock is this thread's.
 */
void vm_after_fork(struct manager *m)
{
    arena_after_fork(m);
    size_t reservations = 0, reserved = 0, committed = 0, heap = 0, mappings = 0, stale = 0, pending = 0;
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_relaxed);
    for (uint32_t i = 0; i < count; i++) {
        struct arena *a = atomic_load_explicit(&m->arenas[i], memory_order_relaxed);
        if (!a)
            continue;
        mappings++;
        uintptr_t g = atomic_load_explicit(&a->base, memory_order_relaxed);
        uintptr_t end = atomic_load_explicit(&a->end, memory_order_relaxed);
        while (g < end) {
            uintptr_t e = radix_load(g);
            struct reservation *r = entry_pointer(e);
            if (!e || entry_id(e) != m->id || entry_is_slack(e) ||
                atomic_load_explicit(&r->base, memory_order_relaxed) != g) {
                g += g_granule;
                continue;
            }
            size_t bytes = res_pages(r) << g_page_shift, held = reservation_committed(r) << g_page_shift;
            reservations++;
            reserved += bytes;
            committed += held;
            if (r->flags & RES_HEAP)
                heap += held;
            mappings += transitions(m, r, 0, res_pages(r));
            stale += book_protected(m, r, 0, res_pages(r));
            pending += pending_in(r, 0, res_pages(r));
            /* The kernel registers no range of a child: tracking starts again,
             * every page the child has reading as written until it is reset
             * (more than were written, never fewer). A refusal leaves the
             * reservation's write watch answering ERROR_NOT_SUPPORTED. */
            if (kernel_watched(r) && res_pages(r)) {
                int err = os_watch_add((void *)g, res_pages(r) << g_page_shift, false);
                if (err)
                    os_refused(m, err, "userfaultfd registration in a forked child");
            }
            g += res_span(r);
        }
    }
    atomic_store(&m->reservations, reservations);
    atomic_store(&m->reserved_bytes, reserved);
    atomic_store(&m->committed_bytes, committed);
    atomic_store(&m->heap_bytes, heap);
    atomic_store(&m->mapping_estimate, mappings);
    atomic_store(&m->book_protected, stale);
    atomic_store(&m->pending_pages, pending);
}
