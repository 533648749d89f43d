/*
 * reservation.c - one reservation's pages, as runs of equal state and
 * protection, published through a two-copy latch.
 *
 * Invariants (checked by hostmem_validate): the runs of a copy are sorted,
 * the first starts at page 0, every run is non-empty, and neighbours differ
 * (runs are maximal, so a run is exactly a VirtualQuery region). At rest the
 * two copies hold the same runs and the sequence is even.
 *
 * The latch (the technique Linux calls raw_write_seqcount_latch): a writer
 * makes the sequence odd, rewrites copy 0 while readers use copy 1, makes it
 * even, then rewrites copy 1 while readers use copy 0. A reader picks the copy
 * by the parity of the sequence and retries only if the sequence moved. A
 * writer suspended at any point leaves one copy intact, so readers never wait
 * for it. Writers hold the reservation's stripe lock.
 */
#include "internal.h"

static inline uintptr_t load_copy(const struct reservation *r, int i)
{
    return atomic_load_explicit(&((struct reservation *)r)->runs[i], memory_order_relaxed);
}

/*
 * An inline copy (bit 0 set) holds up to three runs in one word: the pages
 * [first, first + length) have attribute attr and the others are reserved;
 * length 0 means "to the end". So a fresh reservation, and one with a single
 * committed range anywhere in it - the common shapes - need no run buffer.
 */
#define INLINE_ATTR_SHIFT 1
#define INLINE_ATTR_BITS 11
#define INLINE_FIRST_SHIFT (INLINE_ATTR_SHIFT + INLINE_ATTR_BITS)
#define INLINE_FIRST_BITS 25
#define INLINE_LENGTH_SHIFT (INLINE_FIRST_SHIFT + INLINE_FIRST_BITS)
#define INLINE_LENGTH_BITS 27
#define INLINE_ATTR_LIMIT ((unsigned)1 << INLINE_ATTR_BITS)
#define INLINE_FIRST_LIMIT ((uint64_t)1 << INLINE_FIRST_BITS)
#define INLINE_LENGTH_LIMIT ((uint64_t)1 << INLINE_LENGTH_BITS)
_Static_assert(RUNS_INLINE == (uintptr_t)1 << (INLINE_ATTR_SHIFT - 1), "the inline tag is bit 0");
_Static_assert(INLINE_LENGTH_SHIFT + INLINE_LENGTH_BITS == 64 && sizeof(uintptr_t) == 8,
               "tag, attribute, first page and length fill one word");
_Static_assert(PROTECT_ALL_BITS < INLINE_ATTR_LIMIT, "every protection fits an inline attribute");

static inline uintptr_t inline_make(unsigned attr, uint64_t first, uint64_t length)
{
    hm_assert(attr < INLINE_ATTR_LIMIT && first < INLINE_FIRST_LIMIT && length < INLINE_LENGTH_LIMIT);
    if (!attr)
        first = length = 0; /* all reserved: one run */
    return RUNS_INLINE | (uintptr_t)attr << INLINE_ATTR_SHIFT | (uintptr_t)first << INLINE_FIRST_SHIFT |
           (uintptr_t)length << INLINE_LENGTH_SHIFT;
}

static inline void inline_split(uintptr_t v, uint64_t pages, unsigned *attr, uint64_t *first,
                                uint64_t *end)
{
    uint64_t length = (uint64_t)v >> INLINE_LENGTH_SHIFT;
    *attr = (unsigned)(v >> INLINE_ATTR_SHIFT) & (INLINE_ATTR_LIMIT - 1);
    *first = ((uint64_t)v >> INLINE_FIRST_SHIFT) & (INLINE_FIRST_LIMIT - 1);
    *end = length ? *first + length : pages;
    if (*end > pages) /* only a stale copy can say so: keep it bounded */
        *end = pages;
    if (*first > *end)
        *first = *end;
}

/* The runs of copy word v: the one place an inline word is decoded. */
static void view_decode(uintptr_t v, uint64_t pages, struct runs_view *w)
{
    w->pages = pages;
    if (!(v & RUNS_INLINE)) {
        w->buffer = (struct runbuf *)v;
        w->n = atomic_load_explicit(&w->buffer->count, memory_order_relaxed);
        return;
    }
    unsigned attr;
    uint64_t first, end;
    inline_split(v, pages, &attr, &first, &end);
    w->buffer = NULL;
    w->n = 0;
    if (first > 0)
        w->inline_run[w->n++] = run_make(0, 0);
    w->inline_run[w->n++] = run_make(first, attr);
    if (end < pages)
        w->inline_run[w->n++] = run_make(end, 0);
}

static inline uint32_t copy_count(uintptr_t v, uint64_t pages)
{
    struct runs_view w;
    view_decode(v, pages, &w);
    return w.n;
}

static inline uint64_t copy_get(uintptr_t v, uint32_t i, uint64_t pages)
{
    struct runs_view w;
    view_decode(v, pages, &w);
    return runs_view_get(&w, i);
}

/* The inline word for runs[0..n), if they have an inline shape. */
static bool inline_from(const uint64_t *run, uint32_t n, uintptr_t *out)
{
    unsigned attr;
    uint64_t first, length;
    if (n == 1) {
        attr = run_attr(run[0]);
        first = length = 0;
    } else if (n == 2 && run_attr(run[0]) == 0) {
        attr = run_attr(run[1]);
        first = run_page(run[1]);
        length = 0;
    } else if (n == 2 && run_attr(run[1]) == 0) {
        attr = run_attr(run[0]);
        first = 0;
        length = run_page(run[1]);
    } else if (n == 3 && run_attr(run[0]) == 0 && run_attr(run[2]) == 0) {
        attr = run_attr(run[1]);
        first = run_page(run[1]);
        length = run_page(run[2]) - first;
    } else {
        return false;
    }
    if (first >= INLINE_FIRST_LIMIT || length >= INLINE_LENGTH_LIMIT || attr >= INLINE_ATTR_LIMIT)
        return false;
    *out = inline_make(attr, first, length);
    return true;
}

static uint32_t buffer_capacity(size_t class_bytes)
{
    return (uint32_t)((class_bytes - sizeof(struct runbuf)) / sizeof(uint64_t));
}

/* A power of two: run buffers never use the 48-byte class (see slab.c). */
static size_t buffer_bytes(uint32_t count)
{
    size_t bytes = 32, need = sizeof(struct runbuf) + (size_t)count * sizeof(uint64_t);
    while (bytes < need)
        bytes *= 2;
    return bytes;
}

uint64_t reservation_committed(const struct reservation *r)
{
    struct runs_view w;
    reservation_view(r, &w);
    uint64_t committed = 0;
    for (uint32_t i = 0; i < w.n; i++) {
        uint64_t run = runs_view_get(&w, i);
        if (attr_visible(run_attr(run)))
            committed += runs_view_end(&w, i) - run_page(run);
    }
    return committed;
}

void reservation_view(const struct reservation *r, struct runs_view *w)
{
    view_decode(load_copy(r, 0), res_pages(r), w);
}

uint32_t reservation_run_count(const struct reservation *r)
{
    return copy_count(load_copy(r, 0), res_pages(r));
}

uint64_t reservation_run(const struct reservation *r, uint32_t i)
{
    return copy_get(load_copy(r, 0), i, res_pages(r));
}

uint32_t reservation_copy_count(const struct reservation *r, int copy)
{
    return copy_count(load_copy(r, copy), res_pages(r));
}

uint64_t reservation_copy_run(const struct reservation *r, int copy, uint32_t i)
{
    return copy_get(load_copy(r, copy), i, res_pages(r));
}

struct sink {
    struct runbuf *out; /* NULL: count only */
    uint32_t n;
    unsigned last;
    uint64_t head[3]; /* the first runs, to try the inline form */
};

static void emit(struct sink *k, uint64_t page, unsigned attr)
{
    if (k->n && k->last == attr)
        return;
    if (k->out)
        atomic_store_explicit(&k->out->run[k->n], run_make(page, attr), memory_order_relaxed);
    if (k->n < 3)
        k->head[k->n] = run_make(page, attr);
    k->n++;
    k->last = attr;
}

/* What a page of attribute old becomes when its range takes attr: attr, but
 * for ATTR_STALE (a decommit that keeps the hardware protection), which marks
 * committed pages stale and leaves the others as they are. */
static inline unsigned changed_attr(unsigned old, unsigned attr)
{
    if (attr == ATTR_PENDING) /* committed pages become pending, the others stay */
        return attr_visible(old) ? ATTR_PENDING : old;
    if (attr != ATTR_STALE)
        return attr;
    return attr_visible(old) ? old | ATTR_STALE : old;
}

/* The runs of src with pages [first, end) changed by attr, into k. */
static void compute(const struct runs_view *src, uint64_t first, uint64_t end, unsigned attr,
                    struct sink *k)
{
    uint32_t n = src->n;
    if (first >= end) { /* a plain copy */
        for (uint32_t i = 0; i < n; i++) {
            uint64_t run = runs_view_get(src, i);
            emit(k, run_page(run), run_attr(run));
        }
        return;
    }
    uint32_t i = 0;
    for (; i < n; i++) {
        uint64_t run = runs_view_get(src, i);
        if (run_page(run) >= first)
            break;
        emit(k, run_page(run), run_attr(run));
    }
    /* from the run holding page first - 1, if any: the range, then what follows */
    for (i = i ? i - 1 : 0; i < n; i++) {
        uint64_t run = runs_view_get(src, i), s = run_page(run), e = runs_view_end(src, i);
        if (e <= first)
            continue;
        if (s >= end) {
            emit(k, s, run_attr(run));
            continue;
        }
        emit(k, s > first ? s : first, changed_attr(run_attr(run), attr));
        if (e > end)
            emit(k, end, run_attr(run));
    }
}

uint32_t reservation_count_after(const struct reservation *r, uint64_t first, uint64_t end, unsigned attr)
{
    struct sink k = {NULL, 0, 0, {0, 0, 0}};
    struct runs_view w;
    reservation_view(r, &w);
    compute(&w, first, end, attr, &k);
    uintptr_t v;
    if (k.n <= 3 && inline_from(k.head, k.n, &v))
        return 1; /* one word: no buffer needed */
    return k.n > 1 ? k.n : 2; /* a buffer, even for one run a word cannot hold (a marked one) */
}

int reservation_prepare(struct slab *s, struct reservation *r, uint32_t count, bool giving_back,
                        uintptr_t spare[2])
{
    spare[0] = spare[1] = 0;
    if (count <= 1)
        return 0;
    for (int i = 0; i < 2; i++) {
        uintptr_t v = load_copy(r, i);
        if (!(v & RUNS_INLINE) &&
            atomic_load_explicit(&((struct runbuf *)v)->capacity, memory_order_relaxed) >= count)
            continue;
        size_t bytes = buffer_bytes(count);
        void *fresh;
        int err = giving_back ? slab_alloc_giving_back(s, bytes, &fresh) : slab_alloc(s, bytes, &fresh);
        if (err) {
            reservation_unprepare(s, spare);
            return err;
        }
        struct runbuf *b = fresh;
        atomic_store_explicit(&b->capacity, buffer_capacity(bytes), memory_order_relaxed);
        spare[i] = (uintptr_t)b;
    }
    return 0;
}

void reservation_unprepare(struct slab *s, uintptr_t spare[2])
{
    for (int i = 0; i < 2; i++) {
        if (spare[i]) {
            struct runbuf *b = (struct runbuf *)spare[i];
            slab_free(s, b, buffer_bytes(atomic_load_explicit(&b->capacity, memory_order_relaxed)));
            spare[i] = 0;
        }
    }
}

static void retire(struct slab *s, uintptr_t v)
{
    if (v && !(v & RUNS_INLINE)) {
        struct runbuf *b = (struct runbuf *)v;
        slab_free(s, b, buffer_bytes(atomic_load_explicit(&b->capacity, memory_order_relaxed)));
    }
}

/* Writes into copy dst the runs of src with [first,end) set to attr. */
static void write_copy(struct slab *s, struct reservation *r, int dst, uintptr_t src,
                       uint64_t first, uint64_t end, unsigned attr, uintptr_t spare[2])
{
    uint64_t pages = res_pages(r);
    uintptr_t old = load_copy(r, dst);
    uintptr_t v = src; /* a plain copy of one word stays one word */
    struct sink count = {NULL, 0, 0, {0, 0, 0}};
    bool one_word = first >= end && (src & RUNS_INLINE);
    struct runs_view w;
    if (!one_word) {
        view_decode(src, pages, &w);
        compute(&w, first, end, attr, &count);
        one_word = count.n <= 3 && inline_from(count.head, count.n, &v);
    }
    if (!one_word) {
        struct runbuf *b;
        if (!(old & RUNS_INLINE) &&
            atomic_load_explicit(&((struct runbuf *)old)->capacity, memory_order_relaxed) >= count.n) {
            b = (struct runbuf *)old;
        } else {
            b = (struct runbuf *)spare[dst];
            spare[dst] = 0;
        }
        struct sink k = {b, 0, 0, {0, 0, 0}};
        compute(&w, first, end, attr, &k);
        atomic_store_explicit(&b->count, k.n, memory_order_relaxed);
        v = (uintptr_t)b;
    }
    atomic_store_explicit(&r->runs[dst], v, memory_order_relaxed);
    if (old != v)
        retire(s, old);
}

/* At rest: both copies hold the same runs, sorted from page 0, non-empty and
 * maximal (what hostmem_validate checks of every reservation; asserted after
 * every change in builds with HOSTMEM_ASSERT >= 2). */
static bool runs_well_formed(const struct reservation *r)
{
    struct runs_view w0, w1;
    view_decode(load_copy(r, 0), res_pages(r), &w0);
    view_decode(load_copy(r, 1), res_pages(r), &w1);
    if (w0.n != w1.n || w0.n == 0 || run_page(runs_view_get(&w0, 0)) != 0)
        return false;
    for (uint32_t i = 0; i < w0.n; i++) {
        uint64_t run = runs_view_get(&w0, i);
        if (run != runs_view_get(&w1, i) || runs_view_end(&w0, i) <= run_page(run))
            return false;
        if (i > 0 && run_attr(runs_view_get(&w0, i - 1)) == run_attr(run))
            return false;
    }
    return true;
}

/* The latch's bracket: the sequence odd while copy 0 (or a whole record) is
 * rewritten, so that readers use copy 1 and retry if they saw the change;
 * even again after. The sequence is even at rest. A writer that goes on to
 * rewrite copy 1 fences after latch_close (there, not inside it: gcc's
 * ThreadSanitizer pass refuses a fence inlined from here). */
static uint64_t latch_open(struct reservation *r)
{
    uint64_t seq = atomic_load_explicit(&r->seq, memory_order_relaxed);
    hm_assert(!(seq & 1));
    atomic_store_explicit(&r->seq, seq + 1, memory_order_release);
    atomic_thread_fence(memory_order_release);
    return seq;
}

static void latch_close(struct reservation *r, uint64_t seq)
{
    atomic_store_explicit(&r->seq, seq + 2, memory_order_release);
}

void reservation_apply(struct slab *s, struct reservation *r, uint64_t first, uint64_t end,
                unsigned attr, uintptr_t spare[2])
{
    uint64_t seq = latch_open(r);
    /* Readers now use copy 1, which still holds the old runs. */
    write_copy(s, r, 0, load_copy(r, 1), first, end, attr, spare);
    latch_close(r, seq);
    atomic_thread_fence(memory_order_release);
    /* Readers now use copy 0, the new runs; bring copy 1 up to date. */
    write_copy(s, r, 1, load_copy(r, 0), 0, 0, 0, spare);
    reservation_unprepare(s, spare);
    hm_assert_expensive(runs_well_formed(r));
}

void reservation_init(struct reservation *r, uintptr_t base, size_t size, unsigned attr,
                      uint16_t flags, uint32_t arena_index)
{
    /* r may be a recycled slot that a stale reader still looks at */
    uint64_t seq = latch_open(r);
    atomic_store_explicit(&r->base, base, memory_order_relaxed);
    atomic_store_explicit(&r->size_protect, size >> g_page_shift, memory_order_relaxed);
    atomic_store_explicit(&r->runs[0], inline_make(attr, 0, 0), memory_order_relaxed);
    atomic_store_explicit(&r->runs[1], inline_make(attr, 0, 0), memory_order_relaxed);
    r->flags = flags;
    r->watch_slot = 0;
    r->arena_index = arena_index;
    latch_close(r, seq);
}

void reservation_clear(struct slab *s, struct reservation *r)
{
    uintptr_t spare[2] = {0, 0};
    reservation_apply(s, r, 0, res_pages(r), 0, spare);
}

int reservation_read(struct reservation *r, uintptr_t entry_expected, uintptr_t address,
                     struct run_snapshot *view)
{
    for (;;) {
        uint64_t s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
        uintptr_t base = atomic_load_explicit(&r->base, memory_order_relaxed);
        uint64_t pages = res_pages(r);
        uint32_t alloc_protect = res_alloc_protect(r);
        uintptr_t v = atomic_load_explicit(&r->runs[s1 & 1], memory_order_relaxed);
        int covered = address >= base && ((address - base) >> g_page_shift) < pages;
        uint64_t first = 0, end = pages;
        unsigned attr = 0;
        if (covered) {
            uint64_t index = (address - base) >> g_page_shift;
            if (v & RUNS_INLINE) {
                unsigned a;
                uint64_t f, e;
                inline_split(v, pages, &a, &f, &e);
                if (index < f) {
                    end = f; /* the reserved pages before the range */
                } else if (index < e) {
                    first = f;
                    end = e;
                    attr = a;
                } else {
                    first = e; /* the reserved pages after it */
                }
            } else if (v) {
                struct runbuf *b = (struct runbuf *)v;
                uint32_t n = atomic_load_explicit(&b->count, memory_order_relaxed);
                uint32_t cap = atomic_load_explicit(&b->capacity, memory_order_relaxed);
                if (n > cap)
                    n = cap; /* a stale buffer: bounded, and the sequence will tell */
                uint32_t lo = 0, hi = n;
                while (hi - lo > 1) {
                    uint32_t mid = lo + (hi - lo) / 2;
                    if (run_page(atomic_load_explicit(&b->run[mid], memory_order_relaxed)) <= index)
                        lo = mid;
                    else
                        hi = mid;
                }
                if (n) {
                    uint64_t run = atomic_load_explicit(&b->run[lo], memory_order_relaxed);
                    first = run_page(run);
                    attr = attr_visible(run_attr(run));
                    hi = lo + 1;
                    if (!attr) { /* reserved: stale runs beside it read as one region */
                        for (; lo > 0 && !attr_visible(run_attr(atomic_load_explicit(
                                             &b->run[lo - 1], memory_order_relaxed)));
                             lo--)
                            first = run_page(atomic_load_explicit(&b->run[lo - 1], memory_order_relaxed));
                        while (hi < n && !attr_visible(run_attr(atomic_load_explicit(&b->run[hi], memory_order_relaxed))))
                            hi++;
                    }
                    if (hi < n)
                        end = run_page(atomic_load_explicit(&b->run[hi], memory_order_relaxed));
                }
            }
        }
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&r->seq, memory_order_relaxed);
        if (s1 != s2)
            continue;
        if (radix_load(address) != entry_expected)
            return 0;
        view->base = base;
        view->pages = pages;
        view->alloc_protect = alloc_protect;
        view->first = first;
        view->end = end;
        view->attr = attr;
        return covered ? 1 : 2; /* 2: in the reservation's granule, past its last page */
    }
}
