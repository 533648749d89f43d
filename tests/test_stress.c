/*
 * test_stress.c - threads hammering one manager.
 *
 * N worker threads each run random operations on reservations of their own
 * (reserve, commit, write a thread-specific pattern, decommit, protect,
 * reset, release), whose results and VirtualQuery answers are exact because
 * no other thread touches them, and on a few reservations shared by all
 * threads (commit, decommit, protect, reset of ranges), whose results must be
 * S_OK or one of the documented failures. After every operation a worker
 * checks that the contents of its own readable pages are intact. One more
 * thread loops on VirtualQuery over shared, private (possibly just released)
 * and foreign addresses and checks that every answer is self-consistent.
 * No sleeps; all shared test state is atomic or handed over by pthread_join.
 *
 * Usage: test_stress [threads [iterations [seed]]]
 *        (or HOSTMEM_THREADS / HOSTMEM_ITERATIONS / HOSTMEM_SEED)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "win32_rules.h"

#define MAX_THREADS 64
#define NSHARED 4
#define SHARED_PAGES 32
#define NPRIV 4
#define PRIV_MAXPAGES 16
#define DEFAULT_THREADS 4
#define DEFAULT_ITERATIONS 20000L
#define DEFAULT_SEED 77u

#define ERR_ADDR HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)

typedef struct priv {
    int live;
    uintptr_t base;
    size_t npages;
    DWORD aprot;
    DWORD state[PRIV_MAXPAGES];
    DWORD prot[PRIV_MAXPAGES];
    uint64_t tag[PRIV_MAXPAGES];
    unsigned char known[PRIV_MAXPAGES];
} priv;

typedef struct worker {
    int id;
    uint64_t rng;
    long iter;
    uint64_t writes;
    char op[200];
    priv p[NPRIV];
} worker;

/* Set before any thread starts, read-only afterwards. */
static IHostMemoryManager *g_m;
static size_t P, G;
static uintptr_t g_shared[NSHARED];
static unsigned char *g_heap;
static int g_threads;
static long g_iterations;
static uint64_t g_seed;

/* Shared between threads. */
static _Atomic uintptr_t g_published[MAX_THREADS][NPRIV];
static atomic_int g_workers_done;
static atomic_int g_stop;
static atomic_long g_failures;
static atomic_long g_queries;

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static size_t rn(uint64_t *s, size_t n) { return n ? (size_t)(rnd(s) % n) : 0; }
static int pct(uint64_t *s, int p) { return (int)rn(s, 100) < p; }

static uintptr_t pdown(uintptr_t a) { return a & ~(uintptr_t)(P - 1); }

static const char *hrn(HRESULT hr, char *b, size_t n)
{
    const char *name = hostmem_result_name(hr);
    if (name)
        return name;
    snprintf(b, n, "0x%08" PRIX32, (uint32_t)hr);
    return b;
}

static void tfail(const char *who, long iter, const char *op, int line, const char *fmt, ...)
{
    long n = atomic_fetch_add(&g_failures, 1);
    atomic_store(&g_stop, 1);
    if (n >= 20)
        return;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "  FAIL %s (%s:%d) %s iteration %ld, op %s: %s [seed %llu]\n",
            test_current_name, __FILE__, line, who, iter, op ? op : "-", msg,
            (unsigned long long)g_seed);
}
#define WFAIL(w, ...)                                                                  \
    do {                                                                               \
        char who_[32];                                                                 \
        snprintf(who_, sizeof who_, "thread %d", (w)->id);                             \
        tfail(who_, (w)->iter, (w)->op, __LINE__, __VA_ARGS__);                        \
    } while (0)

static int prot_valid_for_query(DWORD p)
{
    return base_prot_known(p) && modifiers_valid(p);
}

static DWORD rand_prot(uint64_t *s)
{
    DWORD p = pct(s, 50) ? PAGE_READWRITE : BASE_PROTS[rn(s, 6)];
    if (p != PAGE_NOACCESS && pct(s, 15))
        p |= MODIFIERS[rn(s, 3)];
    return p;
}

static uint64_t pattern(uint64_t tag, size_t word)
{
    return tag ? tag ^ (word * 0x9E3779B97F4A7C15ull) : 0;
}

/* ---- self-consistency of one VirtualQuery answer ------------------------------- */

/* Checks that hold for any address; returns 0 and fills msg if one fails. */
static int query_consistent(uintptr_t a, HRESULT hr, SIZE_T res,
                            const MEMORY_BASIC_INFORMATION *mbi, char *msg, size_t n)
{
    char b[16];
    if (hr != S_OK) {
        snprintf(msg, n, "VirtualQuery(%#lx) -> %s", (unsigned long)a, hrn(hr, b, sizeof b));
        return 0;
    }
    if (res != sizeof *mbi || (uintptr_t)mbi->BaseAddress != pdown(a) || mbi->RegionSize == 0 ||
        mbi->RegionSize % P != 0 ||
        (mbi->State != MEM_COMMIT && mbi->State != MEM_RESERVE && mbi->State != MEM_FREE) ||
        (uintptr_t)mbi->BaseAddress + mbi->RegionSize < (uintptr_t)mbi->BaseAddress) {
        snprintf(msg, n,
                 "VirtualQuery(%#lx): res %zu Base %#lx AllocBase %#lx Size %#zx State %#x "
                 "Protect %#x Type %#x",
                 (unsigned long)a, (size_t)res, (unsigned long)(uintptr_t)mbi->BaseAddress,
                 (unsigned long)(uintptr_t)mbi->AllocationBase, (size_t)mbi->RegionSize,
                 (unsigned)mbi->State, (unsigned)mbi->Protect, (unsigned)mbi->Type);
        return 0;
    }
    return 1;
}

/* Shared reservations live for the whole test, so their answers can say more. */
static int query_shared_consistent(int si, uintptr_t a, const MEMORY_BASIC_INFORMATION *mbi,
                                   char *msg, size_t n)
{
    uintptr_t base = g_shared[si], end = base + SHARED_PAGES * P;
    uintptr_t rb = (uintptr_t)mbi->BaseAddress;
    int ok = (uintptr_t)mbi->AllocationBase == base && mbi->AllocationProtect == PAGE_READWRITE &&
             mbi->Type == MEM_PRIVATE && rb + mbi->RegionSize <= end &&
             ((mbi->State == MEM_RESERVE && mbi->Protect == 0) ||
              (mbi->State == MEM_COMMIT && prot_valid_for_query(mbi->Protect)));
    if (!ok)
        snprintf(msg, n,
                 "VirtualQuery(%#lx) in shared reservation %#lx (%d pages): Base %#lx AllocBase "
                 "%#lx AllocProt %#x Size %#zx State %#x Protect %#x Type %#x",
                 (unsigned long)a, (unsigned long)base, SHARED_PAGES, (unsigned long)rb,
                 (unsigned long)(uintptr_t)mbi->AllocationBase, (unsigned)mbi->AllocationProtect,
                 (size_t)mbi->RegionSize, (unsigned)mbi->State, (unsigned)mbi->Protect,
                 (unsigned)mbi->Type);
    return ok;
}

static void *query_thread(void *arg)
{
    uint64_t rng = g_seed ^ 0x5151515151515151ull;
    int stack_var = 0;
    long count = 0;
    (void)arg;
    while (!atomic_load(&g_workers_done) && !atomic_load(&g_stop)) {
        uintptr_t a;
        int shared = -1;
        switch (rn(&rng, 4)) {
        case 0:
            shared = (int)rn(&rng, NSHARED);
            a = g_shared[shared] + rn(&rng, SHARED_PAGES * P);
            break;
        case 1: {
            uintptr_t b = atomic_load(&g_published[rn(&rng, (size_t)g_threads)][rn(&rng, NPRIV)]);
            a = b ? b + rn(&rng, PRIV_MAXPAGES * P) : (uintptr_t)g_heap;
            break;
        }
        case 2:
            switch (rn(&rng, 5)) {
            case 0:
                a = 0;
                break;
            case 1:
                a = (uintptr_t)&stack_var;
                break;
            case 2:
                a = (uintptr_t)g_heap + rn(&rng, 64);
                break;
            case 3:
                a = (uintptr_t)&query_thread;
                break;
            default:
                a = g_shared[rn(&rng, NSHARED)] + SHARED_PAGES * P + rn(&rng, G); /* tail */
                break;
            }
            break;
        default:
            a = (uintptr_t)rn(&rng, (size_t)1 << 47); /* anywhere in user space */
            break;
        }
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T res = 0;
        memset(&mbi, 0xA5, sizeof mbi);
        HRESULT hr = g_m->lpVtbl->VirtualQuery(g_m, (void *)a, &mbi, sizeof mbi, &res);
        char msg[400];
        if (!query_consistent(a, hr, res, &mbi, msg, sizeof msg) ||
            (shared >= 0 && !query_shared_consistent(shared, a, &mbi, msg, sizeof msg))) {
            tfail("query thread", count, NULL, __LINE__, "%s", msg);
            break;
        }
        count++;
    }
    atomic_store(&g_queries, count);
    return NULL;
}

/* ---- a worker ------------------------------------------------------------------ */

static void fill_page(uintptr_t page, uint64_t tag)
{
    uint64_t *w = (uint64_t *)page;
    for (size_t i = 0; i < P / 8; i++)
        w[i] = pattern(tag, i);
}

static int verify_private(worker *w)
{
    size_t words[3] = {0, P / 16, P / 8 - 1};
    for (int i = 0; i < NPRIV; i++) {
        const priv *r = &w->p[i];
        if (!r->live)
            continue;
        for (size_t k = 0; k < r->npages; k++) {
            if (r->state[k] != MEM_COMMIT || !readable(r->prot[k]) || !r->known[k])
                continue;
            const volatile uint64_t *q = (const volatile uint64_t *)(r->base + k * P);
            for (int j = 0; j < 3; j++) {
                uint64_t got = q[words[j]], want = pattern(r->tag[k], words[j]);
                if (got != want) {
                    WFAIL(w, "content of page %zu of private reservation %#lx word %zu: %#llx, "
                             "expected %#llx",
                          k, (unsigned long)r->base, words[j], (unsigned long long)got,
                          (unsigned long long)want);
                    return 0;
                }
            }
        }
    }
    return 1;
}

/* Exact VirtualQuery answer for a page of a private reservation. */
static int verify_private_query(worker *w, const priv *r, size_t k)
{
    size_t run = 1;
    while (k + run < r->npages && r->state[k + run] == r->state[k] &&
           r->prot[k + run] == r->prot[k])
        run++;
    uintptr_t a = r->base + k * P + rn(&w->rng, P);
    MEMORY_BASIC_INFORMATION mbi;
    SIZE_T res = 0;
    HRESULT hr = g_m->lpVtbl->VirtualQuery(g_m, (void *)a, &mbi, sizeof mbi, &res);
    char msg[400];
    if (!query_consistent(a, hr, res, &mbi, msg, sizeof msg)) {
        WFAIL(w, "%s", msg);
        return 0;
    }
    if ((uintptr_t)mbi.AllocationBase != r->base || mbi.AllocationProtect != r->aprot ||
        mbi.RegionSize != run * P || mbi.State != r->state[k] || mbi.Protect != r->prot[k] ||
        mbi.Type != MEM_PRIVATE) {
        WFAIL(w,
              "VirtualQuery(%#lx) (page %zu of private %#lx): AllocBase %#lx AllocProt %#x Size "
              "%#zx State %#x Protect %#x Type %#x; expected AllocProt %#x Size %#zx State %#x "
              "Protect %#x",
              (unsigned long)a, k, (unsigned long)r->base,
              (unsigned long)(uintptr_t)mbi.AllocationBase, (unsigned)mbi.AllocationProtect,
              (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect,
              (unsigned)mbi.Type, (unsigned)r->aprot, run * P, (unsigned)r->state[k],
              (unsigned)r->prot[k]);
        return 0;
    }
    return 1;
}

static int expect(worker *w, HRESULT hr, HRESULT want)
{
    if (hr != want) {
        char b1[16], b2[16];
        WFAIL(w, "-> %s, expected %s", hrn(hr, b1, sizeof b1), hrn(want, b2, sizeof b2));
        return 0;
    }
    return 1;
}

static void page_range(uint64_t *rng, size_t npages, size_t *i, size_t *j)
{
    *i = rn(rng, npages);
    *j = *i + rn(rng, npages - *i);
}

/* One operation on this thread's own reservations. Returns 0 on failure. */
static int private_op(worker *w)
{
    uint64_t *rng = &w->rng;
    int slot = (int)rn(rng, NPRIV);
    priv *r = &w->p[slot];
    void *out = NULL;
    HRESULT hr;

    if (!r->live) {
        size_t npages = 1 + rn(rng, PRIV_MAXPAGES);
        DWORD prot = rand_prot(rng);
        DWORD type = pct(rng, 50) ? MEM_RESERVE : (MEM_RESERVE | MEM_COMMIT);
        if (pct(rng, 15))
            type |= MEM_TOP_DOWN;
        snprintf(w->op, sizeof w->op, "VirtualAlloc(NULL, %#zx, %#x, %#x)", npages * P,
                 (unsigned)type, (unsigned)prot);
        hr = g_m->lpVtbl->VirtualAlloc(g_m, NULL, npages * P - rn(rng, P), type, prot,
                                       eTaskCritical, &out);
        if (!expect(w, hr, S_OK))
            return 0;
        if (!out || (uintptr_t)out % G) {
            WFAIL(w, "*ppMem %p is not granule-aligned", out);
            return 0;
        }
        memset(r, 0, sizeof *r);
        r->live = 1;
        r->base = (uintptr_t)out;
        r->npages = npages;
        r->aprot = prot;
        for (size_t k = 0; k < npages; k++) {
            r->state[k] = (type & MEM_COMMIT) ? MEM_COMMIT : MEM_RESERVE;
            r->prot[k] = (type & MEM_COMMIT) ? prot : 0;
            r->known[k] = 1;
        }
        atomic_store(&g_published[w->id][slot], r->base);
        return 1;
    }

    size_t i, j;
    page_range(rng, r->npages, &i, &j);
    uintptr_t a = r->base + i * P;
    size_t size = (j - i + 1) * P;
    if (pct(rng, 30)) { /* unaligned, same pages */
        size_t off = rn(rng, P);
        a += off;
        size -= off + rn(rng, P - off);
        if (size == 0)
            size = 1;
    }
    int op = (int)rn(rng, 100);
    if (op < 25) { /* commit */
        DWORD prot = rand_prot(rng);
        snprintf(w->op, sizeof w->op, "VirtualAlloc(%#lx, %#zx, MEM_COMMIT, %#x)",
                 (unsigned long)a, size, (unsigned)prot);
        hr = g_m->lpVtbl->VirtualAlloc(g_m, (void *)a, size, MEM_COMMIT, prot, eTaskCritical,
                                       &out);
        if (!expect(w, hr, S_OK))
            return 0;
        if ((uintptr_t)out != pdown(a)) {
            WFAIL(w, "*ppMem %p, expected %#lx", out, (unsigned long)pdown(a));
            return 0;
        }
        for (size_t k = i; k <= j; k++) {
            if (r->state[k] != MEM_COMMIT) {
                r->state[k] = MEM_COMMIT;
                r->tag[k] = 0;
                r->known[k] = 1;
            }
            r->prot[k] = allocation_wide(r->aprot, prot);
        }
    } else if (op < 50) { /* write */
        size_t cand[PRIV_MAXPAGES], n = 0;
        for (size_t k = 0; k < r->npages; k++)
            if (r->state[k] == MEM_COMMIT && writable(r->prot[k]))
                cand[n++] = k;
        if (!n)
            return 1;
        size_t k = cand[rn(rng, n)];
        uint64_t tag = ((uint64_t)(w->id + 1) << 48) | (++w->writes << 8) | 1;
        snprintf(w->op, sizeof w->op, "write page %zu of %#lx", k, (unsigned long)r->base);
        fill_page(r->base + k * P, tag);
        r->tag[k] = tag;
        r->known[k] = 1;
    } else if (op < 62) { /* decommit */
        int whole = pct(rng, 15);
        int past = !whole && pct(rng, 8);
        if (whole) {
            a = r->base;
            size = 0;
        } else if (past) {
            size = r->npages * P - (a - r->base) + 1 + rn(rng, 2 * P);
        }
        snprintf(w->op, sizeof w->op, "VirtualFree(%#lx, %#zx, MEM_DECOMMIT)", (unsigned long)a,
                 size);
        hr = g_m->lpVtbl->VirtualFree(g_m, (void *)a, size, MEM_DECOMMIT);
        if (!expect(w, hr, past ? E_INVALIDARG : S_OK))
            return 0;
        if (past)
            return 1;
        if (whole) {
            i = 0;
            j = r->npages - 1;
        }
        for (size_t k = i; k <= j; k++) {
            r->state[k] = MEM_RESERVE;
            r->prot[k] = 0;
            r->tag[k] = 0;
            r->known[k] = 1;
        }
    } else if (op < 80) { /* protect */
        DWORD prot = rand_prot(rng);
        int all_committed = 1;
        for (size_t k = i; k <= j; k++)
            all_committed &= r->state[k] == MEM_COMMIT;
        snprintf(w->op, sizeof w->op, "VirtualProtect(%#lx, %#zx, %#x)", (unsigned long)a, size,
                 (unsigned)prot);
        DWORD old = 0xDEADBEEF;
        hr = g_m->lpVtbl->VirtualProtect(g_m, (void *)a, size, prot, &old);
        if (!expect(w, hr, all_committed ? S_OK : ERR_ADDR))
            return 0;
        if (!all_committed)
            return 1;
        if (old != r->prot[i]) {
            WFAIL(w, "*pflOldProtect %#x, expected %#x", (unsigned)old, (unsigned)r->prot[i]);
            return 0;
        }
        for (size_t k = i; k <= j; k++)
            r->prot[k] = allocation_wide(r->aprot, prot);
    } else if (op < 85) { /* reset */
        snprintf(w->op, sizeof w->op, "VirtualAlloc(%#lx, %#zx, MEM_RESET, PAGE_NOACCESS)",
                 (unsigned long)a, size);
        hr = g_m->lpVtbl->VirtualAlloc(g_m, (void *)a, size, MEM_RESET, PAGE_NOACCESS,
                                       eTaskCritical, &out);
        if (!expect(w, hr, S_OK))
            return 0;
        for (size_t k = i; k <= j; k++)
            if (r->state[k] == MEM_COMMIT)
                r->known[k] = 0;
    } else if (op < 93) { /* query */
        snprintf(w->op, sizeof w->op, "VirtualQuery(page %zu of %#lx)", i,
                 (unsigned long)r->base);
        return verify_private_query(w, r, i);
    } else { /* release */
        snprintf(w->op, sizeof w->op, "VirtualFree(%#lx, 0, MEM_RELEASE)", (unsigned long)r->base);
        atomic_store(&g_published[w->id][slot], 0);
        hr = g_m->lpVtbl->VirtualFree(g_m, (void *)r->base, 0, MEM_RELEASE);
        if (!expect(w, hr, S_OK))
            return 0;
        r->live = 0;
    }
    return 1;
}

/* One operation on a shared reservation: S_OK or the documented failure. */
static int shared_op(worker *w)
{
    uint64_t *rng = &w->rng;
    int si = (int)rn(rng, NSHARED);
    uintptr_t base = g_shared[si];
    size_t i, j;
    page_range(rng, SHARED_PAGES, &i, &j);
    uintptr_t a = base + i * P + (pct(rng, 30) ? rn(rng, P) : 0);
    size_t size = base + (j + 1) * P - a;
    void *out = NULL;
    HRESULT hr;
    DWORD prot = rand_prot(rng);
    int op = (int)rn(rng, 100);
    if (op < 30) {
        snprintf(w->op, sizeof w->op, "shared VirtualAlloc(%#lx, %#zx, MEM_COMMIT, %#x)",
                 (unsigned long)a, size, (unsigned)prot);
        hr = g_m->lpVtbl->VirtualAlloc(g_m, (void *)a, size, MEM_COMMIT, prot, eTaskCritical,
                                       &out);
        if (!expect(w, hr, S_OK))
            return 0;
        if ((uintptr_t)out != pdown(a)) {
            WFAIL(w, "*ppMem %p, expected %#lx", out, (unsigned long)pdown(a));
            return 0;
        }
    } else if (op < 50) {
        if (pct(rng, 10))
            a = base, size = 0;
        snprintf(w->op, sizeof w->op, "shared VirtualFree(%#lx, %#zx, MEM_DECOMMIT)",
                 (unsigned long)a, size);
        hr = g_m->lpVtbl->VirtualFree(g_m, (void *)a, size, MEM_DECOMMIT);
        if (!expect(w, hr, S_OK))
            return 0;
    } else if (op < 75) {
        snprintf(w->op, sizeof w->op, "shared VirtualProtect(%#lx, %#zx, %#x)", (unsigned long)a,
                 size, (unsigned)prot);
        DWORD old = 0xDEADBEEF;
        hr = g_m->lpVtbl->VirtualProtect(g_m, (void *)a, size, prot, &old);
        if (hr != S_OK && hr != ERR_ADDR)
            return expect(w, hr, S_OK);
        if (hr == S_OK && !prot_valid_for_query(old)) {
            WFAIL(w, "*pflOldProtect %#x is not a protection", (unsigned)old);
            return 0;
        }
    } else if (op < 82) {
        snprintf(w->op, sizeof w->op, "shared VirtualAlloc(%#lx, %#zx, MEM_RESET, %#x)",
                 (unsigned long)a, size, (unsigned)prot);
        hr = g_m->lpVtbl->VirtualAlloc(g_m, (void *)a, size, MEM_RESET, prot, eTaskCritical,
                                       &out);
        if (!expect(w, hr, S_OK))
            return 0;
    } else if (op < 88) {
        /* The shared reservations never go away, so these failures are exact. */
        int k = (int)rn(rng, 3);
        if (k == 0) {
            a = base + (1 + rn(rng, SHARED_PAGES - 1)) * P;
            snprintf(w->op, sizeof w->op, "shared VirtualFree(%#lx, 0, MEM_RELEASE) [not base]",
                     (unsigned long)a);
            hr = g_m->lpVtbl->VirtualFree(g_m, (void *)a, 0, MEM_RELEASE);
            return expect(w, hr, ERR_ADDR);
        } else if (k == 1) {
            size = base + SHARED_PAGES * P - a + 1 + rn(rng, P);
            snprintf(w->op, sizeof w->op, "shared VirtualFree(%#lx, %#zx, MEM_DECOMMIT) [past end]",
                     (unsigned long)a, size);
            hr = g_m->lpVtbl->VirtualFree(g_m, (void *)a, size, MEM_DECOMMIT);
            return expect(w, hr, E_INVALIDARG);
        } else {
            size = base + SHARED_PAGES * P - a + 1 + rn(rng, P);
            snprintf(w->op, sizeof w->op, "shared VirtualAlloc(%#lx, %#zx, MEM_COMMIT) [past end]",
                     (unsigned long)a, size);
            hr = g_m->lpVtbl->VirtualAlloc(g_m, (void *)a, size, MEM_COMMIT, PAGE_READWRITE,
                                           eTaskCritical, &out);
            return expect(w, hr, ERR_ADDR);
        }
    } else if (op < 94) {
        /* Another thread's reservation, possibly being released right now. */
        uintptr_t b = atomic_load(&g_published[rn(rng, (size_t)g_threads)][rn(rng, NPRIV)]);
        a = b ? b + rn(rng, PRIV_MAXPAGES * P) : a;
        snprintf(w->op, sizeof w->op, "VirtualQuery(%#lx) [published]", (unsigned long)a);
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T res = 0;
        hr = g_m->lpVtbl->VirtualQuery(g_m, (void *)a, &mbi, sizeof mbi, &res);
        char msg[400];
        if (!query_consistent(a, hr, res, &mbi, msg, sizeof msg)) {
            WFAIL(w, "%s", msg);
            return 0;
        }
    } else {
        snprintf(w->op, sizeof w->op, "shared VirtualQuery(%#lx)", (unsigned long)a);
        MEMORY_BASIC_INFORMATION mbi;
        SIZE_T res = 0;
        hr = g_m->lpVtbl->VirtualQuery(g_m, (void *)a, &mbi, sizeof mbi, &res);
        char msg[400];
        if (!query_consistent(a, hr, res, &mbi, msg, sizeof msg) ||
            !query_shared_consistent(si, a, &mbi, msg, sizeof msg)) {
            WFAIL(w, "%s", msg);
            return 0;
        }
    }
    return 1;
}

static void *worker_thread(void *arg)
{
    worker *w = arg;
    for (w->iter = 0; w->iter < g_iterations && !atomic_load(&g_stop); w->iter++) {
        int ok = pct(&w->rng, 65) ? private_op(w) : shared_op(w);
        if (!ok || !verify_private(w))
            break;
    }
    /* Give everything back. */
    for (int i = 0; i < NPRIV; i++) {
        if (!w->p[i].live)
            continue;
        atomic_store(&g_published[w->id][i], 0);
        snprintf(w->op, sizeof w->op, "final VirtualFree(%#lx, 0, MEM_RELEASE)",
                 (unsigned long)w->p[i].base);
        HRESULT hr = g_m->lpVtbl->VirtualFree(g_m, (void *)w->p[i].base, 0, MEM_RELEASE);
        if (hr != S_OK)
            expect(w, hr, S_OK);
        w->p[i].live = 0;
    }
    return NULL;
}

static void run_stress(uint32_t flags)
{
    hostmem_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.size = sizeof cfg;
    cfg.flags = flags;
    g_m = NULL;
    REQUIRE_HR(hostmem_create(&cfg, &g_m), S_OK);

    atomic_store(&g_workers_done, 0);
    atomic_store(&g_stop, 0);
    atomic_store(&g_failures, 0);
    atomic_store(&g_queries, 0);
    for (int t = 0; t < MAX_THREADS; t++)
        for (int i = 0; i < NPRIV; i++)
            atomic_store(&g_published[t][i], 0);

    for (int i = 0; i < NSHARED; i++) {
        void *p = NULL;
        REQUIRE_HR(g_m->lpVtbl->VirtualAlloc(g_m, NULL, SHARED_PAGES * P, MEM_RESERVE,
                                             PAGE_READWRITE, eTaskCritical, &p),
                   S_OK);
        g_shared[i] = (uintptr_t)p;
    }

    worker *workers = calloc((size_t)g_threads, sizeof *workers);
    pthread_t *tids = calloc((size_t)g_threads, sizeof *tids);
    REQUIRE(workers && tids);
    pthread_t qtid;
    int started = 0, qstarted = 0;
    for (int t = 0; t < g_threads; t++) {
        workers[t].id = t;
        workers[t].rng = g_seed * 0x100000001B3ull + (uint64_t)t * 0x9E3779B97F4A7C15ull + flags;
        if (pthread_create(&tids[t], NULL, worker_thread, &workers[t]) != 0)
            break;
        started++;
    }
    CHECK_EQ(started, g_threads);
    if (pthread_create(&qtid, NULL, query_thread, NULL) == 0)
        qstarted = 1;
    CHECK(qstarted);
    for (int t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    atomic_store(&g_workers_done, 1);
    if (qstarted)
        pthread_join(qtid, NULL);

    CHECK_EQ(atomic_load(&g_failures), 0);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  %s: %d threads x %ld iterations, %ld queries\n", test_current_name,
                g_threads, g_iterations, atomic_load(&g_queries));

    char why[512] = "";
    HRESULT hr = hostmem_validate(g_m, 0, why, sizeof why);
    if (hr != S_OK) {
        char b[16];
        TEST_FAIL_AT("hostmem_validate -> %s: %s", hrn(hr, b, sizeof b), why);
    }
    hostmem_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_HR(hostmem_get_stats(g_m, &st), S_OK);
    CHECK_EQ(st.reservations, NSHARED);
    CHECK(st.reserved_bytes >= NSHARED * SHARED_PAGES * P);

    for (int i = 0; i < NSHARED; i++)
        CHECK_HR(g_m->lpVtbl->VirtualFree(g_m, (void *)g_shared[i], 0, MEM_RELEASE), S_OK);
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    CHECK_HR(hostmem_get_stats(g_m, &st), S_OK);
    CHECK_EQ(st.reservations, 0);
    CHECK_EQ(st.reserved_bytes, 0);
    CHECK_EQ(st.committed_bytes, 0);
    hr = hostmem_validate(g_m, 0, why, sizeof why);
    if (hr != S_OK) {
        char b[16];
        TEST_FAIL_AT("hostmem_validate after release -> %s: %s", hrn(hr, b, sizeof b), why);
    }
    CHECK_EQ(g_m->lpVtbl->Release(g_m), 0);
    g_m = NULL;
    free(workers);
    free(tids);
}

TEST(stress_default) { run_stress(0); }
TEST(stress_compact) { run_stress(HOSTMEM_COMPACT); }

int main(int argc, char **argv)
{
    const char *t_s = argc > 1 ? argv[1] : getenv("HOSTMEM_THREADS");
    const char *i_s = argc > 2 ? argv[2] : getenv("HOSTMEM_ITERATIONS");
    const char *s_s = argc > 3 ? argv[3] : getenv("HOSTMEM_SEED");
    g_threads = t_s && *t_s ? atoi(t_s) : DEFAULT_THREADS;
    g_iterations = i_s && *i_s ? strtol(i_s, NULL, 0) : DEFAULT_ITERATIONS;
    g_seed = s_s && *s_s ? strtoull(s_s, NULL, 0) : DEFAULT_SEED;
    if (g_threads < 1)
        g_threads = 1;
    if (g_threads > MAX_THREADS)
        g_threads = MAX_THREADS;
    P = hostmem_page_size();
    G = hostmem_granularity();
    g_heap = malloc(256);
    if (!g_heap)
        return 1;

    RUN(stress_default);
    RUN(stress_compact);

    if (test_failed_count)
        fprintf(stderr, "test_stress: %d threads, %ld iterations, seed %llu\n", g_threads,
                g_iterations, (unsigned long long)g_seed);
    free(g_heap);
    return TEST_SUMMARY("test_stress");
}
