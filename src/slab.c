/*
 * slab.c - type-stable memory for hostmem's metadata.
 *
 * Objects come in power-of-two classes (32 B and up) carved from chunks the OS
 * seam maps. Memory of a class stays memory of that class until the slab is
 * destroyed with its manager: a lock-free reader that holds a stale pointer
 * reads a valid (if outdated) object and detects it with the latch sequence,
 * never a fault. The free-list link lives in the last word of each slot, which
 * no lock-free reader relies on.
 *
 * The owner serialises slab_alloc and slab_free with a lock; slab_free_remote
 * may be called by anyone (a Treiber stack: push-only, drained whole by the
 * owner, so it has no ABA problem).
 */
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

size_t slab_class_size(size_t size)
{
    return class_bytes(class_of(size));
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

static void *chunk_new(struct slab *s, size_t size)
{
    size = page_up(size);
    void *p;
    if (size == CHUNK_HUGE) {
        /* 2 MiB aligned, so that the kernel can back it with one huge page: a
         * million reservations' metadata then costs 32 TLB entries, not 16,000 */
        if (os_map_aligned(NULL, CHUNK_HUGE, CHUNK_HUGE, OS_PROT_READ | OS_PROT_WRITE, &p))
            return NULL;
        if (hostmem_os->advise_huge)
            hostmem_os->advise_huge(p, CHUNK_HUGE);
    } else if (hostmem_os->map(NULL, size, OS_PROT_READ | OS_PROT_WRITE, 0, &p)) {
        return NULL;
    }
    struct slab_chunk *chunk = p;
    chunk->next = s->chunks;
    chunk->size = size;
    s->chunks = chunk;
    s->bytes += size;
    return (char *)p + 64;
}

void *slab_alloc(struct slab *s, size_t size)
{
    unsigned c = class_of(size);
    if (c >= SLAB_CLASSES)
        return NULL;
    size_t bytes = class_bytes(c);
    void *p = s->free_list[c];
    if (!p && atomic_load_explicit(&s->remote[c], memory_order_relaxed)) {
        p = atomic_exchange_explicit(&s->remote[c], NULL, memory_order_acquire);
        s->free_list[c] = p;
    }
    if (p) {
        s->free_list[c] = atomic_load_explicit(link_of(p, c), memory_order_relaxed);
        return p;
    }
    if (bytes > CHUNK_MIN / 4) {
        /* Big objects get a chunk of their own. */
        return chunk_new(s, bytes + 64);
    }
    if (s->bump_left < bytes) {
        size_t chunk = s->next_chunk ? s->next_chunk : CHUNK_MIN;
        char *fresh = chunk_new(s, chunk);
        if (!fresh)
            return NULL;
        s->bump = fresh;
        s->bump_left = chunk - 64;
        s->next_chunk = chunk * 2 > CHUNK_HUGE ? CHUNK_HUGE : chunk * 2;
    }
    p = s->bump;
    s->bump += bytes;
    s->bump_left -= bytes;
    return p;
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
        hostmem_os->unmap(chunk, chunk->size);
        chunk = next;
    }
    memset(s, 0, sizeof *s);
}
