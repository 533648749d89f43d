/*
 * pool.c - memory for the library's own objects, never from malloc: a
 * malloc that sits on hostmem (mimalloc as the process's allocator) must be
 * able to create a manager from inside its own initialisation.
 *
 * Two kinds. pages_alloc/pages_free: zeroed whole pages from the seam, for
 * objects that come and go with a manager or a heap (the manager itself, a
 * heap, a thread's cache, growing arrays), each mapping with an inaccessible
 * page on either side (os_map_guarded). pool_alloc/pool_free: small objects
 * of one size that live outside any manager (the default POSIX locks, the
 * heap's per-thread records), carved from 64 KiB chunks that are never
 * unmapped, with a free list under the pool's own mutex.
 *
 * Must never: call malloc, calloc, realloc or free (tests/test_nomalloc.c
 * aborts if anything inside a hostmem call does).
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define POOL_CHUNK ((size_t)64 << 10)

int pages_alloc(struct manager *m, size_t bytes, void **out)
{
    hm_assert(bytes != 0);
    /* an inaccessible page on each side: no page handed to the runtime can
     * touch the library's objects (docs/security.md) */
    return os_map_books(m, page_up(bytes), g_page, out);
}

void pages_free(struct manager *m, void *p, size_t bytes)
{
    if (!p)
        return;
    int err = os_unmap_books(p, page_up(bytes));
    if (err && m) /* the pages stay mapped, unused: counted against m */
        os_refused(m, err, "munmap of the library's own pages");
}

int pages_scratch_alloc(size_t bytes, void **out)
{
    hm_assert(bytes != 0);
    return os_map(NULL, page_up(bytes), OS_PROT_READ | OS_PROT_WRITE, false, out);
}

void pages_scratch_free(struct manager *m, void *p, size_t bytes)
{
    if (!p)
        return;
    int err = os_unmap(p, page_up(bytes));
    if (err && m)
        os_refused(m, err, "munmap of the library's scratch pages");
}

_Atomic size_t pool_bytes; /* address space the pools keep for the process (tests account for it) */

/* Every pool in use, for fork (a pool joins on its first allocation). */
#define POOLS_MAX 8
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool *pools[POOLS_MAX];
static unsigned pool_count;

/* Set once, under pools_lock; read without it on every allocation. */
static void pool_join(struct pool *pool)
{
    pthread_mutex_lock(&pools_lock);
    if (!atomic_load_explicit(&pool->joined, memory_order_relaxed)) {
        hm_assert(pool_count < POOLS_MAX);
        if (pool_count < POOLS_MAX)
            pools[pool_count++] = pool;
        atomic_store_explicit(&pool->joined, true, memory_order_release);
    }
    pthread_mutex_unlock(&pools_lock);
}

/* Before fork: every pool's mutex (leaves: taken last), so that no free list is
 * half-changed in the child; after it, let go (the forking thread owns them in
 * the child too). */
void pool_fork_prepare(void)
{
    pthread_mutex_lock(&pools_lock);
    for (unsigned i = 0; i < pool_count; i++)
        pthread_mutex_lock(&pools[i]->lock);
}

void pool_fork_finish(void)
{
    for (unsigned i = pool_count; i-- > 0;)
        pthread_mutex_unlock(&pools[i]->lock);
    pthread_mutex_unlock(&pools_lock);
}

int pool_alloc(struct pool *pool, void **out)
{
    geometry_ensure();
    if (!atomic_load_explicit(&pool->joined, memory_order_acquire))
        pool_join(pool);
    pthread_mutex_lock(&pool->lock);
    void *p = pool->free;
    if (p) {
        memcpy(&pool->free, p, sizeof(void *));
    } else {
        if (pool->left < pool->size) {
            void *chunk;
            int err = pages_alloc(NULL, POOL_CHUNK, &chunk);
            if (err) {
                pthread_mutex_unlock(&pool->lock);
                return err;
            }
            atomic_fetch_add_explicit(&pool_bytes, POOL_CHUNK + 2 * g_page, memory_order_relaxed); /* and its guards */
            pool->bump = chunk;
            pool->left = POOL_CHUNK;
        }
        p = pool->bump;
        pool->bump += pool->size;
        pool->left -= pool->size;
    }
    pthread_mutex_unlock(&pool->lock);
    memset(p, 0, pool->size);
    *out = p;
    return 0;
}

void pool_free(struct pool *pool, void *p)
{
    pthread_mutex_lock(&pool->lock);
    memcpy(p, &pool->free, sizeof(void *));
    pool->free = p;
    pthread_mutex_unlock(&pool->lock);
}

/* ---- thread slots ----------------------------------------------------------------------- */
/* A bit for each slot, taken lowest first so that the blocks in use stay
 * dense; a thread's key gives its slot back when the thread ends. A thread
 * whose key cannot be made keeps to the shared block: a slot it could not give
 * back would be lost to every later thread. */
__thread unsigned thread_slot_held __attribute__((tls_model("initial-exec")));
static _Atomic uint64_t slot_taken[THREAD_SLOTS / 64];
static _Atomic unsigned slots_used;
static pthread_key_t slot_key;
static bool slot_key_made;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;

/* The thread ends (or a later destructor of its asks again: then it takes a
 * slot again, and the key's next round gives that one back). */
static void slot_give_back(void *held)
{
    unsigned slot = (unsigned)(uintptr_t)held - 1;
    thread_slot_held = 0;
    if (slot < THREAD_SLOTS) /* release: the next taker sees this thread's counts */
        atomic_fetch_and_explicit(&slot_taken[slot / 64], ~((uint64_t)1 << slot % 64), memory_order_release);
}

static void slot_key_make(void)
{
    slot_key_made = pthread_key_create(&slot_key, slot_give_back) == 0;
}

unsigned thread_slot_take(void)
{
    pthread_once(&slot_once, slot_key_make);
    unsigned slot = THREAD_SLOTS;
    for (unsigned w = 0; slot_key_made && w < THREAD_SLOTS / 64 && slot == THREAD_SLOTS; w++) {
        uint64_t taken = atomic_load_explicit(&slot_taken[w], memory_order_relaxed);
        while (~taken) {
            unsigned bit = (unsigned)__builtin_ctzll(~taken);
            if (atomic_compare_exchange_weak_explicit(&slot_taken[w], &taken, taken | (uint64_t)1 << bit,
                                                      memory_order_acquire, memory_order_relaxed)) {
                slot = w * 64 + bit;
                break;
            }
        }
    }
    if (slot < THREAD_SLOTS && pthread_setspecific(slot_key, (void *)(uintptr_t)(slot + 1)) != 0) {
        atomic_fetch_and_explicit(&slot_taken[slot / 64], ~((uint64_t)1 << slot % 64), memory_order_release);
        slot = THREAD_SLOTS;
    }
    unsigned used = atomic_load_explicit(&slots_used, memory_order_relaxed);
    while (slot < THREAD_SLOTS && used <= slot &&
           !atomic_compare_exchange_weak_explicit(&slots_used, &used, slot + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    thread_slot_held = slot + 1; /* the shared block too: asked once */
    return slot;
}

unsigned thread_slots_used(void)
{
    return atomic_load_explicit(&slots_used, memory_order_acquire);
}

void thread_slots_after_fork(void)
{
    for (unsigned w = 0; w < THREAD_SLOTS / 64; w++)
        atomic_store_explicit(&slot_taken[w], 0, memory_order_relaxed);
    unsigned held = thread_slot_held;
    if (held != 0 && held - 1 < THREAD_SLOTS)
        atomic_store_explicit(&slot_taken[(held - 1) / 64], (uint64_t)1 << (held - 1) % 64, memory_order_relaxed);
}
