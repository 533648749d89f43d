/*
 * test_badinput.c - issue 7 item 4: every method with bad input.
 *
 * Table-driven: tables of addresses (NULL, unaligned, the top of the address
 * space, the end of user space, the stack, libc's heap, static data, code,
 * another manager's memory, released memory, a heap block, the runtime's own
 * reported range, pages of a fixture reservation), of sizes (0, 1, page-1,
 * SIZE_MAX, SIZE_MAX - page, sizes that wrap address + size past 2^64 or to
 * exactly 0) and every single bit of flAllocationType, dwFreeType, flProtect
 * and dwMallocType, crossed; each row's result is predicted from the rules of
 * SPEC.md / docs/contract.md / docs/heap.md / docs/policy.md (calls the rules
 * say succeed are not bad input and are not made). Each row checks the
 * result and that nothing changed: VirtualQuery of every page of the fixture
 * reservation, its contents, the heap block's contents, hostmem_get_stats of
 * both managers, hostmem_validate. Then: double and concurrent double
 * releases, and every method after hostmem_shutdown.
 *
 * A failing row prints the call, its arguments, the result and the rule.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "test.h"
#include "win32_rules.h"

#define ERR_ADDR HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define ERR_BADLEN HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define NPAGES 16

static size_t P, G;
static long g_tried;   /* bad inputs tried */
static long g_skipped; /* combinations the rules say succeed: not made */

/* ---- the fixture --------------------------------------------------------------- */
/*
 * Manager A: reservation R of 16 pages: 0-3 committed READWRITE with data,
 * 4-5 READONLY with data, 6-7 reserved, 8-9 EXECUTE_READ, 10-15 reserved;
 * a released reservation; heap H with one live block and one freed block; a
 * reported runtime range X. Manager B: one committed reservation, heap HB with
 * a block.
 */
static IHostMemoryManager *A, *Bm;
static IHostMalloc *H, *HB;
static char *R, *RB, *RELEASED;
static unsigned char *BLOCK, *BLOCKB, *FREED_BLOCK;
static uintptr_t X; /* reported through AcquiredVirtualAddressSpace */
static size_t XSIZE;
static DWORD R_PROT[NPAGES];
static int g_stack_anchor;
static unsigned char g_static_data[64];
static unsigned char *g_libc;

static DWORD r_state(size_t k) { return R_PROT[k] ? MEM_COMMIT : MEM_RESERVE; }

static int fixture_readable(size_t k)
{
    return R_PROT[k] == PAGE_READWRITE || R_PROT[k] == PAGE_READONLY ||
           R_PROT[k] == PAGE_EXECUTE_READ;
}

static unsigned char content(size_t k, size_t i) { return (unsigned char)(k * 31 + i * 7 + 1); }

static int fixture_setup(void)
{
    hostmem_config c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    c.commit_limit = HOSTMEM_UNLIMITED;
    c.arena_size = (size_t)64 << 20;
    if (hostmem_create(&c, &A) != S_OK || hostmem_create(&c, &Bm) != S_OK)
        return 0;
    void *p;
    if (A->lpVtbl->VirtualAlloc(A, NULL, NPAGES * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p))
        return 0;
    R = p;
    static const struct {
        size_t first, count;
        DWORD prot;
    } commits[] = {{0, 6, PAGE_READWRITE}, {8, 2, PAGE_READWRITE}};
    for (size_t i = 0; i < 2; i++)
        if (A->lpVtbl->VirtualAlloc(A, R + commits[i].first * P, commits[i].count * P, MEM_COMMIT,
                                    commits[i].prot, eTaskCritical, &p))
            return 0;
    for (size_t k = 0; k < NPAGES; k++)
        if (k < 6 || k == 8 || k == 9)
            for (size_t i = 0; i < P; i++)
                R[k * P + i] = (char)content(k, i);
    DWORD old;
    if (A->lpVtbl->VirtualProtect(A, R + 4 * P, 2 * P, PAGE_READONLY, &old) ||
        A->lpVtbl->VirtualProtect(A, R + 8 * P, 2 * P, PAGE_EXECUTE_READ, &old))
        return 0;
    for (size_t k = 0; k < NPAGES; k++)
        R_PROT[k] = k < 4 ? PAGE_READWRITE : k < 6 ? PAGE_READONLY : (k == 8 || k == 9) ? PAGE_EXECUTE_READ : 0;
    if (A->lpVtbl->VirtualAlloc(A, NULL, 3 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) ||
        A->lpVtbl->VirtualFree(A, p, 0, MEM_RELEASE))
        return 0;
    RELEASED = p;
    if (Bm->lpVtbl->VirtualAlloc(Bm, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p))
        return 0;
    RB = p;
    memset(RB, 0x5B, 4 * P);
    if (A->lpVtbl->CreateMalloc(A, MALLOC_THREADSAFE, &H) || Bm->lpVtbl->CreateMalloc(Bm, 0, &HB))
        return 0;
    if (H->lpVtbl->Alloc(H, 256, eTaskCritical, &p))
        return 0;
    BLOCK = p;
    memset(BLOCK, 0xB1, 256);
    if (H->lpVtbl->Alloc(H, 256, eTaskCritical, &p) || H->lpVtbl->Free(H, p))
        return 0;
    FREED_BLOCK = p;
    if (HB->lpVtbl->Alloc(HB, 64, eTaskCritical, &p))
        return 0;
    BLOCKB = p;
    memset(BLOCKB, 0xB2, 64);
    X = (uintptr_t)0x500000000000ull; /* a range the runtime says it mapped itself */
    XSIZE = 16 * P;
    if (A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)X, XSIZE))
        return 0;
    return 1;
}

static void fixture_teardown(void)
{
    if (A) {
        A->lpVtbl->ReleasedVirtualAddressSpace(A, (void *)X);
        if (BLOCK)
            H->lpVtbl->Free(H, BLOCK);
        if (H)
            H->lpVtbl->Release(H);
        if (R)
            A->lpVtbl->VirtualFree(A, R, 0, MEM_RELEASE);
        A->lpVtbl->Release(A);
    }
    if (Bm) {
        if (BLOCKB)
            HB->lpVtbl->Free(HB, BLOCKB);
        if (HB)
            HB->lpVtbl->Release(HB);
        if (RB)
            Bm->lpVtbl->VirtualFree(Bm, RB, 0, MEM_RELEASE);
        Bm->lpVtbl->Release(Bm);
    }
}

/* ---- "nothing changed" ---------------------------------------------------------- */

struct snapshot {
    MEMORY_BASIC_INFORMATION info[NPAGES];
    hostmem_stats a, b;
};

static struct snapshot g_before;

static void snap(struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    for (size_t k = 0; k < NPAGES; k++) {
        SIZE_T n;
        A->lpVtbl->VirtualQuery(A, R + k * P, &s->info[k], sizeof s->info[k], &n);
    }
    s->a = stats_of(A);
    s->b = stats_of(Bm);
}

/* The stats a failed call must leave alone. NeedsVirtualAddressSpace may give
 * back cached arenas (docs/policy.md), so arenas are compared only when asked;
 * the refusal counters count E_OUTOFMEMORY answers (SPEC §7), so they are
 * compared for every other answer. */
static int g_row_refusal;
static int stats_same(const hostmem_stats *x, const hostmem_stats *y, int arenas)
{
    if (!g_row_refusal && (memcmp(x->refusals, y->refusals, sizeof x->refusals) ||
                           x->os_refusals != y->os_refusals))
        return 0;
    return x->reserved_bytes == y->reserved_bytes && x->committed_bytes == y->committed_bytes &&
           x->peak_committed_bytes == y->peak_committed_bytes &&
           x->reservations == y->reservations && x->heap_bytes == y->heap_bytes &&
           x->kernel_mappings == y->kernel_mappings && x->commit_limit == y->commit_limit &&
           !memcmp(x->notifications, y->notifications, sizeof x->notifications) &&
           x->external_bytes == y->external_bytes && x->external_ranges == y->external_ranges &&
           x->memory_state == y->memory_state &&
           (!arenas || (x->arenas == y->arenas && x->arena_bytes == y->arena_bytes));
}

/* What changed since g_before, or NULL. */
static const char *what_changed(int arenas)
{
    static char why[600];
    struct snapshot now;
    snap(&now);
    for (size_t k = 0; k < NPAGES; k++) {
        const MEMORY_BASIC_INFORMATION *i = &now.info[k];
        size_t run = 1;
        while (k + run < NPAGES && R_PROT[k + run] == R_PROT[k])
            run++;
        if ((char *)i->BaseAddress != R + k * P || (char *)i->AllocationBase != R ||
            i->State != r_state(k) || i->Protect != R_PROT[k] || i->RegionSize != run * P ||
            memcmp(i, &g_before.info[k], sizeof *i)) {
            snprintf(why, sizeof why,
                     "fixture page %zu: State %#x Protect %#x RegionSize %#zx, expected %#x %#x %#zx",
                     k, (unsigned)i->State, (unsigned)i->Protect, (size_t)i->RegionSize,
                     (unsigned)r_state(k), (unsigned)R_PROT[k], run * P);
            return why;
        }
        if (fixture_readable(k))
            for (size_t b = 0; b < P; b += 61)
                if ((unsigned char)R[k * P + b] != content(k, b)) {
                    snprintf(why, sizeof why, "fixture page %zu byte %zu: %#x, expected %#x", k, b,
                             (unsigned char)R[k * P + b], content(k, b));
                    return why;
                }
    }
    for (size_t i = 0; i < 256; i++)
        if (BLOCK[i] != 0xB1)
            return "the heap block's contents";
    for (size_t i = 0; i < 64; i++)
        if (BLOCKB[i] != 0xB2)
            return "manager B's heap block's contents";
    for (size_t i = 0; i < 4 * P; i += 97)
        if ((unsigned char)RB[i] != 0x5B)
            return "manager B's reservation's contents";
    if (!stats_same(&now.a, &g_before.a, arenas)) {
        snprintf(why, sizeof why,
                 "manager A's statistics: reserved %#zx committed %#zx reservations %zu heap %#zx "
                 "external %#zx refusals %zu/%zu/%zu os %zu; before %#zx %#zx %zu %#zx %#zx "
                 "%zu/%zu/%zu %zu",
                 now.a.reserved_bytes, now.a.committed_bytes, now.a.reservations, now.a.heap_bytes,
                 now.a.external_bytes, now.a.refusals[0], now.a.refusals[1], now.a.refusals[2],
                 now.a.os_refusals, g_before.a.reserved_bytes, g_before.a.committed_bytes,
                 g_before.a.reservations, g_before.a.heap_bytes, g_before.a.external_bytes,
                 g_before.a.refusals[0], g_before.a.refusals[1], g_before.a.refusals[2],
                 g_before.a.os_refusals);
        return why;
    }
    if (!stats_same(&now.b, &g_before.b, 1))
        return "manager B's statistics";
    static char v[512];
    if (hostmem_validate(A, 0, v, sizeof v) != S_OK || hostmem_validate(Bm, 0, v, sizeof v) != S_OK)
        return v;
    return NULL;
}

static int g_row_arenas = 1;

static void row_check(int line, const char *call, HRESULT got, HRESULT want, const char *rule)
{
    g_tried++;
    char b1[16], b2[16];
    g_row_refusal = want == E_OUTOFMEMORY;
    if (got != want) {
        fprintf(stderr, "  FAIL %s (%s:%d): %s -> %s, expected %s (%s)\n", test_current_name,
                __FILE__, line, call, test_hr_name(got, b1, sizeof b1),
                test_hr_name(want, b2, sizeof b2), rule);
        test_current_failed = 1;
    }
    const char *changed = what_changed(g_row_arenas);
    if (changed) {
        fprintf(stderr, "  FAIL %s (%s:%d): %s -> %s changed something: %s (SPEC §2: a call that "
                        "fails changes nothing)\n",
                test_current_name, __FILE__, line, call, test_hr_name(got, b1, sizeof b1), changed);
        test_current_failed = 1;
        snap(&g_before); /* report each change once */
    }
}

/* ROW(text, call, expected, rule): one bad input. text is printf-formatted into g_call. */
static char g_call[400];
#define ROW(want, rule, call, ...)                                                       \
    do {                                                                                 \
        snprintf(g_call, sizeof g_call, __VA_ARGS__);                                    \
        snap(&g_before);                                                                 \
        HRESULT row_got_ = (call);                                                       \
        row_check(__LINE__, g_call, row_got_, (want), (rule));                           \
    } while (0)

/* ---- the tables ---------------------------------------------------------------------- */

struct address {
    const char *name;
    uintptr_t a;
};

static struct address g_addr[40];
static size_t g_naddr;

static void add_addr(const char *name, uintptr_t a)
{
    g_addr[g_naddr].name = name;
    g_addr[g_naddr++].a = a;
}

static void build_addresses(void)
{
    uintptr_t r = (uintptr_t)R, top = (uintptr_t)1 << 47;
    g_naddr = 0;
    add_addr("NULL", 0);
    add_addr("(void*)1", 1);
    add_addr("page 1", P);
    add_addr("page 1 + 3", P + 3);
    add_addr("(void*)-1", UINTPTR_MAX);
    add_addr("(void*)-4096", (uintptr_t)0 - 4096);
    add_addr("(void*)-page", (uintptr_t)0 - P);
    add_addr("(void*)-2 pages", (uintptr_t)0 - 2 * P);
    add_addr("2^63", (uintptr_t)1 << 63);
    add_addr("2^47 (end of user space)", top);
    add_addr("2^47 - page", top - P);
    add_addr("2^47 - 1", top - 1);
    add_addr("the stack", (uintptr_t)&g_stack_anchor);
    add_addr("libc's heap", (uintptr_t)g_libc);
    add_addr("static data", (uintptr_t)g_static_data);
    add_addr("code", (uintptr_t)&build_addresses);
    add_addr("manager B's reservation", (uintptr_t)RB);
    add_addr("manager B's reservation + 1 page + 5", (uintptr_t)RB + P + 5);
    add_addr("a released reservation", (uintptr_t)RELEASED);
    add_addr("a released reservation + 1", (uintptr_t)RELEASED + 1);
    add_addr("a heap block", (uintptr_t)BLOCK);
    add_addr("a freed heap block", (uintptr_t)FREED_BLOCK);
    add_addr("manager B's heap block", (uintptr_t)BLOCKB);
    add_addr("the runtime's reported range", X);
    add_addr("R", r);
    add_addr("R + 1", r + 1);
    add_addr("R + page - 1", r + P - 1);
    add_addr("R + 3 pages + 17", r + 3 * P + 17);
    add_addr("R + 6 pages (reserved)", r + 6 * P);
    add_addr("R + 9 pages + 1", r + 9 * P + 1);
    add_addr("R + 15 pages (last)", r + 15 * P);
    add_addr("R + 16 pages (its granule's tail)", r + NPAGES * P);
    add_addr("R - 1", r - 1);
}

/* Sizes; some depend on the address (wrapping to exactly 0, or just past it). */
static size_t size_of(int i, uintptr_t a, const char **name)
{
    static const char *names[] = {"0",          "1",          "page - 1",       "page",
                                  "2 pages",    "16 pages",   "17 pages",       "SIZE_MAX",
                                  "SIZE_MAX - page", "SIZE_MAX - page + 1", "SIZE_MAX / 2",
                                  "2^47",       "-address (wraps to 0)", "-address + page"};
    *name = names[i];
    switch (i) {
    case 0: return 0;
    case 1: return 1;
    case 2: return P - 1;
    case 3: return P;
    case 4: return 2 * P;
    case 5: return NPAGES * P;
    case 6: return (NPAGES + 1) * P;
    case 7: return SIZE_MAX;
    case 8: return SIZE_MAX - P;
    case 9: return SIZE_MAX - P + 1;
    case 10: return SIZE_MAX / 2;
    case 11: return (size_t)1 << 47;
    case 12: return (size_t)0 - a;
    default: return (size_t)0 - a + P;
    }
}
#define NSIZES 14

/* ---- the rules, for the fixture ----------------------------------------------------------- */

static uintptr_t pdown(uintptr_t a) { return a & ~(uintptr_t)(P - 1); }

/* End of the pages touched by [a, a+size); 0 if that wraps past 2^64. */
static uintptr_t range_end(uintptr_t a, size_t size)
{
    uintptr_t e;
    if (__builtin_add_overflow(a, size, &e) || e > UINTPTR_MAX - P)
        return 0;
    return (e + P - 1) & ~(uintptr_t)(P - 1);
}

static int in_r(uintptr_t a) { return a >= (uintptr_t)R && a < (uintptr_t)R + NPAGES * P; }

/* SPEC §4. */
static HRESULT expect_free(uintptr_t a, size_t size, DWORD type)
{
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        return E_INVALIDARG;
    if (type == MEM_RELEASE && size != 0)
        return E_INVALIDARG;
    if (!in_r(pdown(a)))
        return HOST_E_INVALIDOPERATION;
    if (size == 0 && pdown(a) != (uintptr_t)R)
        return ERR_ADDR;
    if (size != 0) {
        uintptr_t e = range_end(a, size);
        if (!e || e > (uintptr_t)R + NPAGES * P)
            return E_INVALIDARG;
    }
    return S_OK;
}

/* SPEC §3 at a non-NULL address for MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO. */
static HRESULT expect_in_reservation(uintptr_t a, size_t size, DWORD type, DWORD prot)
{
    if (!alloc_type_valid(type) || !prot_valid(prot) || size == 0)
        return E_INVALIDARG;
    uintptr_t e = range_end(a, size);
    if (!in_r(pdown(a)) || !e || e > (uintptr_t)R + NPAGES * P)
        return ERR_ADDR;
    return S_OK;
}

/* SPEC §6 (size 0: the page of the address, contract). */
static HRESULT expect_protect(uintptr_t a, size_t size, DWORD prot, int null_old)
{
    if (null_old)
        return E_POINTER;
    if (!prot_valid(prot))
        return E_INVALIDARG;
    uintptr_t e = size ? range_end(a, size) : pdown(a) + P;
    if (!in_r(pdown(a)) || !e || e > (uintptr_t)R + NPAGES * P)
        return ERR_ADDR;
    for (uintptr_t q = pdown(a); q < e; q += P)
        if (!R_PROT[(q - (uintptr_t)R) / P])
            return ERR_ADDR;
    return S_OK;
}

/* ---- VirtualFree ------------------------------------------------------------------------ */

TEST(virtual_free_table)
{
    static const DWORD types[] = {MEM_DECOMMIT, MEM_RELEASE};
    for (size_t ai = 0; ai < g_naddr; ai++)
        for (int si = 0; si < NSIZES; si++)
            for (int ti = 0; ti < 2; ti++) {
                const char *sname;
                uintptr_t a = g_addr[ai].a;
                size_t size = size_of(si, a, &sname);
                HRESULT want = expect_free(a, size, types[ti]);
                if (want == S_OK) {
                    g_skipped++;
                    continue;
                }
                ROW(want, "SPEC §4", A->lpVtbl->VirtualFree(A, (void *)a, size, types[ti]),
                    "VirtualFree(%s, %s, %s)", g_addr[ai].name, sname,
                    ti ? "MEM_RELEASE" : "MEM_DECOMMIT");
            }
    /* Every single bit, and each bit added to MEM_DECOMMIT and MEM_RELEASE, at R and foreign. */
    static const uintptr_t where[] = {0, 1};
    for (int w = 0; w < 2; w++)
        for (int bit = 0; bit < 32; bit++) {
            uintptr_t a = where[w] ? (uintptr_t)&g_stack_anchor : (uintptr_t)R;
            DWORD variants[3] = {(DWORD)1 << bit, MEM_DECOMMIT | (DWORD)1 << bit,
                                 MEM_RELEASE | (DWORD)1 << bit};
            for (int v = 0; v < 3; v++) {
                DWORD type = variants[v];
                HRESULT want = expect_free(a, 0, type);
                if (want == S_OK) {
                    g_skipped++;
                    continue;
                }
                ROW(want, "SPEC §4 rule 1", A->lpVtbl->VirtualFree(A, (void *)a, 0, type),
                    "VirtualFree(%s, 0, %#x)", w ? "the stack" : "R", (unsigned)type);
            }
        }
    /* The other manager's memory, from the other side too. */
    ROW(HOST_E_INVALIDOPERATION, "SPEC §4 rule 3",
        Bm->lpVtbl->VirtualFree(Bm, R, 0, MEM_RELEASE), "B VirtualFree(R, 0, MEM_RELEASE)");
    ROW(HOST_E_INVALIDOPERATION, "SPEC §4 rule 3",
        Bm->lpVtbl->VirtualFree(Bm, R, P, MEM_DECOMMIT), "B VirtualFree(R, page, MEM_DECOMMIT)");
}

/* ---- VirtualAlloc ------------------------------------------------------------------------ */

TEST(virtual_alloc_table)
{
    void *p;
    /* Commit, reset and reset-undo at every address with every size. */
    static const DWORD types[] = {MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO};
    static const char *tnames[] = {"MEM_COMMIT", "MEM_RESET", "MEM_RESET_UNDO"};
    for (size_t ai = 0; ai < g_naddr; ai++)
        for (int si = 0; si < NSIZES; si++)
            for (int ti = 0; ti < 3; ti++) {
                const char *sname;
                uintptr_t a = g_addr[ai].a;
                size_t size = size_of(si, a, &sname);
                if (a == 0 && types[ti] == MEM_COMMIT)
                    continue; /* NULL: a reservation (below) */
                HRESULT want = expect_in_reservation(a, size, types[ti], PAGE_READWRITE);
                if (want == S_OK) {
                    g_skipped++;
                    continue;
                }
                p = (void *)1;
                ROW(want, "SPEC §3", A->lpVtbl->VirtualAlloc(A, (void *)a, size, types[ti], PAGE_READWRITE, eTaskCritical, &p),
                    "VirtualAlloc(%s, %s, %s, PAGE_READWRITE)", g_addr[ai].name, sname, tnames[ti]);
                if (p != NULL)
                    TEST_FAIL_AT("%s: *ppMem %p after a failure, expected NULL (contract)", g_call, p);
            }

    /* Reservations no address space can hold. */
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)1 << 63, ((size_t)1 << 47) + 1,
                                  (size_t)1 << 47};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++)
        for (int commit = 0; commit < 2; commit++) {
            DWORD type = commit ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE;
            p = (void *)1;
            ROW(E_OUTOFMEMORY, "SPEC §3: a size that cannot be reserved",
                A->lpVtbl->VirtualAlloc(A, NULL, huge[i], type, PAGE_READWRITE, eTaskCritical, &p),
                "VirtualAlloc(NULL, %#zx, %#x, PAGE_READWRITE)", huge[i], (unsigned)type);
            if (p != NULL)
                TEST_FAIL_AT("%s: *ppMem %p after a failure, expected NULL", g_call, p);
        }
    /* Address + size wrapping past 2^64 at an address that could otherwise be reserved. */
    const size_t wraps[] = {SIZE_MAX, SIZE_MAX - P + 1};
    for (size_t i = 0; i < 2; i++)
        ROW(E_OUTOFMEMORY, "SPEC §3: a size that cannot be reserved",
            A->lpVtbl->VirtualAlloc(A, RELEASED, wraps[i], MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
            "VirtualAlloc(a released reservation, %#zx, MEM_RESERVE)", wraps[i]);

    /* Reservations at addresses in use or outside user space. */
    static const struct {
        const char *name;
        uintptr_t a;
    } in_use[] = {{"R", 0}, {"R + 5 pages + 3", 1}, {"the stack", 2}, {"libc's heap", 3},
                  {"static data", 4}, {"code", 5}, {"manager B's reservation", 6},
                  {"a heap block", 7}, {"manager B's heap block", 8},
                  {"2^47 - page (runs past user space)", 9}, {"(void*)-2 pages", 10},
                  {"(void*)-page", 11}, {"(void*)-3 pages", 13}, {"2^63", 12}};
    for (size_t i = 0; i < sizeof in_use / sizeof in_use[0]; i++) {
        uintptr_t a;
        switch (in_use[i].a) {
        case 0: a = (uintptr_t)R; break;
        case 1: a = (uintptr_t)R + 5 * P + 3; break;
        case 2: a = (uintptr_t)&g_stack_anchor; break;
        case 3: a = (uintptr_t)g_libc; break;
        case 4: a = (uintptr_t)g_static_data; break;
        case 5: a = (uintptr_t)&build_addresses; break;
        case 6: a = (uintptr_t)RB; break;
        case 7: a = (uintptr_t)BLOCK; break;
        case 8: a = (uintptr_t)BLOCKB; break;
        case 9: a = ((uintptr_t)1 << 47) - P; break;
        case 10: a = (uintptr_t)0 - 2 * P; break;
        case 11: a = (uintptr_t)0 - P; break;
        case 13: a = (uintptr_t)0 - 3 * P; break;
        default: a = (uintptr_t)1 << 63; break;
        }
        size_t size = in_use[i].a == 9 ? 2 * P : P;
        for (int commit = 0; commit < 2; commit++) {
            DWORD type = commit ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE;
            p = (void *)1;
            ROW(ERR_ADDR, "SPEC §3: a reservation at an address in use or outside user space",
                A->lpVtbl->VirtualAlloc(A, (void *)a, size, type, PAGE_READWRITE, eTaskCritical, &p),
                "VirtualAlloc(%s, %#zx, %#x, PAGE_READWRITE)", in_use[i].name, size, (unsigned)type);
            if (p != NULL)
                TEST_FAIL_AT("%s: *ppMem %p after a failure, expected NULL", g_call, p);
        }
    }

    /* Every single bit of flAllocationType, alone and added to each valid type, with
     * a NULL address, at R, and at a reserved page of R (protection and size valid). */
    static const DWORD bases[] = {0, MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE, MEM_RESET};
    for (int bit = 0; bit < 32; bit++)
        for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++)
            for (int w = 0; w < 3; w++) {
                DWORD type = bases[b] | (DWORD)1 << bit;
                uintptr_t a = w == 0 ? 0 : w == 1 ? (uintptr_t)R : (uintptr_t)R + 6 * P;
                if (alloc_type_valid(type)) {
                    g_skipped++; /* valid: not bad input (its result needs no check here) */
                    continue;
                }
                p = (void *)1;
                ROW(E_INVALIDARG, "SPEC §3: the allocation type",
                    A->lpVtbl->VirtualAlloc(A, (void *)a, P, type, PAGE_READWRITE, eTaskCritical, &p),
                    "VirtualAlloc(%s, page, %#x, PAGE_READWRITE)",
                    w == 0 ? "NULL" : w == 1 ? "R" : "R + 6 pages", (unsigned)type);
                if (p != NULL)
                    TEST_FAIL_AT("%s: *ppMem %p after a failure", g_call, p);
            }
    /* Every single bit of flProtect, alone and with each base protection; the type
     * valid, so the protection decides; and a zero size after it (type, protection,
     * size: the first bad one decides). */
    static const DWORD pbases[] = {0, PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE,
                                   PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_READWRITE | PAGE_GUARD};
    static const DWORD ptypes[] = {MEM_RESERVE, MEM_COMMIT | MEM_RESERVE, MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO};
    for (int bit = 0; bit < 32; bit++)
        for (size_t b = 0; b < sizeof pbases / sizeof pbases[0]; b++)
            for (size_t t = 0; t < sizeof ptypes / sizeof ptypes[0]; t++) {
                DWORD prot = pbases[b] | (DWORD)1 << bit;
                if (prot_valid(prot)) {
                    g_skipped++;
                    continue;
                }
                uintptr_t a = ptypes[t] == MEM_RESERVE || ptypes[t] == (MEM_COMMIT | MEM_RESERVE)
                                  ? 0
                                  : (uintptr_t)R + 6 * P;
                for (int zero = 0; zero < 2; zero++) {
                    p = (void *)1;
                    ROW(E_INVALIDARG, "SPEC §3: the protection",
                        A->lpVtbl->VirtualAlloc(A, (void *)a, zero ? 0 : P, ptypes[t], prot, eTaskCritical, &p),
                        "VirtualAlloc(%s, %s, %#x, %#x)", a ? "R + 6 pages" : "NULL",
                        zero ? "0" : "page", (unsigned)ptypes[t], (unsigned)prot);
                }
            }
    /* Bad levels (checked after size), sizes 0, a NULL out-pointer first of all. */
    static const int levels[] = {3, 4, 100, -1, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        ROW(E_INVALIDARG, "contract: eCriticalLevel",
            A->lpVtbl->VirtualAlloc(A, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, (EMemoryCriticalLevel)levels[i], &p),
            "VirtualAlloc(NULL, page, MEM_COMMIT|MEM_RESERVE, PAGE_READWRITE, level %d)", levels[i]);
        ROW(E_INVALIDARG, "contract: eCriticalLevel",
            A->lpVtbl->VirtualAlloc(A, R + 6 * P, P, MEM_COMMIT, PAGE_READWRITE, (EMemoryCriticalLevel)levels[i], &p),
            "VirtualAlloc(R + 6 pages, page, MEM_COMMIT, PAGE_READWRITE, level %d)", levels[i]);
    }
    static const DWORD ztypes[] = {MEM_RESERVE, MEM_COMMIT, MEM_COMMIT | MEM_RESERVE};
    for (size_t t = 0; t < 3; t++) {
        ROW(E_INVALIDARG, "SPEC §3: size 0",
            A->lpVtbl->VirtualAlloc(A, NULL, 0, ztypes[t], PAGE_READWRITE, eTaskCritical, &p),
            "VirtualAlloc(NULL, 0, %#x, PAGE_READWRITE)", (unsigned)ztypes[t]);
        ROW(E_POINTER, "contract: ppMem NULL first",
            A->lpVtbl->VirtualAlloc(A, NULL, 0, 0, 0, (EMemoryCriticalLevel)9, NULL),
            "VirtualAlloc(NULL, 0, 0, 0, level 9, NULL)");
        ROW(E_POINTER, "contract: ppMem NULL",
            A->lpVtbl->VirtualAlloc(A, NULL, P, ztypes[t], PAGE_READWRITE, eTaskCritical, NULL),
            "VirtualAlloc(NULL, page, %#x, PAGE_READWRITE, NULL)", (unsigned)ztypes[t]);
    }
}

/* ---- VirtualProtect ---------------------------------------------------------------------- */

TEST(virtual_protect_table)
{
    DWORD old;
    for (size_t ai = 0; ai < g_naddr; ai++)
        for (int si = 0; si < NSIZES; si++) {
            const char *sname;
            uintptr_t a = g_addr[ai].a;
            size_t size = size_of(si, a, &sname);
            HRESULT want = expect_protect(a, size, PAGE_NOACCESS, 0);
            if (want == S_OK) {
                g_skipped++;
                continue;
            }
            old = 0xDEADBEEF;
            ROW(want, "SPEC §6", A->lpVtbl->VirtualProtect(A, (void *)a, size, PAGE_NOACCESS, &old),
                "VirtualProtect(%s, %s, PAGE_NOACCESS)", g_addr[ai].name, sname);
        }
    /* Committed then reserved pages: atomic refusal. */
    ROW(ERR_ADDR, "SPEC §6: all committed, atomically",
        A->lpVtbl->VirtualProtect(A, R + 2 * P, 5 * P, PAGE_NOACCESS, &old),
        "VirtualProtect(R + 2 pages, 5 pages [4 committed, 1 reserved], PAGE_NOACCESS)");
    ROW(ERR_ADDR, "SPEC §6: all committed, atomically",
        A->lpVtbl->VirtualProtect(A, R + 5 * P, 4 * P, PAGE_READWRITE, &old),
        "VirtualProtect(R + 5 pages, 4 pages [committed, reserved, committed], PAGE_READWRITE)");
    /* Every single protection bit, alone and with each base, at a committed page
     * (valid ones would succeed: not made) and a reserved one. */
    static const DWORD pbases[] = {0, PAGE_NOACCESS, PAGE_READONLY, PAGE_READWRITE, PAGE_EXECUTE,
                                   PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE};
    for (int bit = 0; bit < 32; bit++)
        for (size_t b = 0; b < sizeof pbases / sizeof pbases[0]; b++)
            for (int w = 0; w < 2; w++) {
                DWORD prot = pbases[b] | (DWORD)1 << bit;
                uintptr_t a = (uintptr_t)R + (w ? 6 : 1) * P;
                HRESULT want = expect_protect(a, P, prot, 0);
                if (want == S_OK) {
                    g_skipped++;
                    continue;
                }
                ROW(want, "SPEC §6", A->lpVtbl->VirtualProtect(A, (void *)a, P, prot, &old),
                    "VirtualProtect(R + %d pages, page, %#x)", w ? 6 : 1, (unsigned)prot);
                ROW(E_POINTER, "SPEC §6: NULL pflOldProtect",
                    A->lpVtbl->VirtualProtect(A, (void *)a, P, prot, NULL),
                    "VirtualProtect(R + %d pages, page, %#x, NULL)", w ? 6 : 1, (unsigned)prot);
            }
    ROW(E_POINTER, "SPEC §6: NULL pflOldProtect",
        A->lpVtbl->VirtualProtect(A, R, P, PAGE_READWRITE, NULL), "VirtualProtect(R, page, PAGE_READWRITE, NULL)");
    ROW(ERR_ADDR, "SPEC §6: another manager's reservation",
        Bm->lpVtbl->VirtualProtect(Bm, R, P, PAGE_READWRITE, &old), "B VirtualProtect(R, page, PAGE_READWRITE)");
}

/* ---- VirtualQuery -------------------------------------------------------------------------- */

TEST(virtual_query_table)
{
    MEMORY_BASIC_INFORMATION info[2];
    SIZE_T n;
    for (size_t ai = 0; ai < g_naddr; ai++) {
        uintptr_t a = g_addr[ai].a;
        HRESULT want = a >= (uintptr_t)1 << 47 ? E_INVALIDARG : S_OK;
        n = 12345;
        ROW(want, "contract: VirtualQuery works for any address of user space",
            A->lpVtbl->VirtualQuery(A, (void *)a, info, sizeof info[0], &n), "VirtualQuery(%s)",
            g_addr[ai].name);
        if (want == S_OK && n != sizeof info[0])
            TEST_FAIL_AT("%s: *pResult %zu", g_call, (size_t)n);
        for (size_t len = 0; len < sizeof info[0]; len += 7) {
            ROW(ERR_BADLEN, "SPEC §5: dwLength < sizeof(MEMORY_BASIC_INFORMATION)",
                A->lpVtbl->VirtualQuery(A, (void *)a, info, len, &n), "VirtualQuery(%s, buf, %zu, &n)",
                g_addr[ai].name, len);
            ROW(E_POINTER, "contract: NULL buffer first",
                A->lpVtbl->VirtualQuery(A, (void *)a, NULL, len, &n), "VirtualQuery(%s, NULL, %zu, &n)",
                g_addr[ai].name, len);
        }
        ROW(E_POINTER, "SPEC §5: NULL lpBuffer",
            A->lpVtbl->VirtualQuery(A, (void *)a, NULL, sizeof info[0], &n), "VirtualQuery(%s, NULL, ...)",
            g_addr[ai].name);
        ROW(E_POINTER, "SPEC §5: NULL pResult",
            A->lpVtbl->VirtualQuery(A, (void *)a, info, sizeof info[0], NULL), "VirtualQuery(%s, buf, ..., NULL)",
            g_addr[ai].name);
    }
    /* NULL reads free; SIZE_MAX as a length is fine. */
    n = 0;
    CHECK_HR(A->lpVtbl->VirtualQuery(A, NULL, info, SIZE_MAX, &n), S_OK);
    CHECK_EQ(n, sizeof info[0]);
    CHECK_EQ(info[0].State, MEM_FREE);
}

/* ---- the heap -------------------------------------------------------------------------------- */

TEST(heap_table)
{
    void *p;
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX - 4096, (size_t)1 << 63,
                                  ((size_t)1 << 47) + 1, (size_t)1 << 47};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        p = (void *)1;
        ROW(E_OUTOFMEMORY, "a size no address space can hold",
            H->lpVtbl->Alloc(H, huge[i], eTaskCritical, &p), "heap Alloc(%#zx)", huge[i]);
        CHECK(p == NULL);
        p = (void *)1;
        ROW(E_OUTOFMEMORY, "a size no address space can hold",
            H->lpVtbl->DebugAlloc(H, huge[i], eProcessCritical, (char *)__FILE__, __LINE__, &p),
            "heap DebugAlloc(%#zx)", huge[i]);
        CHECK(p == NULL);
    }
    static const int levels[] = {3, 100, -1, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        static const size_t sizes[] = {0, 16, 100000};
        for (size_t s = 0; s < 3; s++) {
            ROW(E_INVALIDARG, "contract: eCriticalLevel",
                H->lpVtbl->Alloc(H, sizes[s], (EMemoryCriticalLevel)levels[i], &p),
                "heap Alloc(%zu, level %d)", sizes[s], levels[i]);
            ROW(E_INVALIDARG, "contract: eCriticalLevel",
                H->lpVtbl->DebugAlloc(H, sizes[s], (EMemoryCriticalLevel)levels[i], NULL, 0, &p),
                "heap DebugAlloc(%zu, level %d, NULL file)", sizes[s], levels[i]);
        }
    }
    ROW(E_POINTER, "ppMem NULL", H->lpVtbl->Alloc(H, 16, eTaskCritical, NULL), "heap Alloc(16, NULL)");
    ROW(E_POINTER, "ppMem NULL", H->lpVtbl->DebugAlloc(H, 16, eTaskCritical, (char *)"f", 1, NULL),
        "heap DebugAlloc(16, NULL)");
    /* Free of everything the heap did not hand out (docs/heap.md). */
    for (size_t ai = 0; ai < g_naddr; ai++) {
        uintptr_t a = g_addr[ai].a;
        HRESULT want = a == 0 ? S_OK : a == (uintptr_t)BLOCK ? S_OK + 1 : HOST_E_INVALIDOPERATION;
        if (want == S_OK + 1) {
            g_skipped++;
            continue;
        }
        ROW(want, "docs/heap.md: Free of a pointer the heap did not hand out",
            H->lpVtbl->Free(H, (void *)a), "heap Free(%s)", g_addr[ai].name);
        if (a)
            ROW(HOST_E_INVALIDOPERATION, "docs/heap.md: Free of a pointer the heap did not hand out",
                H->lpVtbl->Free(H, (void *)(a + 16)), "heap Free(%s + 16)", g_addr[ai].name);
    }
    for (size_t off = 1; off < 256; off += 15)
        ROW(HOST_E_INVALIDOPERATION, "docs/heap.md: interior pointer",
            H->lpVtbl->Free(H, BLOCK + off), "heap Free(block + %zu)", off);
    ROW(HOST_E_INVALIDOPERATION, "docs/heap.md: another heap's block",
        HB->lpVtbl->Free(HB, BLOCK), "heap B Free(heap A's block)");
    ROW(HOST_E_INVALIDOPERATION, "docs/heap.md: freed already", H->lpVtbl->Free(H, FREED_BLOCK),
        "heap Free(a freed block)");
}

/* ---- the rest of the interface --------------------------------------------------------------- */

static const IID IID_RANDOM = {0x12345678, 0x9ABC, 0xDEF0, {1, 2, 3, 4, 5, 6, 7, 8}};

TEST(other_methods_table)
{
    DWORD load;
    SIZE_T avail;
    ROW(E_POINTER, "SPEC §7: GetMemoryLoad NULL", A->lpVtbl->GetMemoryLoad(A, NULL, &avail), "GetMemoryLoad(NULL, &avail)");
    ROW(E_POINTER, "SPEC §7: GetMemoryLoad NULL", A->lpVtbl->GetMemoryLoad(A, &load, NULL), "GetMemoryLoad(&load, NULL)");
    ROW(E_POINTER, "SPEC §7: GetMemoryLoad NULL", A->lpVtbl->GetMemoryLoad(A, NULL, NULL), "GetMemoryLoad(NULL, NULL)");
    ROW(S_OK, "docs/policy.md: NULL unregisters", A->lpVtbl->RegisterMemoryNotificationCallback(A, NULL),
        "RegisterMemoryNotificationCallback(NULL)");

    /* The runtime's address space (docs/policy.md). */
    g_row_arenas = 0; /* NeedsVirtualAddressSpace may give cached arenas back */
    static const size_t zero_sizes[] = {0};
    ROW(E_INVALIDARG, "docs/policy.md: size 0", A->lpVtbl->NeedsVirtualAddressSpace(A, R, zero_sizes[0]),
        "NeedsVirtualAddressSpace(R, 0)");
    ROW(E_INVALIDARG, "docs/policy.md: size 0", A->lpVtbl->NeedsVirtualAddressSpace(A, NULL, 0),
        "NeedsVirtualAddressSpace(NULL, 0)");
    g_row_arenas = 1;
    for (size_t ai = 0; ai < g_naddr; ai++) {
        uintptr_t a = g_addr[ai].a;
        ROW(E_INVALIDARG, "docs/policy.md: a zero size", A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)a, 0),
            "AcquiredVirtualAddressSpace(%s, 0)", g_addr[ai].name);
        if (a)
            ROW(E_INVALIDARG, "address + size wraps", A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)a, SIZE_MAX),
                "AcquiredVirtualAddressSpace(%s, SIZE_MAX)", g_addr[ai].name);
        if (a > P)
            ROW(E_INVALIDARG, "address + size wraps", A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)a, (size_t)0 - a + P),
                "AcquiredVirtualAddressSpace(%s, -address + page)", g_addr[ai].name);
        HRESULT want = a == X ? S_OK + 1 : HOST_E_INVALIDOPERATION;
        if (want != S_OK + 1)
            ROW(HOST_E_INVALIDOPERATION, "docs/policy.md: never reported",
                A->lpVtbl->ReleasedVirtualAddressSpace(A, (void *)a), "ReleasedVirtualAddressSpace(%s)",
                g_addr[ai].name);
    }
    ROW(E_INVALIDARG, "docs/policy.md: NULL start", A->lpVtbl->AcquiredVirtualAddressSpace(A, NULL, P),
        "AcquiredVirtualAddressSpace(NULL, page)");
    ROW(E_INVALIDARG, "docs/policy.md: overlaps a reported range",
        A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)(X + P), P), "AcquiredVirtualAddressSpace(X + page, page)");
    ROW(E_INVALIDARG, "docs/policy.md: overlaps a reported range",
        A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)(X - P), 2 * P), "AcquiredVirtualAddressSpace(X - page, 2 pages)");
    ROW(E_INVALIDARG, "docs/policy.md: reported twice",
        A->lpVtbl->AcquiredVirtualAddressSpace(A, (void *)X, XSIZE), "AcquiredVirtualAddressSpace(X, its size)");
    ROW(HOST_E_INVALIDOPERATION, "docs/policy.md: not a reported start",
        A->lpVtbl->ReleasedVirtualAddressSpace(A, (void *)(X + P)), "ReleasedVirtualAddressSpace(X + page)");
    ROW(HOST_E_INVALIDOPERATION, "docs/policy.md: reported to another manager",
        Bm->lpVtbl->ReleasedVirtualAddressSpace(Bm, (void *)X), "B ReleasedVirtualAddressSpace(X)");
    ROW(HOST_E_INVALIDOPERATION, "SPEC §4 rule 3: memory the runtime mapped itself",
        A->lpVtbl->VirtualFree(A, (void *)X, 0, MEM_RELEASE), "VirtualFree(X, 0, MEM_RELEASE)");

    /* CreateMalloc: every bit (docs/heap.md: other bits are E_INVALIDARG). */
    for (int bit = 0; bit < 32; bit++) {
        DWORD types[2] = {(DWORD)1 << bit, MALLOC_THREADSAFE | MALLOC_EXECUTABLE | (DWORD)1 << bit};
        for (int v = 0; v < 2; v++) {
            if (!(types[v] & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))) {
                g_skipped++;
                continue;
            }
            IHostMalloc *h = (IHostMalloc *)1;
            ROW(E_INVALIDARG, "docs/heap.md: CreateMalloc type", A->lpVtbl->CreateMalloc(A, types[v], &h),
                "CreateMalloc(%#x)", (unsigned)types[v]);
            CHECK(h == NULL);
        }
    }
    ROW(E_POINTER, "CreateMalloc NULL out", A->lpVtbl->CreateMalloc(A, 0, NULL), "CreateMalloc(0, NULL)");
    ROW(E_POINTER, "CreateMalloc NULL out", A->lpVtbl->CreateMalloc(A, 0x80, NULL), "CreateMalloc(0x80, NULL)");

    /* QueryInterface: unknown IIDs, NULL out; reference counts unchanged. */
    IID near = IID_IHostMemoryManager;
    near.Data4[7] ^= 1;
    const IID *iids[] = {&IID_IHostMalloc, &IID_ICLRMemoryNotificationCallback, &IID_RANDOM, &near};
    const char *inames[] = {"IID_IHostMalloc", "IID_ICLRMemoryNotificationCallback", "a random IID",
                            "IID_IHostMemoryManager with one bit flipped"};
    ULONG refs = A->lpVtbl->AddRef(A);
    A->lpVtbl->Release(A);
    ULONG hrefs = H->lpVtbl->AddRef(H);
    H->lpVtbl->Release(H);
    for (int i = 0; i < 4; i++) {
        void *v = (void *)1;
        ROW(E_NOINTERFACE, "SPEC §1: QueryInterface", A->lpVtbl->QueryInterface(A, iids[i], &v),
            "manager QueryInterface(%s)", inames[i]);
        CHECK(v == NULL);
        ROW(E_POINTER, "QueryInterface NULL out", A->lpVtbl->QueryInterface(A, iids[i], NULL),
            "manager QueryInterface(%s, NULL)", inames[i]);
        if (iids[i] != &IID_IHostMalloc) {
            v = (void *)1;
            ROW(E_NOINTERFACE, "SPEC §1: QueryInterface", H->lpVtbl->QueryInterface(H, iids[i], &v),
                "heap QueryInterface(%s)", inames[i]);
            CHECK(v == NULL);
        }
    }
    void *v = (void *)1;
    ROW(E_NOINTERFACE, "SPEC §1: QueryInterface", H->lpVtbl->QueryInterface(H, &IID_IHostMemoryManager, &v),
        "heap QueryInterface(IID_IHostMemoryManager)");
    CHECK(v == NULL);
    ROW(E_POINTER, "QueryInterface NULL out", H->lpVtbl->QueryInterface(H, &IID_IUnknown, NULL),
        "heap QueryInterface(IID_IUnknown, NULL)");
    /* A NULL IID is a bad argument, alike for both objects. */
    v = (void *)1;
    ROW(E_INVALIDARG, "QueryInterface NULL IID", A->lpVtbl->QueryInterface(A, NULL, &v),
        "manager QueryInterface(NULL)");
    CHECK(v == NULL);
    v = (void *)1;
    ROW(E_INVALIDARG, "QueryInterface NULL IID", H->lpVtbl->QueryInterface(H, NULL, &v),
        "heap QueryInterface(NULL)");
    CHECK(v == NULL);
    CHECK_EQ(A->lpVtbl->AddRef(A), refs);
    A->lpVtbl->Release(A);
    CHECK_EQ(H->lpVtbl->AddRef(H), hrefs);
    H->lpVtbl->Release(H);
}

/* hostmem_create with bad configurations; hostmem_get_stats with bad sizes. */
TEST(native_api_table)
{
    hostmem_config c;
    IHostMemoryManager *m;
    static const size_t sizes[] = {0, 1, 8, offsetof(hostmem_config, lock_ops) - 1, 4097, SIZE_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        memset(&c, 0, sizeof c);
        c.size = sizes[i];
        m = (IHostMemoryManager *)1;
        ROW(E_INVALIDARG, "hostmem.h: a config whose size is too small (or absurd)", hostmem_create(&c, &m),
            "hostmem_create(size %zu)", sizes[i]);
        CHECK(m == NULL);
    }
    for (int bit = 0; bit < 32; bit++) {
        if ((1u << bit) & (HOSTMEM_COMPACT | HOSTMEM_LEAK_REPORT | HOSTMEM_GUARD_PAGES | HOSTMEM_EMULATE_WRITE_WATCH |
                          HOSTMEM_FIXED_PLACEMENT))
            continue;
        memset(&c, 0, sizeof c);
        c.size = sizeof c;
        c.flags = 1u << bit;
        m = (IHostMemoryManager *)1;
        ROW(E_INVALIDARG, "hostmem.h: fields out of range (unknown flag)", hostmem_create(&c, &m),
            "hostmem_create(flags %#x)", 1u << bit);
        CHECK(m == NULL);
    }
    size_t granule = hostmem_granularity();
    const size_t arenas[] = {1, 4096 + 1, granule, 2 * granule, 3 * granule, 4 * granule + 4096,
                             SIZE_MAX, SIZE_MAX - 65535, (size_t)1 << 62};
    for (size_t i = 0; i < sizeof arenas / sizeof arenas[0]; i++) {
        memset(&c, 0, sizeof c);
        c.size = sizeof c;
        c.arena_size = arenas[i];
        m = (IHostMemoryManager *)1;
        ROW(E_INVALIDARG, "hostmem.h: fields out of range (arena_size)", hostmem_create(&c, &m),
            "hostmem_create(arena_size %#zx)", arenas[i]);
        CHECK(m == NULL);
        const char *why = hostmem_config_problem(&c); /* issue 16: and says why */
        CHECK(why && strstr(why, "arena_size"));
    }
    /* the smallest arena: 4 granules (hostmem.h) */
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    c.arena_size = 4 * granule;
    CHECK(hostmem_config_problem(&c) == NULL);
    m = NULL;
    CHECK_HR(hostmem_create(&c, &m), S_OK);
    if (m)
        CHECK_EQ(m->lpVtbl->Release(m), 0);
    static const uint32_t loads[][3] = {{101, 0, 0}, {50, 60, 0}, {90, 95, 0}, {UINT32_MAX, 0, 0},
                                        {90, 60, 95}};
    for (size_t i = 0; i < sizeof loads / sizeof loads[0]; i++) {
        memset(&c, 0, sizeof c);
        c.size = sizeof c;
        c.notify_low_load = loads[i][0];
        c.notify_high_load = loads[i][1];
        c.notify_hysteresis = loads[i][2];
        m = (IHostMemoryManager *)1;
        ROW(E_INVALIDARG, "hostmem.h: fields out of range (watermarks)", hostmem_create(&c, &m),
            "hostmem_create(low %u high %u hysteresis %u)", loads[i][0], loads[i][1], loads[i][2]);
        CHECK(m == NULL);
        CHECK(hostmem_config_problem(&c) != NULL); /* and says why */
    }
    /* issue 13: configurations that cannot work are refused at creation, with a reason */
    static const size_t limits[] = {1, 100, 4095};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        memset(&c, 0, sizeof c);
        c.size = sizeof c;
        c.commit_limit = limits[i];
        m = (IHostMemoryManager *)1;
        ROW(E_INVALIDARG, "issue 13: a commit limit under one page", hostmem_create(&c, &m),
            "hostmem_create(commit_limit %zu)", limits[i]);
        CHECK(m == NULL);
        const char *why = hostmem_config_problem(&c);
        CHECK(why && strstr(why, "commit_limit"));
    }
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    c.system_root = "/nonexistent/hostmem-root";
    m = (IHostMemoryManager *)1;
    ROW(E_INVALIDARG, "issue 13: a system_root with no readable files", hostmem_create(&c, &m),
        "hostmem_create(system_root %s)", c.system_root);
    CHECK(m == NULL);
    CHECK(hostmem_config_problem(&c) && strstr(hostmem_config_problem(&c), "system_root"));
    c.system_root = "/";
    c.commit_limit = 4096 > hostmem_page_size() ? 4096 : hostmem_page_size(); /* one page: fine */
    CHECK(hostmem_config_problem(&c) == NULL);
    CHECK(hostmem_config_problem(NULL) == NULL);

    hostmem_lock_ops ops = {0};
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    c.lock_ops = &ops;
    m = (IHostMemoryManager *)1;
    ROW(E_INVALIDARG, "hostmem.h: lock_ops without its callbacks", hostmem_create(&c, &m),
        "hostmem_create(lock_ops all NULL)");
    CHECK(m == NULL);
    ROW(E_POINTER, "hostmem.h: E_POINTER for a NULL out", hostmem_create(NULL, NULL), "hostmem_create(NULL, NULL)");
    c.lock_ops = NULL;
    ROW(E_POINTER, "hostmem.h: E_POINTER for a NULL out", hostmem_create(&c, NULL), "hostmem_create(&c, NULL)");

    hostmem_stats st;
    static const size_t ssizes[] = {0, 1, sizeof(size_t) - 1}; /* shorter than the size field */
    for (size_t i = 0; i < sizeof ssizes / sizeof ssizes[0]; i++) {
        memset(&st, 0xEE, sizeof st);
        st.size = ssizes[i];
        ROW(E_INVALIDARG, "hostmem_get_stats: a size too small", hostmem_get_stats(A, &st),
            "hostmem_get_stats(size %zu)", ssizes[i]);
    }
    ROW(E_POINTER, "hostmem_get_stats NULL", hostmem_get_stats(A, NULL), "hostmem_get_stats(A, NULL)");
    st.size = sizeof st;
    ROW(E_POINTER, "hostmem_get_stats NULL", hostmem_get_stats(NULL, &st), "hostmem_get_stats(NULL, &st)");
    ROW(E_POINTER, "hostmem_get_stats: not a manager", hostmem_get_stats((IHostMemoryManager *)H, &st),
        "hostmem_get_stats(a heap, &st)");
    /* A larger struct than this version knows: fields past sizeof are not written. */
    struct {
        hostmem_stats s;
        unsigned char canary[64];
    } big;
    memset(&big, 0xCC, sizeof big);
    big.s.size = sizeof big;
    ROW(S_OK, "hostmem.h: versioned by size", hostmem_get_stats(A, &big.s), "hostmem_get_stats(size %zu)", sizeof big);
    CHECK_EQ(big.s.size, sizeof big);
    for (size_t i = 0; i < sizeof big.canary; i++)
        if (big.canary[i] != 0xCC) {
            TEST_FAIL_AT("hostmem_get_stats wrote past the struct it knows (byte %zu)", i);
            break;
        }
    /* A smaller (older) one: nothing past its size. */
    unsigned char small[sizeof st + 16];
    memset(small, 0xCC, sizeof small);
    size_t old_size = offsetof(hostmem_stats, arena_bytes) + sizeof(size_t);
    memcpy(small, &old_size, sizeof old_size);
    ROW(S_OK, "hostmem.h: versioned by size", hostmem_get_stats(A, (hostmem_stats *)(void *)small),
        "hostmem_get_stats(size %zu)", old_size);
    for (size_t i = old_size; i < sizeof small; i++)
        if (small[i] != 0xCC) {
            TEST_FAIL_AT("hostmem_get_stats(size %zu) wrote byte %zu", old_size, i);
            break;
        }
}

/* The budget is not an argument check: with the budget exhausted, a call whose
 * address is bad is still refused for its address (SPEC §3: type, protection,
 * size, then address; the budget refuses only a call that could otherwise be
 * made), and no refusal is counted. */
TEST(budget_after_address)
{
    hostmem_stats b = stats_of(Bm);
    REQUIRE_HR(hostmem_set_commit_limit(Bm, b.committed_bytes), S_OK);
    void *p;
    ROW(ERR_ADDR, "SPEC §3: the address before the budget",
        Bm->lpVtbl->VirtualAlloc(Bm, RB, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
        "B VirtualAlloc(B's own reservation, page, MEM_RESERVE|MEM_COMMIT) over budget");
    ROW(ERR_ADDR, "SPEC §3: the address before the budget",
        Bm->lpVtbl->VirtualAlloc(Bm, R, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
        "B VirtualAlloc(A's reservation R, page, MEM_RESERVE|MEM_COMMIT) over budget");
    ROW(ERR_ADDR, "SPEC §3: the address before the budget",
        Bm->lpVtbl->VirtualAlloc(Bm, RB + 4 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
        "B VirtualAlloc(past B's reservation, page, MEM_COMMIT) over budget");
    ROW(ERR_ADDR, "SPEC §3: the address before the budget",
        Bm->lpVtbl->VirtualAlloc(Bm, (void *)(((uintptr_t)1 << 47) - P), 2 * P, MEM_RESERVE | MEM_COMMIT,
                                 PAGE_READWRITE, eTaskCritical, &p),
        "B VirtualAlloc(2^47 - page, 2 pages, MEM_RESERVE|MEM_COMMIT) over budget");
    CHECK_HR(hostmem_set_commit_limit(Bm, HOSTMEM_UNLIMITED), S_OK);
}

/* ---- double releases ---------------------------------------------------------------------------- */

TEST(double_release)
{
    void *p;
    REQUIRE_HR(A->lpVtbl->VirtualAlloc(A, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_HR(A->lpVtbl->VirtualFree(A, p, 0, MEM_RELEASE), S_OK);
    ROW(HOST_E_INVALIDOPERATION, "SPEC §4 rule 3: released already", A->lpVtbl->VirtualFree(A, p, 0, MEM_RELEASE),
        "VirtualFree(released, 0, MEM_RELEASE) again");
    ROW(HOST_E_INVALIDOPERATION, "SPEC §4 rule 3: released already", A->lpVtbl->VirtualFree(A, p, P, MEM_DECOMMIT),
        "VirtualFree(released, page, MEM_DECOMMIT)");
    ROW(ERR_ADDR, "SPEC §3: commit in released memory",
        A->lpVtbl->VirtualAlloc(A, p, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
        "VirtualAlloc(released, page, MEM_COMMIT)");
}

struct racer {
    IHostMemoryManager *m;
    void *base;
    pthread_barrier_t *barrier;
    HRESULT hr;
};

static void *release_racer(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->barrier);
    r->hr = r->m->lpVtbl->VirtualFree(r->m, r->base, 0, MEM_RELEASE);
    return NULL;
}

/* Two threads release the same reservation: exactly one S_OK, the other
 * HOST_E_INVALIDOPERATION (SPEC §4 rule 3), every time. */
TEST(concurrent_double_release)
{
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, 2);
    const char *env = getenv("HOSTMEM_ITERATIONS");
    int rounds = env && atoi(env) > 0 && atoi(env) < 200 ? atoi(env) : 200;
    int both_ok = 0, bad = 0;
    for (int i = 0; i < rounds; i++) {
        void *p;
        size_t pages = 1 + (size_t)(i % 8);
        REQUIRE_HR(A->lpVtbl->VirtualAlloc(A, NULL, pages * P, i & 1 ? MEM_RESERVE : MEM_RESERVE | MEM_COMMIT,
                                           PAGE_READWRITE, eTaskCritical, &p), S_OK);
        snap(&g_before);
        struct racer r[2] = {{A, p, &barrier, 0}, {A, p, &barrier, 0}};
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            pthread_create(&t[k], NULL, release_racer, &r[k]);
        for (int k = 0; k < 2; k++)
            pthread_join(t[k], NULL);
        g_tried++;
        int ok = (r[0].hr == S_OK) + (r[1].hr == S_OK);
        int refused = (r[0].hr == HOST_E_INVALIDOPERATION) + (r[1].hr == HOST_E_INVALIDOPERATION);
        if (ok == 2)
            both_ok++;
        if (ok != 1 || refused != 1) {
            char b1[16], b2[16];
            if (bad++ < 5)
                TEST_FAIL_AT("round %d: two threads VirtualFree(%p, 0, MEM_RELEASE): %s and %s; "
                             "expected one S_OK and one HOST_E_INVALIDOPERATION",
                             i, p, test_hr_name(r[0].hr, b1, sizeof b1), test_hr_name(r[1].hr, b2, sizeof b2));
        }
        hostmem_stats s = stats_of(A);
        if (s.reservations != g_before.a.reservations - 1 ||
            s.reserved_bytes != g_before.a.reserved_bytes - pages * P ||
            s.committed_bytes != g_before.a.committed_bytes - (i & 1 ? 0 : pages * P))
            TEST_FAIL_AT("round %d: counters after the racing releases: reservations %zu reserved %#zx "
                         "committed %#zx", i, s.reservations, s.reserved_bytes, s.committed_bytes);
        char why[256];
        if (hostmem_validate(A, 0, why, sizeof why) != S_OK)
            TEST_FAIL_AT("round %d: hostmem_validate: %s", i, why);
    }
    CHECK_EQ(both_ok, 0);
    pthread_barrier_destroy(&barrier);
}

/* ---- after shutdown ------------------------------------------------------------------------------ */

TEST(after_shutdown)
{
    IHostMemoryManager *m;
    hostmem_config c;
    memset(&c, 0, sizeof c);
    c.size = sizeof c;
    c.commit_limit = HOSTMEM_UNLIMITED;
    c.arena_size = (size_t)64 << 20;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *base, *p, *block;
    IHostMalloc *h;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 8 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base), S_OK);
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, base, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    REQUIRE_HR(m->lpVtbl->CreateMalloc(m, MALLOC_THREADSAFE, &h), S_OK);
    REQUIRE_HR(h->lpVtbl->Alloc(h, 64, eTaskCritical, &block), S_OK);
    REQUIRE_HR(m->lpVtbl->AcquiredVirtualAddressSpace(m, (void *)0x510000000000ull, P), S_OK);
    REQUIRE_HR(hostmem_shutdown(m), S_OK);

    const HRESULT NA = HOST_E_CLRNOTAVAILABLE;
    const char *rule = "SPEC §2: after shutdown every call is HOST_E_CLRNOTAVAILABLE";
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    DWORD old, load;
    SIZE_T avail;
    IHostMalloc *h2 = (IHostMalloc *)1;
#define AFTER(call, ...)                                                    \
    do {                                                                    \
        snprintf(g_call, sizeof g_call, __VA_ARGS__);                       \
        HRESULT got_ = (call);                                              \
        char b_[16];                                                        \
        g_tried++;                                                          \
        if (got_ != NA)                                                     \
            TEST_FAIL_AT("%s after hostmem_shutdown -> %s, expected HOST_E_CLRNOTAVAILABLE (%s)", \
                         g_call, test_hr_name(got_, b_, sizeof b_), rule);  \
    } while (0)
    AFTER(m->lpVtbl->CreateMalloc(m, 0, &h2), "CreateMalloc(0)");
    CHECK(h2 == NULL);
    AFTER(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), "VirtualAlloc(NULL, page, MEM_RESERVE)");
    AFTER(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), "VirtualAlloc(NULL, page, MEM_COMMIT|MEM_RESERVE)");
    AFTER(m->lpVtbl->VirtualAlloc(m, base, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), "VirtualAlloc(base, page, MEM_COMMIT)");
    AFTER(m->lpVtbl->VirtualAlloc(m, base, P, MEM_RESET, PAGE_READWRITE, eTaskCritical, &p), "VirtualAlloc(base, page, MEM_RESET)");
    AFTER(m->lpVtbl->VirtualAlloc(m, base, P, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &p), "VirtualAlloc(base, page, MEM_RESET_UNDO)");
    AFTER(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), "VirtualFree(base, 0, MEM_RELEASE)");
    AFTER(m->lpVtbl->VirtualFree(m, base, P, MEM_DECOMMIT), "VirtualFree(base, page, MEM_DECOMMIT)");
    AFTER(m->lpVtbl->VirtualQuery(m, base, &info, sizeof info, &n), "VirtualQuery(base)");
    AFTER(m->lpVtbl->VirtualQuery(m, &n, &info, sizeof info, &n), "VirtualQuery(the stack)");
    AFTER(m->lpVtbl->VirtualProtect(m, base, P, PAGE_READONLY, &old), "VirtualProtect(base, page, PAGE_READONLY)");
    AFTER(m->lpVtbl->GetMemoryLoad(m, &load, &avail), "GetMemoryLoad");
    AFTER(m->lpVtbl->RegisterMemoryNotificationCallback(m, NULL), "RegisterMemoryNotificationCallback(NULL)");
    AFTER(m->lpVtbl->NeedsVirtualAddressSpace(m, NULL, P), "NeedsVirtualAddressSpace(NULL, page)");
    AFTER(m->lpVtbl->AcquiredVirtualAddressSpace(m, (void *)0x520000000000ull, P), "AcquiredVirtualAddressSpace");
    AFTER(m->lpVtbl->ReleasedVirtualAddressSpace(m, (void *)0x510000000000ull), "ReleasedVirtualAddressSpace");
    AFTER(h->lpVtbl->Alloc(h, 16, eTaskCritical, &p), "heap Alloc(16)");
    AFTER(h->lpVtbl->Alloc(h, 100000, eTaskCritical, &p), "heap Alloc(100000)");
    AFTER(h->lpVtbl->DebugAlloc(h, 16, eTaskCritical, (char *)__FILE__, __LINE__, &p), "heap DebugAlloc(16)");
    AFTER(h->lpVtbl->Free(h, block), "heap Free(a block allocated before)");
    AFTER(hostmem_poll_system(m), "hostmem_poll_system");
    AFTER(hostmem_set_commit_limit(m, P), "hostmem_set_commit_limit");
    AFTER(hostmem_shutdown(m), "hostmem_shutdown again");
#undef AFTER
    /* The memory went back to the OS: the range reads free to another manager. */
    MEMORY_BASIC_INFORMATION mi;
    CHECK_HR(A->lpVtbl->VirtualQuery(A, base, &mi, sizeof mi, &n), S_OK);
    CHECK(mi.State == MEM_FREE);
    /* The objects stay valid until their last Release. */
    CHECK_EQ(h->lpVtbl->Release(h), 0);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

int main(void)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    g_libc = malloc(256);
    if (!g_libc || !fixture_setup()) {
        fprintf(stderr, "test_badinput: fixture setup failed\n");
        fixture_teardown();
        free(g_libc);
        printf("test_badinput: 0 passed, 1 failed\n");
        return 1;
    }
    build_addresses();
    RUN(virtual_free_table);
    RUN(virtual_alloc_table);
    RUN(virtual_protect_table);
    RUN(virtual_query_table);
    RUN(heap_table);
    RUN(other_methods_table);
    RUN(native_api_table);
    RUN(budget_after_address);
    RUN(double_release);
    RUN(concurrent_double_release);
    RUN(after_shutdown);
    fixture_teardown();
    free(g_libc);
    printf("test_badinput: %ld bad inputs tried (%ld valid combinations not made)\n", g_tried, g_skipped);
    return TEST_SUMMARY("test_badinput");
}
