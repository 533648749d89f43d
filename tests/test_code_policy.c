/*
 * test_code_policy.c - issue 23: the per-manager dynamic-code policy (SPEC §8,
 * include/hostmem.h HOSTMEM_CODE_*), call by call.
 *
 * The rules pinned here, in the words: "W^X: a protection that is both
 * writable and executable (PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY) is
 * refused; RW -> RX and back are allowed. No dynamic code, as Windows' ACG: any
 * executable protection on VirtualAlloc or VirtualProtect is refused, also for
 * pages that were already committed. Refusals return what Windows returns under
 * ACG (HRESULT_FROM_WIN32(ERROR_DYNAMIC_CODE_BLOCKED)), change nothing, and are
 * counted. The heap's MALLOC_EXECUTABLE follows the policy. A policy can be
 * tightened at run time but never loosened." Argument errors come first (an
 * invalid protection such as PAGE_EXECUTE_WRITECOPY is E_INVALIDARG, as
 * Windows refuses it for private memory); MEM_RESET ignores the protection.
 * And PAGE_EXECUTE is readable (PROT_READ|PROT_EXEC), as on Windows x86-64.
 *
 * "Changed nothing" is checked four ways after every refused call: VirtualQuery
 * of the range, the manager's statistics (reserved, committed, reservations,
 * kernel mappings), the contents of its readable pages, and the kernel's own
 * protections in /proc/self/maps; the region map validates against the kernel
 * (hostmem_validate(HOSTMEM_VALIDATE_KERNEL)). Code is executed only on x86-64
 * (mov eax, imm32; ret); elsewhere those tests are skipped, saying so.
 */
#define COBJMACROS
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "win32_rules.h"

#define BLOCKED HOSTMEM_E_DYNAMIC_CODE_BLOCKED
#define ERR_ADDR HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define SENTINEL 0xDEADBEEFu

static size_t P, G;

static const uint32_t POLICIES[3] = {HOSTMEM_CODE_ANY, HOSTMEM_CODE_WX, HOSTMEM_CODE_NONE};
static const char *const POLICY_NAMES[3] = {"ANY", "WX", "NONE"};

/* Every base protection Windows names, the two WRITECOPY ones (invalid for
 * private memory) included, and the modifiers tried with each. */
static const DWORD ALL_BASES[8] = {PAGE_NOACCESS, PAGE_READONLY,     PAGE_READWRITE,         PAGE_WRITECOPY,
                                   PAGE_EXECUTE,  PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_WRITECOPY};
static const DWORD MATRIX_MODIFIERS[3] = {0, PAGE_GUARD, PAGE_NOCACHE};

/* The kernel permissions a committed protection gets in strict mode (range.c):
 * a guard page is inaccessible until touched; PAGE_EXECUTE is readable. */
static const char *perms_of(DWORD prot)
{
    if (prot & PAGE_GUARD)
        return "---p";
    switch (prot & 0xFFu) {
    case PAGE_READONLY:
        return "r--p";
    case PAGE_READWRITE:
        return "rw-p";
    case PAGE_EXECUTE:
    case PAGE_EXECUTE_READ:
        return "r-xp";
    case PAGE_EXECUTE_READWRITE:
        return "rwxp";
    default:
        return "---p";
    }
}

static IHostMemoryManager *make(uint32_t policy)
{
    hostmem_config c = {sizeof c};
    c.dynamic_code = policy;
    IHostMemoryManager *m = NULL;
    HRESULT hr = hostmem_create(&c, &m);
    if (hr != S_OK) {
        char b[16];
        TEST_FAIL_AT("hostmem_create(dynamic_code %u) -> %s", (unsigned)policy, test_hr_name(hr, b, sizeof b));
        return NULL;
    }
    return m;
}

static void validate_kernel(IHostMemoryManager *m, const char *what)
{
    char why[256] = "";
    HRESULT hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK) {
        char b[16];
        TEST_FAIL_AT("%s: hostmem_validate(KERNEL) -> %s: %s", what, test_hr_name(hr, b, sizeof b), why);
    }
}

static MEMORY_BASIC_INFORMATION query(IHostMemoryManager *m, const void *at)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n = 0;
    memset(&info, 0, sizeof info);
    HRESULT hr = IHostMemoryManager_VirtualQuery(m, (void *)(uintptr_t)at, &info, sizeof info, &n);
    if (hr != S_OK || n != sizeof info)
        TEST_FAIL_AT("VirtualQuery(%p) -> %08x, %zu bytes", at, (unsigned)hr, (size_t)n);
    return info;
}

/* ---- the kernel's view: /proc/self/maps ----------------------------------------- */

static char maps_text[1 << 22];

static size_t maps_read(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    ssize_t k;
    while (n < sizeof maps_text - 1 && (k = read(fd, maps_text + n, sizeof maps_text - 1 - n)) > 0)
        n += (size_t)k;
    close(fd);
    maps_text[n] = 0;
    return n;
}

/* The kernel's permissions over [lo, hi) as text: "start-end perms" pieces
 * clipped to the range, neighbours with equal permissions merged, holes shown. */
static void maps_over(uintptr_t lo, uintptr_t hi, char *out, size_t size)
{
    size_t used = 0;
    out[0] = 0;
    if (!maps_read()) {
        snprintf(out, size, "unreadable");
        return;
    }
    uintptr_t piece_start = lo, piece_end = lo;
    char piece[5] = "";
#define MAPS_EMIT()                                                                                    \
    do {                                                                                               \
        if (piece_end > piece_start && used < size)                                                    \
            used += (size_t)snprintf(out + used, size - used, "%lx-%lx %s\n", (unsigned long)piece_start, \
                                     (unsigned long)piece_end, piece);                                 \
    } while (0)
    for (char *line = maps_text; *line;) {
        char *next = strchr(line, '\n');
        unsigned long s, e;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &s, &e, perms) == 3 && e > lo && s < hi) {
            uintptr_t a = s < lo ? lo : s, b = e > hi ? hi : e;
            if (a > piece_end) { /* a hole */
                MAPS_EMIT();
                piece_start = piece_end;
                piece_end = a;
                strcpy(piece, "hole");
            }
            if (strcmp(piece, perms) != 0) {
                MAPS_EMIT();
                piece_start = a;
                strcpy(piece, perms);
            }
            piece_end = b;
        }
        line = next ? next + 1 : line + strlen(line);
    }
    if (piece_end < hi) {
        MAPS_EMIT();
        piece_start = piece_end;
        piece_end = hi;
        strcpy(piece, "hole");
    }
    MAPS_EMIT();
#undef MAPS_EMIT
}

/* The permissions of the kernel mapping holding page (4 characters), "none" if unmapped. */
static void perms_at(uintptr_t page, char out[8])
{
    char text[256];
    maps_over(page, page + P, text, sizeof text);
    char *space = strchr(text, ' ');
    if (!space || strchr(space + 1, '\n') != space + 5) {
        strcpy(out, "none");
        return;
    }
    memcpy(out, space + 1, 4);
    out[4] = 0;
}

/* ---- snapshots: everything a refused call must leave as it was ------------------- */

#define MAX_REGIONS 32
struct snapshot {
    size_t regions;
    MEMORY_BASIC_INFORMATION region[MAX_REGIONS];
    uint64_t contents; /* a hash of the readable committed pages of the range */
    char maps[2048];
    hostmem_stats stats;
    size_t kernel_mappings;
};

static int region_equal(const MEMORY_BASIC_INFORMATION *a, const MEMORY_BASIC_INFORMATION *b)
{
    return a->BaseAddress == b->BaseAddress && a->AllocationBase == b->AllocationBase &&
           a->AllocationProtect == b->AllocationProtect && a->RegionSize == b->RegionSize &&
           a->State == b->State && a->Protect == b->Protect && a->Type == b->Type;
}

static void snapshot_take(IHostMemoryManager *m, uintptr_t base, size_t size, struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    uint64_t h = 1469598103934665603ull;
    for (uintptr_t q = base; q < base + size && s->regions < MAX_REGIONS;) {
        MEMORY_BASIC_INFORMATION *r = &s->region[s->regions++];
        *r = query(m, (void *)q);
        if (!r->RegionSize)
            break;
        if (r->State == MEM_COMMIT && readable(r->Protect))
            for (size_t i = 0; i < r->RegionSize; i += 8) {
                h ^= *(const volatile uint64_t *)((uintptr_t)r->BaseAddress + i);
                h *= 1099511628211ull;
            }
        q = (uintptr_t)r->BaseAddress + r->RegionSize;
    }
    s->contents = h;
    if (size)
        maps_over(base, base + size, s->maps, sizeof s->maps);
    s->stats = stats_of(m);
    if (hostmem_kernel_mappings(m, &s->kernel_mappings) != S_OK)
        s->kernel_mappings = SIZE_MAX;
}

static const char *g_case = ""; /* the case a failure message names */

static void check_unchanged(const struct snapshot *a, const struct snapshot *b)
{
    if (a->regions != b->regions)
        TEST_FAIL_AT("%s: VirtualQuery walk: %zu regions before, %zu after", g_case, a->regions, b->regions);
    for (size_t i = 0; i < a->regions && i < b->regions; i++)
        if (!region_equal(&a->region[i], &b->region[i]))
            TEST_FAIL_AT("%s: VirtualQuery region %zu changed: base %p size %#zx state %#x protect %#x -> "
                         "base %p size %#zx state %#x protect %#x",
                         g_case, i, a->region[i].BaseAddress, (size_t)a->region[i].RegionSize,
                         (unsigned)a->region[i].State, (unsigned)a->region[i].Protect, b->region[i].BaseAddress,
                         (size_t)b->region[i].RegionSize, (unsigned)b->region[i].State,
                         (unsigned)b->region[i].Protect);
    if (a->contents != b->contents)
        TEST_FAIL_AT("%s: the contents of the range changed", g_case);
    if (strcmp(a->maps, b->maps) != 0)
        TEST_FAIL_AT("%s: /proc/self/maps over the range changed:\n%s-- became --\n%s", g_case, a->maps, b->maps);
    if (a->stats.reserved_bytes != b->stats.reserved_bytes ||
        a->stats.committed_bytes != b->stats.committed_bytes ||
        a->stats.reservations != b->stats.reservations || a->stats.heap_bytes != b->stats.heap_bytes ||
        a->stats.kernel_mappings != b->stats.kernel_mappings)
        TEST_FAIL_AT("%s: statistics changed: reserved %#zx -> %#zx, committed %#zx -> %#zx, reservations "
                     "%zu -> %zu, heap %#zx -> %#zx, implied mappings %zu -> %zu",
                     g_case, a->stats.reserved_bytes, b->stats.reserved_bytes, a->stats.committed_bytes,
                     b->stats.committed_bytes, a->stats.reservations, b->stats.reservations,
                     a->stats.heap_bytes, b->stats.heap_bytes, a->stats.kernel_mappings,
                     b->stats.kernel_mappings);
    if (a->kernel_mappings != b->kernel_mappings)
        TEST_FAIL_AT("%s: hostmem_kernel_mappings %zu -> %zu", g_case, a->kernel_mappings, b->kernel_mappings);
}

/* ---- the matrix: policy x protection x call ------------------------------------- */

enum op {
    OP_RESERVE,        /* VirtualAlloc(NULL, 4 pages, MEM_RESERVE) */
    OP_RESERVE_COMMIT, /* VirtualAlloc(NULL, 4 pages, MEM_RESERVE | MEM_COMMIT) */
    OP_COMMIT_NULL,    /* VirtualAlloc(NULL, 4 pages, MEM_COMMIT): reserves too */
    OP_RESERVE_AT,     /* VirtualAlloc(released address, 4 pages, MEM_RESERVE | MEM_COMMIT) */
    OP_COMMIT,         /* VirtualAlloc(pages 10-13, MEM_COMMIT): two committed, two reserved */
    OP_PROTECT,        /* VirtualProtect(pages 5-8) of read-write pages */
    OP_PROTECT_CODE,   /* VirtualProtect(pages 5-8) of PAGE_EXECUTE_READ pages made before tightening */
    OP_RESET,          /* VirtualAlloc(pages 4-7, MEM_RESET) */
    OP_RESET_UNDO,     /* VirtualAlloc(pages 4-7, MEM_RESET_UNDO) of pages never reset */
    OPS
};
static const char *const OP_NAMES[OPS] = {"reserve", "reserve+commit", "commit(NULL)", "reserve+commit at",
                                          "commit", "protect", "protect code", "reset", "reset undo"};

#define FIXTURE_PAGES 16

/* The state each call starts from: a fresh manager with the policy (from its
 * configuration; for OP_PROTECT_CODE made under ANY, code committed, then
 * tightened at run time) and, for the calls on an existing reservation, 16
 * reserved read-write pages of which 4-11 are committed and hold a pattern. */
struct fixture {
    IHostMemoryManager *m;
    uintptr_t base;
    size_t size;
    DWORD committed; /* the protection of pages 4-11 */
};

static uintptr_t page_of(const struct fixture *f, size_t k)
{
    return f->base + k * P;
}

static int fixture_make(enum op op, uint32_t policy, struct fixture *f)
{
    memset(f, 0, sizeof *f);
    f->m = make(op == OP_PROTECT_CODE ? HOSTMEM_CODE_ANY : policy);
    if (!f->m)
        return 0;
    if (op <= OP_COMMIT_NULL)
        return 1;
    void *p = NULL;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(f->m, NULL, FIXTURE_PAGES * P, MEM_RESERVE, PAGE_READWRITE,
                                                 eTaskCritical, &p);
    if (hr != S_OK)
        goto broken;
    f->base = (uintptr_t)p;
    f->size = FIXTURE_PAGES * P;
    if (op == OP_RESERVE_AT) {
        if (IHostMemoryManager_VirtualFree(f->m, p, 0, MEM_RELEASE) != S_OK)
            goto broken;
        return 1;
    }
    hr = IHostMemoryManager_VirtualAlloc(f->m, (void *)page_of(f, 4), 8 * P, MEM_COMMIT, PAGE_READWRITE,
                                         eTaskCritical, &p);
    if (hr != S_OK)
        goto broken;
    for (size_t k = 4; k < 12; k++)
        for (size_t i = 0; i < P; i += 64)
            *(volatile uint64_t *)(page_of(f, k) + i) = 0x9E3779B97F4A7C15ull * (k * P + i + 1);
    f->committed = PAGE_READWRITE;
    if (op == OP_PROTECT_CODE) {
        DWORD old;
        if (IHostMemoryManager_VirtualProtect(f->m, (void *)page_of(f, 4), 8 * P, PAGE_EXECUTE_READ, &old) != S_OK)
            goto broken;
        f->committed = PAGE_EXECUTE_READ;
        if (hostmem_restrict_dynamic_code(f->m, policy) != S_OK)
            goto broken;
    }
    return 1;
broken:
    TEST_FAIL_AT("%s: the fixture could not be made", g_case);
    IHostMemoryManager_Release(f->m);
    f->m = NULL;
    return 0;
}

static HRESULT expected(uint32_t policy, enum op op, DWORD prot)
{
    if (!prot_valid(prot))
        return E_INVALIDARG; /* arguments first, under every policy */
    if (op == OP_RESET || op == OP_RESET_UNDO)
        return S_OK; /* MEM_RESET ignores the protection */
    return code_policy_refuses(policy, prot) ? BLOCKED : S_OK; /* tests/win32_rules.h */
}

static HRESULT op_call(enum op op, const struct fixture *f, DWORD prot, void **out, DWORD *old)
{
    IHostMemoryManager *m = f->m;
    switch (op) {
    case OP_RESERVE:
        return IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE, prot, eTaskCritical, out);
    case OP_RESERVE_COMMIT:
        return IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, prot, eTaskCritical, out);
    case OP_COMMIT_NULL:
        return IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_COMMIT, prot, eTaskCritical, out);
    case OP_RESERVE_AT:
        return IHostMemoryManager_VirtualAlloc(m, (void *)f->base, 4 * P, MEM_RESERVE | MEM_COMMIT, prot,
                                               eTaskCritical, out);
    case OP_COMMIT:
        return IHostMemoryManager_VirtualAlloc(m, (void *)page_of(f, 10), 4 * P, MEM_COMMIT, prot, eTaskCritical,
                                               out);
    case OP_PROTECT:
    case OP_PROTECT_CODE:
        return IHostMemoryManager_VirtualProtect(m, (void *)page_of(f, 5), 4 * P, prot, old);
    case OP_RESET:
        return IHostMemoryManager_VirtualAlloc(m, (void *)page_of(f, 4), 4 * P, MEM_RESET, prot, eTaskCritical, out);
    case OP_RESET_UNDO:
        return IHostMemoryManager_VirtualAlloc(m, (void *)page_of(f, 4), 4 * P, MEM_RESET_UNDO, prot,
                                               eTaskCritical, out);
    default:
        return E_FAIL;
    }
}

/* Pages [from, to) of the fixture: committed with protect, kernel permissions to match. */
static void check_committed(const struct fixture *f, size_t from, size_t to, DWORD protect)
{
    for (size_t k = from; k < to; k++) {
        MEMORY_BASIC_INFORMATION info = query(f->m, (void *)page_of(f, k));
        if (info.State != MEM_COMMIT || info.Protect != protect)
            TEST_FAIL_AT("%s: page %zu: state %#x protect %#x, expected MEM_COMMIT %#x", g_case, k,
                         (unsigned)info.State, (unsigned)info.Protect, (unsigned)protect);
    }
    char got[512], want[128];
    maps_over(page_of(f, from), page_of(f, to), got, sizeof got);
    snprintf(want, sizeof want, "%lx-%lx %s\n", (unsigned long)page_of(f, from), (unsigned long)page_of(f, to),
             perms_of(protect));
    if (strcmp(got, want) != 0)
        TEST_FAIL_AT("%s: pages %zu-%zu: /proc/self/maps\n%sexpected\n%s", g_case, from, to - 1, got, want);
}

static void matrix_case(size_t policy_index, enum op op, DWORD prot)
{
    uint32_t policy = POLICIES[policy_index];
    char name[128];
    snprintf(name, sizeof name, "policy %s, %s, protection %#x", POLICY_NAMES[policy_index], OP_NAMES[op],
             (unsigned)prot);
    g_case = name;
    struct fixture f;
    if (!fixture_make(op, policy, &f))
        return;
    HRESULT want = expected(policy, op, prot);
    struct snapshot before, after;
    snapshot_take(f.m, f.base, f.size, &before);
    void *out = (void *)(uintptr_t)SENTINEL;
    DWORD old = SENTINEL;
    HRESULT hr = op_call(op, &f, prot, &out, &old);
    snapshot_take(f.m, f.base, f.size, &after);
    int is_protect = op == OP_PROTECT || op == OP_PROTECT_CODE;
    if (hr != want) {
        char b1[16], b2[16];
        TEST_FAIL_AT("%s -> %s, expected %s", name, test_hr_name(hr, b1, sizeof b1), test_hr_name(want, b2, sizeof b2));
    }
    size_t refused = after.stats.dynamic_code_refusals - before.stats.dynamic_code_refusals;
    if (refused != (hr == BLOCKED ? 1u : 0u))
        TEST_FAIL_AT("%s: dynamic_code_refusals grew by %zu", name, refused);
    if (after.stats.dynamic_code != policy)
        TEST_FAIL_AT("%s: hostmem_stats.dynamic_code %u", name, (unsigned)after.stats.dynamic_code);
    if (hr != S_OK) {
        check_unchanged(&before, &after);
        if (!is_protect && out != NULL)
            TEST_FAIL_AT("%s: *ppMem %p after a failure, expected NULL", name, out);
        if (is_protect && old != SENTINEL)
            TEST_FAIL_AT("%s: *pflOldProtect written (%#x) by a failure", name, (unsigned)old);
    } else if (hr == want) {
        /* what the call did, to be sure the refusals above are the policy's */
        switch (op) {
        case OP_RESERVE:
        case OP_RESERVE_COMMIT:
        case OP_COMMIT_NULL:
        case OP_RESERVE_AT: {
            int commit = op != OP_RESERVE;
            MEMORY_BASIC_INFORMATION info = query(f.m, out);
            CHECK(out != NULL && (uintptr_t)out % G == 0);
            if (op == OP_RESERVE_AT)
                CHECK(out == (void *)f.base);
            CHECK(info.AllocationBase == out);
            CHECK_EQ(info.AllocationProtect, prot);
            CHECK_EQ(info.State, commit ? MEM_COMMIT : MEM_RESERVE);
            CHECK_EQ(info.Protect, commit ? prot : 0);
            CHECK_EQ(info.RegionSize, 4 * P);
            char perms[8];
            perms_at((uintptr_t)out, perms);
            if (strcmp(perms, commit ? perms_of(prot) : "---p") != 0)
                TEST_FAIL_AT("%s: /proc/self/maps %s", name, perms);
            CHECK_EQ(after.stats.reserved_bytes - before.stats.reserved_bytes, 4 * P);
            CHECK_EQ(after.stats.committed_bytes - before.stats.committed_bytes, commit ? 4 * P : 0);
            CHECK_HR(IHostMemoryManager_VirtualFree(f.m, out, 0, MEM_RELEASE), S_OK);
            break;
        }
        case OP_COMMIT:
            CHECK(out == (void *)page_of(&f, 10));
            check_committed(&f, 10, 14, allocation_wide(PAGE_READWRITE, prot));
            CHECK_EQ(after.stats.committed_bytes - before.stats.committed_bytes, 2 * P);
            break;
        case OP_PROTECT:
        case OP_PROTECT_CODE:
            CHECK_EQ(old, f.committed);
            check_committed(&f, 5, 9, allocation_wide(PAGE_READWRITE, prot));
            check_committed(&f, 4, 5, f.committed);
            check_committed(&f, 9, 12, f.committed);
            break;
        case OP_RESET:
        case OP_RESET_UNDO:
            CHECK(out == (void *)page_of(&f, 4));
            before.contents = after.contents; /* MEM_RESET: the contents are undefined */
            check_unchanged(&before, &after);
            break;
        default:
            break;
        }
    }
    validate_kernel(f.m, name);
    CHECK_EQ(IHostMemoryManager_Release(f.m), 0);
    g_case = "";
}

static void matrix(enum op first, enum op last)
{
    for (size_t pi = 0; pi < 3; pi++)
        for (enum op op = first; op <= last; op++)
            for (size_t b = 0; b < 8; b++)
                for (size_t mo = 0; mo < 3; mo++)
                    matrix_case(pi, op, ALL_BASES[b] | MATRIX_MODIFIERS[mo]);
}

/* VirtualAlloc that reserves (NULL address with MEM_RESERVE, MEM_RESERVE |
 * MEM_COMMIT or MEM_COMMIT alone, or at an address released before): invalid
 * protections are E_INVALIDARG under every policy; W^X refuses
 * PAGE_EXECUTE_READWRITE, no dynamic code every executable protection, with
 * the modifiers too, even for a reservation alone; a refusal reserves nothing
 * and is counted once. */
TEST(reserve_result_by_policy_and_protection_refusal_changes_nothing)
{
    matrix(OP_RESERVE, OP_RESERVE_AT);
}

/* MEM_COMMIT into a reservation (pages already committed among them): the same
 * rule; a refusal commits nothing, changes no protection and keeps the
 * committed pages' contents. */
TEST(commit_result_by_policy_and_protection_refusal_changes_nothing)
{
    matrix(OP_COMMIT, OP_COMMIT);
}

/* VirtualProtect of committed read-write pages, and of PAGE_EXECUTE_READ pages
 * committed before the policy was tightened at run time: refused by the
 * protection asked for alone (RX -> RW allowed under every policy: the pages
 * stop being code); a refusal changes no page and leaves *pflOldProtect alone. */
TEST(protect_result_by_policy_and_protection_refusal_changes_nothing)
{
    matrix(OP_PROTECT, OP_PROTECT_CODE);
}

/* MEM_RESET and MEM_RESET_UNDO ignore the protection ([ms-VirtualAlloc]), so
 * the policy never refuses them; it must still be valid (E_INVALIDARG). */
TEST(mem_reset_ignores_the_protection_under_every_policy)
{
    matrix(OP_RESET, OP_RESET_UNDO);
}

/* Argument errors come first and are not the policy's refusals: a NULL
 * out-pointer (E_POINTER), size 0, a bad level, a bad allocation type, an
 * invalid protection (E_INVALIDARG), under no dynamic code with executable
 * protections; nothing is counted. */
TEST(argument_errors_come_before_the_policy_and_are_not_counted)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_NONE);
    REQUIRE(m);
    void *p = NULL;
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    DWORD old = SENTINEL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, NULL),
             E_POINTER);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 0, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p),
             E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, (EMemoryCriticalLevel)7, &p),
             E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_DECOMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p),
             E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ | PAGE_EXECUTE, eTaskCritical,
                                             &p),
             E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ | PAGE_GUARD | PAGE_NOCACHE,
                                             eTaskCritical, &p),
             E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READ, NULL), E_POINTER);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_WRITECOPY, &old), E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READ | 0x800, &old), E_INVALIDARG);
    CHECK_EQ(old, SENTINEL);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* The library's order (vm.c): the policy answers before the address is
 * looked at, so an executable protection under no dynamic code is refused
 * even where the address would be ERROR_INVALID_ADDRESS: free memory, a
 * released reservation, reserved pages; a non-executable one gets the address
 * error. */
TEST(policy_answers_before_the_address)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_NONE);
    REQUIRE(m);
    void *p = NULL;
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    char *reserved = p;
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    char *released = p;
    REQUIRE_HR(IHostMemoryManager_VirtualFree(m, released, 0, MEM_RELEASE), S_OK);
    DWORD old = SENTINEL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, released, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p),
             BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, released, P, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &p), ERR_ADDR);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, reserved, P, PAGE_EXECUTE, &old), BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, reserved, P, PAGE_READONLY, &old), ERR_ADDR);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, released, P, PAGE_EXECUTE_READ, &old), BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, reserved + P, P, MEM_RESERVE, PAGE_EXECUTE_READ, eTaskCritical, &p),
             BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, reserved + P, P, MEM_RESERVE, PAGE_READONLY, eTaskCritical, &p),
             ERR_ADDR);
    CHECK_EQ(old, SENTINEL);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 4);
    CHECK_EQ(query(m, reserved).State, MEM_RESERVE);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- code: write, protect, execute ----------------------------------------------- */

#if defined(__x86_64__)
#define CAN_EXECUTE 1
/* mov eax, imm32; ret */
static void write_code(void *at, uint32_t value)
{
    unsigned char code[6] = {0xB8, (unsigned char)value, (unsigned char)(value >> 8), (unsigned char)(value >> 16),
                             (unsigned char)(value >> 24), 0xC3};
    memcpy(at, code, sizeof code);
}
static uint32_t run_code(const void *at)
{
    uint32_t (*function)(void);
    memcpy(&function, &at, sizeof function);
    return function();
}
#define SKIP_UNLESS_EXECUTABLE() ((void)0)
#else
#define CAN_EXECUTE 0
#define SKIP_UNLESS_EXECUTABLE() TEST_SKIP("code is executed only on x86-64 (mov eax, imm32; ret)")
#endif

/* W^X: a JIT's cycle - commit read-write, write code, VirtualProtect to
 * PAGE_EXECUTE_READ, run it; back to PAGE_READWRITE, patch it, execute-read
 * again, run the new code - is allowed step by step, while the page is never
 * writable and executable at once (VirtualQuery and /proc/self/maps each
 * time), and PAGE_EXECUTE_READWRITE on the way is refused. */
TEST(wx_allows_the_jit_cycle_rw_rx_rw_rx)
{
    SKIP_UNLESS_EXECUTABLE();
#if CAN_EXECUTE
    IHostMemoryManager *m = make(HOSTMEM_CODE_WX);
    REQUIRE(m);
    void *p = NULL;
    DWORD old = 0;
    char perms[8];
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
               S_OK);
    write_code(p, 42);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READ, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK_EQ(query(m, p).Protect, PAGE_EXECUTE_READ);
    perms_at((uintptr_t)p, perms);
    CHECK(strcmp(perms, "r-xp") == 0);
    CHECK_EQ(run_code(p), 42);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READWRITE, &old), BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_READWRITE, &old), S_OK);
    CHECK_EQ(old, PAGE_EXECUTE_READ);
    perms_at((uintptr_t)p, perms);
    CHECK(strcmp(perms, "rw-p") == 0);
    write_code(p, 43);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READ, &old), S_OK);
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK_EQ(run_code(p), 43);
    /* the same through a commit of committed pages, which applies the new protection */
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, p, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    write_code(p, 44);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, p, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), S_OK);
    CHECK_EQ(run_code(p), 44);
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.dynamic_code_refusals, 1);
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_WX);
    validate_kernel(m, "after the cycle");
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
#endif
}

/* Tightening never takes back what was granted: code committed under ANY
 * (read-write-execute, and execute-read) stays executable after the policy
 * becomes W^X and then no dynamic code - VirtualQuery, /proc/self/maps, a read
 * and a call say so - while new executable protections are refused. */
TEST(pages_already_executable_stay_executable_after_tightening)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    void *rwx = NULL, *rx = NULL;
    DWORD old;
    char perms[8];
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READWRITE, eTaskCritical, &rwx),
               S_OK);
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &rx), S_OK);
#if CAN_EXECUTE
    write_code(rwx, 7);
    write_code(rx, 8);
#else
    memset(rwx, 7, 16);
    memset(rx, 8, 16);
#endif
    REQUIRE_HR(IHostMemoryManager_VirtualProtect(m, rx, P, PAGE_EXECUTE_READ, &old), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_EQ(query(m, rwx).Protect, PAGE_EXECUTE_READWRITE);
    CHECK_EQ(query(m, rx).Protect, PAGE_EXECUTE_READ);
    perms_at((uintptr_t)rwx, perms);
    CHECK(strcmp(perms, "rwxp") == 0);
    perms_at((uintptr_t)rx, perms);
    CHECK(strcmp(perms, "r-xp") == 0);
#if CAN_EXECUTE
    CHECK_EQ(run_code(rwx), 7);
    CHECK_EQ(run_code(rx), 8);
    CHECK_EQ(((volatile unsigned char *)rx)[0], 0xB8);
    write_code(rwx, 9); /* still writable too: nothing was taken back */
    CHECK_EQ(run_code(rwx), 9);
#else
    CHECK_EQ(((volatile unsigned char *)rx)[0], 8);
#endif
    /* a second commit of the same pages with their own protection is a new request: refused */
    void *p;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, rx, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), BLOCKED);
    CHECK_EQ(query(m, rx).Protect, PAGE_EXECUTE_READ);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 1);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Under no dynamic code, code may stop being code - VirtualProtect of an
 * executable page to PAGE_READWRITE, PAGE_READONLY or PAGE_NOACCESS is allowed
 * (each returns the old protection) - but never becomes code again: back to
 * PAGE_EXECUTE_READ or PAGE_EXECUTE is refused, and so is a guard page with an
 * executable base. */
TEST(no_dynamic_code_lets_code_stop_being_code_but_never_back)
{
    static const DWORD stops[] = {PAGE_READWRITE, PAGE_READONLY, PAGE_NOACCESS, PAGE_READWRITE | PAGE_GUARD};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
        REQUIRE(m);
        void *p = NULL;
        DWORD old = 0;
        REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 2 * P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p),
                   S_OK);
        CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
        CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, stops[i], &old), S_OK);
        CHECK_EQ(old, PAGE_EXECUTE_READ);
        CHECK_EQ(query(m, p).Protect, stops[i]);
        CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE_READ, &old), BLOCKED);
        CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE, &old), BLOCKED);
        CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, 2 * P, PAGE_EXECUTE_READ | PAGE_GUARD, &old), BLOCKED);
        CHECK_EQ(query(m, p).Protect, stops[i]);
        CHECK_EQ(query(m, (char *)p + P).Protect, PAGE_EXECUTE_READ);
        CHECK_EQ(stats_of(m).dynamic_code_refusals, 3);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

/* PAGE_EXECUTE is readable, as on Windows x86-64 and Wine (range.c): a read of
 * a committed PAGE_EXECUTE page does not fault (in a child, so that a fault is
 * a reported failure), /proc/self/maps shows r-x, VirtualQuery still says
 * PAGE_EXECUTE; PAGE_EXECUTE is not writable, so W^X allows it and no dynamic
 * code refuses it. */
static void read_execute_page(void)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_WX);
    if (!m)
        return;
    void *p = NULL;
    DWORD old;
    char perms[8];
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    if (!p)
        return;
    ((volatile unsigned char *)p)[5] = 0x5A;
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, p, P, PAGE_EXECUTE, &old), S_OK);
    CHECK_EQ(query(m, p).Protect, PAGE_EXECUTE);
    perms_at((uintptr_t)p, perms);
    CHECK(strcmp(perms, "r-xp") == 0);
    CHECK_EQ(((volatile unsigned char *)p)[5], 0x5A);
    /* committed PAGE_EXECUTE at once: reads zero */
    void *q = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE, eTaskCritical, &q),
             S_OK);
    if (q) {
        CHECK_EQ(query(m, q).Protect, PAGE_EXECUTE);
        CHECK_EQ(query(m, q).AllocationProtect, PAGE_EXECUTE);
        perms_at((uintptr_t)q, perms);
        CHECK(strcmp(perms, "r-xp") == 0);
        CHECK_EQ(((volatile unsigned char *)q)[P - 1], 0);
    }
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_HR(IHostMemoryManager_VirtualProtect(m, (char *)p + P, P, PAGE_EXECUTE, &old), BLOCKED);
    CHECK_EQ(((volatile unsigned char *)p)[5], 0x5A);
    validate_kernel(m, "after PAGE_EXECUTE reads");
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

TEST(page_execute_is_readable_and_queries_as_page_execute)
{
    test_in_child(read_execute_page, "reading PAGE_EXECUTE pages");
}

/* ---- tightening ------------------------------------------------------------------ */

/* hostmem_restrict_dynamic_code: ANY -> WX -> NONE each S_OK, also asking for
 * the level in force again; a looser one (NONE -> WX, NONE -> ANY, WX -> ANY)
 * is E_ACCESSDENIED and changes nothing (hostmem_stats.dynamic_code, and what
 * the calls do); ANY -> NONE in one step too. None of these calls counts as a
 * refusal of dynamic code. */
TEST(policy_tightens_any_wx_none_and_is_never_loosened)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    void *p = NULL;
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_ANY);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_ANY), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_WX);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_ANY), E_ACCESSDENIED);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_WX);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READWRITE, eTaskCritical, &p),
             BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), E_ACCESSDENIED);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_ANY), E_ACCESSDENIED);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), BLOCKED);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 2);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);

    m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), E_ACCESSDENIED);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);

    /* a policy from the configuration is tightened, never loosened, the same way */
    m = make(HOSTMEM_CODE_WX);
    REQUIRE(m);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_ANY), E_ACCESSDENIED);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* An unknown policy (3, 0xFFFFFFFF) is E_INVALIDARG and changes nothing, from
 * every level; NULL or an object that is not a manager is E_POINTER. */
TEST(unknown_policy_is_invalidarg_and_changes_nothing)
{
    static const uint32_t unknown[] = {3, 4, 0x80000000u, 0xFFFFFFFFu};
    for (size_t pi = 0; pi < 3; pi++) {
        IHostMemoryManager *m = make(POLICIES[pi]);
        REQUIRE(m);
        for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++)
            CHECK_HR(hostmem_restrict_dynamic_code(m, unknown[i]), E_INVALIDARG);
        CHECK_EQ(stats_of(m).dynamic_code, POLICIES[pi]);
        void *p = NULL;
        CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p),
                 POLICIES[pi] == HOSTMEM_CODE_NONE ? BLOCKED : S_OK);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
    struct {
        const void *vtable; /* an object whose first member is not the manager's vtable */
        char rest[64];
    } not_a_manager = {&not_a_manager, {0}};
    CHECK_HR(hostmem_restrict_dynamic_code(NULL, HOSTMEM_CODE_WX), E_POINTER);
    CHECK_HR(hostmem_restrict_dynamic_code((IHostMemoryManager *)(void *)&not_a_manager, HOSTMEM_CODE_WX), E_POINTER);
}

/* hostmem_create refuses a configuration whose dynamic_code is not a
 * HOSTMEM_CODE_* value with E_INVALIDARG (no manager) and
 * hostmem_config_problem names the field; a configuration from before the
 * field (size short of it) means ANY, whatever lies past its size. */
TEST(config_dynamic_code_checked_and_defaults_to_any)
{
    static const uint32_t unknown[] = {3, 0xFFFFFFFFu};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        hostmem_config c = {sizeof c};
        c.dynamic_code = unknown[i];
        IHostMemoryManager *m = (IHostMemoryManager *)(uintptr_t)1;
        CHECK_HR(hostmem_create(&c, &m), E_INVALIDARG);
        CHECK(m == NULL);
        const char *why = hostmem_config_problem(&c);
        CHECK(why && strstr(why, "dynamic_code"));
    }
    for (size_t pi = 0; pi < 3; pi++) {
        hostmem_config c = {sizeof c};
        c.dynamic_code = POLICIES[pi];
        CHECK(hostmem_config_problem(&c) == NULL);
    }
    hostmem_config old = {offsetof(hostmem_config, dynamic_code)};
    old.dynamic_code = 0xFFFFFFFFu; /* past its size: not read */
    CHECK(hostmem_config_problem(&old) == NULL);
    IHostMemoryManager *m = NULL;
    REQUIRE_HR(hostmem_create(&old, &m), S_OK);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_ANY);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    /* no configuration at all: ANY */
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    CHECK_EQ(stats_of(m).dynamic_code, HOSTMEM_CODE_ANY);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* The policy and its count are per manager: one manager's refusals and
 * tightening leave another's alone; a stats struct from before the fields
 * gets none of them. */
TEST(policy_and_refusals_are_per_manager)
{
    IHostMemoryManager *strict = make(HOSTMEM_CODE_NONE), *open_ = make(HOSTMEM_CODE_ANY);
    REQUIRE(strict && open_);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(strict, NULL, P, MEM_COMMIT, PAGE_EXECUTE, eTaskCritical, &p), BLOCKED);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(open_, NULL, P, MEM_COMMIT, PAGE_EXECUTE, eTaskCritical, &p), S_OK);
    CHECK_EQ(stats_of(strict).dynamic_code_refusals, 1);
    CHECK_EQ(stats_of(open_).dynamic_code_refusals, 0);
    CHECK_EQ(stats_of(open_).dynamic_code, HOSTMEM_CODE_ANY);
    struct {
        hostmem_stats head;
        char guard[16];
    } short_stats;
    memset(&short_stats, 0x77, sizeof short_stats);
    short_stats.head.size = offsetof(hostmem_stats, dynamic_code_refusals);
    CHECK_HR(hostmem_get_stats(strict, &short_stats.head), S_OK);
    CHECK_EQ(short_stats.head.dynamic_code_refusals, (size_t)0x7777777777777777ull);
    CHECK_EQ(short_stats.head.dynamic_code, 0x77777777u);
    CHECK_EQ(IHostMemoryManager_Release(strict), 0);
    CHECK_EQ(IHostMemoryManager_Release(open_), 0);
}

/* A tightening is seen by every thread and never undone: threads commit
 * PAGE_EXECUTE_READ while the main thread tightens to no dynamic code; each
 * call either succeeds or is refused, no thread sees a success after its first
 * refusal, every call after the tightening returned is refused, and the count
 * is the refusals seen. Racing tightenings end at the strictest. */
#define RACERS 4
struct racer {
    IHostMemoryManager *m;
    atomic_int *stop;
    atomic_int *started;
    long succeeded, refused, other, success_after_refusal;
};

static void *racer_run(void *arg)
{
    struct racer *r = arg;
    atomic_fetch_add(r->started, 1);
    while (!atomic_load(r->stop) || r->refused == 0) {
        void *p = NULL;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(r->m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ,
                                                     eTaskCritical, &p);
        if (hr == S_OK) {
            r->succeeded++;
            if (r->refused)
                r->success_after_refusal++;
            IHostMemoryManager_VirtualFree(r->m, p, 0, MEM_RELEASE);
        } else if (hr == BLOCKED) {
            r->refused++;
        } else {
            r->other++;
            break;
        }
        if (r->refused >= 64)
            break;
    }
    return NULL;
}

static void *tightener(void *arg)
{
    IHostMemoryManager *m = arg;
    HRESULT a = hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX);
    HRESULT b = hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE);
    HRESULT c = hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_ANY);
    /* WX is S_OK or, if another got to NONE first, E_ACCESSDENIED; NONE always S_OK;
     * ANY is never S_OK after NONE */
    int ok = (a == S_OK || a == E_ACCESSDENIED) && b == S_OK && c == E_ACCESSDENIED;
    return (void *)(intptr_t)ok;
}

TEST(tightening_is_seen_by_every_thread_and_never_undone)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    atomic_int stop = 0, started = 0;
    struct racer racers[RACERS];
    pthread_t threads[RACERS];
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (struct racer){m, &stop, &started, 0, 0, 0, 0};
        REQUIRE(pthread_create(&threads[i], NULL, racer_run, &racers[i]) == 0);
    }
    while (atomic_load(&started) < RACERS)
        sched_yield();
    for (int i = 0; i < 200; i++)
        sched_yield();
    pthread_t tighteners[3];
    for (int i = 0; i < 3; i++)
        REQUIRE(pthread_create(&tighteners[i], NULL, tightener, m) == 0);
    for (int i = 0; i < 3; i++) {
        void *ok = NULL;
        pthread_join(tighteners[i], &ok);
        CHECK(ok == (void *)(intptr_t)1);
    }
    /* from here every call is refused */
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ, eTaskCritical, &p), BLOCKED);
    atomic_store(&stop, 1);
    long refused = 1;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(threads[i], NULL);
        CHECK_EQ(racers[i].other, 0);
        CHECK_EQ(racers[i].success_after_refusal, 0);
        CHECK(racers[i].refused > 0);
        refused += racers[i].refused;
    }
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_EQ(s.dynamic_code_refusals, (size_t)refused);
    CHECK_EQ(s.reservations, 0);
    CHECK_EQ(s.committed_bytes, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- the heap's MALLOC_EXECUTABLE ------------------------------------------------- */

/* CreateMalloc(MALLOC_EXECUTABLE) - a heap whose pages are writable and
 * executable - is refused under W^X and under no dynamic code with the
 * dynamic-code HRESULT, *ppMalloc NULL, nothing reserved, and counted once;
 * an unknown type bit is E_INVALIDARG first (not counted); a heap without
 * MALLOC_EXECUTABLE is made and works, its blocks read-write. */
TEST(executable_heap_refused_under_wx_and_none_plain_heap_fine)
{
    for (size_t pi = 1; pi < 3; pi++) {
        IHostMemoryManager *m = make(POLICIES[pi]);
        REQUIRE(m);
        hostmem_stats before = stats_of(m);
        IHostMalloc *h = (IHostMalloc *)(uintptr_t)1;
        CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE, &h), BLOCKED);
        CHECK(h == NULL);
        h = (IHostMalloc *)(uintptr_t)1;
        CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE | MALLOC_THREADSAFE, &h), BLOCKED);
        CHECK(h == NULL);
        CHECK_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE | 0x4, &h), E_INVALIDARG);
        hostmem_stats after = stats_of(m);
        CHECK_EQ(after.dynamic_code_refusals - before.dynamic_code_refusals, 2);
        CHECK_EQ(after.reservations, before.reservations);
        CHECK_EQ(after.committed_bytes, before.committed_bytes);
        static const DWORD plain[] = {0, MALLOC_THREADSAFE};
        for (size_t t = 0; t < 2; t++) {
            h = NULL;
            CHECK_HR(IHostMemoryManager_CreateMalloc(m, plain[t], &h), S_OK);
            if (!h)
                continue;
            void *small = NULL, *large = NULL;
            CHECK_HR(IHostMalloc_Alloc(h, 100, eTaskCritical, &small), S_OK);
            CHECK_HR(IHostMalloc_Alloc(h, 100000, eTaskCritical, &large), S_OK);
            if (small && large) {
                memset(small, 1, 100);
                memset(large, 2, 100000);
                CHECK_EQ(query(m, small).Protect, PAGE_READWRITE);
                CHECK_EQ(query(m, large).Protect, PAGE_READWRITE);
            }
            CHECK_HR(IHostMalloc_Free(h, small), S_OK);
            CHECK_HR(IHostMalloc_Free(h, large), S_OK);
            CHECK_EQ(IHostMalloc_Release(h), 0);
        }
        CHECK_EQ(stats_of(m).dynamic_code_refusals - before.dynamic_code_refusals, 2);
        CHECK_EQ(IHostMemoryManager_Release(m), 0);
    }
}

/* Under ANY an executable heap's blocks are PAGE_EXECUTE_READWRITE and may
 * hold code that runs (x86-64). */
TEST(executable_heap_under_any_holds_code)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    IHostMalloc *h = NULL;
    REQUIRE_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE, &h), S_OK);
    void *block = NULL;
    REQUIRE_HR(IHostMalloc_Alloc(h, 64, eTaskCritical, &block), S_OK);
    CHECK_EQ(query(m, block).Protect, PAGE_EXECUTE_READWRITE);
    char perms[8];
    perms_at((uintptr_t)block & ~(uintptr_t)(P - 1), perms);
    CHECK(strcmp(perms, "rwxp") == 0);
#if CAN_EXECUTE
    write_code(block, 1234);
    CHECK_EQ(run_code(block), 1234);
#endif
    CHECK_HR(IHostMalloc_Free(h, block), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

static int heap_books_consistent(IHostMemoryManager *m, const char *what)
{
    hostmem_stats s = stats_of(m);
    validate_kernel(m, what);
    if (s.heap_bytes > s.committed_bytes) {
        TEST_FAIL_AT("%s: heap_bytes %#zx > committed_bytes %#zx", what, s.heap_bytes, s.committed_bytes);
        return 0;
    }
    return 1;
}

/* An executable heap made under ANY whose manager is then tightened (to W^X,
 * or to no dynamic code): its blocks stay usable - read, written, freed and
 * handed out again from the pages it has - but it cannot grow: an Alloc that
 * needs new executable pages (a new span of a size class not used before, or
 * a large block of its own) fails cleanly with the dynamic-code HRESULT,
 * counted, reserving and committing nothing, and the books validate. Freeing
 * everything and releasing the heap give every page back. */
static void tightened_heap(DWORD type, uint32_t policy)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    if (!m)
        return;
    IHostMalloc *h = NULL;
    CHECK_HR(IHostMemoryManager_CreateMalloc(m, type, &h), S_OK);
    if (!h) {
        IHostMemoryManager_Release(m);
        return;
    }
    enum { N = 32 };
    unsigned char *blocks[N] = {0};
    for (int i = 0; i < N; i++) {
        CHECK_HR(IHostMalloc_Alloc(h, 48, eTaskCritical, (void **)&blocks[i]), S_OK);
        if (blocks[i])
            memset(blocks[i], i + 1, 48);
    }
    void *large = NULL;
    CHECK_HR(IHostMalloc_Alloc(h, 100000, eTaskCritical, &large), S_OK);
    if (large)
        memset(large, 0x3C, 100000);
    CHECK_HR(hostmem_restrict_dynamic_code(m, policy), S_OK);
    heap_books_consistent(m, "after tightening");

    /* what it has stays usable */
    for (int i = 0; i < N; i++)
        if (blocks[i]) {
            CHECK_EQ(blocks[i][0], i + 1);
            CHECK_EQ(blocks[i][47], i + 1);
            blocks[i][47] = 0xEE;
        }
    if (large)
        CHECK_EQ(((unsigned char *)large)[99999], 0x3C);
    CHECK_HR(IHostMalloc_Free(h, blocks[3]), S_OK);
    CHECK_HR(IHostMalloc_Alloc(h, 48, eTaskCritical, (void **)&blocks[3]), S_OK);
    void *more = NULL;
    CHECK_HR(IHostMalloc_Alloc(h, 56, eTaskCritical, &more), S_OK); /* the same class (56 bytes): room in its span */
    CHECK_HR(IHostMalloc_Free(h, more), S_OK);

    /* it cannot grow */
    hostmem_stats before = stats_of(m);
    void *grown = (void *)(uintptr_t)1;
    HRESULT hr = IHostMalloc_Alloc(h, 3000, eTaskCritical, &grown); /* a class with no span yet */
    CHECK_HR(hr, BLOCKED);
    CHECK(grown == NULL);
    grown = (void *)(uintptr_t)1;
    hr = IHostMalloc_DebugAlloc(h, 200000, eTaskCritical, (char *)__FILE__, __LINE__, &grown); /* a large block */
    CHECK_HR(hr, BLOCKED);
    CHECK(grown == NULL);
    hostmem_stats after = stats_of(m);
    CHECK_EQ(after.dynamic_code_refusals - before.dynamic_code_refusals, 2);
    CHECK_EQ(after.reservations, before.reservations);
    CHECK_EQ(after.reserved_bytes, before.reserved_bytes);
    CHECK_EQ(after.committed_bytes, before.committed_bytes);
    CHECK_EQ(after.heap_bytes, before.heap_bytes);
    heap_books_consistent(m, "after the refused growth");
    /* and still works after its refusals */
    CHECK_HR(IHostMalloc_Alloc(h, 48, eTaskCritical, &more), S_OK);
    CHECK_HR(IHostMalloc_Free(h, more), S_OK);

    for (int i = 0; i < N; i++)
        CHECK_HR(IHostMalloc_Free(h, blocks[i]), S_OK);
    CHECK_HR(IHostMalloc_Free(h, large), S_OK);
    size_t live = SIZE_MAX;
    CHECK_HR(hostmem_heap_report(h, NULL, &live), S_OK);
    CHECK_EQ(live, 0);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    hostmem_stats end = stats_of(m);
    CHECK_EQ(end.committed_bytes, 0);
    CHECK_EQ(end.reservations, 0);
    heap_books_consistent(m, "after the heap's release");
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

TEST(executable_heap_keeps_its_blocks_after_tightening_but_cannot_grow)
{
    static const DWORD types[] = {MALLOC_EXECUTABLE, MALLOC_EXECUTABLE | MALLOC_THREADSAFE};
    for (size_t t = 0; t < 2; t++)
        for (size_t pi = 1; pi < 3; pi++)
            tightened_heap(types[t], POLICIES[pi]);
}

/* The same when the heap must grow by a new 4 MiB segment: one block in each
 * of 63 size classes (8 to 1000 bytes) fills the first segment's spans (docs/heap.md:
 * 64 spans of 64 KiB, the first the header's); after W^X a 64th class needs a
 * segment, reserved PAGE_EXECUTE_READWRITE: refused, nothing reserved. */
TEST(executable_heap_cannot_add_a_segment_after_tightening)
{
    IHostMemoryManager *m = make(HOSTMEM_CODE_ANY);
    REQUIRE(m);
    IHostMalloc *h = NULL;
    REQUIRE_HR(IHostMemoryManager_CreateMalloc(m, MALLOC_EXECUTABLE, &h), S_OK);
    enum { CLASSES_FILLING = 63 };
    void *blocks[CLASSES_FILLING] = {0};
    uintptr_t segment = 0;
    int one_segment = 1;
    for (int c = 0; c < CLASSES_FILLING; c++) {
        CHECK_HR(IHostMalloc_Alloc(h, 8 + 16 * (size_t)c, eTaskCritical, &blocks[c]), S_OK);
        uintptr_t s = (uintptr_t)blocks[c] & ~(((uintptr_t)4 << 20) - 1);
        if (c == 0)
            segment = s;
        one_segment &= s == segment;
    }
    size_t segments = stats_of(m).reservations;
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    hostmem_stats before = stats_of(m);
    void *grown = (void *)(uintptr_t)1;
    CHECK_HR(IHostMalloc_Alloc(h, 1016, eTaskCritical, &grown), BLOCKED);
    CHECK(grown == NULL);
    hostmem_stats after = stats_of(m);
    CHECK_EQ(after.dynamic_code_refusals - before.dynamic_code_refusals, 1);
    CHECK_EQ(after.reservations, before.reservations);
    CHECK_EQ(after.reserved_bytes, before.reserved_bytes);
    CHECK_EQ(after.committed_bytes, before.committed_bytes);
    heap_books_consistent(m, "after the refused segment");
    for (int c = 0; c < CLASSES_FILLING; c++)
        CHECK_HR(IHostMalloc_Free(h, blocks[c]), S_OK);
    CHECK_EQ(IHostMalloc_Release(h), 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
    if (!one_segment || segments != 1)
        TEST_SKIP("the 63 classes did not fill exactly one segment (%zu reservations): the refusal above was a "
                  "span's, not a segment's",
                  segments);
}

/* Argument errors come first: MEM_LARGE_PAGES with a size
 * that is not a whole number of large pages is E_INVALIDARG (SPEC §3, type
 * rules) whatever the protection, and no refusal of dynamic code is counted. */
TEST(large_page_size_error_comes_before_the_policy)
{
    if (!hostmem_large_page_minimum())
        TEST_SKIP("no large pages here");
    hostmem_config c = {sizeof c};
    c.dynamic_code = HOSTMEM_CODE_NONE;
    IHostMemoryManager *m = NULL;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *p = NULL;
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE,
                                             eTaskCritical, &p), E_INVALIDARG);
    CHECK_HR(IHostMemoryManager_VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_EXECUTE_READ,
                                             eTaskCritical, &p), E_INVALIDARG);
    CHECK_EQ(stats_of(m).dynamic_code_refusals, 0);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Every result code the library returns has a name (hostmem_result_name), as
 * the others do: the policy's two. */
TEST(result_names_cover_the_policy_results)
{
    CHECK(hostmem_result_name(HOSTMEM_E_DYNAMIC_CODE_BLOCKED) != NULL);
    CHECK(hostmem_result_name(E_ACCESSDENIED) != NULL);
}

int main(void)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    RUN(large_page_size_error_comes_before_the_policy);
    RUN(result_names_cover_the_policy_results);
    RUN(reserve_result_by_policy_and_protection_refusal_changes_nothing);
    RUN(commit_result_by_policy_and_protection_refusal_changes_nothing);
    RUN(protect_result_by_policy_and_protection_refusal_changes_nothing);
    RUN(mem_reset_ignores_the_protection_under_every_policy);
    RUN(argument_errors_come_before_the_policy_and_are_not_counted);
    RUN(policy_answers_before_the_address);
    RUN(wx_allows_the_jit_cycle_rw_rx_rw_rx);
    RUN(pages_already_executable_stay_executable_after_tightening);
    RUN(no_dynamic_code_lets_code_stop_being_code_but_never_back);
    RUN(page_execute_is_readable_and_queries_as_page_execute);
    RUN(policy_tightens_any_wx_none_and_is_never_loosened);
    RUN(unknown_policy_is_invalidarg_and_changes_nothing);
    RUN(config_dynamic_code_checked_and_defaults_to_any);
    RUN(policy_and_refusals_are_per_manager);
    RUN(tightening_is_seen_by_every_thread_and_never_undone);
    RUN(executable_heap_refused_under_wx_and_none_plain_heap_fine);
    RUN(executable_heap_under_any_holds_code);
    RUN(executable_heap_keeps_its_blocks_after_tightening_but_cannot_grow);
    RUN(executable_heap_cannot_add_a_segment_after_tightening);
    return TEST_SUMMARY("test_code_policy");
}
