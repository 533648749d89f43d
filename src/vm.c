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
 * The mechanisms a change calls on live in rooms of their own (range.h, watch.h, deferred.h): finding,
 * locking, walking and protecting a range (range.c), write watch (watch.c),
 * the books ahead of the hardware - stale and pending pages (deferred.c). This
 * file decides what a call does; it must never talk to the kernel about a
 * mechanism's own state (a bitmap, a registration, a purge) itself.
 *
 * Locks: a reservation's writers hold its stripe lock; creating a reservation
 * holds the arena lock only while granules are chosen. No system call is made
 * under the arena lock except to map a new arena (and, in arena_trim, to unmap
 * unused ones).
 */
#include <string.h>

#include "deferred.h"
#include "watch.h"

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

/* Huge pages change only whole (mprotect refuses less); a decommitted one would
 * go back to the pool, and a later touch could find the pool empty (SIGBUS). */
static bool large_aligned(uintptr_t start, uintptr_t end)
{
    size_t large = geometry_large_page();
    return large && start % large == 0 && end % large == 0;
}

static void heap_account(struct manager *m, const struct reservation *r, size_t added,
                         size_t removed)
{
    if (r->flags & RES_HEAP) {
        counter_add(&m->heap_bytes, added);
        counter_sub(&m->heap_bytes, removed);
    }
}

/* ---- the change ----------------------------------------------------------------------- */

/* The discard of a decommit that does not wait: its committed pages, and any
 * pending ones in [start, end) (they turn reserved with them, and must read
 * zero when committed again). */
static HRESULT discard_committed(struct manager *m, struct locked *l, const struct survey *s, uintptr_t start,
                                 uintptr_t end, uintptr_t spare[2])
{
    uint64_t first = (start - l->base) >> g_page_shift, last = (end - l->base) >> g_page_shift;
    bool pending = (l->r->flags & RES_PENDING) && pending_in(l->r, first, last);
    uintptr_t from = pending ? start : s->committed_start, to = pending ? end : s->committed_end;
    int err = os_discard((void *)from, to - from);
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
        range_survey_to(m, l, start, end, s->new_prot, s);
    }
    uint64_t first = (start - l->base) >> g_page_shift, last = (end - l->base) >> g_page_shift;
    uintptr_t spare[2];
    bool discard = attr == 0 && s->committed_pages;
    /* A decommit may end stale (below): buffers for either outcome, before
     * anything changes. */
    bool defer = discard && pending_defers(m, r);
    uint32_t count = reservation_count_after(r, first, last, attr);
    if (discard && s->prot_differs) {
        uint32_t stale_count = reservation_count_after(r, first, last, ATTR_STALE);
        count = stale_count > count ? stale_count : count;
    }
    if (defer) {
        uint32_t pending_count = reservation_count_after(r, first, last, ATTR_PENDING);
        count = pending_count > count ? pending_count : count;
    }
    int err = reservation_prepare(&l->stripe->slab, r, count, attr == 0, spare); /* a decommit never maps */
    if (err)
        return os_refused(m, err, "mmap of a run buffer");
    HRESULT hr;
    /* Recommitted stale pages read zero, whatever was written to them while
     * only the books protected them. They are reserved in the books: a refused
     * discard leaves nothing changed. */
    if (attr && s->stale_start && (hr = stale_discard(m, l, s)) != S_OK) {
        reservation_unprepare(&l->stripe->slab, spare);
        return hr;
    }
    /* Decommit: the memory goes back to the OS at once, and the pages read
     * zero when committed again. The discard comes first: the kernel then
     * changes the protection of no page it is about to drop (10-14% of the
     * calls' time), and flushes the other CPUs' TLBs once, not twice. A discard
     * cannot be undone, and need not be: should the mprotect after it be
     * refused (the mapping ceiling), the decommit stands, its pages stale until
     * the kernel lets them have their protection. */
    if (discard && !defer && (hr = discard_committed(m, l, s, start, end, spare)) != S_OK)
        return hr;
    unsigned applied = attr;
    struct watched *watched = watched_res(m, r);
    if (attr && watched) {
        if ((hr = watch_protect(m, l, start, end, attr)) != S_OK) {
            reservation_unprepare(&l->stripe->slab, spare);
            return hr;
        }
    } else if (s->prot_differs) {
        hr = discard ? range_protect_back(m, l, start, end, s->new_prot) : range_protect(m, l, start, end, s->new_prot);
        if (hr == E_OUTOFMEMORY && discard) {
            applied = ATTR_STALE; /* the mapping ceiling: the decommit stands */
            hr = S_OK;
            if (defer) { /* a stale page is a discarded one */
                defer = false;
                if ((hr = discard_committed(m, l, s, start, end, spare)) != S_OK)
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
        bool writable = (base & OS_PROT_WRITE) && !(attr & PAGE_GUARD) && !watched;
        if ((err = pending_zero(l, start, end, writable)) != 0) { /* before anything is published */
            reservation_unprepare(&l->stripe->slab, spare);
            return range_undo_protect(m, l, start, end,
                                      os_refused(m, err, "madvise(MADV_DONTNEED) of pending pages"));
        }
    }
    deferred_note(m, l, applied);
    size_t before = range_transitions(m, r, first, last), hidden = stale_book_protected(m, r, first, last);
    size_t waiting = pending_in(r, first, last);
    if (r->flags & RES_WRITE_WATCH)
        watch_changed(m, l, s, start, end, attr, applied);
    reservation_apply(&l->stripe->slab, r, first, last, applied, spare);
    counter_shift(&m->mapping_estimate, range_transitions(m, r, first, last) - before);
    counter_shift(&m->book_protected, stale_book_protected(m, r, first, last) - hidden);
    counter_shift(&m->pending_pages, pending_in(r, first, last) - waiting);
    if (attr) {
        size_t newly = ((end - start) >> g_page_shift) - s->committed_pages;
        r->flags |= RES_TOUCHED | ((r->flags & RES_DECOMMITTED) ? RES_RECOMMITS : 0);
        heap_account(m, r, newly << g_page_shift, 0);
    } else {
        if (s->committed_pages)
            r->flags |= RES_DECOMMITTED;
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
    /* Stale slack at the address is free to the caller, as on Windows: it
     * gets slack's protection first, or the reservation is refused for want
     * of the kernel's resources (nothing changed). */
    if (base && atomic_load_explicit(&m->stale_slacks, memory_order_relaxed) &&
        (hr = stale_slack_clear(m, base, base + bytes)) != S_OK)
        goto unreserve;
    if (type & MEM_LARGE_PAGES)
        hr = arena_reserve_large(m, base, bytes, attr, protect_to_os(attr, m->compact), &r);
    else
        hr = arena_reserve(m, base, bytes, (type & MEM_TOP_DOWN) != 0,
                           (flags & VM_ALIGN_4M) ? (size_t)4 << 20 : 0, attr, &r);
    if (hr != S_OK)
        goto unreserve;
    uintptr_t at = atomic_load_explicit(&r->base, memory_order_relaxed);
    if ((type & MEM_WRITE_WATCH) && (hr = watch_begin(m, r, at, bytes, emulate)) != S_OK)
        goto abandon;
    if (attr && (hr = policy_charge(m, bytes, level)) != S_OK)
        goto unwatch;
    if (flags & VM_HEAP)
        r->flags |= RES_HEAP | RES_TOUCHED | ((flags & VM_HEAP_LARGE) ? RES_HEAP_LARGE : 0);
    res_set_alloc_protect(r, protect); /* not published yet */
    /* (with emulated write watch, committed pages start clean: without write) */
    int prot = range_page_prot(watched_res(m, r), attr, res_compact(m, r), 0), slack = reserved_prot(m->compact);
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
        counter_add(&m->mapping_estimate, range_transitions(m, r, 0, bytes >> g_page_shift));
    heap_account(m, r, attr ? bytes : 0, 0);
    arena_publish(m, r);
    counter_add(&m->reservations, 1);
    *out = (void *)at;
    return S_OK;

uncharge:
    policy_uncharge(m, attr ? bytes : 0);
unwatch:
    if (r->flags & RES_WRITE_WATCH)
        hr = watch_abandon(m, r, at, bytes, hr);
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
    HRESULT hr = range_lock(m, *start, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), flags, l);
    if (hr != S_OK)
        return hr;
    if (*end > l->end)
        return range_unlock(m, l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
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
        range_survey(m, &l, start, end, protect, &s);
        size_t need = (((end - start) >> g_page_shift) - s.committed_pages) << g_page_shift;
        if (need > charged && !policy_try_charge(m, need - charged, level)) {
            hr = range_unlock(m, &l, S_OK);
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
        hr = range_unlock(m, &l, changed);
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
        return range_unlock(m, &l, E_INVALIDARG); /* huge pages are never discarded */
    struct survey s;
    range_survey(m, &l, start, end, 0, &s);
    /* Windows accepts reserved pages in the range and leaves them alone. */
    if (type == MEM_RESET && s.committed_pages) {
        int err = os_reset((void *)s.committed_start, s.committed_end - s.committed_start);
        if (err)
            return range_unlock(m, &l, os_refused(m, err, "madvise(MADV_FREE)"));
        l.r->flags |= RES_TOUCHED | RES_WAS_RESET;
    } else if (type == MEM_RESET_UNDO && (l.r->flags & RES_WAS_RESET)) {
        /* Linux cannot say whether the kernel dropped a lazily freed page: a
         * dropped page reads zero, like a page that was zero. hostmem vouches
         * only for reservations that were never reset. */
        return range_unlock(m, &l, HOSTMEM_E_CONTENTS_LOST);
    }
    hr = range_unlock(m, &l, S_OK);
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
    size_t large = (type & MEM_LARGE_PAGES) ? geometry_large_page() : 0;
    if (large && (size % large || a % large))
        return E_INVALIDARG; /* Windows: whole large pages, at a large-page address */
    /* what may execute: after every argument check, before anything changes
     * (MEM_RESET ignores protect) */
    if (!(type & (MEM_RESET | MEM_RESET_UNDO)) && (protect & PROTECT_EXECUTABLE) &&
        (hr = policy_code_refusal(m, protect)) != S_OK)
        return hr;
    if ((type & MEM_LARGE_PAGES) && !large)
        return HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES);
    if (type == MEM_RESET || type == MEM_RESET_UNDO)
        return alloc_reset(m, a, size, type, out);
    if ((type & MEM_RESERVE) || !address)
        hr = alloc_reserve(m, a, size, type, protect, level, out, flags);
    else
        hr = alloc_commit(m, a, size, protect, level, out, flags);
    if (hr == E_OUTOFMEMORY)
        deferred_purge(m); /* memory is short: the pending discards at once */
    else if (hr == S_OK)
        deferred_purge_if_due(m);
    return hr;
}

/* ---- VirtualFree ------------------------------------------------------------------- */

/* A standalone reservation kept as stale slack whose pages all took slack's
 * protection: its runs say so (one run of reserved pages, nobody's heap, so
 * that reserved means slack's protection), and the mapping estimate follows. */
static void slack_runs_apply(struct manager *m, struct locked *l)
{
    struct reservation *r = l->r;
    uint64_t pages = res_pages(r);
    size_t before = range_transitions(m, r, 0, pages);
    r->flags &= ~(RES_HEAP | RES_HEAP_LARGE);
    uintptr_t spare[2];
    if (reservation_prepare(&l->stripe->slab, r, 1, true, spare) != 0) {
        hm_unreachable("one run needs no buffer");
        return;
    }
    reservation_apply(&l->stripe->slab, r, 0, pages, 0, spare);
    counter_shift(&m->mapping_estimate, range_transitions(m, r, 0, pages) - before);
}

/* Is r, in strict mode, already what arena slack is - every page reserved,
 * none stale or waiting for its discard, so none present and every one with
 * reserved-page protection? Then its release changes no page (a reservation
 * decommitted, then released: the discard and the flush were the decommit's). */
static bool release_finds_slack(struct manager *m, const struct reservation *r)
{
    return !res_compact(m, r) && !(r->flags & (RES_STALE | RES_WRITE_WATCH | RES_HEAP | RES_WAS_RESET)) &&
           reservation_committed(r) == 0 && pending_in(r, 0, res_pages(r)) == 0;
}

static HRESULT release_locked(struct manager *m, struct locked *l)
{
    struct reservation *r = l->r;
    size_t bytes = l->end - l->base;
    bool stale = false;      /* kept as stale slack (deferred.c) */
    bool slack_runs = false; /* its hardware became slack's: the runs say so */
    if (r->flags & RES_STANDALONE) {
        /* Out of the address map before the address space can be mapped again
         * by anyone (radix.c relies on it); back in if the kernel refuses. */
        size_t span = granule_up(bytes);
        radix_store_range(l->base, l->base + span, 0, true);
        int err = os_unmap((void *)l->base, span);
        if (err) {
            /* The release stands all the same (the kernel refuses no munmap
             * of whole mappings for want of resources; a seam may): the pages
             * discarded, slack's protection where the kernel allows, the
             * mapping kept as stale slack until it can go. */
            os_refused(m, err, "munmap of a reservation");
            if (r->flags & RES_LARGE_PAGES) { /* huge pages change only whole, and are not discarded */
                arena_publish(m, r);
                return E_OUTOFMEMORY;
            }
            if ((err = os_discard((void *)l->base, bytes)) != 0)
                return os_refused_stuck(m, err, "madvise(MADV_DONTNEED) on release");
            struct survey s;
            range_survey_to(m, l, l->base, l->end, reserved_prot(m->compact), &s);
            if (s.prot_differs && range_protect_back(m, l, l->base, l->end, s.new_prot) == S_OK)
                slack_runs = true;
            stale = true;
        }
    } else if (((r->flags & RES_TOUCHED) && !release_finds_slack(m, r)) || res_compact(m, r)) {
        /* back to what arena slack is: reserved-page protection, zero. At the
         * mapping ceiling the kernel may refuse the protection: the release
         * stands all the same, its pages stale slack until it allows. */
        struct survey s;
        range_survey_to(m, l, l->base, l->end, reserved_prot(m->compact), &s);
        if (s.prot_differs) {
            stale = range_protect_back(m, l, l->base, l->end, s.new_prot) != S_OK;
        }
        int err = os_discard((void *)l->base, bytes);
        if (err)
            return os_refused_stuck(m, err, "madvise(MADV_DONTNEED) on release");
        HRESULT hr = watch_unregister(m, l);
        if (hr != S_OK)
            return hr;
    }
    size_t committed = reservation_committed(r);
    heap_account(m, r, 0, committed << g_page_shift);
    struct watched *watched = watch_slot_of(m, r);
    deferred_forget(m, l);
    if (slack_runs) /* nobody's heap now: its pages are slack's */
        slack_runs_apply(m, l);
    if (stale) { /* its hardware, and so its mappings, stay as they are for now */
        stale_slack_keep(m, l);
    } else {
        atomic_fetch_sub_explicit(&m->mapping_estimate, range_transitions(m, r, 0, res_pages(r)),
                                  memory_order_relaxed);
        arena_unreserve(m, r);
        watch_give_back(m, watched);
    }
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
    hr = range_lock(m, page, HOST_E_INVALIDOPERATION, flags, &l); /* rule 3 */
    if (hr != S_OK)
        return hr;
    if (size == 0 && page != l.base)
        return range_unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)); /* rule 4 */
    uintptr_t start = page, end = l.end;
    if (size != 0) {
        bool overflow = false;
        end = page_up_checked((uintptr_t)address, size, &overflow);
        if (overflow || end > l.end)
            return range_unlock(m, &l, E_INVALIDARG); /* rule 5 */
    }
    if (type == MEM_RELEASE) {
        hr = range_unlock(m, &l, release_locked(m, &l));
    } else {
        struct survey s;
        range_survey(m, &l, start, end, 0, &s);
        if (s.committed_pages == 0)
            return range_unlock(m, &l, S_OK);
        hr = range_unlock(m, &l, change_range(m, &l, start, end, 0, &s));
    }
    if (hr == S_OK && !l.went_stale)
        stale_restore_all(m); /* mappings may have come back */
    deferred_purge_if_due(m);
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
    if ((protect & PROTECT_EXECUTABLE) && (hr = policy_code_refusal(m, protect)) != S_OK)
        return hr; /* before the range is looked at: nothing changes */
    struct locked l;
    uintptr_t start, end;
    hr = lock_pages(m, (uintptr_t)address, size ? size : 1, 0, &l, &start, &end);
    if (hr != S_OK)
        return hr;
    protect = allocation_wide(l.r, protect);
    struct survey s;
    range_survey(m, &l, start, end, protect, &s);
    if (s.any_reserved)
        return range_unlock(m, &l, HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    DWORD previous = attr_visible(s.first_attr);
    bool watched = (l.r->flags & RES_WRITE_WATCH) != 0;
    hr = watched ? watch_capture_ready(m, &l) : S_OK;
    if (hr == S_OK && (hr = change_range(m, &l, start, end, protect, &s)) == S_OK && watched)
        watch_capture(m, &l, start, end);
    hr = range_unlock(m, &l, hr);
    if (hr == S_OK)
        *old = previous;
    return hr;
}

/* ---- shutdown -------------------------------------------------------------------------- */

void vm_release_all(struct manager *m)
{
    arena_destroy_all(m);
    watch_release_all(m);
    atomic_store(&m->committed_bytes, 0);
    atomic_store(&m->reserved_bytes, 0);
    atomic_store(&m->reservations, 0);
}

/* ---- the counters the map implies ------------------------------------------------------- */

void vm_tally(struct manager *m, const struct reservation *r, struct tally *t)
{
    uint64_t pages = res_pages(r);
    if (res_is_stale_slack(r)) { /* released: its hardware alone is still counted */
        t->mappings += range_transitions(m, r, 0, pages);
        t->book_protected += stale_slack_pages(m, r);
        t->stale_slacks++;
        return;
    }
    size_t held = reservation_committed(r) << g_page_shift;
    t->reservations++;
    t->reserved += pages << g_page_shift;
    t->committed += held;
    if (r->flags & RES_HEAP)
        t->heap += held;
    t->mappings += range_transitions(m, r, 0, pages);
    t->book_protected += stale_book_protected(m, r, 0, pages);
    t->pending += pending_in(r, 0, pages);
}

/* ---- fork -------------------------------------------------------------------------------- */

struct recount {
    struct manager *m;
    struct tally tally;
};

static int recount_step(void *context, uintptr_t at, uintptr_t entry, struct reservation *r)
{
    (void)entry;
    struct recount *c = context;
    if (r) {
        vm_tally(c->m, r, &c->tally);
        if (!res_is_stale_slack(r))
            watch_after_fork(c->m, r, at);
    }
    return 0;
}

/*
 * After a fork, in the child: what vanished threads were making goes
 * (arena_after_fork), then the counters are recounted from the map - a thread
 * the child does not have may have charged the budget or reserved address space
 * for a change it never made. Every lock is this thread's.
 */
void vm_after_fork(struct manager *m)
{
    arena_after_fork(m);
    watch_slots_after_fork(m);
    struct recount c = {m, {0}};
    uint32_t slot = 0;
    for (struct arena *a; (a = arena_next(m, &slot)) != NULL;) {
        c.tally.mappings++; /* the arena's own */
        arena_walk(m, a, recount_step, &c);
    }
    atomic_store(&m->reservations, c.tally.reservations);
    atomic_store(&m->reserved_bytes, c.tally.reserved);
    atomic_store(&m->committed_bytes, c.tally.committed);
    atomic_store(&m->heap_bytes, c.tally.heap);
    atomic_store(&m->mapping_estimate, c.tally.mappings);
    atomic_store(&m->book_protected, c.tally.book_protected);
    atomic_store(&m->pending_pages, c.tally.pending);
    atomic_store(&m->stale_slacks, c.tally.stale_slacks);
}
