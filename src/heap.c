/*
 * heap.c - IHostMalloc: a heap whose pages come from the manager, so the
 * budget, the statistics and the region map cover it.
 *
 * Layout. A segment is a 4 MiB reservation made through the manager (tagged
 * as a heap segment in the address map), cut into 64 KiB spans. Its first page
 * is an inaccessible guard, then the segment header (every span's descriptor
 * and its owner's bookkeeping), then another guard: a write running off the
 * segment below or the blocks above faults before it reaches the header. A
 * span serves one size class (81 classes, 8 B to 16 KiB) and holds nothing but
 * blocks, each behind an 8-byte tag that says whether it is handed out (in the
 * block's own line, which Alloc and Free touch anyway). Bigger blocks get a
 * reservation each. Heap segments keep their reserved pages readable (like
 * compact mode), so checking a pointer never faults.
 *
 * Hardened (docs/heap.md). Free lists run through the free blocks, each link
 * XORed with the block's address and a secret of the heap, and the tag of a
 * free block is a keyed check of that link: a link or a tag overwritten
 * (a use after free, an overrun) is found before it is followed, counted
 * (heap_corruptions) and refused - the list is dropped, never followed to an
 * address a write chose. A live tag is keyed too, so that an overrun cannot
 * forge one and free a block twice.
 *
 * Threads. A MALLOC_THREADSAFE heap gives each thread a cache (tcache) that
 * owns spans: the owner allocates and frees without atomics on the free list;
 * another thread's free is pushed on the span's remote list with a
 * compare-and-swap and collected by the owner when it runs dry. A span that
 * was full when a remote free arrived is handed to its owner through the
 * owner's "notified" stack. A thread's cache outlives the thread: at exit it
 * becomes an orphan the next new thread adopts whole. A heap without
 * MALLOC_THREADSAFE has one cache and no atomics beyond plain stores.
 *
 * Free checks, in order: the address map says the pointer lies in a heap
 * segment of this manager; the segment header names this heap; the span is in
 * use and the pointer is exactly a block boundary; the block's tag says
 * handed out, and becomes a free tag (claimed atomically by a thread that is
 * not the owner): a second free of the same block finds it free. Any failure
 * is HOST_E_INVALIDOPERATION and changes nothing; a tag that is neither live,
 * free nor never used is counted as a corruption too. The owner's fast path
 * takes the first three from its cache's record of the spans it owns (owned),
 * which its thread alone writes, and reads the tag as the full path does.
 *
 * Memory goes back: a span whose blocks are all free is kept as the class's
 * one spare, or decommitted (the budget and committed bytes drop). Segments
 * keep their address space until the heap is released.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define SEGMENT_SHIFT 22
#define SEGMENT_SIZE ((size_t)1 << SEGMENT_SHIFT)
#define SPAN_SIZE ((size_t)64 << 10)
#define SPAN_SHIFT 16
#define SPANS_PER_SEGMENT (SEGMENT_SIZE / SPAN_SIZE)
#define SMALL_MAX 16384
#define CLASSES 81
#define SPAN_MAGIC 0x5370616eu

/* ---- size classes ------------------------------------------------------------------ */
/* A class is its usable size; a block takes that and the 8-byte tag before it
 * (the stride, a multiple of 16, so every block is 16-byte aligned). Usable
 * sizes are 8 past a multiple of 16: a request of 16k+1 to 16k+8 bytes pays
 * nothing for the tag, one of 16k+9 to 16k+16 (the powers of two among them)
 * 16 bytes; 1024 gets the class of 1032. 65 classes in 16-byte steps of
 * stride to 1040, then four a doubling from 1 KiB, each 8 past its round size. */
#define BLOCK_HEAD 8
static uint32_t class_size[CLASSES];
static uint8_t class_of_16[SMALL_MAX / 16 + 1]; /* by (size + 7) / 16 */
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;

static void classes_init(void)
{
    int c = 0;
    for (uint32_t s = 8; s <= 1032; s += 16)
        class_size[c++] = s;
    for (uint32_t base = 1024; base < SMALL_MAX; base *= 2)
        for (uint32_t q = 1; q <= 4; q++)
            class_size[c++] = base + base / 4 * q + 8;
    for (size_t i = 0, k = 0; i <= SMALL_MAX / 16; i++) {
        while (class_size[k] < i * 16 + 8) /* the largest size with this index */
            k++;
        class_of_16[i] = (uint8_t)k;
    }
}

static inline unsigned class_of(size_t size)
{
    return class_of_16[(size + 7) >> 4];
}

/* ---- structures ----------------------------------------------------------------------- */
struct tcache;

/* A span's owner's bookkeeping, in the segment header (never in the span, where
 * an overrun of a block could reach it): a cache line each. Its shape (class,
 * block size, first block, owner) is in its descriptor beside it (desc_of). */
struct span {
    uint32_t magic;
    uint16_t listed;              /* owner: on its partial list */
    _Atomic uint32_t used;        /* blocks out; written by the owner only */
    uint32_t bump;                /* blocks never handed out start here */
    void *free;                   /* owner's free list (links encoded: link_write) */
    _Atomic(void *) remote;       /* frees from other threads (the same) */
    _Atomic uint32_t full;        /* owner gave it up full; a remote free hands it back */
    struct span *next, *prev;     /* owner's partial list */
    _Atomic(struct span *) notified_next;
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct span) == 64, "a span's bookkeeping is one cache line");

/* What Free needs of a span, kept in the segment header: the header's lines
 * stay in the cache, so a free reads no span header, only the block's tag. */
struct span_desc {
    _Atomic uint32_t in_use;   /* 0 free; 1 taken (heap lock); 2 initialised (its owner) */
    uint32_t stride;           /* the class's size and the tag before a block */
    uint32_t capacity;
    uint16_t size_class;
    uint64_t reciprocal;       /* ceil(2^32 / stride): exact division of offsets */
    uintptr_t first;           /* block 0 */
    _Atomic(struct tcache *) owner;
};

/* The segment header, a page into the segment (segment_at): between two
 * inaccessible guard pages, the first of the segment and the one after the
 * header, committed no-access (segment_new). Spans start past the second guard
 * (first_span); those below are never used. */
struct segment {
    struct heap *heap;
    struct segment *next;
    uintptr_t base;
    uint32_t free_spans; /* heap lock */
    struct span_desc desc[SPANS_PER_SEGMENT];
    struct span span[SPANS_PER_SEGMENT];
};
_Static_assert(sizeof(struct segment) + 3 * 65536 <= SEGMENT_SIZE / 2,
               "the header and its guards leave most of a segment to spans, even with 64 KiB pages");
_Static_assert(SPAN_SIZE == (size_t)1 << SPAN_SHIFT, "a span is 1 << SPAN_SHIFT bytes");
_Static_assert(sizeof(struct segment) <= 8192, "the header fits 8 KiB (tools/demo.c's walk_needs counts on it)");
static unsigned first_span;   /* the first span past the header's guards (heap_init) */
static size_t header_bytes;   /* the header's pages */

static void heap_init(void)
{
    classes_init();
    /* the segment's first page (a guard), the header, a guard: spans start past them */
    header_bytes = page_up(sizeof(struct segment));
    first_span = (unsigned)((2 * g_page + header_bytes + SPAN_SIZE - 1) >> SPAN_SHIFT);
}
/* 65 classes of 16 B steps to 1032, then 4 a doubling past SMALL_MAX (classes_init) */
_Static_assert(1024 / 16 + 1 + 4 * 4 == CLASSES && 8192 + 8192 == SMALL_MAX, "the size classes");
_Static_assert(CLASSES <= UINT8_MAX, "class_of_16 holds a class in a byte");

static inline uintptr_t segment_base_of(const void *p)
{
    return (uintptr_t)p & ~(uintptr_t)(SEGMENT_SIZE - 1);
}

/* The header of the segment at base: past the guard page that starts it. */
static inline struct segment *segment_at(uintptr_t base)
{
    return (struct segment *)(base + g_page);
}

static inline struct span *span_at(uintptr_t base, unsigned k)
{
    return &segment_at(base)->span[k];
}

static inline unsigned span_index(const struct span *s)
{
    return (unsigned)(s - segment_at(segment_base_of(s))->span);
}

/* Where span s's blocks are. */
static inline uintptr_t span_base(const struct span *s)
{
    return segment_base_of(s) + ((uintptr_t)span_index(s) << SPAN_SHIFT);
}

static inline struct span_desc *desc_of(const struct span *s)
{
    return &segment_at(segment_base_of(s))->desc[span_index(s)];
}

static inline struct span *span_of_block(const void *block)
{
    uintptr_t base = segment_base_of(block);
    return span_at(base, (unsigned)(((uintptr_t)block - base) >> SPAN_SHIFT));
}

/* Block i of the span d describes. */
static inline uintptr_t block_at(const struct span_desc *d, uint32_t i)
{
    return d->first + (uintptr_t)i * d->stride;
}

static inline _Atomic uintptr_t *tag_of(void *block)
{
    return (_Atomic uintptr_t *)((char *)block - sizeof(uintptr_t));
}

/* The first block of every span is 16 bytes past the span's base (its tag
 * fills the 8 before it; span_init), so that every block is 16-byte aligned. */
#define FIRST_BLOCK 16

/* Blocks in a span of a class: from FIRST_BLOCK, the last ending by the span's end. */
static inline uint32_t span_capacity(unsigned size_class)
{
    uint32_t size = class_size[size_class];
    return (uint32_t)((SPAN_SIZE - FIRST_BLOCK - size) / (size + BLOCK_HEAD) + 1);
}

/* Recently freed blocks of one class, reused first (they are still in the
 * cache): the owner's free and allocation touch nothing else. Their tags say
 * free; their spans still count them as used. The list runs through the
 * blocks, so a cache's 81 magazines take 21 cache lines, not 40 KiB: a free
 * and an allocation of random classes then find them in the L1 cache. */
#define MAGAZINE 32
struct magazine {
    void *head;
    uint32_t count, capacity;
    /* the class's shape, for Free's exactness test (block_offset_exact) */
    uint64_t divider;  /* ceil(2^64 / stride) */
    uint32_t last;     /* the last block's offset from the first */
};

/* A free block (in a magazine, on its span's list or its remote list): the
 * next one, encoded (link_write). The smallest class is 8 bytes. */
struct parked {
    uintptr_t link;
};
_Static_assert(sizeof(struct parked) <= 8 && sizeof(uintptr_t) == BLOCK_HEAD,
               "a free block's link fits the smallest class, the tag its head");

/* The spans a cache owns, by address: slot (base >> SPAN_SHIFT) % OWNED holds
 * base | the byte offset of its class's magazine in the cache (owned_note), for
 * a span this cache owns and has initialised, or else
 * owned_vacant(slot) - a span that can never map to that slot, so that no
 * pointer matches an empty slot (not even one below 64 KiB against 0). The
 * owner's private record (in its cache, never among the blocks): a match proves
 * that a pointer lies in a span of this heap that the calling thread owns, in
 * use, of that class - without the address map, the segment header or the owner
 * compare. Two spans that share a slot take turns (the last to be freed into
 * through heap_free holds it); the other's frees take the full path. */
#define OWNED 1024

struct tcache {
    struct heap *heap;
    uintptr_t owned[OWNED];
    struct magazine magazine[CLASSES];
    struct span *current[CLASSES];
    struct span *partial[CLASSES];
    struct span *empty;           /* empty spans kept committed, any class (next links) */
    unsigned empties;
    _Atomic(struct span *) notified;
    struct tcache *next;          /* every cache of the heap (heap lock) */
    struct tcache *next_orphan;
};

struct block_info {
    uintptr_t key; /* 0 empty, 1 deleted */
    size_t size;
    const char *file;
    int line;
};

struct ledger {
    struct block_info *slots;
    size_t capacity, count, used; /* used counts deleted slots too */
};

struct heap {
    /* what Alloc and Free read on every call: the first cache line */
    IHostMalloc iface;
    struct manager *m;
    uint64_t id;
    /* the secrets of the tags and links (os_random at creation) */
    uintptr_t key_live, key_link, key_free;
    _Atomic uint32_t references;
    DWORD protect;
    bool threadsafe;
    void *lock;
    struct segment *segments;
    struct tcache *caches;
    struct tcache *orphans;
    struct tcache single;
    struct ledger large;          /* base of a large block -> size */
    struct ledger debug;          /* DebugAlloc'd block -> file:line */
    struct heap *next_live;
    bool fork_held;               /* fork.c: its lock entered before a fork */
};

static struct heap *heap_from(IHostMalloc *i)
{
    return (struct heap *)i;
}

/* ---- tags and links ---------------------------------------------------------------------
 * The word before every block is its tag: a block handed out has its live tag,
 * its address XORed with the heap's key_live (top bit set); a free block has a
 * free tag, the next block on its list XORed with key_free (top bit clear, bit
 * 62 set); a block never handed out since its span took its class has 0. A
 * tag, not a bit: a stray write over it (an overrun of the block before) makes
 * the next Free of the block a refusal, and without the key it cannot forge a
 * live tag to free a block twice. It shares the block's cache line three times
 * in four, and Alloc and Free touch that line anyway (docs/heap.md).
 *
 * A free block's first word links it to the next on its list, XORed with its
 * own address and key_link; its free tag says the same with another key, and
 * the two must agree before the link is followed (link_read). A link or a tag
 * overwritten without the keys - a use after free, an overrun - fails that
 * check; a pair copied from another block decodes, at its new address, to a
 * next its tag does not name. XOR keeps Alloc's and Free's fast paths a few
 * instructions longer, not a multiply longer (docs/heap.md, "Hardened
 * metadata"): the keys resist blind writes, not a caller who can read freed
 * memory or flip chosen bits of both words. The keys' bits 62-63 are chosen
 * (heap_create) so that no free tag is 0 or a live tag without a mask. */
#define TAG_LIVE_BIT ((uintptr_t)1 << 63)
#define TAG_FREE_BIT ((uintptr_t)1 << 62)
_Static_assert(ADDRESS_BITS < 62, "a block's address leaves the tags' marks free");

static inline uintptr_t live_tag(const struct heap *h, const void *block)
{
    return (uintptr_t)block ^ h->key_live; /* key_live has TAG_LIVE_BIT */
}

/* A block DebugAlloc recorded in the ledger has its live tag with bit 62
 * flipped: still handed out, never a free tag (top bit set), and not the tag
 * Free's fast path compares with, so its Free takes heap_free, which forgets
 * the record. */
#define TAG_DEBUG_BIT ((uintptr_t)1 << 62)
static inline uintptr_t debug_tag(const struct heap *h, const void *block)
{
    return live_tag(h, block) ^ TAG_DEBUG_BIT;
}

/* block goes on a list in front of next: its link and its free tag say so. */
static inline void link_write(const struct heap *h, void *block, const void *next)
{
    uintptr_t at = (uintptr_t)block;
    ((struct parked *)block)->link = (uintptr_t)next ^ at ^ h->key_link;
    atomic_store_explicit(tag_of(block), (uintptr_t)next ^ h->key_free, memory_order_relaxed);
}

/* The block after block on its list (NULL at the end), or false when its link
 * or its tag was overwritten since link_write: then nothing is followed. */
static inline bool link_read(const struct heap *h, void *block, void **next)
{
    uintptr_t at = (uintptr_t)block, n = ((struct parked *)block)->link ^ at ^ h->key_link;
    if (__builtin_expect(atomic_load_explicit(tag_of(block), memory_order_relaxed) != (n ^ h->key_free), 0))
        return false;
    *next = (void *)n;
    return true;
}

/* Is tag the free tag of a block whose link is intact (freed, not overwritten)? */
static inline bool free_tag_intact(const struct heap *h, void *block, uintptr_t tag)
{
    uintptr_t link = atomic_load_explicit((_Atomic uintptr_t *)block, memory_order_relaxed);
    return tag == (link ^ (uintptr_t)block ^ h->key_link ^ h->key_free);
}

/* Is p a block boundary of the span d describes? (A pointer below the first
 * block gives a huge offset, which fails the same test.) */
static inline bool block_of_span(const struct span_desc *d, uintptr_t p)
{
    uint64_t offset = p - d->first;
    uint32_t index = (uint32_t)((offset * d->reciprocal) >> 32);
    return index < d->capacity && (uint64_t)index * d->stride == offset;
}

/* Is offset (from a span's first block) a block boundary of the class mag
 * caches? Divisibility by the stride with one multiply (Lemire, Kaser and
 * Kurz, "Faster remainder by direct computation", 2019: for 32-bit n and d,
 * d divides n exactly when n * ceil(2^64 / d) mod 2^64 < ceil(2^64 / d)); an
 * offset below the first block wrapped to a huge one and fails the first test. */
static inline bool block_offset_exact(const struct magazine *mag, uint64_t offset)
{
    return offset <= mag->last && offset * mag->divider < mag->divider;
}

static inline uintptr_t owned_vacant(size_t slot)
{
    return (uintptr_t)(slot + 1) << SPAN_SHIFT; /* maps to slot + 1 */
}

/* The span at span_base of size_class is c's (span_init) / no longer is. */
static inline void owned_note(struct tcache *c, uintptr_t span_base, unsigned size_class)
{
    c->owned[(span_base >> SPAN_SHIFT) % OWNED] = span_base | (size_class * sizeof(struct magazine));
}
_Static_assert(CLASSES * sizeof(struct magazine) <= SPAN_SIZE, "a magazine's offset fits below a span's base");

/* The magazine of the class of the span an owned slot names. */
static inline struct magazine *owned_magazine(struct tcache *c, uintptr_t slot)
{
    return (struct magazine *)((char *)c->magazine + (slot & (SPAN_SIZE - 1)));
}
static inline void owned_forget(struct tcache *c, uintptr_t span_base)
{
    size_t slot = (span_base >> SPAN_SHIFT) % OWNED;
    if ((c->owned[slot] >> SPAN_SHIFT) == (span_base >> SPAN_SHIFT))
        c->owned[slot] = owned_vacant(slot);
}

static inline void magazine_push(const struct heap *h, struct magazine *mag, void *block)
{
    link_write(h, block, mag->head);
    mag->head = block;
    mag->count++;
}

/* The first block of a magazine that has one; NULL when its link was
 * overwritten (the caller drops the magazine: magazine_corrupted). */
static inline void *magazine_pop(const struct heap *h, struct magazine *mag)
{
    void *b = mag->head, *next;
    if (!link_read(h, b, &next))
        return NULL;
    mag->head = next;
    mag->count--;
    return b;
}

/* A magazine whose list was overwritten: counted, and left empty - its blocks
 * leak (their spans never empty), rather than a link anyone wrote be followed. */
static __attribute__((noinline, cold)) void magazine_corrupted(struct heap *h, struct magazine *mag)
{
    corruption_found(h->m, "a free block's link or tag in a magazine");
    mag->head = NULL;
    mag->count = 0;
}

/* A Free refused because the tag is not live: a block never handed out (0) or
 * freed already (a free tag that checks out) is an ordinary bad free; any
 * other tag was overwritten, and is counted too. */
static __attribute__((noinline)) HRESULT free_refused(struct heap *h, void *block, uintptr_t tag)
{
    if (tag != 0 && !free_tag_intact(h, block, tag))
        corruption_found(h->m, "a block's tag");
    return HOST_E_INVALIDOPERATION;
}

/* ---- the ledger: a small hash from block to block_info (heap lock held) --------------- */
static size_t ledger_hash(uintptr_t key, size_t capacity)
{
    uint64_t h = (uint64_t)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 20) & (capacity - 1);
}

static bool ledger_grow(struct heap *h, struct ledger *l)
{
    size_t capacity = l->capacity ? l->capacity * 2 : 128;
    void *fresh;
    int err = pages_alloc(h->m, capacity * sizeof(struct block_info), &fresh);
    if (err) {
        os_refused(h->m, err, "mmap of a heap's ledger");
        return false;
    }
    struct block_info *slots = fresh;
    for (size_t i = 0; i < l->capacity; i++) {
        if (l->slots[i].key > 1) {
            size_t j = ledger_hash(l->slots[i].key, capacity);
            while (slots[j].key)
                j = (j + 1) & (capacity - 1);
            slots[j] = l->slots[i];
        }
    }
    pages_free(h->m, l->slots, l->capacity * sizeof *l->slots);
    l->slots = slots;
    l->capacity = capacity;
    l->used = l->count;
    return true;
}

static bool ledger_put(struct heap *h, struct ledger *l, struct block_info e)
{
    if ((l->used + 1) * 2 > l->capacity && !ledger_grow(h, l))
        return false;
    size_t j = ledger_hash(e.key, l->capacity);
    while (l->slots[j].key > 1)
        j = (j + 1) & (l->capacity - 1);
    if (l->slots[j].key == 0)
        l->used++;
    l->slots[j] = e;
    l->count++;
    return true;
}

static struct block_info *ledger_find(struct ledger *l, uintptr_t key)
{
    if (!l->capacity)
        return NULL;
    size_t j = ledger_hash(key, l->capacity);
    while (l->slots[j].key) {
        if (l->slots[j].key == key)
            return &l->slots[j];
        j = (j + 1) & (l->capacity - 1);
    }
    return NULL;
}

static void ledger_remove(struct ledger *l, struct block_info *e)
{
    e->key = 1;
    l->count--;
}

/* ---- thread caches ---------------------------------------------------------------------- */
/* Which cache this thread has for each heap it used: nodes from a pool, not
 * malloc (pool.c). A node outlives its heap (ids are never reused, so a dead
 * heap's node matches nothing) until the thread ends. Initial-exec TLS: the
 * general model may malloc on a thread's first access in a dlopen'ed library. */
struct tls_node {
    uint64_t heap_id;
    struct tcache *cache;
    struct tls_node *next;
};
static struct pool tls_node_pool = POOL_INIT(sizeof(struct tls_node));

#define TLS __thread __attribute__((tls_model("initial-exec")))
static TLS struct {
    uint64_t heap_id;
    struct tcache *cache;
} tls_slots[4], tls_last; /* tls_last: the heap this thread used last */
static TLS struct tls_node *tls_list;

static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static struct heap *live_heaps;
static _Atomic uint64_t next_heap_id = 1;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* A thread ends: its caches become orphans that the next new thread adopts. */
static void thread_exit(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&live_lock);
    for (struct tls_node *n = tls_list, *next; n; n = next) {
        next = n->next;
        for (struct heap *h = live_heaps; h; h = h->next_live) {
            if (h->id != n->heap_id)
                continue;
            if (lock_enter(h->m, h->lock) == S_OK) {
                n->cache->next_orphan = h->orphans;
                h->orphans = n->cache;
                lock_leave(h->m, h->lock);
            }
            break;
        }
        pool_free(&tls_node_pool, n);
    }
    tls_list = NULL;
    pthread_mutex_unlock(&live_lock);
}

static void exit_key_init(void)
{
    pthread_key_create(&exit_key, thread_exit);
}

static void tcache_init(struct tcache *c, struct heap *h)
{
    c->heap = h;
    for (size_t i = 0; i < OWNED; i++)
        c->owned[i] = owned_vacant(i);
    for (unsigned k = 0; k < CLASSES; k++) {
        uint32_t fit = (uint32_t)(32768 / class_size[k]);
        struct magazine *mag = &c->magazine[k];
        mag->capacity = fit < 2 ? 2 : fit > MAGAZINE ? MAGAZINE : fit;
        uint32_t stride = class_size[k] + BLOCK_HEAD;
        mag->divider = UINT64_MAX / stride + 1;
        mag->last = (span_capacity(k) - 1) * stride;
    }
}

/* The calling thread has cache c for h: found next time by tcache_fast. */
static void tls_remember(struct heap *h, struct tcache *c)
{
    tls_slots[h->id & 3].heap_id = tls_last.heap_id = h->id;
    tls_slots[h->id & 3].cache = tls_last.cache = c;
}

static struct tcache *tcache_slow(struct heap *h)
{
    for (struct tls_node *n = tls_list; n; n = n->next) {
        if (n->heap_id == h->id) {
            tls_remember(h, n->cache);
            return n->cache;
        }
    }
    void *fresh;
    int err = pool_alloc(&tls_node_pool, &fresh);
    if (err) {
        os_refused(h->m, err, "mmap of the thread records' pool");
        return NULL;
    }
    struct tls_node *node = fresh;
    if (lock_enter(h->m, h->lock) != S_OK) {
        pool_free(&tls_node_pool, node);
        return NULL;
    }
    struct tcache *c = h->orphans;
    if (c) {
        h->orphans = c->next_orphan;
    } else {
        err = pages_alloc(h->m, sizeof *c, &fresh);
        c = err ? NULL : fresh;
        if (err)
            os_refused(h->m, err, "mmap of a thread's cache");
        if (c) {
            tcache_init(c, h);
            c->next = h->caches;
            h->caches = c;
        }
    }
    lock_leave(h->m, h->lock);
    if (!c) {
        pool_free(&tls_node_pool, node);
        return NULL;
    }
    node->heap_id = h->id;
    node->cache = c;
    node->next = tls_list;
    tls_list = node;
    pthread_once(&exit_once, exit_key_init);
    pthread_setspecific(exit_key, (void *)1);
    tls_remember(h, c);
    return c;
}

/* The calling thread's cache, if it has one already (heap ids are never
 * reused, and only MALLOC_THREADSAFE heaps enter tls_slots). */
static inline struct tcache *tcache_fast(struct heap *h)
{
    uint64_t id = h->id;
    if (__builtin_expect(tls_last.heap_id == id, 1))
        return tls_last.cache;
    if (tls_slots[id & 3].heap_id == id) {
        tls_last = tls_slots[id & 3];
        return tls_last.cache;
    }
    if (h->threadsafe)
        return NULL;
    /* the one cache: remembered too, so that the fast paths find it in tls_last */
    tls_slots[id & 3].heap_id = tls_last.heap_id = id;
    tls_slots[id & 3].cache = tls_last.cache = &h->single;
    return &h->single;
}

static inline struct tcache *tcache_get(struct heap *h)
{
    struct tcache *c = tcache_fast(h);
    return c ? c : tcache_slow(h);
}

/* ---- spans ------------------------------------------------------------------------------ */
static void partial_insert(struct tcache *c, struct span *s)
{
    unsigned size_class = desc_of(s)->size_class;
    s->prev = NULL;
    s->next = c->partial[size_class];
    if (s->next)
        s->next->prev = s;
    c->partial[size_class] = s;
    s->listed = 1;
}

static void partial_remove(struct tcache *c, struct span *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->partial[desc_of(s)->size_class] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->listed = 0;
}

/* Moves the remote frees onto the owner's list. Each link is checked before
 * it is followed: it must check out against its tag and lead to a block of
 * the same span, and the list can hold no more blocks than the span has. At
 * the first that does not, the rest of the list is dropped (leaked: the span
 * never empties), counted; false says so. */
static bool collect(struct heap *h, struct span *s)
{
    void *list = atomic_exchange_explicit(&s->remote, NULL, memory_order_acquire);
    const struct span_desc *d = desc_of(s);
    uint32_t n = 0;
    void *last = NULL, *next;
    bool intact = true;
    for (void *b = list; b; b = next) {
        if (!link_read(h, b, &next) || (next && !block_of_span(d, (uintptr_t)next)) || n == d->capacity) {
            corruption_found(h->m, "a free block's link or tag on a span's remote list");
            intact = false;
            break;
        }
        n++;
        last = b;
    }
    if (!n)
        return intact;
    link_write(h, last, s->free);
    s->free = list;
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) - n,
                          memory_order_relaxed);
    return intact;
}

/* A block of s: from its free list (each link checked as collect checks, and
 * never more blocks out than the span has), else one never handed out. NULL
 * when s has none, and also, with *corrupt set, when its list was overwritten:
 * the list is then dropped, counted. */
static inline void *span_pop(struct heap *h, struct span *s, bool *corrupt)
{
    const struct span_desc *d = desc_of(s);
    void *b = s->free, *next;
    if (b) {
        if (!link_read(h, b, &next) || (next && !block_of_span(d, (uintptr_t)next)) ||
            atomic_load_explicit(&s->used, memory_order_relaxed) >= d->capacity) {
            corruption_found(h->m, "a free block's link or tag on a span's list");
            s->free = NULL;
            *corrupt = true;
            return NULL;
        }
        s->free = next;
        return b;
    }
    if (s->bump < d->capacity)
        return (void *)block_at(d, s->bump++);
    return NULL;
}

static void span_init(struct span *s, unsigned size_class, struct tcache *owner)
{
    uint32_t size = class_size[size_class];
    uint32_t stride = size + BLOCK_HEAD;
    uintptr_t first = span_base(s) + FIRST_BLOCK; /* the span holds blocks only */
    uint32_t capacity = span_capacity(size_class);
    s->magic = SPAN_MAGIC;
    s->listed = 0;
    atomic_store_explicit(&s->used, 0, memory_order_relaxed);
    s->bump = 0;
    s->free = NULL;
    atomic_store_explicit(&s->remote, NULL, memory_order_relaxed);
    atomic_store_explicit(&s->full, 0, memory_order_relaxed);
    s->next = s->prev = NULL;
    /* the shape, in the segment header, published last */
    struct span_desc *d = desc_of(s);
    atomic_store_explicit(&d->in_use, 1, memory_order_relaxed);
    d->stride = stride;
    d->capacity = capacity;
    d->size_class = (uint16_t)size_class;
    d->reciprocal = (((uint64_t)1 << 32) + stride - 1) / stride;
    d->first = first;
    atomic_store_explicit(&d->owner, owner, memory_order_relaxed);
    atomic_store_explicit(&d->in_use, 2, memory_order_release);
    owned_note(owner, span_base(s), size_class);
}

/* A new segment (no lock held): its header between two guard pages, committed
 * no-access (the pages of the reservation that are not committed stay
 * readable and writable, as every heap segment's: docs/heap.md). */
static HRESULT segment_new(struct heap *h, EMemoryCriticalLevel level, struct segment **out)
{
    void *base;
    HRESULT hr = vm_alloc_ex(h->m, NULL, SEGMENT_SIZE, MEM_RESERVE, h->protect, level, &base,
                             VM_HEAP | VM_ALIGN_4M);
    if (hr != S_OK)
        return hr;
    void *p;
    hr = vm_alloc_ex(h->m, base, 2 * g_page + header_bytes, MEM_COMMIT, PAGE_NOACCESS, level, &p, VM_HEAP);
    if (hr == S_OK)
        hr = vm_alloc_ex(h->m, (char *)base + g_page, header_bytes, MEM_COMMIT, PAGE_READWRITE, level, &p,
                         VM_HEAP);
    if (hr != S_OK) {
        vm_free_ex(h->m, base, 0, MEM_RELEASE, VM_HEAP);
        return hr;
    }
    struct segment *g = segment_at((uintptr_t)base);
    g->heap = h;
    g->base = (uintptr_t)base;
    g->free_spans = SPANS_PER_SEGMENT - first_span;
    for (unsigned k = 0; k < first_span; k++) /* under the header and its guards: never a span */
        atomic_store_explicit(&g->desc[k].in_use, 1, memory_order_relaxed);
    *out = g;
    return S_OK;
}

/* A fresh span for a class, committed, owned by c. */
static HRESULT span_new(struct heap *h, struct tcache *c, unsigned size_class,
                        EMemoryCriticalLevel level, struct span **out)
{
    HRESULT hr = lock_enter(h->m, h->lock);
    if (hr != S_OK)
        return hr;
    struct segment *g = h->segments;
    while (g && !g->free_spans)
        g = g->next;
    if (!g) {
        lock_leave(h->m, h->lock);
        struct segment *fresh = NULL;
        hr = segment_new(h, level, &fresh);
        if (hr != S_OK)
            return hr;
        hr = lock_enter(h->m, h->lock);
        if (hr != S_OK) {
            vm_free_ex(h->m, (void *)fresh->base, 0, MEM_RELEASE, VM_HEAP);
            return hr;
        }
        fresh->next = h->segments;
        h->segments = fresh;
        g = fresh;
    }
    unsigned k = first_span;
    while (atomic_load_explicit(&g->desc[k].in_use, memory_order_relaxed))
        k++;
    atomic_store_explicit(&g->desc[k].in_use, 1, memory_order_relaxed);
    g->free_spans--;
    lock_leave(h->m, h->lock);

    struct span *s = span_at(g->base, k);
    void *p;
    hr = vm_alloc_ex(h->m, (void *)span_base(s), SPAN_SIZE, MEM_COMMIT, h->protect, level, &p, VM_HEAP);
    if (hr != S_OK) {
        if (lock_enter(h->m, h->lock) == S_OK) {
            atomic_store_explicit(&g->desc[k].in_use, 0, memory_order_relaxed);
            g->free_spans++;
            lock_leave(h->m, h->lock);
        }
        return hr;
    }
    span_init(s, size_class, c);
    *out = s;
    return S_OK;
}

/* Gives a span's pages back (no lock held; s is owned by the caller and empty).
 * E_FAIL if the manager could not (it is then disabled); the caller says so. */
static HRESULT span_retire(struct heap *h, struct span *s)
{
    struct segment *g = segment_at(segment_base_of(s));
    unsigned k = span_index(s);
    s->magic = 0;
    owned_forget(atomic_load_explicit(&g->desc[k].owner, memory_order_relaxed), span_base(s));
    /* Free refuses the span from now on */
    atomic_store_explicit(&g->desc[k].in_use, 1, memory_order_release);
    HRESULT hr = vm_free_ex(h->m, (void *)span_base(s), SPAN_SIZE, MEM_DECOMMIT, VM_HEAP);
    if (hr != S_OK)
        return hr == E_FAIL ? E_FAIL : S_OK; /* kept committed, used by nobody: harmless */
    if (lock_enter(h->m, h->lock) == S_OK) {
        atomic_store_explicit(&g->desc[k].in_use, 0, memory_order_relaxed);
        g->free_spans++;
        lock_leave(h->m, h->lock);
    }
    return S_OK;
}

#define MAX_EMPTY 16 /* empty spans (1 MiB) a cache keeps committed, to spare the kernel */

static bool memory_low(struct heap *h)
{
    return atomic_load_explicit(&h->m->policy.state, memory_order_relaxed) == eMemoryAvailableLow;
}

/* An empty span the owner holds: keep up to MAX_EMPTY for any class, give the
 * rest back (all of them while memory is low). */
static HRESULT span_empty(struct heap *h, struct tcache *c, struct span *s)
{
    if (s->listed)
        partial_remove(c, s);
    if (c->empties < MAX_EMPTY && !memory_low(h)) {
        s->next = c->empty;
        c->empty = s;
        c->empties++;
        return S_OK;
    }
    HRESULT hr = span_retire(h, s);
    policy_deliver(h->m);
    return hr;
}

/* Memory is low: blocks in the magazines go back to their spans. */
static void magazines_flush(struct heap *h, struct tcache *c)
{
    for (unsigned k = 0; k < CLASSES; k++) {
        struct magazine *mag = &c->magazine[k];
        while (mag->count) {
            void *b = magazine_pop(h, mag);
            if (!b) {
                magazine_corrupted(h, mag);
                break;
            }
            struct span *s = span_of_block(b);
            link_write(h, b, s->free);
            s->free = b;
            atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
        }
    }
}

/* Memory is low: the cache's empty spans go back. */
static void empties_release(struct heap *h, struct tcache *c)
{
    while (c->empty) {
        struct span *s = c->empty;
        c->empty = s->next;
        c->empties--;
        span_retire(h, s);
    }
}

/* The slow path: a span of the class with a free block, or an error (a list
 * found overwritten is dropped and refused: E_OUTOFMEMORY, counted). */
static HRESULT refill(struct heap *h, struct tcache *c, unsigned size_class,
                      EMemoryCriticalLevel level, struct span **out)
{
    struct span *s = c->current[size_class];
    if (s) {
        if (!collect(h, s))
            return E_OUTOFMEMORY;
        if (s->free) {
            *out = s;
            return S_OK;
        }
        /* Full: give it up. A remote free that lands after this hands it back. */
        atomic_store_explicit(&s->full, 1, memory_order_seq_cst);
        uint32_t one = 1;
        if (atomic_load_explicit(&s->remote, memory_order_seq_cst) &&
            atomic_compare_exchange_strong(&s->full, &one, 0)) {
            if (!collect(h, s))
                return E_OUTOFMEMORY;
            *out = s;
            return S_OK;
        }
        c->current[size_class] = NULL;
    }
    /* spans that remote frees handed back */
    struct span *n = atomic_exchange_explicit(&c->notified, NULL, memory_order_acquire);
    while (n) {
        struct span *next = atomic_load_explicit(&n->notified_next, memory_order_relaxed);
        partial_insert(c, n);
        n = next;
    }
    while ((s = c->partial[size_class])) {
        partial_remove(c, s);
        if (!collect(h, s)) {
            partial_insert(c, s); /* what was collected before the overwritten link is sound */
            return E_OUTOFMEMORY;
        }
        if (s->free || s->bump < desc_of(s)->capacity) {
            c->current[size_class] = s;
            *out = s;
            return S_OK;
        }
        atomic_store_explicit(&s->full, 1, memory_order_seq_cst);
        uint32_t one = 1;
        if (atomic_load_explicit(&s->remote, memory_order_seq_cst) &&
            atomic_compare_exchange_strong(&s->full, &one, 0)) {
            partial_insert(c, s);
        }
    }
    if (memory_low(h)) {
        magazines_flush(h, c);
        empties_release(h, c);
    }
    if ((s = c->empty)) {
        /* Every block of it is free, but the new layout's tags lie over the
         * old blocks' bytes: clear them, so that Free refuses a block of the
         * new layout until it is handed out. */
        c->empty = s->next;
        c->empties--;
        span_init(s, size_class, c);
        const struct span_desc *d = desc_of(s);
        for (uint32_t i = 0; i < d->capacity; i++)
            atomic_store_explicit(tag_of((void *)block_at(d, i)), 0, memory_order_relaxed);
        /* the old layout's lists are gone with it */
        c->current[size_class] = s;
        *out = s;
        return S_OK;
    }
    HRESULT hr = span_new(h, c, size_class, level, &s);
    if (hr != S_OK)
        return hr;
    c->current[size_class] = s;
    *out = s;
    return S_OK;
}

/* ---- large blocks ------------------------------------------------------------------------ */
static HRESULT large_alloc(struct heap *h, SIZE_T size, EMemoryCriticalLevel level, const char *file,
                           int line, void **out)
{
    size_t bytes = page_up(size);
    if (bytes < size || bytes > ADDRESS_LIMIT)
        return E_OUTOFMEMORY;
    void *p;
    HRESULT hr = vm_alloc_ex(h->m, NULL, bytes, MEM_RESERVE | MEM_COMMIT, h->protect, level, &p,
                             VM_HEAP | VM_HEAP_LARGE);
    if (hr != S_OK)
        return hr;
    hr = lock_enter(h->m, h->lock);
    if (hr == S_OK) {
        if (!ledger_put(h, &h->large, (struct block_info){(uintptr_t)p, size, file, line}))
            hr = E_OUTOFMEMORY;
        lock_leave(h->m, h->lock);
    }
    if (hr != S_OK) {
        vm_free_ex(h->m, p, 0, MEM_RELEASE, VM_HEAP);
        return hr;
    }
    *out = p;
    return S_OK;
}

static HRESULT large_free(struct heap *h, uintptr_t p)
{
    HRESULT hr = lock_enter(h->m, h->lock);
    if (hr != S_OK)
        return hr;
    struct block_info *e = ledger_find(&h->large, p);
    if (!e) {
        lock_leave(h->m, h->lock);
        return HOST_E_INVALIDOPERATION; /* not a block of this heap, or freed already */
    }
    struct block_info kept = *e;
    ledger_remove(&h->large, e);
    lock_leave(h->m, h->lock);
    hr = vm_free_ex(h->m, (void *)p, 0, MEM_RELEASE, VM_HEAP);
    if (hr != S_OK && hr != E_FAIL && lock_enter(h->m, h->lock) == S_OK) {
        /* the kernel refused: the block stays live, as if Free had not been called */
        ledger_put(h, &h->large, kept);
        lock_leave(h->m, h->lock);
    }
    policy_deliver(h->m);
    return hr;
}

/* ---- IHostMalloc ------------------------------------------------------------------------------ */
static HRESULT heap_alloc(struct heap *h, SIZE_T size, EMemoryCriticalLevel level, void **out,
                          const char *file, int line)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    if (atomic_load_explicit(&h->m->state, memory_order_relaxed) != STATE_LIVE)
        return HOST_E_CLRNOTAVAILABLE;
    if ((unsigned)level > eProcessCritical)
        return E_INVALIDARG;
    void *b;
    if (size > SMALL_MAX) {
        HRESULT hr = large_alloc(h, size, level, file, line, &b);
        policy_deliver(h->m);
        if (hr != S_OK)
            return hr;
        *out = b;
        return S_OK;
    }
    unsigned size_class = class_of(size);
    struct tcache *c = tcache_get(h);
    if (!c)
        return E_OUTOFMEMORY;
    struct span *s;
    struct magazine *mag = &c->magazine[size_class];
    if (mag->count) {
        b = magazine_pop(h, mag);
        if (!b) {
            /* a link or tag overwritten: nothing it names is handed out */
            magazine_corrupted(h, mag);
            return E_OUTOFMEMORY;
        }
        if (file)
            goto note_debug;
        atomic_store_explicit(tag_of(b), live_tag(h, b), memory_order_relaxed);
        *out = b;
        return S_OK;
    }
    bool corrupt = false;
    s = c->current[size_class];
    if (!s || !(b = span_pop(h, s, &corrupt))) {
        if (corrupt)
            return E_OUTOFMEMORY;
        HRESULT hr = refill(h, c, size_class, level, &s);
        policy_deliver(h->m); /* a new span moved the load: tell the runtime, lock-free here */
        if (hr != S_OK)
            return hr;
        if (!(b = span_pop(h, s, &corrupt)))
            return E_OUTOFMEMORY; /* its list was overwritten (refill leaves one with a block) */
    }
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) + 1,
                          memory_order_relaxed);
note_debug:;
    uintptr_t tag = live_tag(h, b);
    if (file && lock_enter(h->m, h->lock) == S_OK) {
        /* a block whose record could not be made is an Alloc's block */
        if (ledger_put(h, &h->debug, (struct block_info){(uintptr_t)b, size, file, line}))
            tag = debug_tag(h, b);
        lock_leave(h->m, h->lock);
    }
    atomic_store_explicit(tag_of(b), tag, memory_order_relaxed);
    *out = b;
    return S_OK;
}

/* Forgets the DebugAlloc record of a block whose tag said it has one. */
static __attribute__((noinline)) void debug_forget(struct heap *h, uintptr_t p)
{
    if (lock_enter(h->m, h->lock) != S_OK)
        return;
    struct block_info *e = ledger_find(&h->debug, p);
    if (e)
        ledger_remove(&h->debug, e);
    lock_leave(h->m, h->lock);
}

/* The owner frees into a full magazine: the block goes back on its span's list. */
static __attribute__((noinline)) HRESULT free_to_span(struct heap *h, struct tcache *c,
                                                      struct span *s, unsigned size_class,
                                                      void *pointer)
{
    link_write(h, pointer, s->free);
    s->free = pointer;
    uint32_t used = atomic_load_explicit(&s->used, memory_order_relaxed) - 1;
    atomic_store_explicit(&s->used, used, memory_order_relaxed);
    uint32_t one = 1;
    if (c->current[size_class] != s) {
        if (atomic_load_explicit(&s->full, memory_order_relaxed) &&
            atomic_compare_exchange_strong(&s->full, &one, 0))
            partial_insert(c, s);
        if (used == 0 && s->listed)
            return span_empty(h, c, s); /* E_FAIL: the block is freed, the manager is not well */
    }
    return S_OK;
}

/* Free's fast path found the block live in a span of c and its magazine full. */
static __attribute__((noinline)) HRESULT free_past_magazine(struct heap *h, struct tcache *c,
                                                            unsigned size_class, void *pointer)
{
    return free_to_span(h, c, span_of_block(pointer), size_class, pointer); /* its tag becomes a free tag */
}

/* Another thread's span: claim the block, push it on the span's remote list; if
 * its owner gave the span up full, hand it back through the owner's notified
 * stack (once). */
static __attribute__((noinline)) HRESULT free_remote(struct heap *h, struct span *s,
                                                     struct tcache *owner, void *pointer)
{
    uintptr_t live = live_tag(h, pointer);
    /* claimed: 0 until its link and free tag are written */
    if (!atomic_compare_exchange_strong_explicit(tag_of(pointer), &live, 0, memory_order_acq_rel,
                                                 memory_order_relaxed)) {
        if (live != debug_tag(h, pointer) ||
            !atomic_compare_exchange_strong_explicit(tag_of(pointer), &live, 0, memory_order_acq_rel,
                                                     memory_order_relaxed))
            return free_refused(h, pointer, live); /* freed already, or its tag overwritten */
        debug_forget(h, (uintptr_t)pointer);
    }
    void *head = atomic_load_explicit(&s->remote, memory_order_relaxed);
    do
        link_write(h, pointer, head);
    while (!atomic_compare_exchange_weak_explicit(&s->remote, &head, pointer, memory_order_release,
                                                  memory_order_relaxed));
    uint32_t one = 1;
    if (atomic_load_explicit(&s->full, memory_order_seq_cst) &&
        atomic_compare_exchange_strong(&s->full, &one, 0)) {
        struct span *top = atomic_load_explicit(&owner->notified, memory_order_relaxed);
        do
            atomic_store_explicit(&s->notified_next, top, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&owner->notified, &top, s, memory_order_release,
                                                      memory_order_relaxed));
    }
    return S_OK;
}

/* Free of anything but a small block of a segment: a large block, or a refusal. */
static __attribute__((noinline)) HRESULT free_other(struct heap *h, uintptr_t p, uintptr_t e)
{
    if (entry_id(e) != h->m->id || (e & ENTRY_KIND) != ENTRY_HEAP_LARGE)
        return HOST_E_INVALIDOPERATION; /* not in heap memory of this manager */
    return large_free(h, p); /* its DebugAlloc record is its entry in the large ledger */
}

/* Free through the address map, every rule in order: what h_free's fast path
 * did not take. Out of line, so the fast path saves no registers; the slower
 * cases here are calls of their own. */
static __attribute__((noinline)) HRESULT heap_free(struct heap *h, void *pointer)
{
    if (!pointer)
        return S_OK;
    struct manager *m = h->m;
    if (__builtin_expect(atomic_load_explicit(&m->state, memory_order_relaxed) != STATE_LIVE, 0))
        return HOST_E_CLRNOTAVAILABLE;
    uintptr_t p = (uintptr_t)pointer;
    uintptr_t e = radix_load(p);
    if (__builtin_expect(entry_id(e) != m->id || (e & ENTRY_KIND) != ENTRY_HEAP, 0))
        return free_other(h, p, e);
    /* Segments are 4 MiB aligned: the header is found without a load. The
     * address map says this is a heap segment of this manager; its header
     * says which heap. */
    uintptr_t base = segment_base_of(pointer);
    struct segment *g = segment_at(base);
    if (g->heap != h)
        return HOST_E_INVALIDOPERATION; /* another heap's */
    unsigned k = (unsigned)((p - base) >> SPAN_SHIFT);
    const struct span_desc *d = &g->desc[k];
    if (atomic_load_explicit(&d->in_use, memory_order_acquire) != 2)
        return HOST_E_INVALIDOPERATION; /* not a span in use: the header and its guards never are */
    if (!block_of_span(d, p))
        return HOST_E_INVALIDOPERATION; /* interior pointer, or a block's head */
    struct span *s = span_at(base, k);
    struct tcache *c = tcache_get(h);
    struct tcache *owner = atomic_load_explicit(&d->owner, memory_order_relaxed);
    if (owner != c)
        return free_remote(h, s, owner, pointer);
    /* The owner: only a racing free of the same block by another thread could
     * interfere, and that is the one double free this check cannot see. */
    uintptr_t tag = atomic_load_explicit(tag_of(pointer), memory_order_relaxed);
    if (tag != live_tag(h, pointer) && tag != debug_tag(h, pointer))
        return free_refused(h, pointer, tag); /* freed already, or its tag overwritten */
    atomic_store_explicit(tag_of(pointer), 0, memory_order_relaxed); /* claimed, until its free tag */
    if (tag == debug_tag(h, pointer))
        debug_forget(h, p);
    unsigned size_class = d->size_class;
    owned_note(c, base + ((uintptr_t)k << SPAN_SHIFT), size_class); /* its slot, if another span had it */
    struct magazine *mag = &c->magazine[size_class];
    if (__builtin_expect(mag->count >= mag->capacity, 0))
        return free_to_span(h, c, s, size_class, pointer); /* its tag becomes a free tag there */
    magazine_push(h, mag, pointer);
    return S_OK;
}

/* ---- COM ---------------------------------------------------------------------------------------- */
static HRESULT STDMETHODCALLTYPE h_query_interface(IHostMalloc *self, REFIID riid, void **ppv)
{
    return unknown_query(self, &heap_from(self)->references, &IID_IHostMalloc, riid, ppv);
}

static ULONG STDMETHODCALLTYPE h_add_ref(IHostMalloc *self)
{
    return atomic_fetch_add(&heap_from(self)->references, 1) + 1;
}

static void heap_destroy(struct heap *h)
{
    if (h->m->flags & HOSTMEM_LEAK_REPORT) {
        size_t live = 0;
        hostmem_heap_report(&h->iface, NULL, &live);
        if (live)
            hostmem_heap_report(&h->iface, stderr, NULL);
    }
    pthread_mutex_lock(&live_lock);
    for (struct heap **p = &live_heaps; *p; p = &(*p)->next_live)
        if (*p == h) {
            *p = h->next_live;
            break;
        }
    pthread_mutex_unlock(&live_lock);
    struct manager *m = h->m;
    if (!m->torn_down && atomic_load(&m->state) != STATE_SHUTDOWN) {
        for (size_t i = 0; i < h->large.capacity; i++)
            if (h->large.slots[i].key > 1)
                vm_free_ex(m, (void *)h->large.slots[i].key, 0, MEM_RELEASE, VM_HEAP);
        for (struct segment *g = h->segments, *next; g; g = next) {
            next = g->next;
            vm_free_ex(m, (void *)g->base, 0, MEM_RELEASE, VM_HEAP);
        }
    }
    for (struct tcache *c = h->caches, *next; c; c = next) {
        next = c->next;
        pages_free(m, c, sizeof *c);
    }
    pages_free(m, h->large.slots, h->large.capacity * sizeof *h->large.slots);
    pages_free(m, h->debug.slots, h->debug.capacity * sizeof *h->debug.slots);
    lock_destroy(m, h->lock);
    pages_free(m, h, sizeof *h);
    policy_deliver(m);
    m->iface.lpVtbl->Release(&m->iface);
}

static ULONG STDMETHODCALLTYPE h_release(IHostMalloc *self)
{
    struct heap *h = heap_from(self);
    ULONG left = atomic_fetch_sub(&h->references, 1) - 1;
    if (left == 0)
        heap_destroy(h);
    return left;
}

/* Alloc's common case - a block from the thread's magazine - is kept short;
 * anything else, errors included, takes heap_alloc, which checks in order. */
static HRESULT STDMETHODCALLTYPE h_alloc(IHostMalloc *self, SIZE_T size, EMemoryCriticalLevel level,
                                         void **out)
{
    struct heap *h = heap_from(self);
    /* one branch a rule (a condition folded with && costs flag moves) */
    if (__builtin_expect(size > SMALL_MAX, 0))
        goto full;
    if (__builtin_expect((unsigned)level > eProcessCritical, 0))
        goto full;
    if (__builtin_expect(!out, 0))
        goto full;
    if (__builtin_expect(tls_last.heap_id != h->id, 0))
        goto full;
    if (__builtin_expect(atomic_load_explicit(&h->m->state, memory_order_relaxed) != STATE_LIVE, 0))
        goto full;
    struct magazine *mag = &tls_last.cache->magazine[class_of(size)];
    void *b = mag->head; /* NULL exactly when count is 0 */
    if (__builtin_expect(!b, 0))
        goto full;
    uintptr_t next = ((struct parked *)b)->link ^ (uintptr_t)b ^ h->key_link;
    if (__builtin_expect(atomic_load_explicit(tag_of(b), memory_order_relaxed) != (next ^ h->key_free), 0))
        goto full; /* an overwritten link: heap_alloc finds it again, counts and refuses */
    mag->head = (void *)next; /* magazine_pop, inline */
    mag->count--;
    atomic_store_explicit(tag_of(b), live_tag(h, b), memory_order_relaxed);
    *out = b;
    return S_OK;
full:
    return heap_alloc(h, size, level, out, NULL, 0); /* the arguments in h_alloc's registers */
}

static HRESULT STDMETHODCALLTYPE h_debug_alloc(IHostMalloc *self, SIZE_T size,
                                               EMemoryCriticalLevel level, char *file, int line,
                                               void **out)
{
    return heap_alloc(heap_from(self), size, level, out, file ? file : "?", line);
}

/* Free's common case - the owner frees a small block of a span its cache
 * records as its own (owned), with room in its magazine - checks the same
 * rules as heap_free with fewer steps; anything else, refusals included, takes
 * heap_free, which checks everything again in order. */
static HRESULT STDMETHODCALLTYPE h_free(IHostMalloc *self, void *pointer)
{
    struct heap *h = heap_from(self);
    uintptr_t p = (uintptr_t)pointer;
    if (__builtin_expect(tls_last.heap_id == h->id, 1)) {
        struct tcache *c = tls_last.cache;
        uintptr_t span = c->owned[(p >> SPAN_SHIFT) % OWNED];
        /* a span of this cache, of this class: the block's tag is readable
         * while the manager is live (after shutdown the segments are gone) */
        if (((span ^ p) >> SPAN_SHIFT) == 0 &&
            atomic_load_explicit(&h->m->state, memory_order_relaxed) == STATE_LIVE) {
            struct magazine *mag = owned_magazine(c, span);
            if (block_offset_exact(mag, (p & (SPAN_SIZE - 1)) - FIRST_BLOCK) &&
                atomic_load_explicit(tag_of(pointer), memory_order_relaxed) == live_tag(h, pointer)) {
                if (__builtin_expect(mag->count < mag->capacity, 1)) {
                    magazine_push(h, mag, pointer); /* its tag becomes a free tag */
                    return S_OK;
                }
                /* a full magazine: every rule is checked, the span's list takes it */
                return free_past_magazine(h, c, (unsigned)(mag - c->magazine), pointer);
            }
        }
    }
    return heap_free(h, pointer);
}

static const IHostMallocVtbl heap_vtbl = {h_query_interface, h_add_ref, h_release,
                                          h_alloc,           h_debug_alloc, h_free};

HRESULT heap_create(struct manager *m, DWORD type, IHostMalloc **out)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    if (type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
        return E_INVALIDARG;
    /* an executable heap is writable and executable: the dynamic-code policy's
     * (its segments ask again, so a policy tightened later stops their growth) */
    HRESULT refused = (type & MALLOC_EXECUTABLE) ? policy_code_refusal(m, PAGE_EXECUTE_READWRITE) : S_OK;
    if (refused != S_OK)
        return refused;
    pthread_once(&classes_once, heap_init);
    void *fresh;
    int err = pages_alloc(m, sizeof(struct heap), &fresh); /* zeroed pages, not calloc (pool.c) */
    if (err)
        return os_refused(m, err, "mmap of a heap");
    struct heap *h = fresh;
    h->iface.lpVtbl = &heap_vtbl;
    atomic_init(&h->references, 1);
    h->m = m;
    h->id = atomic_fetch_add(&next_heap_id, 1);
    h->threadsafe = (type & MALLOC_THREADSAFE) != 0;
    h->protect = (type & MALLOC_EXECUTABLE) ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE;
    /* the kernel's randomness, or its stand-in (os_random) */
    uintptr_t keys[3] = {(uintptr_t)os_random(), (uintptr_t)os_random(), (uintptr_t)os_random()};
    /* a live tag has the top bit; a free tag (next ^ key_free, next below 2^47)
     * has bit 62 and not the top bit: never 0, never a live tag */
    h->key_live = keys[0] | TAG_LIVE_BIT;
    h->key_link = keys[1];
    h->key_free = (keys[2] & ~TAG_LIVE_BIT) | TAG_FREE_BIT;
    tcache_init(&h->single, h);
    HRESULT hr = lock_create(m, &h->lock);
    if (hr != S_OK) {
        pages_free(m, h, sizeof *h);
        return hr;
    }
    m->iface.lpVtbl->AddRef(&m->iface); /* the heap keeps its manager alive */
    pthread_mutex_lock(&live_lock);
    h->next_live = live_heaps;
    live_heaps = h;
    pthread_mutex_unlock(&live_lock);
    *out = &h->iface;
    return S_OK;
}

/* ---- the leak report ---------------------------------------------------------------------------- */
static int is_heap(IHostMalloc *i)
{
    return i && i->lpVtbl == &heap_vtbl;
}

HRESULT hostmem_heap_report(IHostMalloc *heap, FILE *out, size_t *live_blocks)
{
    if (!is_heap(heap))
        return E_POINTER;
    struct heap *h = heap_from(heap);
    HRESULT hr = lock_enter(h->m, h->lock);
    if (hr != S_OK)
        return hr;
    size_t live = 0, bytes = 0;
    for (struct segment *g = h->segments; g; g = g->next) {
        for (unsigned k = first_span; k < SPANS_PER_SEGMENT; k++) {
            if (atomic_load_explicit(&g->desc[k].in_use, memory_order_relaxed) != 2)
                continue;
            struct span *s = span_at(g->base, k);
            if (s->magic != SPAN_MAGIC)
                continue;
            const struct span_desc *d = &g->desc[k];
            for (uint32_t i = 0; i < d->capacity; i++) {
                uintptr_t p = block_at(d, i);
                uintptr_t tag = atomic_load_explicit(tag_of((void *)p), memory_order_relaxed);
                if (tag != live_tag(h, (void *)p) && tag != debug_tag(h, (void *)p))
                    continue;
                struct block_info *e = ledger_find(&h->debug, p);
                live++;
                bytes += class_size[d->size_class];
                if (out && e)
                    fprintf(out, "  leak: %p, %zu bytes, allocated at %s:%d\n", (void *)p, e->size,
                            e->file, e->line);
            }
        }
    }
    for (size_t i = 0; i < h->large.capacity; i++) {
        struct block_info *e = &h->large.slots[i];
        if (e->key <= 1)
            continue;
        live++;
        bytes += e->size;
        if (out && e->file)
            fprintf(out, "  leak: %p, %zu bytes, allocated at %s:%d\n", (void *)e->key, e->size,
                    e->file, e->line);
    }
    lock_leave(h->m, h->lock);
    if (out)
        fprintf(out, "heap %p: %zu live blocks, %zu bytes\n", (void *)heap, live, bytes);
    if (live_blocks)
        *live_blocks = live;
    return S_OK;
}

/* ---- fork (fork.c) -------------------------------------------------------------------------------- */
/* Before fork: the list of heaps, then every heap's lock, so that no heap is
 * half-changed in the child. held[] records which locks were entered. */
void heap_fork_prepare(void)
{
    pthread_mutex_lock(&live_lock);
    for (struct heap *h = live_heaps; h; h = h->next_live)
        h->fork_held = lock_fork_enter(h->m, h->lock);
}

/* After fork, in the parent (child: true, in the child): the locks go back; a
 * child whose heap lock could not be entered before the fork cannot trust the
 * heap (its holder is gone), and its manager is disabled. */
void heap_fork_finish(bool child)
{
    for (struct heap *h = live_heaps; h; h = h->next_live) {
        if (h->fork_held) {
            lock_fork_leave(h->m, &h->lock, child);
        } else if (child) {
            manager_fail(h->m, "a heap's lock was held across fork by a thread the child does not have");
        }
        h->fork_held = false;
    }
    pthread_mutex_unlock(&live_lock);
}
