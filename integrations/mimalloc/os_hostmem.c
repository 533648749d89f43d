/*
 * os_hostmem.c - mimalloc's OS layer on hostmem.
 *
 * Every page mimalloc uses is reserved, committed, decommitted, reset, protected
 * and released through ONE IHostMemoryManager, with the Win32 semantics that
 * interface wraps. This file replaces mimalloc 2.0.9's src/os.c (it defines the
 * same _mi_os_* functions); mimalloc-hostmem.patch makes src/static.c include it
 * when mimalloc is built with -DMI_HOSTMEM.
 *
 * The model is mimalloc's own Windows path, because the CLR's GC asks a host for
 * the same things:
 *   reserve    VirtualAlloc(MEM_RESERVE [| MEM_COMMIT] [| MEM_LARGE_PAGES])
 *   commit     VirtualAlloc(MEM_COMMIT) of every page the range touches
 *   decommit   VirtualFree(MEM_DECOMMIT) of the pages inside the range
 *   reset      VirtualAlloc(MEM_RESET) of the pages inside the range
 *   protect    VirtualProtect(PAGE_NOACCESS / PAGE_READWRITE), pages inside the range
 *   release    VirtualFree(base, 0, MEM_RELEASE): a reservation goes back whole
 * always PAGE_READWRITE and eTaskCritical: a request over the budget is refused at
 * once, and mimalloc gives the program NULL.
 *
 * Invariants:
 *   - one manager per process: created on mimalloc's first OS call (or handed over
 *     with mi_hostmem_use) and never released, because mimalloc's pages live as
 *     long as the process and a free() run by a late exit handler must find them;
 *   - every allocation the layer returns lies in one reservation and its free
 *     releases that reservation whole;
 *   - a refusal reaches mimalloc as NULL or false, never as an assertion.
 * Must never: call mmap, mprotect, madvise or munmap itself (hostmem owns the
 * pages), or malloc (when mimalloc overrides malloc, this layer IS under malloc).
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include "mimalloc.h"
#include "mimalloc-internal.h"
#include "mimalloc-atomic.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef COBJMACROS
#define COBJMACROS
#endif
#include "hostmem.h"
#include "mi_hostmem.h"

#define HM_MiB ((size_t)1 << 20)
#define HM_GiB ((size_t)1 << 30)

/* Every call asks at the same level: mimalloc has no use for a wait (it retries
 * a refused allocation itself, after collecting), and a refusal it understands. */
#define HM_LEVEL eTaskCritical

/* ---- geometry (set by _mi_os_init, before any other call) ------------------ */

static size_t hm_page = 4096;           /* hostmem_page_size() */
static size_t hm_granule = 64 * 1024;   /* hostmem_granularity(): where reservations start */
static size_t hm_large_page;            /* hostmem_large_page_minimum(); 0 = none */

/* ---- the layer's own counts (mi_hostmem_counts) ---------------------------- */

static struct {
    _Atomic size_t reserve, reserve_refused, release, release_refused;
    _Atomic size_t commit, commit_refused, decommit, decommit_refused;
    _Atomic size_t reset, reset_refused, protect, protect_refused, query;
    _Atomic size_t out_of_memory, large_tries, large_granted;
    _Atomic size_t aligned_retries, aligned_kept_whole, guard_on_reserved;
    _Atomic size_t window_misses, outside_window;
    _Atomic size_t live_reservations, metadata_live, metadata_bytes;
    _Atomic size_t kept_whole_live; /* over-sized reservations handed out by their interior */
} hm_count;

#define HM_ADD(field, n) atomic_fetch_add_explicit(&hm_count.field, (n), memory_order_relaxed)
#define HM_SUB(field, n) atomic_fetch_sub_explicit(&hm_count.field, (n), memory_order_relaxed)
#define HM_GET(field) atomic_load_explicit(&hm_count.field, memory_order_relaxed)

/* ---- the manager -----------------------------------------------------------
 * Created lazily, on the first OS call, so that a program can hand over its own
 * (mi_hostmem_use) before mimalloc needs one. When mimalloc overrides malloc,
 * that first call may come from inside malloc; a library that allocated from
 * malloc while creating the manager would come back here on the same thread.
 * That re-entry is refused (NULL: the inner malloc fails) rather than recursed
 * into; the library is malloc-free (issue 12), so it should never happen.
 */
enum { HM_NONE, HM_CREATING, HM_READY, HM_FAILED };
static _Atomic(IHostMemoryManager *) hm_manager;
static _Atomic int hm_state;
static _Atomic mi_threadid_t hm_creator; /* the thread inside hostmem_create */
static HRESULT hm_create_result;

static const char *hm_name(HRESULT hr)
{
    const char *name = hostmem_result_name(hr);
    return name != NULL ? name : "an unnamed result";
}

/* A byte count from the environment: digits with an optional K, M or G
 * (binary multiples), optionally followed by B or iB. */
static bool hm_env_bytes(const char *variable, size_t *out)
{
    const char *text = getenv(variable);
    if (text == NULL || *text == 0)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift != 0 && *end == 'i')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (errno != 0 || end == text || *end != 0 || value > (SIZE_MAX >> shift)) {
        _mi_warning_message("hostmem: %s=\"%s\" is not a byte count; ignored\n", variable, text);
        return false;
    }
    *out = (size_t)value << shift;
    return true;
}

static bool hm_env_flag(const char *variable)
{
    const char *text = getenv(variable);
    return text != NULL && *text != 0 && strcmp(text, "0") != 0;
}

static IHostMemoryManager *hm_create(void)
{
    for (;;) {
        int state = atomic_load_explicit(&hm_state, memory_order_acquire);
        if (state == HM_READY)
            return atomic_load_explicit(&hm_manager, memory_order_acquire);
        if (state == HM_FAILED)
            return NULL;
        if (state == HM_CREATING) {
            if (atomic_load_explicit(&hm_creator, memory_order_relaxed) == _mi_thread_id())
                return NULL; /* re-entered from inside hostmem_create: refuse, do not recurse */
            sched_yield();
            continue;
        }
        int expected = HM_NONE;
        if (!atomic_compare_exchange_strong(&hm_state, &expected, HM_CREATING))
            continue;
        atomic_store_explicit(&hm_creator, _mi_thread_id(), memory_order_relaxed);
        hostmem_config config;
        memset(&config, 0, sizeof config);
        config.size = sizeof config;
        size_t limit = 0;
        if (hm_env_bytes("HOSTMEM_MI_COMMIT_LIMIT", &limit))
            config.commit_limit = limit == 0 ? HOSTMEM_UNLIMITED : limit;
        if (hm_env_flag("HOSTMEM_MI_COMPACT"))
            config.flags |= HOSTMEM_COMPACT;
        if (hm_env_flag("HOSTMEM_MI_PURGE_AT_ONCE"))
            config.purge_delay_ms = HOSTMEM_PURGE_AT_ONCE; /* no deferred discard (docs/host.md) */
        IHostMemoryManager *manager = NULL;
        HRESULT hr = hostmem_create(&config, &manager);
        hm_create_result = hr;
        atomic_store_explicit(&hm_creator, 0, memory_order_relaxed);
        if (hr == S_OK) {
            atomic_store_explicit(&hm_manager, manager, memory_order_release);
            atomic_store_explicit(&hm_state, HM_READY, memory_order_release);
            return manager;
        }
        atomic_store_explicit(&hm_state, HM_FAILED, memory_order_release);
        _mi_error_message(ENOMEM, "hostmem: cannot create the memory manager: %s (0x%08x)\n",
                          hm_name(hr), (unsigned)hr);
        return NULL;
    }
}

static inline IHostMemoryManager *hm(void)
{
    IHostMemoryManager *manager = atomic_load_explicit(&hm_manager, memory_order_acquire);
    return mi_likely(manager != NULL) ? manager : hm_create();
}

bool mi_hostmem_use(IHostMemoryManager *manager)
{
    if (manager == NULL)
        return false;
    int expected = HM_NONE;
    if (!atomic_compare_exchange_strong(&hm_state, &expected, HM_CREATING))
        return false;
    IHostMemoryManager_AddRef(manager);
    atomic_store_explicit(&hm_manager, manager, memory_order_release);
    atomic_store_explicit(&hm_state, HM_READY, memory_order_release);
    return true;
}

IHostMemoryManager *mi_hostmem_manager(void)
{
    return hm();
}

void mi_hostmem_get_counts(mi_hostmem_counts *out)
{
    if (out == NULL)
        return;
    out->reserve = HM_GET(reserve);
    out->reserve_refused = HM_GET(reserve_refused);
    out->release = HM_GET(release);
    out->release_refused = HM_GET(release_refused);
    out->commit = HM_GET(commit);
    out->commit_refused = HM_GET(commit_refused);
    out->decommit = HM_GET(decommit);
    out->decommit_refused = HM_GET(decommit_refused);
    out->reset = HM_GET(reset);
    out->reset_refused = HM_GET(reset_refused);
    out->protect = HM_GET(protect);
    out->protect_refused = HM_GET(protect_refused);
    out->query = HM_GET(query);
    out->out_of_memory = HM_GET(out_of_memory);
    out->large_tries = HM_GET(large_tries);
    out->large_granted = HM_GET(large_granted);
    out->aligned_retries = HM_GET(aligned_retries);
    out->aligned_kept_whole = HM_GET(aligned_kept_whole);
    out->guard_on_reserved = HM_GET(guard_on_reserved);
    out->window_misses = HM_GET(window_misses);
    out->outside_window = HM_GET(outside_window);
    out->live_reservations = HM_GET(live_reservations);
    out->metadata_live = HM_GET(metadata_live);
    out->metadata_bytes = HM_GET(metadata_bytes);
}

/* ---- the calls, counted --------------------------------------------------- */

/* Says why a call failed. The budget's refusal is part of normal operation (the
 * program gets NULL), so it is only a verbose message; anything else is a warning. */
static void hm_refused(const char *what, const void *address, size_t size, HRESULT hr)
{
    if (hr == E_OUTOFMEMORY)
        _mi_verbose_message("hostmem: %s of %zu bytes at %p refused: out of memory\n", what, size,
                            address);
    else
        _mi_warning_message("hostmem: %s of %zu bytes at %p refused: %s (0x%08x)\n", what, size,
                            address, hm_name(hr), (unsigned)hr);
}

/* VirtualAlloc; *result gets its HRESULT. Counted by kind: reserve (the type has
 * MEM_RESERVE), reset, or commit. */
static void *hm_alloc(void *address, size_t size, DWORD type, HRESULT *result)
{
    IHostMemoryManager *manager = hm();
    void *memory = NULL;
    HRESULT hr = manager == NULL ? HOST_E_CLRNOTAVAILABLE
                                 : IHostMemoryManager_VirtualAlloc(manager, address, size, type,
                                                                   PAGE_READWRITE, HM_LEVEL,
                                                                   &memory);
    bool ok = hr == S_OK;
    if (type & MEM_RESERVE) {
        HM_ADD(reserve, 1);
        if (ok)
            HM_ADD(live_reservations, 1);
        else
            HM_ADD(reserve_refused, 1);
    } else if (type & MEM_RESET) {
        HM_ADD(reset, 1);
        if (!ok)
            HM_ADD(reset_refused, 1);
    } else {
        HM_ADD(commit, 1);
        if (!ok)
            HM_ADD(commit_refused, 1);
    }
    if (hr == E_OUTOFMEMORY)
        HM_ADD(out_of_memory, 1);
    *result = hr;
    return ok ? memory : NULL;
}

static HRESULT hm_free(void *address, size_t size, DWORD type)
{
    IHostMemoryManager *manager = hm();
    HRESULT hr = manager == NULL ? HOST_E_CLRNOTAVAILABLE
                                 : IHostMemoryManager_VirtualFree(manager, address, size, type);
    if (type == MEM_RELEASE) {
        HM_ADD(release, 1);
        if (hr == S_OK)
            HM_SUB(live_reservations, 1);
        else
            HM_ADD(release_refused, 1);
    } else {
        HM_ADD(decommit, 1);
        if (hr != S_OK)
            HM_ADD(decommit_refused, 1);
    }
    return hr;
}

static HRESULT hm_query(const void *address, MEMORY_BASIC_INFORMATION *info)
{
    IHostMemoryManager *manager = hm();
    SIZE_T written = 0;
    HM_ADD(query, 1);
    if (manager == NULL)
        return HOST_E_CLRNOTAVAILABLE;
    return IHostMemoryManager_VirtualQuery(manager, (void *)address, info, sizeof *info, &written);
}

static HRESULT hm_protect_call(void *address, size_t size, DWORD protection)
{
    IHostMemoryManager *manager = hm();
    DWORD old = 0;
    HM_ADD(protect, 1);
    HRESULT hr = manager == NULL ? HOST_E_CLRNOTAVAILABLE
                                 : IHostMemoryManager_VirtualProtect(manager, address, size,
                                                                     protection, &old);
    if (hr != S_OK)
        HM_ADD(protect_refused, 1);
    return hr;
}

/* Releases the reservation that holds p. p is its base, except for a reservation
 * kept whole by hm_reserve_aligned (only then is VirtualQuery asked, so that a
 * run without those makes no failing call). */
static bool hm_release(void *p, size_t size)
{
    void *base = p;
    if (atomic_load_explicit(&hm_count.kept_whole_live, memory_order_relaxed) != 0) {
        MEMORY_BASIC_INFORMATION info;
        if (hm_query(p, &info) == S_OK && info.AllocationBase != NULL && info.AllocationBase != p) {
            base = info.AllocationBase;
            HM_SUB(kept_whole_live, 1);
        }
    }
    HRESULT hr = hm_free(base, 0, MEM_RELEASE);
    if (hr != S_OK)
        hm_refused("release", p, size, hr);
    return hr == S_OK;
}

/* ---- reserving -------------------------------------------------------------- */

/*
 * Reserves size bytes at an address aligned to alignment (a power of two), with
 * type MEM_RESERVE [| MEM_COMMIT] [| MEM_LARGE_PAGES]. Reservations start on a
 * granule, so alignments up to it come free. A larger one is found the way
 * Win32 allows without VirtualAlloc2: reserve size + alignment, note the aligned
 * address inside, release, and reserve again exactly there. Inside an arena the
 * reserve and the release make no system call. Another thread may take the
 * address in between (ERROR_INVALID_ADDRESS); after a few tries the over-sized
 * reservation is kept whole and its aligned interior handed out: only address
 * space is wasted (nothing outside the aligned part is committed).
 */
static void *hm_reserve_aligned(size_t size, size_t alignment, DWORD type, HRESULT *result)
{
    if (alignment <= hm_granule)
        return hm_alloc(NULL, size, type, result);
    if (size > SIZE_MAX - alignment) {
        *result = E_OUTOFMEMORY;
        return NULL;
    }
    const size_t wide_size = size + alignment - hm_granule;
    for (int attempt = 0; attempt < 4; attempt++) {
        void *wide = hm_alloc(NULL, wide_size, MEM_RESERVE, result);
        if (wide == NULL)
            return NULL;
        void *aligned = (void *)_mi_align_up((uintptr_t)wide, alignment);
        if (!hm_release(wide, wide_size)) {
            *result = E_FAIL;
            return NULL;
        }
        void *p = hm_alloc(aligned, size, type, result);
        if (p != NULL || *result != HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS))
            return p; /* placed, or a real refusal (the budget, large pages) */
        HM_ADD(aligned_retries, 1);
    }
    if (type & MEM_LARGE_PAGES)
        return NULL; /* large pages are reserved and committed in one call, or not at all */
    void *wide = hm_alloc(NULL, wide_size, MEM_RESERVE, result);
    if (wide == NULL)
        return NULL;
    void *aligned = (void *)_mi_align_up((uintptr_t)wide, alignment);
    if ((type & MEM_COMMIT) && hm_alloc(aligned, size, MEM_COMMIT, result) == NULL) {
        hm_free(wide, 0, MEM_RELEASE);
        return NULL;
    }
    HM_ADD(aligned_kept_whole, 1);
    HM_ADD(kept_whole_live, 1);
    return aligned;
}

/*
 * mimalloc finds the segment of a pointer in a bitmap that covers the addresses
 * below 20 TiB (its "segment map", segment-cache.c): debug builds check every
 * free against it and mi_is_in_heap_region() answers from it. hostmem's arenas
 * lie at 32 TiB, so memory that holds segments asks for an address in a window
 * from 2 TiB instead (a reservation at a given address outside the arenas is a
 * mapping of its own, as every segment is under stock mimalloc). A cursor moves
 * through the window by each request's aligned size and wraps, so that released
 * addresses come round again: hostmem's address map keeps what it learns about
 * every GiB ever used. An address in use is skipped; when a few in a row are,
 * the memory goes anywhere (and is outside the segment map: counted).
 */
#define HM_WINDOW_START ((uintptr_t)2 << 40)
#define HM_WINDOW_SIZE ((uintptr_t)1 << 40)
#define HM_WINDOW_TRIES 8
static _Atomic uintptr_t hm_window_base;   /* 0 until the first request */
static _Atomic uintptr_t hm_window_cursor; /* bytes handed out so far, modulo the window */

static uintptr_t hm_window(void)
{
    uintptr_t base = atomic_load_explicit(&hm_window_base, memory_order_relaxed);
    if (base != 0)
        return base;
    base = HM_WINDOW_START;
#if MI_SECURE > 0 || MI_DEBUG == 0
    /* Where the window starts is random, in GiB steps over 1 TiB, as mimalloc
     * randomises its own hints; debug builds keep addresses repeatable. */
    base += (_mi_os_random_weak((uintptr_t)&hm_window_base) % 1024) * HM_GiB;
#endif
    uintptr_t expected = 0;
    if (!atomic_compare_exchange_strong(&hm_window_base, &expected, base))
        base = expected;
    return base;
}

static void *hm_reserve_in_window(size_t size, size_t alignment, DWORD type, HRESULT *result)
{
    *result = HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS);
    if (alignment < hm_granule)
        alignment = hm_granule;
    if (size > HM_WINDOW_SIZE / 16 || alignment > HM_WINDOW_SIZE / 16)
        return NULL;
    const uintptr_t base = hm_window();
    const uintptr_t step = _mi_align_up(size, alignment);
    for (int attempt = 0; attempt < HM_WINDOW_TRIES; attempt++) {
        uintptr_t offset = atomic_fetch_add_explicit(&hm_window_cursor, step, memory_order_relaxed);
        uintptr_t at = _mi_align_up(base + offset % HM_WINDOW_SIZE, alignment);
        void *p = hm_alloc((void *)at, size, type, result);
        if (p != NULL || *result != HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS))
            return p; /* placed, or a real refusal (the budget, large pages) */
        HM_ADD(window_misses, 1);
    }
    return NULL;
}

/* Where an allocation goes: in the window if mimalloc will look for segments in
 * it, else wherever hostmem puts it. */
static void *hm_place(size_t size, size_t alignment, bool in_segment_map, DWORD type,
                      HRESULT *result)
{
    if (in_segment_map) {
        void *p = hm_reserve_in_window(size, alignment, type, result);
        if (p != NULL || *result != HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS))
            return p;
        if (type & MEM_LARGE_PAGES)
            return NULL; /* not worth an address mimalloc cannot find */
        HM_ADD(outside_window, 1);
    }
    return hm_reserve_aligned(size, alignment, type, result);
}

/* After a refused large-page request, the next few go straight to normal pages:
 * a machine without a huge-page pool refuses every one, and mimalloc would ask
 * for every segment. */
static _Atomic size_t hm_large_backoff;

static bool hm_large_wanted(size_t size, size_t alignment)
{
    if (hm_large_page == 0 || !mi_option_is_enabled(mi_option_large_os_pages))
        return false;
    if (size % hm_large_page != 0 || alignment % hm_large_page != 0)
        return false;
    size_t backoff = atomic_load_explicit(&hm_large_backoff, memory_order_relaxed);
    if (backoff > 0) {
        atomic_compare_exchange_strong(&hm_large_backoff, &backoff, backoff - 1);
        return false;
    }
    return true;
}

/* The common allocation path: size is a multiple of the page, alignment a power
 * of two (0 or 1: none). Updates mimalloc's statistics as its OS layer must. */
static void *hm_os_alloc(size_t size, size_t alignment, bool in_segment_map, bool commit,
                         bool allow_large, bool *is_large)
{
    *is_large = false;
    if (size == 0)
        return NULL;
    if (alignment < hm_page)
        alignment = hm_page;
    HRESULT hr = S_OK;
    void *p = NULL;
    if (commit && allow_large && hm_large_wanted(size, alignment)) {
        HM_ADD(large_tries, 1);
        p = hm_place(size, alignment, in_segment_map, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES,
                     &hr);
        if (p != NULL) {
            HM_ADD(large_granted, 1);
            *is_large = true;
        } else {
            atomic_store_explicit(&hm_large_backoff, 8, memory_order_relaxed);
            _mi_verbose_message("hostmem: no large pages for %zu bytes (%s); using normal pages\n",
                                size, hm_name(hr));
        }
    }
    if (p == NULL)
        p = hm_place(size, alignment, in_segment_map, MEM_RESERVE | (commit ? MEM_COMMIT : 0), &hr);
    _mi_stat_counter_increase(&_mi_stats_main.mmap_calls, 1);
    if (p == NULL) {
        hm_refused(commit ? "reserve+commit" : "reserve", NULL, size, hr);
        return NULL;
    }
    _mi_stat_increase(&_mi_stats_main.reserved, size);
    if (commit)
        _mi_stat_increase(&_mi_stats_main.committed, size);
    return p;
}

/* ---- the page ranges of commit, decommit, reset and protect ------------------
 * mimalloc commits liberally (every page the range touches must become usable)
 * and gives back conservatively (never a page holding a byte outside the range).
 */
static bool hm_pages(void *address, size_t size, bool touching, uint8_t **start, size_t *bytes)
{
    *start = NULL;
    *bytes = 0;
    if (address == NULL || size == 0 || (uintptr_t)address > UINTPTR_MAX - size)
        return false;
    uintptr_t from = (uintptr_t)address, to = from + size;
    from = touching ? _mi_align_down(from, hm_page) : _mi_align_up(from, hm_page);
    to = touching ? _mi_align_up(to, hm_page) : _mi_align_down(to, hm_page);
    if (to <= from)
        return false;
    *start = (uint8_t *)from;
    *bytes = to - from;
    return true;
}

/* Sets the protection of the committed pages inside the range. A page that is
 * only reserved (mimalloc decommitted it, e.g. a guard page of a segment whose
 * tail went back) is already inaccessible, and VirtualProtect would refuse it:
 * it is skipped, and takes PAGE_READWRITE when mimalloc commits it again, as on
 * Windows. */
static bool hm_protect(void *address, size_t size, DWORD protection)
{
    uint8_t *start;
    size_t bytes;
    if (!hm_pages(address, size, false, &start, &bytes))
        return false;
    HRESULT hr = hm_protect_call(start, bytes, protection);
    if (hr == S_OK)
        return true;
    if (hr != HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)) {
        hm_refused("protect", start, bytes, hr);
        return false;
    }
    /* Some page is not committed: protect region by region. */
    uint8_t *end = start + bytes;
    for (uint8_t *at = start; at < end;) {
        MEMORY_BASIC_INFORMATION info;
        hr = hm_query(at, &info);
        if (hr != S_OK || info.AllocationBase == NULL || info.RegionSize == 0) {
            hm_refused("protect", at, (size_t)(end - at), hr == S_OK ? E_INVALIDARG : hr);
            return false;
        }
        uint8_t *region_end = (uint8_t *)info.BaseAddress + info.RegionSize;
        if (region_end > end)
            region_end = end;
        if (info.State == MEM_COMMIT) {
            hr = hm_protect_call(at, (size_t)(region_end - at), protection);
            if (hr != S_OK) {
                hm_refused("protect", at, (size_t)(region_end - at), hr);
                return false;
            }
        } else {
            HM_ADD(guard_on_reserved, 1);
        }
        at = region_end;
    }
    return true;
}

/* ---- mimalloc's OS interface -------------------------------------------------- */

void _mi_os_init(void)
{
    hm_page = hostmem_page_size();
    hm_granule = hostmem_granularity();
    hm_large_page = hostmem_large_page_minimum();
}

/* Commit is charged against the host's budget, as on Windows: nothing is overcommitted. */
bool _mi_os_has_overcommit(void)
{
    return false;
}

size_t _mi_os_page_size(void)
{
    return hm_page;
}

size_t _mi_os_large_page_size(void)
{
    return hm_large_page != 0 ? hm_large_page : hm_page;
}

/* Small requests round to the page; from 1 MiB on to the granule, because a
 * reservation takes whole granules anyway and a huge block can then grow in
 * place into the rest of its last granule. */
size_t _mi_os_good_alloc_size(size_t size)
{
    const size_t unit = size < HM_MiB ? hm_page : hm_granule;
    if (size > SIZE_MAX - unit)
        return size;
    return _mi_align_up(size, unit);
}

void *_mi_os_alloc(size_t size, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    if (size == 0)
        return NULL;
    bool is_large = false;
    /* mimalloc's own metadata (a thread's heap, an arena's bitmaps): no segment
     * lives there, so it may go anywhere. */
    size = _mi_os_good_alloc_size(size);
    void *p = hm_os_alloc(size, 0, false, true, false, &is_large);
    if (p != NULL) {
        HM_ADD(metadata_live, 1);
        HM_ADD(metadata_bytes, size);
    }
    return p;
}

void _mi_os_free_ex(void *p, size_t size, bool was_committed, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    if (p == NULL || size == 0)
        return;
    size = _mi_os_good_alloc_size(size);
    hm_release(p, size);
    if (was_committed)
        _mi_stat_decrease(&_mi_stats_main.committed, size);
    _mi_stat_decrease(&_mi_stats_main.reserved, size);
}

/* The other half of _mi_os_alloc: mimalloc's metadata. */
void _mi_os_free(void *p, size_t size, mi_stats_t *stats)
{
    if (p == NULL || size == 0)
        return;
    HM_SUB(metadata_live, 1);
    HM_SUB(metadata_bytes, _mi_os_good_alloc_size(size));
    _mi_os_free_ex(p, size, true, stats);
}

void *_mi_os_alloc_aligned(size_t size, size_t alignment, bool commit, bool *large,
                           mi_stats_t *stats)
{
    MI_UNUSED(stats);
    if (size == 0)
        return NULL;
    size = _mi_os_good_alloc_size(size);
    alignment = _mi_align_up(alignment, hm_page);
    if (!_mi_is_power_of_two(alignment))
        return NULL;
    bool allow_large = large != NULL && *large;
    bool is_large = false;
    void *p = hm_os_alloc(size, alignment, true, commit, allow_large, &is_large);
    if (large != NULL)
        *large = is_large;
    return p;
}

/* An allocation whose p + offset is aligned (mimalloc's huge blocks with a large
 * alignment): aligned allocation of offset's slack more, the slack's pages given
 * back at once when they came committed. */
void *_mi_os_alloc_aligned_offset(size_t size, size_t alignment, size_t offset, bool commit,
                                  bool *large, mi_stats_t *stats)
{
    if (offset > MI_SEGMENT_SIZE || offset > size)
        return NULL;
    if (offset == 0)
        return _mi_os_alloc_aligned(size, alignment, commit, large, stats);
    const size_t slack = _mi_align_up(offset, alignment) - offset;
    if (size > SIZE_MAX - slack)
        return NULL;
    uint8_t *start = (uint8_t *)_mi_os_alloc_aligned(size + slack, alignment, commit, large, stats);
    if (start == NULL)
        return NULL;
    bool pinned = large != NULL && *large; /* large pages cannot be decommitted */
    if (commit && !pinned && slack > hm_page)
        _mi_os_decommit(start, slack, stats);
    return start + slack;
}

void _mi_os_free_aligned(void *p, size_t size, size_t alignment, size_t align_offset,
                         bool was_committed, mi_stats_t *stats)
{
    if (p == NULL)
        return;
    const size_t slack = _mi_align_up(align_offset, alignment) - align_offset;
    _mi_os_free_ex((uint8_t *)p - slack, size + slack, was_committed, stats);
}

bool _mi_os_commit(void *addr, size_t size, bool *is_zero, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    /* Newly committed pages read zero, but pages that were committed already keep
     * their contents; mimalloc cannot tell which, so neither does the layer. */
    if (is_zero != NULL)
        *is_zero = false;
    uint8_t *start;
    size_t bytes;
    if (!hm_pages(addr, size, true, &start, &bytes))
        return true;
    HRESULT hr;
    if (hm_alloc(start, bytes, MEM_COMMIT, &hr) == NULL) {
        hm_refused("commit", start, bytes, hr);
        return false;
    }
    /* mimalloc's own accounting counts the bytes asked for (segment.c adjusts
     * for overlaps on that basis). */
    _mi_stat_increase(&_mi_stats_main.committed, size);
    _mi_stat_counter_increase(&_mi_stats_main.commit_calls, 1);
    return true;
}

bool _mi_os_decommit(void *addr, size_t size, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    uint8_t *start;
    size_t bytes;
    if (!hm_pages(addr, size, false, &start, &bytes))
        return true;
    HRESULT hr = hm_free(start, bytes, MEM_DECOMMIT);
    if (hr != S_OK) {
        hm_refused("decommit", start, bytes, hr);
        return false;
    }
    _mi_stat_decrease(&_mi_stats_main.committed, size);
    return true;
}

/* The contents of the pages may go; they stay committed (and charged). */
bool _mi_os_reset(void *addr, size_t size, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    uint8_t *start;
    size_t bytes;
    if (!hm_pages(addr, size, false, &start, &bytes))
        return true;
    HRESULT hr;
    if (hm_alloc(start, bytes, MEM_RESET, &hr) == NULL) {
        hm_refused("reset", start, bytes, hr);
        return false;
    }
    _mi_stat_increase(&_mi_stats_main.reset, bytes);
    return true;
}

bool _mi_os_protect(void *addr, size_t size)
{
    return hm_protect(addr, size, PAGE_NOACCESS);
}

bool _mi_os_unprotect(void *addr, size_t size)
{
    return hm_protect(addr, size, PAGE_READWRITE);
}

/* ---- huge OS pages (mi_reserve_huge_os_pages_*) ---------------------------------
 * 1 GiB pieces of large pages, each its own reservation (reserved and committed
 * in one call, as large pages must be), placed one after the other from a
 * segment-aligned start so that mimalloc can manage them as one arena. Stops at
 * the first piece that cannot be had where it should go, or when max_msecs is
 * about to pass; mimalloc takes what was reserved. hostmem places no memory on a
 * NUMA node, so numa_node is not used.
 */
#define HM_HUGE_PIECE HM_GiB

void *_mi_os_alloc_huge_os_pages(size_t pages, int numa_node, mi_msecs_t max_msecs,
                                 size_t *pages_reserved, size_t *psize)
{
    MI_UNUSED(numa_node);
    if (pages_reserved != NULL)
        *pages_reserved = 0;
    if (psize != NULL)
        *psize = 0;
    if (pages == 0 || hm_large_page == 0 || HM_HUGE_PIECE % hm_large_page != 0)
        return NULL;
    const DWORD type = MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES;
    const mi_msecs_t started = _mi_clock_start();
    HRESULT hr = S_OK;
    HM_ADD(large_tries, 1);
    uint8_t *start = (uint8_t *)hm_place(HM_HUGE_PIECE, MI_SEGMENT_ALIGN, true, type, &hr);
    if (start == NULL) {
        _mi_verbose_message("hostmem: no huge OS pages: %s\n", hm_name(hr));
        return NULL;
    }
    HM_ADD(large_granted, 1);
    size_t done = 1;
    for (; done < pages; done++) {
        if (max_msecs > 0) {
            mi_msecs_t elapsed = _mi_clock_end(started);
            /* stop if the pieces so far say the rest would overrun twice over */
            if (elapsed > max_msecs || (elapsed / (mi_msecs_t)done) * (mi_msecs_t)pages > 2 * max_msecs) {
                _mi_warning_message("hostmem: huge page reservation stopped after %zu GiB (time)\n",
                                    done);
                break;
            }
        }
        uint8_t *want = start + done * HM_HUGE_PIECE;
        HM_ADD(large_tries, 1);
        if (hm_alloc(want, HM_HUGE_PIECE, type, &hr) == NULL) {
            _mi_verbose_message("hostmem: huge OS pages stop after %zu GiB: %s\n", done, hm_name(hr));
            break;
        }
        HM_ADD(large_granted, 1);
    }
    _mi_stat_increase(&_mi_stats_main.reserved, done * HM_HUGE_PIECE);
    _mi_stat_increase(&_mi_stats_main.committed, done * HM_HUGE_PIECE);
    if (pages_reserved != NULL)
        *pages_reserved = done;
    if (psize != NULL)
        *psize = done * HM_HUGE_PIECE;
    return start;
}

void _mi_os_free_huge_pages(void *p, size_t size, mi_stats_t *stats)
{
    MI_UNUSED(stats);
    if (p == NULL)
        return;
    for (uint8_t *piece = (uint8_t *)p; size >= HM_HUGE_PIECE; piece += HM_HUGE_PIECE, size -= HM_HUGE_PIECE) {
        hm_release(piece, HM_HUGE_PIECE);
        _mi_stat_decrease(&_mi_stats_main.committed, HM_HUGE_PIECE);
        _mi_stat_decrease(&_mi_stats_main.reserved, HM_HUGE_PIECE);
    }
}

/* ---- NUMA -----------------------------------------------------------------------
 * hostmem binds no memory to a node, so by itself the layer reports one node;
 * mimalloc's use_numa_nodes option can still ask it to spread its own caches
 * over more, keyed by the CPU's node.
 */
_Atomic(size_t) _mi_numa_node_count;

size_t _mi_os_numa_node_count_get(void)
{
    size_t count = mi_atomic_load_acquire(&_mi_numa_node_count);
    if (count == 0) {
        long wanted = mi_option_get(mi_option_use_numa_nodes);
        count = wanted > 0 ? (size_t)wanted : 1;
        mi_atomic_store_release(&_mi_numa_node_count, count);
    }
    return count;
}

int _mi_os_numa_node_get(mi_os_tld_t *tld)
{
    MI_UNUSED(tld);
    size_t count = _mi_os_numa_node_count();
    if (count <= 1)
        return 0;
    unsigned cpu = 0, node = 0;
    if (syscall(SYS_getcpu, &cpu, &node, NULL) != 0)
        return 0;
    return (int)(node % count);
}

/* ---- the exit report (HOSTMEM_MI_REPORT=1) -----------------------------------------
 * Runs as a destructor of the program, after mimalloc's own atexit work (its
 * destroy_on_exit included), which was registered while the program started.
 * It reads the statistics before validating, because validation may allocate and
 * mimalloc may be malloc. Written with write(2) from a stack buffer: no stdio
 * buffer, no malloc.
 */
static void hm_say(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void hm_say(const char *format, ...)
{
    char line[1024];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    if (n < 0)
        return;
    size_t length = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    for (size_t written = 0; written < length;) {
        ssize_t w = write(STDERR_FILENO, line + written, length - written);
        if (w <= 0)
            return;
        written += (size_t)w;
    }
}

__attribute__((destructor)) static void hm_exit_report(void)
{
    if (!hm_env_flag("HOSTMEM_MI_REPORT"))
        return;
    IHostMemoryManager *manager = atomic_load_explicit(&hm_manager, memory_order_acquire);
    if (manager == NULL) {
        int state = atomic_load(&hm_state);
        hm_say("hostmem_mi: no manager (%s)\n",
               state == HM_FAILED ? hm_name(hm_create_result) : "mimalloc made no OS call");
        return;
    }
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    HRESULT stats_hr = hostmem_get_stats(manager, &s);
    mi_hostmem_counts c;
    mi_hostmem_get_counts(&c);
    char why[512] = "";
    HRESULT valid = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    hm_say("hostmem_mi: stats=%s validate=%s%s%s\n", hm_name(stats_hr), hm_name(valid),
           valid == S_OK ? "" : " why=", valid == S_OK ? "" : why);
    hm_say("hostmem_mi: left reservations=%zu committed_bytes=%zu reserved_bytes=%zu "
           "peak_committed_bytes=%zu commit_limit=%zu kernel_mappings=%zu budget_refusals=%zu "
           "os_refusals=%zu\n",
           s.reservations, s.committed_bytes, s.reserved_bytes, s.peak_committed_bytes,
           s.commit_limit, s.kernel_mappings, s.refusals[0] + s.refusals[1] + s.refusals[2],
           s.os_refusals);
    hm_say("hostmem_mi: hostmem_calls VirtualAlloc=%zu VirtualAlloc_failed=%zu VirtualFree=%zu "
           "VirtualFree_failed=%zu VirtualProtect=%zu VirtualProtect_failed=%zu VirtualQuery=%zu "
           "reserve=%zu commit=%zu reset=%zu decommit=%zu release=%zu\n",
           s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], s.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC],
           s.calls[HOSTMEM_METHOD_VIRTUAL_FREE], s.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE],
           s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT], s.call_failures[HOSTMEM_METHOD_VIRTUAL_PROTECT],
           s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY], s.calls[HOSTMEM_KIND_RESERVE],
           s.calls[HOSTMEM_KIND_COMMIT], s.calls[HOSTMEM_KIND_RESET], s.calls[HOSTMEM_KIND_DECOMMIT],
           s.calls[HOSTMEM_KIND_RELEASE]);
    hm_say("hostmem_mi: layer_calls reserve=%zu reserve_refused=%zu commit=%zu commit_refused=%zu "
           "decommit=%zu decommit_refused=%zu reset=%zu reset_refused=%zu protect=%zu "
           "protect_refused=%zu release=%zu release_refused=%zu query=%zu out_of_memory=%zu "
           "large_tries=%zu large_granted=%zu aligned_retries=%zu aligned_kept_whole=%zu "
           "guard_on_reserved=%zu window_misses=%zu outside_window=%zu live_reservations=%zu "
           "metadata_live=%zu metadata_bytes=%zu\n",
           c.reserve, c.reserve_refused, c.commit, c.commit_refused, c.decommit,
           c.decommit_refused, c.reset, c.reset_refused, c.protect, c.protect_refused, c.release,
           c.release_refused, c.query, c.out_of_memory, c.large_tries, c.large_granted,
           c.aligned_retries, c.aligned_kept_whole, c.guard_on_reserved, c.window_misses,
           c.outside_window, c.live_reservations, c.metadata_live, c.metadata_bytes);
}
