/*
 * test_hardening.c - SPEC §8 and issue 23, "Hardened metadata": the manager's
 * and the heap's books are never adjacent to what the runtime gets without an
 * inaccessible gap, and a corrupted heap structure is a refusal and a counted
 * detection (hostmem_stats.heap_corruptions), never a write to an address the
 * corruption chose.
 *
 * Each test corrupts on purpose, as a runtime's bug would: a freed block's
 * link overwritten with the address of a canary (in a magazine, on its span's
 * list, on its span's remote list), a block's tag overwritten by an overrun of
 * the block before it or forged in the tag's old, unkeyed form, a double free
 * after its tag was rewritten, writes past the end of a heap block, of a span,
 * of a VirtualAlloc reservation just below a heap segment, and next to the
 * manager's and the heap's own objects. Each must end in a refusal that is
 * counted, or in a fault on an inaccessible page (in a forked child, which
 * must die by SIGSEGV) - and the canary must be untouched.
 *
 * Sanitizers: nothing here needs skipping. The heap's memory is hostmem's own
 * mappings, which AddressSanitizer does not track, so the test's writes past
 * a block's end are errors only to hostmem, as intended; the expected faults
 * happen in children that restore the default SIGSEGV action first.
 */
#define COBJMACROS
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>

#include "test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define SEGMENT ((size_t)4 << 20)
#define SPAN ((size_t)64 << 10)

static size_t P, G = 64 * KIB;

/* The canary: an address a corrupted link points to. A live tag written for
 * it would land in the word before it; the block's first bytes would be
 * written by the test's use of what Alloc returned. Neither may happen. */
static unsigned char canary_page[8192] __attribute__((aligned(64)));
#define CANARY_BYTE 0xC5
static void *canary(void)
{
    memset(canary_page, CANARY_BYTE, sizeof canary_page);
    return canary_page + 4096;
}
static int canary_intact(void)
{
    for (size_t i = 0; i < sizeof canary_page; i++)
        if (canary_page[i] != CANARY_BYTE)
            return 0;
    return 1;
}

static size_t corruptions(IHostMemoryManager *m)
{
    return stats_of(m).heap_corruptions;
}

/* Runs a write of *addr in a child. Returns 0 when the child exited normally,
 * the signal number when it was killed, -1 otherwise (as test_rules.c). */
static int child_write(void *addr)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        /* die by the signal itself, even where a sanitizer installed a handler */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        *(volatile unsigned char *)addr = 0x5A;
        _exit(0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    if (WIFSIGNALED(status))
        return WTERMSIG(status);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    return -1;
}

static const DWORD variants[] = {0, MALLOC_THREADSAFE};

static size_t allocs_avoid(IHostMalloc *h, size_t size, size_t n, void **out, const void *avoid);
#define REQUIRE_EQ_ALLOCS(h, size, n, out) REQUIRE(allocs_avoid((h), (size), (n), (out), NULL) == (n))

static IHostMalloc *heap_of(IHostMemoryManager *m, DWORD type)
{
    IHostMalloc *h = NULL;
    return IHostMemoryManager_CreateMalloc(m, type, &h) == S_OK ? h : NULL;
}

/* Allocs of size until one fails or n are made; every block must differ from
 * avoid and must not be the canary. Returns how many succeeded. */
static size_t allocs_avoid(IHostMalloc *h, size_t size, size_t n, void **out, const void *avoid)
{
    size_t made = 0;
    for (; made < n; made++) {
        void *p = NULL;
        HRESULT hr = IHostMalloc_Alloc(h, size, eTaskCritical, &p);
        if (hr != S_OK)
            break;
        if (p == avoid || p == canary_page + 4096)
            TEST_FAIL_AT("Alloc returned %p, which a corrupted link named", p);
        memset(p, 0x11, size < 16 ? size : 16);
        out[made] = p;
    }
    return made;
}

/* ---- free lists ----------------------------------------------------------------------- */

/* Rule: a freed block's link, overwritten with an address, is never followed.
 * The block is the head of its class's magazine (the owner's first 32 frees):
 * the next Alloc of its class finds the link does not check out, counts it,
 * drops the magazine and refuses (E_OUTOFMEMORY); later Allocs work, and none
 * returns or writes the canary. */
TEST(an_overwritten_link_in_a_magazine_is_refused_and_counted)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        IHostMalloc *h = heap_of(m, variants[v]);
        REQUIRE(h);
        void *target = canary();
        void *a, *b;
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &a), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &b), S_OK);
        CHECK_HR(IHostMalloc_Free(h, b), S_OK);
        CHECK_HR(IHostMalloc_Free(h, a), S_OK); /* a heads the magazine, b after it */
        size_t before = corruptions(m);
        /* a use after free: the first word of a freed block, the link */
        *(void **)a = target;
        void *p = (void *)1;
        CHECK_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &p), E_OUTOFMEMORY);
        CHECK(p == NULL);
        CHECK_EQ(corruptions(m), before + 1);
        void *blocks[64];
        size_t n = allocs_avoid(h, 64, 64, blocks, a);
        CHECK_EQ(n, 64);
        CHECK(canary_intact());
        for (size_t i = 0; i < n; i++)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
        CHECK_EQ(corruptions(m), before + 1); /* nothing else was taken for one */
        CHECK_EQ(IHostMalloc_Release(h), 0);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Rule: the same on a span's own free list (frees past the magazine's 32 go
 * there): the Alloc that reaches the overwritten link refuses, counted; the
 * canary is never handed out nor written. */
TEST(an_overwritten_link_on_a_span_list_is_refused_and_counted)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        IHostMalloc *h = heap_of(m, variants[v]);
        REQUIRE(h);
        void *target = canary();
        enum { N = 40 };
        void *blocks[N];
        REQUIRE_EQ_ALLOCS(h, 64, N, blocks);
        for (size_t i = 0; i < N; i++)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
        /* blocks[0..31] went to the magazine; 32..39 to the span's list, 39 first */
        size_t before = corruptions(m);
        *(void **)blocks[N - 1] = target;
        void *again[N];
        size_t n = allocs_avoid(h, 64, N, again, NULL);
        CHECK_EQ(n, 32); /* the magazine's; the span's list is refused */
        CHECK_EQ(corruptions(m), before + 1);
        for (size_t i = 0; i < n; i++)
            if (again[i] == blocks[N - 1])
                TEST_FAIL_AT("the block whose link was overwritten was handed out");
        void *more[8];
        size_t k = allocs_avoid(h, 64, 8, more, blocks[N - 1]);
        CHECK_EQ(k, 8);
        CHECK(canary_intact());
        for (size_t i = 0; i < n; i++)
            CHECK_HR(IHostMalloc_Free(h, again[i]), S_OK);
        for (size_t i = 0; i < k; i++)
            CHECK_HR(IHostMalloc_Free(h, more[i]), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

struct remote_frees {
    IHostMalloc *h;
    void **blocks;
    size_t n;
};

static void *free_them(void *arg)
{
    struct remote_frees *r = arg;
    for (size_t i = 0; i < r->n; i++)
        if (IHostMalloc_Free(r->h, r->blocks[i]) != S_OK)
            return (void *)1;
    return NULL;
}

/* Rule: the same on a span's remote list (blocks freed by another thread than
 * their owner): the owner's collection of the list checks every link before
 * it follows it, and refuses, counted, at the overwritten one. */
TEST(an_overwritten_link_on_a_remote_list_is_refused_and_counted)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    void *target = canary();
    /* 16,000 bytes: three blocks fill a span, and the magazine holds two */
    void *blocks[3];
    REQUIRE_EQ_ALLOCS(h, 16000, 3, blocks);
    REQUIRE(((uintptr_t)blocks[0] ^ (uintptr_t)blocks[2]) < SPAN); /* one span, now full */
    struct remote_frees r = {h, blocks, 2};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, free_them, &r) == 0);
    void *failed;
    pthread_join(t, &failed);
    CHECK(failed == NULL);
    size_t before = corruptions(m);
    *(void **)blocks[1] = target; /* the remote list's head */
    void *p = (void *)1;
    CHECK_HR(IHostMalloc_Alloc(h, 16000, eTaskCritical, &p), E_OUTOFMEMORY);
    CHECK_EQ(corruptions(m), before + 1);
    void *more[4];
    size_t k = allocs_avoid(h, 16000, 4, more, blocks[1]);
    CHECK_EQ(k, 4);
    for (size_t i = 0; i < k; i++)
        if (more[i] == blocks[0])
            TEST_FAIL_AT("a block on the dropped remote list was handed out");
    CHECK(canary_intact());
    for (size_t i = 0; i < k; i++)
        CHECK_HR(IHostMalloc_Free(h, more[i]), S_OK);
    CHECK_HR(IHostMalloc_Free(h, blocks[2]), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Rule: links are bound to their block: a free block's link and tag copied
 * into another free block (a replay, by a write that read them first) do not
 * check out there; the Alloc that meets them refuses, counted. */
TEST(a_link_copied_to_another_block_is_refused_and_counted)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, 0);
    REQUIRE(h);
    char *a, *b, *c;
    REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&a), S_OK);
    REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&b), S_OK);
    REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&c), S_OK);
    CHECK_HR(IHostMalloc_Free(h, a), S_OK);
    CHECK_HR(IHostMalloc_Free(h, b), S_OK); /* b -> a */
    CHECK_HR(IHostMalloc_Free(h, c), S_OK); /* c -> b -> a */
    size_t before = corruptions(m);
    memcpy(c - 8, b - 8, 16); /* c takes b's tag and link */
    void *p;
    CHECK_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &p), E_OUTOFMEMORY);
    CHECK_EQ(corruptions(m), before + 1);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- block tags -------------------------------------------------------------------------- */

/* Rule: a block's tag overwritten - by an overrun of the block before it, or
 * forged in the unkeyed form tags once had (~address) - makes Free of the
 * block a refusal, counted; the block before is freed as usual. A plain double
 * free is a refusal too, but not a corruption. */
TEST(an_overwritten_tag_makes_free_a_counted_refusal)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        IHostMalloc *h = heap_of(m, variants[v]);
        REQUIRE(h);
        char *a, *b, *c;
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&a), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&b), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, (void **)&c), S_OK);
        REQUIRE(b > a && c > b);
        size_t stride = (size_t)(b - a);
        size_t before = corruptions(m);
        memset(a, 'x', stride); /* 8 bytes past a's end: b's tag */
        CHECK_HR(IHostMalloc_Free(h, b), HOST_E_INVALIDOPERATION);
        CHECK_EQ(corruptions(m), before + 1);
        CHECK_HR(IHostMalloc_Free(h, a), S_OK);
        /* the old form of a live tag is no longer one */
        *(uintptr_t *)(c - 8) = ~(uintptr_t)c;
        CHECK_HR(IHostMalloc_Free(h, c), HOST_E_INVALIDOPERATION);
        CHECK_EQ(corruptions(m), before + 2);
        /* a plain double free: refused, not counted */
        void *d;
        REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &d), S_OK);
        CHECK_HR(IHostMalloc_Free(h, d), S_OK);
        CHECK_HR(IHostMalloc_Free(h, d), HOST_E_INVALIDOPERATION);
        CHECK_EQ(corruptions(m), before + 2);
        CHECK_EQ(IHostMalloc_Release(h), 0);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Rule: a double free after a corruption is refused. A freed block whose tag
 * is rewritten to look handed out (the old form, or a copy of a live block's
 * tag) is refused a second Free, counted; and the magazine holding it refuses
 * to hand it out again, counted: no block is handed out twice. */
TEST(a_double_free_after_a_corrupted_tag_is_refused)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        IHostMalloc *h = heap_of(m, variants[v]);
        REQUIRE(h);
        char *a, *b;
        REQUIRE_HR(IHostMalloc_Alloc(h, 200, eTaskCritical, (void **)&a), S_OK);
        REQUIRE_HR(IHostMalloc_Alloc(h, 200, eTaskCritical, (void **)&b), S_OK);
        CHECK_HR(IHostMalloc_Free(h, b), S_OK);
        size_t before = corruptions(m);
        *(uintptr_t *)(b - 8) = ~(uintptr_t)b;
        CHECK_HR(IHostMalloc_Free(h, b), HOST_E_INVALIDOPERATION);
        CHECK_EQ(corruptions(m), before + 1);
        /* a live block's tag is its own: copied, it says nothing of b */
        memcpy(b - 8, a - 8, 8);
        CHECK_HR(IHostMalloc_Free(h, b), HOST_E_INVALIDOPERATION);
        CHECK_EQ(corruptions(m), before + 2);
        void *p;
        CHECK_HR(IHostMalloc_Alloc(h, 200, eTaskCritical, &p), E_OUTOFMEMORY);
        CHECK_EQ(corruptions(m), before + 3);
        void *blocks[40];
        size_t n = allocs_avoid(h, 200, 40, blocks, b);
        CHECK_EQ(n, 40);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (blocks[i] == blocks[j])
                    TEST_FAIL_AT("block %p handed out twice", blocks[i]);
        for (size_t i = 0; i < n; i++)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
        CHECK_HR(IHostMalloc_Free(h, a), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- writes past the end --------------------------------------------------------------- */

/* Rule: a span holds blocks only; the books of a span live in its segment's
 * header. A write from the last block of a span through the rest of the span
 * and on into the next reaches the next span's first tag, no bookkeeping: its
 * block's Free is a counted refusal and the heap goes on working. */
TEST(an_overrun_across_a_span_reaches_a_tag_not_the_books)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, 0);
    REQUIRE(h);
    /* 16,000-byte blocks, three a span: six fill two spans, usually adjacent */
    enum { N = 12 };
    void *blocks[N];
    REQUIRE_EQ_ALLOCS(h, 16000, N, blocks);
    /* last: the highest block of a span; next: the lowest of the span above it */
    size_t last = N, next = N;
    for (size_t i = 0; i < N && last == N; i++) {
        uintptr_t span = (uintptr_t)blocks[i] & ~(uintptr_t)(SPAN - 1);
        int highest = 1;
        for (size_t k = 0; k < N; k++)
            if (((uintptr_t)blocks[k] & ~(uintptr_t)(SPAN - 1)) == span && blocks[k] > blocks[i])
                highest = 0;
        for (size_t j = 0; j < N && highest; j++)
            if ((uintptr_t)blocks[j] - (span + SPAN) < 64) {
                last = i;
                next = j;
                break;
            }
    }
    if (last == N)
        TEST_SKIP("no two adjacent spans of this class: the layout is not the one docs/heap.md describes");
    size_t before = corruptions(m);
    char *from = blocks[last], *to = (char *)blocks[next];
    memset(from, 'y', (size_t)(to - from)); /* through the next span's first tag */
    CHECK_HR(IHostMalloc_Free(h, blocks[next]), HOST_E_INVALIDOPERATION);
    CHECK_EQ(corruptions(m), before + 1);
    for (size_t i = 0; i < N; i++)
        if (i != next)
            CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
    void *more[N];
    size_t k = allocs_avoid(h, 16000, N, more, NULL);
    CHECK_EQ(k, N);
    for (size_t i = 0; i < k; i++)
        CHECK_HR(IHostMalloc_Free(h, more[i]), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* The heap segment holding p, its header's extent as VirtualQuery shows it:
 * [base, base+P) no access, [base+P, header_end) read-write, then a no-access
 * page. Returns 0 when it is not so. */
static int segment_guards(IHostMemoryManager *m, void *p, uintptr_t *base_out, uintptr_t *header_end)
{
    uintptr_t base = (uintptr_t)p & ~(uintptr_t)(SEGMENT - 1);
    MEMORY_BASIC_INFORMATION i0, i1, i2;
    SIZE_T n;
    if (IHostMemoryManager_VirtualQuery(m, (void *)base, &i0, sizeof i0, &n) != S_OK ||
        IHostMemoryManager_VirtualQuery(m, (void *)(base + P), &i1, sizeof i1, &n) != S_OK)
        return 0;
    uintptr_t end = base + P + i1.RegionSize;
    if (IHostMemoryManager_VirtualQuery(m, (void *)end, &i2, sizeof i2, &n) != S_OK)
        return 0;
    *base_out = base;
    *header_end = end;
    return (uintptr_t)i0.AllocationBase == base && i0.State == MEM_COMMIT && i0.Protect == PAGE_NOACCESS &&
           i0.RegionSize == P && i1.State == MEM_COMMIT && i1.Protect == PAGE_READWRITE &&
           i2.State == MEM_COMMIT && i2.Protect == PAGE_NOACCESS && i2.RegionSize == P;
}

/* Rule: a heap segment's header lies between two inaccessible pages, its first
 * page and the one after it: a write running off whatever lies below the
 * segment, or back from its blocks, faults before it reaches the header. */
TEST(a_segment_header_lies_between_inaccessible_pages)
{
    static const uint32_t modes[] = {0, HOSTMEM_COMPACT};
    for (size_t mode = 0; mode < 2; mode++) {
        hostmem_config c = {sizeof c};
        c.flags = modes[mode];
        IHostMemoryManager *m;
        REQUIRE_HR(hostmem_create(&c, &m), S_OK);
        IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
        REQUIRE(h);
        void *p;
        REQUIRE_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, &p), S_OK);
        uintptr_t base = 0, header_end = 0;
        CHECK(segment_guards(m, p, &base, &header_end));
        CHECK_EQ(child_write((void *)base), SIGSEGV);
        CHECK_EQ(child_write((void *)(base + P - 1)), SIGSEGV);
        CHECK_EQ(child_write((void *)header_end), SIGSEGV);
        CHECK_EQ(child_write((void *)(header_end + P - 1)), SIGSEGV);
        CHECK_EQ(child_write((void *)(base + P)), 0); /* the header itself, for the contrast */
        CHECK_HR(IHostMalloc_Free(h, p), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

/* Rule: a write past the end of a VirtualAlloc reservation faults or lands in
 * the runtime's own memory - never in the books. Here the reservation is made
 * (at a fixed address) just below a heap segment, committed to its last byte:
 * the next byte is the segment's guard page, in strict and in compact mode. A
 * reservation with slack after it faults there too, in strict mode. */
TEST(a_write_past_a_reservation_faults_before_the_books)
{
    static const uint32_t modes[] = {0, HOSTMEM_COMPACT};
    for (size_t mode = 0; mode < 2; mode++) {
        hostmem_config c = {sizeof c};
        c.flags = modes[mode];
        IHostMemoryManager *m;
        REQUIRE_HR(hostmem_create(&c, &m), S_OK);
        void *r;
        REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                   eTaskCritical, &r),
                   S_OK);
        if (!modes[mode]) /* strict: the granule after it is slack, no access */
            CHECK_EQ(child_write((char *)r + G), SIGSEGV);
        /* r gone: it could hold the very granule below the heap's segment (one
         * time in SEGMENT / G, where the arena's random start puts it) */
        CHECK_HR(IHostMemoryManager_VirtualFree(m, r, 0, MEM_RELEASE), S_OK);
        IHostMalloc *h = heap_of(m, 0);
        REQUIRE(h);
        void *p;
        REQUIRE_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, &p), S_OK);
        uintptr_t base = (uintptr_t)p & ~(uintptr_t)(SEGMENT - 1);
        void *below = NULL;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(m, (void *)(base - G), G, MEM_RESERVE | MEM_COMMIT,
                                                     PAGE_READWRITE, eTaskCritical, &below);
        if (hr == S_OK) {
            CHECK(below == (void *)(base - G));
            memset(below, 0x77, G); /* all of it is the runtime's */
            CHECK_EQ(child_write((char *)below + G), SIGSEGV);
            CHECK_HR(IHostMemoryManager_VirtualFree(m, below, 0, MEM_RELEASE), S_OK);
        } else {
            TEST_FAIL_AT("the granule below the heap segment at %p is taken (0x%08X)", (void *)base,
                         (unsigned)hr);
        }
        CHECK_HR(IHostMalloc_Free(h, p), S_OK);
        CHECK_EQ(IHostMalloc_Release(h), 0);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

/* The kernel mapping holding address, from /proc/self/maps (the seam's walk). */
struct around {
    uintptr_t address;
    struct os_mapping found, before, after;
    int have, have_before, have_after;
};
static int around_step(void *context, const struct os_mapping *mapping)
{
    struct around *a = context;
    if (a->have) {
        a->after = *mapping;
        a->have_after = 1;
        return 1;
    }
    if (mapping->start <= a->address && a->address < mapping->end) {
        a->found = *mapping;
        a->have = 1;
        return 0;
    }
    a->before = *mapping;
    a->have_before = 1;
    return 0;
}

/* Is the object at p (at the start of its mapping) bracketed by inaccessible
 * pages: the mapping before it ends at its start with no access, and the
 * mapping after it starts at its end with no access? */
static int bracketed(void *p, uintptr_t *end)
{
    struct around a;
    memset(&a, 0, sizeof a);
    a.address = (uintptr_t)p;
    if (hostmem_os_linux.walk_mappings(around_step, &a) != 0 || !a.have)
        return 0;
    *end = a.found.end;
    return a.found.start == (uintptr_t)p && (a.found.prot & OS_PROT_WRITE) && a.have_before && a.have_after &&
           a.before.end == a.found.start && a.before.prot == OS_PROT_NONE && a.after.start == a.found.end &&
           a.after.prot == OS_PROT_NONE;
}

/* Rule: the library's own objects - here the manager and a heap, which the
 * runtime holds pointers to - live in mappings with an inaccessible page on
 * each side, whatever the kernel or a fixed-address VirtualAlloc puts next to
 * them: a write running off either end of anything beside them faults first. */
TEST(the_books_have_inaccessible_pages_on_both_sides)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
    REQUIRE(h);
    void *objects[] = {m, h};
    for (size_t i = 0; i < 2; i++) {
        uintptr_t end = 0;
        if (!bracketed(objects[i], &end)) {
            TEST_FAIL_AT("object %zu at %p: not between two no-access pages", i, objects[i]);
            continue;
        }
        CHECK_EQ(child_write((char *)objects[i] - 1), SIGSEGV);
        CHECK_EQ(child_write((void *)end), SIGSEGV);
    }
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

int main(void)
{
    P = (size_t)sysconf(_SC_PAGESIZE);
    if (P > G)
        G = P;
    RUN(an_overwritten_link_in_a_magazine_is_refused_and_counted);
    RUN(an_overwritten_link_on_a_span_list_is_refused_and_counted);
    RUN(an_overwritten_link_on_a_remote_list_is_refused_and_counted);
    RUN(a_link_copied_to_another_block_is_refused_and_counted);
    RUN(an_overwritten_tag_makes_free_a_counted_refusal);
    RUN(a_double_free_after_a_corrupted_tag_is_refused);
    RUN(an_overrun_across_a_span_reaches_a_tag_not_the_books);
    RUN(a_segment_header_lies_between_inaccessible_pages);
    RUN(a_write_past_a_reservation_faults_before_the_books);
    RUN(the_books_have_inaccessible_pages_on_both_sides);
    return TEST_SUMMARY("test_hardening");
}
