/*
 * internal.h - the structures shared by hostmem's modules.
 *
 * Error convention inside the library: the seam (os.h) and the modules that
 * only map memory for metadata (slab.c, radix.c, reservation.c's buffers)
 * return an errno; everything that answers a call returns an HRESULT (S_OK or
 * the code the public method must return). An errno becomes an HRESULT in one
 * place, os_refused (hresult.c), which counts it; a refusal whose change cannot
 * be undone goes through os_refused_stuck or manager_fail. Names: module_verb.
 *
 * Concurrency model (docs/design.md has the whole story):
 *   - the address map (radix.c) is a process-wide two-level radix tree from 64 KiB
 *     granule to owner, read with atomic loads and no lock;
 *   - a reservation's page runs are published through a two-copy latch
 *     (reservation.c) so that VirtualQuery never waits for a writer, even one
 *     suspended in the middle of a change;
 *   - writers of one reservation hold its stripe lock (one of STRIPES host
 *     locks chosen by the reservation's base); granule allocation holds the
 *     manager's arena lock; no lock is held across a call into the host other
 *     than the lock callbacks themselves;
 *   - metadata lives in type-stable slabs (slab.c) that are returned to the OS
 *     only when the manager is destroyed, so a lock-free reader never touches
 *     unmapped memory.
 */
#ifndef HOSTMEM_INTERNAL_H
#define HOSTMEM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hostmem.h"
#include "os.h"

#define HIDDEN __attribute__((visibility("hidden")))

/* HM_TSAN: built with ThreadSanitizer (gcc says so one way, clang another) */
#if defined(__SANITIZE_THREAD__)
#define HM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HM_TSAN 1
#endif
#endif
#ifndef HM_TSAN
#define HM_TSAN 0
#endif

/* ---- assertions (hresult.c reports them) --------------------------------------------
 * Tiers over one constant that is always compiled, so debug code never rots
 * (jemalloc's config_debug; mimalloc's mi_assert tiers). HOSTMEM_ASSERT is 0 in
 * release builds and 2 in make check's sanitizer builds:
 *   hm_assert(c)            level 1: preconditions (locks held, the seam's
 *                           alignment), paths the invariants rule out;
 *   hm_assert_expensive(c)  level 2: checks that walk a structure;
 *   hm_unreachable(why)     level 1: a path the invariants rule out; a release
 *                           build goes on to the graceful answer after it.
 */
#ifndef HOSTMEM_ASSERT
#define HOSTMEM_ASSERT 0
#endif
_Noreturn void assert_fail(const char *what, const char *file, int line) HIDDEN;
#define hm_assert_level(level, c) \
    ((void)((HOSTMEM_ASSERT >= (level) && !(c)) ? (assert_fail(#c, __FILE__, __LINE__), 0) : 0))
#define hm_assert(c) hm_assert_level(1, c)
#define hm_assert_expensive(c) hm_assert_level(2, c)
#define hm_unreachable(why) \
    ((void)(HOSTMEM_ASSERT >= 1 ? (assert_fail(why, __FILE__, __LINE__), 0) : 0))

/* ---- process-wide geometry (geometry.c: set once by geometry_ensure) ---------- */
extern size_t g_page;          /* P */
extern unsigned g_page_shift;
extern size_t g_granule;       /* G = max(64 KiB, P) */
size_t geometry_large_page(void) HIDDEN; /* the kernel's default huge page, 0 = none */
extern unsigned g_granule_shift;
void geometry_ensure(void) HIDDEN; /* once per process */

static inline uintptr_t page_down(uintptr_t a) { return a & ~(uintptr_t)(g_page - 1); }
static inline uintptr_t granule_down(uintptr_t a) { return a & ~(uintptr_t)(g_granule - 1); }
/* Rounding up wraps past the top; callers that can get there check for it. */
static inline uintptr_t page_up(uintptr_t a) { return page_down(a + g_page - 1); }
static inline uintptr_t granule_up(uintptr_t a) { return granule_down(a + g_granule - 1); }

static inline bool page_aligned(uintptr_t a) { return (a & (g_page - 1)) == 0; }

/* ---- the seam (os.h) as the library calls it -----------------------------------------
 * The only callers of the seam's hostmem_os outside os_linux.c. The seam's
 * contract asks for page-aligned, non-empty ranges: asserted here, once. An
 * errno comes back; the caller hands a refusal to os_refused (hresult.c). */
#define SEAM_RANGE(a, n) (page_aligned((uintptr_t)(a)) && page_aligned(n) && (n) != 0)
static inline int os_map(void *hint, size_t size, int prot, bool fixed, void **out)
{
    hm_assert(SEAM_RANGE(hint, size));
    return hostmem_os->map(hint, size, prot, fixed, out);
}
static inline int os_unmap(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->unmap(address, size);
}
static inline int os_protect(void *address, size_t size, int prot)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->protect(address, size, prot);
}
static inline int os_discard(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->discard(address, size);
}
static inline int os_reset(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->reset(address, size);
}
static inline int os_map_large(void *hint, size_t size, int prot, bool fixed, void **out)
{
    hm_assert(SEAM_RANGE(hint, size));
    return hostmem_os->map_large ? hostmem_os->map_large(hint, size, prot, fixed, out) : ENOSYS;
}
static inline int os_walk_mappings(os_mapping_fn fn, void *context)
{
    return hostmem_os->walk_mappings(fn, context);
}
static inline int os_read_file(const char *path, char *buffer, size_t size, size_t *length)
{
    return hostmem_os->read_file(path, buffer, size, length);
}
/* Write watch through the kernel (ENOSYS when the seam has none). */
static inline int os_watch_probe(void)
{
    return hostmem_os->watch_probe ? hostmem_os->watch_probe() : ENOSYS;
}
static inline int os_watch_add(void *address, size_t size, bool clean)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->watch_add ? hostmem_os->watch_add(address, size, clean) : ENOSYS;
}
static inline int os_watch_remove(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->watch_remove ? hostmem_os->watch_remove(address, size) : ENOSYS;
}
static inline int os_watch_clean(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return hostmem_os->watch_clean ? hostmem_os->watch_clean(address, size) : ENOSYS;
}
static inline int os_watch_scan(void *address, size_t size, bool reset, void **pages, size_t max,
                                size_t *found)
{
    hm_assert(SEAM_RANGE(address, size) && max);
    *found = 0;
    return hostmem_os->watch_scan ? hostmem_os->watch_scan(address, size, reset, pages, max, found) : ENOSYS;
}
static inline void os_advise_huge(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    if (hostmem_os->advise_huge)
        hostmem_os->advise_huge(address, size); /* a hint: its refusal changes nothing */
}

/* The library's books in mappings of their own with an inaccessible page on
 * each side (os_map_guarded): m is whom a refused trim or undo counts against (hresult.c's
 * os_refused), or NULL; the errno of the refusal that failed it is returned for
 * the caller to count, as every seam call's. */
struct manager;
HRESULT os_refused(struct manager *m, int err, const char *what) HIDDEN;
int os_map_books(struct manager *m, size_t size, size_t align, void **out) HIDDEN; /* hresult.c */
static inline int os_unmap_books(void *address, size_t size)
{
    hm_assert(SEAM_RANGE(address, size));
    return os_unmap_guarded(address, size);
}

/* Reserved pages and arena slack: no access in strict mode, read-write in
 * compact mode (docs/modes.md). The one statement of that fact. */
static inline int reserved_prot(bool compact)
{
    return compact ? OS_PROT_READ | OS_PROT_WRITE : OS_PROT_NONE;
}

/* The user address space hostmem manages: [0, 2^47). */
#define ADDRESS_BITS 47
#define ADDRESS_LIMIT ((uintptr_t)1 << ADDRESS_BITS)

/* ---- locks (lock.c) ---------------------------------------------------------- */
struct manager;
HRESULT lock_enter(struct manager *m, void *lock) HIDDEN;
HRESULT lock_leave(struct manager *m, void *lock) HIDDEN;
bool lock_held(void *lock) HIDDEN; /* by this thread; known only in builds with HOSTMEM_ASSERT */
/* Through the host's ops; the default locks' refusals are counted (os_refused). */
HRESULT lock_create(struct manager *m, void **lock) HIDDEN;
void lock_destroy(struct manager *m, void *lock) HIDDEN;
bool lock_fork_enter(struct manager *m, void *lock) HIDDEN;              /* fork.c, heap.c */
void lock_fork_leave(struct manager *m, void **lock, bool child) HIDDEN;
extern const hostmem_lock_ops lock_posix_ops HIDDEN;

/* ---- the library's own memory (pool.c): never malloc ------------------------- */
/* zeroed pages, an inaccessible page on each side; an errno (m: whom a refused
 * undo counts against, or NULL) */
int pages_alloc(struct manager *m, size_t bytes, void **out) HIDDEN;
/* Scratch pages for lists that live only during one call (validate's kernel
 * check): no guards, so that they take one kernel mapping, not three. */
int pages_scratch_alloc(size_t bytes, void **out) HIDDEN;
void pages_scratch_free(struct manager *m, void *p, size_t bytes) HIDDEN;
void pages_free(struct manager *m, void *p, size_t bytes) HIDDEN; /* m: whom a refusal counts against, or NULL */
struct pool {
    pthread_mutex_t lock;
    size_t size; /* of each object, a multiple of 16 */
    void *free;
    char *bump;
    size_t left;
    _Atomic bool joined;       /* in pool.c's list for fork */
};
#define POOL_INIT(object_size) {PTHREAD_MUTEX_INITIALIZER, (((object_size) + 15) & ~(size_t)15), NULL, NULL, 0, false}
void pool_fork_prepare(void) HIDDEN;
void pool_fork_finish(void) HIDDEN;
int pool_alloc(struct pool *pool, void **out) HIDDEN; /* zeroed; an errno */
void pool_free(struct pool *pool, void *p) HIDDEN;

/* Thread slots (pool.c): a small number for each live thread that has called
 * a manager, the lowest free one, given back when the thread ends and taken
 * by the next. Per-thread blocks indexed by it (the call counters) are
 * written by one thread at a time and never merged: a slot's next thread adds
 * to what the last one counted. THREAD_SLOTS when every slot is taken (or the
 * thread's exit cannot be heard): the caller's shared block. */
#define THREAD_SLOTS 256
extern __thread unsigned thread_slot_held __attribute__((tls_model("initial-exec"))) HIDDEN; /* slot + 1; 0: none yet */
unsigned thread_slot_take(void) HIDDEN;
unsigned thread_slots_used(void) HIDDEN; /* one past the highest slot ever taken */
void thread_slots_after_fork(void) HIDDEN; /* the child: only the forking thread's slot is taken */

/* ---- slabs (slab.c): type-stable metadata memory ----------------------------- */
#define SLAB_CLASSES 40 /* 32, 48, 64, 96, 128, ...: two classes a doubling */
/*
 * The give-back reserve: address space a manager takes at creation for the
 * metadata of the paths that give memory back (a decommit's run buffers),
 * which must never map (at vm.max_map_count, or with RLIMIT_AS used up, the
 * kernel refuses every new mapping). Reserved no-access; its writable prefix
 * grows into the rest by mprotect, which merges with it: no new kernel
 * mapping, no new address space. SLAB_RESERVE_READY bytes past what is handed
 * out stay writable, so that even a refused mprotect leaves that much.
 */
#define SLAB_RESERVE_READY ((size_t)256 << 10)
struct slab_reserve {
    _Atomic uintptr_t next;     /* the first byte not handed out */
    _Atomic uintptr_t writable; /* the end of the writable prefix */
    uintptr_t base, end;        /* 0, 0: none (a manager not made yet) */
    struct manager *m;          /* whom a refused growth counts against */
};
struct slab_chunk;
struct slab {
    void *free_list[SLAB_CLASSES];       /* owner's lock held */
    _Atomic(void *) remote[SLAB_CLASSES]; /* pushed without the lock */
    struct slab_chunk *chunks;
    char *bump;
    size_t bump_left;
    size_t bytes; /* bytes obtained from the OS */
    size_t next_chunk; /* bump chunks grow: 64 KiB, doubling, to 2 MiB (huge pages) */
    struct slab_reserve *reserve; /* its manager's, for slab_alloc_giving_back */
};
/* An errno: 0 and *out, or the seam's refusal (ENOMEM: no class that big). */
int slab_alloc(struct slab *s, size_t size, void **out) HIDDEN;    /* owner's lock held */
/* The same on a path that gives memory back: a new chunk's worth is never
 * mapped; the object comes from the manager's reserve instead. */
int slab_alloc_giving_back(struct slab *s, size_t size, void **out) HIDDEN; /* owner's lock held */
int slab_reserve_init(struct slab_reserve *v, struct manager *m, size_t size) HIDDEN; /* an errno */
void slab_reserve_fini(struct slab_reserve *v) HIDDEN;
void slab_free(struct slab *s, void *p, size_t size) HIDDEN;       /* owner's lock held */
void slab_free_remote(struct slab *s, void *p, size_t size) HIDDEN; /* any thread */
void slab_destroy(struct slab *s) HIDDEN;

/* ---- the address map (radix.c) ---------------------------------------------- */
/*
 * An entry describes one granule: 0 = no manager owns it; otherwise the top 16
 * bits hold the owning manager's id and the rest a pointer: to a reservation
 * (bit 0 clear) or to the arena whose free space the granule is (bit 0 set).
 */
/* The low two bits of an entry say what the pointer is. */
#define ENTRY_KIND ((uintptr_t)3)
#define ENTRY_SLACK ((uintptr_t)1)      /* an arena's free space */
#define ENTRY_HEAP ((uintptr_t)2)       /* a heap's segment (a reservation) */
#define ENTRY_HEAP_LARGE ((uintptr_t)3) /* a heap's large block (a reservation) */
static inline bool entry_is_slack(uintptr_t e) { return (e & ENTRY_KIND) == ENTRY_SLACK; }
static inline bool entry_is_heap(uintptr_t e) { return (e & ENTRY_KIND) >= ENTRY_HEAP; }
#define ENTRY_ID_SHIFT 48
#define ENTRY_POINTER_MASK (((uintptr_t)1 << ENTRY_ID_SHIFT) - 1)
static inline unsigned entry_id(uintptr_t e) { return (unsigned)(e >> ENTRY_ID_SHIFT); }
static inline void *entry_pointer(uintptr_t e) { return (void *)(e & ENTRY_POINTER_MASK & ~(uintptr_t)3); }

/* The top level: one word per GiB, holding 0, a leaf, or (RADIX_TOP_WHOLE set)
 * one entry for the whole GiB. Lookups are inline: Free and VirtualQuery pay
 * two loads, not a call. */
#define RADIX_LEAF_SHIFT 30
#define RADIX_TOP_WHOLE ((uintptr_t)4) /* entries use bits 0-1; records are 8-byte aligned */
_Static_assert((RADIX_TOP_WHOLE & ENTRY_KIND) == 0, "a whole-GiB slot's mark is not an entry's kind");
_Static_assert(ADDRESS_BITS <= ENTRY_ID_SHIFT, "an entry's pointer lies below its manager id");
extern _Atomic uintptr_t radix_top[(size_t)1 << (ADDRESS_BITS - RADIX_LEAF_SHIFT)] HIDDEN;

static inline uintptr_t radix_top_load(uintptr_t address)
{
    if (address >= ADDRESS_LIMIT)
        return 0;
    return atomic_load_explicit(&radix_top[address >> RADIX_LEAF_SHIFT], memory_order_acquire);
}

static inline size_t radix_leaf_index(uintptr_t address)
{
    return (address & (((uintptr_t)1 << RADIX_LEAF_SHIFT) - 1)) >> g_granule_shift;
}

/* The entry for address (0: no manager owns it). */
static inline uintptr_t radix_load(uintptr_t address)
{
    uintptr_t v = radix_top_load(address);
    if (!v || (v & RADIX_TOP_WHOLE))
        return v & ~RADIX_TOP_WHOLE;
    return atomic_load_explicit(&((_Atomic uintptr_t *)v)[radix_leaf_index(address)], memory_order_acquire);
}
uintptr_t radix_load_prefetch(uintptr_t address) HIDDEN; /* and starts fetching its slot */
struct reservation;
struct reservation *radix_slot(uintptr_t address) HIDDEN; /* the granule's record slot (arenas) */
/* Makes the leaves [start,end) needs exist. whole_ok: slots the range covers
 * whole may hold one entry instead (standalone reservations only: nothing else
 * is ever stored inside them). */
int radix_prepare(struct manager *m, uintptr_t start, uintptr_t end, bool whole_ok) HIDDEN; /* an errno */
void radix_store_range(uintptr_t start, uintptr_t end, uintptr_t entry, bool whole_ok) HIDDEN;

/* ---- reservations and their runs (reservation.c) ----------------------------- */
/*
 * A run word: (first page << 16) | attribute. The attribute is the Windows
 * protection of a committed page (with its modifiers), 0 for a reserved page,
 * ATTR_STALE with the old protection for a stale one (below).
 * Runs are sorted, start at page 0, and are maximal: neighbours differ.
 */
#define RUN_ATTR_BITS 16
#define RUN_ATTR_MASK 0xFFFFu
/* Every protection with its modifiers (vm.c's protect_valid) fits an attribute. */
#define PROTECT_ALL_BITS (0xFFu | PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE)
_Static_assert(PROTECT_ALL_BITS <= RUN_ATTR_MASK, "a protection fits a run's attribute");
static inline uint64_t run_make(uint64_t page, unsigned attr) { return page << RUN_ATTR_BITS | attr; }
static inline uint64_t run_page(uint64_t run) { return run >> RUN_ATTR_BITS; }
static inline unsigned run_attr(uint64_t run) { return (unsigned)(run & RUN_ATTR_MASK); }
/*
 * A stale run: pages decommitted when the kernel could not give them their own
 * mapping (at vm.max_map_count no mapping can be split). Reserved in the books
 * (VirtualQuery, the budget, the statistics) and discarded, but their hardware
 * protection is still the one of the committed attribute in the low bits, so
 * protect_to_os of a stale attribute is the truth about the hardware. deferred.c
 * gives them reserved-page protection when the kernel allows (docs/host.md).
 */
#define ATTR_STALE 0x8000u
_Static_assert(ATTR_STALE > PROTECT_ALL_BITS && ATTR_STALE <= RUN_ATTR_MASK,
               "the stale mark is an attribute bit no protection uses");
/*
 * A pending run (deferred discard, deferred.c): pages decommitted - reserved in the
 * books, uncharged, with reserved-page hardware protection - whose discard is
 * still to come; a recommit zeroes them instead. The attribute is the mark
 * alone.
 */
#define ATTR_PENDING 0x4000u
_Static_assert(ATTR_PENDING > PROTECT_ALL_BITS && ATTR_PENDING < ATTR_STALE,
               "the pending mark is an attribute bit no protection uses");
/* The attribute as Windows sees it: 0 (reserved) for a stale or pending run. */
static inline unsigned attr_visible(unsigned attr)
{
    return (attr & (ATTR_STALE | ATTR_PENDING)) ? 0 : attr;
}

struct runbuf {
    _Atomic uint32_t capacity; /* fixed for the life of the memory */
    _Atomic uint32_t count;
    _Atomic uint64_t run[];
};

/* Tagged value of a latch copy: bit 0 set = a single run with attribute value>>1. */
#define RUNS_INLINE ((uintptr_t)1)

#define RES_TOUCHED 0x1u   /* some page was ever committed or reset: release must clean */
#define RES_STANDALONE 0x2u /* has its own kernel mapping, not carved from an arena */
#define RES_WAS_RESET 0x4u  /* MEM_RESET was applied to some of its pages */
#define RES_HEAP 0x8u       /* a heap's segment: hidden from VirtualFree/Protect/commit */
#define RES_HEAP_LARGE 0x10u /* with RES_HEAP: a large block rather than a segment */
#define RES_LARGE_PAGES 0x20u /* with RES_STANDALONE: huge pages, committed for life */
#define RES_STALE 0x40u     /* may hold stale runs (ATTR_STALE) */
#define RES_WRITE_WATCH 0x80u /* MEM_WRITE_WATCH: its pages are a kernel mapping of their own */
#define RES_PENDING 0x200u  /* may hold pending runs (ATTR_PENDING) */
#define RES_WATCH_EMULATED 0x100u /* with RES_WRITE_WATCH: written pages are in a bitmap
                                     of its manager's (struct watched), not the kernel's */
#define RES_DECOMMITTED 0x400u /* some committed page was ever decommitted */
#define RES_RECOMMITS 0x800u   /* a commit came after a decommit: its discards may wait (deferred.c) */

struct arena;
/*
 * 48 bytes: the metadata budget is 64 per reservation, and the address map
 * adds 8. The first word is the writers' alone (and the slab's free-list link
 * while the slot is free: see slab.c); lock-free readers read the rest.
 */
struct reservation {
    uint16_t flags;               /* RES_*: writers only */
    uint16_t watch_slot;          /* its write watch's slot in its manager's (struct watched) + 1,
                                     0 = none: writers only */
    uint32_t arena_index;         /* its arena's slot in the arena table: writers only */
    _Atomic uint64_t seq;         /* latch sequence, bumped by every change */
    _Atomic uintptr_t base;
    _Atomic uint64_t size_protect; /* pages | allocation protection << 48 */
    _Atomic uintptr_t runs[2];    /* the two latch copies */
};
_Static_assert(sizeof(struct reservation) == 48, "a reservation is 48 bytes");
#define RES_PAGES_BITS 48
#define RES_PAGES_MASK (((uint64_t)1 << RES_PAGES_BITS) - 1)
_Static_assert(ADDRESS_BITS - 12 <= RES_PAGES_BITS, "a reservation's page count fits its field");
_Static_assert(RES_PAGES_BITS + RUN_ATTR_BITS <= 64, "a run's first page and attribute fit one word");
_Static_assert(sizeof(struct reservation) + sizeof(uintptr_t) <= 64,
               "a reservation and its address-map entry fit the 64-byte metadata budget");
_Static_assert(sizeof(struct reservation) % 8 == 0 && _Alignof(struct reservation) >= 8,
               "records in a leaf are 8-byte aligned: an entry's low bits are free");
static inline uint64_t res_pages(const struct reservation *r)
{
    return atomic_load_explicit(&((struct reservation *)r)->size_protect, memory_order_relaxed) &
           RES_PAGES_MASK;
}
/* The address space a reservation holds: its pages rounded up to a granule. */
static inline uintptr_t res_span(const struct reservation *r)
{
    return granule_up(res_pages(r) << g_page_shift);
}
static inline uint32_t res_alloc_protect(const struct reservation *r)
{
    return (uint32_t)(atomic_load_explicit(&((struct reservation *)r)->size_protect,
                                           memory_order_relaxed) >> RES_PAGES_BITS);
}
/*
 * Stale slack (deferred.c): a reservation released where the kernel would not
 * give its pages slack protection (the mapping ceiling). Its pages are
 * discarded and uncharged, the address map calls them free, its arena keeps
 * the granules out of use, and its record stays - the truth about the
 * hardware - until the kernel allows. Marked in the allocation protection's
 * word, which lock-free readers may read.
 */
#define ALLOC_STALE_SLACK 0x8000u
_Static_assert(ALLOC_STALE_SLACK > PROTECT_ALL_BITS && ALLOC_STALE_SLACK <= RUN_ATTR_MASK,
               "the stale-slack mark is a bit no allocation protection uses");
static inline void res_set_alloc_protect(struct reservation *r, uint32_t protect)
{
    atomic_store_explicit(&r->size_protect,
                          res_pages(r) | (uint64_t)(protect & RUN_ATTR_MASK) << RES_PAGES_BITS,
                          memory_order_relaxed);
}

static inline bool res_is_stale_slack(const struct reservation *r)
{
    return (res_alloc_protect(r) & ALLOC_STALE_SLACK) != 0;
}

/* A consistent snapshot of the run around one page, read without locks. */
struct run_snapshot {
    uintptr_t base;
    uint64_t pages;
    uint32_t alloc_protect;
    uint64_t first, end; /* the run's pages [first, end) */
    unsigned attr;
};
/* Returns 0 if r no longer covers the page at address (released or reused). */
int reservation_read(struct reservation *r, uintptr_t entry_expected, uintptr_t address,
                     struct run_snapshot *view) HIDDEN;

/* Writers (stripe lock held). A view decodes copy 0 once, for loops over the runs. */
struct runs_view {
    uint64_t pages;
    uint32_t n;
    struct runbuf *buffer; /* NULL: the runs are in inline[] */
    uint64_t inline_run[3];
};
void reservation_view(const struct reservation *r, struct runs_view *w) HIDDEN;
static inline uint64_t runs_view_get(const struct runs_view *w, uint32_t i)
{
    return w->buffer ? atomic_load_explicit(&w->buffer->run[i], memory_order_relaxed) : w->inline_run[i];
}
static inline uint64_t runs_view_end(const struct runs_view *w, uint32_t i)
{
    return i + 1 < w->n ? run_page(runs_view_get(w, i + 1)) : w->pages;
}
uint64_t reservation_committed(const struct reservation *r) HIDDEN; /* committed pages */
uint32_t reservation_run_count(const struct reservation *r) HIDDEN;
uint32_t reservation_copy_count(const struct reservation *r, int copy) HIDDEN; /* for validate */
uint64_t reservation_copy_run(const struct reservation *r, int copy, uint32_t i) HIDDEN;
uint64_t reservation_run(const struct reservation *r, uint32_t i) HIDDEN;
/* Pre-allocates the run buffers a change leaving count runs needs; an errno.
 * giving_back: the change gives memory back (a decommit), so never maps
 * (slab_alloc_giving_back). */
int reservation_prepare(struct slab *s, struct reservation *r, uint32_t count, bool giving_back,
                        uintptr_t spare[2]) HIDDEN;
/* Publishes: pages [first, end) take attr. spare from reservation_prepare. */
void reservation_apply(struct slab *s, struct reservation *r, uint64_t first, uint64_t end,
                unsigned attr, uintptr_t spare[2]) HIDDEN;
void reservation_unprepare(struct slab *s, uintptr_t spare[2]) HIDDEN;
/* A reservation's record made anew (arena lock held): all pages attr. */
void reservation_init(struct reservation *r, uintptr_t base, size_t size, unsigned attr,
                      uint16_t flags, uint32_t arena_index) HIDDEN;
void reservation_clear(struct slab *s, struct reservation *r) HIDDEN;
/* The runs r would have after [first,end) takes attr; 1 when they fit in the
 * inline word (no buffer needed). */
uint32_t reservation_count_after(const struct reservation *r, uint64_t first, uint64_t end,
                          unsigned attr) HIDDEN;

/* ---- arenas (arena.c) ------------------------------------------------------------ */
struct arena {
    _Atomic uintptr_t base, end; /* read by lock-free readers */
    struct manager *manager;
    uint32_t index;            /* slot in the manager's arena table */
    uint32_t granules;
    _Atomic uint32_t free_granules;
    uint32_t hint;             /* next-fit cursor (arena lock) */
    bool standalone;
    bool top_down;
    struct reservation *record; /* a standalone arena's reservation */
    _Atomic uint64_t bitmap[]; /* granule in use (arenas only) */
};

/* ---- host policy (policy.c) ----------------------------------------------------- */
struct external_range {
    uintptr_t start;
    size_t size;
};

struct policy {
    _Atomic size_t limit;         /* commit budget in bytes; 0 = none */
    size_t emergency;             /* extra for eProcessCritical */
    DWORD appdomain_wait_ms;
    unsigned low, high, hysteresis; /* load watermarks, percent */
    size_t address_space_limit;   /* 0 = none */
    char root[256];               /* prefix of /proc and /sys paths */

    _Atomic uint32_t freed;       /* futex word: bumped whenever memory is given back */
    _Atomic uint32_t waiters;     /* eAppDomainCritical requests waiting on it */
    _Atomic int pressure;         /* an eAppDomainCritical request did not fit: memory is
                                     Low, whatever the load, until memory is given back */
    _Atomic int state;            /* EMemoryAvailable the load says */
    _Atomic int delivered;        /* EMemoryAvailable last sent to the runtime */
    _Atomic int delivering;       /* a thread is sending notifications */
    pthread_t deliverer;          /* which (valid while delivering) */
    _Atomic int machine_load;     /* percent from the last system sample; -1 = none */

    void *callback_lock;          /* guards callback */
    ICLRMemoryNotificationCallback *callback;
    void *external_lock;          /* guards ranges */
    struct external_range *ranges;
    size_t range_count, range_capacity;

    _Atomic size_t refusals[eProcessCritical + 1];   /* by EMemoryCriticalLevel */
    _Atomic size_t notifications[eMemoryAvailableHigh + 1]; /* by EMemoryAvailable */
    _Atomic size_t external_bytes;
    _Atomic size_t external_ranges;
    _Atomic uint32_t dynamic_code;   /* HOSTMEM_CODE_*: only ever raised */
    _Atomic size_t code_refusals;    /* requests the dynamic-code policy refused */

    DWORD monitor_interval_ms;
    _Atomic uint32_t monitor_stop; /* futex word */
    bool monitor_running;
    uintptr_t monitor_thread;      /* pthread_t */
};

/* ---- the manager ---------------------------------------------------------------- */
/* A few reservations remembered by base (deferred.c: those with stale or
 * pending runs), and whether more than fit were. */
struct remembered {
    _Atomic uintptr_t bases[16]; /* 0 = a free slot */
    _Atomic bool overflow;
};
/* Write watch's own books of one write-watched reservation (watch.c, range.h),
 * one bit a page in each map: written, the emulation's pages written since the
 * last reset (under the kernel's tracking, which keeps its own, only those it
 * reset before they were reported: watch.c's kernel_get); captured,
 * pages whose write a VirtualProtect captured, reported until they are reset
 * whatever happens to them (Windows' latch, docs/writewatch.md). An emulated
 * reservation has its slot from birth, a kernel-tracked one from its first
 * VirtualProtect. The reservation names its slot (watch_slot); the SIGSEGV
 * handler reads it after taking the stripe's busy word, which every change of
 * the maps holds too. */
#define WATCHED_SLOTS 1024
_Static_assert(WATCHED_SLOTS < UINT16_MAX, "a slot's number + 1 fits a reservation's watch_slot");
struct watched {
    _Atomic uintptr_t base; /* the reservation's; 0 = a free slot, 1 = being filled or emptied */
    _Atomic uint64_t *bits;
    _Atomic uint64_t *captured;
    size_t bytes;           /* of the maps' pages_alloc, which holds both */
};
#define STRIPES 64
enum { STATE_LIVE = 0, STATE_DISABLED = 1, STATE_SHUTDOWN = 2 };

/* Calls of each method (hostmem_stats.calls): a block for each thread slot,
 * written by its thread alone with no locked instruction (com.c), and the last
 * block, shared by threads without a slot, counted atomically. Reading adds
 * the blocks of the slots ever taken. */
struct call_counts {
    _Atomic size_t calls[HOSTMEM_METHODS];
    _Atomic size_t failures[HOSTMEM_METHODS];
} __attribute__((aligned(64)));

struct stripe {
    void *lock;
    struct slab slab; /* run buffers of this stripe's reservations */
    /* With signal changes on (guard pages): who may change this stripe's
     * reservations - a writer holding the lock, or a SIGSEGV handler, which
     * cannot take a lock - as the thread's id, 0 = nobody (range.c). */
    _Atomic long busy;
} __attribute__((aligned(64)));

struct manager {
    IHostMemoryManager iface; /* first: the COM object */
    _Atomic uint32_t references;
    _Atomic int state;
    unsigned id;              /* registry.c: the tag of its address-map entries */
    struct manager *registry_next, *registry_prev; /* registry.c's lock */
    uint32_t flags;
    DWORD timeout_ms;
    bool compact;
    bool signals;             /* guard pages or emulated write watch: a SIGSEGV handler changes
                                 reservations (guard.c) */
    _Atomic(hostmem_guard_fn) guard_fn;
    _Atomic(void *) guard_context;
    size_t arena_size;        /* the largest arena; reservations above a quarter of it are standalone */
    size_t commit_limit;
    hostmem_lock_ops lock_ops;
    bool locks_created;
    bool torn_down; /* every reservation went back to the OS */

    void *arena_lock;
    struct slab arena_slab;         /* reservation and arena structs (arena lock) */
    struct slab_reserve give_back;  /* every slab's give-back reserve (slab.c; made by arena_init) */
    _Atomic(struct arena *) *arenas; /* the arena table (arena.c), NULL = free slot */
    _Atomic uint32_t arena_count;    /* slots in use or ever used */
    uint32_t arena_capacity;
    struct arena *current[2];       /* allocation cursors: bottom-up, top-down */
    bool fixed_placement;     /* HOSTMEM_FIXED_PLACEMENT: arenas from next_hint (arena.c) */
    uintptr_t next_hint;      /* where its next bottom-up arena is asked for */
    size_t arena_next;              /* the size the next arena asks for: small first, growing to
                                       arena_size, the largest (arena.c's sizing rule; arena lock) */

    _Atomic size_t reserved_bytes;
    _Atomic size_t committed_bytes;
    _Atomic size_t peak_committed;
    _Atomic size_t reservations;
    _Atomic size_t arena_bytes;
    _Atomic size_t arenas_live;
    _Atomic size_t mapping_estimate; /* kernel mappings the map implies (upper bound) */
    _Atomic size_t heap_bytes;
    _Atomic size_t os_refusals;     /* system calls the kernel refused (hresult.c's os_refused) */
    _Atomic size_t book_protected;  /* pages of stale runs whose hardware is not reserved-page
                                       protection: protected only in the books (deferred.c) */
    struct remembered stale;        /* reservations that may hold stale runs (deferred.c) */
    struct watched watched[WATCHED_SLOTS]; /* write watch's written and captured pages (watch.c) */
    /* deferred discard (deferred.c) */
    uint32_t purge_delay_ms;        /* UINT32_MAX: discard at once */
    size_t purge_cap;
    _Atomic size_t pending_pages;   /* in pending runs */
    _Atomic uint64_t pending_since; /* CLOCK_MONOTONIC ns of the oldest pending, 0 = none */
    struct remembered pending;      /* reservations that may hold pending runs */
    struct remembered slack;        /* stale slack (deferred.c), by base */
    _Atomic size_t stale_slacks;    /* how many there are */
    _Atomic size_t heap_corruptions; /* heap structures found overwritten (hresult.c's corruption_found) */
    _Atomic size_t watch_gets, watch_resets, watch_pages; /* write watch's answers (watch.c) */

    struct policy policy;

    struct stripe stripes[STRIPES];
    struct call_counts call_counts[THREAD_SLOTS + 1]; /* last: the shared block */
    /* fork.c: which locks the forking thread entered before a fork */
    uint64_t fork_stripes;
    uint8_t fork_others; /* 1 arena, 2 callback, 4 external */
};

static inline struct manager *manager_from(IHostMemoryManager *i) { return (struct manager *)i; }
static inline struct arena *res_arena(struct manager *m, const struct reservation *r)
{
    return atomic_load_explicit(&m->arenas[r->arena_index], memory_order_relaxed);
}
static inline uintptr_t manager_tag(const struct manager *m)
{
    return (uintptr_t)m->id << ENTRY_ID_SHIFT;
}
static inline struct stripe *stripe_of(struct manager *m, uintptr_t base)
{
    uintptr_t g = base >> 16;
    g ^= g >> 7;
    return &m->stripes[g % STRIPES];
}

/* arena.c (arena lock held unless noted) */
/* Allocates and initialises a reservation (all pages attr) without publishing
 * it in the address map; takes the arena lock itself. */
HRESULT arena_reserve(struct manager *m, uintptr_t address, size_t size, bool top_down,
                      size_t align, unsigned attr, struct reservation **out) HIDDEN;
/* A reservation of huge pages, committed with attr, mapped with hardware
 * protection prot (a standalone mapping). */
HRESULT arena_reserve_large(struct manager *m, uintptr_t address, size_t size, unsigned attr,
                            int prot, struct reservation **out) HIDDEN;
void arena_publish(struct manager *m, struct reservation *r) HIDDEN;
HRESULT arena_init(struct manager *m) HIDDEN; /* the arena table; the bottom-up start */
void arena_fini(struct manager *m) HIDDEN;
void arena_abandon(struct manager *m, struct reservation *r) HIDDEN; /* never published */
/* Unpublishes and frees a reservation whose pages are already clean; stripe lock held. */
void arena_unreserve(struct manager *m, struct reservation *r) HIDDEN;
void arena_destroy_all(struct manager *m) HIDDEN;
uintptr_t arena_next_start(struct manager *m, uintptr_t address) HIDDEN; /* lock-free */
/* The arena table, slot by slot from *slot: the next arena in use (*slot past
 * it), or NULL after the last. Lock-free; under the arena lock it sees every
 * change. The one loop over the table. */
static inline struct arena *arena_next(struct manager *m, uint32_t *slot)
{
    uint32_t count = atomic_load_explicit(&m->arena_count, memory_order_acquire);
    while (*slot < count) {
        struct arena *a = atomic_load_explicit(&m->arenas[(*slot)++], memory_order_acquire);
        if (a)
            return a;
    }
    return NULL;
}
/* Walks arena a in address order, a stretch at a time: a reservation of m's
 * that starts there (r, and the stretch is its span), or one granule that
 * starts none (r NULL: free, or not what the map should say). entry: the
 * address map's word for the stretch's first granule. fn's non-zero stops the
 * walk and is returned. Lock-free: a reservation made or released meanwhile
 * may be seen either way. */
typedef int (*arena_walk_fn)(void *context, uintptr_t at, uintptr_t entry, struct reservation *r);
int arena_walk(struct manager *m, struct arena *a, arena_walk_fn fn, void *context) HIDDEN;
/* Stale slack: arena_hide takes r out of the address map (its granules, or a
 * standalone reservation's mapping, read as free) and keeps them out of use;
 * arena_unreserve gives them back later. arena_stale_slack_at finds the stale
 * slack covering address, lock-free, or NULL. arena_walk gives stale slack as
 * r, marked. */
void arena_hide(struct manager *m, struct reservation *r) HIDDEN;
struct reservation *arena_stale_slack_at(struct manager *m, uintptr_t address) HIDDEN;

/* registry.c: the live managers */
HRESULT registry_add(struct manager *m) HIDDEN;     /* takes an id; E_OUTOFMEMORY when none is left */
struct manager *registry_find(unsigned id) HIDDEN;  /* lock-free (a signal handler's); NULL = none */
void registry_remove(struct manager *m) HIDDEN;     /* after its address-map entries are gone */
void registry_each(void (*fn)(struct manager *m, void *context), void *context) HIDDEN;
void registry_before_destroy(struct manager *m) HIDDEN; /* the tests' hook (registry.h) */
void fork_install(void) HIDDEN; /* fork.c: the atfork handlers, once */
void registry_fork_prepare(void (*each)(struct manager *m)) HIDDEN; /* fork.c */
void registry_fork_finish(void (*each)(struct manager *m)) HIDDEN;

/* After a fork, in the child (fork.c): each module puts right what threads
 * that the child does not have left half-done. */
void heap_fork_prepare(void) HIDDEN;
void heap_fork_finish(bool child) HIDDEN;
void arena_after_fork(struct manager *m) HIDDEN; /* unpublished reservations go */
void vm_after_fork(struct manager *m) HIDDEN;    /* the counters, recounted from the map */
void range_fork_busy(struct manager *m, bool take) HIDDEN; /* the busy words (guard pages, emulated watch) */
void policy_after_fork(struct manager *m) HIDDEN; /* no sender, no waiter, no monitor */

/* hresult.c: the funnels. Every refused system call goes through os_refused
 * (counted in os_refusals, described under HOSTMEM_DEBUG, mapped: EEXIST of a
 * fixed mapping is ERROR_INVALID_ADDRESS, an answer rather than a refusal, and
 * is not counted; anything else is E_OUTOFMEMORY). One whose change cannot be
 * undone goes through os_refused_stuck, which also disables the manager. */
HRESULT os_refused(struct manager *m, int err, const char *what) HIDDEN;
HRESULT os_refused_stuck(struct manager *m, int err, const char *what) HIDDEN; /* -> E_FAIL */
HRESULT manager_fail(struct manager *m, const char *why) HIDDEN; /* -> E_FAIL, disabled */
/* A heap's free-list link or block tag found overwritten: counted
 * (heap_corruptions), described under HOSTMEM_DEBUG; the caller refuses. */
void corruption_found(struct manager *m, const char *what) HIDDEN;
static inline HRESULT manager_check(struct manager *m)
{
    return atomic_load_explicit(&m->state, memory_order_acquire) == STATE_LIVE
               ? S_OK
               : HOST_E_CLRNOTAVAILABLE;
}

/* A heap's segments keep reserved pages readable and writable (as compact mode
 * does), so validating a pointer never faults. */
static inline bool res_compact(const struct manager *m, const struct reservation *r)
{
    return m->compact || (r->flags & RES_HEAP);
}

/* protection: a run's attribute as hardware protection (range.c); a Win32
 * protection VirtualAlloc and VirtualProtect accept (vm.c) */
int protect_to_os(unsigned attr, bool compact) HIDDEN;
bool protect_valid(DWORD protect) HIDDEN;

/* unknown.c: QueryInterface for an object that answers IID_IUnknown and its own
 * IID; references is its count, taken for the pointer handed out. */
HRESULT unknown_query(void *self, _Atomic uint32_t *references, const IID *own, REFIID riid,
                      void **ppv) HIDDEN;

/* heap.c */
HRESULT heap_create(struct manager *m, DWORD type, IHostMalloc **out) HIDDEN;

/* vm.c, query.c, watch.c, deferred.c: the COM methods (range.h, watch.h, deferred.h are the family's own view) */
/* flags: VM_HEAP makes the calls act on heap segments (and only on them). */
#define VM_HEAP 0x1u
#define VM_ALIGN_4M 0x2u /* with VM_HEAP: a reservation aligned to 4 MiB (heap segments) */
#define VM_HEAP_LARGE 0x4u /* with VM_HEAP: the reservation is one large block */
HRESULT vm_alloc(struct manager *m, void *address, SIZE_T size, DWORD type, DWORD protect,
                 EMemoryCriticalLevel level, void **out) HIDDEN;
HRESULT vm_free(struct manager *m, void *address, SIZE_T size, DWORD type) HIDDEN;
HRESULT vm_alloc_ex(struct manager *m, void *address, SIZE_T size, DWORD type, DWORD protect,
                    EMemoryCriticalLevel level, void **out, unsigned flags) HIDDEN;
HRESULT vm_free_ex(struct manager *m, void *address, SIZE_T size, DWORD type, unsigned flags) HIDDEN;
HRESULT vm_protect(struct manager *m, void *address, SIZE_T size, DWORD protect,
                   DWORD *old) HIDDEN;
HRESULT vm_query(struct manager *m, void *address, MEMORY_BASIC_INFORMATION *info) HIDDEN;
HRESULT watch_get(struct manager *m, DWORD flags, void *base, SIZE_T size, void **addresses,
                  uintptr_t *count, ULONG *granularity) HIDDEN; /* GetWriteWatch */
HRESULT watch_reset(struct manager *m, void *base, SIZE_T size) HIDDEN; /* ResetWriteWatch */
void vm_release_all(struct manager *m) HIDDEN;
/* The counters the map implies, summed one reservation at a time (vm.c): what
 * vm_after_fork recounts, and what hostmem_validate checks. */
struct tally {
    size_t reservations, reserved, committed, heap, mappings, book_protected, pending, stale_slacks;
};
void vm_tally(struct manager *m, const struct reservation *r, struct tally *t) HIDDEN;
void deferred_purge(struct manager *m) HIDDEN; /* every deferred discard now; no lock held */
int guard_install(void) HIDDEN; /* guard.c: the process's handler, once; 0 or an errno */
/* The hardware protection r's pages must have, in stretches (validate's kernel
 * check): the runs', and an emulated write watch's written pages (range.c). */
int range_hw_segments(struct manager *m, const struct reservation *r,
                      int (*fn)(void *context, uintptr_t start, uintptr_t end, int prot), void *context) HIDDEN;

/* counters */
/* The slot of write watch's books that r names (watch.c), or NULL. */
static inline struct watched *watch_slot_of(struct manager *m, const struct reservation *r)
{
    return r->watch_slot ? &m->watched[r->watch_slot - 1] : NULL;
}

static inline void counter_add(_Atomic size_t *c, size_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}
static inline void counter_sub(_Atomic size_t *c, size_t v)
{
    atomic_fetch_sub_explicit(c, v, memory_order_relaxed);
}
/* Adds a difference (a wrapped negative takes away); nothing when it is 0, so
 * that a change that moves no counter writes no line other threads share. */
static inline void counter_shift(_Atomic size_t *c, size_t difference)
{
    if (difference)
        atomic_fetch_add_explicit(c, difference, memory_order_relaxed);
}
/* policy.c: the budget. Charging adds to committed_bytes only within the limit
 * the level allows; callers charge before they commit and uncharge what they
 * decommit or fail to commit. Notifications are sent only by policy_deliver,
 * which callers run after every lock is left. */
HRESULT policy_init(struct manager *m, const hostmem_config *c) HIDDEN;
/* What in c the policy cannot work with (hostmem_config_problem), or NULL. */
const char *policy_config_problem(const hostmem_config *c) HIDDEN;
void policy_fini(struct manager *m) HIDDEN;
void policy_stop_monitor(struct manager *m) HIDDEN; /* the machine monitor's thread joined; no lock held */
bool policy_try_charge(struct manager *m, size_t bytes, EMemoryCriticalLevel level) HIDDEN;
HRESULT policy_charge(struct manager *m, size_t bytes, EMemoryCriticalLevel level) HIDDEN; /* no lock held: may wait */
HRESULT policy_refuse(struct manager *m, EMemoryCriticalLevel level) HIDDEN;
void policy_uncharge(struct manager *m, size_t bytes) HIDDEN;
bool policy_try_reserve(struct manager *m, size_t bytes) HIDDEN; /* address-space limit */
void policy_unreserve(struct manager *m, size_t bytes) HIDDEN;
void policy_deliver(struct manager *m) HIDDEN;
HRESULT policy_memory_load(struct manager *m, DWORD *load, SIZE_T *available) HIDDEN;
HRESULT policy_register(struct manager *m, ICLRMemoryNotificationCallback *callback) HIDDEN;
HRESULT policy_needs_space(struct manager *m, uintptr_t start, size_t size) HIDDEN;
HRESULT policy_acquired_space(struct manager *m, uintptr_t start, size_t size) HIDDEN;
HRESULT policy_released_space(struct manager *m, uintptr_t start) HIDDEN;
HRESULT policy_poll_system(struct manager *m) HIDDEN;
void policy_set_limit(struct manager *m, size_t bytes) HIDDEN;
HRESULT policy_restrict_code(struct manager *m, uint32_t policy) HIDDEN;
/* The dynamic-code rule: HOSTMEM_E_DYNAMIC_CODE_BLOCKED, counted, for a
 * protection the policy in force forbids; S_OK otherwise. */
HRESULT policy_code_refusal(struct manager *m, DWORD protect) HIDDEN;
#define PROTECT_EXECUTABLE (PAGE_EXECUTE | PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY)
/* Callers test protect & PROTECT_EXECUTABLE before they call policy_code_refusal:
 * a protection that executes nothing costs no call. */
/* arena.c: unmaps arenas no reservation uses (the address-space cache). */
size_t arena_trim(struct manager *m) HIDDEN;

#endif /* HOSTMEM_INTERNAL_H */
