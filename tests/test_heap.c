/*
 * test_heap.c - SPEC §7 and issue 4: IHostMalloc from CreateMalloc, in every
 * variant (MALLOC_THREADSAFE, none, MALLOC_EXECUTABLE): alignment, Alloc(0),
 * Free(NULL), refusal of every pointer the heap did not hand out (interior,
 * foreign, another heap's, freed already) with the heap left intact,
 * cross-thread frees, pages given back, the budget, DebugAlloc's leak report.
 */
#define COBJMACROS
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

static size_t P;
static const DWORD variants[] = {0, MALLOC_THREADSAFE, MALLOC_EXECUTABLE,
                                 MALLOC_THREADSAFE | MALLOC_EXECUTABLE};

static IHostMalloc *heap_of(IHostMemoryManager *m, DWORD type)
{
    IHostMalloc *h = NULL;
    if (IHostMemoryManager_CreateMalloc(m, type, &h) != S_OK)
        return NULL;
    return h;
}

/* §7 CreateMalloc: the variants, QueryInterface, bad arguments. */
TEST(create_malloc_variants_and_arguments)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = (IHostMalloc *)1;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, 0x4, &h), E_INVALIDARG);
    CHECK(h == NULL);
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, NULL), E_POINTER);
    for (size_t v = 0; v < 4; v++) {
        h = heap_of(m, variants[v]);
        REQUIRE(h);
        IUnknown *u = NULL;
        CHECK_HR(IHostMalloc_QueryInterface(h, &IID_IUnknown, (void **)&u), S_OK);
        CHECK(u == (IUnknown *)h);
        void *x = (void *)1;
        CHECK_HR(IHostMalloc_QueryInterface(h, &IID_IHostMemoryManager, &x), E_NOINTERFACE);
        CHECK(x == NULL);
        CHECK_EQ(IHostMalloc_Release(h), 1);
        void *p = (void *)1;
        CHECK_HR(IHostMalloc_Alloc(h, 16, (EMemoryCriticalLevel)9, &p), E_INVALIDARG);
        CHECK_HR(IHostMalloc_Alloc(h, 16, eTaskCritical, NULL), E_POINTER);
        CHECK_EQ(IHostMalloc_Release(h), 0);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 IHostMalloc: 16-byte alignment, Alloc(0) unique, Free(NULL) S_OK, contents kept. */
TEST(alloc_alignment_zero_size_and_contents_every_variant)
{
    for (size_t v = 0; v < 4; v++) {
        IHostMemoryManager *m;
        REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
        IHostMalloc *h = heap_of(m, variants[v]);
        REQUIRE(h);
        enum { N = 3000 };
        static unsigned char *blocks[N];
        static size_t sizes[N];
        unsigned seed = 5;
        for (int i = 0; i < N; i++) {
            seed = seed * 1103515245u + 12345u;
            sizes[i] = i % 500 == 0 ? 20000 + seed % 300000 : (seed >> 8) % 1025;
            REQUIRE_HR(IHostMalloc_Alloc(h, sizes[i], eTaskCritical, (void **)&blocks[i]), S_OK);
            CHECK(((uintptr_t)blocks[i] & 15) == 0);
            memset(blocks[i], i & 0xFF, sizes[i]);
        }
        void *z1, *z2;
        CHECK_HR(IHostMalloc_Alloc(h, 0, eTaskCritical, &z1), S_OK);
        CHECK_HR(IHostMalloc_Alloc(h, 0, eTaskCritical, &z2), S_OK);
        CHECK(z1 && z2 && z1 != z2);
        CHECK_HR(IHostMalloc_Free(h, NULL), S_OK);
        for (int i = 0; i < N; i += 2)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
        for (int i = 1; i < N; i += 2)
            for (size_t k = 0; k < sizes[i]; k += 97)
                if (blocks[i][k] != (unsigned char)(i & 0xFF)) {
                    TEST_FAIL_AT("variant %zu block %d lost its contents", v, i);
                    k = sizes[i];
                    i = N;
                }
        for (int i = 1; i < N; i += 2)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
        CHECK_HR(IHostMalloc_Free(h, z1), S_OK);
        CHECK_HR(IHostMalloc_Free(h, z2), S_OK);
        char why[256];
        CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

static int static_block[8];

/* §7 IHostMalloc Free: interior, foreign, another heap's, libc's, the stack's, a
 * VirtualAlloc reservation's, a freed block (small and large) -> HOST_E_INVALIDOPERATION,
 * and the heap is left intact. */
TEST(free_refuses_what_the_heap_did_not_hand_out_every_variant)
{
    for (size_t v = 0; v < 4; v++) {
        IHostMemoryManager *m, *other_manager;
        REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
        REQUIRE_HR(hostmem_create(NULL, &other_manager), S_OK);
        IHostMalloc *h = heap_of(m, variants[v]), *other = heap_of(m, variants[v]);
        IHostMalloc *far = heap_of(other_manager, variants[v]);
        REQUIRE(h && other && far);
        char *a, *b, *big, *theirs, *far_block;
        REQUIRE_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, (void **)&a), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, (void **)&b), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 100000, eTaskCritical, (void **)&big), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(other, 100, eTaskCritical, (void **)&theirs), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(far, 100, eTaskCritical, (void **)&far_block), S_OK);
        memset(a, 'a', 100);
        memset(b, 'b', 100);
        memset(big, 'B', 100000);
        void *libc = malloc(64), *reserved, *committed;
        int local;
        REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * 1024, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                                   &reserved),
                   S_OK);
        REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * 1024, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                   eTaskCritical, &committed),
                   S_OK);
        void *bad[] = {a + 1, a + 16, a + 50, b - 16, big + 16, big + P, theirs, far_block, libc, &local,
                       static_block, reserved, (char *)reserved + 4096, committed, (void *)16,
                       (void *)(uintptr_t)-4096};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            if (IHostMalloc_Free(h, bad[i]) != HOST_E_INVALIDOPERATION)
                TEST_FAIL_AT("variant %zu: Free(bad[%zu] = %p) was accepted", v, i, bad[i]);
        /* Inside the heap's own segment (4 MiB aligned, 64 KiB spans; docs/heap.md):
         * the segment header, its span descriptors, a's span header, the last span
         * (not in use), and the block after b, never handed out. a and b are the
         * first two blocks of a fresh span, so b + (b - a) is the third. */
        uintptr_t seg = (uintptr_t)a & ~(uintptr_t)((4u << 20) - 1);
        uintptr_t span = (uintptr_t)a & ~(uintptr_t)0xffff;
        void *inside[] = {(void *)seg, (void *)(seg + 64), (void *)(seg + 4096), (void *)span,
                          (void *)(span + 64), (void *)(seg + ((uintptr_t)63 << 16)), b + (b - a)};
        REQUIRE(b > a && (uintptr_t)b - (uintptr_t)a < 256);
        for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++)
            if (IHostMalloc_Free(h, inside[i]) != HOST_E_INVALIDOPERATION)
                TEST_FAIL_AT("variant %zu: Free(inside[%zu] = %p) was accepted", v, i, inside[i]);
        /* double frees */
        CHECK_HR(IHostMalloc_Free(h, a), S_OK);
        CHECK_HR(IHostMalloc_Free(h, a), HOST_E_INVALIDOPERATION);
        CHECK_HR(IHostMalloc_Free(h, big), S_OK);
        CHECK_HR(IHostMalloc_Free(h, big), HOST_E_INVALIDOPERATION);
        /* the heap is intact: b is untouched and new blocks work */
        for (int i = 0; i < 100; i++)
            if (b[i] != 'b') {
                TEST_FAIL_AT("variant %zu: b was touched", v);
                break;
            }
        char *c;
        CHECK_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, (void **)&c), S_OK);
        CHECK_HR(IHostMalloc_Free(h, c), S_OK);
        CHECK_HR(IHostMalloc_Free(h, b), S_OK);
        CHECK_HR(IHostMalloc_Free(other, theirs), S_OK);
        CHECK_HR(IHostMalloc_Free(far, far_block), S_OK);
        /* the runtime cannot VirtualFree heap memory either */
        CHECK_HR(IHostMemoryManager_VirtualFree(m, c, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, c, &info, sizeof info, &n), S_OK);
        CHECK_EQ(info.Type, MEM_PRIVATE);
        free(libc);
        char why[256];
        CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
        IHostMalloc_Release(h);
        IHostMalloc_Release(other);
        IHostMalloc_Release(far);
        IHostMemoryManager_VirtualFree(m, reserved, 0, MEM_RELEASE);
        IHostMemoryManager_VirtualFree(m, committed, 0, MEM_RELEASE);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
        CHECK_EQ(IHostMemoryManager_Release(other_manager), 0);
    }
}

/* Free accepts a block boundary and nothing else, in every size class: every
 * offset inside and around three blocks of each class, below and above them,
 * is HOST_E_INVALIDOPERATION and changes nothing; then the three blocks free
 * once each. Free's fast path decides a block boundary with one multiply and
 * the full path with another: both are walked, by the owner (the fast path)
 * and by another thread (the full path). */
static void free_refused_everywhere_in_block(IHostMalloc *h, char *x, size_t size, char *const live[3],
                                              size_t *accepted)
{
    size_t reach = size + 48, step = size <= 1100 ? 1 : 7; /* past the block and its neighbour's tag */
    for (size_t o = 1; o <= reach; o += step) {
        char *at[2] = {x + o, x - o};
        for (int k = 0; k < 2; k++) {
            if (at[k] == live[0] || at[k] == live[1] || at[k] == live[2])
                continue;
            if (IHostMalloc_Free(h, at[k]) != HOST_E_INVALIDOPERATION)
                (*accepted)++;
        }
    }
}

struct offsets_job {
    IHostMalloc *h;
    char *blocks[3];
    size_t size, accepted;
};

static void *free_refused_from_another_thread(void *arg)
{
    struct offsets_job *j = arg;
    for (int b = 0; b < 3; b++)
        free_refused_everywhere_in_block(j->h, j->blocks[b], j->size, j->blocks, &j->accepted);
    return NULL;
}

TEST(free_accepts_only_block_boundaries_in_every_size_class)
{
    static const DWORD kinds[] = {MALLOC_THREADSAFE, 0};
    for (size_t v = 0; v < 2; v++) {
        IHostMemoryManager *m;
        REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
        IHostMalloc *h = heap_of(m, kinds[v]);
        REQUIRE(h);
        size_t sizes[100], n = 0;
        for (size_t s = 8; s <= 1032; s += 16)
            sizes[n++] = s;
        for (size_t base = 1024; base < 16384; base *= 2)
            for (size_t q = 1; q <= 4; q++)
                sizes[n++] = base + base / 4 * q - (q == 4 ? 0 : 8); /* below and at each class's size */
        sizes[n++] = 1;
        sizes[n++] = 16384;
        for (size_t i = 0; i < n; i++) {
            size_t size = sizes[i], accepted = 0;
            char *blocks[3];
            for (int b = 0; b < 3; b++) {
                REQUIRE_HR(IHostMalloc_Alloc(h, size, eTaskCritical, (void **)&blocks[b]), S_OK);
                memset(blocks[b], 'a' + b, size);
            }
            for (int b = 0; b < 3; b++)
                free_refused_everywhere_in_block(h, blocks[b], size, blocks, &accepted);
            if (kinds[v] & MALLOC_THREADSAFE) {
                struct offsets_job job = {h, {blocks[0], blocks[1], blocks[2]}, size, 0};
                pthread_t t;
                pthread_create(&t, NULL, free_refused_from_another_thread, &job);
                pthread_join(t, NULL);
                accepted += job.accepted;
            }
            if (accepted)
                TEST_FAIL_AT("variant %zu, size %zu: %zu pointers that are no block boundary were accepted", v,
                             size, accepted);
            for (int b = 0; b < 3; b++)
                for (size_t k = 0; k < size; k++)
                    if (blocks[b][k] != 'a' + b) {
                        TEST_FAIL_AT("variant %zu, size %zu: block %d was touched at %zu", v, size, b, k);
                        break;
                    }
            for (int b = 0; b < 3; b++)
                CHECK_HR(IHostMalloc_Free(h, blocks[b]), S_OK);
            for (int b = 0; b < 3; b++)
                CHECK_HR(IHostMalloc_Free(h, blocks[b]), HOST_E_INVALIDOPERATION);
        }
        size_t live = 99;
        CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
        CHECK_EQ(live, 0);
        char why[256];
        CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

/* A thread's cache records the spans it owns by address, one slot for every 64
 * KiB of a 64 MiB window (docs/heap.md): spans 64 MiB apart share a slot and
 * take turns in it. With more than 1024 spans, some must share: every block is
 * still freed exactly once, by its owner and by another thread, in an order
 * that makes the sharing spans take turns, and a second free of each is
 * refused. */
/* Blocks a second thread frees: every other one, from first. */
struct span_blocks {
    IHostMalloc *h;
    void **blocks;
    size_t n;
    size_t wrong;
};

/* Frees blocks first, first + 2, ... once (S_OK) and again (refused); the
 * answers that were not so. */
static size_t free_every_other_twice(IHostMalloc *h, void **blocks, size_t first, size_t n)
{
    size_t wrong = 0;
    for (size_t i = first; i < n; i += 2)
        wrong += IHostMalloc_Free(h, blocks[i]) != S_OK;
    for (size_t i = first; i < n; i += 2)
        wrong += IHostMalloc_Free(h, blocks[i]) != HOST_E_INVALIDOPERATION;
    return wrong;
}

static void *free_every_other_expecting(void *arg)
{
    struct span_blocks *j = arg;
    j->wrong += free_every_other_twice(j->h, j->blocks, 1, j->n);
    return NULL;
}

TEST(spans_sharing_a_slot_of_their_owners_record_free_exactly)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    /* 16 KiB blocks: three a span; 1100 spans and more (69 MiB) */
    enum { N = 3 * 1100 };
    void **blocks = malloc(N * sizeof *blocks);
    REQUIRE(blocks);
    for (size_t i = 0; i < N; i++)
        REQUIRE_HR(IHostMalloc_Alloc(h, 16384, eTaskCritical, &blocks[i]), S_OK);
    /* some spans share a slot: two spans whose 64 KiB numbers agree modulo 1024 */
    size_t shared = 0;
    for (size_t i = 0; i < N && !shared; i++)
        for (size_t j = i + 1; j < N; j++) {
            uintptr_t a = (uintptr_t)blocks[i] >> 16, b = (uintptr_t)blocks[j] >> 16;
            if (a != b && a % 1024 == b % 1024) {
                shared++;
                break;
            }
        }
    CHECK(shared);
    /* the owner frees the even blocks from both ends towards the middle (the
     * spans that share a slot alternate), another thread the odd ones */
    size_t wrong = 0;
    for (size_t lo = 0, hi = N - 1 - (N - 1) % 2; lo <= hi; lo += 2, hi -= 2) {
        if (IHostMalloc_Free(h, blocks[lo]) != S_OK)
            wrong++;
        if (hi != lo && IHostMalloc_Free(h, blocks[hi]) != S_OK)
            wrong++;
    }
    struct span_blocks other = {h, blocks, N, 0};
    pthread_t t;
    pthread_create(&t, NULL, free_every_other_expecting, &other);
    pthread_join(t, NULL);
    for (size_t i = 0; i < N; i++)
        if (IHostMalloc_Free(h, blocks[i]) != HOST_E_INVALIDOPERATION)
            wrong++;
    CHECK_EQ(wrong, 0);
    CHECK_EQ(other.wrong, 0);
    size_t live = 99;
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    /* and the spans serve again */
    for (size_t i = 0; i < N; i++)
        REQUIRE_HR(IHostMalloc_Alloc(h, 16384, eTaskCritical, &blocks[i]), S_OK);
    for (size_t i = 0; i < N; i++)
        CHECK_HR(IHostMalloc_Free(h, blocks[N - 1 - i]), S_OK);
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    free(blocks);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- threads ---------------------------------------------------------------------------- */
struct channel {
    void *slots[4096];
    _Atomic size_t head, tail;
};

struct pair {
    IHostMalloc *h;
    struct channel ch;
    _Atomic int failures;
    int rounds;
};

static void *producer(void *arg)
{
    struct pair *p = arg;
    unsigned seed = 3;
    for (int i = 0; i < p->rounds; i++) {
        while (atomic_load(&p->ch.head) - atomic_load(&p->ch.tail) == 4096)
            ; /* the consumer frees as fast as it can */
        seed = seed * 1103515245u + 12345u;
        size_t size = 16 + (seed >> 8) % 1009;
        unsigned char *b;
        if (IHostMalloc_Alloc(p->h, size, eTaskCritical, (void **)&b) != S_OK) {
            atomic_fetch_add(&p->failures, 1);
            continue;
        }
        b[0] = (unsigned char)size;
        b[size - 1] = (unsigned char)size;
        size_t h = atomic_load(&p->ch.head);
        p->ch.slots[h % 4096] = b;
        atomic_store(&p->ch.head, h + 1);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct pair *p = arg;
    for (int i = 0; i < p->rounds;) {
        size_t t = atomic_load(&p->ch.tail);
        if (t == atomic_load(&p->ch.head))
            continue;
        unsigned char *b = p->ch.slots[t % 4096];
        atomic_store(&p->ch.tail, t + 1);
        if (IHostMalloc_Free(p->h, b) != S_OK)
            atomic_fetch_add(&p->failures, 1);
        i++;
    }
    return NULL;
}

/* §7 MALLOC_THREADSAFE: blocks freed on another thread than allocated them; the memory
 * comes back (the heap does not grow without bound). */
TEST(threadsafe_cross_thread_frees)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    struct pair *p = calloc(1, sizeof *p);
    p->h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(p->h);
    p->rounds = getenv("HOSTMEM_ITERATIONS") ? 20000 : 200000;
    pthread_t a, b;
    pthread_create(&a, NULL, producer, p);
    pthread_create(&b, NULL, consumer, p);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    CHECK_EQ(atomic_load(&p->failures), 0);
    hostmem_stats s = stats_of(m);
    /* 4096 blocks in flight at most, of at most 1 KiB: a few MiB, not the 100 MiB moved */
    CHECK(s.peak_committed_bytes < (size_t)24 << 20);
    size_t live = 99;
    CHECK_HR(hostmem_heap_report(p->h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(p->h), 0);
    free(p);
    CHECK_EQ(stats_of(m).committed_bytes, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Frees each of a span_blocks' blocks once more, from another thread: every
 * one must be refused. */
static void *free_again(void *arg)
{
    struct span_blocks *r = arg;
    for (size_t i = 0; i < r->n; i++)
        if (IHostMalloc_Free(r->h, r->blocks[i]) != HOST_E_INVALIDOPERATION)
            r->wrong++;
    return NULL;
}

/* §7 IHostMalloc Free of an already freed block -> HOST_E_INVALIDOPERATION wherever the
 * block rests: in the owner's magazine (the first 32 freed of a class), on its span's
 * free list (the rest), freed again by the owner or by another thread; afterwards the
 * heap hands out each block once. */
TEST(free_refuses_double_frees_wherever_the_block_rests)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    enum { N = 200 };
    void *blocks[N];
    for (size_t i = 0; i < N; i++)
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &blocks[i]), S_OK);
    for (size_t i = 0; i < N; i++)
        CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
    size_t accepted = 0;
    for (size_t i = 0; i < N; i++)
        if (IHostMalloc_Free(h, blocks[i]) != HOST_E_INVALIDOPERATION)
            accepted++;
    CHECK_EQ(accepted, 0);
    struct span_blocks r = {h, blocks, N, 0};
    pthread_t t;
    pthread_create(&t, NULL, free_again, &r);
    pthread_join(t, NULL);
    CHECK_EQ(r.wrong, 0);
    /* each block comes back once: 2N allocations give 2N distinct blocks */
    void *again[2 * N];
    for (size_t i = 0; i < 2 * N; i++) {
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &again[i]), S_OK);
        memset(again[i], (int)(i & 0xff), 64);
    }
    for (size_t i = 0; i < 2 * N; i++)
        for (size_t j = 0; j < 64; j++)
            if (((unsigned char *)again[i])[j] != (unsigned char)(i & 0xff)) {
                TEST_FAIL_AT("block %zu shares memory with a later one", i);
                i = 2 * N;
                break;
            }
    for (size_t i = 0; i < 2 * N; i++)
        CHECK_HR(IHostMalloc_Free(h, again[i]), S_OK);
    size_t live = 99;
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

struct worker {
    IHostMalloc *h;
    unsigned seed;
    int failures;
};

static void *churn(void *arg)
{
    struct worker *w = arg;
    enum { SLOTS = 512 };
    unsigned char *live[SLOTS] = {0};
    size_t sizes[SLOTS] = {0};
    int rounds = getenv("HOSTMEM_ITERATIONS") ? 20000 : 100000;
    for (int i = 0; i < rounds; i++) {
        w->seed = w->seed * 1103515245u + 12345u;
        unsigned k = (w->seed >> 8) % SLOTS;
        if (live[k]) {
            for (size_t j = 0; j < sizes[k]; j += 61)
                if (live[k][j] != (unsigned char)k) {
                    w->failures++;
                    break;
                }
            if (IHostMalloc_Free(w->h, live[k]) != S_OK)
                w->failures++;
            live[k] = NULL;
        } else {
            sizes[k] = (w->seed >> 12) % 2000;
            if (IHostMalloc_Alloc(w->h, sizes[k], eTaskCritical, (void **)&live[k]) != S_OK) {
                w->failures++;
                continue;
            }
            memset(live[k], (int)k, sizes[k]);
        }
    }
    for (unsigned k = 0; k < SLOTS; k++)
        if (live[k] && IHostMalloc_Free(w->h, live[k]) != S_OK)
            w->failures++;
    return NULL;
}

/* §7 MALLOC_THREADSAFE: four threads allocating and freeing at once, contents intact. */
TEST(threadsafe_concurrent_churn_keeps_contents)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    struct worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){h, 11u * (unsigned)i + 1, 0};
        pthread_create(&t[i], NULL, churn, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(w[i].failures, 0);
    }
    size_t live = 99;
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- memory, budget, executable, report -------------------------------------------------- */

/* §7: the heap's pages come from the manager: the budget covers them, and a workload
 * that frees its memory gives committed pages back before shutdown. */
TEST(heap_pages_follow_the_budget_and_come_back)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = (size_t)8 << 20;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    enum { MAX = 100000 };
    void **blocks = calloc(MAX, sizeof *blocks);
    size_t n = 0;
    HRESULT hr = S_OK;
    while (n < MAX && (hr = IHostMalloc_Alloc(h, 256, eTaskCritical, &blocks[n])) == S_OK)
        n++;
    CHECK_HR(hr, E_OUTOFMEMORY);
    hostmem_stats full = stats_of(m);
    CHECK(full.committed_bytes <= c.commit_limit);
    CHECK(full.heap_bytes > 0 && full.heap_bytes <= full.committed_bytes);
    CHECK(n * 256 > (size_t)6 << 20); /* most of the budget went to blocks */
    void *big;
    CHECK_HR(IHostMalloc_Alloc(h, 1 << 20, eTaskCritical, &big), E_OUTOFMEMORY);
    for (size_t i = 0; i < n; i++)
        if (IHostMalloc_Free(h, blocks[i]) != S_OK) {
            TEST_FAIL_AT("free %zu", i);
            break;
        }
    /* what a cache may keep: its current span for the class, up to 16 empty
     * spans (1 MiB), and the segment headers with their two guard pages (at
     * most 4 pages a segment, and this budget holds no more than 4 segments;
     * docs/heap.md) */
    hostmem_stats empty = stats_of(m);
    CHECK(empty.committed_bytes <= ((size_t)17 << 16) + 4 * 4 * P);
    CHECK(empty.committed_bytes < full.committed_bytes / 4);
    CHECK_HR(IHostMalloc_Alloc(h, 1 << 20, eTaskCritical, &big), S_OK);
    CHECK_HR(IHostMalloc_Free(h, big), S_OK);
    free(blocks);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(stats_of(m).committed_bytes, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §7 MALLOC_EXECUTABLE: a block can hold machine code that runs. */
TEST(executable_heap_runs_generated_code)
{
#if defined(__x86_64__)
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_EXECUTABLE | MALLOC_THREADSAFE);
    REQUIRE(h);
    unsigned char *code;
    REQUIRE_HR(IHostMalloc_Alloc(h, 16, eTaskCritical, (void **)&code), S_OK);
    const unsigned char body[] = {0x8d, 0x47, 0x2a, 0xc3}; /* lea eax, [rdi+42]; ret */
    memcpy(code, body, sizeof body);
    int (*function)(int);
    memcpy(&function, &code, sizeof function);
    CHECK_EQ(function(100), 142);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, code, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.Protect, PAGE_EXECUTE_READWRITE);
    CHECK_HR(IHostMalloc_Free(h, code), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
#else
    printf("executable heap: not x86-64, generated code not tried\n");
#endif
}

/* §7 DebugAlloc: the leak report lists live blocks with their file:line. */
TEST(debug_alloc_leak_report_names_file_and_line)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    void *a, *b, *c, *d;
    CHECK_HR(IHostMalloc_DebugAlloc(h, 40, eTaskCritical, (char *)"runtime.c", 101, &a), S_OK);
    CHECK_HR(IHostMalloc_DebugAlloc(h, 50, eTaskCritical, (char *)"loader.c", 202, &b), S_OK);
    CHECK_HR(IHostMalloc_DebugAlloc(h, 70000, eTaskCritical, (char *)"jit.c", 303, &c), S_OK);
    CHECK_HR(IHostMalloc_Alloc(h, 60, eTaskCritical, &d), S_OK);
    CHECK_HR(IHostMalloc_Free(h, b), S_OK);
    char *text = NULL;
    size_t length = 0, live = 0;
    FILE *f = open_memstream(&text, &length);
    REQUIRE(f);
    CHECK_HR(hostmem_heap_report(h, f, &live), S_OK);
    fclose(f);
    CHECK_EQ(live, 3);
    CHECK(strstr(text, "runtime.c:101") != NULL);
    CHECK(strstr(text, "jit.c:303") != NULL);
    CHECK(strstr(text, "loader.c:202") == NULL);
    CHECK(strstr(text, "3 live blocks") != NULL);
    free(text);
    CHECK_HR(IHostMalloc_Free(h, a), S_OK);
    CHECK_HR(IHostMalloc_Free(h, c), S_OK);
    CHECK_HR(IHostMalloc_Free(h, d), S_OK);
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* A DebugAlloc'd block freed by another thread, or by its owner, loses its
 * record in the leak report once, and a second Free of it is refused
 * wherever it comes from. */
struct debug_free {
    IHostMalloc *h;
    void *block;
    HRESULT first, second;
};

static void *debug_free_twice(void *arg)
{
    struct debug_free *d = arg;
    d->first = IHostMalloc_Free(d->h, d->block);
    d->second = IHostMalloc_Free(d->h, d->block);
    return NULL;
}

TEST(debug_alloc_blocks_free_once_from_any_thread)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    void *mine, *theirs, *plain;
    CHECK_HR(IHostMalloc_DebugAlloc(h, 40, eTaskCritical, (char *)"owner.c", 1, &mine), S_OK);
    CHECK_HR(IHostMalloc_DebugAlloc(h, 40, eTaskCritical, (char *)"remote.c", 2, &theirs), S_OK);
    CHECK_HR(IHostMalloc_Alloc(h, 40, eTaskCritical, &plain), S_OK);
    struct debug_free d = {h, theirs, E_FAIL, E_FAIL};
    pthread_t t;
    pthread_create(&t, NULL, debug_free_twice, &d);
    pthread_join(t, NULL);
    CHECK_HR(d.first, S_OK);
    CHECK_HR(d.second, HOST_E_INVALIDOPERATION);
    CHECK_HR(IHostMalloc_Free(h, theirs), HOST_E_INVALIDOPERATION);
    char *text = NULL;
    size_t length = 0, live = 0;
    FILE *f = open_memstream(&text, &length);
    REQUIRE(f);
    CHECK_HR(hostmem_heap_report(h, f, &live), S_OK);
    fclose(f);
    CHECK_EQ(live, 2);
    CHECK(strstr(text, "owner.c:1") != NULL);
    CHECK(strstr(text, "remote.c:2") == NULL);
    free(text);
    CHECK_HR(IHostMalloc_Free(h, mine), S_OK);
    CHECK_HR(IHostMalloc_Free(h, mine), HOST_E_INVALIDOPERATION);
    d = (struct debug_free){h, mine, E_FAIL, E_FAIL};
    pthread_create(&t, NULL, debug_free_twice, &d);
    pthread_join(t, NULL);
    CHECK_HR(d.first, HOST_E_INVALIDOPERATION);
    CHECK_HR(d.second, HOST_E_INVALIDOPERATION);
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 1);
    /* the blocks come back as plain blocks: no record, freed on the fast path */
    void *again;
    CHECK_HR(IHostMalloc_Alloc(h, 40, eTaskCritical, &again), S_OK);
    CHECK_HR(IHostMalloc_Free(h, again), S_OK);
    CHECK_HR(IHostMalloc_Free(h, again), HOST_E_INVALIDOPERATION);
    CHECK_HR(IHostMalloc_Free(h, plain), S_OK);
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* A heap without MALLOC_THREADSAFE has one cache, which every thread's calls
 * use in turn (the caller serialises them): blocks made on one thread are
 * freed exactly on another and back, and double frees are refused on both. */
static void *single_cache_turn(void *arg)
{
    struct span_blocks *j = arg;
    j->wrong += free_every_other_twice(j->h, j->blocks, 0, j->n);
    for (size_t i = 0; i < j->n; i += 2)
        if (IHostMalloc_Alloc(j->h, 24 + i % 300, eTaskCritical, &j->blocks[i]) != S_OK)
            j->wrong++;
    return NULL;
}

TEST(single_cache_heap_serves_threads_in_turn)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, 0);
    REQUIRE(h);
    enum { N = 400 };
    void *blocks[N];
    for (size_t i = 0; i < N; i++)
        REQUIRE_HR(IHostMalloc_Alloc(h, 24 + i % 300, eTaskCritical, &blocks[i]), S_OK);
    struct span_blocks j = {h, blocks, N, 0};
    pthread_t t;
    pthread_create(&t, NULL, single_cache_turn, &j);
    pthread_join(t, NULL);
    CHECK_EQ(j.wrong, 0);
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++)
        if (IHostMalloc_Free(h, blocks[i]) != S_OK)
            wrong++;
    for (size_t i = 0; i < N; i++)
        if (IHostMalloc_Free(h, blocks[i]) != HOST_E_INVALIDOPERATION)
            wrong++;
    CHECK_EQ(wrong, 0);
    size_t live = 99;
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* §8 leak report at shutdown: with HOSTMEM_LEAK_REPORT, releasing a heap that still
 * has blocks, and a manager that still has reservations, prints them to stderr. */
TEST(leak_report_at_shutdown_goes_to_stderr)
{
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    fflush(stderr);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        hostmem_config c = {sizeof c};
        c.flags = HOSTMEM_LEAK_REPORT;
        IHostMemoryManager *m;
        if (hostmem_create(&c, &m) != S_OK)
            _exit(1);
        IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
        void *p, *r;
        IHostMalloc_DebugAlloc(h, 24, eTaskCritical, (char *)"gc.cpp", 4242, &p);
        IHostMemoryManager_VirtualAlloc(m, NULL, 65536, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r);
        IHostMalloc_Release(h);
        IHostMemoryManager_Release(m);
        _exit(0);
    }
    close(fds[1]);
    char text[4096] = "";
    size_t have = 0;
    ssize_t n;
    while (have < sizeof text - 1 && (n = read(fds[0], text + have, sizeof text - 1 - have)) > 0)
        have += (size_t)n;
    text[have] = 0;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(strstr(text, "gc.cpp:4242") != NULL);
    CHECK(strstr(text, "1 live blocks") != NULL);
    CHECK(strstr(text, "1 reservations still live") != NULL);
}

/* SPEC §2: after shutdown the manager's heaps answer HOST_E_CLRNOTAVAILABLE. */
/* Exactness does not lean on what the blocks held: a block's head is its own
 * (docs/heap.md), so an overrun into the next block's head makes that block's
 * Free a refusal rather than corrupt the heap; and a span reused for another
 * class, whose old blocks held words that look like the new layout's "handed
 * out" tags, refuses every block of the new layout it has not handed out. */
TEST(free_does_not_take_block_contents_for_its_state)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, 0);
    REQUIRE(h);
    /* 1 KiB blocks: enough for several spans, so that freeing them empties spans
     * past what the magazine keeps */
    enum { N = 400 };
    static char *old[N];
    uintptr_t low = UINTPTR_MAX, high = 0;
    for (size_t i = 0; i < N; i++) {
        REQUIRE_HR(IHostMalloc_Alloc(h, 1024, eTaskCritical, (void **)&old[i]), S_OK);
        /* every word w holds ~(w + 8): the tag any block starting at w + 8 has
         * while handed out */
        for (uintptr_t *w = (uintptr_t *)old[i]; (char *)w < old[i] + 1024; w++)
            *w = ~((uintptr_t)w + sizeof *w);
        if ((uintptr_t)old[i] < low)
            low = (uintptr_t)old[i];
        if ((uintptr_t)old[i] + 1024 > high)
            high = (uintptr_t)old[i] + 1024;
    }
    /* an overrun of old[0] into the head of the block after it */
    char *a0 = old[0], *a1 = old[1];
    REQUIRE((uintptr_t)a1 > (uintptr_t)a0);
    memset(a1 - 8, 0x5a, 8);
    CHECK_HR(IHostMalloc_Free(h, a1), HOST_E_INVALIDOPERATION);
    for (size_t i = 0; i < N; i++)
        if (i != 1)
            CHECK_HR(IHostMalloc_Free(h, old[i]), S_OK);
    /* another class: its first span is one of the emptied ones */
    char *a, *b;
    REQUIRE_HR(IHostMalloc_Alloc(h, 48, eTaskCritical, (void **)&a), S_OK);
    REQUIRE_HR(IHostMalloc_Alloc(h, 48, eTaskCritical, (void **)&b), S_OK);
    REQUIRE((uintptr_t)a >= low && (uintptr_t)a < high);
    REQUIRE(b > a);
    size_t stride = (size_t)(b - a), refused = 0, tried = 0;
    uintptr_t span_end = ((uintptr_t)b & ~(uintptr_t)0xffff) + 0x10000; /* a span holds blocks only */
    for (char *p = b + stride; (uintptr_t)p + 48 <= span_end; p += stride) {
        tried++;
        refused += IHostMalloc_Free(h, p) == HOST_E_INVALIDOPERATION;
    }
    CHECK(tried > 100);
    CHECK_EQ(refused, tried);
    CHECK_HR(IHostMalloc_Free(h, a), S_OK);
    CHECK_HR(IHostMalloc_Free(h, b), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

TEST(heap_after_shutdown_is_clrnotavailable)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    void *p;
    CHECK_HR(IHostMalloc_Alloc(h, 10, eTaskCritical, &p), S_OK);
    CHECK_HR(hostmem_shutdown(m), S_OK);
    void *q;
    CHECK_HR(IHostMalloc_Alloc(h, 10, eTaskCritical, &q), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(IHostMalloc_Free(h, p), HOST_E_CLRNOTAVAILABLE);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 16: a heap segment is a 4 MiB aligned reservation (heap.c finds a
 * block's span by rounding down), also when arena_size is under 16 MiB and the
 * segment gets a mapping of its own: arena.c's standalone reservations honour
 * the alignment asked. Before the fix, a reservation made first moved the next
 * mapping off 4 MiB and the heap's first Alloc wrote outside its span (SIGSEGV),
 * so the heap runs in a child. The smallest arena_size (4 granules) and a few
 * more, each after an odd reservation. */
static int small_arena_heap_works(size_t arena_size)
{
    hostmem_config c = {sizeof c};
    c.arena_size = arena_size;
    IHostMemoryManager *m;
    if (hostmem_create(&c, &m) != S_OK)
        return 1;
    void *odd;
    if (IHostMemoryManager_VirtualAlloc(m, NULL, 11 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &odd) != S_OK)
        return 2;
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    if (!h)
        return 3;
    for (unsigned size = 16; size <= 4096; size *= 4) {
        void *b = NULL;
        if (IHostMalloc_Alloc(h, size, eTaskCritical, &b) != S_OK)
            return 4;
        MEMORY_BASIC_INFORMATION info;
        SIZE_T got = 0;
        if (IHostMemoryManager_VirtualQuery(m, b, &info, sizeof info, &got) != S_OK)
            return 5;
        if ((uintptr_t)info.AllocationBase % ((uintptr_t)4 << 20))
            return 6; /* the segment is not 4 MiB aligned */
        memset(b, 0x5A, size);
        if (IHostMalloc_Free(h, b) != S_OK)
            return 7;
    }
    IHostMalloc_Release(h);
    if (IHostMemoryManager_VirtualFree(m, odd, 0, MEM_RELEASE) != S_OK)
        return 8;
    return IHostMemoryManager_Release(m) == 0 ? 0 : 9;
}

TEST(heap_segments_are_4mib_aligned_under_a_small_arena_size)
{
    const size_t sizes[] = {4 * hostmem_granularity(), (size_t)1 << 20, (size_t)4 << 20, (size_t)8 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        fflush(NULL);
        pid_t child = fork();
        REQUIRE(child >= 0);
        if (child == 0)
            _exit(small_arena_heap_works(sizes[i]));
        int status = 0;
        REQUIRE(waitpid(child, &status, 0) == child);
        if (WIFSIGNALED(status))
            TEST_FAIL_AT("arena_size %zu: the heap's first blocks killed the process (signal %d)", sizes[i],
                         WTERMSIG(status));
        else if (!WIFEXITED(status) || WEXITSTATUS(status))
            TEST_FAIL_AT("arena_size %zu: step %d failed (6: a segment not 4 MiB aligned)", sizes[i],
                         WEXITSTATUS(status));
    }
}

int main(void)
{
    P = hostmem_page_size();
    RUN(create_malloc_variants_and_arguments);
    RUN(alloc_alignment_zero_size_and_contents_every_variant);
    RUN(free_refuses_what_the_heap_did_not_hand_out_every_variant);
    RUN(free_refuses_double_frees_wherever_the_block_rests);
    RUN(free_accepts_only_block_boundaries_in_every_size_class);
    RUN(spans_sharing_a_slot_of_their_owners_record_free_exactly);
    RUN(single_cache_heap_serves_threads_in_turn);
    RUN(threadsafe_cross_thread_frees);
    RUN(threadsafe_concurrent_churn_keeps_contents);
    RUN(heap_pages_follow_the_budget_and_come_back);
    RUN(executable_heap_runs_generated_code);
    RUN(debug_alloc_leak_report_names_file_and_line);
    RUN(debug_alloc_blocks_free_once_from_any_thread);
    RUN(leak_report_at_shutdown_goes_to_stderr);
    RUN(free_does_not_take_block_contents_for_its_state);
    RUN(heap_after_shutdown_is_clrnotavailable);
    RUN(heap_segments_are_4mib_aligned_under_a_small_arena_size);
    return TEST_SUMMARY("test_heap");
}
