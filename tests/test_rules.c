/*
 * test_rules.c - one test per rule of the contract (SPEC sections 3-6) for
 * IHostMemoryManager::VirtualAlloc / VirtualFree / VirtualQuery /
 * VirtualProtect, plus IUnknown, through the public header only.
 *
 * Naming: sN_<method>_<rule>, N = the SPEC section. Where a rule is not
 * stated by the SPEC but by real Windows, the comment above the test cites
 * the conformance test that runs against Windows:
 *   [wine-k32]  wine-mirror/wine dlls/kernel32/tests/virtual.c
 *               (same file: reactos/reactos modules/rostests/winetests/kernel32/virtual.c)
 *   [wine-nt]   wine-mirror/wine dlls/ntdll/tests/virtual.c
 *   [ros-alloc] reactos/reactos modules/rostests/apitests/ntdll/NtAllocateVirtualMemory.c
 *   [ros-free]  reactos/reactos modules/rostests/apitests/ntdll/NtFreeVirtualMemory.c
 *   [ros-prot]  reactos/reactos modules/rostests/apitests/ntdll/NtProtectVirtualMemory.c
 * (NT statuses map to Win32 errors as Windows maps them:
 *  STATUS_CONFLICTING_ADDRESSES / STATUS_FREE_VM_NOT_AT_BASE -> ERROR_INVALID_ADDRESS,
 *  STATUS_UNABLE_TO_FREE_VM -> ERROR_INVALID_PARAMETER.)
 *
 * Hardware protection is checked in forked children (the child touches the
 * page and must die by SIGSEGV); the parent installs no signal handler.
 * Nothing here sleeps or measures time.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostmem.h"
#include "test.h"

_Static_assert(sizeof(MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION is 48 bytes on LP64");

#define HR_INVALID_ADDRESS HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define HR_BAD_LENGTH HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)

static IHostMemoryManager *g_m;  /* the manager under test */
static IHostMemoryManager *g_m2; /* a second manager ("another manager's memory") */
static size_t P;                 /* page size */
static size_t G;                 /* allocation granularity */

static unsigned char g_static_block[4 * 65536];
static int g_static_var = 42;

/* ---- thin wrappers -------------------------------------------------------- */

static HRESULT va_m(IHostMemoryManager *m, void *addr, size_t size, DWORD type, DWORD prot, void **out)
{
    return m->lpVtbl->VirtualAlloc(m, addr, size, type, prot, eTaskCritical, out);
}
static HRESULT va(void *addr, size_t size, DWORD type, DWORD prot, void **out)
{
    return va_m(g_m, addr, size, type, prot, out);
}
static HRESULT vf_m(IHostMemoryManager *m, void *addr, size_t size, DWORD type)
{
    return m->lpVtbl->VirtualFree(m, addr, size, type);
}
static HRESULT vf(void *addr, size_t size, DWORD type)
{
    return vf_m(g_m, addr, size, type);
}
static HRESULT vq_m(IHostMemoryManager *m, void *addr, MEMORY_BASIC_INFORMATION *mbi)
{
    SIZE_T got = 0;
    memset(mbi, 0xAB, sizeof *mbi);
    HRESULT hr = m->lpVtbl->VirtualQuery(m, addr, mbi, sizeof *mbi, &got);
    if (hr == S_OK && got != sizeof *mbi) {
        fprintf(stderr, "  note: VirtualQuery wrote %zu bytes\n", (size_t)got);
        return E_FAIL; /* makes the caller's CHECK_HR fail visibly */
    }
    return hr;
}
static HRESULT vq(void *addr, MEMORY_BASIC_INFORMATION *mbi)
{
    return vq_m(g_m, addr, mbi);
}
static HRESULT vp(void *addr, size_t size, DWORD prot, DWORD *old)
{
    return g_m->lpVtbl->VirtualProtect(g_m, addr, size, prot, old);
}

static char *page_of(const void *p)
{
    return (char *)((uintptr_t)p & ~(uintptr_t)(P - 1));
}
static size_t page_up(size_t n)
{
    return (n + P - 1) & ~(P - 1);
}

/* Checks every field of a VirtualQuery answer for host memory. */
#define CHECK_REGION(addr, base, abase, aprot, rsize, state, prot, type)        \
    do {                                                                       \
        MEMORY_BASIC_INFORMATION r_;                                           \
        HRESULT rh_ = vq((void *)(addr), &r_);                                 \
        CHECK_HR(rh_, S_OK);                                                   \
        if (rh_ == S_OK) {                                                     \
            CHECK_EQ((uintptr_t)r_.BaseAddress, (uintptr_t)(base));            \
            CHECK_EQ((uintptr_t)r_.AllocationBase, (uintptr_t)(abase));        \
            CHECK_EQ(r_.AllocationProtect, (aprot));                           \
            CHECK_EQ(r_.RegionSize, (rsize));                                  \
            CHECK_EQ(r_.State, (state));                                       \
            CHECK_EQ(r_.Protect, (prot));                                      \
            CHECK_EQ(r_.Type, (type));                                         \
        }                                                                      \
    } while (0)

/* ---- "nothing changed" snapshots ------------------------------------------- */

#define SNAP_MAX 160
typedef struct {
    char *base;
    size_t pages;
    HRESULT hr[SNAP_MAX];
    MEMORY_BASIC_INFORMATION mbi[SNAP_MAX];
    uint64_t sum[SNAP_MAX];
} snap_t;

static int prot_readable(DWORD prot)
{
    if (prot & PAGE_GUARD)
        return 0;
    switch (prot & 0xFF) {
    case PAGE_READONLY:
    case PAGE_READWRITE:
    case PAGE_EXECUTE_READ:
    case PAGE_EXECUTE_READWRITE:
        return 1;
    default:
        return 0;
    }
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Records VirtualQuery of every page of [base, base+bytes) and the contents
 * of every committed readable page. */
static void snap_take(snap_t *s, void *base, size_t bytes)
{
    s->base = page_of(base);
    s->pages = page_up(bytes) / P;
    if (s->pages > SNAP_MAX)
        s->pages = SNAP_MAX;
    for (size_t i = 0; i < s->pages; i++) {
        char *pg = s->base + i * P;
        s->hr[i] = vq(pg, &s->mbi[i]);
        s->sum[i] = 0;
        if (s->hr[i] == S_OK && s->mbi[i].State == MEM_COMMIT && prot_readable(s->mbi[i].Protect))
            s->sum[i] = fnv((const unsigned char *)pg, P);
    }
}

static int snap_same(const snap_t *a)
{
    snap_t *b = malloc(sizeof *b);
    int same = 1;
    if (!b)
        return 0;
    snap_take(b, a->base, a->pages * P);
    for (size_t i = 0; i < a->pages; i++) {
        if (a->hr[i] != b->hr[i] || memcmp(&a->mbi[i], &b->mbi[i], sizeof a->mbi[i]) != 0) {
            fprintf(stderr,
                    "  changed: page %p: state %#x->%#x protect %#x->%#x region %#zx->%#zx\n",
                    (void *)(a->base + i * P), a->mbi[i].State, b->mbi[i].State,
                    a->mbi[i].Protect, b->mbi[i].Protect, (size_t)a->mbi[i].RegionSize,
                    (size_t)b->mbi[i].RegionSize);
            same = 0;
            break;
        }
        if (a->sum[i] != b->sum[i]) {
            fprintf(stderr, "  changed: contents of page %p\n", (void *)(a->base + i * P));
            same = 0;
            break;
        }
    }
    free(b);
    return same;
}

#define CHECK_UNCHANGED(s) CHECK(snap_same(s))

static void fill(void *p, size_t n, unsigned seed)
{
    unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        c[i] = (unsigned char)(seed + i * 7u + (i >> 8));
}
static int filled(const void *p, size_t n, unsigned seed)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)(seed + i * 7u + (i >> 8)))
            return 0;
    return 1;
}
static int all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return 0;
    return 1;
}

/* An address where nothing is mapped, with mappings on both sides: the
 * middle page of three mapped pages, unmapped again (hole_release unmaps the
 * two neighbours). */
static char *hole_make(void)
{
    char *m = mmap(NULL, 3 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    munmap(m + P, P);
    return m + P;
}
static void hole_release(char *hole)
{
    munmap(hole - P, P);
    munmap(hole + P, P);
}

/* Runs a read or a write of *addr in a child process. Returns 0 when the
 * child exited normally, the signal number when it was killed, -1 otherwise. */
static int child_touch(void *addr, int write)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        /* Die by the signal itself, even where a sanitizer installed a handler. */
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        volatile unsigned char *p = addr;
        if (write)
            *p = 0x5A;
        else {
            volatile unsigned char sink = *p;
            (void)sink;
        }
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

/* Reserves `size` bytes at NULL, or fails the test. */
#define RESERVE(var, size, prot)                                                   \
    void *var = NULL;                                                              \
    REQUIRE_HR(va(NULL, (size), MEM_RESERVE, (prot), &var), S_OK);                  \
    REQUIRE(var != NULL)
#define COMMIT_NEW(var, size, prot)                                                \
    void *var = NULL;                                                              \
    REQUIRE_HR(va(NULL, (size), MEM_COMMIT | MEM_RESERVE, (prot), &var), S_OK);    \
    REQUIRE(var != NULL)
#define RELEASE(p) CHECK_HR(vf((p), 0, MEM_RELEASE), S_OK)

/* =========================================================================
 * IUnknown (SPEC §1)
 * ========================================================================= */

TEST(s1_queryinterface_iunknown_and_own_iid_addref)
{
    IHostMemoryManager *m = NULL;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    REQUIRE(m != NULL);
    /* a fresh manager holds one reference */
    CHECK_EQ(m->lpVtbl->AddRef(m), 2);
    CHECK_EQ(m->lpVtbl->Release(m), 1);

    void *p = (void *)0x1;
    CHECK_HR(m->lpVtbl->QueryInterface(m, &IID_IUnknown, &p), S_OK);
    CHECK(p == (void *)m);
    CHECK_EQ(m->lpVtbl->AddRef(m), 3); /* QueryInterface AddRef'd */
    CHECK_EQ(m->lpVtbl->Release(m), 2);

    p = (void *)0x1;
    CHECK_HR(m->lpVtbl->QueryInterface(m, &IID_IHostMemoryManager, &p), S_OK);
    CHECK(p == (void *)m);
    CHECK_EQ(m->lpVtbl->AddRef(m), 4);
    CHECK_EQ(m->lpVtbl->Release(m), 3);

    CHECK_EQ(m->lpVtbl->Release(m), 2);
    CHECK_EQ(m->lpVtbl->Release(m), 1);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

TEST(s1_queryinterface_unknown_iid_is_enointerface_and_nulls_ppv)
{
    static const IID other = {0x12345678, 0x1234, 0x5678, {1, 2, 3, 4, 5, 6, 7, 8}};
    void *p = (void *)0x1;
    CHECK_HR(g_m->lpVtbl->QueryInterface(g_m, &IID_IHostMalloc, &p), E_NOINTERFACE);
    CHECK(p == NULL);
    p = (void *)0x1;
    CHECK_HR(g_m->lpVtbl->QueryInterface(g_m, &IID_ICLRMemoryNotificationCallback, &p),
             E_NOINTERFACE);
    CHECK(p == NULL);
    p = (void *)0x1;
    CHECK_HR(g_m->lpVtbl->QueryInterface(g_m, &other, &p), E_NOINTERFACE);
    CHECK(p == NULL);
    /* the reference count did not move */
    ULONG a = g_m->lpVtbl->AddRef(g_m);
    ULONG b = g_m->lpVtbl->Release(g_m);
    CHECK_EQ(a, b + 1);
}

/* Release of the last reference returns every reservation to the OS. */
TEST(s1_release_last_reference_returns_memory)
{
    IHostMemoryManager *m = NULL;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    void *r = NULL, *c = NULL;
    REQUIRE_HR(va_m(m, NULL, 4 * G, MEM_RESERVE, PAGE_NOACCESS, &r), S_OK);
    REQUIRE_HR(va_m(m, NULL, G, MEM_COMMIT, PAGE_READWRITE, &c), S_OK);
    memset(c, 0x77, G);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq_m(g_m2, r, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK_HR(vq_m(g_m2, c, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK_EQ(mbi.Type, 0);
}

/* =========================================================================
 * §3 VirtualAlloc
 * ========================================================================= */

/* Rule: check order is type, then protection, then size, then address. */
TEST(s3_virtualalloc_checkorder_type_protection_size_address)
{
    RESERVE(b, G, PAGE_NOACCESS);
    snap_t s;
    snap_take(&s, b, G);
    void *out = (void *)0x1;
    /* bad type + bad protection */
    CHECK_HR(va(NULL, P, 0, 0, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, P, MEM_DECOMMIT, PAGE_WRITECOPY, &out), E_INVALIDARG);
    /* bad type before a size that cannot be reserved (would be E_OUTOFMEMORY) */
    CHECK_HR(va(NULL, SIZE_MAX, 0x80000000u | MEM_RESERVE, PAGE_READWRITE, &out), E_INVALIDARG);
    /* bad protection before a size that cannot be reserved */
    CHECK_HR(va(NULL, SIZE_MAX, MEM_RESERVE, PAGE_READONLY | PAGE_READWRITE, &out), E_INVALIDARG);
    /* bad type before a conflicting address (would be ERROR_INVALID_ADDRESS) */
    CHECK_HR(va(b, P, MEM_RESERVE | MEM_PHYSICAL, PAGE_READWRITE, &out), E_INVALIDARG);
    /* bad protection before a conflicting address */
    CHECK_HR(va(b, P, MEM_RESERVE, PAGE_NOACCESS | PAGE_GUARD, &out), E_INVALIDARG);
    /* size 0 before a conflicting address */
    CHECK_HR(va(b, 0, MEM_RESERVE, PAGE_READWRITE, &out), E_INVALIDARG);
    /* size 0 before an address outside any reservation (commit) */
    char *hole = hole_make();
    REQUIRE(hole != NULL);
    CHECK_HR(va(hole, 0, MEM_COMMIT, PAGE_READWRITE, &out), E_INVALIDARG);
    hole_release(hole);
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* Rule: every allocation type other than COMMIT, RESERVE, COMMIT|RESERVE,
 * RESET, RESET_UNDO (+TOP_DOWN, +LARGE_PAGES with reserve+commit) is
 * E_INVALIDARG: 0, MEM_DECOMMIT, unknown bits, MEM_WRITE_WATCH without MEM_RESERVE
 * or with large pages (issue 14: it is chosen at reservation), MEM_PHYSICAL. */
TEST(s3_virtualalloc_invalid_types_are_invalidarg)
{
    static const DWORD bad[] = {
        0,
        MEM_DECOMMIT,
        MEM_RELEASE,
        MEM_FREE,
        MEM_DECOMMIT | MEM_COMMIT,
        MEM_RELEASE | MEM_RESERVE,
        MEM_WRITE_WATCH,
        MEM_WRITE_WATCH | MEM_COMMIT,
        MEM_WRITE_WATCH | MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES,
        MEM_PHYSICAL,
        MEM_PHYSICAL | MEM_RESERVE,
        MEM_TOP_DOWN,
        MEM_LARGE_PAGES,
        MEM_LARGE_PAGES | MEM_RESERVE, /* large pages: reserve+commit only */
        MEM_LARGE_PAGES | MEM_COMMIT,
        MEM_RESET | MEM_COMMIT, /* MEM_RESET alone */
        MEM_RESET | MEM_RESERVE,
        MEM_RESET_UNDO | MEM_COMMIT,
        MEM_RESET | MEM_RESET_UNDO,
        MEM_RESERVE_PLACEHOLDER | MEM_RESERVE,
        MEM_COALESCE_PLACEHOLDERS | MEM_RESERVE,
        MEM_PRESERVE_PLACEHOLDER | MEM_COMMIT,
        0x80000000u | MEM_COMMIT,
        0x00000100u | MEM_RESERVE,
        0x40000000u | MEM_COMMIT | MEM_RESERVE,
        0x00800000u | MEM_RESERVE,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *out = (void *)0x1;
        HRESULT hr = va(NULL, P, bad[i], PAGE_READWRITE, &out);
        if (hr != E_INVALIDARG)
            fprintf(stderr, "  type %#x\n", bad[i]);
        CHECK_HR(hr, E_INVALIDARG);
        if (hr == S_OK && out)
            vf(out, 0, MEM_RELEASE);
    }
}

/* Rule: protection is exactly one base value among NOACCESS, READONLY,
 * READWRITE, EXECUTE, EXECUTE_READ, EXECUTE_READWRITE, optionally with one of
 * GUARD / NOCACHE / WRITECOMBINE (not with NOACCESS); WRITECOPY variants, 0
 * and two bases are E_INVALIDARG. (Windows agrees for 0, two bases and the
 * WRITECOPY variants: [wine-k32] test_VirtualAlloc_protection.) */
TEST(s3_virtualalloc_invalid_protections_are_invalidarg)
{
    static const DWORD bases[] = {PAGE_NOACCESS,     PAGE_READONLY,        PAGE_READWRITE,
                                  PAGE_EXECUTE,      PAGE_EXECUTE_READ,    PAGE_EXECUTE_READWRITE};
    static const DWORD bad[] = {
        0,
        PAGE_WRITECOPY,
        PAGE_EXECUTE_WRITECOPY,
        PAGE_WRITECOPY | PAGE_READWRITE,
        PAGE_EXECUTE_WRITECOPY | PAGE_EXECUTE_READ,
        PAGE_WRITECOPY | PAGE_GUARD,
        PAGE_NOACCESS | PAGE_GUARD,
        PAGE_NOACCESS | PAGE_NOCACHE,
        PAGE_NOACCESS | PAGE_WRITECOMBINE,
        PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,
        PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
        PAGE_READONLY | PAGE_GUARD | PAGE_WRITECOMBINE,
        PAGE_GUARD,
        PAGE_NOCACHE,
        PAGE_WRITECOMBINE,
        PAGE_READWRITE | 0x800,
    };
    static const DWORD types[] = {MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE};
    for (size_t t = 0; t < 3; t++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            void *out = (void *)0x1;
            HRESULT hr = va(NULL, P, types[t], bad[i], &out);
            if (hr != E_INVALIDARG)
                fprintf(stderr, "  type %#x protect %#x\n", types[t], bad[i]);
            CHECK_HR(hr, E_INVALIDARG);
            if (hr == S_OK && out)
                vf(out, 0, MEM_RELEASE);
        }
        /* every pair of two base values */
        for (size_t i = 0; i < 6; i++)
            for (size_t j = i + 1; j < 6; j++) {
                void *out = (void *)0x1;
                DWORD prot = bases[i] | bases[j];
                HRESULT hr = va(NULL, P, types[t], prot, &out);
                if (hr != E_INVALIDARG)
                    fprintf(stderr, "  type %#x protect %#x\n", types[t], prot);
                CHECK_HR(hr, E_INVALIDARG);
                if (hr == S_OK && out)
                    vf(out, 0, MEM_RELEASE);
            }
    }
}

/* Rule (positive side of the protection rule): each base alone and each
 * non-NOACCESS base with one modifier is accepted, and VirtualQuery reports
 * it as Protect and AllocationProtect. [wine-k32] test_VirtualAlloc_protection
 * (Protect == AllocationProtect == the value given, RegionSize one page). */
TEST(s3_virtualalloc_valid_protections_accepted_and_reported)
{
    static const DWORD bases[] = {PAGE_NOACCESS,     PAGE_READONLY,        PAGE_READWRITE,
                                  PAGE_EXECUTE,      PAGE_EXECUTE_READ,    PAGE_EXECUTE_READWRITE};
    static const DWORD mods[] = {0, PAGE_GUARD, PAGE_NOCACHE, PAGE_WRITECOMBINE};
    for (size_t i = 0; i < 6; i++)
        for (size_t j = 0; j < 4; j++) {
            DWORD prot = bases[i] | mods[j];
            if (bases[i] == PAGE_NOACCESS && mods[j])
                continue;
            void *p = NULL;
            HRESULT hr = va(NULL, P, MEM_COMMIT, prot, &p);
            if (hr != S_OK)
                fprintf(stderr, "  protect %#x\n", prot);
            CHECK_HR(hr, S_OK);
            if (hr != S_OK || !p)
                continue;
            CHECK_REGION(p, p, p, prot, P, MEM_COMMIT, prot, MEM_PRIVATE);
            RELEASE(p);
        }
}

/* Rule: size 0 -> E_INVALIDARG (every allocation type). [wine-k32] test_VirtualAlloc
 * (VirtualAlloc(0, 0, MEM_RESERVE, ...) fails with ERROR_INVALID_PARAMETER). */
TEST(s3_virtualalloc_size_zero_is_invalidarg)
{
    COMMIT_NEW(b, G, PAGE_READWRITE);
    fill(b, G, 3);
    snap_t s;
    snap_take(&s, b, G);
    void *out = (void *)0x1;
    CHECK_HR(va(NULL, 0, MEM_RESERVE, PAGE_NOACCESS, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, 0, MEM_COMMIT, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, 0, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(b, 0, MEM_COMMIT, PAGE_READONLY, &out), E_INVALIDARG);
    CHECK_HR(va(b, 0, MEM_RESET, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* ---- large pages (contract.md: MEM_LARGE_PAGES) ---------------------------------------------- */
static size_t meminfo_kib(const char *field)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t v = 0, n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':')
            v = (size_t)strtoull(line + n + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static long pool_get(void)
{
    FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r");
    long v = -1;
    if (f && fscanf(f, "%ld", &v) != 1)
        v = -1;
    if (f)
        fclose(f);
    return v;
}

static int pool_set(long pages)
{
    FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");
    if (!f)
        return 0;
    int ok = fprintf(f, "%ld\n", pages) > 0;
    return fclose(f) == 0 && ok;
}

/* Rule (GetLargePageMinimum, VirtualAlloc with MEM_LARGE_PAGES; Microsoft's "Large-Page
 * Support"): the minimum is the kernel's huge page; large pages only with
 * MEM_RESERVE|MEM_COMMIT and in whole large pages, else E_INVALIDARG; when none can
 * be had, ERROR_NO_SYSTEM_RESOURCES with nothing changed - never small pages instead. */
TEST(s3_virtualalloc_large_pages_whole_or_refused)
{
    size_t L = hostmem_large_page_minimum();
    CHECK_EQ(L, meminfo_kib("Hugepagesize") * 1024);
    if (!L) {
        fprintf(stderr, "  note: the kernel has no huge pages; only the refusal is checked\n");
        void *out;
        CHECK_HR(va(NULL, 2u << 20, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out),
                 HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES));
        return;
    }
    void *out = (void *)0x1;
    CHECK_HR(va(NULL, L, MEM_RESERVE | MEM_LARGE_PAGES, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, L, MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, L + P, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(NULL, L / 2, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va((char *)NULL + L + G, L, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out),
             E_INVALIDARG);
    CHECK(out == NULL);

    /* the pool: as it is, then (as root) grown by what the test needs, and put back */
    long pool = pool_get();
    size_t free_before = meminfo_kib("HugePages_Free");
    hostmem_stats before = stats_of(g_m);
    if (free_before < 2 && pool >= 0 && !pool_set(pool + 2 - (long)free_before))
        pool = -1;
    size_t free_now = meminfo_kib("HugePages_Free");
    if (free_now < 2) {
        /* none to be had: refused, nothing changed, counted as the kernel's refusal */
        CHECK_HR(va(NULL, L, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, &out),
                 HRESULT_FROM_WIN32(ERROR_NO_SYSTEM_RESOURCES));
        hostmem_stats after = stats_of(g_m);
        CHECK_EQ(after.reserved_bytes, before.reserved_bytes);
        CHECK_EQ(after.committed_bytes, before.committed_bytes);
        CHECK_EQ(after.os_refusals, before.os_refusals + 1);
        fprintf(stderr, "  note: no huge pages to be had (pool %ld); only the refusal is checked\n", pool);
        return;
    }
    char *big;
    REQUIRE_HR(va(NULL, 2 * L, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE, (void **)&big), S_OK);
    CHECK_EQ((uintptr_t)big % L, 0);
    /* real huge pages, reserved in the pool at once (Free - Rsvd: what is left to others) */
    CHECK_EQ(meminfo_kib("HugePages_Free") - meminfo_kib("HugePages_Rsvd"), free_now - 2);
    CHECK_EQ(stats_of(g_m).committed_bytes, before.committed_bytes + 2 * L);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(big + L, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE);
    CHECK_EQ((uintptr_t)mbi.AllocationBase, (uintptr_t)big);
    CHECK_EQ(mbi.RegionSize, L);
    memset(big, 0x5A, 2 * L);
    CHECK(big[2 * L - 1] == 0x5A);
    CHECK_EQ(meminfo_kib("HugePages_Free"), free_now - 2); /* touched: in use */
    /* committed for life: no decommit, no reset; protection in whole large pages */
    DWORD old;
    CHECK_HR(vf(big, L, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_HR(va(big, L, MEM_RESET, PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(vp(big, P, PAGE_READONLY, &old), E_INVALIDARG);
    CHECK_HR(vp(big + L, L, PAGE_READONLY, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK(big[L] == 0x5A);
    char why[256];
    CHECK_HR(hostmem_validate(g_m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_HR(vf(big, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(meminfo_kib("HugePages_Free"), free_now);
    CHECK_EQ(stats_of(g_m).committed_bytes, before.committed_bytes);
    if (pool >= 0 && free_before < 2)
        pool_set(pool);
}

/* Rule: a size that cannot be reserved -> E_OUTOFMEMORY. */
TEST(s3_virtualalloc_size_that_cannot_be_reserved_is_outofmemory)
{
    void *out = (void *)0x1;
    CHECK_HR(va(NULL, SIZE_MAX, MEM_RESERVE, PAGE_NOACCESS, &out), E_OUTOFMEMORY);
    CHECK_HR(va(NULL, SIZE_MAX, MEM_COMMIT, PAGE_READWRITE, &out), E_OUTOFMEMORY);
    CHECK_HR(va(NULL, SIZE_MAX - G + 1, MEM_RESERVE, PAGE_NOACCESS, &out), E_OUTOFMEMORY);
    CHECK_HR(va(NULL, (SIZE_T)1 << 62, MEM_RESERVE, PAGE_NOACCESS, &out), E_OUTOFMEMORY);
    /* the manager still works */
    COMMIT_NEW(p, P, PAGE_READWRITE);
    RELEASE(p);
}

/* Rule: E_POINTER for a NULL ppMem. */
TEST(s3_virtualalloc_null_ppmem_is_epointer)
{
    CHECK_HR(va(NULL, P, MEM_COMMIT, PAGE_READWRITE, NULL), E_POINTER);
    CHECK_HR(va(NULL, P, MEM_RESERVE, PAGE_NOACCESS, NULL), E_POINTER);
    RESERVE(b, G, PAGE_NOACCESS);
    snap_t s;
    snap_take(&s, b, G);
    CHECK_HR(va(b, P, MEM_COMMIT, PAGE_READWRITE, NULL), E_POINTER);
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* Rule: a NULL address gives a G-aligned base (G = 64 KiB, or P if larger).
 * [wine-k32] test_VirtualAlloc: "memory returned by VirtualAlloc should be aligned to 64k". */
TEST(s3_virtualalloc_null_reserve_is_granularity_aligned)
{
    CHECK_EQ(hostmem_page_size(), (size_t)sysconf(_SC_PAGESIZE));
    CHECK_EQ(G, P > 65536 ? P : 65536);
    for (int i = 0; i < 8; i++) {
        void *p = NULL;
        DWORD type = (i & 1) ? MEM_RESERVE : (MEM_RESERVE | MEM_COMMIT);
        REQUIRE_HR(va(NULL, P * (size_t)(i + 1), type, PAGE_READWRITE, &p), S_OK);
        CHECK_EQ((uintptr_t)p % G, 0);
        RELEASE(p);
    }
    void *p = NULL;
    REQUIRE_HR(va(NULL, P, MEM_COMMIT, PAGE_READWRITE, &p), S_OK); /* MEM_COMMIT alone, NULL */
    CHECK_EQ((uintptr_t)p % G, 0);
    RELEASE(p);
}

/* Rule: size rounds up to P; the reservation owns [base, base+page_up(size)).
 * [wine-k32] test_VirtualAlloc (reserve 0xFFFC -> RegionSize 0x10000). */
TEST(s3_virtualalloc_size_rounds_up_to_page)
{
    void *p = NULL;
    REQUIRE_HR(va(NULL, P + 1, MEM_RESERVE, PAGE_NOACCESS, &p), S_OK);
    CHECK_REGION(p, p, p, PAGE_NOACCESS, 2 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    RELEASE(p);
    REQUIRE_HR(va(NULL, 1, MEM_COMMIT, PAGE_READWRITE, &p), S_OK);
    CHECK_REGION(p, p, p, PAGE_READWRITE, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    RELEASE(p);
    REQUIRE_HR(va(NULL, G - 4, MEM_RESERVE, PAGE_NOACCESS, &p), S_OK);
    CHECK_REGION(p, p, p, PAGE_NOACCESS, G, MEM_RESERVE, 0, MEM_PRIVATE);
    RELEASE(p);
}

/* Rule: a non-NULL reserve address rounds down to G and the reservation
 * covers [base, page_up(address+size)); a range freed earlier can be
 * reserved again at the same address. [ros-alloc] CheckAlignment
 * (0x50001010 + 0x1000 -> base 0x50000000, size 0x3000; 0x50008000 + 1 -> 0x9000). */
TEST(s3_virtualalloc_reserve_at_address_rounds_down_to_granularity)
{
    RESERVE(b0, 2 * G, PAGE_NOACCESS);
    char *b = b0;
    RELEASE(b);

    const size_t off = 0x1234, size = 0x1000;
    void *out = NULL;
    CHECK_HR(va(b + off, size, MEM_RESERVE, PAGE_READWRITE, &out), S_OK);
    CHECK(out == (void *)b);
    size_t expect = page_up(off + size);
    CHECK_REGION(b, b, b, PAGE_READWRITE, expect, MEM_RESERVE, 0, MEM_PRIVATE);
    CHECK_REGION(b + off, page_of(b + off), b, PAGE_READWRITE, expect - (size_t)(page_of(b + off) - b),
                 MEM_RESERVE, 0, MEM_PRIVATE);
    if (expect < G) {
        MEMORY_BASIC_INFORMATION mbi;
        CHECK_HR(vq(b + expect, &mbi), S_OK);
        CHECK_EQ(mbi.State, MEM_FREE);
    }
    if (out == (void *)b)
        RELEASE(b);

    /* again, in the middle of the granule: 1 byte at b + G/2 */
    if (G >= 4 * P) {
        out = NULL;
        CHECK_HR(va(b + G / 2, 1, MEM_RESERVE, PAGE_NOACCESS, &out), S_OK);
        CHECK(out == (void *)b);
        CHECK_REGION(b, b, b, PAGE_NOACCESS, G / 2 + P, MEM_RESERVE, 0, MEM_PRIVATE);
        if (out == (void *)b)
            RELEASE(b);
    }
}

/* Rule: reserving over a live host reservation -> ERROR_INVALID_ADDRESS,
 * nothing replaced. [ros-alloc] CheckAlignment (same 64k region ->
 * STATUS_CONFLICTING_ADDRESSES); [wine-nt] test_NtAllocateVirtualMemory
 * ("allocation conflicts because of 64k align"). */
TEST(s3_virtualalloc_reserve_overlapping_reservation_is_invalid_address)
{
    COMMIT_NEW(b0, 2 * G, PAGE_READWRITE);
    char *b = b0;
    fill(b, 2 * G, 11);
    snap_t s;
    snap_take(&s, b, 2 * G);
    void *out = (void *)0x1;
    CHECK_HR(va(b, P, MEM_RESERVE, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK_HR(va(b + P, P, MEM_RESERVE, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK_HR(va(b + G, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK_HR(va(b + 2 * G - 1, 1, MEM_RESERVE, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    /* starts in free space below and runs into the reservation */
    MEMORY_BASIC_INFORMATION mbi;
    if (vq(b - G, &mbi) == S_OK && mbi.State == MEM_FREE)
        CHECK_HR(va(b - G, 2 * G, MEM_RESERVE, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    /* another manager cannot reserve there either */
    CHECK_HR(va_m(g_m2, b + G, P, MEM_RESERVE, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, 2 * G, 11));
    RELEASE(b);
}

/* Rule: reserving over any other mapping -> ERROR_INVALID_ADDRESS; no
 * MAP_FIXED over foreign memory, ever. */
TEST(s3_virtualalloc_reserve_over_foreign_mapping_is_invalid_address)
{
    void *out;
    /* a malloc'd block, small (heap) and large (mmap'd by the allocator) */
    size_t sizes[2] = {4096, 1u << 20};
    for (int i = 0; i < 2; i++) {
        unsigned char *blk = malloc(sizes[i]);
        REQUIRE(blk != NULL);
        fill(blk, sizes[i], 21 + i);
        out = (void *)0x1;
        CHECK_HR(va(blk, sizes[i], MEM_RESERVE, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
        CHECK_HR(va(blk + sizes[i] / 2, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &out),
                 HR_INVALID_ADDRESS);
        CHECK(filled(blk, sizes[i], 21 + i));
        free(blk);
    }
    /* a static array */
    fill(g_static_block, sizeof g_static_block, 23);
    out = (void *)0x1;
    CHECK_HR(va(g_static_block + G, P, MEM_RESERVE, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
    CHECK_HR(va(g_static_block, sizeof g_static_block, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &out),
             HR_INVALID_ADDRESS);
    CHECK(filled(g_static_block, sizeof g_static_block, 23));
    /* a mapping of our own */
    unsigned char *mine = mmap(NULL, 2 * G, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mine != MAP_FAILED);
    fill(mine, 2 * G, 24);
    out = (void *)0x1;
    CHECK_HR(va(mine + G, P, MEM_RESERVE, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
    CHECK_HR(va(mine, 2 * G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK(filled(mine, 2 * G, 24));
    munmap(mine, 2 * G);
    /* the stack */
    volatile unsigned char local[256];
    for (size_t i = 0; i < sizeof local; i++)
        local[i] = (unsigned char)i;
    out = (void *)0x1;
    CHECK_HR(va((void *)local, sizeof local, MEM_RESERVE, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
    for (size_t i = 0; i < sizeof local; i++)
        if (local[i] != (unsigned char)i) {
            CHECK(!"stack contents changed");
            break;
        }
}

/* Rule: new pages read as zero. */
TEST(s3_virtualalloc_new_pages_read_zero)
{
    COMMIT_NEW(a, 4 * G, PAGE_READWRITE);
    CHECK(all_zero(a, 4 * G));
    RELEASE(a);
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    void *c = NULL;
    CHECK_HR(va(b + P, 3 * P, MEM_COMMIT, PAGE_READONLY, &c), S_OK);
    CHECK(all_zero(b + P, 3 * P));
    RELEASE(b);
}

/* Rule: commit into a reservation covers every page touched by
 * [addr, addr+size) and *ppMem is the page-rounded start.
 * [wine-nt] test_NtAllocateVirtualMemory (decommit addr1+0x1fff size 2 covers
 * two pages - same rounding); [ros-alloc] CheckAdjacentVADs (commit inside a
 * reservation, VirtualQuery of the committed page). */
TEST(s3_virtualalloc_commit_into_reservation_rounds_to_pages)
{
    RESERVE(b0, 8 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    /* [b+P+0x10, b+2P+0x10) touches pages 1 and 2 */
    CHECK_HR(va(b + P + 0x10, P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK(out == (void *)(b + P));
    CHECK_REGION(b, b, b, PAGE_NOACCESS, P, MEM_RESERVE, 0, MEM_PRIVATE);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_NOACCESS, 5 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    /* 1 byte on the last page */
    out = NULL;
    CHECK_HR(va(b + 8 * P - 1, 1, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    CHECK(out == (void *)(b + 7 * P));
    CHECK_REGION(b + 7 * P, b + 7 * P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READONLY, MEM_PRIVATE);
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_NOACCESS, 4 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    RELEASE(b);
}

/* Rule: a commit range not inside one live host reservation ->
 * ERROR_INVALID_ADDRESS, nothing changes. [ros-alloc] CheckAlignment (commit
 * past the end of a 0x3000 reservation inside its 64k granule ->
 * STATUS_CONFLICTING_ADDRESSES) and CheckAdjacentVADs (commit covering two
 * allocations -> STATUS_CONFLICTING_ADDRESSES). */
TEST(s3_virtualalloc_commit_outside_reservation_is_invalid_address)
{
    RESERVE(b0, 2 * G, PAGE_NOACCESS);
    char *b = b0;
    RELEASE(b);
    /* two adjacent reservations [b, b+G) and [b+G, b+G+2P) */
    void *r1 = NULL, *r2 = NULL;
    REQUIRE_HR(va(b, G, MEM_RESERVE, PAGE_NOACCESS, &r1), S_OK);
    REQUIRE(r1 == (void *)b);
    REQUIRE_HR(va(b + G, 2 * P, MEM_RESERVE, PAGE_NOACCESS, &r2), S_OK);
    REQUIRE(r2 == (void *)(b + G));
    CHECK_HR(va(b, P, MEM_COMMIT, PAGE_READWRITE, &r1), S_OK);
    fill(b, P, 31);
    snap_t s;
    snap_take(&s, b, 2 * G);
    void *out = (void *)0x1;
    /* across the two reservations */
    CHECK_HR(va(b + G - P, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    /* runs past the end of the second */
    CHECK_HR(va(b + G + P, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    /* wholly in the unused tail of the second reservation's granule */
    if (G >= 4 * P)
        CHECK_HR(va(b + G + 2 * P, P, MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, P, 31));
    CHECK_HR(vf(b, 0, MEM_RELEASE), S_OK);
    CHECK_HR(vf(b + G, 0, MEM_RELEASE), S_OK);

    /* a released reservation, an unmapped hole, heap, stack, static, another manager */
    out = (void *)0x1;
    CHECK_HR(va(b, P, MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    char *hole = hole_make();
    REQUIRE(hole != NULL);
    CHECK_HR(va(hole, P, MEM_COMMIT, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    hole_release(hole);
    unsigned char *blk = malloc(3 * P);
    REQUIRE(blk != NULL);
    fill(blk, 3 * P, 32);
    CHECK_HR(va(blk, P, MEM_COMMIT, PAGE_READONLY, &out), HR_INVALID_ADDRESS);
    CHECK(filled(blk, 3 * P, 32));
    free(blk);
    int local = 5;
    CHECK_HR(va(&local, sizeof local, MEM_COMMIT, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
    CHECK_EQ(local, 5);
    CHECK_HR(va(&g_static_var, sizeof g_static_var, MEM_COMMIT, PAGE_NOACCESS, &out),
             HR_INVALID_ADDRESS);
    CHECK_EQ(g_static_var, 42);
}

/* Rule: a commit whose addr+size wraps around the address space fails and
 * changes nothing (the SPEC's range rule; no Windows evidence found for the
 * exact code, so only failure is pinned). */
TEST(s3_virtualalloc_commit_wrapping_range_fails_and_changes_nothing)
{
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    snap_t s;
    snap_take(&s, b, G);
    void *out = (void *)0x1;
    HRESULT hr = va(b + P, SIZE_MAX - P, MEM_COMMIT, PAGE_READWRITE, &out);
    CHECK(FAILED(hr));
    hr = va(b + P, SIZE_MAX, MEM_COMMIT, PAGE_READWRITE, &out);
    CHECK(FAILED(hr));
    hr = va(b + P, (SIZE_T)0 - (uintptr_t)(b + P) + P, MEM_COMMIT, PAGE_READWRITE, &out);
    CHECK(FAILED(hr));
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* Rule: committing committed pages succeeds, keeps their contents and
 * applies the new protection. [ros-alloc] CheckAlignment ("Commit the same
 * address again with a different protection" -> success);
 * [wine-k32] test_VirtualAlloc_protection (re-commit returns the same address). */
TEST(s3_virtualalloc_recommit_keeps_contents_applies_protection)
{
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 4 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    fill(b, 4 * P, 41);
    out = NULL;
    CHECK_HR(va(b + P, 2 * P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    CHECK(out == (void *)(b + P));
    CHECK(filled(b, 4 * P, 41));
    CHECK_REGION(b, b, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_READONLY, MEM_PRIVATE);
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    /* the new protection is real */
    CHECK_EQ(child_touch(b + P, 1), SIGSEGV);
    CHECK_EQ(child_touch(b + P, 0), 0);
    /* a commit spanning committed and reserved pages keeps the committed ones */
    out = NULL;
    CHECK_HR(va(b + 3 * P, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK(filled(b, 4 * P, 41));
    CHECK(all_zero(b + 4 * P, P));
    RELEASE(b);
}

/* Rule: MEM_COMMIT with a NULL address reserves and commits. */
TEST(s3_virtualalloc_commit_null_reserves_and_commits)
{
    void *p = NULL;
    REQUIRE_HR(va(NULL, 3 * P, MEM_COMMIT, PAGE_READWRITE, &p), S_OK);
    CHECK_REGION(p, p, p, PAGE_READWRITE, 3 * P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    memset(p, 0x42, 3 * P);
    CHECK_EQ(((unsigned char *)p)[3 * P - 1], 0x42);
    RELEASE(p);
}

/* Rule: MEM_RESERVE|MEM_COMMIT at a non-NULL address: *ppMem is the
 * G-rounded-down base and the whole reservation [base, page_up(addr+size))
 * is committed. [ros-alloc] CheckAlignment ("Reserve and commit at once":
 * 0x50004080 + 0x1000 -> base 0x50000000, size 0x6000, both ends writable);
 * [wine-k32] test_VirtualAlloc (re-reserve+commit at a released address
 * returns that address). */
TEST(s3_virtualalloc_reserve_commit_at_address_commits_whole_reservation)
{
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    RELEASE(b);
    const size_t off = 4 * P + 0x80;
    void *out = NULL;
    CHECK_HR(va(b + off, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK(out == (void *)b);
    if (out != (void *)b)
        return;
    size_t total = page_up(off + P);
    CHECK_REGION(b, b, b, PAGE_READWRITE, total, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK(all_zero(b, total));
    b[0] = 1;
    b[off] = 2;
    b[total - 1] = 3;
    CHECK_EQ(child_touch(b, 1), 0);
    RELEASE(b);
}

/* Rule: MEM_TOP_DOWN places the reservation high. */
TEST(s3_virtualalloc_top_down_is_above_normal)
{
    RESERVE(lo, G, PAGE_NOACCESS);
    void *hi = NULL;
    CHECK_HR(va(NULL, G, MEM_RESERVE | MEM_TOP_DOWN, PAGE_NOACCESS, &hi), S_OK);
    CHECK((uintptr_t)hi > (uintptr_t)lo);
    CHECK_EQ((uintptr_t)hi % G, 0);
    void *hc = NULL;
    CHECK_HR(va(NULL, P, MEM_COMMIT | MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE, &hc), S_OK);
    CHECK((uintptr_t)hc > (uintptr_t)lo);
    if (hi)
        RELEASE(hi);
    if (hc)
        RELEASE(hc);
    RELEASE(lo);
}

/* Rule: MEM_RESET on committed pages: S_OK, state and protection unchanged
 * (VirtualQuery identical), contents undefined but the pages stay usable.
 * [wine-k32] test_VirtualAlloc (MEM_RESET with PAGE_NOACCESS returns the
 * address, VirtualQuery still MEM_COMMIT PAGE_READWRITE, data either kept or 0). */
TEST(s3_virtualalloc_reset_committed_keeps_state_and_protection)
{
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 2 * P, P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    fill(b, 2 * P, 51);
    snap_t s;
    snap_take(&s, b, G);
    out = NULL;
    CHECK_HR(va(b, 3 * P, MEM_RESET, PAGE_NOACCESS, &out), S_OK);
    CHECK(out == (void *)b);
    /* VirtualQuery unchanged (contents are allowed to change: compare only mbi) */
    for (size_t i = 0; i < G / P; i++) {
        MEMORY_BASIC_INFORMATION mbi;
        CHECK_HR(vq(b + i * P, &mbi), S_OK);
        CHECK(memcmp(&mbi, &s.mbi[i], sizeof mbi) == 0);
    }
    /* every byte reads as before or as zero, and the pages are still writable */
    const unsigned char *c = (const unsigned char *)b;
    int ok = 1;
    for (size_t i = 0; i < 2 * P; i++) {
        unsigned char want = (unsigned char)(51 + i * 7u + (i >> 8));
        if (c[i] != want && c[i] != 0) {
            ok = 0;
            break;
        }
    }
    CHECK(ok);
    memset(b, 0x61, 2 * P);
    CHECK_EQ((unsigned char)b[2 * P - 1], 0x61);
    CHECK_EQ(child_touch(b + 2 * P, 1), SIGSEGV); /* protection still READONLY */
    RELEASE(b);
}

/* Rule: MEM_RESET on reserved (uncommitted) pages inside a reservation
 * succeeds and leaves them reserved. [wine-k32] test_VirtualAlloc
 * (MEM_RESET at addr1+0x1000 on reserved pages returns the address; region
 * stays MEM_RESERVE, Protect 0). */
TEST(s3_virtualalloc_reset_reserved_pages_ok_and_stay_reserved)
{
    RESERVE(b0, G, PAGE_NOACCESS);
    char *b = b0;
    snap_t s;
    snap_take(&s, b, G);
    void *out = NULL;
    CHECK_HR(va(b + P, P, MEM_RESET, PAGE_NOACCESS, &out), S_OK);
    CHECK(out == (void *)(b + P));
    CHECK_UNCHANGED(&s);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, G - P, MEM_RESERVE, 0, MEM_PRIVATE);
    RELEASE(b);
}

/* Rule: MEM_RESET pages must lie inside one reservation, else
 * ERROR_INVALID_ADDRESS. [wine-k32] test_VirtualAlloc (MEM_RESET at
 * addr1+0xf000 size 0x2000 across the end -> ERROR_INVALID_ADDRESS). */
TEST(s3_virtualalloc_reset_outside_reservation_is_invalid_address)
{
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, G, 52);
    snap_t s;
    snap_take(&s, b, G);
    void *out = (void *)0x1;
    CHECK_HR(va(b + G - P, 2 * P, MEM_RESET, PAGE_NOACCESS, &out), HR_INVALID_ADDRESS);
    char *hole = hole_make();
    REQUIRE(hole != NULL);
    CHECK_HR(va(hole, P, MEM_RESET, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    hole_release(hole);
    unsigned char *blk = malloc(4 * P);
    REQUIRE(blk != NULL);
    fill(blk, 4 * P, 53);
    CHECK_HR(va(page_of(blk + P), P, MEM_RESET, PAGE_READWRITE, &out), HR_INVALID_ADDRESS);
    CHECK(filled(blk, 4 * P, 53));
    free(blk);
    CHECK_UNCHANGED(&s);
    RELEASE(b);
    CHECK_HR(va(b, P, MEM_RESET, PAGE_READWRITE, &out), HR_INVALID_ADDRESS); /* released */
}

/* Rule: for MEM_RESET the protection is ignored but must still be valid. */
TEST(s3_virtualalloc_reset_invalid_protection_is_invalidarg)
{
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, G, 54);
    snap_t s;
    snap_take(&s, b, G);
    void *out = (void *)0x1;
    CHECK_HR(va(b, P, MEM_RESET, 0, &out), E_INVALIDARG);
    CHECK_HR(va(b, P, MEM_RESET, PAGE_WRITECOPY, &out), E_INVALIDARG);
    CHECK_HR(va(b, P, MEM_RESET, PAGE_READONLY | PAGE_READWRITE, &out), E_INVALIDARG);
    CHECK_HR(va(b, P, MEM_RESET, PAGE_NOACCESS | PAGE_GUARD, &out), E_INVALIDARG);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, G, 54));
    RELEASE(b);
}

/* Rule: MEM_RESET_UNDO on a reset range is S_OK only if the contents are
 * known intact; otherwise it fails. Either way state and protection stay. */
TEST(s3_virtualalloc_reset_undo_ok_only_if_contents_intact)
{
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, 4 * P, 55);
    void *out = NULL;
    REQUIRE_HR(va(b, 4 * P, MEM_RESET, PAGE_READWRITE, &out), S_OK);
    out = NULL;
    HRESULT hr = va(b, 4 * P, MEM_RESET_UNDO, PAGE_READWRITE, &out);
    CHECK(hr != S_FALSE);
    if (hr == S_OK)
        CHECK(filled(b, 4 * P, 55));
    else
        CHECK(FAILED(hr));
    CHECK_REGION(b, b, b, PAGE_READWRITE, G, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    RELEASE(b);
}

/* =========================================================================
 * §4 VirtualFree
 * ========================================================================= */

/* Check 1: dwFreeType must be exactly MEM_DECOMMIT or MEM_RELEASE.
 * [wine-k32] test_VirtualAlloc (type 0 and MEM_FREE -> ERROR_INVALID_PARAMETER). */
TEST(s4_virtualfree_check1_invalid_free_types_are_invalidarg)
{
    static const DWORD bad[] = {
        0,
        MEM_FREE,
        MEM_DECOMMIT | MEM_RELEASE,
        MEM_COALESCE_PLACEHOLDERS,
        MEM_PRESERVE_PLACEHOLDER,
        MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS,
        MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER,
        MEM_DECOMMIT | MEM_PRESERVE_PLACEHOLDER,
        MEM_COMMIT,
        MEM_RESERVE,
        MEM_RELEASE | 0x80000000u,
        MEM_DECOMMIT | 0x00100000u,
        0x00000100u,
    };
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, G, 61);
    snap_t s;
    snap_take(&s, b, G);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        HRESULT hr1 = vf(b, 0, bad[i]);
        HRESULT hr2 = vf(b, P, bad[i]);
        /* check 1 comes before check 3: a foreign pointer gives the same answer */
        HRESULT hr3 = vf(NULL, 0, bad[i]);
        if (hr1 != E_INVALIDARG || hr2 != E_INVALIDARG || hr3 != E_INVALIDARG)
            fprintf(stderr, "  free type %#x\n", bad[i]);
        CHECK_HR(hr1, E_INVALIDARG);
        CHECK_HR(hr2, E_INVALIDARG);
        CHECK_HR(hr3, E_INVALIDARG);
    }
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* Check 2: MEM_RELEASE with dwSize != 0 -> E_INVALIDARG, even for a foreign
 * pointer (check 2 precedes check 3). [wine-k32] test_VirtualAlloc ("if the
 * type is MEM_RELEASE, size must be 0"). */
TEST(s4_virtualfree_check2_release_nonzero_size_is_invalidarg)
{
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, G, 62);
    snap_t s;
    snap_take(&s, b, G);
    CHECK_HR(vf(b, 1, MEM_RELEASE), E_INVALIDARG);
    CHECK_HR(vf(b, G, MEM_RELEASE), E_INVALIDARG);
    CHECK_HR(vf(b + P, P, MEM_RELEASE), E_INVALIDARG);
    int local = 0;
    CHECK_HR(vf(&local, 4, MEM_RELEASE), E_INVALIDARG);
    CHECK_HR(vf(NULL, 1, MEM_RELEASE), E_INVALIDARG);
    void *blk = malloc(64);
    CHECK_HR(vf(blk, 64, MEM_RELEASE), E_INVALIDARG);
    free(blk);
    CHECK_UNCHANGED(&s);
    RELEASE(b);
}

/* Check 3: the page of lpAddress must lie in a live reservation of THIS
 * manager, else HOST_E_INVALIDOPERATION; nothing outside is touched. */
TEST(s4_virtualfree_check3_foreign_addresses_are_invalidoperation)
{
    static const DWORD types[] = {MEM_DECOMMIT, MEM_RELEASE};
    /* NULL */
    for (int t = 0; t < 2; t++)
        CHECK_HR(vf(NULL, 0, types[t]), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(NULL, P, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    /* a stack variable */
    volatile int local = 1234;
    for (int t = 0; t < 2; t++)
        CHECK_HR(vf((void *)&local, 0, types[t]), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf((void *)&local, sizeof local, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_EQ(local, 1234);
    /* a malloc block (small and large) */
    size_t sizes[2] = {100, 1u << 20};
    for (int i = 0; i < 2; i++) {
        unsigned char *blk = malloc(sizes[i]);
        REQUIRE(blk != NULL);
        fill(blk, sizes[i], 63);
        for (int t = 0; t < 2; t++)
            CHECK_HR(vf(blk, 0, types[t]), HOST_E_INVALIDOPERATION);
        CHECK_HR(vf(blk, sizes[i], MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
        CHECK(filled(blk, sizes[i], 63));
        free(blk);
    }
    /* a static variable */
    for (int t = 0; t < 2; t++)
        CHECK_HR(vf(&g_static_var, 0, types[t]), HOST_E_INVALIDOPERATION);
    CHECK_EQ(g_static_var, 42);
    /* a mapping of our own */
    unsigned char *mine = mmap(NULL, G, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(mine != MAP_FAILED);
    fill(mine, G, 64);
    for (int t = 0; t < 2; t++)
        CHECK_HR(vf(mine, 0, types[t]), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(mine, G, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK(filled(mine, G, 64));
    munmap(mine, G);
    /* code */
    CHECK_HR(vf((void *)(uintptr_t)&hostmem_create, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
}

/* Check 3: another manager's reservation is foreign. */
TEST(s4_virtualfree_check3_other_managers_memory_is_invalidoperation)
{
    void *o = NULL;
    REQUIRE_HR(va_m(g_m2, NULL, G, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE, &o), S_OK);
    fill(o, G, 65);
    CHECK_HR(vf(o, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(o, 0, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf((char *)o + P, P, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK(filled(o, G, 65));
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq_m(g_m2, o, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.RegionSize, G);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE);
    CHECK_HR(vf_m(g_m2, o, 0, MEM_RELEASE), S_OK);
}

/* Check 3: memory already released is foreign; the release made it MEM_FREE. */
TEST(s4_virtualfree_check3_released_reservation_is_invalidoperation)
{
    COMMIT_NEW(b, G, PAGE_READWRITE);
    CHECK_HR(vf(b, 0, MEM_RELEASE), S_OK);
    CHECK_HR(vf(b, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b, 0, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b, P, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    /* check 3 comes before check 5: a range running anywhere is still foreign */
    CHECK_HR(vf(b, 100 * G, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
}

/* Check 3: the unused tail of a reservation's last granule is not part of
 * the reservation. [ros-alloc] CheckAlignment (release at 0x50008000 in the
 * same 64k region of a 0x3000 reservation -> STATUS_MEMORY_NOT_ALLOCATED). */
TEST(s4_virtualfree_check3_granule_tail_is_invalidoperation)
{
    if (G < 4 * P)
        return; /* no tail when the page is as large as the granule */
    RESERVE(b0, P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    fill(b, P, 66);
    snap_t s;
    snap_take(&s, b, G);
    CHECK_HR(vf(b + 2 * P, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b + 2 * P, 0, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b + 2 * P, P, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b + G - P, P, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, P, 66));
    RELEASE(b);
}

/* Check 4: dwSize == 0 and the page of lpAddress is not the reservation base
 * -> ERROR_INVALID_ADDRESS; an address inside the base page is fine.
 * [wine-nt] test_NtAllocateVirtualMemory (size 0 at addr1+0x1001 ->
 * STATUS_FREE_VM_NOT_AT_BASE for DECOMMIT and RELEASE; size 0 at addr1+0xffe
 * DECOMMIT and addr1+0xfff RELEASE succeed). */
TEST(s4_virtualfree_check4_size_zero_not_at_base_is_invalid_address)
{
    COMMIT_NEW(b0, G, PAGE_READWRITE);
    char *b = b0;
    fill(b, G, 67);
    snap_t s;
    snap_take(&s, b, G);
    CHECK_HR(vf(b + P, 0, MEM_DECOMMIT), HR_INVALID_ADDRESS);
    CHECK_HR(vf(b + P, 0, MEM_RELEASE), HR_INVALID_ADDRESS);
    CHECK_HR(vf(b + P + 1, 0, MEM_DECOMMIT), HR_INVALID_ADDRESS);
    CHECK_HR(vf(b + G - 1, 0, MEM_RELEASE), HR_INVALID_ADDRESS);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, G, 67));
    /* inside the base page: it is the base */
    CHECK_HR(vf(b + P - 2, 0, MEM_DECOMMIT), S_OK);
    CHECK_REGION(b, b, b, PAGE_READWRITE, G, MEM_RESERVE, 0, MEM_PRIVATE);
    CHECK_HR(vf(b + P - 1, 0, MEM_RELEASE), S_OK);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(b, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_FREE);
}

/* Check 5: a range running past the reservation's end -> E_INVALIDARG.
 * [ros-free] Test_NtFreeVirtualMemory ("free more than we got": DECOMMIT of
 * PAGE_SIZE+1 on a one-page reservation -> STATUS_UNABLE_TO_FREE_VM, which
 * Win32 reports as ERROR_INVALID_PARAMETER). */
TEST(s4_virtualfree_check5_range_past_end_is_invalidarg)
{
    RESERVE(b0, 4 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 4 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    fill(b, 4 * P, 68);
    snap_t s;
    snap_take(&s, b, G);
    CHECK_HR(vf(b, 4 * P + 1, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_HR(vf(b + 3 * P, 2 * P, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_HR(vf(b + 4 * P - 1, 2, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_HR(vf(b + P, G, MEM_DECOMMIT), E_INVALIDARG);
    /* a range that wraps around the address space runs past the end too */
    CHECK_HR(vf(b + P, SIZE_MAX, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_HR(vf(b + P, SIZE_MAX - 2 * P, MEM_DECOMMIT), E_INVALIDARG);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, 4 * P, 68));
    RELEASE(b);
}

/* Check 6 (decommit): the pages become reserved, recommitted pages read
 * zero; unaligned ranges cover every touched page. [wine-nt]
 * test_NtAllocateVirtualMemory (decommit addr1+0x1fff size 2 -> 0x2000 bytes
 * from addr1+0x1000). */
TEST(s4_virtualfree_check6_decommit_makes_reserved_recommit_reads_zero)
{
    RESERVE(b0, 8 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 8 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    fill(b, 8 * P, 69);
    /* [b+2P-1, b+2P+1) touches pages 1 and 2 */
    CHECK_HR(vf(b + 2 * P - 1, 2, MEM_DECOMMIT), S_OK);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, 2 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_NOACCESS, 5 * P, MEM_COMMIT, PAGE_READWRITE,
                 MEM_PRIVATE);
    CHECK(filled(b, P, 69));
    CHECK_EQ((unsigned char)b[3 * P], (unsigned char)(69 + 3 * P * 7u + ((3 * P) >> 8)));
    /* strict mode: the decommitted page faults */
    CHECK_EQ(child_touch(b + P, 0), SIGSEGV);
    out = NULL;
    CHECK_HR(va(b + P, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK(all_zero(b + P, 2 * P));
    CHECK(filled(b, P, 69));
    RELEASE(b);
}

/* Check 6: dwSize 0 at the base decommits the whole reservation. */
TEST(s4_virtualfree_check6_decommit_size_zero_at_base_decommits_all)
{
    RESERVE(b0, 6 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 3 * P, 2 * P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    memset(b, 0x33, 2 * P);
    CHECK_HR(vf(b, 0, MEM_DECOMMIT), S_OK);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, 6 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    REQUIRE_HR(va(b, 6 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK(all_zero(b, 6 * P));
    RELEASE(b);
}

/* Check 6: decommitting pages that are already reserved is fine.
 * [ros-alloc] CheckAlignment ("Decommit the memory, even those pages that
 * were not committed" -> success); [wine-k32] test_VirtualAlloc. */
TEST(s4_virtualfree_check6_decommit_reserved_pages_ok)
{
    RESERVE(b0, 4 * P, PAGE_NOACCESS);
    char *b = b0;
    CHECK_HR(vf(b, 4 * P, MEM_DECOMMIT), S_OK);
    CHECK_HR(vf(b + P, P, MEM_DECOMMIT), S_OK);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, 4 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    void *out = NULL;
    REQUIRE_HR(va(b + 2 * P, P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK_HR(vf(b, 4 * P, MEM_DECOMMIT), S_OK); /* mixed committed and reserved */
    CHECK_REGION(b, b, b, PAGE_NOACCESS, 4 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    RELEASE(b);
}

/* Check 6 (release): the whole reservation, committed or not, goes back; its
 * range reads MEM_FREE and is no longer host memory. */
TEST(s4_virtualfree_check6_release_frees_whole_reservation)
{
    RESERVE(b0, 4 * G, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b + G, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 2 * G, P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    CHECK_HR(vf(b, 0, MEM_RELEASE), S_OK);
    for (size_t off = 0; off < 4 * G; off += G / 2) {
        MEMORY_BASIC_INFORMATION mbi;
        CHECK_HR(vq(b + off, &mbi), S_OK);
        CHECK_EQ(mbi.State, MEM_FREE);
        CHECK(mbi.AllocationBase == NULL);
        CHECK_EQ(mbi.Type, 0);
    }
    CHECK_HR(vf(b + G, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(vf(b, 0, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
    DWORD old = 0;
    CHECK_HR(vp(b + G, P, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    /* and it can be reserved again */
    out = NULL;
    CHECK_HR(va(b, 4 * G, MEM_RESERVE, PAGE_NOACCESS, &out), S_OK);
    CHECK(out == (void *)b);
    if (out == (void *)b)
        RELEASE(b);
}

/* =========================================================================
 * §5 VirtualQuery
 * ========================================================================= */

/* Rule: dwLength < sizeof(MEMORY_BASIC_INFORMATION) -> ERROR_BAD_LENGTH. */
TEST(s5_virtualquery_short_buffer_is_bad_length)
{
    COMMIT_NEW(b, P, PAGE_READWRITE);
    unsigned char buf[64];
    SIZE_T got = 7;
    memset(buf, 0xEE, sizeof buf);
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, b, buf, sizeof(MEMORY_BASIC_INFORMATION) - 1, &got),
             HR_BAD_LENGTH);
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, b, buf, 0, &got), HR_BAD_LENGTH);
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, b, buf, 1, &got), HR_BAD_LENGTH);
    for (size_t i = 0; i < sizeof buf; i++)
        if (buf[i] != 0xEE) {
            CHECK(!"VirtualQuery wrote into a short buffer");
            break;
        }
    RELEASE(b);
}

/* Rule: NULL lpBuffer or NULL pResult -> E_POINTER. */
TEST(s5_virtualquery_null_buffer_or_result_is_epointer)
{
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T got = 0;
    int local = 0;
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, &local, NULL, sizeof mbi, &got), E_POINTER);
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, &local, &mbi, sizeof mbi, NULL), E_POINTER);
}

/* Rule: *pResult = bytes written = 48, even with a larger buffer. */
TEST(s5_virtualquery_result_is_bytes_written)
{
    unsigned char buf[sizeof(MEMORY_BASIC_INFORMATION) + 16];
    SIZE_T got = 0;
    int local = 0;
    memset(buf, 0xEE, sizeof buf);
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, &local, buf, sizeof buf, &got), S_OK);
    CHECK_EQ(got, 48);
    for (size_t i = sizeof(MEMORY_BASIC_INFORMATION); i < sizeof buf; i++)
        if (buf[i] != 0xEE) {
            CHECK(!"VirtualQuery wrote past the structure");
            break;
        }
    got = 0;
    CHECK_HR(g_m->lpVtbl->VirtualQuery(g_m, &local, buf, 48, &got), S_OK);
    CHECK_EQ(got, 48);
}

/* Rule: fields for reserved and committed runs: BaseAddress = page of the
 * address, AllocationBase = reservation base, AllocationProtect = protection
 * at reservation, RegionSize to the end of the run of equal state+protection
 * inside the reservation, Protect 0 for reserved, Type MEM_PRIVATE.
 * [wine-k32] test_VirtualAlloc (reserved: Protect 0, RegionSize 0x10000;
 * committed: RegionSize 0x1000); [ros-alloc] CheckAdjacentVADs (query in the
 * middle of a committed page: BaseAddress = page, AllocationProtect = reserve
 * protection, RegionSize = committed run). */
TEST(s5_virtualquery_fields_of_reserved_and_committed_runs)
{
    RESERVE(b0, 10 * P, PAGE_EXECUTE_READWRITE);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b + 3 * P, 3 * P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    /* reserved run [0, 3P) */
    CHECK_REGION(b, b, b, PAGE_EXECUTE_READWRITE, 3 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    CHECK_REGION(b + P + 17, b + P, b, PAGE_EXECUTE_READWRITE, 2 * P, MEM_RESERVE, 0, MEM_PRIVATE);
    /* committed run [3P, 6P) */
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_EXECUTE_READWRITE, 3 * P, MEM_COMMIT, PAGE_READONLY,
                 MEM_PRIVATE);
    CHECK_REGION(b + 5 * P + P - 1, b + 5 * P, b, PAGE_EXECUTE_READWRITE, P, MEM_COMMIT,
                 PAGE_READONLY, MEM_PRIVATE);
    /* reserved run [6P, 10P): ends at the reservation end, not the granule end */
    CHECK_REGION(b + 6 * P, b + 6 * P, b, PAGE_EXECUTE_READWRITE, 4 * P, MEM_RESERVE, 0,
                 MEM_PRIVATE);
    CHECK_REGION(b + 10 * P - 1, b + 9 * P, b, PAGE_EXECUTE_READWRITE, P, MEM_RESERVE, 0,
                 MEM_PRIVATE);
    RELEASE(b);
}

/* Rule: runs split by different protections and by the PAGE_GUARD modifier
 * (SPEC: "guard and cache modifiers included"). PAGE_NOCACHE belongs to the
 * whole allocation on current Windows ([wine-k32] test_VirtualAlloc: it
 * "cannot be set per page"; issue 14): given at a commit inside a plain
 * allocation it is dropped, so page 3 joins page 4's run. */
TEST(s5_virtualquery_runs_split_by_protection_and_modifiers)
{
    RESERVE(b0, 8 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 2 * P, P, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, &out), S_OK);
    REQUIRE_HR(va(b + 3 * P, P, MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE, &out), S_OK);
    REQUIRE_HR(va(b + 4 * P, P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 5 * P, P, MEM_COMMIT, PAGE_EXECUTE_READ, &out), S_OK);
    REQUIRE_HR(va(b + 6 * P, P, MEM_COMMIT, PAGE_EXECUTE_READ, &out), S_OK);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + 2 * P, b + 2 * P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD,
                 MEM_PRIVATE);
    CHECK_REGION(b + 3 * P, b + 3 * P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + 4 * P, b + 4 * P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    /* two commits of the same protection form one run */
    CHECK_REGION(b + 5 * P, b + 5 * P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_EXECUTE_READ,
                 MEM_PRIVATE);
    CHECK_REGION(b + 7 * P, b + 7 * P, b, PAGE_NOACCESS, P, MEM_RESERVE, 0, MEM_PRIVATE);
    /* VirtualProtect joins and splits runs the same way */
    DWORD old = 0;
    CHECK_HR(vp(b + 4 * P, P, PAGE_EXECUTE_READ, &old), S_OK);
    CHECK_REGION(b + 4 * P, b + 4 * P, b, PAGE_NOACCESS, 3 * P, MEM_COMMIT, PAGE_EXECUTE_READ,
                 MEM_PRIVATE);
    CHECK_HR(vp(b + P, P, PAGE_READWRITE | PAGE_GUARD, &old), S_OK);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD,
                 MEM_PRIVATE);
    RELEASE(b);
}

/* Rule: outside host memory, a stack address is MEM_COMMIT PAGE_READWRITE MEM_PRIVATE. */
TEST(s5_virtualquery_stack_is_private_readwrite)
{
    volatile char local[64];
    local[0] = 1;
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq((void *)&local[10], &mbi), S_OK);
    CHECK(mbi.BaseAddress == (void *)page_of((void *)&local[10]));
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE);
    CHECK_EQ(mbi.Type, MEM_PRIVATE);
    CHECK(mbi.RegionSize >= P && mbi.RegionSize % P == 0);
    CHECK((uintptr_t)mbi.BaseAddress + mbi.RegionSize > (uintptr_t)&local[10]);
}

/* Rule: the address of a function of the test binary is MEM_IMAGE with an
 * execute protection. */
TEST(s5_virtualquery_code_is_image_executable)
{
    void *code = (void *)(uintptr_t)&child_touch;
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(code, &mbi), S_OK);
    CHECK(mbi.BaseAddress == (void *)page_of(code));
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Type, MEM_IMAGE);
    DWORD base = mbi.Protect & 0xFF;
    CHECK(base == PAGE_EXECUTE || base == PAGE_EXECUTE_READ || base == PAGE_EXECUTE_READWRITE ||
          base == PAGE_EXECUTE_WRITECOPY);
    CHECK(mbi.AllocationBase != NULL);
}

/* Rule: an unmapped address is MEM_FREE, AllocationBase NULL, Protect
 * PAGE_NOACCESS, Type 0, RegionSize up to the next mapping.
 * [wine-k32] test_MapViewOfFile (after UnmapViewOfFile: MEM_FREE, AllocationBase
 * NULL, AllocationProtect 0, Protect PAGE_NOACCESS, Type 0). */
TEST(s5_virtualquery_unmapped_is_free)
{
    char *hole = hole_make();
    REQUIRE(hole != NULL);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(hole + 5, &mbi), S_OK);
    CHECK(mbi.BaseAddress == (void *)hole);
    CHECK(mbi.AllocationBase == NULL);
    CHECK_EQ(mbi.AllocationProtect, 0);
    CHECK_EQ(mbi.RegionSize, P);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK_EQ(mbi.Protect, PAGE_NOACCESS);
    CHECK_EQ(mbi.Type, 0);
    hole_release(hole);
}

/* Rule: a file mapping is MEM_MAPPED with its protection. */
TEST(s5_virtualquery_file_mapping_is_mapped)
{
    char path[] = "/tmp/hostmem_test_rules_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    unlink(path);
    REQUIRE(ftruncate(fd, (off_t)(2 * P)) == 0);
    void *ro = mmap(NULL, 2 * P, PROT_READ, MAP_SHARED, fd, 0);
    void *rw = mmap(NULL, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    REQUIRE(ro != MAP_FAILED && rw != MAP_FAILED);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq((char *)ro + P, &mbi), S_OK);
    CHECK(mbi.BaseAddress == (void *)((char *)ro + P));
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Type, MEM_MAPPED);
    CHECK_EQ(mbi.Protect, PAGE_READONLY);
    CHECK_HR(vq(rw, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Type, MEM_MAPPED);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE);
    /* and an anonymous mapping of our own is private */
    void *anon = mmap(NULL, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    REQUIRE(anon != MAP_FAILED);
    CHECK_HR(vq(anon, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_COMMIT);
    CHECK_EQ(mbi.Type, MEM_PRIVATE);
    CHECK_EQ(mbi.Protect, PAGE_READWRITE);
    munmap(anon, P);
    munmap(ro, 2 * P);
    munmap(rw, 2 * P);
}

/* Rule: the unused tail of a reservation's last granule reads MEM_FREE (a
 * reservation there would... be refused only because it rounds down onto
 * the live base; the tail itself is not host memory). */
TEST(s5_virtualquery_granule_tail_is_free)
{
    if (G < 4 * P)
        return;
    RESERVE(b0, P, PAGE_NOACCESS);
    char *b = b0;
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(b + 2 * P, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK(mbi.AllocationBase == NULL);
    CHECK_EQ(mbi.Protect, PAGE_NOACCESS);
    CHECK_EQ(mbi.Type, 0);
    CHECK(mbi.BaseAddress == (void *)(b + 2 * P));
    CHECK_HR(vq(b + P, &mbi), S_OK);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK(mbi.BaseAddress == (void *)(b + P));
    CHECK(mbi.RegionSize >= G - P);
    RELEASE(b);
}

/* Rule: a released reservation reads MEM_FREE. */
TEST(s5_virtualquery_released_reservation_is_free)
{
    COMMIT_NEW(b, 2 * G, PAGE_READWRITE);
    RELEASE(b);
    MEMORY_BASIC_INFORMATION mbi;
    CHECK_HR(vq(b, &mbi), S_OK);
    CHECK(mbi.BaseAddress == b);
    CHECK_EQ(mbi.State, MEM_FREE);
    CHECK(mbi.AllocationBase == NULL);
    CHECK_EQ(mbi.Protect, PAGE_NOACCESS);
    CHECK_EQ(mbi.Type, 0);
    CHECK(mbi.RegionSize >= 2 * G);
}

/* =========================================================================
 * §6 VirtualProtect
 * ========================================================================= */

/* Rule: invalid protection -> E_INVALIDARG, nothing changes.
 * [wine-k32] test_VirtualProtect (0, two bases, WRITECOPY variants ->
 * ERROR_INVALID_PARAMETER) and test_VirtualAlloc (READWRITE|EXECUTE_WRITECOPY, 0). */
TEST(s6_virtualprotect_invalid_protection_is_invalidarg)
{
    static const DWORD bad[] = {
        0,
        PAGE_WRITECOPY,
        PAGE_EXECUTE_WRITECOPY,
        PAGE_READWRITE | PAGE_EXECUTE_WRITECOPY,
        PAGE_READONLY | PAGE_READWRITE,
        PAGE_NOACCESS | PAGE_READONLY,
        PAGE_EXECUTE | PAGE_EXECUTE_READ,
        PAGE_READWRITE | PAGE_EXECUTE,
        PAGE_NOACCESS | PAGE_GUARD,
        PAGE_NOACCESS | PAGE_NOCACHE,
        PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,
        PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
        PAGE_GUARD,
        PAGE_READWRITE | 0x800,
    };
    COMMIT_NEW(b0, 4 * P, PAGE_READWRITE);
    char *b = b0;
    fill(b, 4 * P, 81);
    snap_t s;
    snap_take(&s, b, 4 * P);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        DWORD old = 0xDEAD;
        HRESULT hr = vp(b, 2 * P, bad[i], &old);
        if (hr != E_INVALIDARG)
            fprintf(stderr, "  protect %#x\n", bad[i]);
        CHECK_HR(hr, E_INVALIDARG);
    }
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, 4 * P, 81));
    RELEASE(b);
}

/* Rule: NULL pflOldProtect -> E_POINTER, nothing changes. */
TEST(s6_virtualprotect_null_oldprotect_is_epointer)
{
    COMMIT_NEW(b, 2 * P, PAGE_READWRITE);
    snap_t s;
    snap_take(&s, b, 2 * P);
    CHECK_HR(vp(b, P, PAGE_READONLY, NULL), E_POINTER);
    CHECK_UNCHANGED(&s);
    CHECK_EQ(child_touch(b, 1), 0);
    RELEASE(b);
}

/* Rule: a range that is not all committed -> ERROR_INVALID_ADDRESS and no
 * page changes (atomic). [wine-k32] test_VirtualAlloc ("this should fail,
 * since not the whole range is committed yet" -> ERROR_INVALID_ADDRESS). */
TEST(s6_virtualprotect_range_with_reserved_page_is_invalid_address)
{
    RESERVE(b0, 8 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    REQUIRE_HR(va(b + 3 * P, 2 * P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    fill(b, 2 * P, 82);
    snap_t s;
    snap_take(&s, b, 8 * P);
    DWORD old = 0xDEAD;
    CHECK_HR(vp(b, 3 * P, PAGE_NOACCESS, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b, 5 * P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b + 2 * P, P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b + P, 2 * P + 1, PAGE_EXECUTE_READ, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b + 4 * P, 2 * P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b + 6 * P, P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS);
    CHECK_UNCHANGED(&s);
    /* the hardware protection did not change either */
    CHECK_EQ(child_touch(b, 1), 0);
    CHECK_EQ(child_touch(b + 3 * P, 1), SIGSEGV);
    RELEASE(b);
}

/* Rule: a range across two reservations, past a reservation's end, or
 * outside host memory -> ERROR_INVALID_ADDRESS. */
TEST(s6_virtualprotect_range_across_or_outside_reservations_is_invalid_address)
{
    RESERVE(b0, 2 * G, PAGE_NOACCESS);
    char *b = b0;
    RELEASE(b);
    void *r1 = NULL, *r2 = NULL;
    REQUIRE_HR(va(b, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &r1), S_OK);
    REQUIRE(r1 == (void *)b);
    REQUIRE_HR(va(b + G, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, &r2), S_OK);
    REQUIRE(r2 == (void *)(b + G));
    fill(b, 2 * G, 83);
    snap_t s;
    snap_take(&s, b, 2 * G);
    DWORD old = 0xDEAD;
    CHECK_HR(vp(b + G - P, 2 * P, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b, 2 * G, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    CHECK_HR(vp(b + G - 1, 2, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    CHECK_UNCHANGED(&s);
    CHECK(filled(b, 2 * G, 83));
    CHECK_HR(vf(b + G, 0, MEM_RELEASE), S_OK);
    snap_take(&s, b, G);
    /* past the end of the (now single) reservation */
    CHECK_HR(vp(b + G - P, 2 * P, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    /* a wrapping range (only failure pinned, no Windows evidence for the code) */
    CHECK(FAILED(vp(b + P, SIZE_MAX, PAGE_READONLY, &old)));
    CHECK_UNCHANGED(&s);
    CHECK_HR(vf(b, 0, MEM_RELEASE), S_OK);
    /* outside host memory */
    volatile int local = 9;
    CHECK_HR(vp((void *)&local, sizeof local, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    local = 10; /* still writable */
    CHECK_EQ(local, 10);
    unsigned char *blk = malloc(4 * P);
    REQUIRE(blk != NULL);
    CHECK_HR(vp(page_of(blk + P), P, PAGE_NOACCESS, &old), HR_INVALID_ADDRESS);
    memset(blk, 1, 4 * P); /* still writable */
    free(blk);
    CHECK_HR(vp(&g_static_var, sizeof g_static_var, PAGE_READONLY, &old), HR_INVALID_ADDRESS);
    g_static_var = 42;
    char *hole = hole_make();
    REQUIRE(hole != NULL);
    CHECK_HR(vp(hole, P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS);
    hole_release(hole);
    CHECK_HR(vp(b, P, PAGE_READWRITE, &old), HR_INVALID_ADDRESS); /* released */
}

/* Rule: *pflOldProtect = protection of the first page before the call; the
 * whole range takes the new protection. [wine-k32] test_VirtualAlloc
 * (old_prot PAGE_NOACCESS then PAGE_READONLY), test_VirtualProtect, and
 * test_guard_page (old_prot READWRITE|GUARD). */
TEST(s6_virtualprotect_old_protection_is_first_page_before_call)
{
    RESERVE(b0, 4 * P, PAGE_NOACCESS);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b, P, MEM_COMMIT, PAGE_READONLY, &out), S_OK);
    REQUIRE_HR(va(b + P, 2 * P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    DWORD old = 0xDEAD;
    CHECK_HR(vp(b + 10, 3 * P - 20, PAGE_NOACCESS, &old), S_OK);
    CHECK_EQ(old, PAGE_READONLY);
    CHECK_REGION(b, b, b, PAGE_NOACCESS, 3 * P, MEM_COMMIT, PAGE_NOACCESS, MEM_PRIVATE);
    old = 0xDEAD;
    CHECK_HR(vp(b + P, P, PAGE_READWRITE | PAGE_GUARD, &old), S_OK);
    CHECK_EQ(old, PAGE_NOACCESS);
    old = 0xDEAD;
    CHECK_HR(vp(b + P, 2 * P, PAGE_EXECUTE_READ, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE | PAGE_GUARD);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, 2 * P, MEM_COMMIT, PAGE_EXECUTE_READ, MEM_PRIVATE);
    old = 0xDEAD;
    CHECK_HR(vp(b + 2 * P + 5, 1, PAGE_READWRITE, &old), S_OK);
    CHECK_EQ(old, PAGE_EXECUTE_READ);
    CHECK_REGION(b + 2 * P, b + 2 * P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_READWRITE, MEM_PRIVATE);
    CHECK_REGION(b + P, b + P, b, PAGE_NOACCESS, P, MEM_COMMIT, PAGE_EXECUTE_READ, MEM_PRIVATE);
    RELEASE(b);
}

/* Rule: PAGE_READONLY really prevents writes (and keeps reads and contents).
 * [ros-prot] TestReadWrite (write to READONLY -> access violation, contents
 * preserved through NOACCESS -> READONLY). */
TEST(s6_virtualprotect_readonly_is_hardware_enforced)
{
    COMMIT_NEW(b0, 2 * P, PAGE_READWRITE);
    char *b = b0;
    memset(b, 0xFF, 2 * P);
    CHECK_EQ(child_touch(b, 1), 0); /* control: writable before */
    DWORD old = 0;
    REQUIRE_HR(vp(b, P, PAGE_READONLY, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK_EQ(child_touch(b, 1), SIGSEGV);
    CHECK_EQ(child_touch(b + P - 1, 1), SIGSEGV);
    CHECK_EQ(child_touch(b, 0), 0);
    CHECK_EQ(child_touch(b + P, 1), 0); /* the second page is untouched */
    CHECK_EQ((unsigned char)b[0], 0xFF);
    REQUIRE_HR(vp(b, P, PAGE_READWRITE, &old), S_OK);
    CHECK_EQ(old, PAGE_READONLY);
    b[0] = 0x11;
    CHECK_EQ(b[0], 0x11);
    RELEASE(b);
}

/* Rule: PAGE_NOACCESS faults on any access and keeps the contents.
 * [ros-prot] TestReadWrite. */
TEST(s6_virtualprotect_noaccess_is_hardware_enforced)
{
    COMMIT_NEW(b0, P, PAGE_READWRITE);
    char *b = b0;
    memset(b, 0xAB, P);
    DWORD old = 0;
    REQUIRE_HR(vp(b, P, PAGE_NOACCESS, &old), S_OK);
    CHECK_EQ(child_touch(b, 0), SIGSEGV);
    CHECK_EQ(child_touch(b, 1), SIGSEGV);
    REQUIRE_HR(vp(b, P, PAGE_READONLY, &old), S_OK);
    CHECK_EQ(old, PAGE_NOACCESS);
    CHECK_EQ((unsigned char)b[P - 1], 0xAB);
    CHECK_EQ(child_touch(b, 1), SIGSEGV);
    RELEASE(b);
    /* committed NOACCESS from the start */
    void *n = NULL;
    REQUIRE_HR(va(NULL, P, MEM_COMMIT, PAGE_NOACCESS, &n), S_OK);
    CHECK_EQ(child_touch(n, 0), SIGSEGV);
    RELEASE(n);
}

/* Rule (strict mode, the default): reserved pages fault on access.
 * [ros-alloc] CheckAdjacentVADs (reading a NOACCESS page -> access violation). */
TEST(s6_reserved_page_faults_in_strict_mode)
{
    RESERVE(b0, 4 * P, PAGE_READWRITE);
    char *b = b0;
    void *out = NULL;
    REQUIRE_HR(va(b + P, P, MEM_COMMIT, PAGE_READWRITE, &out), S_OK);
    CHECK_EQ(child_touch(b, 0), SIGSEGV);
    CHECK_EQ(child_touch(b, 1), SIGSEGV);
    CHECK_EQ(child_touch(b + 2 * P, 0), SIGSEGV);
    CHECK_EQ(child_touch(b + P, 1), 0);
    RELEASE(b);
}

int main(void)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    if (P == 0 || G == 0 || (G % P) != 0) {
        fprintf(stderr, "test_rules: bad page size %zu / granularity %zu\n", P, G);
        return 1;
    }
    if (hostmem_create(NULL, &g_m) != S_OK || !g_m || hostmem_create(NULL, &g_m2) != S_OK || !g_m2) {
        fprintf(stderr, "test_rules: hostmem_create failed\n");
        return 1;
    }

    RUN(s1_queryinterface_iunknown_and_own_iid_addref);
    RUN(s1_queryinterface_unknown_iid_is_enointerface_and_nulls_ppv);
    RUN(s1_release_last_reference_returns_memory);

    RUN(s3_virtualalloc_checkorder_type_protection_size_address);
    RUN(s3_virtualalloc_invalid_types_are_invalidarg);
    RUN(s3_virtualalloc_invalid_protections_are_invalidarg);
    RUN(s3_virtualalloc_large_pages_whole_or_refused);
    RUN(s3_virtualalloc_valid_protections_accepted_and_reported);
    RUN(s3_virtualalloc_size_zero_is_invalidarg);
    RUN(s3_virtualalloc_size_that_cannot_be_reserved_is_outofmemory);
    RUN(s3_virtualalloc_null_ppmem_is_epointer);
    RUN(s3_virtualalloc_null_reserve_is_granularity_aligned);
    RUN(s3_virtualalloc_size_rounds_up_to_page);
    RUN(s3_virtualalloc_reserve_at_address_rounds_down_to_granularity);
    RUN(s3_virtualalloc_reserve_overlapping_reservation_is_invalid_address);
    RUN(s3_virtualalloc_reserve_over_foreign_mapping_is_invalid_address);
    RUN(s3_virtualalloc_new_pages_read_zero);
    RUN(s3_virtualalloc_commit_into_reservation_rounds_to_pages);
    RUN(s3_virtualalloc_commit_outside_reservation_is_invalid_address);
    RUN(s3_virtualalloc_commit_wrapping_range_fails_and_changes_nothing);
    RUN(s3_virtualalloc_recommit_keeps_contents_applies_protection);
    RUN(s3_virtualalloc_commit_null_reserves_and_commits);
    RUN(s3_virtualalloc_reserve_commit_at_address_commits_whole_reservation);
    RUN(s3_virtualalloc_top_down_is_above_normal);
    RUN(s3_virtualalloc_reset_committed_keeps_state_and_protection);
    RUN(s3_virtualalloc_reset_reserved_pages_ok_and_stay_reserved);
    RUN(s3_virtualalloc_reset_outside_reservation_is_invalid_address);
    RUN(s3_virtualalloc_reset_invalid_protection_is_invalidarg);
    RUN(s3_virtualalloc_reset_undo_ok_only_if_contents_intact);

    RUN(s4_virtualfree_check1_invalid_free_types_are_invalidarg);
    RUN(s4_virtualfree_check2_release_nonzero_size_is_invalidarg);
    RUN(s4_virtualfree_check3_foreign_addresses_are_invalidoperation);
    RUN(s4_virtualfree_check3_other_managers_memory_is_invalidoperation);
    RUN(s4_virtualfree_check3_released_reservation_is_invalidoperation);
    RUN(s4_virtualfree_check3_granule_tail_is_invalidoperation);
    RUN(s4_virtualfree_check4_size_zero_not_at_base_is_invalid_address);
    RUN(s4_virtualfree_check5_range_past_end_is_invalidarg);
    RUN(s4_virtualfree_check6_decommit_makes_reserved_recommit_reads_zero);
    RUN(s4_virtualfree_check6_decommit_size_zero_at_base_decommits_all);
    RUN(s4_virtualfree_check6_decommit_reserved_pages_ok);
    RUN(s4_virtualfree_check6_release_frees_whole_reservation);

    RUN(s5_virtualquery_short_buffer_is_bad_length);
    RUN(s5_virtualquery_null_buffer_or_result_is_epointer);
    RUN(s5_virtualquery_result_is_bytes_written);
    RUN(s5_virtualquery_fields_of_reserved_and_committed_runs);
    RUN(s5_virtualquery_runs_split_by_protection_and_modifiers);
    RUN(s5_virtualquery_stack_is_private_readwrite);
    RUN(s5_virtualquery_code_is_image_executable);
    RUN(s5_virtualquery_unmapped_is_free);
    RUN(s5_virtualquery_file_mapping_is_mapped);
    RUN(s5_virtualquery_granule_tail_is_free);
    RUN(s5_virtualquery_released_reservation_is_free);

    RUN(s6_virtualprotect_invalid_protection_is_invalidarg);
    RUN(s6_virtualprotect_null_oldprotect_is_epointer);
    RUN(s6_virtualprotect_range_with_reserved_page_is_invalid_address);
    RUN(s6_virtualprotect_range_across_or_outside_reservations_is_invalid_address);
    RUN(s6_virtualprotect_old_protection_is_first_page_before_call);
    RUN(s6_virtualprotect_readonly_is_hardware_enforced);
    RUN(s6_virtualprotect_noaccess_is_hardware_enforced);
    RUN(s6_reserved_page_faults_in_strict_mode);

    g_m2->lpVtbl->Release(g_m2);
    g_m->lpVtbl->Release(g_m);
    return TEST_SUMMARY("test_rules");
}
