/*
 * slab.c - type-stable memory for hostmem's metadata.
 *
 * Objects come in power-of-two classes (32 B and up) carved from chunks the OS
 * seam maps, each with an inaccessible page on either side (os_map_guarded),
 * as the give-back reserve has: no page the runtime is handed lies beside
 * them. Memory of a class stays memory of that class until the slab is
 * destroyed with its manager: a lock-free reader that holds a stale pointer
 * reads a valid (if outdated) object and detects it with the latch sequence,
 * never a fault. The free-list link lives in the last word of each slot, which
 * no lock-free reader relies on.
 *
 * The owner serialises slab_alloc and slab_free with a lock; slab_free_remote
 * may be called by anyone (a Treiber stack: push-only, drained whole by the
 * owner, so it has no ABA problem).
 *
 * A path that gives memory back never maps (slab_alloc_giving_back): what the
 * slab holds, else an object from its manager's give-back reserve (internal.h,
 * struct slab_reserve), address space taken at the manager's creation and made
 * writable by growing a prefix, which adds no kernel mapping.
 */
#include <errno.h>
#include <string.h>

#include "internal.h"

#define CHUNK_MIN (64 * 1024)
#define CHUNK_HUGE ((size_t)2 << 20)

struct slab_chunk {
    struct slab_chunk *next;
    size_t size;
};

/* Class c holds 32 << c/2 bytes, or 48 << c/2 for odd c: 32, 48, 64, 96, ... */
static size_t class_bytes(unsigned c)
{
    return (size_t)((c & 1) ? 48 : 32) << (c / 2);
}

static unsigned class_of(size_t size)
{
    unsigned c = 0;
    while (class_bytes(c) < size)
        c++;
    return c;
}

/* Where a free slot keeps its link: in the last word, which no lock-free
 * reader relies on - except in the 48-byte class, which holds reservations
 * only, whose first word is the writers' alone (internal.h). */
static _Atomic(void *) *link_of(void *p, unsigned c)
{
    if (class_bytes(c) == 48)
        return (_Atomic(void *) *)p;
    return (_Atomic(void *) *)((char *)p + class_bytes(c) - sizeof(void *));
}

/* A chunk's usable bytes start past its header, at the next cache line. */
#define CHUNK_HEADER 64
_Static_assert(sizeof(struct slab_chunk) <= CHUNK_HEADER, "a chunk's header fits before its first object");

static int chunk_new(struct slab *s, size_t size, void **out)
{
    size = page_up(size);
    void *p;
    int err;
    /* with an inaccessible page on each side (docs/security.md) */
    if (size == CHUNK_HUGE) {
        /* 2 MiB aligned, so that the kernel can back it with one huge page: a
         * million reservations' metadata then costs 32 TLB entries, not 16,000 */
        if ((err = os_map_books(s->reserve ? s->reserve->m : NULL, CHUNK_HUGE, CHUNK_HUGE, &p)) != 0)
            return err;
        os_advise_huge(p, CHUNK_HUGE);
    } else if ((err = os_map_books(s->reserve ? s->reserve->m : NULL, size, g_page, &p)) != 0) {
        return err;
    }
    struct slab_chunk *chunk = p;
    chunk->next = s->chunks;
    chunk->size = size;
    s->chunks = chunk;
    s->bytes += size;
    *out = (char *)p + CHUNK_HEADER;
    return 0;
}

/* An object of class c from what the slab holds already: its free list, the
 * slots other threads gave back, or the current chunk's rest. */
static bool slab_take(struct slab *s, unsigned c, void **out)
{
    size_t bytes = class_bytes(c);
    void *p = s->free_list[c];
    if (!p && atomic_load_explicit(&s->remote[c], memory_order_relaxed)) {
        p = atomic_exchange_explicit(&s->remote[c], NULL, memory_order_acquire);
        s->free_list[c] = p;
    }
    if (p) {
        s->free_list[c] = atomic_load_explicit(link_of(p, c), memory_order_relaxed);
        *out = p;
        return true;
    }
    if (bytes > CHUNK_MIN / 4 || s->bump_left < bytes)
        return false;
    *out = s->bump;
    s->bump += bytes;
    s->bump_left -= bytes;
    return true;
}

int slab_alloc(struct slab *s, size_t size, void **out)
{
    unsigned c = class_of(size);
    if (c >= SLAB_CLASSES)
        return ENOMEM; /* no class that big: as if the kernel had no memory for it */
    if (slab_take(s, c, out))
        return 0;
    size_t bytes = class_bytes(c);
    if (bytes > CHUNK_MIN / 4) /* big objects get a chunk of their own */
        return chunk_new(s, bytes + CHUNK_HEADER, out);
    /* the current chunk is spent: the next, larger one */
    size_t chunk = s->next_chunk ? s->next_chunk : CHUNK_MIN;
    void *fresh;
    int err = chunk_new(s, chunk, &fresh);
    if (err)
        return err;
    s->bump = fresh;
    s->bump_left = chunk - CHUNK_HEADER;
    s->next_chunk = chunk * 2 > CHUNK_HUGE ? CHUNK_HUGE : chunk * 2;
    bool taken = slab_take(s, c, out);
    hm_assert(taken);
    return taken ? 0 : ENOMEM;
}

/* ---- the give-back reserve ---------------------------------------------------------- */

int slab_reserve_init(struct slab_reserve *v, struct manager *m, size_t size)
{
    size = page_up(size);
    size_t ready = SLAB_RESERVE_READY < size ? SLAB_RESERVE_READY : size;
    void *p;
    /* a page more at each end that stays inaccessible: the writable prefix
     * never grows past end, and nothing lies just below base */
    int err = os_map(NULL, size + 2 * g_page, OS_PROT_NONE, false, &p);
    if (err)
        return err;
    if ((err = os_protect((char *)p + g_page, ready, OS_PROT_READ | OS_PROT_WRITE)) != 0) {
        os_unmap(p, size + 2 * g_page); /* nobody has seen it */
        return err;
    }
    p = (char *)p + g_page;
    v->base = (uintptr_t)p;
    v->end = v->base + size;
    v->m = m;
    atomic_store_explicit(&v->next, v->base, memory_order_relaxed);
    atomic_store_explicit(&v->writable, v->base + ready, memory_order_relaxed);
    return 0;
}

void slab_reserve_fini(struct slab_reserve *v)
{
    if (v->base) /* the manager is going: nobody can see a refusal */
        os_unmap((void *)(v->base - g_page), v->end - v->base + 2 * g_page);
    memset(v, 0, sizeof *v);
}

/* bytes of the reserve, lock-free (stripes take from it under their own
 * locks). The writable prefix is grown first, to keep SLAB_RESERVE_READY
 * ahead: an mprotect that merges with the prefix (never a new mapping); when
 * even that is refused, what is writable already is used. */
static int reserve_take(struct slab_reserve *v, size_t bytes, void **out)
{
    bytes = (bytes + 63) & ~(size_t)63; /* a cache line each: type-stable slots never share one */
    for (;;) {
        uintptr_t at = atomic_load_explicit(&v->next, memory_order_relaxed), end = at + bytes;
        if (end > v->end || end < at)
            return ENOMEM; /* the reserve is spent */
        uintptr_t writable = atomic_load_explicit(&v->writable, memory_order_acquire);
        uintptr_t want = page_up(end + SLAB_RESERVE_READY);
        if (want > v->end)
            want = v->end;
        if (writable < want) {
            int err = os_protect((void *)writable, want - writable, OS_PROT_READ | OS_PROT_WRITE);
            if (err && end > writable)
                return err; /* the caller counts it */
            if (err) /* what is writable will do: counted here */
                os_refused(v->m, err, "mprotect growing the give-back reserve");
            while (!err && writable < want &&
                   !atomic_compare_exchange_weak_explicit(&v->writable, &writable, want, memory_order_release,
                                                          memory_order_acquire))
                ;
        }
        if (atomic_compare_exchange_weak_explicit(&v->next, &at, end, memory_order_relaxed, memory_order_relaxed)) {
            *out = (void *)at;
            return 0;
        }
    }
}

int slab_alloc_giving_back(struct slab *s, size_t size, void **out)
{
    unsigned c = class_of(size);
    if (c >= SLAB_CLASSES)
        return ENOMEM;
    if (slab_take(s, c, out))
        return 0;
    if (!s->reserve || !s->reserve->base)
        return ENOMEM;
    /* the object alone, not a chunk: freed, it joins the slab's free list of
     * its class like any other, and stays metadata until the manager goes */
    return reserve_take(s->reserve, class_bytes(c), out);
}

void slab_free(struct slab *s, void *p, size_t size)
{
    unsigned c = class_of(size);
    atomic_store_explicit(link_of(p, c), s->free_list[c], memory_order_relaxed);
    s->free_list[c] = p;
}

void slab_free_remote(struct slab *s, void *p, size_t size)
{
    unsigned c = class_of(size);
    void *head = atomic_load_explicit(&s->remote[c], memory_order_relaxed);
    do
        atomic_store_explicit(link_of(p, c), head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&s->remote[c], &head, p, memory_order_release,
                                                  memory_order_relaxed));
}

void slab_destroy(struct slab *s)
{
    struct slab_chunk *chunk = s->chunks;
    while (chunk) {
        struct slab_chunk *next = chunk->next;
        os_unmap_books(chunk, chunk->size); /* the manager is going: nobody can see a refusal */
        chunk = next;
    }
    memset(s, 0, sizeof *s);
}
