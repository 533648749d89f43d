/*
 * test_limits.c - issue 13 item 3: a manager under an address-space limit
 * (RLIMIT_AS, what `ulimit -v` sets).
 *
 * The rule (src/arena.c, arena_size_for): a manager's first arena asks for
 * 64 MiB and each next one for twice the last, up to arena_size (1 GiB); an
 * arena that must hold a request of more than a quarter of that asks for more.
 * Under RLIMIT_AS, read whenever an arena is made, an arena takes at most a
 * quarter of what the limit leaves (the limit less the process's VmSize), and
 * never less than the request; a manager made under a limit starts from a
 * 64th of it, and its arena table has limit / 64 KiB slots (at least 4,096).
 * When the kernel refuses an arena for want of memory (ENOMEM) its size
 * halves, down to the request.
 *
 * The limited cases run in forked children that lower their own RLIMIT_AS, so
 * the test program itself is never limited; a child prints its own failures
 * and reports them in its exit status. Sanitizers reserve terabytes of shadow
 * memory at start-up and cannot run under a small RLIMIT_AS: sanitizer builds
 * skip those children (one line says so) and run the rest, which check the
 * rule through an injected seam that reports a limit without imposing one.
 */
#define COBJMACROS
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os.h"
#include "test.h"

#if defined(UNDER_ASAN) || defined(UNDER_TSAN)
static const int under_sanitizer = 1;
#else
static const int under_sanitizer = 0;
#endif

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
/* What `ulimit -v 200000` sets (ulimit counts KiB). */
#define LIMIT_200MB ((uint64_t)200000 * KIB)
/* Room for hostmem_validate's own lists, far less than any request refused below. */
#define VALIDATE_ROOM (8 * MIB)

static size_t P, G;

static HRESULT reserve(IHostMemoryManager *m, size_t size, DWORD type, void **out)
{
    *out = NULL;
    return IHostMemoryManager_VirtualAlloc(m, NULL, size, MEM_RESERVE | type, PAGE_READWRITE, eTaskCritical, out);
}

static HRESULT commit(IHostMemoryManager *m, void *at, size_t size)
{
    void *p;
    return IHostMemoryManager_VirtualAlloc(m, at, size, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
}

static HRESULT release(IHostMemoryManager *m, void *base)
{
    return IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
}

static HRESULT validate(IHostMemoryManager *m)
{
    char why[256] = "";
    HRESULT hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        fprintf(stderr, "    validate: %s\n", why);
    return hr;
}

/* The counters a refusal must leave as they were (os_refusals aside). */
static int same_books(const hostmem_stats *a, const hostmem_stats *b)
{
    return a->reservations == b->reservations && a->reserved_bytes == b->reserved_bytes &&
           a->committed_bytes == b->committed_bytes && a->arenas == b->arenas &&
           a->arena_bytes == b->arena_bytes && a->kernel_mappings == b->kernel_mappings;
}

/* The size of the arena the last call added (0: none was added). */
static size_t arena_added(IHostMemoryManager *m, hostmem_stats *last)
{
    hostmem_stats now = stats_of(m);
    size_t added = now.arenas > last->arenas ? now.arena_bytes - last->arena_bytes : 0;
    *last = now;
    return added;
}

/* ---- in limited children ----------------------------------------------------------------- */

static void reserve_64k_body(void)
{
    uint64_t before = test_vm_size();
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    /* before its first reservation a manager holds its own tables only, sized
     * to the limit (the arena table: 512 KiB, not the 8 MiB of no limit) */
    printf("a manager under 200 MB: %.1f MiB of address space before its first reservation\n",
           (double)(test_vm_size() - before) / (double)MIB);
    CHECK(test_vm_size() - before < 1 * MIB);
    void *p;
    CHECK_HR(reserve(m, 64 * KIB, 0, &p), S_OK);
    if (p) {
        CHECK_HR(commit(m, p, 64 * KIB), S_OK);
        memset(p, 0x5A, 64 * KIB);
        hostmem_stats s = stats_of(m);
        CHECK_EQ(s.arenas, 1);
        /* a quarter of what the limit left, at most */
        CHECK(s.arena_bytes <= (LIMIT_200MB - before) / 4);
        CHECK_HR(validate(m), S_OK);
        CHECK_HR(release(m, p), S_OK);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: `ulimit -v 200000` and a 64 KiB reserve (refused before:
 * every manager took a 1 GiB arena on its first reservation). */
TEST(reserve_of_64k_works_under_a_200mb_address_limit)
{
    test_in_child(reserve_64k_body, "64 KiB under 200 MB");
}

static void heap_body(void)
{
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    IHostMalloc *heap = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap), S_OK);
    if (heap) {
        void *small = NULL, *large = NULL;
        CHECK_HR(IHostMalloc_Alloc(heap, 100, eTaskCritical, &small), S_OK);
        CHECK_HR(IHostMalloc_Alloc(heap, 8 * MIB, eTaskCritical, &large), S_OK);
        if (small)
            memset(small, 1, 100);
        if (large)
            memset(large, 2, 8 * MIB);
        CHECK_HR(validate(m), S_OK);
        CHECK_HR(IHostMalloc_Free(heap, small), S_OK);
        CHECK_HR(IHostMalloc_Free(heap, large), S_OK);
        IHostMalloc_Release(heap);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: what `make demo` does - a heap, its 4 MiB-aligned segments
 * and a large block - under `ulimit -v 200000`. */
TEST(heap_works_under_a_200mb_address_limit)
{
    test_in_child(heap_body, "a heap under 200 MB");
}

#define FILL_MAX 8192
static void *filled[FILL_MAX];

static void fill_body(void)
{
    uint64_t before = test_vm_size();
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    size_t made = 0;
    HRESULT hr = S_OK;
    while (made < FILL_MAX && (hr = reserve(m, G, 0, &filled[made])) == S_OK)
        made++;
    CHECK_HR(hr, E_OUTOFMEMORY);
    /* arenas shrink to what is left instead of giving up at the first big one;
     * the rest went to hostmem's own tables (the arena table, the address map) */
    uint64_t left = LIMIT_200MB - before;
    printf("filled %zu x 64 KiB = %.1f MiB of the %.1f MiB the limit left, in %zu arenas\n", made,
           (double)(made * G) / (double)MIB, (double)left / (double)MIB, stats_of(m).arenas);
    CHECK((uint64_t)made * G >= left / 4 * 3);

    /* the refusal changed nothing but the count of refused calls */
    hostmem_stats s0 = stats_of(m);
    void *p;
    CHECK_HR(reserve(m, G, 0, &p), E_OUTOFMEMORY);
    CHECK_HR(reserve(m, 16 * MIB, 0, &p), E_OUTOFMEMORY);
    CHECK_HR(reserve(m, 512 * MIB, 0, &p), E_OUTOFMEMORY); /* standalone */
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &p), E_OUTOFMEMORY);
    hostmem_stats s1 = stats_of(m);
    CHECK(same_books(&s0, &s1));
    CHECK(s1.os_refusals > s0.os_refusals);
    /* hostmem_validate needs a few pages of its own for its lists (at a full
     * limit it answers E_FAIL, "cannot check"): give it room for the check */
    REQUIRE(test_limit_address_space(LIMIT_200MB + VALIDATE_ROOM) == 0);
    CHECK_HR(validate(m), S_OK);
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);

    /* a granule given back is taken again without the kernel */
    if (made) {
        CHECK_HR(release(m, filled[made - 1]), S_OK);
        CHECK_HR(reserve(m, G, 0, &filled[made - 1]), S_OK);
    }
    for (size_t i = 0; i < made; i++)
        if (filled[i] && release(m, filled[i]) != S_OK) {
            TEST_FAIL_AT("release %zu failed", i);
            break;
        }
    /* the runtime's protocol for address space: NeedsVirtualAddressSpace gives
     * back the empty arenas the manager caches, and a large reservation fits */
    CHECK_HR(IHostMemoryManager_NeedsVirtualAddressSpace(m, NULL, 100 * MIB), S_OK);
    CHECK_EQ(stats_of(m).arenas, 0);
    CHECK_HR(reserve(m, 100 * MIB, 0, &p), S_OK);
    if (p)
        CHECK_HR(release(m, p), S_OK);
    CHECK_HR(validate(m), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: reservations fill what the limit leaves, then the refusal
 * is E_OUTOFMEMORY with nothing changed (hostmem.h: a failed call changes nothing). */
TEST(reservations_fill_what_the_limit_leaves_then_refusals_change_nothing)
{
    test_in_child(fill_body, "filling 200 MB");
}

static void larger_body(void)
{
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);
    /* larger than the largest arena: a standalone mapping */
    hostmem_config c = {sizeof c};
    c.arena_size = 16 * MIB;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *p;
    CHECK_HR(reserve(m, 64 * MIB, 0, &p), S_OK);
    if (p) {
        CHECK_EQ(stats_of(m).arenas, 0); /* a mapping of its own, not an arena */
        CHECK_HR(commit(m, (char *)p + 64 * MIB - P, P), S_OK);
        ((char *)p)[64 * MIB - 1] = 1;
        CHECK_HR(validate(m), S_OK);
        CHECK_HR(release(m, p), S_OK);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);

    /* larger than the arena the limit allows (a quarter of what is left): an
     * arena that holds it; larger than what is left: refused, nothing changed */
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    CHECK_HR(reserve(m, 100 * MIB, 0, &p), S_OK);
    if (p) {
        CHECK_HR(commit(m, (char *)p + 100 * MIB - P, P), S_OK);
        ((char *)p)[100 * MIB - 1] = 1;
    }
    hostmem_stats s0 = stats_of(m);
    void *q;
    CHECK_HR(reserve(m, 150 * MIB, 0, &q), E_OUTOFMEMORY);
    hostmem_stats s1 = stats_of(m);
    CHECK(same_books(&s0, &s1));
    CHECK_HR(validate(m), S_OK);
    if (p)
        CHECK_HR(release(m, p), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: reservations larger than an arena still work under the limit. */
TEST(reservation_larger_than_an_arena_works_under_the_limit)
{
    test_in_child(larger_body, "larger than an arena under 200 MB");
}

#define MANAGERS 48
static IHostMemoryManager *managers[MANAGERS];
static void *managers_first[MANAGERS];

static void managers_body(void)
{
    uint64_t before = test_vm_size();
    REQUIRE(test_limit_address_space(LIMIT_200MB) == 0);
    size_t arena_bytes = 0;
    for (int i = 0; i < MANAGERS; i++) {
        REQUIRE_HR(hostmem_create(NULL, &managers[i]), S_OK);
        CHECK_HR(reserve(managers[i], G, 0, &managers_first[i]), S_OK);
        if (managers_first[i]) {
            CHECK_HR(commit(managers[i], managers_first[i], G), S_OK);
            memset(managers_first[i], i, G);
        }
        arena_bytes += stats_of(managers[i]).arena_bytes;
    }
    printf("%d managers under 200 MB: %.1f MiB of arenas, %.1f MiB of the limit left\n", MANAGERS,
           (double)arena_bytes / (double)MIB, (double)(LIMIT_200MB - test_vm_size()) / (double)MIB);
    CHECK(arena_bytes < LIMIT_200MB - before);
    for (int i = 0; i < MANAGERS; i++) {
        if (managers_first[i]) {
            CHECK_EQ(((unsigned char *)managers_first[i])[G - 1], (unsigned char)i);
            CHECK_HR(release(managers[i], managers_first[i]), S_OK);
        }
        CHECK_HR(validate(managers[i]), S_OK);
        CHECK_EQ(IHostMemoryManager_Release(managers[i]), 0);
    }
}

/* Issue 13 item 3: the managers of one process share what the limit leaves -
 * the first ones do not take the room of the others. */
TEST(managers_share_what_the_limit_leaves)
{
    test_in_child(managers_body, "48 managers under 200 MB");
}

/* A manager with one committed, written reservation, then the limit lowered to
 * what the process has mapped and VALIDATE_ROOM: none of the requests below fits. */
static IHostMemoryManager *lowered(void **first)
{
    IHostMemoryManager *m;
    if (hostmem_create(NULL, &m) != S_OK)
        return NULL;
    if (reserve(m, 4 * G, 0, first) != S_OK || commit(m, *first, 2 * P) != S_OK) {
        IHostMemoryManager_Release(m);
        return NULL;
    }
    memset(*first, 0x5A, 2 * P);
    if (test_limit_address_space(test_vm_size() + VALIDATE_ROOM) != 0) {
        IHostMemoryManager_Release(m);
        return NULL;
    }
    return m;
}

static void lower_body(void)
{
    void *first;
    IHostMemoryManager *m = lowered(&first);
    REQUIRE(m);
    /* the arena's free granules need no system call */
    void *p;
    CHECK_HR(reserve(m, G, 0, &p), S_OK);
    if (p)
        CHECK_HR(release(m, p), S_OK);
    /* commits change protections, never the amount of address space */
    CHECK_HR(commit(m, (char *)first + 2 * P, P), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, (char *)first + 2 * P, P, MEM_DECOMMIT), S_OK);

    hostmem_stats s0 = stats_of(m);
    MEMORY_BASIC_INFORMATION before, after;
    SIZE_T n;
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, first, &before, sizeof before, &n), S_OK);
    /* more than a quarter arena: a mapping of its own, whatever the arena holds */
    CHECK_HR(reserve(m, 300 * MIB, 0, &p), E_OUTOFMEMORY);
    CHECK_HR(reserve(m, 512 * MIB, 0, &p), E_OUTOFMEMORY);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 300 * MIB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                             eTaskCritical, &p),
             E_OUTOFMEMORY);
    hostmem_stats s1 = stats_of(m);
    CHECK(same_books(&s0, &s1));
    CHECK(s1.os_refusals > s0.os_refusals);
    CHECK_HR(IHostMemoryManager_VirtualQuery(m, first, &after, sizeof after, &n), S_OK);
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    CHECK_EQ(((unsigned char *)first)[2 * P - 1], 0x5A);
    CHECK_HR(validate(m), S_OK);
    /* what still fits gets an arena of a quarter of the room left, at most
     * (top-down reservations have arenas of their own) */
    hostmem_stats last = stats_of(m);
    uint64_t room = VALIDATE_ROOM;
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &p), S_OK);
    CHECK(arena_added(m, &last) <= room / 4);
    if (p)
        CHECK_HR(release(m, p), S_OK);
    CHECK_HR(release(m, first), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: the limit lowered mid-run, below what a new arena needs:
 * refusals are E_OUTOFMEMORY with nothing changed, the manager validates. */
TEST(lowering_the_limit_mid_run_refuses_cleanly)
{
    test_in_child(lower_body, "limit lowered mid-run");
}

static void raise_body(void)
{
    void *first;
    IHostMemoryManager *m = lowered(&first);
    REQUIRE(m);
    void *p;
    CHECK_HR(reserve(m, 300 * MIB, 0, &p), E_OUTOFMEMORY);
    size_t reserved = stats_of(m).reserved_bytes;
    REQUIRE(test_limit_address_space(UINT64_MAX) == 0);
    /* the limit is read at every new mapping: the same call now succeeds */
    CHECK_HR(reserve(m, 300 * MIB, 0, &p), S_OK);
    CHECK(stats_of(m).reserved_bytes >= reserved + 300 * MIB);
    if (p) {
        CHECK_HR(commit(m, p, P), S_OK);
        CHECK_HR(validate(m), S_OK);
        CHECK_HR(release(m, p), S_OK);
    }
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &p), S_OK);
    if (p)
        CHECK_HR(release(m, p), S_OK);
    CHECK_EQ(((unsigned char *)first)[0], 0x5A);
    CHECK_HR(release(m, first), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Issue 13 item 3: the limit raised again: what was refused now works. */
TEST(raising_the_limit_again_lets_reservations_through)
{
    test_in_child(raise_body, "limit raised again");
}

/* ---- the sizing rule through an injected seam (no limit is imposed) ----------------------- */

static uint64_t fake_limit = UINT64_MAX; /* what the seam reports */
static uint64_t fake_vm_size;            /* the VmSize /proc/self/status reports */
static size_t refuse_above;              /* map refuses (ENOMEM) larger sizes; 0 = never */
static int refused_maps;

static int fake_limit_op(uint64_t *bytes)
{
    *bytes = fake_limit;
    return 0;
}
static int fake_read_file(const char *path, char *buffer, size_t size, size_t *length)
{
    if (strcmp(path, "/proc/self/status"))
        return hostmem_os_linux.read_file(path, buffer, size, length);
    int n = snprintf(buffer, size, "Name:\ttest_limits\nUmask:\t0022\nVmPeak:\t %8llu kB\nVmSize:\t %8llu kB\n",
                     (unsigned long long)(fake_vm_size / KIB), (unsigned long long)(fake_vm_size / KIB));
    *length = (size_t)n;
    return 0;
}
static int fake_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    if (refuse_above && size > refuse_above) {
        refused_maps++;
        return ENOMEM;
    }
    return hostmem_os_linux.map(hint, size, prot, fixed, out);
}
static struct hostmem_os_ops fake_seam;

static void use_fake_seam(void)
{
    fake_seam = hostmem_os_linux;
    fake_seam.map = fake_map;
    fake_seam.read_file = fake_read_file;
    fake_seam.address_limit = fake_limit_op;
    fake_limit = UINT64_MAX;
    refuse_above = 0;
    refused_maps = 0;
    hostmem_os = &fake_seam;
}

/* docs/design.md, Arenas: the first arena 64 MiB, each next one twice the last,
 * up to arena_size (1 GiB); a request of more than a quarter of that asks for more. */
TEST(arenas_grow_from_64m_doubling_to_arena_size)
{
    use_fake_seam();
    fake_limit = (uint64_t)1 << 40; /* a limit in force, far away: arenas grow (none: whole ones) */
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    static const uint64_t expected[] = {64 * MIB, 128 * MIB, 256 * MIB, 512 * MIB, GIB, GIB};
    static void *kept[256];
    size_t n = 0, arenas = 0;
    hostmem_stats last = stats_of(m);
    while (arenas < sizeof expected / sizeof *expected && n < 256) {
        if (reserve(m, 16 * MIB, 0, &kept[n]) != S_OK) {
            TEST_FAIL_AT("reservation %zu of 16 MiB refused", n);
            break;
        }
        n++;
        size_t added = arena_added(m, &last);
        if (added) {
            CHECK_EQ(added, expected[arenas]);
            arenas++;
        }
    }
    CHECK_EQ(arenas, sizeof expected / sizeof *expected);
    for (size_t i = 0; i < n; i++)
        CHECK_HR(release(m, kept[i]), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);

    /* 100 MiB is more than a quarter of 64, 128 and 256 MiB */
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    last = stats_of(m);
    void *p;
    CHECK_HR(reserve(m, 100 * MIB, 0, &p), S_OK);
    CHECK_EQ(arena_added(m, &last), 512 * MIB);
    CHECK_HR(release(m, p), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);

    /* a configured arena_size below 64 MiB is the first arena's size too */
    hostmem_config c = {sizeof c};
    c.arena_size = 8 * MIB;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    last = stats_of(m);
    CHECK_HR(reserve(m, G, 0, &p), S_OK);
    CHECK_EQ(arena_added(m, &last), 8 * MIB);
    CHECK_HR(release(m, p), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    hostmem_os = &hostmem_os_linux;
}

/* Issue 13 item 3: under RLIMIT_AS an arena takes at most a quarter of what the
 * limit leaves, never less than the request; the limit is read at every new
 * arena, so a limit changed mid-run is followed. */
TEST(arena_takes_a_quarter_of_what_the_limit_leaves)
{
    use_fake_seam();
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK); /* before the limit: whole arenas asked */
    fake_limit = LIMIT_200MB;
    fake_vm_size = 20000 * KIB;
    hostmem_stats last = stats_of(m);
    void *a, *b, *c, *d;
    CHECK_HR(reserve(m, G, 0, &a), S_OK);
    uint64_t quarter = (LIMIT_200MB - 20000 * KIB) / 4;
    CHECK_EQ(arena_added(m, &last), quarter / G * G);

    /* almost nothing left: an arena of just the request (top-down reservations
     * have arenas of their own, so each of these makes one) */
    fake_vm_size = LIMIT_200MB - 100 * KIB;
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &b), S_OK);
    CHECK_EQ(arena_added(m, &last), G);
    CHECK_HR(reserve(m, 3 * G, MEM_TOP_DOWN, &c), S_OK);
    CHECK_EQ(arena_added(m, &last), 3 * G);

    /* the limit lifted: a manager made without one asks for whole arenas again */
    fake_limit = UINT64_MAX;
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &d), S_OK);
    CHECK_EQ(arena_added(m, &last), GIB);
    CHECK_EQ(refused_maps, 0);
    CHECK_HR(release(m, a), S_OK);
    CHECK_HR(release(m, b), S_OK);
    CHECK_HR(release(m, c), S_OK);
    CHECK_HR(release(m, d), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    hostmem_os = &hostmem_os_linux;
}

/* Issue 13 item 3: a manager made under a limit asks for a first arena of a
 * 64th of it (3 MiB under 200 MB), so that many managers share the room. */
TEST(first_arena_of_a_manager_made_under_a_limit_is_a_64th_of_it)
{
    use_fake_seam();
    fake_limit = LIMIT_200MB;
    fake_vm_size = 20000 * KIB;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    hostmem_stats last = stats_of(m);
    void *a, *b;
    CHECK_HR(reserve(m, G, 0, &a), S_OK);
    CHECK_EQ(arena_added(m, &last), LIMIT_200MB / 64 / G * G);
    /* growth doubles from there (a top-down reservation makes an arena of its own) */
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &b), S_OK);
    CHECK_EQ(arena_added(m, &last), 2 * (LIMIT_200MB / 64 / G * G));
    CHECK_HR(release(m, a), S_OK);
    CHECK_HR(release(m, b), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    hostmem_os = &hostmem_os_linux;
}

/* Issue 13 item 3: when the kernel refuses an arena (ENOMEM), the size halves
 * down to the request; every refused call is counted (os_refusals) and a
 * request that even its floor cannot hold is refused with nothing changed. */
TEST(kernel_refusal_halves_the_arena_down_to_the_request)
{
    use_fake_seam();
    fake_limit = (uint64_t)1 << 40; /* in force, far away: arenas start at 64 MiB */
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    refuse_above = 10 * MIB;
    hostmem_stats last = stats_of(m);
    void *p, *q;
    CHECK_HR(reserve(m, G, 0, &p), S_OK);
    CHECK_EQ(arena_added(m, &last), 8 * MIB); /* 64, 32 and 16 MiB refused */
    CHECK_EQ(refused_maps, 3);
    CHECK_EQ(last.os_refusals, 3);

    /* 12 MiB: every size from the 64 MiB it asks for down to 12 MiB is refused */
    refused_maps = 0;
    CHECK_HR(reserve(m, 12 * MIB, 0, &q), E_OUTOFMEMORY);
    hostmem_stats now = stats_of(m);
    CHECK(same_books(&last, &now));
    CHECK_EQ(now.os_refusals - last.os_refusals, (size_t)refused_maps);
    CHECK_EQ(refused_maps, 4);

    /* growth restarts from what the kernel gave: 16 MiB next, not 64 again */
    refuse_above = 0;
    refused_maps = 0;
    last = now;
    CHECK_HR(reserve(m, G, MEM_TOP_DOWN, &q), S_OK);
    CHECK_EQ(arena_added(m, &last), 16 * MIB);
    CHECK_HR(release(m, p), S_OK);
    CHECK_HR(release(m, q), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    hostmem_os = &hostmem_os_linux;
}

int main(void)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    /* these run in children under RLIMIT_AS */
#define RUN_UNDER_LIMIT(name)                                                                                \
    do {                                                                                                     \
        if (under_sanitizer)                                                                                 \
            SKIP(name, "a sanitizer's shadow memory (terabytes of address space) cannot live under a small " \
                       "RLIMIT_AS");                                                                         \
        else                                                                                                 \
            RUN(name);                                                                                       \
    } while (0)
    RUN_UNDER_LIMIT(reserve_of_64k_works_under_a_200mb_address_limit);
    RUN_UNDER_LIMIT(heap_works_under_a_200mb_address_limit);
    RUN_UNDER_LIMIT(reservations_fill_what_the_limit_leaves_then_refusals_change_nothing);
    RUN_UNDER_LIMIT(reservation_larger_than_an_arena_works_under_the_limit);
    RUN_UNDER_LIMIT(managers_share_what_the_limit_leaves);
    RUN_UNDER_LIMIT(lowering_the_limit_mid_run_refuses_cleanly);
    RUN_UNDER_LIMIT(raising_the_limit_again_lets_reservations_through);
    RUN(arenas_grow_from_64m_doubling_to_arena_size);
    RUN(arena_takes_a_quarter_of_what_the_limit_leaves);
    RUN(first_arena_of_a_manager_made_under_a_limit_is_a_64th_of_it);
    RUN(kernel_refusal_halves_the_arena_down_to_the_request);
    return TEST_SUMMARY("test_limits");
}
