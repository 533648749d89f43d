/*
 * test_model.c - model-based random test of VirtualAlloc / VirtualFree /
 * VirtualQuery / VirtualProtect against SPEC sections 3-6, and against the
 * managers' dynamic-code policies (issue 23: W^X or no dynamic code, from the
 * configuration, and in some runs tightened at random steps).
 *
 * A plain model (an array of slots, each an empty slot or a live reservation
 * with per-page state, protection and expected contents) predicts the
 * HRESULT of every call before it is made, from the rules of the contract
 * only. After every step every page of every live reservation is compared
 * with VirtualQuery, the readable pages' contents are sampled, the counters
 * are compared and hostmem_validate must answer S_OK.
 *
 * Usage: test_model [seed [iterations]]
 *        (or HOSTMEM_SEED / HOSTMEM_ITERATIONS in the environment)
 * A failure prints the seed, the iteration and the last operations, so the
 * run can be repeated exactly.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "test.h"
#include "win32_rules.h"

#define NSLOTS 8
#define MAXPAGES 40
#define NFREED 24
#define NLOG 16
#define DEFAULT_SEED 20240611u
#define DEFAULT_ITERATIONS 20000L

#define ERR_ADDR HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define ERR_BADLEN HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define BLOCKED HOSTMEM_E_DYNAMIC_CODE_BLOCKED

/* ---- the model ------------------------------------------------------------ */

typedef struct slot {
    int live;
    int owner; /* index of the manager that made it */
    uintptr_t base;
    size_t npages;
    DWORD aprot;
    DWORD state[MAXPAGES];  /* MEM_COMMIT or MEM_RESERVE */
    DWORD prot[MAXPAGES];   /* PAGE_* with modifiers; 0 when reserved */
    uint64_t tag[MAXPAGES]; /* content pattern; 0 = all zero */
    unsigned char known[MAXPAGES]; /* 0 after MEM_RESET: contents undefined */
} slot;

typedef struct freed_range {
    uintptr_t base;
    size_t npages;
    int owner;
} freed_range;

static size_t P, G;
static slot S[NSLOTS];
static freed_range F[NFREED];
static int nfreed, freed_next;
static IHostMemoryManager *M[2];
static int NM;
static uint32_t g_policy[2];       /* each manager's dynamic-code policy (HOSTMEM_CODE_*) */
static size_t g_code_refusals[2];  /* the calls it refused, as hostmem_stats counts them */
static int g_tighten;              /* this run tightens the policies at random steps */

static uint64_t rng_state, g_seed;
static long g_iter, g_iterations;
static int g_stop, g_nmsg;
static char g_op[320];
static char g_log[NLOG][320];
static long g_log_iter[NLOG];
static long g_logn;
static unsigned char *g_heap;

/* ---- helpers -------------------------------------------------------------- */

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static size_t rn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }
static int pct(int p) { return (int)rn(100) < p; }

static uintptr_t pdown(uintptr_t a) { return a & ~(uintptr_t)(P - 1); }
static uintptr_t pup(uintptr_t a) { return (a + P - 1) & ~(uintptr_t)(P - 1); }
static uintptr_t gdown(uintptr_t a) { return a & ~(uintptr_t)(G - 1); }
static uintptr_t gup(uintptr_t a) { return (a + G - 1) & ~(uintptr_t)(G - 1); }
static uintptr_t slot_end(const slot *s) { return s->base + s->npages * P; }

static const char *hrn(HRESULT hr)
{
    static char buffers[4][16];
    static int next;
    const char *name = hostmem_result_name(hr);
    if (name)
        return name;
    char *b = buffers[next++ & 3];
    snprintf(b, 16, "0x%08" PRIX32, (uint32_t)hr);
    return b;
}

/* How often each result was expected (printed with TEST_VERBOSE). */
static struct {
    HRESULT hr;
    long count;
} g_tally[16];

static void tally(HRESULT want)
{
    for (int i = 0; i < 16; i++) {
        if (g_tally[i].count == 0)
            g_tally[i].hr = want;
        if (g_tally[i].hr == want) {
            g_tally[i].count++;
            return;
        }
    }
}

static void set_op(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_op, sizeof g_op, fmt, ap);
    va_end(ap);
    memcpy(g_log[g_logn % NLOG], g_op, sizeof g_op);
    g_log_iter[g_logn % NLOG] = g_iter;
    g_logn++;
}

static void dump_state(void)
{
    fprintf(stderr, "    model (live reservations):\n");
    for (int i = 0; i < NSLOTS; i++) {
        const slot *s = &S[i];
        if (!s->live)
            continue;
        fprintf(stderr, "      slot %d mgr %d base %#lx pages %zu aprot %#x:", i, s->owner,
                (unsigned long)s->base, s->npages, (unsigned)s->aprot);
        for (size_t k = 0; k < s->npages; k++) {
            if (k == 0 || s->state[k] != s->state[k - 1] || s->prot[k] != s->prot[k - 1])
                fprintf(stderr, " [%zu:%s/%#x]", k, s->state[k] == MEM_COMMIT ? "C" : "R",
                        (unsigned)s->prot[k]);
        }
        fputc('\n', stderr);
    }
    for (int i = 0; i < NM; i++) {
        fprintf(stderr, "    hostmem_print_map(manager %d):\n", i);
        hostmem_print_map(M[i], stderr);
    }
}

static void mfail(int line, const char *fmt, ...)
{
    int first = !g_stop;
    g_stop = 1;
    test_current_failed = 1;
    if (g_nmsg++ >= 10)
        return;
    va_list ap;
    fprintf(stderr, "  FAIL %s (%s:%d) seed %llu iteration %ld: ", test_current_name, __FILE__,
            line, (unsigned long long)g_seed, g_iter);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (first) {
        fprintf(stderr, "    seed %llu, %ld iterations; rerun: test_model %llu %ld\n",
                (unsigned long long)g_seed, g_iterations, (unsigned long long)g_seed,
                g_iter + 1);
        fprintf(stderr, "    last operations (oldest first):\n");
        long from = g_logn > NLOG ? g_logn - NLOG : 0;
        for (long i = from; i < g_logn; i++)
            fprintf(stderr, "      [%ld] %s\n", g_log_iter[i % NLOG], g_log[i % NLOG]);
        dump_state();
    }
}
#define MFAIL(...) mfail(__LINE__, __VA_ARGS__)

/* ---- the contract's rules, written out once -------------------------------- */

static const DWORD BAD_PROTS[] = {
    0,
    PAGE_WRITECOPY,
    PAGE_EXECUTE_WRITECOPY,
    PAGE_READONLY | PAGE_READWRITE,
    PAGE_EXECUTE | PAGE_EXECUTE_READ,
    PAGE_NOACCESS | PAGE_GUARD,
    PAGE_NOACCESS | PAGE_NOCACHE,
    PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,
    PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
    PAGE_READWRITE | 0x800,
    PAGE_GUARD,
    PAGE_NOCACHE,
    PAGE_WRITECOPY | PAGE_GUARD,
    PAGE_READONLY | 0x10000,
};
#define N_BAD_PROTS (sizeof BAD_PROTS / sizeof BAD_PROTS[0])

static const DWORD BAD_ALLOC_TYPES[] = {
    0,
    MEM_DECOMMIT,
    MEM_RELEASE,
    MEM_FREE,
    MEM_DECOMMIT | MEM_RESERVE,
    MEM_RELEASE | MEM_COMMIT,
    MEM_WRITE_WATCH | MEM_COMMIT,
    MEM_PHYSICAL | MEM_RESERVE,
    MEM_RESET | MEM_COMMIT,
    MEM_RESET | MEM_RESERVE,
    MEM_RESET_UNDO | MEM_RESET,
    MEM_RESET_UNDO | MEM_COMMIT,
    MEM_LARGE_PAGES | MEM_RESERVE,
    MEM_LARGE_PAGES | MEM_COMMIT,
    MEM_RESERVE | MEM_COALESCE_PLACEHOLDERS,
    MEM_RESERVE | MEM_RESERVE_PLACEHOLDER,
    MEM_COMMIT | 0x40000000,
    MEM_TOP_DOWN,
};
#define N_BAD_ALLOC_TYPES (sizeof BAD_ALLOC_TYPES / sizeof BAD_ALLOC_TYPES[0])

static const DWORD BAD_FREE_TYPES[] = {
    0,
    MEM_FREE,
    MEM_DECOMMIT | MEM_RELEASE,
    MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS,
    MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER,
    MEM_DECOMMIT | 0x80000000u,
    MEM_RESET,
    MEM_COMMIT,
    MEM_RESERVE,
};
#define N_BAD_FREE_TYPES (sizeof BAD_FREE_TYPES / sizeof BAD_FREE_TYPES[0])

static DWORD rand_prot(void)
{
    DWORD p = pct(45) ? PAGE_READWRITE : BASE_PROTS[rn(6)];
    if (p != PAGE_NOACCESS && pct(15))
        p |= MODIFIERS[rn(3)];
    return p;
}
static DWORD bad_prot(void) { return BAD_PROTS[rn(N_BAD_PROTS)]; }

/* The live slot of manager mi (any manager if mi < 0) holding address a. */
static int find_slot(uintptr_t a, int mi)
{
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (mi < 0 || S[i].owner == mi) && a >= S[i].base && a < slot_end(&S[i]))
            return i;
    return -1;
}

static int free_slot(void)
{
    for (int i = 0; i < NSLOTS; i++)
        if (!S[i].live)
            return i;
    return -1;
}

static int count_live(int mi)
{
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (mi < 0 || S[i].owner == mi))
            n++;
    return n;
}

/* A random live slot; with probability `own` percent one owned by mi. */
static int pick_slot(int mi, int own)
{
    int want_own = NM == 1 || pct(own);
    int cand[NSLOTS], n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (!want_own || S[i].owner == mi))
            cand[n++] = i;
    if (n == 0)
        for (int i = 0; i < NSLOTS; i++)
            if (S[i].live)
                cand[n++] = i;
    return n ? cand[rn((size_t)n)] : -1;
}

/* Any page of [a, a+size) in a page of a live slot (any manager)? */
static int overlaps_live(uintptr_t a, uintptr_t e)
{
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && a < slot_end(&S[i]) && S[i].base < e)
            return 1;
    return 0;
}

/* [addr, addr+size) touching pages i..j (j may lie past the slot) of base. */
static void make_range(uintptr_t base, size_t i, size_t j, uintptr_t *addr, size_t *size)
{
    size_t off1 = 0, off2 = P;
    if (pct(30)) {
        off1 = rn(P);
        off2 = 1 + rn(P);
        if (i == j && off2 <= off1)
            off2 = off1 + 1 + rn(P - off1);
    }
    *addr = base + i * P + off1;
    *size = (j * P + off2) - (i * P + off1);
}

/* A random page range of s: sometimes running past its end, or starting before it. */
static void gen_range(const slot *s, uintptr_t *addr, size_t *size, int wild)
{
    size_t i = rn(s->npages);
    size_t j = i + rn(s->npages - i);
    if (wild && pct(8))
        j = s->npages + rn(3);
    if (wild && pct(3)) {
        size_t before = 1 + rn(2);
        make_range(s->base - before * P, 0, before + j, addr, size);
        return;
    }
    make_range(s->base, i, j, addr, size);
}

/* A range of committed pages of s (inside one run of committed pages). 0 if none. */
static int gen_committed_range(const slot *s, uintptr_t *addr, size_t *size, size_t *first)
{
    size_t cand[MAXPAGES], n = 0;
    for (size_t k = 0; k < s->npages; k++)
        if (s->state[k] == MEM_COMMIT)
            cand[n++] = k;
    if (!n)
        return 0;
    size_t k = cand[rn(n)], lo = k, hi = k;
    while (lo > 0 && s->state[lo - 1] == MEM_COMMIT)
        lo--;
    while (hi + 1 < s->npages && s->state[hi + 1] == MEM_COMMIT)
        hi++;
    size_t i = lo + rn(k - lo + 1);
    size_t j = k + rn(hi - k + 1);
    make_range(s->base, i, j, addr, size);
    if (first)
        *first = i;
    return 1;
}

/* An address that is (probably) not host memory of manager mi. */
static uintptr_t foreign_addr(int mi, uintptr_t stack, int allow_null)
{
    for (;;) {
        switch (rn(8)) {
        case 0:
            if (allow_null)
                return 0;
            break;
        case 1:
            return stack;
        case 2:
            return (uintptr_t)g_heap + rn(64);
        case 3:
            if (nfreed) {
                const freed_range *f = &F[rn((size_t)nfreed)];
                return f->base + rn(f->npages * P);
            }
            break;
        case 4: {
            int si = pick_slot(mi, 50);
            if (si >= 0)
                return slot_end(&S[si]) + rn(P); /* the tail of the last granule */
            break;
        }
        case 5:
            return (uintptr_t)&rnd; /* code */
        case 6:
            return (uintptr_t)P; /* page 1 */
        case 7: {
            int si = pick_slot(1 - mi, 100); /* the other manager's memory */
            if (NM == 2 && si >= 0 && S[si].owner != mi)
                return S[si].base + rn(S[si].npages * P);
            break;
        }
        }
    }
}

/* ---- content ----------------------------------------------------------------- */

static uint64_t pattern(uint64_t tag, size_t word)
{
    return tag ? tag ^ (word * 0x9E3779B97F4A7C15ull) : 0;
}

static void fill_page(uintptr_t page, uint64_t tag)
{
    uint64_t *w = (uint64_t *)page;
    for (size_t i = 0; i < P / 8; i++)
        w[i] = pattern(tag, i);
}

static void check_page_content(const slot *s, size_t k)
{
    const volatile uint64_t *w = (const volatile uint64_t *)(s->base + k * P);
    size_t words[3] = {0, P / 16, P / 8 - 1};
    for (int i = 0; i < 3; i++) {
        uint64_t got = w[words[i]], want = pattern(s->tag[k], words[i]);
        if (got != want) {
            MFAIL("content of %#lx (page %zu of reservation %#lx, protect %#x) word %zu: "
                  "%#llx, expected %#llx",
                  (unsigned long)(s->base + k * P), k, (unsigned long)s->base,
                  (unsigned)s->prot[k], words[i], (unsigned long long)got,
                  (unsigned long long)want);
            return;
        }
    }
}

/* ---- checks after every step ------------------------------------------------- */

static int query(int mi, uintptr_t a, MEMORY_BASIC_INFORMATION *mbi)
{
    SIZE_T res = 0;
    memset(mbi, 0xA5, sizeof *mbi);
    HRESULT hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof *mbi, &res);
    if (hr != S_OK) {
        MFAIL("VirtualQuery(%#lx) -> %s, expected S_OK", (unsigned long)a, hrn(hr));
        return 0;
    }
    if (res != sizeof *mbi) {
        MFAIL("VirtualQuery(%#lx): *pResult %zu, expected %zu", (unsigned long)a, (size_t)res,
              sizeof *mbi);
        return 0;
    }
    return 1;
}

static void verify_slot(const slot *s)
{
    size_t run[MAXPAGES];
    for (size_t k = s->npages; k-- > 0;)
        run[k] = (k + 1 < s->npages && s->state[k + 1] == s->state[k] &&
                  s->prot[k + 1] == s->prot[k])
                     ? run[k + 1] + 1
                     : 1;
    for (size_t k = 0; k < s->npages && !g_stop; k++) {
        uintptr_t page = s->base + k * P;
        uintptr_t a = page + (k * 1032 + 8) % P;
        MEMORY_BASIC_INFORMATION mbi;
        if (!query(s->owner, a, &mbi))
            return;
        if ((uintptr_t)mbi.BaseAddress != page || (uintptr_t)mbi.AllocationBase != s->base ||
            mbi.AllocationProtect != s->aprot || mbi.RegionSize != run[k] * P ||
            mbi.State != s->state[k] || mbi.Protect != s->prot[k] || mbi.Type != MEM_PRIVATE) {
            MFAIL("VirtualQuery(%#lx) (page %zu of reservation %#lx, %zu pages):\n"
                  "      got      Base %#lx AllocBase %#lx AllocProt %#x Size %#zx State %#x "
                  "Protect %#x Type %#x\n"
                  "      expected Base %#lx AllocBase %#lx AllocProt %#x Size %#zx State %#x "
                  "Protect %#x Type %#x",
                  (unsigned long)a, k, (unsigned long)s->base, s->npages,
                  (unsigned long)(uintptr_t)mbi.BaseAddress,
                  (unsigned long)(uintptr_t)mbi.AllocationBase, (unsigned)mbi.AllocationProtect,
                  (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect,
                  (unsigned)mbi.Type, (unsigned long)page, (unsigned long)s->base,
                  (unsigned)s->aprot, run[k] * P, (unsigned)s->state[k], (unsigned)s->prot[k],
                  (unsigned)MEM_PRIVATE);
            return;
        }
        if (s->state[k] == MEM_COMMIT && readable(s->prot[k]) && s->known[k])
            check_page_content(s, k);
    }
}

static long g_foreign_pages; /* pages found holding someone else's mapping */

static int kernel_mapped(uintptr_t page)
{
    unsigned char v;
    return mincore((void *)page, P, &v) == 0;
}

/*
 * A page that no live reservation of the model holds must read MEM_FREE,
 * unless the kernel has a mapping there that is not the manager's (the
 * library's own metadata or anything else the process mapped into a hole):
 * then VirtualQuery shows the OS's view of a committed mapping. Returns 1 if
 * the page reads free, 0 if a foreign mapping holds it; an inconsistent
 * answer fails the test.
 */
static int check_unreserved_page(int mi, uintptr_t a, const char *what)
{
    MEMORY_BASIC_INFORMATION mbi;
    if (!query(mi, a, &mbi))
        return 1;
    if (mbi.State == MEM_FREE) {
        if ((uintptr_t)mbi.BaseAddress != pdown(a) || mbi.AllocationBase != NULL ||
            mbi.Protect != PAGE_NOACCESS || mbi.Type != 0 || mbi.RegionSize == 0 ||
            mbi.RegionSize % P != 0)
            MFAIL("VirtualQuery(%#lx) (%s): MEM_FREE with Base %#lx AllocBase %#lx Size %#zx "
                  "Protect %#x Type %#x; expected Base %#lx, AllocBase 0, PAGE_NOACCESS, Type 0",
                  (unsigned long)a, what, (unsigned long)(uintptr_t)mbi.BaseAddress,
                  (unsigned long)(uintptr_t)mbi.AllocationBase, (size_t)mbi.RegionSize,
                  (unsigned)mbi.Protect, (unsigned)mbi.Type, (unsigned long)pdown(a));
        return 1;
    }
    int mapped = kernel_mapped(pdown(a));
    if (mapped && mbi.State == MEM_COMMIT && mbi.Protect != PAGE_NOACCESS &&
        (mbi.Type == MEM_PRIVATE || mbi.Type == MEM_MAPPED || mbi.Type == MEM_IMAGE) &&
        (uintptr_t)mbi.BaseAddress == pdown(a)) {
        g_foreign_pages++;
        return 0;
    }
    MFAIL("VirtualQuery(%#lx) (%s, no live reservation; kernel mapping: %s): Base %#lx "
          "AllocBase %#lx AllocProt %#x Size %#zx State %#x Protect %#x Type %#x; expected "
          "MEM_FREE%s",
          (unsigned long)a, what, mapped ? "yes" : "none",
          (unsigned long)(uintptr_t)mbi.BaseAddress,
          (unsigned long)(uintptr_t)mbi.AllocationBase, (unsigned)mbi.AllocationProtect,
          (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect,
          (unsigned)mbi.Type, mapped ? " (or the OS view of a foreign committed mapping)" : "");
    return 1;
}

static void verify_all(void)
{
    for (int i = 0; i < NSLOTS && !g_stop; i++)
        if (S[i].live)
            verify_slot(&S[i]);

    /* The tail of one reservation's last granule is free (and nobody else's). */
    int si = pick_slot(0, 0);
    if (si >= 0 && !g_stop) {
        uintptr_t e = slot_end(&S[si]);
        if (e % G != 0)
            check_unreserved_page(S[si].owner, e + rn(P), "tail of a reservation's granule");
    }
    /* A page released earlier and not reserved again reads MEM_FREE. */
    if (nfreed && !g_stop) {
        const freed_range *f = &F[rn((size_t)nfreed)];
        uintptr_t a = f->base + rn(f->npages) * P;
        if (find_slot(a, -1) < 0)
            check_unreserved_page(f->owner, a + rn(P), "released earlier");
    }

    for (int mi = 0; mi < NM && !g_stop; mi++) {
        hostmem_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        HRESULT hr = hostmem_get_stats(M[mi], &st);
        if (hr != S_OK) {
            MFAIL("hostmem_get_stats(manager %d) -> %s", mi, hrn(hr));
            break;
        }
        size_t committed = 0;
        for (int i = 0; i < NSLOTS; i++)
            if (S[i].live && S[i].owner == mi)
                for (size_t k = 0; k < S[i].npages; k++)
                    committed += S[i].state[k] == MEM_COMMIT ? P : 0;
        if (st.reservations != (size_t)count_live(mi) || st.committed_bytes != committed)
            MFAIL("hostmem_get_stats(manager %d): reservations %zu committed_bytes %#zx, "
                  "expected %d and %#zx",
                  mi, st.reservations, st.committed_bytes, count_live(mi), committed);
        if (st.dynamic_code != g_policy[mi] || st.dynamic_code_refusals != g_code_refusals[mi])
            MFAIL("hostmem_get_stats(manager %d): dynamic_code %u, dynamic_code_refusals %zu; "
                  "expected %u and %zu (issue 23: every refusal counted, nothing else)",
                  mi, (unsigned)st.dynamic_code, st.dynamic_code_refusals, (unsigned)g_policy[mi],
                  g_code_refusals[mi]);
        char why[512] = "";
        /* Now and then also against /proc/self/maps. */
        uint32_t vflags = g_iter % 256 == 255 ? HOSTMEM_VALIDATE_KERNEL : 0;
        hr = hostmem_validate(M[mi], vflags, why, sizeof why);
        if (hr != S_OK)
            MFAIL("hostmem_validate(manager %d, %#x) -> %s: %s", mi, (unsigned)vflags, hrn(hr),
                  why);
    }
}

/* ---- calls -------------------------------------------------------------------- */

static int call_alloc(int mi, uintptr_t a, size_t size, DWORD type, DWORD prot, HRESULT want,
                      uintptr_t *out)
{
    void *p = (void *)(uintptr_t)0xDEADBEEF;
    HRESULT hr =
        M[mi]->lpVtbl->VirtualAlloc(M[mi], (void *)a, size, type, prot, eTaskCritical, &p);
    *out = (uintptr_t)p;
    tally(want);
    if (want == BLOCKED)
        g_code_refusals[mi]++;
    if (hr != want) {
        MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
        return 0;
    }
    return 1;
}

static int call_free(int mi, uintptr_t a, size_t size, DWORD type, HRESULT want)
{
    HRESULT hr = M[mi]->lpVtbl->VirtualFree(M[mi], (void *)a, size, type);
    tally(want);
    if (hr != want) {
        MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
        return 0;
    }
    return 1;
}

/* The result VirtualFree must give (SPEC §4, checks in order). */
static HRESULT expect_free(int mi, uintptr_t a, size_t size, DWORD type, int *slot_out)
{
    *slot_out = -1;
    if (type != MEM_DECOMMIT && type != MEM_RELEASE)
        return E_INVALIDARG;
    if (type == MEM_RELEASE && size != 0)
        return E_INVALIDARG;
    int si = find_slot(pdown(a), mi);
    if (si < 0)
        return HOST_E_INVALIDOPERATION;
    if (size == 0 && pdown(a) != S[si].base)
        return ERR_ADDR;
    if (size != 0 && pup(a + size) > slot_end(&S[si]))
        return E_INVALIDARG;
    *slot_out = si;
    return S_OK;
}

/* The result of VirtualAlloc(MEM_COMMIT or MEM_RESET) at a non-NULL address
 * (SPEC §3: type, protection, size, then address). */
static HRESULT expect_in_reservation(int mi, uintptr_t a, size_t size, DWORD type, DWORD prot,
                                     int *slot_out)
{
    *slot_out = -1;
    if (!alloc_type_valid(type) || !prot_valid(prot) || size == 0)
        return E_INVALIDARG;
    if (type == MEM_COMMIT && code_policy_refuses(g_policy[mi], prot))
        return BLOCKED; /* before the address (issue 23); MEM_RESET ignores the protection */
    int si = find_slot(pdown(a), mi);
    if (si < 0 || pup(a + size) > slot_end(&S[si]))
        return ERR_ADDR;
    *slot_out = si;
    return S_OK;
}

/* The result of VirtualProtect (SPEC §6). */
static HRESULT expect_protect(int mi, uintptr_t a, size_t size, DWORD prot, int null_old,
                              int *slot_out)
{
    *slot_out = -1;
    if (!prot_valid(prot))
        return E_INVALIDARG;
    if (null_old)
        return E_POINTER;
    if (code_policy_refuses(g_policy[mi], prot))
        return BLOCKED; /* before the range (issue 23) */
    int si = find_slot(pdown(a), mi);
    if (si < 0 || pup(a + size) > slot_end(&S[si]))
        return ERR_ADDR;
    for (uintptr_t p = pdown(a); p < pup(a + size); p += P)
        if (S[si].state[(p - S[si].base) / P] != MEM_COMMIT)
            return ERR_ADDR;
    *slot_out = si;
    return S_OK;
}

static void remember_freed(uintptr_t base, size_t npages, int owner)
{
    F[freed_next].base = base;
    F[freed_next].npages = npages;
    F[freed_next].owner = owner;
    freed_next = (freed_next + 1) % NFREED;
    if (nfreed < NFREED)
        nfreed++;
}

/* ---- operations ------------------------------------------------------------------ */

static void model_new_reservation(int si, int mi, uintptr_t base, size_t npages, DWORD aprot,
                                  int commit)
{
    slot *s = &S[si];
    memset(s, 0, sizeof *s);
    s->live = 1;
    s->owner = mi;
    s->base = base;
    s->npages = npages;
    s->aprot = aprot;
    for (size_t k = 0; k < npages; k++) {
        s->state[k] = commit ? MEM_COMMIT : MEM_RESERVE;
        s->prot[k] = commit ? aprot : 0;
        s->tag[k] = 0;
        s->known[k] = 1;
    }
}

static void op_release(int mi);

static void op_reserve(int mi)
{
    int si = free_slot();
    if (si < 0) {
        op_release(mi);
        return;
    }
    DWORD prot = rand_prot();

    if (nfreed && pct(25)) {
        /* At an address released earlier by this manager, inside that old range. */
        int cand[NFREED], n = 0;
        for (int i = 0; i < nfreed; i++)
            if (F[i].owner == mi)
                cand[n++] = i;
        if (n) {
            const freed_range *f = &F[cand[rn((size_t)n)]];
            int commit = pct(30);
            uintptr_t a;
            if (commit)
                a = f->base + gdown(rn(f->npages * P)); /* granule-aligned */
            else
                a = f->base + rn(f->npages * P);
            uintptr_t fend = f->base + f->npages * P;
            size_t size = 1 + rn(fend - a);
            if (commit && pct(50))
                size = pup(size);
            DWORD type = commit ? (MEM_RESERVE | MEM_COMMIT) : MEM_RESERVE;
            uintptr_t nb = gdown(a), ne = pup(a + size);
            HRESULT want = S_OK;
            if (code_policy_refuses(g_policy[mi], prot))
                want = BLOCKED; /* before the address */
            else if (overlaps_live(nb, ne))
                want = ERR_ADDR;
            else
                for (uintptr_t q = nb; q < ne && !g_stop; q += P)
                    if (!check_unreserved_page(mi, q, "to be reserved again"))
                        want = ERR_ADDR; /* a foreign mapping is there now */
            if (g_stop)
                return;
            set_op("mgr%d VirtualAlloc(%#lx [released earlier], %#zx, %#x, %#x)", mi,
                   (unsigned long)a, size, (unsigned)type, (unsigned)prot);
            uintptr_t p;
            if (!call_alloc(mi, a, size, type, prot, want, &p) || want != S_OK)
                return;
            if (p != nb) {
                MFAIL("%s: *ppMem %#lx, expected %#lx", g_op, (unsigned long)p,
                      (unsigned long)nb);
                return;
            }
            model_new_reservation(si, mi, nb, (ne - nb) / P, prot, commit);
            return;
        }
    }

    size_t npages = 1 + rn(MAXPAGES);
    size_t size = npages * P - rn(P);
    DWORD type;
    int r = (int)rn(100);
    if (r < 55)
        type = MEM_RESERVE;
    else if (r < 80)
        type = MEM_RESERVE | MEM_COMMIT;
    else
        type = MEM_COMMIT; /* NULL address: reserves too */
    if (pct(20))
        type |= MEM_TOP_DOWN;
    set_op("mgr%d VirtualAlloc(NULL, %#zx, %#x, %#x)", mi, size, (unsigned)type,
           (unsigned)prot);
    uintptr_t p;
    HRESULT want = code_policy_refuses(g_policy[mi], prot) ? BLOCKED : S_OK;
    if (!call_alloc(mi, 0, size, type, prot, want, &p) || want != S_OK)
        return;
    if (p == 0 || p % G != 0) {
        MFAIL("%s: *ppMem %#lx is not a granule-aligned address", g_op, (unsigned long)p);
        return;
    }
    uintptr_t gend = gup(p + npages * P);
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && p < gup(slot_end(&S[i])) && S[i].base < gend) {
            MFAIL("%s: *ppMem %#lx overlaps the granules of live reservation %#lx (%zu pages)",
                  g_op, (unsigned long)p, (unsigned long)S[i].base, S[i].npages);
            return;
        }
    model_new_reservation(si, mi, p, npages, prot, (type & MEM_COMMIT) != 0);
}

static void op_commit(int mi)
{
    int si = pick_slot(mi, 85);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    gen_range(&S[si], &a, &size, 1);
    DWORD prot = pct(4) ? bad_prot() : rand_prot();
    DWORD type = MEM_COMMIT;
    if (pct(2))
        size = 0;
    int ts;
    HRESULT want = expect_in_reservation(mi, a, size, type, prot, &ts);
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, MEM_COMMIT, %#x)", mi, (unsigned long)a, size,
           (unsigned)prot);
    uintptr_t p;
    if (!call_alloc(mi, a, size, type, prot, want, &p) || want != S_OK)
        return;
    if (p != pdown(a)) {
        MFAIL("%s: *ppMem %#lx, expected %#lx", g_op, (unsigned long)p, (unsigned long)pdown(a));
        return;
    }
    slot *s = &S[ts];
    for (uintptr_t q = pdown(a); q < pup(a + size); q += P) {
        size_t k = (q - s->base) / P;
        if (s->state[k] != MEM_COMMIT) {
            s->state[k] = MEM_COMMIT;
            s->tag[k] = 0;
            s->known[k] = 1;
        }
        s->prot[k] = allocation_wide(s->aprot, prot);
    }
}

static void model_decommit(slot *s, uintptr_t from, uintptr_t to)
{
    for (uintptr_t q = from; q < to; q += P) {
        size_t k = (q - s->base) / P;
        s->state[k] = MEM_RESERVE;
        s->prot[k] = 0;
        s->tag[k] = 0;
        s->known[k] = 1;
    }
}

static void op_decommit(int mi)
{
    int si = pick_slot(mi, 85);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    int r = (int)rn(100);
    if (r < 15) {
        a = S[si].base + (pct(30) ? rn(P) : 0);
        size = 0;
    } else if (r < 20 && S[si].npages > 1) {
        a = S[si].base + (1 + rn(S[si].npages - 1)) * P + rn(P);
        size = 0;
    } else {
        gen_range(&S[si], &a, &size, 1);
    }
    int ts;
    HRESULT want = expect_free(mi, a, size, MEM_DECOMMIT, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, MEM_DECOMMIT)", mi, (unsigned long)a, size);
    if (!call_free(mi, a, size, MEM_DECOMMIT, want) || want != S_OK)
        return;
    slot *s = &S[ts];
    if (size == 0)
        model_decommit(s, s->base, slot_end(s));
    else
        model_decommit(s, pdown(a), pup(a + size));
}

static void op_release(int mi)
{
    int si = pick_slot(mi, 85);
    if (si < 0)
        return;
    uintptr_t a = S[si].base;
    size_t size = 0;
    int r = (int)rn(100);
    if (r < 10)
        a += rn(P); /* inside the first page: still the base's page */
    else if (r < 15 && S[si].npages > 1)
        a += (1 + rn(S[si].npages - 1)) * P; /* not the base */
    else if (r < 20)
        size = 1 + rn(S[si].npages * P); /* MEM_RELEASE wants size 0 */
    int ts;
    HRESULT want = expect_free(mi, a, size, MEM_RELEASE, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, MEM_RELEASE)", mi, (unsigned long)a, size);
    if (!call_free(mi, a, size, MEM_RELEASE, want) || want != S_OK)
        return;
    remember_freed(S[ts].base, S[ts].npages, S[ts].owner);
    S[ts].live = 0;
}

static void op_protect(int mi)
{
    int si = pick_slot(mi, 85);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    int have_committed = gen_committed_range(&S[si], &a, &size, NULL);
    DWORD prot = rand_prot();
    int null_old = 0;
    int r = (int)rn(100);
    if (!have_committed || r < 25)
        gen_range(&S[si], &a, &size, 1); /* any range: may include reserved pages */
    else if (r < 30)
        prot = bad_prot(); /* valid committed range, bad protection */
    else if (r < 33)
        null_old = 1; /* valid committed range and protection, NULL out-pointer */
    int ts;
    HRESULT want = expect_protect(mi, a, size, prot, null_old, &ts);
    set_op("mgr%d VirtualProtect(%#lx, %#zx, %#x, %s)", mi, (unsigned long)a, size,
           (unsigned)prot, null_old ? "NULL" : "&old");
    DWORD old = 0xDEADBEEF;
    HRESULT hr = M[mi]->lpVtbl->VirtualProtect(M[mi], (void *)a, size, prot,
                                               null_old ? NULL : &old);
    tally(want);
    if (want == BLOCKED)
        g_code_refusals[mi]++;
    if (hr != want) {
        MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
        return;
    }
    if (want != S_OK)
        return;
    slot *s = &S[ts];
    size_t first = (pdown(a) - s->base) / P;
    if (old != s->prot[first]) {
        MFAIL("%s: *pflOldProtect %#x, expected %#x", g_op, (unsigned)old,
              (unsigned)s->prot[first]);
        return;
    }
    for (uintptr_t q = pdown(a); q < pup(a + size); q += P)
        s->prot[(q - s->base) / P] = allocation_wide(s->aprot, prot);
}

static void op_reset(int mi)
{
    int si = pick_slot(mi, 85);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    int have_committed = gen_committed_range(&S[si], &a, &size, NULL);
    DWORD prot = rand_prot();
    int r = (int)rn(100);
    if (!have_committed || r < 20)
        gen_range(&S[si], &a, &size, 1);
    else if (r < 25)
        prot = bad_prot();
    int ts;
    HRESULT want = expect_in_reservation(mi, a, size, MEM_RESET, prot, &ts);
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, MEM_RESET, %#x)", mi, (unsigned long)a, size,
           (unsigned)prot);
    uintptr_t p;
    if (!call_alloc(mi, a, size, MEM_RESET, prot, want, &p) || want != S_OK)
        return;
    slot *s = &S[ts];
    for (uintptr_t q = pdown(a); q < pup(a + size); q += P) {
        size_t k = (q - s->base) / P;
        if (s->state[k] == MEM_COMMIT)
            s->known[k] = 0;
    }
}

static void op_write(void)
{
    int cs[NSLOTS * MAXPAGES];
    size_t ck[NSLOTS * MAXPAGES];
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live)
            for (size_t k = 0; k < S[i].npages; k++)
                if (S[i].state[k] == MEM_COMMIT && writable(S[i].prot[k])) {
                    cs[n] = i;
                    ck[n] = k;
                    n++;
                }
    if (!n)
        return;
    int c = (int)rn((size_t)n);
    slot *s = &S[cs[c]];
    size_t k = ck[c];
    uint64_t tag = rnd() | 1;
    set_op("write page %zu of %#lx (protect %#x) tag %#llx", k, (unsigned long)s->base,
           (unsigned)s->prot[k], (unsigned long long)tag);
    fill_page(s->base + k * P, tag);
    s->tag[k] = tag;
    s->known[k] = 1;
}

/* VirtualAlloc with a bad type, protection or size: E_INVALIDARG whatever the address. */
static void op_bad_alloc(int mi)
{
    uintptr_t a = 0;
    int si = pick_slot(mi, 85);
    if (si >= 0 && pct(60))
        a = S[si].base + rn(S[si].npages * P);
    size_t size = P * (1 + rn(8));
    DWORD type = MEM_COMMIT, prot = rand_prot();
    int r = (int)rn(100);
    if (r < 45) {
        type = BAD_ALLOC_TYPES[rn(N_BAD_ALLOC_TYPES)];
        if (pct(30))
            prot = bad_prot();
        if (pct(20))
            size = 0;
    } else if (r < 80) {
        static const DWORD types[] = {MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE,
                                      MEM_RESET};
        type = types[rn(4)];
        if (type == MEM_RESET && a == 0)
            type = MEM_RESERVE;
        prot = bad_prot();
        if (pct(20))
            size = 0;
    } else {
        static const DWORD types[] = {MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE,
                                      MEM_RESET};
        type = types[rn(4)];
        if (type == MEM_RESET && a == 0)
            type = MEM_RESERVE;
        size = 0;
    }
    HRESULT want = E_INVALIDARG;
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, %#x, %#x) [bad arguments]", mi, (unsigned long)a,
           size, (unsigned)type, (unsigned)prot);
    uintptr_t p;
    call_alloc(mi, a, size, type, prot, want, &p);
}

/* A reservation no address space can hold: E_OUTOFMEMORY. */
static void op_huge_reserve(int mi)
{
    size_t size = (size_t)1 << 60;
    DWORD type = pct(50) ? MEM_RESERVE : (MEM_RESERVE | MEM_COMMIT);
    set_op("mgr%d VirtualAlloc(NULL, %#zx, %#x, PAGE_READWRITE) [huge]", mi, size,
           (unsigned)type);
    uintptr_t p;
    call_alloc(mi, 0, size, type, PAGE_READWRITE, E_OUTOFMEMORY, &p);
}

/* A reservation at an address inside a live reservation: ERROR_INVALID_ADDRESS. */
static void op_reserve_over_live(int mi)
{
    int si = pick_slot(mi, 50);
    if (si < 0)
        return;
    uintptr_t a = S[si].base + rn(S[si].npages * P);
    size_t size = 1 + rn(4 * P);
    DWORD type = pct(50) ? MEM_RESERVE : (MEM_RESERVE | MEM_COMMIT);
    DWORD prot = rand_prot();
    set_op("mgr%d VirtualAlloc(%#lx [live], %#zx, %#x, %#x)", mi, (unsigned long)a, size,
           (unsigned)type, (unsigned)prot);
    uintptr_t p;
    call_alloc(mi, a, size, type, prot, code_policy_refuses(g_policy[mi], prot) ? BLOCKED : ERR_ADDR, &p);
}

/* VirtualFree with bad types, or of memory that is not this manager's. */
static void op_bad_free(int mi)
{
    int stack_var = 0;
    uintptr_t a;
    int si = pick_slot(mi, 70);
    if (si >= 0 && pct(50))
        a = S[si].base + (pct(50) ? 0 : rn(S[si].npages * P));
    else
        a = foreign_addr(mi, (uintptr_t)&stack_var, 1);
    size_t size = pct(50) ? 0 : P * (1 + rn(4));
    DWORD type;
    int r = (int)rn(100);
    if (r < 40)
        type = BAD_FREE_TYPES[rn(N_BAD_FREE_TYPES)];
    else if (r < 55) {
        type = MEM_RELEASE;
        size = 1 + rn(4 * P);
    } else {
        type = pct(50) ? MEM_RELEASE : MEM_DECOMMIT;
        if (type == MEM_RELEASE)
            size = 0;
        if (si >= 0 && a >= S[si].base && a < slot_end(&S[si]))
            a = foreign_addr(mi, (uintptr_t)&stack_var, 1);
    }
    int ts;
    HRESULT want = expect_free(mi, a, size, type, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, %#x) [bad or foreign]", mi, (unsigned long)a, size,
           (unsigned)type);
    if (!call_free(mi, a, size, type, want) || want != S_OK)
        return;
    /* The foreign address happened to be a live reservation of this manager. */
    slot *s = &S[ts];
    if (type == MEM_RELEASE) {
        remember_freed(s->base, s->npages, s->owner);
        s->live = 0;
    } else if (size == 0) {
        model_decommit(s, s->base, slot_end(s));
    } else {
        model_decommit(s, pdown(a), pup(a + size));
    }
}

/* Commit, protect or reset of addresses outside this manager's reservations. */
static void op_foreign(int mi)
{
    int stack_var = 0;
    uintptr_t a = foreign_addr(mi, (uintptr_t)&stack_var, 0);
    size_t size = 1 + rn(4 * P);
    DWORD prot = rand_prot();
    int ts;
    HRESULT want;
    int r = (int)rn(3);
    if (r == 0) {
        want = expect_in_reservation(mi, a, size, MEM_COMMIT, prot, &ts);
        if (want == S_OK)
            return; /* landed in a live reservation: op_commit covers that */
        set_op("mgr%d VirtualAlloc(%#lx [foreign], %#zx, MEM_COMMIT, %#x)", mi, (unsigned long)a,
               size, (unsigned)prot);
        uintptr_t p;
        call_alloc(mi, a, size, MEM_COMMIT, prot, want, &p);
    } else if (r == 1) {
        want = expect_in_reservation(mi, a, size, MEM_RESET, prot, &ts);
        if (want == S_OK)
            return;
        set_op("mgr%d VirtualAlloc(%#lx [foreign], %#zx, MEM_RESET, %#x)", mi, (unsigned long)a,
               size, (unsigned)prot);
        uintptr_t p;
        call_alloc(mi, a, size, MEM_RESET, prot, want, &p);
    } else {
        want = expect_protect(mi, a, size, prot, 0, &ts);
        if (want == S_OK)
            return;
        set_op("mgr%d VirtualProtect(%#lx [foreign], %#zx, %#x)", mi, (unsigned long)a, size,
               (unsigned)prot);
        DWORD old = 0;
        HRESULT hr = M[mi]->lpVtbl->VirtualProtect(M[mi], (void *)a, size, prot, &old);
        tally(want);
        if (want == BLOCKED)
            g_code_refusals[mi]++;
        if (hr != want)
            MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    }
}

/* VirtualQuery's argument checks (SPEC §5). */
static void op_query_args(int mi)
{
    int si = pick_slot(mi, 100);
    uintptr_t a = si >= 0 ? S[si].base + rn(S[si].npages * P) : (uintptr_t)g_heap;
    MEMORY_BASIC_INFORMATION mbi[2];
    SIZE_T res = 12345;
    HRESULT hr, want;
    int r = (int)rn(4);
    if (r == 0) {
        set_op("mgr%d VirtualQuery(%#lx, buf, sizeof - 1, &res)", mi, (unsigned long)a);
        want = ERR_BADLEN;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi[0] - 1, &res);
    } else if (r == 1) {
        set_op("mgr%d VirtualQuery(%#lx, NULL, sizeof, &res)", mi, (unsigned long)a);
        want = E_POINTER;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, NULL, sizeof mbi[0], &res);
    } else if (r == 2) {
        set_op("mgr%d VirtualQuery(%#lx, buf, sizeof, NULL)", mi, (unsigned long)a);
        want = E_POINTER;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi[0], NULL);
    } else {
        set_op("mgr%d VirtualQuery(%#lx, buf, 2 * sizeof, &res)", mi, (unsigned long)a);
        want = S_OK;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi, &res);
        if (hr == S_OK && res != sizeof mbi[0])
            MFAIL("%s: *pResult %zu, expected %zu", g_op, (size_t)res, sizeof mbi[0]);
    }
    tally(want);
    if (hr != want)
        MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
}

/* hostmem_restrict_dynamic_code to a random level (3: unknown): S_OK when it
 * is at least as strict as the policy in force, E_ACCESSDENIED when looser,
 * E_INVALIDARG when unknown (include/hostmem.h). */
static void op_tighten(int mi)
{
    uint32_t policy = (uint32_t)rn(4);
    HRESULT want = policy > HOSTMEM_CODE_NONE ? E_INVALIDARG : policy < g_policy[mi] ? E_ACCESSDENIED : S_OK;
    set_op("hostmem_restrict_dynamic_code(mgr%d, %u) [policy %u]", mi, (unsigned)policy,
           (unsigned)g_policy[mi]);
    HRESULT hr = hostmem_restrict_dynamic_code(M[mi], policy);
    tally(want);
    if (hr != want)
        MFAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    else if (want == S_OK)
        g_policy[mi] = policy;
}

static void step(void)
{
    int mi = (int)rn((size_t)NM);
    if (g_tighten && rn(1500) == 0) {
        op_tighten(mi);
        return;
    }
    int r = (int)rn(1000);
    if (count_live(-1) == 0 || r < 130)
        op_reserve(mi);
    else if (r < 330)
        op_commit(mi);
    else if (r < 430)
        op_decommit(mi);
    else if (r < 500)
        op_release(mi);
    else if (r < 660)
        op_protect(mi);
    else if (r < 710)
        op_reset(mi);
    else if (r < 850)
        op_write();
    else if (r < 900)
        op_bad_alloc(mi);
    else if (r < 945)
        op_bad_free(mi);
    else if (r < 975)
        op_foreign(mi);
    else if (r < 985)
        op_reserve_over_live(mi);
    else if (r < 990)
        op_huge_reserve(mi);
    else
        op_query_args(mi);
}

/* ---- the runs -------------------------------------------------------------------- */

/* policy: each manager's dynamic-code policy at creation; tighten: tightened at random steps. */
static void run_model(int managers, uint32_t flags, const uint32_t policy[2], int tighten)
{
    memset(S, 0, sizeof S);
    memset(F, 0, sizeof F);
    nfreed = freed_next = 0;
    g_stop = g_nmsg = 0;
    g_logn = 0;
    g_iter = 0;
    rng_state = g_seed;
    NM = managers;
    g_tighten = tighten;

    for (size_t i = 0; i < N_BAD_PROTS; i++)
        REQUIRE(!prot_valid(BAD_PROTS[i]));
    for (size_t i = 0; i < N_BAD_ALLOC_TYPES; i++)
        REQUIRE(!alloc_type_valid(BAD_ALLOC_TYPES[i]));

    for (int i = 0; i < NM; i++) {
        hostmem_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.size = sizeof cfg;
        cfg.flags = flags;
        /* hostmem_validate walks every granule of every arena: a smaller arena
         * keeps calling it after every step cheap (and makes arenas fill up). */
        cfg.arena_size = (size_t)64 << 20;
        cfg.dynamic_code = g_policy[i] = policy[i];
        g_code_refusals[i] = 0;
        M[i] = NULL;
        REQUIRE_HR(hostmem_create(&cfg, &M[i]), S_OK);
    }

    for (g_iter = 0; g_iter < g_iterations && !g_stop; g_iter++) {
        step();
        if (!g_stop)
            verify_all();
    }

    /* Release what is left; everything must come back. */
    int failed = g_stop;
    g_iter = -1;
    for (int i = 0; i < NSLOTS; i++) {
        if (!S[i].live)
            continue;
        set_op("cleanup: mgr%d VirtualFree(%#lx, 0, MEM_RELEASE)", S[i].owner,
               (unsigned long)S[i].base);
        HRESULT hr = M[S[i].owner]->lpVtbl->VirtualFree(M[S[i].owner], (void *)S[i].base, 0,
                                                        MEM_RELEASE);
        if (!failed && hr != S_OK)
            MFAIL("%s -> %s, expected S_OK", g_op, hrn(hr));
        S[i].live = 0;
    }
    for (int i = 0; i < NM; i++) {
        if (!failed) {
            hostmem_stats st;
            memset(&st, 0, sizeof st);
            st.size = sizeof st;
            CHECK_HR(hostmem_get_stats(M[i], &st), S_OK);
            CHECK_EQ(st.reservations, 0);
            CHECK_EQ(st.committed_bytes, 0);
            CHECK_EQ(st.reserved_bytes, 0);
            char why[512] = "";
            HRESULT hr = hostmem_validate(M[i], 0, why, sizeof why);
            if (hr != S_OK)
                TEST_FAIL_AT("hostmem_validate at the end -> %s: %s", hrn(hr), why);
        }
        CHECK_EQ(M[i]->lpVtbl->Release(M[i]), 0);
        M[i] = NULL;
    }
}

static const uint32_t ANY_ANY[2] = {HOSTMEM_CODE_ANY, HOSTMEM_CODE_ANY};
TEST(model_default) { run_model(1, 0, ANY_ANY, 0); }
TEST(model_compact) { run_model(1, HOSTMEM_COMPACT, ANY_ANY, 0); }
TEST(model_two_managers) { run_model(2, 0, ANY_ANY, 0); }

/* Issue 23: every call's result under W^X and under no dynamic code; two
 * managers, each with its own policy, tightened (or refused a loosening) at
 * random steps, its count of refusals checked after every step. */
static const uint32_t WX_ONLY[2] = {HOSTMEM_CODE_WX, HOSTMEM_CODE_ANY};
static const uint32_t NONE_ONLY[2] = {HOSTMEM_CODE_NONE, HOSTMEM_CODE_ANY};
static const uint32_t ANY_WX[2] = {HOSTMEM_CODE_ANY, HOSTMEM_CODE_WX};
TEST(model_wx) { run_model(1, 0, WX_ONLY, 0); }
TEST(model_no_dynamic_code_compact) { run_model(1, HOSTMEM_COMPACT, NONE_ONLY, 0); }
TEST(model_two_managers_policies_tightened) { run_model(2, 0, ANY_WX, 1); }

int main(int argc, char **argv)
{
    const char *seed_s = argc > 1 ? argv[1] : getenv("HOSTMEM_SEED");
    const char *iter_s = argc > 2 ? argv[2] : getenv("HOSTMEM_ITERATIONS");
    g_seed = seed_s && *seed_s ? strtoull(seed_s, NULL, 0) : DEFAULT_SEED;
    g_iterations = iter_s && *iter_s ? strtol(iter_s, NULL, 0) : DEFAULT_ITERATIONS;
    P = hostmem_page_size();
    G = hostmem_granularity();
    g_heap = malloc(256);
    if (!g_heap || P < 64 || (P & (P - 1)) || G < P || (G & (G - 1))) {
        fprintf(stderr, "test_model: bad page size %zu / granularity %zu\n", P, G);
        return 1;
    }
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "test_model: seed %llu, %ld iterations\n", (unsigned long long)g_seed,
                g_iterations);

    RUN(model_default);
    RUN(model_compact);
    RUN(model_two_managers);
    RUN(model_wx);
    RUN(model_no_dynamic_code_compact);
    RUN(model_two_managers_policies_tightened);

    if (getenv("TEST_VERBOSE")) {
        fprintf(stderr, "test_model: %ld page checks found a foreign mapping\n", g_foreign_pages);
        fprintf(stderr, "test_model: expected results of the calls made:");
        for (int i = 0; i < 16 && g_tally[i].count; i++)
            fprintf(stderr, " %s %ld", hrn(g_tally[i].hr), g_tally[i].count);
        fputc('\n', stderr);
    }
    if (test_failed_count)
        fprintf(stderr, "test_model: seed %llu, %ld iterations\n", (unsigned long long)g_seed,
                g_iterations);
    free(g_heap);
    return TEST_SUMMARY("test_model");
}
