/*
 * range.h - the private header of the files that change reservations: what
 * watch.c (write watch), deferred.c (the books ahead of the hardware),
 * guard.c's signal change and vm.c (the Win32 rules and the change) share
 * with range.c, the floor they stand on - the locked reservation, the pieces
 * of a range, the survey, the hardware the books imply, and an emulated write
 * watch's bits, which that hardware follows. Nothing else includes it: the
 * rest of the library sees these files' calls in internal.h. watch.h and
 * deferred.h, each its module's own, include it.
 *
 * Layers (tests/test_layers.sh): range.c below watch.c, deferred.c and
 * guard.c, all below vm.c. The inline helpers here call only the lock's leave.
 */
#ifndef HOSTMEM_RANGE_H
#define HOSTMEM_RANGE_H

#include <pthread.h>

#include "internal.h"

#define PROTECT_BASE_MASK 0xFFu

/* ---- a locked reservation (range.c) -------------------------------------------------- */
struct locked {
    struct reservation *r;
    struct stripe *stripe;
    uintptr_t base, end; /* the reservation's pages */
    bool went_stale;     /* the change left pages stale (the mapping ceiling) */
};

/*
 * Finds this manager's live reservation holding address and takes its stripe
 * lock (and, with signal changes on, its busy word). S_OK, not_ours (no
 * reservation of this manager holds the page), or a lock failure. flags:
 * VM_HEAP for heap segments, which are the heap's alone.
 */
HRESULT range_lock_entry(struct manager *m, uintptr_t address, uintptr_t e, HRESULT not_ours, unsigned flags,
                         struct locked *out) HIDDEN;
static inline HRESULT range_lock(struct manager *m, uintptr_t address, HRESULT not_ours, unsigned flags,
                                 struct locked *out)
{
    /* An address no reservation of m's holds (a foreign VirtualFree) is told
     * apart by one load of the address map, without a call. */
    uintptr_t e = radix_load(address);
    if (entry_id(e) != m->id || entry_is_slack(e) || !e)
        return not_ours;
    return range_lock_entry(m, address, e, not_ours, flags, out);
}
/* The lock range_lock takes for base, for what the address map does not name
 * (stale slack, deferred.c): l->r NULL, l->base = l->end = base. */
HRESULT range_lock_stripe(struct manager *m, uintptr_t base, struct locked *out) HIDDEN;

/* This thread, as a stripe's busy word holds it: glibc's pthread_self reads the
 * thread pointer, which a signal handler may do (no system call, unlike gettid). */
static inline long thread_id(void)
{
    return (long)pthread_self();
}

static inline void busy_leave(struct stripe *stripe)
{
    atomic_store_explicit(&stripe->busy, 0, memory_order_release);
}

/* Leaves what range_lock took; result unless leaving the lock failed. Inline:
 * every call that found its reservation passes here. */
static inline HRESULT range_unlock(struct manager *m, struct locked *l, HRESULT result)
{
    if (m->signals)
        busy_leave(l->stripe);
    HRESULT hr = lock_leave(m, l->stripe->lock);
    return result == S_OK ? hr : result;
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

/* ---- the runs of a range (range.c) ----------------------------------------------------- */
/* A run's pages inside a range. */
struct piece {
    uintptr_t start, end;
    unsigned attr;
};
/* Calls fn for every piece of a run inside [start, end). Returns non-zero if fn did. */
int range_pieces(const struct reservation *r, uintptr_t base, uintptr_t start, uintptr_t end,
                 int (*fn)(void *context, const struct piece *piece), void *context) HIDDEN;

/* What a range holds now, and whether a change to hardware protection new_prot
 * changes any page. */
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
void range_survey_to(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int target,
                     struct survey *s) HIDDEN;
/* The same, towards the hardware protection of attribute new_attr. */
void range_survey(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, unsigned new_attr,
                  struct survey *s) HIDDEN;

/* ---- the hardware (range.c) ------------------------------------------------------------ */
/* Pages of a locked reservation to hardware protection prot; on a refusal every
 * page back to what the books say and E_OUTOFMEMORY, or E_FAIL (the manager
 * disabled) if even that fails. */
HRESULT range_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int prot) HIDDEN;
/* The same on a path that gives memory back, to reserved pages' protection
 * (prot: the reservation's, or slack's): S_OK or E_OUTOFMEMORY, never E_FAIL. A refused mprotect may have
 * changed part of the range; the undo puts it back to what the books say, and
 * where even the undo is refused (counted) those pages are more protected than
 * the books, which then call them stale - still accessible, counted - never
 * less: the next restore gives them slack protection, and the books are the
 * truth again. */
HRESULT range_protect_back(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, int prot) HIDDEN;
/* After a refused mprotect in [start,end): every page back to what the books
 * say; hr, or E_FAIL if even that fails. */
HRESULT range_undo_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end,
                           HRESULT hr) HIDDEN;
/* The hardware protection of page i of r with attribute attr: protect_to_os's,
 * less write for a page an emulated write watch holds clean. */
int range_page_prot(const struct watched *w, unsigned attr, bool compact, uint64_t i) HIDDEN;
/* Kernel mappings r implies, counted as changes of hardware protection at page
 * boundaries [lo, hi] (boundary p lies between pages p-1 and p). */
size_t range_transitions(struct manager *m, const struct reservation *r, uint64_t lo, uint64_t hi) HIDDEN;

/* Its pages registered with the kernel's write tracking (not emulated). */
static inline bool kernel_watched(const struct reservation *r)
{
    return (r->flags & (RES_WRITE_WATCH | RES_WATCH_EMULATED)) == RES_WRITE_WATCH;
}

/* ---- write watch's books: an emulated write watch's written pages -----------------------
 * One bit a page in a slot of its manager's (struct watched, internal.h), set
 * while the page was written since the last reset. The bits change only under
 * the stripe's busy word (writers hold it after their lock when signal changes
 * are on); the SIGSEGV handler finds the slot after taking it. watch.c gives
 * slots out and back; everyone who changes a watched reservation's pages reads
 * and marks them. */
/* The slot whose written pages an emulated write watch keeps; NULL otherwise. */
static inline struct watched *watched_res(struct manager *m, const struct reservation *r)
{
    return (r->flags & RES_WATCH_EMULATED) ? watch_slot_of(m, r) : NULL;
}

static inline bool written(const struct watched *w, uint64_t page)
{
    return atomic_load_explicit(&w->bits[page / 64], memory_order_relaxed) >> (page % 64) & 1;
}

/* The bits of [lo, hi) in lo's word of a page map; *next: the first page past them. */
static inline uint64_t bits_word_mask(uint64_t lo, uint64_t hi, uint64_t *next)
{
    uint64_t bit = lo % 64, n = hi - lo < 64 - bit ? hi - lo : 64 - bit;
    *next = lo + n;
    return (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << bit;
}

/* Bits [lo, hi) of a page map set (on) or cleared. */
static inline void bits_mark(_Atomic uint64_t *map, uint64_t lo, uint64_t hi, bool on)
{
    for (uint64_t next; lo < hi; lo = next) {
        uint64_t mask = bits_word_mask(lo, hi, &next);
        if (on)
            atomic_fetch_or_explicit(&map[lo / 64], mask, memory_order_relaxed);
        else
            atomic_fetch_and_explicit(&map[lo / 64], ~mask, memory_order_relaxed);
    }
}

/* Bits [lo, hi) of from set in to as well. */
static inline void bits_or(_Atomic uint64_t *to, _Atomic uint64_t *from, uint64_t lo, uint64_t hi)
{
    for (uint64_t next; lo < hi; lo = next) {
        uint64_t word = atomic_load_explicit(&from[lo / 64], memory_order_relaxed) & bits_word_mask(lo, hi, &next);
        if (word)
            atomic_fetch_or_explicit(&to[lo / 64], word, memory_order_relaxed);
    }
}

/* Pages [lo, hi) written (on) or clean. */
static inline void mark_written(struct watched *w, uint64_t lo, uint64_t hi, bool on)
{
    bits_mark(w->bits, lo, hi, on);
}

#endif /* HOSTMEM_RANGE_H */
