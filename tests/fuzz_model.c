/*
 * fuzz_model.c - libFuzzer target: model-based fuzzing of two managers and a
 * heap (issue 7, item 2).
 *
 * The input bytes are decoded into a sequence of operations: reserve,
 * reserve+commit, commit, decommit, release, protect, reset, reset-undo,
 * writes, queries, the commit budget, heap Alloc / DebugAlloc / Free, and bad
 * calls (invalid types, protections, sizes, levels, wrapping ranges, foreign
 * pointers: the stack, libc's heap, static data, the other manager's memory,
 * heap blocks, released memory). Each call's HRESULT is predicted from the
 * rules of SPEC.md / docs/contract.md / docs/heap.md by a plain model (page
 * arrays per reservation: state, protection, contents; a set of live heap
 * blocks with their contents) before the call is made. After every step:
 * VirtualQuery of every page of every live reservation against the model,
 * sampled page contents, every live heap block's sampled contents,
 * hostmem_get_stats against the model, and hostmem_validate on both managers.
 * Any disagreement prints the rule, the last operations and both region maps,
 * and calls abort().
 *
 * Build: with clang -fsanitize=fuzzer,address,undefined (make fuzz), or with
 * tests/fuzz_main.c as a plain program that replays tests/fuzz_corpus (make
 * check). Every input starts from two new managers, so each input replays
 * alone exactly.
 *
 * Input format: byte 0 = configuration (bit 0: manager 0 compact, bit 1:
 * manager 1 compact, bits 2-3: the heap's MALLOC_* type, bits 4-5: manager 1's
 * dynamic-code policy, bits 6-7: manager 0's - see CODE_* below; all zero is
 * what inputs made before issue 23 ran); then one operation per opcode byte,
 * its arguments from the bytes that follow (0 once the input is exhausted). At
 * most MAX_STEPS operations per input.
 *
 * Extended inputs (issue 25): when bytes 1-2 are EXT_MARKER0 EXT_MARKER1, byte
 * 3 is a second configuration (EXT_*: HOSTMEM_GUARD_PAGES and
 * HOSTMEM_EMULATE_WRITE_WATCH per manager) and the operations start at byte 4.
 * There an operation whose manager byte has its top bit set is one of the
 * extended ones, named by bits 1-6 of that byte (step_extended); the others
 * decode as before. Inputs without the marker - every input made before it -
 * replay exactly as they did (no byte of theirs is read differently), and a
 * manager never gets guard pages or emulated write watch there.
 *
 * Write watch (docs/writewatch.md) is predicted per page of a reservation made
 * with MEM_WRITE_WATCH: written (the fuzzer's own writes, which succeed on
 * committed writable pages only; decommit forgets it; a commit or a read writes
 * nothing) and captured (Windows' latch: a successful VirtualProtect captures
 * the written pages of its range, and a captured page is reported through
 * decommit, recommit and rewrite until it is reset). hostmem_get_write_watch is
 * checked answer by answer: written and captured pages of the range as one
 * ascending list cut at *count, *count and *granularity, WRITE_WATCH_FLAG_RESET
 * resetting only the pages returned, and its errors in Windows' order
 * (ERROR_INVALID_PARAMETER for a bad flag, size 0, NULL base, a range not
 * wholly inside one of the manager's write-watched reservations or *count 0;
 * ERROR_NOACCESS for a NULL count, granularity or address array; nothing
 * written on a failure); hostmem_reset_write_watch forgets its range. The
 * reservation itself: MEM_RESERVE (| MEM_COMMIT, MEM_TOP_DOWN) with the flag,
 * E_INVALIDARG for the combinations Windows refuses, ERROR_NOT_SUPPORTED where
 * hostmem_write_watch_mode() is "unavailable" and the manager does not
 * emulate. The kernel-tracked and emulated paths get the same predictions (the
 * fuzzer writes from user space only). hostmem_stats' write_watch_gets,
 * write_watch_resets and write_watch_pages are checked after every step.
 *
 * Guard pages (docs/guard.md): in a manager made with HOSTMEM_GUARD_PAGES the
 * fuzzer touches PAGE_GUARD pages (reads where the protection under the guard
 * is readable, writes where it is writable; op_write's writes reach them too).
 * The handler (on_guard, HOSTMEM_GUARD_RETRY) must be called once, for that
 * page, with the access (x86-64), the guard cleared on that page only - the
 * per-page VirtualQuery check sees the protection without PAGE_GUARD - and the
 * access completed; a write to a guard page of a write-watched reservation then
 * counts as a write. Every step checks that no handler was called that the
 * model did not expect. In a manager without the flag guard pages are never
 * touched (that would be an access violation), and hostmem_set_guard_handler
 * is refused with E_INVALIDARG.
 *
 * FUZZ_MODEL_TRACE=1 prints every operation as it is made; FUZZ_MODEL_COVERAGE=1
 * prints after every input how often each new prediction was checked.
 *
 * The dynamic-code policy (issue 23) is predicted like every other rule:
 * refusals (HOSTMEM_E_DYNAMIC_CODE_BLOCKED) after the argument checks and
 * before the address, counted in hostmem_stats. Manager 0 holds the heap,
 * whose growth under a tightened policy depends on its spans, so only
 * manager 1's policy is tightened at run time (by the budget operation).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "hostmem.h"
#include "win32_rules.h"

#define NM 2
#define PER_MANAGER 8 /* live reservations per manager */
#define NSLOTS (NM * PER_MANAGER)
#define MAXPAGES 32
#define NFREED 16
#define NBLOCKS 48
#define NFREED_BLOCKS 16
#define NLOG 24
#define MAX_STEPS 384

#define ERR_ADDR HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS)
#define ERR_BADLEN HRESULT_FROM_WIN32(ERROR_BAD_LENGTH)
#define BLOCKED HOSTMEM_E_DYNAMIC_CODE_BLOCKED
#define WW_INVALID HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)
#define WW_NOACCESS HRESULT_FROM_WIN32(ERROR_NOACCESS)
#define WW_UNSUPPORTED HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)

/* Bytes 1 and 2 of an input that has a second configuration byte (byte 3). No
 * input made before issue 25 starts so (tests/make_fuzz_corpus.py checks its
 * seeds), so those replay as they always did. */
#define EXT_MARKER0 0xFB
#define EXT_MARKER1 0x57
/* The second configuration byte. */
#define EXT_GUARD0 0x01    /* manager 0 made with HOSTMEM_GUARD_PAGES */
#define EXT_GUARD1 0x02    /* manager 1 made with HOSTMEM_GUARD_PAGES */
#define EXT_EMULATE0 0x04  /* manager 0 made with HOSTMEM_EMULATE_WRITE_WATCH */
#define EXT_EMULATE1 0x08  /* manager 1 made with HOSTMEM_EMULATE_WRITE_WATCH */

/* A manager's dynamic-code setting in the configuration byte (2 bits). */
enum { CODE_ANY, CODE_WX, CODE_NONE, CODE_LATER };
/* CODE_LATER: manager 1 starts under ANY and op_budget tightens it (or is refused
 * a loosening) at run time; manager 0 is made under ANY and set to W^X by
 * hostmem_restrict_dynamic_code before its heap is created. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the model ---------------------------------------------------------------------- */

typedef struct slot {
    int live;
    int owner;
    uintptr_t base;
    size_t npages;
    DWORD aprot;
    int was_reset; /* a MEM_RESET reached a committed page: MEM_RESET_UNDO is refused */
    DWORD state[MAXPAGES];
    DWORD prot[MAXPAGES];
    uint64_t tag[MAXPAGES];        /* content pattern; 0 = zero */
    unsigned char known[MAXPAGES]; /* 0 after MEM_RESET */
    int watched;                      /* reserved with MEM_WRITE_WATCH */
    unsigned char written[MAXPAGES];  /* written since the last reset, while committed */
    unsigned char captured[MAXPAGES]; /* written before a VirtualProtect (Windows' latch) */
} slot;

typedef struct freed_range {
    uintptr_t base;
    size_t npages;
} freed_range;

typedef struct block {
    uintptr_t p;
    size_t size;
    uint8_t tag;
} block;

static size_t P, G;
static slot S[NSLOTS];
static freed_range F[NFREED];
static int nfreed, freed_next;
static block B[NBLOCKS];
static int nblocks;
static uintptr_t FB[NFREED_BLOCKS]; /* heap pointers freed earlier */
static int nfb, fb_next;
static IHostMemoryManager *M[NM];
static IHostMalloc *H; /* on manager 0 */
static DWORD heap_type, heap_prot;
static size_t limit1; /* the budget of manager 1; 0 = none */
static uint32_t code_policy[NM];   /* each manager's dynamic-code policy in force */
static size_t code_refusals[NM];   /* the refusals hostmem_stats must count */
static int code_later1;            /* manager 1's policy is tightened at run time */
static int extended;               /* the input has the second configuration byte */
static int guard_on[NM];           /* HOSTMEM_GUARD_PAGES */
static int emulate_ww[NM];         /* HOSTMEM_EMULATE_WRITE_WATCH */
static int ww_kernel;              /* hostmem_write_watch_mode() is "kernel" */
static size_t ww_gets[NM], ww_resets[NM], ww_pages[NM]; /* what hostmem_stats must count */
static int guard_fired[NM];        /* the guard handler's calls the model expects */

/* The guard handler of a manager with guard pages: counts, records the page and
 * the access, and retries (runs in the SIGSEGV handler: stores only). */
struct guard_seen {
    volatile int calls;
    void *volatile page;
    volatile int access;
};
static struct guard_seen g_seen[NM];

static int on_guard(void *context, void *page, int access)
{
    struct guard_seen *seen = context;
    seen->page = page;
    seen->access = access;
    seen->calls++;
    return HOSTMEM_GUARD_RETRY;
}

/* How often each new prediction was checked (FUZZ_MODEL_COVERAGE=1 prints them
 * after every input). */
enum {
    COV_RESERVE_WATCH,
    COV_RESERVE_WATCH_REFUSED,
    COV_GET,
    COV_GET_PAGES,
    COV_GET_CUT,
    COV_GET_RESET,
    COV_GET_CAPTURED_DECOMMITTED,
    COV_GET_REFUSED,
    COV_RESET,
    COV_RESET_REFUSED,
    COV_CAPTURE,
    COV_FORGOTTEN,
    COV_WATCHED_WRITE,
    COV_GUARD_READ,
    COV_GUARD_WRITE,
    COV_GUARD_WATCHED_WRITE,
    COV_N
};
static const char *const cov_names[COV_N] = {
    "reserve_watch", "reserve_watch_refused", "get", "get_pages", "get_cut", "get_reset",
    "get_captured_decommitted", "get_refused", "reset", "reset_refused", "capture", "forgotten",
    "watched_write", "guard_read", "guard_write", "guard_watched_write"};
static unsigned long g_cov[COV_N];
static unsigned char g_static[256];
static unsigned char *g_libc;

/* ---- input ---------------------------------------------------------------------------- */

static const uint8_t *in_data;
static size_t in_size, in_pos;

static unsigned u8(void) { return in_pos < in_size ? in_data[in_pos++] : 0; }
static unsigned u16(void) { return u8() | (u8() << 8); }
static uint64_t u64(void)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)u8() << (8 * i);
    return v;
}
/* 0..n-1 */
static size_t pick(size_t n)
{
    if (n <= 1)
        return 0;
    if (n <= 256)
        return u8() % n;
    if (n <= 65536)
        return u16() % n;
    return (u16() | (size_t)u8() << 16) % n;
}
static int chance(unsigned percent) { return u8() % 100 < percent; }

/* ---- failure ----------------------------------------------------------------------------- */

static char g_op[320];
static char g_log[NLOG][352];
static long g_logn, g_step;
static int g_trace; /* FUZZ_MODEL_TRACE=1: every operation to stderr as it is made */

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

static void set_op(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_op, sizeof g_op, fmt, ap);
    va_end(ap);
    snprintf(g_log[g_logn % NLOG], sizeof g_log[0], "[%ld] %s", g_step, g_op);
    if (g_trace)
        fprintf(stderr, "%s\n", g_log[g_logn % NLOG]);
    g_logn++;
}

static void dump_state(void)
{
    fprintf(stderr, "  model (live reservations):\n");
    for (int i = 0; i < NSLOTS; i++) {
        const slot *s = &S[i];
        if (!s->live)
            continue;
        fprintf(stderr, "    mgr%d base %#lx pages %zu aprot %#x:", s->owner,
                (unsigned long)s->base, s->npages, (unsigned)s->aprot);
        for (size_t k = 0; k < s->npages; k++)
            if (k == 0 || s->state[k] != s->state[k - 1] || s->prot[k] != s->prot[k - 1])
                fprintf(stderr, " [%zu:%s/%#x]", k, s->state[k] == MEM_COMMIT ? "C" : "R",
                        (unsigned)s->prot[k]);
        fputc('\n', stderr);
    }
    fprintf(stderr, "  model: %d live heap blocks; manager 1 budget %#zx\n", nblocks, limit1);
    for (int i = 0; i < NM; i++) {
        if (!M[i])
            continue;
        fprintf(stderr, "  hostmem_print_map(manager %d):\n", i);
        hostmem_print_map(M[i], stderr);
    }
}

static void fail(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void fail(int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "fuzz_model: FAIL (tests/fuzz_model.c:%d) at step %ld: ", line, g_step);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fprintf(stderr, "  last operations (oldest first):\n");
    for (long i = g_logn > NLOG ? g_logn - NLOG : 0; i < g_logn; i++)
        fprintf(stderr, "    %s\n", g_log[i % NLOG]);
    dump_state();
    fflush(stderr);
    abort();
}
#define FAIL(...) fail(__LINE__, __VA_ARGS__)

/* ---- the contract's rules ------------------------------------------------------------------ */

static uintptr_t pdown(uintptr_t a) { return a & ~(uintptr_t)(P - 1); }
static uintptr_t gdown(uintptr_t a) { return a & ~(uintptr_t)(G - 1); }
static uintptr_t gup(uintptr_t a) { return (a + G - 1) & ~(uintptr_t)(G - 1); }
static uintptr_t slot_end(const slot *s) { return s->base + s->npages * P; }

/* The end of the pages touched by [a, a+size); 0 when that wraps past 2^64. */
static uintptr_t range_end(uintptr_t a, size_t size)
{
    uintptr_t e;
    if (__builtin_add_overflow(a, size, &e) || e > UINTPTR_MAX - P)
        return 0;
    return (e + P - 1) & ~(uintptr_t)(P - 1);
}

static DWORD gen_prot(void)
{
    unsigned r = u8();
    DWORD p = r < 110 ? PAGE_READWRITE : BASE_PROTS[r % 6];
    if (p != PAGE_NOACCESS && (r & 7) == 1)
        p |= MODIFIERS[(r >> 3) % 3];
    return p;
}

/* Any DWORD: a random bit pattern, a single bit, or one of the near misses. */
static DWORD gen_bad_prot(void)
{
    static const DWORD near[] = {0,
                                 PAGE_WRITECOPY,
                                 PAGE_EXECUTE_WRITECOPY,
                                 PAGE_READONLY | PAGE_READWRITE,
                                 PAGE_EXECUTE | PAGE_EXECUTE_READ,
                                 PAGE_NOACCESS | PAGE_GUARD,
                                 PAGE_NOACCESS | PAGE_WRITECOMBINE,
                                 PAGE_READWRITE | PAGE_GUARD | PAGE_NOCACHE,
                                 PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
                                 PAGE_READWRITE | 0x800,
                                 PAGE_GUARD,
                                 PAGE_WRITECOPY | PAGE_GUARD,
                                 PAGE_READONLY | 0x80000000u};
    unsigned r = u8() % 3;
    if (r == 0)
        return near[pick(sizeof near / sizeof near[0])];
    if (r == 1)
        return gen_prot() ^ ((DWORD)1 << (u8() % 32));
    return (DWORD)u64();
}

static DWORD gen_bad_alloc_type(void)
{
    static const DWORD near[] = {0,
                                 MEM_DECOMMIT,
                                 MEM_RELEASE,
                                 MEM_FREE,
                                 MEM_DECOMMIT | MEM_RESERVE,
                                 MEM_WRITE_WATCH | MEM_RESERVE,
                                 MEM_PHYSICAL | MEM_RESERVE,
                                 MEM_RESET | MEM_COMMIT,
                                 MEM_RESET | MEM_TOP_DOWN,
                                 MEM_RESET_UNDO | MEM_RESET,
                                 MEM_LARGE_PAGES | MEM_RESERVE,
                                 MEM_LARGE_PAGES | MEM_COMMIT,
                                 MEM_RESERVE | MEM_RESERVE_PLACEHOLDER,
                                 MEM_TOP_DOWN};
    unsigned r = u8() % 3;
    if (r == 0)
        return near[pick(sizeof near / sizeof near[0])];
    if (r == 1)
        return (MEM_COMMIT | MEM_RESERVE) ^ ((DWORD)1 << (u8() % 32));
    return (DWORD)u64();
}

/* ---- model queries ----------------------------------------------------------------------------- */

static int find_slot(uintptr_t a, int mi)
{
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (mi < 0 || S[i].owner == mi) && a >= S[i].base && a < slot_end(&S[i]))
            return i;
    return -1;
}

static int count_live(int mi)
{
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        n += S[i].live && S[i].owner == mi;
    return n;
}

static size_t committed_of(int mi)
{
    size_t c = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && S[i].owner == mi)
            for (size_t k = 0; k < S[i].npages; k++)
                c += S[i].state[k] == MEM_COMMIT ? P : 0;
    return c;
}

/* A live slot: mostly one of mi's. -1 if none. */
static int pick_slot(int mi)
{
    int own = chance(85);
    int cand[NSLOTS], n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (!own || S[i].owner == mi))
            cand[n++] = i;
    if (!n)
        for (int i = 0; i < NSLOTS; i++)
            if (S[i].live)
                cand[n++] = i;
    return n ? cand[pick((size_t)n)] : -1;
}

static int block_at(uintptr_t p)
{
    for (int i = 0; i < nblocks; i++)
        if (B[i].p == p)
            return i;
    return -1;
}

/* Is any byte of [a, e) a live heap block (at least the 1 byte of an Alloc(0))? */
static int overlaps_block(uintptr_t a, uintptr_t e)
{
    for (int i = 0; i < nblocks; i++)
        if (a < B[i].p + (B[i].size ? B[i].size : 1) && B[i].p < e)
            return 1;
    return 0;
}

/* [addr, addr+size) touching pages i..j of base, with random offsets inside the end pages. */
static void make_range(uintptr_t base, size_t i, size_t j, uintptr_t *addr, size_t *size)
{
    size_t off1 = 0, off2 = P;
    if (chance(30)) {
        off1 = pick(P);
        off2 = 1 + pick(P);
        if (i == j && off2 <= off1)
            off2 = off1 + 1;
    }
    *addr = base + i * P + off1;
    *size = (j * P + off2) - (i * P + off1);
}

/* A page range of s; with wild, sometimes running past its end, starting
 * before it, or wrapping past 2^64. */
static void gen_range(const slot *s, uintptr_t *addr, size_t *size, int wild)
{
    size_t i = pick(s->npages);
    size_t j = i + pick(s->npages - i);
    unsigned r = wild ? u8() % 100 : 99;
    if (r < 6)
        j = s->npages + pick(3);
    if (r >= 6 && r < 9) {
        size_t before = 1 + pick(2);
        make_range(s->base - before * P, 0, before + j, addr, size);
        return;
    }
    make_range(s->base, i, j, addr, size);
    if (r >= 9 && r < 12)
        *size = SIZE_MAX - pick(2 * P); /* wraps */
}

/* A run of committed pages of s. 0 if none. */
static int gen_committed_range(const slot *s, uintptr_t *addr, size_t *size)
{
    size_t cand[MAXPAGES], n = 0;
    for (size_t k = 0; k < s->npages; k++)
        if (s->state[k] == MEM_COMMIT)
            cand[n++] = k;
    if (!n)
        return 0;
    size_t k = cand[pick(n)], lo = k, hi = k;
    while (lo > 0 && s->state[lo - 1] == MEM_COMMIT)
        lo--;
    while (hi + 1 < s->npages && s->state[hi + 1] == MEM_COMMIT)
        hi++;
    make_range(s->base, lo + pick(k - lo + 1), k + pick(hi - k + 1), addr, size);
    return 1;
}

/* An address that is not a page of any live reservation of manager mi. */
static uintptr_t foreign_addr(int mi, uintptr_t stack)
{
    for (int tries = 0; tries < 16; tries++) {
        uintptr_t a = 0;
        switch (u8() % 12) {
        case 0:
            a = 0;
            break;
        case 1:
            a = stack;
            break;
        case 2:
            a = (uintptr_t)g_libc + pick(256);
            break;
        case 3:
            a = (uintptr_t)g_static + pick(256);
            break;
        case 4:
            a = (uintptr_t)&LLVMFuzzerTestOneInput; /* code */
            break;
        case 5:
            if (nfreed) {
                const freed_range *f = &F[pick((size_t)nfreed)];
                a = f->base + pick(f->npages * P);
            }
            break;
        case 6: {
            int si = pick_slot(mi);
            if (si >= 0)
                a = slot_end(&S[si]) + pick(P); /* the tail of its last granule, or past it */
            break;
        }
        case 7: {
            int si = pick_slot(1 - mi); /* the other manager's memory */
            if (si >= 0)
                a = S[si].base + pick(S[si].npages * P);
            break;
        }
        case 8:
            if (nblocks) {
                const block *b = &B[pick((size_t)nblocks)];
                a = b->p + pick(b->size + 1);
            }
            break;
        case 9:
            a = (uintptr_t)0 - P * (1 + pick(4)); /* the top of the address space */
            break;
        case 10:
            a = ((uintptr_t)1 << 47) + pick(4) * P - 2 * P; /* the end of user space */
            break;
        default:
            a = P * (1 + pick(16)); /* low pages */
            break;
        }
        if (find_slot(pdown(a), mi) < 0)
            return a;
    }
    return 0;
}

/* ---- contents --------------------------------------------------------------------------------- */

static uint64_t pattern(uint64_t tag, size_t word) { return tag ? tag ^ (word * 0x9E3779B97F4A7C15ull) : 0; }
static uint8_t block_byte(uint8_t tag, size_t i) { return (uint8_t)(tag + i * 151 + (i >> 9)); }

static void check_page(const slot *s, size_t k)
{
    const volatile uint64_t *w = (const volatile uint64_t *)(s->base + k * P);
    size_t words[3] = {0, (k * 37) % (P / 8), P / 8 - 1};
    for (int i = 0; i < 3; i++) {
        uint64_t got = w[words[i]], want = pattern(s->tag[k], words[i]);
        if (got != want)
            FAIL("contents of %#lx (page %zu of mgr%d reservation %#lx, protect %#x) word %zu: "
                 "%#llx, expected %#llx (committed pages keep their contents; new ones read zero)",
                 (unsigned long)(s->base + k * P), k, s->owner, (unsigned long)s->base,
                 (unsigned)s->prot[k], words[i], (unsigned long long)got,
                 (unsigned long long)want);
    }
}

static void check_block(const block *b, int full)
{
    const uint8_t *p = (const uint8_t *)b->p;
    if (!b->size)
        return;
    if (full) {
        for (size_t i = 0; i < b->size; i++)
            if (p[i] != block_byte(b->tag, i))
                FAIL("heap block %#lx (%zu bytes) byte %zu: %#x, expected %#x (a heap block "
                     "keeps its contents until freed)",
                     (unsigned long)b->p, b->size, i, p[i], block_byte(b->tag, i));
        return;
    }
    size_t at[3] = {0, b->size / 2, b->size - 1};
    for (int i = 0; i < 3; i++)
        if (p[at[i]] != block_byte(b->tag, at[i]))
            FAIL("heap block %#lx (%zu bytes) byte %zu: %#x, expected %#x (a heap block keeps "
                 "its contents until freed)",
                 (unsigned long)b->p, b->size, at[i], p[at[i]], block_byte(b->tag, at[i]));
}

/* ---- checks after every step ---------------------------------------------------------------------- */

static void query(int mi, uintptr_t a, MEMORY_BASIC_INFORMATION *mbi)
{
    SIZE_T n = 0;
    memset(mbi, 0xA5, sizeof *mbi);
    HRESULT hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof *mbi, &n);
    if (hr != S_OK || n != sizeof *mbi)
        FAIL("mgr%d VirtualQuery(%#lx) -> %s, *pResult %zu; expected S_OK and %zu (SPEC §5)", mi,
             (unsigned long)a, hrn(hr), (size_t)n, sizeof *mbi);
}

static void verify_slot(const slot *s)
{
    size_t run[MAXPAGES];
    for (size_t k = s->npages; k-- > 0;)
        run[k] = k + 1 < s->npages && s->state[k + 1] == s->state[k] && s->prot[k + 1] == s->prot[k]
                     ? run[k + 1] + 1
                     : 1;
    for (size_t k = 0; k < s->npages; k++) {
        uintptr_t page = s->base + k * P, a = page + (k * 1032 + 8) % P;
        MEMORY_BASIC_INFORMATION mbi;
        query(s->owner, a, &mbi);
        if ((uintptr_t)mbi.BaseAddress != page || (uintptr_t)mbi.AllocationBase != s->base ||
            mbi.AllocationProtect != s->aprot || mbi.RegionSize != run[k] * P ||
            mbi.State != s->state[k] || mbi.Protect != s->prot[k] || mbi.Type != MEM_PRIVATE)
            FAIL("mgr%d VirtualQuery(%#lx) (page %zu of reservation %#lx, %zu pages) (SPEC §5):\n"
                 "    got      Base %#lx AllocBase %#lx AllocProt %#x Size %#zx State %#x Protect %#x Type %#x\n"
                 "    expected Base %#lx AllocBase %#lx AllocProt %#x Size %#zx State %#x Protect %#x Type %#x",
                 s->owner, (unsigned long)a, k, (unsigned long)s->base, s->npages,
                 (unsigned long)(uintptr_t)mbi.BaseAddress,
                 (unsigned long)(uintptr_t)mbi.AllocationBase, (unsigned)mbi.AllocationProtect,
                 (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect,
                 (unsigned)mbi.Type, (unsigned long)page, (unsigned long)s->base,
                 (unsigned)s->aprot, run[k] * P, (unsigned)s->state[k], (unsigned)s->prot[k],
                 (unsigned)MEM_PRIVATE);
        if (s->state[k] == MEM_COMMIT && readable(s->prot[k]) && s->known[k])
            check_page(s, k);
    }
}

static int kernel_mapped(uintptr_t page)
{
    unsigned char v;
    return mincore((void *)page, P, &v) == 0;
}

/*
 * A page no live reservation of the model holds, seen by manager mi: MEM_FREE,
 * or - when the kernel has a mapping there (the other manager's arena, the
 * heap, a sanitizer's memory) - the OS view of a committed mapping. Returns 1
 * when it reads free. Anything else fails.
 */
static int check_unreserved(int mi, uintptr_t a, const char *what)
{
    MEMORY_BASIC_INFORMATION mbi;
    query(mi, a, &mbi);
    if (mbi.State == MEM_FREE) {
        if ((uintptr_t)mbi.BaseAddress != pdown(a) || mbi.AllocationBase != NULL ||
            mbi.Protect != PAGE_NOACCESS || mbi.Type != 0 || mbi.RegionSize == 0 ||
            mbi.RegionSize % P != 0)
            FAIL("mgr%d VirtualQuery(%#lx) (%s): MEM_FREE with Base %#lx AllocBase %#lx Size %#zx "
                 "Protect %#x Type %#x; expected Base %#lx, AllocBase 0, PAGE_NOACCESS, Type 0 "
                 "(SPEC §5)",
                 mi, (unsigned long)a, what, (unsigned long)(uintptr_t)mbi.BaseAddress,
                 (unsigned long)(uintptr_t)mbi.AllocationBase, (size_t)mbi.RegionSize,
                 (unsigned)mbi.Protect, (unsigned)mbi.Type, (unsigned long)pdown(a));
        return 1;
    }
    int mapped = kernel_mapped(pdown(a));
    if (mapped && mbi.State != MEM_RESERVE && (uintptr_t)mbi.BaseAddress == pdown(a) &&
        (mbi.Type == MEM_PRIVATE || mbi.Type == MEM_MAPPED || mbi.Type == MEM_IMAGE))
        return 0;
    /* The heap's own segments (4 MiB, reserved with the heap's protection) and
     * large blocks are host memory of manager 0. */
    if (mi == 0 && mapped && (mbi.State == MEM_RESERVE || mbi.State == MEM_COMMIT) &&
        mbi.Type == MEM_PRIVATE && (uintptr_t)mbi.BaseAddress == pdown(a) &&
        mbi.AllocationProtect == heap_prot &&
        ((uintptr_t)mbi.AllocationBase % ((uintptr_t)4 << 20) == 0 ||
         block_at((uintptr_t)mbi.AllocationBase) >= 0))
        return 0;
    FAIL("mgr%d VirtualQuery(%#lx) (%s; no live reservation; kernel mapping: %s): Base %#lx "
         "AllocBase %#lx Size %#zx State %#x Protect %#x Type %#x; expected MEM_FREE or the OS "
         "view of a mapping (SPEC §5)",
         mi, (unsigned long)a, what, mapped ? "yes" : "none",
         (unsigned long)(uintptr_t)mbi.BaseAddress, (unsigned long)(uintptr_t)mbi.AllocationBase,
         (size_t)mbi.RegionSize, (unsigned)mbi.State, (unsigned)mbi.Protect, (unsigned)mbi.Type);
}

/* Heap segments seen so far (they keep their address space until the heap goes). */
static size_t g_segments;
#define SEGMENT_BYTES ((size_t)4 << 20)
#define SMALL_MAX 16384 /* docs/heap.md: larger blocks get a reservation each */

static void check_stats(void)
{
    for (int mi = 0; mi < NM; mi++) {
        hostmem_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        HRESULT hr = hostmem_get_stats(M[mi], &st);
        if (hr != S_OK)
            FAIL("hostmem_get_stats(manager %d) -> %s", mi, hrn(hr));
        size_t want = committed_of(mi), reserved = 0, live = (size_t)count_live(mi);
        for (int i = 0; i < NSLOTS; i++)
            if (S[i].live && S[i].owner == mi)
                reserved += S[i].npages * P;
        if (mi == 0) {
            /* The heap's pages count as committed too (docs/heap.md); its segments and
             * large blocks are reservations of the manager. */
            size_t large = 0, large_bytes = 0;
            for (int i = 0; i < nblocks; i++)
                if (B[i].size > SMALL_MAX) {
                    large++;
                    large_bytes += (B[i].size + P - 1) & ~(P - 1);
                }
            size_t segments = st.reservations - live - large;
            if (st.heap_bytes > st.committed_bytes || st.committed_bytes - st.heap_bytes != want ||
                st.reservations < live + large || segments < g_segments ||
                st.reserved_bytes != reserved + large_bytes + segments * SEGMENT_BYTES ||
                st.commit_limit != 0)
                FAIL("hostmem_get_stats(manager 0): committed_bytes %#zx heap_bytes %#zx "
                     "reservations %zu reserved_bytes %#zx limit %#zx; expected committed - heap "
                     "= %#zx, reservations = %zu + %zu large blocks + segments (%zu before), "
                     "reserved = %#zx + %#zx + segments * 4 MiB, no limit",
                     st.committed_bytes, st.heap_bytes, st.reservations, st.reserved_bytes,
                     st.commit_limit, want, live, large, g_segments, reserved, large_bytes);
            g_segments = segments;
        } else if (st.committed_bytes != want || st.reservations != live || st.heap_bytes != 0 ||
                   st.commit_limit != limit1 || st.reserved_bytes != reserved) {
            FAIL("hostmem_get_stats(manager 1): committed_bytes %#zx reservations %zu heap_bytes "
                 "%#zx limit %#zx reserved %#zx; expected %#zx, %zu, 0, %#zx, %#zx",
                 st.committed_bytes, st.reservations, st.heap_bytes, st.commit_limit,
                 st.reserved_bytes, want, live, limit1, reserved);
        }
        if (st.dynamic_code != code_policy[mi] || st.dynamic_code_refusals != code_refusals[mi])
            FAIL("hostmem_get_stats(manager %d): dynamic_code %u, dynamic_code_refusals %zu; expected "
                 "%u and %zu (issue 23: every refusal counted, nothing else)",
                 mi, (unsigned)st.dynamic_code, st.dynamic_code_refusals, (unsigned)code_policy[mi],
                 code_refusals[mi]);
        if (st.write_watch_gets != ww_gets[mi] || st.write_watch_resets != ww_resets[mi] ||
            st.write_watch_pages != ww_pages[mi])
            FAIL("hostmem_get_stats(manager %d): write_watch_gets %zu resets %zu pages %zu; expected "
                 "%zu, %zu, %zu (docs/writewatch.md: the answers counted, refusals not)",
                 mi, st.write_watch_gets, st.write_watch_resets, st.write_watch_pages, ww_gets[mi],
                 ww_resets[mi], ww_pages[mi]);
        if (g_seen[mi].calls != guard_fired[mi])
            FAIL("manager %d's guard handler was called %d times; the model expects %d", mi,
                 g_seen[mi].calls, guard_fired[mi]);
        char why[512] = "";
        uint32_t flags = g_step % 64 == 63 ? HOSTMEM_VALIDATE_KERNEL : 0;
        hr = hostmem_validate(M[mi], flags, why, sizeof why);
        if (hr != S_OK)
            FAIL("hostmem_validate(manager %d, %#x) -> %s: %s", mi, (unsigned)flags, hrn(hr), why);
    }
}

static void verify_all(void)
{
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live)
            verify_slot(&S[i]);
    for (int i = 0; i < nblocks; i++)
        check_block(&B[i], 0);

    /* Sampled: a page released earlier, a reservation's granule tail, and a
     * page of one manager seen from the other. */
    if (nfreed && g_step % 4 == 1) {
        const freed_range *f = &F[g_step % nfreed];
        uintptr_t a = f->base + (size_t)(g_step % (long)f->npages) * P;
        if (find_slot(a, -1) < 0)
            check_unreserved((int)(g_step & 1), a, "released earlier");
    }
    for (int i = 0; i < NSLOTS; i++) {
        const slot *s = &S[(i + g_step) % NSLOTS];
        if (!s->live)
            continue;
        uintptr_t e = slot_end(s);
        if (e % G && g_step % 4 == 2)
            check_unreserved(s->owner, e, "the tail of a reservation's last granule");
        if (g_step % 8 == 3) {
            MEMORY_BASIC_INFORMATION mbi;
            query(1 - s->owner, s->base, &mbi);
            if (mbi.State != MEM_COMMIT || mbi.Type != MEM_PRIVATE ||
                (uintptr_t)mbi.BaseAddress != s->base)
                FAIL("mgr%d VirtualQuery(%#lx) of the other manager's reservation: State %#x "
                     "Type %#x Base %#lx; expected the OS view: MEM_COMMIT, MEM_PRIVATE (contract: "
                     "another manager's memory is anonymous memory)",
                     1 - s->owner, (unsigned long)s->base, (unsigned)mbi.State,
                     (unsigned)mbi.Type, (unsigned long)(uintptr_t)mbi.BaseAddress);
        }
        break;
    }
    check_stats();
}

/* ---- calls ------------------------------------------------------------------------------------------ */

static uintptr_t call_alloc(int mi, uintptr_t a, size_t size, DWORD type, DWORD prot,
                            EMemoryCriticalLevel level, HRESULT want)
{
    void *p = (void *)(uintptr_t)0xDEADBEEF;
    HRESULT hr = M[mi]->lpVtbl->VirtualAlloc(M[mi], (void *)a, size, type, prot, level, &p);
    if (want == BLOCKED)
        code_refusals[mi]++;
    if (hr != want)
        FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    if (hr != S_OK && p != NULL)
        FAIL("%s -> %s with *ppMem %p; expected NULL on failure (contract)", g_op, hrn(hr), p);
    return (uintptr_t)p;
}

static void call_free(int mi, uintptr_t a, size_t size, DWORD type, HRESULT want)
{
    HRESULT hr = M[mi]->lpVtbl->VirtualFree(M[mi], (void *)a, size, type);
    if (hr != want)
        FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
}

/* SPEC §4, in order. */
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
    if (size != 0) {
        uintptr_t e = range_end(a, size);
        if (!e || e > slot_end(&S[si]))
            return E_INVALIDARG;
    }
    *slot_out = si;
    return S_OK;
}

/* Pages of [a, e) of slot s not committed yet, in bytes. */
static size_t newly_committed(const slot *s, uintptr_t a, uintptr_t e)
{
    size_t n = 0;
    for (uintptr_t q = pdown(a); q < e; q += P)
        n += s->state[(q - s->base) / P] != MEM_COMMIT ? P : 0;
    return n;
}

/* Would committing `bytes` more on manager mi pass its budget? */
static int over_budget(int mi, size_t bytes)
{
    return mi == 1 && limit1 && bytes && committed_of(1) + bytes > limit1;
}

/* VirtualAlloc(MEM_COMMIT / MEM_RESET / MEM_RESET_UNDO) at a non-NULL address:
 * type, protection, size, level, then the address (SPEC §3), then the budget. */
static HRESULT expect_in_reservation(int mi, uintptr_t a, size_t size, DWORD type, DWORD prot,
                                     EMemoryCriticalLevel level, int *slot_out)
{
    *slot_out = -1;
    if (!alloc_type_valid(type) || !prot_valid(prot) || size == 0 || (unsigned)level > 2)
        return E_INVALIDARG;
    if (type == MEM_COMMIT && code_policy_refuses(code_policy[mi], prot))
        return BLOCKED; /* before the address; MEM_RESET ignores the protection */
    int si = find_slot(pdown(a), mi);
    uintptr_t e = range_end(a, size);
    if (si < 0 || !e || e > slot_end(&S[si]))
        return ERR_ADDR;
    *slot_out = si;
    if (type == MEM_COMMIT && over_budget(mi, newly_committed(&S[si], a, e)))
        return E_OUTOFMEMORY;
    if (type == MEM_RESET_UNDO && S[si].was_reset)
        return HOSTMEM_E_CONTENTS_LOST;
    return S_OK;
}

/* SPEC §6. */
static HRESULT expect_protect(int mi, uintptr_t a, size_t size, DWORD prot, int null_old,
                              int *slot_out)
{
    *slot_out = -1;
    if (null_old)
        return E_POINTER;
    if (!prot_valid(prot))
        return E_INVALIDARG;
    if (code_policy_refuses(code_policy[mi], prot))
        return BLOCKED; /* before the range */
    int si = find_slot(pdown(a), mi);
    uintptr_t e = size ? range_end(a, size) : pdown(a) + P; /* size 0: the page of a */
    if (si < 0 || !e || e > slot_end(&S[si]))
        return ERR_ADDR;
    for (uintptr_t q = pdown(a); q < e; q += P)
        if (S[si].state[(q - S[si].base) / P] != MEM_COMMIT)
            return ERR_ADDR;
    *slot_out = si;
    return S_OK;
}

static void remember_freed(uintptr_t base, size_t npages)
{
    F[freed_next].base = base;
    F[freed_next].npages = npages;
    freed_next = (freed_next + 1) % NFREED;
    if (nfreed < NFREED)
        nfreed++;
}

static void model_new(int mi, uintptr_t base, size_t npages, DWORD aprot, int commit, int watched)
{
    for (int i = 0; i < NSLOTS; i++) {
        slot *s = &S[i];
        if (s->live)
            continue;
        memset(s, 0, sizeof *s);
        s->live = 1;
        s->owner = mi;
        s->base = base;
        s->npages = npages;
        s->aprot = aprot;
        s->watched = watched;
        for (size_t k = 0; k < npages; k++) {
            s->state[k] = commit ? MEM_COMMIT : MEM_RESERVE;
            s->prot[k] = commit ? aprot : 0;
            s->known[k] = 1;
        }
        return;
    }
    FAIL("model: no free slot");
}

static void model_decommit(slot *s, uintptr_t from, uintptr_t to)
{
    for (uintptr_t q = from; q < to; q += P) {
        size_t k = (q - s->base) / P;
        s->state[k] = MEM_RESERVE;
        s->prot[k] = 0;
        s->tag[k] = 0;
        s->known[k] = 1;
        if (s->written[k] && !s->captured[k])
            g_cov[COV_FORGOTTEN]++;
        s->written[k] = 0; /* decommit forgets the writes; never the captured pages */
    }
}

static void model_release(slot *s)
{
    remember_freed(s->base, s->npages);
    s->live = 0;
}

/* ---- operations ---------------------------------------------------------------------------------------- */

static EMemoryCriticalLevel gen_level(void)
{
    return chance(80) ? eTaskCritical : eProcessCritical; /* no eAppDomainCritical: it waits */
}

static void op_release(int mi);

static void op_reserve(int mi)
{
    if (count_live(mi) >= PER_MANAGER) {
        op_release(mi);
        return;
    }
    size_t npages = 1 + pick(MAXPAGES);
    size_t size = npages * P - pick(P);
    DWORD prot = gen_prot();
    static const DWORD types[4] = {MEM_RESERVE, MEM_RESERVE | MEM_COMMIT, MEM_COMMIT,
                                   MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES};
    DWORD type = types[u8() % 4];
    if (chance(20))
        type |= MEM_TOP_DOWN;
    EMemoryCriticalLevel level = gen_level();
    HRESULT want = (type & MEM_COMMIT) && over_budget(mi, npages * P) ? E_OUTOFMEMORY : S_OK;
    /* large pages come whole (2 MiB and up): these sizes never are (contract.md) */
    if (type & MEM_LARGE_PAGES)
        want = E_INVALIDARG; /* an argument error: before the dynamic-code policy */
    else if (code_policy_refuses(code_policy[mi], prot))
        want = BLOCKED;
    set_op("mgr%d VirtualAlloc(NULL, %#zx, %#x, %#x, level %d)", mi, size, (unsigned)type,
           (unsigned)prot, (int)level);
    uintptr_t p = call_alloc(mi, 0, size, type, prot, level, want);
    if (want != S_OK)
        return;
    if (p == 0 || p % G != 0)
        FAIL("%s: *ppMem %#lx is not granule-aligned (SPEC §3)", g_op, (unsigned long)p);
    uintptr_t gend = gup(p + npages * P);
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && p < gup(slot_end(&S[i])) && S[i].base < gend)
            FAIL("%s: *ppMem %#lx overlaps the granules of live reservation %#lx", g_op,
                 (unsigned long)p, (unsigned long)S[i].base);
    if (overlaps_block(p, gend))
        FAIL("%s: *ppMem %#lx overlaps a live heap block", g_op, (unsigned long)p);
    model_new(mi, p, npages, prot, (type & MEM_COMMIT) != 0, 0);
}

/* A reservation at an address: inside a range released earlier (either
 * manager's), or over live memory. */
static void op_reserve_at(int mi)
{
    if (count_live(mi) >= PER_MANAGER) {
        op_release(mi);
        return;
    }
    DWORD prot = gen_prot();
    int commit = chance(40);
    DWORD type = commit ? (MEM_RESERVE | MEM_COMMIT) : MEM_RESERVE;
    uintptr_t a;
    size_t size;
    int si = pick_slot(mi);
    unsigned r = u8() % 100;
    if (r < 60 && nfreed) {
        const freed_range *f = &F[pick((size_t)nfreed)];
        a = f->base + pick(f->npages * P);
        size = 1 + pick(f->base + f->npages * P - a);
    } else if (r < 80 && si >= 0) {
        a = S[si].base + pick(S[si].npages * P);
        size = 1 + pick(4 * P);
    } else if (nblocks) {
        const block *b = &B[pick((size_t)nblocks)];
        a = b->p;
        size = 1 + pick(4 * P);
    } else {
        return;
    }
    uintptr_t nb = gdown(a), ne = range_end(a, size);
    EMemoryCriticalLevel level = gen_level();
    HRESULT want = S_OK;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && nb < gup(slot_end(&S[i])) && S[i].base < ne)
            want = ERR_ADDR;
    int refused = code_policy_refuses(code_policy[mi], prot); /* before the address */
    if (want == S_OK && overlaps_block(nb, ne))
        want = ERR_ADDR;
    for (uintptr_t q = nb; q < ne && want == S_OK;) {
        if (!check_unreserved(mi, q, "to be reserved at")) {
            want = ERR_ADDR; /* the other manager's arena, the heap, a foreign mapping */
            break;
        }
        MEMORY_BASIC_INFORMATION mbi;
        query(mi, q, &mbi); /* free: the whole free region is */
        q += mbi.RegionSize;
    }
    if (want == S_OK && commit && over_budget(mi, ne - nb))
        want = E_OUTOFMEMORY;
    if (refused)
        want = BLOCKED;
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, %#x, %#x, level %d) [at an address]", mi,
           (unsigned long)a, size, (unsigned)type, (unsigned)prot, (int)level);
    uintptr_t p = call_alloc(mi, a, size, type, prot, level, want);
    if (want != S_OK)
        return;
    if (p != nb)
        FAIL("%s: *ppMem %#lx, expected %#lx (the address rounded down to G)", g_op,
             (unsigned long)p, (unsigned long)nb);
    model_new(mi, nb, (ne - nb) / P, prot, commit, 0);
}

/* A protection with PAGE_GUARD (where the base allows it) for the guard operations. */
static DWORD with_guard(DWORD prot)
{
    if (!prot_valid(prot))
        return prot;
    return ((prot & 0xFFu) == PAGE_NOACCESS ? PAGE_READWRITE : prot & 0xFFu) | PAGE_GUARD;
}

static void op_commit_as(int mi, int guard)
{
    int si = pick_slot(mi);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    gen_range(&S[si], &a, &size, 1);
    DWORD prot = chance(4) ? gen_bad_prot() : gen_prot();
    if (guard)
        prot = with_guard(prot);
    if (chance(2))
        size = 0;
    EMemoryCriticalLevel level = gen_level();
    int ts;
    HRESULT want = expect_in_reservation(mi, a, size, MEM_COMMIT, prot, level, &ts);
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, MEM_COMMIT, %#x, level %d)", mi, (unsigned long)a,
           size, (unsigned)prot, (int)level);
    uintptr_t p = call_alloc(mi, a, size, MEM_COMMIT, prot, level, want);
    if (want != S_OK)
        return;
    if (p != pdown(a))
        FAIL("%s: *ppMem %#lx, expected %#lx (SPEC §3)", g_op, (unsigned long)p,
             (unsigned long)pdown(a));
    slot *s = &S[ts];
    for (uintptr_t q = pdown(a); q < range_end(a, size); q += P) {
        size_t k = (q - s->base) / P;
        if (s->state[k] != MEM_COMMIT) {
            s->state[k] = MEM_COMMIT;
            s->tag[k] = 0;
            s->known[k] = 1;
        }
        s->prot[k] = allocation_wide(s->aprot, prot); /* a commit writes and captures nothing */
    }
}

static void op_commit(int mi) { op_commit_as(mi, 0); }

static void op_decommit(int mi)
{
    int si = pick_slot(mi);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    unsigned r = u8() % 100;
    if (r < 15) {
        a = S[si].base + (chance(30) ? pick(P) : 0);
        size = 0;
    } else if (r < 20 && S[si].npages > 1) {
        a = S[si].base + (1 + pick(S[si].npages - 1)) * P + pick(P);
        size = 0;
    } else {
        gen_range(&S[si], &a, &size, 1);
    }
    int ts;
    HRESULT want = expect_free(mi, a, size, MEM_DECOMMIT, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, MEM_DECOMMIT)", mi, (unsigned long)a, size);
    call_free(mi, a, size, MEM_DECOMMIT, want);
    if (want != S_OK)
        return;
    slot *s = &S[ts];
    if (size == 0)
        model_decommit(s, s->base, slot_end(s));
    else
        model_decommit(s, pdown(a), range_end(a, size));
}

static void op_release(int mi)
{
    int si = pick_slot(mi);
    if (si < 0)
        return;
    uintptr_t a = S[si].base;
    size_t size = 0;
    unsigned r = u8() % 100;
    if (r < 10)
        a += pick(P); /* inside the base page */
    else if (r < 15 && S[si].npages > 1)
        a += (1 + pick(S[si].npages - 1)) * P; /* not the base */
    else if (r < 20)
        size = 1 + pick(S[si].npages * P); /* MEM_RELEASE wants size 0 */
    int ts;
    HRESULT want = expect_free(mi, a, size, MEM_RELEASE, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, MEM_RELEASE)", mi, (unsigned long)a, size);
    call_free(mi, a, size, MEM_RELEASE, want);
    if (want == S_OK)
        model_release(&S[ts]);
}

static void op_protect_as(int mi, int guard)
{
    int si = pick_slot(mi);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    int have = gen_committed_range(&S[si], &a, &size);
    DWORD prot = gen_prot();
    int null_old = 0;
    unsigned r = u8() % 100;
    if (!have || r < 25)
        gen_range(&S[si], &a, &size, 1);
    else if (r < 30)
        prot = gen_bad_prot();
    else if (r < 33)
        null_old = 1;
    else if (r < 40)
        size = 0;
    if (guard)
        prot = with_guard(prot);
    int ts;
    HRESULT want = expect_protect(mi, a, size, prot, null_old, &ts);
    set_op("mgr%d VirtualProtect(%#lx, %#zx, %#x, %s)", mi, (unsigned long)a, size,
           (unsigned)prot, null_old ? "NULL" : "&old");
    DWORD old = 0xDEADBEEF;
    HRESULT hr = M[mi]->lpVtbl->VirtualProtect(M[mi], (void *)a, size, prot, null_old ? NULL : &old);
    if (want == BLOCKED)
        code_refusals[mi]++;
    if (hr != want)
        FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    if (want != S_OK)
        return;
    slot *s = &S[ts];
    if (old != s->prot[(pdown(a) - s->base) / P])
        FAIL("%s: *pflOldProtect %#x, expected %#x (SPEC §6)", g_op, (unsigned)old,
             (unsigned)s->prot[(pdown(a) - s->base) / P]);
    uintptr_t e = size ? range_end(a, size) : pdown(a) + P;
    for (uintptr_t q = pdown(a); q < e; q += P) {
        size_t k = (q - s->base) / P;
        s->prot[k] = allocation_wide(s->aprot, prot);
        if (s->watched && s->written[k] && !s->captured[k]) {
            s->captured[k] = 1; /* Windows' latch: the writes before the call */
            g_cov[COV_CAPTURE]++;
        }
    }
}

static void op_protect(int mi) { op_protect_as(mi, 0); }

static void op_reset(int mi)
{
    int si = pick_slot(mi);
    if (si < 0)
        return;
    uintptr_t a;
    size_t size;
    int have = gen_committed_range(&S[si], &a, &size);
    DWORD prot = gen_prot();
    DWORD type = chance(25) ? MEM_RESET_UNDO : MEM_RESET;
    unsigned r = u8() % 100;
    if (!have || r < 20)
        gen_range(&S[si], &a, &size, 1);
    else if (r < 25)
        prot = gen_bad_prot();
    int ts;
    HRESULT want = expect_in_reservation(mi, a, size, type, prot, eTaskCritical, &ts);
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, %s, %#x)", mi, (unsigned long)a, size,
           type == MEM_RESET ? "MEM_RESET" : "MEM_RESET_UNDO", (unsigned)prot);
    uintptr_t p = call_alloc(mi, a, size, type, prot, eTaskCritical, want);
    if (want != S_OK)
        return;
    if (p != pdown(a))
        FAIL("%s: *ppMem %#lx, expected %#lx", g_op, (unsigned long)p, (unsigned long)pdown(a));
    if (type == MEM_RESET_UNDO)
        return;
    slot *s = &S[ts];
    for (uintptr_t q = pdown(a); q < range_end(a, size); q += P) {
        size_t k = (q - s->base) / P;
        if (s->state[k] == MEM_COMMIT) {
            s->known[k] = 0;
            s->was_reset = 1;
        }
    }
}

/* A guard page of a manager with guard pages that allows the access once its
 * guard is gone (docs/guard.md: the first access clears it and is retried). */
static int guard_allows(const slot *s, size_t k, int write)
{
    DWORD p = s->prot[k];
    if (!guard_on[s->owner] || s->state[k] != MEM_COMMIT || !(p & PAGE_GUARD))
        return 0;
    return write ? writable(p & ~(DWORD)PAGE_GUARD) : readable(p & ~(DWORD)PAGE_GUARD);
}

/*
 * An access by this thread to page k of s, which the model says succeeds. On a
 * guard page (of a manager with guard pages) the guard fires once: the handler
 * is told the page and the access, the guard is cleared on that page only, and
 * the access is retried. A write to a write-watched page writes it - the
 * retried write to a guard page too (the handler clears the guard and the
 * write then happens, as any write); a read writes nothing.
 */
static void access_page(slot *s, size_t k, int write, uint64_t tag)
{
    int guard = (s->prot[k] & PAGE_GUARD) != 0;
    int mi = s->owner, before = g_seen[mi].calls;
    uintptr_t page = s->base + k * P;
    if (write) {
        uint64_t *w = (uint64_t *)page;
        for (size_t i = 0; i < P / 8; i++)
            w[i] = pattern(tag, i);
    } else {
        size_t word = (k * 37 + 5) % (P / 8);
        uint64_t got = ((const volatile uint64_t *)page)[word];
        if (s->known[k] && got != pattern(s->tag[k], word))
            FAIL("%s: word %zu reads %#llx, expected %#llx", g_op, word, (unsigned long long)got,
                 (unsigned long long)pattern(s->tag[k], word));
    }
    if (guard) {
        guard_fired[mi]++;
        if (g_seen[mi].calls != before + 1 || g_seen[mi].page != (void *)page)
            FAIL("%s: the guard handler was called %d times (last for %p); expected once, for "
                 "%#lx (docs/guard.md: the first access fires the guard)",
                 g_op, g_seen[mi].calls - before, g_seen[mi].page, (unsigned long)page);
#if defined(__x86_64__)
        if (g_seen[mi].access != write)
            FAIL("%s: the guard handler was told access %d, expected %d", g_op, g_seen[mi].access,
                 write);
#endif
        s->prot[k] &= ~(DWORD)PAGE_GUARD; /* this page only */
        g_cov[write ? (s->watched ? COV_GUARD_WATCHED_WRITE : COV_GUARD_WRITE) : COV_GUARD_READ]++;
    } else if (g_seen[mi].calls != before) {
        FAIL("%s: the guard handler was called for a page without PAGE_GUARD", g_op);
    }
    if (!write)
        return;
    s->tag[k] = tag;
    s->known[k] = 1;
    if (s->watched) {
        s->written[k] = 1;
        g_cov[COV_WATCHED_WRITE]++;
    }
}

/* A write to a page the model says is writable (a guard page of a manager with
 * guard pages too); with watched_only, of a write-watched reservation. */
static void write_some_page(int watched_only)
{
    int cs[NSLOTS * MAXPAGES];
    size_t ck[NSLOTS * MAXPAGES];
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && (!watched_only || S[i].watched))
            for (size_t k = 0; k < S[i].npages; k++)
                if ((S[i].state[k] == MEM_COMMIT && writable(S[i].prot[k])) ||
                    guard_allows(&S[i], k, 1)) {
                    cs[n] = i;
                    ck[n++] = k;
                }
    if (!n)
        return;
    int c = (int)pick((size_t)n);
    slot *s = &S[cs[c]];
    size_t k = ck[c];
    uint64_t tag = u64() | 1;
    set_op("write page %zu of %#lx (protect %#x%s) tag %#llx [%d/%d]", k, (unsigned long)s->base,
           (unsigned)s->prot[k], s->watched ? ", watched" : "", (unsigned long long)tag, c, n);
    access_page(s, k, 1, tag);
}

static void op_write(void) { write_some_page(0); }

/* A read or a write of a guard page, in a manager with guard pages. */
static void op_touch_guard(void)
{
    int cs[NSLOTS * MAXPAGES];
    size_t ck[NSLOTS * MAXPAGES];
    int n = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live)
            for (size_t k = 0; k < S[i].npages; k++)
                if (guard_allows(&S[i], k, 0)) {
                    cs[n] = i;
                    ck[n++] = k;
                }
    if (!n)
        return;
    int c = (int)pick((size_t)n);
    slot *s = &S[cs[c]];
    size_t k = ck[c];
    int write = guard_allows(s, k, 1) && chance(50);
    uint64_t tag = write ? u64() | 1 : 0;
    set_op("%s guard page %zu of mgr%d %#lx (protect %#x%s)", write ? "write" : "read", k,
           s->owner, (unsigned long)s->base, (unsigned)s->prot[k], s->watched ? ", watched" : "");
    access_page(s, k, write, tag);
}

/* ---- write watch (docs/writewatch.md) ---------------------------------------------------------------- */

/* MEM_RESERVE | MEM_WRITE_WATCH (with MEM_COMMIT, MEM_TOP_DOWN), and the
 * combinations Windows refuses. Where the kernel cannot track writes and the
 * manager does not emulate: ERROR_NOT_SUPPORTED, after the arguments and the
 * dynamic-code policy, before the budget. */
static void op_reserve_watch(int mi)
{
    if (count_live(mi) >= PER_MANAGER) {
        op_release(mi);
        return;
    }
    size_t npages = 1 + pick(MAXPAGES);
    size_t size = npages * P - pick(P);
    DWORD prot = gen_prot();
    unsigned r = u8() % 100;
    DWORD type = MEM_RESERVE | MEM_WRITE_WATCH | (r < 50 ? MEM_COMMIT : 0);
    if (chance(25))
        type |= MEM_TOP_DOWN;
    if (r >= 92) {
        static const DWORD refused[] = {MEM_WRITE_WATCH, MEM_COMMIT | MEM_WRITE_WATCH,
                                        MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH | MEM_LARGE_PAGES,
                                        MEM_RESET | MEM_WRITE_WATCH, MEM_WRITE_WATCH | MEM_TOP_DOWN};
        type = refused[pick(sizeof refused / sizeof refused[0])];
    }
    EMemoryCriticalLevel level = gen_level();
    HRESULT want = S_OK;
    if (!alloc_type_valid(type))
        want = E_INVALIDARG;
    else if (code_policy_refuses(code_policy[mi], prot))
        want = BLOCKED;
    else if (!ww_kernel && !emulate_ww[mi])
        want = WW_UNSUPPORTED;
    else if ((type & MEM_COMMIT) && over_budget(mi, npages * P))
        want = E_OUTOFMEMORY;
    set_op("mgr%d VirtualAlloc(NULL, %#zx, %#x [write watch], %#x, level %d)", mi, size,
           (unsigned)type, (unsigned)prot, (int)level);
    uintptr_t p = call_alloc(mi, 0, size, type, prot, level, want);
    if (want != S_OK) {
        g_cov[COV_RESERVE_WATCH_REFUSED]++;
        return;
    }
    if (p == 0 || p % G != 0)
        FAIL("%s: *ppMem %#lx is not granule-aligned (SPEC §3)", g_op, (unsigned long)p);
    uintptr_t gend = gup(p + npages * P);
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && p < gup(slot_end(&S[i])) && S[i].base < gend)
            FAIL("%s: *ppMem %#lx overlaps the granules of live reservation %#lx", g_op,
                 (unsigned long)p, (unsigned long)S[i].base);
    if (overlaps_block(p, gend))
        FAIL("%s: *ppMem %#lx overlaps a live heap block", g_op, (unsigned long)p);
    model_new(mi, p, npages, prot, (type & MEM_COMMIT) != 0, 1);
    g_cov[COV_RESERVE_WATCH]++;
}

/* A write-watched reservation, mostly one of mi's, often one with pages to
 * report; else any live one. -1 if none. */
static int pick_watched(int mi)
{
    int cand[NSLOTS], n = 0;
    int own = chance(90), reporting = chance(50);
    for (int i = 0; i < NSLOTS; i++) {
        int reports = 0;
        for (size_t k = 0; k < S[i].npages; k++)
            reports |= S[i].written[k] | S[i].captured[k];
        if (S[i].live && S[i].watched && (!own || S[i].owner == mi) && (!reporting || reports))
            cand[n++] = i;
    }
    for (int i = 0; !n && i < NSLOTS; i++)
        if (S[i].live && S[i].watched && (!own || S[i].owner == mi))
            cand[n++] = i;
    return n ? cand[pick((size_t)n)] : pick_slot(mi);
}

/* A range for GetWriteWatch / ResetWriteWatch: inside a reservation (wildly
 * at times), or a foreign address. */
static void gen_watch_range(int mi, int si, uintptr_t *a, size_t *size)
{
    int stack_var = 0;
    unsigned r = u8() % 100;
    if (si >= 0 && r >= 60) { /* the whole reservation, as a collector asks */
        *a = S[si].base;
        *size = S[si].npages * P;
        return;
    }
    if (si >= 0 && r >= 8) {
        gen_range(&S[si], a, size, r < 30);
        return;
    }
    *a = foreign_addr(mi, (uintptr_t)&stack_var);
    *size = 1 + pick(4 * P);
}

/* docs/writewatch.md "Errors": the range rules of both calls. */
static HRESULT expect_watch_range(int mi, uintptr_t a, size_t size, int *slot_out)
{
    *slot_out = -1;
    if (!a || !size)
        return WW_INVALID;
    uintptr_t e = range_end(a, size);
    int si = find_slot(pdown(a), mi);
    if (!e || si < 0 || !S[si].watched || e > slot_end(&S[si]))
        return WW_INVALID;
    *slot_out = si;
    return S_OK;
}

/* hostmem_get_write_watch: the written and the captured pages of the range, as
 * one ascending list within *count; with WRITE_WATCH_FLAG_RESET those returned -
 * only those - are reset. The errors in Windows' order; nothing written on a
 * failure. */
static void op_get_watch(int mi)
{
    int si = pick_watched(mi);
    uintptr_t a;
    size_t size;
    gen_watch_range(mi, si, &a, &size);
    DWORD flags = chance(50) ? WRITE_WATCH_FLAG_RESET : 0;
    uintptr_t count;
    unsigned c = u8() % 8;
    count = c < 3 ? 1 + pick(4) : c < 7 ? 1 + pick(MAXPAGES) : (uintptr_t)u64() | MAXPAGES;
    int null_count = 0, null_granularity = 0, null_addresses = 0;
    unsigned r = u8() % 100;
    if (r < 5)
        flags = (DWORD)u64() | ((DWORD)2 << pick(31)); /* a flag other than the reset flag */
    else if (r < 8)
        size = 0;
    else if (r < 10)
        a = 0;
    else if (r < 14) {
        count = 0; /* before the pointers */
        null_granularity = chance(30);
        null_addresses = chance(30);
    } else if (r < 17)
        null_count = 1;
    else if (r < 20)
        null_granularity = 1;
    else if (r < 23)
        null_addresses = 1;
    int ts;
    HRESULT want = flags & ~(DWORD)WRITE_WATCH_FLAG_RESET ? WW_INVALID
                                                           : expect_watch_range(mi, a, size, &ts);
    if (want != S_OK && null_count)
        return; /* docs/writewatch.md does not order a NULL count against the range */
    if (want == S_OK && null_count)
        want = WW_NOACCESS;
    else if (want == S_OK && count == 0)
        want = WW_INVALID;
    else if (want == S_OK && (null_granularity || null_addresses))
        want = WW_NOACCESS;
    void *out[MAXPAGES + 8];
    for (size_t i = 0; i < MAXPAGES + 8; i++)
        out[i] = (void *)(uintptr_t)0xDEADBEEF;
    uintptr_t n = count;
    ULONG granularity = 7;
    set_op("mgr%d hostmem_get_write_watch(%#x, %#lx, %#zx, %s, %s%#lx, %s)", mi, (unsigned)flags,
           (unsigned long)a, size, null_addresses ? "NULL" : "out", null_count ? "NULL " : "&",
           (unsigned long)count, null_granularity ? "NULL" : "&granularity");
    HRESULT hr = hostmem_get_write_watch(M[mi], flags, (void *)a, size,
                                         null_addresses ? NULL : out, null_count ? NULL : &n,
                                         null_granularity ? NULL : &granularity);
    if (hr != want)
        FAIL("%s -> %s, expected %s (docs/writewatch.md)", g_op, hrn(hr), hrn(want));
    if (want != S_OK) {
        if (n != count || granularity != 7 || out[0] != (void *)(uintptr_t)0xDEADBEEF)
            FAIL("%s -> %s wrote: *count %#lx, *granularity %u, addresses[0] %p (nothing is written "
                 "on a failure)",
                 g_op, hrn(hr), (unsigned long)n, (unsigned)granularity, out[0]);
        g_cov[COV_GET_REFUSED]++;
        return;
    }
    slot *s = &S[ts];
    size_t lo = (pdown(a) - s->base) / P, hi = (range_end(a, size) - s->base) / P, k = 0;
    if (granularity != P)
        FAIL("%s: *granularity %u, expected %zu", g_op, (unsigned)granularity, P);
    for (size_t i = lo; i < hi && k < count; i++) {
        if (!s->written[i] && !s->captured[i])
            continue;
        if (k >= n || out[k] != (void *)(s->base + i * P))
            FAIL("%s: answer %zu is %p of %lu answers; the model says page %zu (%#lx: %s%s%s)",
                 g_op, k, k < n ? out[k] : NULL, (unsigned long)n, i,
                 (unsigned long)(s->base + i * P), s->written[i] ? "written" : "",
                 s->written[i] && s->captured[i] ? ", " : "", s->captured[i] ? "captured" : "");
        if (s->captured[i] && s->state[i] != MEM_COMMIT)
            g_cov[COV_GET_CAPTURED_DECOMMITTED]++;
        if (flags & WRITE_WATCH_FLAG_RESET)
            s->written[i] = s->captured[i] = 0;
        k++;
    }
    if (n != k) {
        size_t all = 0;
        for (size_t i = lo; i < hi; i++)
            all += s->written[i] || s->captured[i];
        FAIL("%s: *count %lu (first extra answer %p), the model says %zu (written or captured "
             "pages in the range: %zu)",
             g_op, (unsigned long)n, n > k && k < MAXPAGES + 8 ? out[k] : NULL, k, all);
    }
    for (size_t i = lo; i < hi && k == count; i++)
        if (s->written[i] || s->captured[i]) {
            g_cov[COV_GET_CUT]++;
            break;
        }
    ww_gets[mi]++;
    ww_pages[mi] += n;
    if (flags & WRITE_WATCH_FLAG_RESET) {
        ww_resets[mi]++;
        g_cov[COV_GET_RESET]++;
    }
    g_cov[COV_GET]++;
    g_cov[COV_GET_PAGES] += n;
}

/* hostmem_reset_write_watch: every page of the range forgotten, captured or not. */
static void op_reset_watch(int mi)
{
    int si = pick_watched(mi);
    uintptr_t a;
    size_t size;
    gen_watch_range(mi, si, &a, &size);
    unsigned r = u8() % 100;
    if (r < 4)
        size = 0;
    else if (r < 7)
        a = 0;
    int ts;
    HRESULT want = expect_watch_range(mi, a, size, &ts);
    set_op("mgr%d hostmem_reset_write_watch(%#lx, %#zx)", mi, (unsigned long)a, size);
    HRESULT hr = hostmem_reset_write_watch(M[mi], (void *)a, size);
    if (hr != want)
        FAIL("%s -> %s, expected %s (docs/writewatch.md)", g_op, hrn(hr), hrn(want));
    if (want != S_OK) {
        g_cov[COV_RESET_REFUSED]++;
        return;
    }
    slot *s = &S[ts];
    for (uintptr_t q = pdown(a); q < range_end(a, size); q += P)
        s->written[(q - s->base) / P] = s->captured[(q - s->base) / P] = 0;
    ww_resets[mi]++;
    g_cov[COV_RESET]++;
}

/* VirtualAlloc with a bad type, protection, size or level: E_INVALIDARG
 * whatever the address; a NULL out-pointer: E_POINTER first. */
static void op_bad_alloc(int mi)
{
    uintptr_t a = 0;
    int si = pick_slot(mi);
    if (si >= 0 && chance(60))
        a = S[si].base + pick(S[si].npages * P);
    size_t size = P * (1 + pick(8));
    DWORD type = MEM_COMMIT, prot = gen_prot();
    EMemoryCriticalLevel level = eTaskCritical;
    unsigned r = u8() % 100;
    static const DWORD good_types[] = {MEM_COMMIT, MEM_RESERVE, MEM_COMMIT | MEM_RESERVE, MEM_RESET,
                                       MEM_RESET_UNDO};
    if (r < 40) {
        type = gen_bad_alloc_type();
        if (chance(30))
            prot = gen_bad_prot();
        if (chance(20))
            size = 0;
    } else {
        type = good_types[pick(5)];
        if (r < 70)
            prot = gen_bad_prot();
        else if (r < 85)
            size = 0;
        else
            level = (EMemoryCriticalLevel)(chance(50) ? (int)(3 + pick(200)) : (int)u64());
    }
    if ((type == MEM_RESET || type == MEM_RESET_UNDO) && a == 0)
        a = (uintptr_t)g_static; /* still refused for the arguments first */
    HRESULT want = alloc_type_valid(type) && prot_valid(prot) && size != 0 && (unsigned)level <= 2
                       ? S_OK
                       : E_INVALIDARG;
    if (want == S_OK)
        return; /* the random bits made a valid call: the other operations cover those */
    int null_out = chance(10);
    set_op("mgr%d VirtualAlloc(%#lx, %#zx, %#x, %#x, level %d, %s) [bad arguments]", mi,
           (unsigned long)a, size, (unsigned)type, (unsigned)prot, (int)level,
           null_out ? "NULL" : "&p");
    if (null_out) {
        HRESULT hr = M[mi]->lpVtbl->VirtualAlloc(M[mi], (void *)a, size, type, prot, level, NULL);
        if (hr != E_POINTER)
            FAIL("%s -> %s, expected E_POINTER", g_op, hrn(hr));
        return;
    }
    call_alloc(mi, a, size, type, prot, level, want);
}

/* A reservation no address space can hold. */
static void op_huge_reserve(int mi)
{
    static const size_t sizes[] = {(size_t)1 << 60, SIZE_MAX, SIZE_MAX - 4095, (size_t)1 << 48};
    size_t size = sizes[pick(4)];
    DWORD type = chance(50) ? MEM_RESERVE : (MEM_RESERVE | MEM_COMMIT);
    set_op("mgr%d VirtualAlloc(NULL, %#zx, %#x, PAGE_READWRITE) [huge]", mi, size, (unsigned)type);
    call_alloc(mi, 0, size, type, PAGE_READWRITE, eTaskCritical, E_OUTOFMEMORY);
}

/* VirtualFree with bad types or of memory that is not this manager's. */
static void op_bad_free(int mi)
{
    int stack_var = 0;
    uintptr_t a;
    int si = pick_slot(mi);
    if (si >= 0 && chance(50))
        a = S[si].base + (chance(50) ? 0 : pick(S[si].npages * P));
    else
        a = foreign_addr(mi, (uintptr_t)&stack_var);
    size_t size = chance(50) ? 0 : P * (1 + pick(4));
    DWORD type;
    unsigned r = u8() % 100;
    if (r < 40) {
        static const DWORD bad[] = {0,           MEM_FREE,   MEM_DECOMMIT | MEM_RELEASE,
                                    MEM_RESET,   MEM_COMMIT, MEM_RESERVE,
                                    MEM_RELEASE | MEM_PRESERVE_PLACEHOLDER,
                                    MEM_RELEASE | MEM_COALESCE_PLACEHOLDERS};
        type = chance(50) ? bad[pick(8)] : (DWORD)u64();
    } else if (r < 55) {
        type = MEM_RELEASE;
        size = chance(20) ? SIZE_MAX - pick(P) : 1 + pick(4 * P);
    } else if (r < 65) {
        type = MEM_DECOMMIT;
        size = SIZE_MAX - pick(2 * P); /* wraps: runs past the end */
    } else {
        type = chance(50) ? MEM_RELEASE : MEM_DECOMMIT;
        if (type == MEM_RELEASE)
            size = 0;
        a = foreign_addr(mi, (uintptr_t)&stack_var);
    }
    int ts;
    HRESULT want = expect_free(mi, a, size, type, &ts);
    set_op("mgr%d VirtualFree(%#lx, %#zx, %#x) [bad or foreign]", mi, (unsigned long)a, size,
           (unsigned)type);
    call_free(mi, a, size, type, want);
    if (want != S_OK)
        return;
    slot *s = &S[ts];
    if (type == MEM_RELEASE)
        model_release(s);
    else if (size == 0)
        model_decommit(s, s->base, slot_end(s));
    else
        model_decommit(s, pdown(a), range_end(a, size));
}

/* Commit, protect, reset of addresses outside this manager's reservations. */
static void op_foreign(int mi)
{
    int stack_var = 0;
    uintptr_t a = foreign_addr(mi, (uintptr_t)&stack_var);
    size_t size = chance(10) ? SIZE_MAX - pick(P) : 1 + pick(4 * P);
    DWORD prot = gen_prot();
    int ts;
    HRESULT want;
    unsigned r = u8() % 4;
    if (r < 3) {
        static const DWORD types[] = {MEM_COMMIT, MEM_RESET, MEM_RESET_UNDO};
        DWORD type = types[r];
        if (a == 0 && type == MEM_COMMIT)
            return; /* NULL would reserve */
        want = expect_in_reservation(mi, a, size, type, prot, eTaskCritical, &ts);
        if (want == S_OK || want == HOSTMEM_E_CONTENTS_LOST)
            return; /* landed in a reservation after all */
        set_op("mgr%d VirtualAlloc(%#lx [foreign], %#zx, %#x, %#x)", mi, (unsigned long)a, size,
               (unsigned)type, (unsigned)prot);
        call_alloc(mi, a, size, type, prot, eTaskCritical, want);
    } else {
        want = expect_protect(mi, a, size, prot, 0, &ts);
        if (want == S_OK)
            return;
        set_op("mgr%d VirtualProtect(%#lx [foreign], %#zx, %#x)", mi, (unsigned long)a, size,
               (unsigned)prot);
        DWORD old = 0;
        HRESULT hr = M[mi]->lpVtbl->VirtualProtect(M[mi], (void *)a, size, prot, &old);
        if (want == BLOCKED)
            code_refusals[mi]++;
        if (hr != want)
            FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    }
}

/* VirtualQuery's argument checks, and addresses outside user space (contract). */
static void op_query_args(int mi)
{
    int si = pick_slot(mi);
    uintptr_t a = si >= 0 ? S[si].base + pick(S[si].npages * P) : (uintptr_t)g_libc;
    MEMORY_BASIC_INFORMATION mbi[2];
    SIZE_T res = 12345;
    HRESULT hr, want;
    unsigned r = u8() % 5;
    if (r == 0) {
        size_t len = pick(sizeof mbi[0]);
        set_op("mgr%d VirtualQuery(%#lx, buf, %zu, &res)", mi, (unsigned long)a, len);
        want = ERR_BADLEN;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, len, &res);
    } else if (r == 1) {
        set_op("mgr%d VirtualQuery(%#lx, NULL, sizeof, &res)", mi, (unsigned long)a);
        want = E_POINTER;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, NULL, sizeof mbi[0], &res);
    } else if (r == 2) {
        set_op("mgr%d VirtualQuery(%#lx, buf, sizeof, NULL)", mi, (unsigned long)a);
        want = E_POINTER;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi[0], NULL);
    } else if (r == 3) {
        a = ((uintptr_t)1 << 47) + (uintptr_t)(u64() % (UINTPTR_MAX - ((uintptr_t)1 << 47)));
        set_op("mgr%d VirtualQuery(%#lx [beyond user space], buf, sizeof, &res)", mi,
               (unsigned long)a);
        want = E_INVALIDARG;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi[0], &res);
    } else {
        set_op("mgr%d VirtualQuery(%#lx, buf, 2 * sizeof, &res)", mi, (unsigned long)a);
        want = S_OK;
        hr = M[mi]->lpVtbl->VirtualQuery(M[mi], (void *)a, mbi, sizeof mbi, &res);
        if (hr == S_OK && res != sizeof mbi[0])
            FAIL("%s: *pResult %zu, expected %zu", g_op, (size_t)res, sizeof mbi[0]);
    }
    if (hr != want)
        FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
}

/* The budget of manager 1, and GetMemoryLoad against it (SPEC §7). */
static void op_budget(void)
{
    unsigned r = u8() % 4;
    if (r == 0) {
        limit1 = 0;
        set_op("hostmem_set_commit_limit(mgr1, HOSTMEM_UNLIMITED)");
        HRESULT hr = hostmem_set_commit_limit(M[1], HOSTMEM_UNLIMITED);
        if (hr != S_OK)
            FAIL("%s -> %s", g_op, hrn(hr));
        return;
    }
    if (r == 1) {
        size_t c = committed_of(1);
        size_t l = c + pick(48) * P;
        if (c > 8 * P && chance(30))
            l = c - pick(8) * P; /* below what is committed: nothing is taken back */
        if (!l)
            l = P;
        limit1 = l;
        set_op("hostmem_set_commit_limit(mgr1, %#zx)", l);
        HRESULT hr = hostmem_set_commit_limit(M[1], l);
        if (hr != S_OK)
            FAIL("%s -> %s", g_op, hrn(hr));
        return;
    }
    if (r == 3 && code_later1) {
        /* hostmem_restrict_dynamic_code (3: unknown): S_OK when at least as strict,
         * E_ACCESSDENIED when looser, E_INVALIDARG when unknown */
        uint32_t policy = u8() % 4;
        HRESULT want = policy > HOSTMEM_CODE_NONE ? E_INVALIDARG
                       : policy < code_policy[1] ? E_ACCESSDENIED
                                                 : S_OK;
        set_op("hostmem_restrict_dynamic_code(mgr1, %u) [policy %u]", (unsigned)policy,
               (unsigned)code_policy[1]);
        HRESULT hr = hostmem_restrict_dynamic_code(M[1], policy);
        if (hr != want)
            FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
        if (want == S_OK)
            code_policy[1] = policy;
        return;
    }
    DWORD load = 0xDEADBEEF;
    SIZE_T avail = 0xDEADBEEF;
    set_op("mgr1 GetMemoryLoad(&load, &available)");
    HRESULT hr = M[1]->lpVtbl->GetMemoryLoad(M[1], &load, &avail);
    if (hr != S_OK)
        FAIL("%s -> %s", g_op, hrn(hr));
    if (limit1) {
        size_t c = committed_of(1);
        DWORD want_load = c >= limit1 ? 100 : (DWORD)(c * 100 / limit1);
        size_t want_avail = c >= limit1 ? 0 : limit1 - c;
        if (load != want_load || avail != want_avail)
            FAIL("%s: load %u available %#zx; expected %u and %#zx (committed %#zx, limit %#zx; "
                 "SPEC §7)",
                 g_op, (unsigned)load, (size_t)avail, (unsigned)want_load, want_avail, c, limit1);
    } else if (load > 100) {
        FAIL("%s: load %u > 100", g_op, (unsigned)load);
    }
}

/* ---- the heap --------------------------------------------------------------------------------------------- */

static void check_new_block(uintptr_t p, size_t size)
{
    if (!p || p % 16)
        FAIL("%s: block %#lx is not 16-byte aligned (docs/heap.md)", g_op, (unsigned long)p);
    if (overlaps_block(p, p + (size ? size : 1)))
        FAIL("%s: block %#lx (%zu bytes) overlaps a live block", g_op, (unsigned long)p, size);
    for (int i = 0; i < NSLOTS; i++)
        if (S[i].live && p < slot_end(&S[i]) && S[i].base < p + (size ? size : 1))
            FAIL("%s: block %#lx lies in VirtualAlloc reservation %#lx", g_op, (unsigned long)p,
                 (unsigned long)S[i].base);
    MEMORY_BASIC_INFORMATION mbi;
    query(0, p, &mbi);
    if (mbi.State != MEM_COMMIT || mbi.Protect != heap_prot || mbi.Type != MEM_PRIVATE ||
        mbi.AllocationBase == NULL || (uintptr_t)mbi.BaseAddress != pdown(p))
        FAIL("%s: VirtualQuery(block %#lx): State %#x Protect %#x Type %#x AllocBase %p; expected "
             "committed private %#x pages of the manager (docs/heap.md)",
             g_op, (unsigned long)p, (unsigned)mbi.State, (unsigned)mbi.Protect,
             (unsigned)mbi.Type, mbi.AllocationBase, (unsigned)heap_prot);
}

static void forget_block(int bi)
{
    FB[fb_next] = B[bi].p;
    fb_next = (fb_next + 1) % NFREED_BLOCKS;
    if (nfb < NFREED_BLOCKS)
        nfb++;
    B[bi] = B[--nblocks];
}

static void heap_free_expect(uintptr_t p, const char *what)
{
    int bi = p ? block_at(p) : -1;
    HRESULT want = !p || bi >= 0 ? S_OK : HOST_E_INVALIDOPERATION;
    set_op("heap Free(%#lx) [%s]", (unsigned long)p, what);
    if (bi >= 0)
        check_block(&B[bi], 1);
    HRESULT hr = H->lpVtbl->Free(H, (void *)p);
    if (hr != want)
        FAIL("%s -> %s, expected %s (docs/heap.md)", g_op, hrn(hr), hrn(want));
    if (bi >= 0)
        forget_block(bi);
}

static void op_heap_alloc(void)
{
    if (nblocks >= NBLOCKS) {
        heap_free_expect(B[pick((size_t)nblocks)].p, "a live block");
        return;
    }
    size_t size;
    switch (u8() % 8) {
    case 0:
        size = 0;
        break;
    case 1:
    case 2:
    case 3:
        size = 1 + pick(256);
        break;
    case 4:
    case 5:
        size = 257 + pick(1800);
        break;
    case 6:
        size = 2048 + pick(16384 - 2048 + 1);
        break;
    default:
        size = 16385 + pick(160000);
        break;
    }
    EMemoryCriticalLevel level = gen_level();
    int debug = chance(30);
    void *p = (void *)(uintptr_t)1;
    set_op("heap %s(%zu, level %d)", debug ? "DebugAlloc" : "Alloc", size, (int)level);
    HRESULT hr = debug ? H->lpVtbl->DebugAlloc(H, size, level, (char *)__FILE__, __LINE__, &p)
                       : H->lpVtbl->Alloc(H, size, level, &p);
    if (hr != S_OK)
        FAIL("%s -> %s, expected S_OK (no budget on manager 0)", g_op, hrn(hr));
    uintptr_t b = (uintptr_t)p;
    snprintf(g_op + strlen(g_op), sizeof g_op - strlen(g_op), " = %#lx", (unsigned long)b);
    snprintf(g_log[(g_logn - 1) % NLOG], sizeof g_log[0], "[%ld] %s", g_step, g_op);
    check_new_block(b, size);
    uint8_t tag = (uint8_t)u8();
    uint8_t *w = (uint8_t *)b;
    for (size_t i = 0; i < size; i++)
        w[i] = block_byte(tag, i);
    B[nblocks++] = (block){b, size, tag};
}

static void op_heap_free(void)
{
    int stack_var = 0;
    unsigned r = u8() % 100;
    if (nblocks && r < 55) {
        heap_free_expect(B[pick((size_t)nblocks)].p, "a live block");
    } else if (nblocks && r < 65) {
        const block *b = &B[pick((size_t)nblocks)];
        if (b->size < 2)
            return;
        heap_free_expect(b->p + 1 + pick(b->size - 1), "interior");
    } else if (nfb && r < 78) {
        heap_free_expect(FB[pick((size_t)nfb)], "freed earlier");
    } else if (r < 82) {
        heap_free_expect(0, "NULL");
    } else {
        uintptr_t a = foreign_addr(0, (uintptr_t)&stack_var);
        if (a && block_at(a) >= 0)
            return;
        heap_free_expect(a, "foreign");
    }
}

/* The heap's bad calls, and the manager's calls on heap memory. */
static void op_heap_bad(void)
{
    unsigned r = u8() % 7;
    void *p = (void *)(uintptr_t)1;
    HRESULT hr, want;
    if (r == 0) {
        size_t size = chance(50) ? SIZE_MAX - pick(2 * P) : ((size_t)1 << 47) + pick(1 << 20);
        set_op("heap Alloc(%#zx) [huge]", size);
        want = E_OUTOFMEMORY;
        hr = H->lpVtbl->Alloc(H, size, eTaskCritical, &p);
    } else if (r == 1) {
        EMemoryCriticalLevel level = (EMemoryCriticalLevel)(3 + pick(1000));
        set_op("heap Alloc(16, level %d) [bad level]", (int)level);
        want = E_INVALIDARG;
        hr = H->lpVtbl->Alloc(H, 16, level, &p);
    } else if (r == 2) {
        set_op("heap DebugAlloc(16, NULL file, NULL out)");
        want = E_POINTER;
        hr = H->lpVtbl->DebugAlloc(H, 16, eTaskCritical, NULL, 0, NULL);
        p = NULL;
    } else if (nblocks) {
        const block *b = &B[pick((size_t)nblocks)];
        uintptr_t a = b->p + (chance(50) ? 0 : pick(b->size + 1));
        int mi = (int)pick(2);
        if (r == 3) {
            DWORD type = chance(50) ? MEM_RELEASE : MEM_DECOMMIT;
            size_t size = type == MEM_RELEASE ? 0 : (chance(50) ? 0 : 1 + pick(P));
            set_op("mgr%d VirtualFree(%#lx [heap block], %#zx, %#x)", mi, (unsigned long)a, size,
                   (unsigned)type);
            call_free(mi, a, size, type, HOST_E_INVALIDOPERATION);
        } else if (r == 4) {
            DWORD old;
            set_op("mgr%d VirtualProtect(%#lx [heap block], 1, PAGE_NOACCESS)", mi, (unsigned long)a);
            hr = M[mi]->lpVtbl->VirtualProtect(M[mi], (void *)a, 1, PAGE_NOACCESS, &old);
            if (hr != ERR_ADDR)
                FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(ERR_ADDR));
        } else {
            DWORD type = r == 5 ? MEM_COMMIT : MEM_RESET;
            set_op("mgr%d VirtualAlloc(%#lx [heap block], 1, %#x, PAGE_READONLY)", mi,
                   (unsigned long)a, (unsigned)type);
            call_alloc(mi, a, 1, type, PAGE_READONLY, eTaskCritical, ERR_ADDR);
        }
        return;
    } else {
        return;
    }
    if (hr != want)
        FAIL("%s -> %s, expected %s (docs/heap.md)", g_op, hrn(hr), hrn(want));
    if (p != NULL)
        FAIL("%s -> %s with *ppMem %p, expected NULL", g_op, hrn(hr), p);
}

/* ---- one input ------------------------------------------------------------------------------------------------ */

/* The operations of inputs with the second configuration byte: a manager byte
 * with its top bit set names one itself (bits 1-6), so that a run of bytes from
 * one sub-range favours one operation (tests/make_fuzz_corpus.py's themes):
 *   0x80-0x8d reserve with MEM_WRITE_WATCH   0xc6-0xcd commit with PAGE_GUARD
 *   0x8e-0xa3 hostmem_get_write_watch        0xce-0xdf write a watched page
 *   0xa4-0xad hostmem_reset_write_watch      0xe0-0xe9 VirtualProtect (captures)
 *   0xae-0xbb touch a guard page             0xea-0xf3 decommit (forgets)
 *   0xbc-0xc5 VirtualProtect with PAGE_GUARD 0xf4-0xff commit */
static void step_extended(unsigned manager_byte)
{
    int mi = (int)(manager_byte & 1);
    unsigned op = (manager_byte >> 1) & 0x3F;
    if (op < 7)
        op_reserve_watch(mi);
    else if (op < 18)
        op_get_watch(mi);
    else if (op < 23)
        op_reset_watch(mi);
    else if (op < 30)
        op_touch_guard();
    else if (op < 35)
        op_protect_as(mi, 1);
    else if (op < 39)
        op_commit_as(mi, 1);
    else if (op < 48)
        write_some_page(1);
    else if (op < 53)
        op_protect(mi);
    else if (op < 58)
        op_decommit(mi);
    else
        op_commit(mi);
}

static void step(void)
{
    unsigned manager_byte = u8();
    int mi = (int)(manager_byte & 1);
    if (extended && (manager_byte & 0x80)) {
        step_extended(manager_byte);
        return;
    }
    unsigned r = u8();
    if (r < 24)
        op_reserve(mi);
    else if (r < 36)
        op_reserve_at(mi);
    else if (r < 72)
        op_commit(mi);
    else if (r < 90)
        op_decommit(mi);
    else if (r < 104)
        op_release(mi);
    else if (r < 130)
        op_protect(mi);
    else if (r < 142)
        op_reset(mi);
    else if (r < 166)
        op_write();
    else if (r < 176)
        op_bad_alloc(mi);
    else if (r < 186)
        op_bad_free(mi);
    else if (r < 194)
        op_foreign(mi);
    else if (r < 197)
        op_huge_reserve(mi);
    else if (r < 203)
        op_query_args(mi);
    else if (r < 210)
        op_budget();
    else if (r < 232)
        op_heap_alloc();
    else if (r < 248)
        op_heap_free();
    else
        op_heap_bad();
}

static void setup(unsigned config, unsigned config2)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    if (!g_libc) {
        g_libc = malloc(256);
        if (!g_libc)
            abort();
    }
    memset(S, 0, sizeof S);
    nfreed = freed_next = nblocks = nfb = fb_next = 0;
    limit1 = 0;
    g_segments = 0;
    g_logn = 0;
    g_step = -1;
    unsigned code[NM] = {(config >> 6) & 3, (config >> 4) & 3};
    code_later1 = code[1] == CODE_LATER;
    ww_kernel = strcmp(hostmem_write_watch_mode(), "kernel") == 0;
    for (int i = 0; i < NM; i++) {
        hostmem_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.size = sizeof cfg;
        cfg.flags = (config >> i & 1) ? HOSTMEM_COMPACT : 0;
        guard_on[i] = (config2 & (i ? EXT_GUARD1 : EXT_GUARD0)) != 0;
        emulate_ww[i] = (config2 & (i ? EXT_EMULATE1 : EXT_EMULATE0)) != 0;
        cfg.flags |= (guard_on[i] ? HOSTMEM_GUARD_PAGES : 0) |
                     (emulate_ww[i] ? HOSTMEM_EMULATE_WRITE_WATCH : 0);
        ww_gets[i] = ww_resets[i] = ww_pages[i] = 0;
        guard_fired[i] = 0;
        memset(&g_seen[i], 0, sizeof g_seen[i]);
        cfg.commit_limit = HOSTMEM_UNLIMITED; /* not the cgroup's: the model sets the budget */
        cfg.arena_size = (size_t)64 << 20;    /* keeps hostmem_validate cheap */
        cfg.dynamic_code = code[i] == CODE_LATER ? HOSTMEM_CODE_ANY : code[i];
        code_policy[i] = cfg.dynamic_code;
        code_refusals[i] = 0;
        M[i] = NULL;
        set_op("hostmem_create(manager %d, flags %#x, dynamic_code %u)", i, (unsigned)cfg.flags,
               (unsigned)cfg.dynamic_code);
        HRESULT hr = hostmem_create(&cfg, &M[i]);
        if (hr != S_OK)
            FAIL("%s -> %s", g_op, hrn(hr));
        if (!extended)
            continue;
        /* docs/guard.md: a handler only for a manager with guard pages */
        HRESULT want = guard_on[i] ? S_OK : E_INVALIDARG;
        set_op("hostmem_set_guard_handler(manager %d, on_guard) [guard pages %s]", i,
               guard_on[i] ? "on" : "off");
        hr = hostmem_set_guard_handler(M[i], on_guard, &g_seen[i]);
        if (hr != want)
            FAIL("%s -> %s, expected %s", g_op, hrn(hr), hrn(want));
    }
    if (code[0] == CODE_LATER) {
        set_op("hostmem_restrict_dynamic_code(mgr0, HOSTMEM_CODE_WX)");
        HRESULT hr = hostmem_restrict_dynamic_code(M[0], HOSTMEM_CODE_WX);
        if (hr != S_OK)
            FAIL("%s -> %s", g_op, hrn(hr));
        code_policy[0] = HOSTMEM_CODE_WX;
    }
    heap_type = (config >> 2) & 3;
    H = NULL;
    if ((heap_type & MALLOC_EXECUTABLE) && code_policy[0] != HOSTMEM_CODE_ANY) {
        /* an executable heap is writable and executable: refused, counted */
        set_op("mgr0 CreateMalloc(%#x) [policy %u]", (unsigned)heap_type, (unsigned)code_policy[0]);
        HRESULT hr = M[0]->lpVtbl->CreateMalloc(M[0], heap_type, &H);
        code_refusals[0]++;
        if (hr != BLOCKED || H != NULL)
            FAIL("%s -> %s, heap %p; expected %s and NULL (issue 23)", g_op, hrn(hr), (void *)H,
                 hrn(BLOCKED));
        heap_type &= ~(DWORD)MALLOC_EXECUTABLE;
    }
    heap_prot = (heap_type & MALLOC_EXECUTABLE) ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE;
    set_op("mgr0 CreateMalloc(%#x)", (unsigned)heap_type);
    HRESULT hr = M[0]->lpVtbl->CreateMalloc(M[0], heap_type, &H);
    if (hr != S_OK || !H)
        FAIL("%s -> %s", g_op, hrn(hr));
}

static void teardown(void)
{
    g_step = -1;
    while (nblocks)
        heap_free_expect(B[nblocks - 1].p, "cleanup");
    size_t live = 0;
    set_op("hostmem_heap_report(heap)");
    HRESULT hr = hostmem_heap_report(H, NULL, &live);
    if (hr != S_OK || live != 0)
        FAIL("%s -> %s, %zu live blocks; expected S_OK, 0", g_op, hrn(hr), live);
    set_op("heap Release");
    ULONG left = H->lpVtbl->Release(H);
    H = NULL;
    if (left != 0)
        FAIL("%s -> %u, expected 0", g_op, (unsigned)left);
    for (int i = 0; i < NSLOTS; i++) {
        if (!S[i].live)
            continue;
        set_op("cleanup: mgr%d VirtualFree(%#lx, 0, MEM_RELEASE)", S[i].owner,
               (unsigned long)S[i].base);
        call_free(S[i].owner, S[i].base, 0, MEM_RELEASE, S_OK);
        S[i].live = 0;
    }
    for (int mi = 0; mi < NM; mi++) {
        hostmem_stats st;
        memset(&st, 0, sizeof st);
        st.size = sizeof st;
        hr = hostmem_get_stats(M[mi], &st);
        if (hr != S_OK || st.reservations || st.committed_bytes || st.reserved_bytes || st.heap_bytes)
            FAIL("hostmem_get_stats(manager %d) at the end -> %s: reservations %zu committed %#zx "
                 "reserved %#zx heap %#zx; expected all zero",
                 mi, hrn(hr), st.reservations, st.committed_bytes, st.reserved_bytes,
                 st.heap_bytes);
        char why[512] = "";
        hr = hostmem_validate(M[mi], HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
        if (hr != S_OK)
            FAIL("hostmem_validate(manager %d, KERNEL) at the end -> %s: %s", mi, hrn(hr), why);
    }
    for (int mi = 0; mi < NM; mi++) {
        set_op("mgr%d Release", mi);
        left = M[mi]->lpVtbl->Release(M[mi]);
        M[mi] = NULL;
        if (left != 0)
            FAIL("%s -> %u, expected 0", g_op, (unsigned)left);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    in_data = data;
    in_size = size;
    in_pos = 0;
    unsigned config = u8(), config2 = 0;
    extended = size >= 4 && data[1] == EXT_MARKER0 && data[2] == EXT_MARKER1;
    if (extended) {
        in_pos = 3;
        config2 = u8();
    }
    memset(g_cov, 0, sizeof g_cov);
    g_trace = getenv("FUZZ_MODEL_TRACE") != NULL;
    setup(config, config2);
    for (g_step = 0; g_step < MAX_STEPS && in_pos < in_size; g_step++) {
        step();
        verify_all();
    }
    teardown();
    if (getenv("FUZZ_MODEL_COVERAGE")) {
        fprintf(stderr, "fuzz_model coverage:");
        for (int i = 0; i < COV_N; i++)
            fprintf(stderr, " %s=%lu", cov_names[i], g_cov[i]);
        fputc('\n', stderr);
    }
    return 0;
}
