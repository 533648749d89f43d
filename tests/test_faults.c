/*
 * test_faults.c - SPEC §2: result codes when the OS or the host's locks fail.
 *
 * OS faults: every system call goes through the seam in src/os.h. For each
 * operation, fail its 1st, 2nd, 3rd... call (transiently: that call only;
 * persistently: that call and every later one) until a run sees no fault.
 * After each run the result must be S_OK, E_OUTOFMEMORY with nothing changed
 * (region map, page contents, counters, and the kernel's own view), or -
 * only where an undo itself failed - E_FAIL followed by the disabled state.
 *
 * Lock faults: a host lock that reports HOST_E_TIMEOUT, HOST_E_ABANDONED,
 * HOST_E_NOT_OWNER or E_FAIL, and the default POSIX lock's own mapping of
 * ETIMEDOUT, EOWNERDEAD and EPERM.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "internal.h" /* to put a manager's books wrong on purpose (validate_of_the_books_...) */
#include "test.h"

extern const hostmem_lock_ops lock_posix_ops;

/* ---- the faulty seam ----------------------------------------------------------- */
static volatile int fault_at; /* fail the fault_at-th call (1-based); 0 = never; read in signal handlers */
static int fault_persistent; /* and every call after it */
static int fault_calls;      /* calls seen since armed */
static int fault_fired;
static int fault_first_was_discard; /* madvise(DONTNEED) cannot be undone */
static int discarded_before_fault;  /* ... nor can what follows one */
static int in_discard;

static const char *current_call = "?";

static int should_fail(void)
{
    if (!fault_at)
        return 0;
    fault_calls++;
    if (getenv("FAULT_TRACE"))
        fprintf(stderr, "    call %d: %s%s\n", fault_calls, current_call,
                fault_calls == fault_at || (fault_persistent && fault_calls > fault_at) ? " (fails)" : "");
    if (fault_calls == fault_at || (fault_persistent && fault_calls > fault_at)) {
        if (!fault_fired)
            fault_first_was_discard = in_discard;
        fault_fired++;
        return 1;
    }
    return 0;
}

/* Address space mapped minus unmapped through the seam: what hostmem holds. */
static _Atomic long long net_mapped;
extern _Atomic size_t radix_leaf_bytes;
extern _Atomic size_t pool_bytes;

static int f_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    current_call = "map";
    if (should_fail())
        return ENOMEM;
    int err = hostmem_os_linux.map(hint, size, prot, fixed, out);
    if (!err)
        atomic_fetch_add(&net_mapped, (long long)size);
    return err;
}
/* Address space the kernel (the faulty seam) refused to take back: kept by
 * the refusal, not leaked by hostmem. */
static _Atomic long long refused_unmap;
static int f_unmap(void *a, size_t s)
{
    current_call = "unmap";
    if (should_fail()) {
        atomic_fetch_add(&refused_unmap, (long long)s);
        return ENOMEM;
    }
    int err = hostmem_os_linux.unmap(a, s);
    if (!err)
        atomic_fetch_sub(&net_mapped, (long long)s);
    return err;
}
/* The kernel at vm.max_map_count: an mprotect that would split a mapping - one
 * whose range begins or ends inside a mapping of another protection - is
 * refused; one that changes whole mappings, or nothing, goes on. */
static int at_ceiling;
struct splits {
    uintptr_t start, end;
    int prot, split;
};
static int splits_step(void *context, const struct os_mapping *m)
{
    struct splits *c = context;
    if (m->prot != c->prot && ((m->start < c->start && c->start < m->end) || (m->start < c->end && c->end < m->end)))
        c->split = 1;
    return m->start >= c->end;
}
static int f_protect(void *a, size_t s, int p)
{
    current_call = "protect";
    if (at_ceiling) {
        struct splits c = {(uintptr_t)a, (uintptr_t)a + s, p, 0};
        hostmem_os_linux.walk_mappings(splits_step, &c);
        return c.split ? ENOMEM : hostmem_os_linux.protect(a, s, p);
    }
    return should_fail() ? ENOMEM : hostmem_os_linux.protect(a, s, p);
}
static int f_discard(void *a, size_t s)
{
    current_call = "discard";
    in_discard = 1;
    int fail = should_fail();
    in_discard = 0;
    if (!fail && !fault_fired)
        discarded_before_fault = 1;
    return fail ? EINVAL : hostmem_os_linux.discard(a, s);
}
static int f_reset(void *a, size_t s)
{
    return should_fail() ? EINVAL : hostmem_os_linux.reset(a, s);
}
static int f_walk(os_mapping_fn fn, void *c)
{
    return should_fail() ? EIO : hostmem_os_linux.walk_mappings(fn, c);
}
static int f_read(const char *path, char *b, size_t n, size_t *len)
{
    return should_fail() ? EIO : hostmem_os_linux.read_file(path, b, n, len);
}
static const struct hostmem_os_ops faulty = {
    .map = f_map,
    .unmap = f_unmap,
    .protect = f_protect,
    .discard = f_discard,
    .reset = f_reset,
    .walk_mappings = f_walk,
    .read_file = f_read,
};

static void arm(int at, int persistent)
{
    fault_at = at;
    fault_persistent = persistent;
    fault_calls = 0;
    fault_fired = 0;
    fault_first_was_discard = 0;
    discarded_before_fault = 0;
}

/* ---- snapshots: everything a failed call must leave as it was -------------------- */
#define E_UNEXPECTED_FREE ((HRESULT)0x8000FFFFL)
#define E_LOST_CONTENTS ((HRESULT)0x8000FFFEL)
#define SNAP_PAGES 48
struct snapshot {
    MEMORY_BASIC_INFORMATION info[SNAP_PAGES];
    unsigned char first_byte[SNAP_PAGES];
    hostmem_stats stats;
};

static size_t P;

static void snap(IHostMemoryManager *m, char *base, struct snapshot *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < SNAP_PAGES; i++) {
        SIZE_T n;
        m->lpVtbl->VirtualQuery(m, base + i * P, &s->info[i], sizeof s->info[i], &n);
        DWORD p = s->info[i].Protect;
        if (s->info[i].State == MEM_COMMIT && (p == PAGE_READWRITE || p == PAGE_READONLY))
            s->first_byte[i] = *(volatile unsigned char *)(base + i * P);
    }
    s->stats.size = sizeof s->stats;
    hostmem_get_stats(m, &s->stats);
}

static int snap_equal(const struct snapshot *a, const struct snapshot *b)
{
    return memcmp(a->info, b->info, sizeof a->info) == 0 &&
           memcmp(a->first_byte, b->first_byte, sizeof a->first_byte) == 0 &&
           a->stats.reserved_bytes == b->stats.reserved_bytes &&
           a->stats.committed_bytes == b->stats.committed_bytes &&
           a->stats.reservations == b->stats.reservations;
}

/* ---- the operations swept ----------------------------------------------------------- */
struct fixture {
    IHostMemoryManager *m;
    char *base; /* a reservation: page 0-3 committed RW with data, 4-7 READONLY, rest reserved */
};

typedef HRESULT (*operation)(struct fixture *f);

static HRESULT op_reserve(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, NULL, 20 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
}
static HRESULT op_reserve_commit(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, NULL, 20 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY,
                                      eTaskCritical, &p);
}
static HRESULT op_reserve_big(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, NULL, 1u << 29, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
}
static HRESULT op_commit_mixed(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, f->base + 2 * P, 10 * P, MEM_COMMIT, PAGE_EXECUTE_READ,
                                      eTaskCritical, &p);
}
static HRESULT op_commit_rw(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, f->base + 10 * P, 3 * P, MEM_COMMIT, PAGE_READWRITE,
                                      eTaskCritical, &p);
}
static HRESULT op_decommit(struct fixture *f)
{
    return f->m->lpVtbl->VirtualFree(f->m, f->base + 1 * P, 5 * P, MEM_DECOMMIT);
}
static HRESULT op_decommit_run(struct fixture *f)
{
    /* a whole run of equal protection: the discard may come first */
    return f->m->lpVtbl->VirtualFree(f->m, f->base + 4 * P, 4 * P, MEM_DECOMMIT);
}
static HRESULT op_release(struct fixture *f)
{
    return f->m->lpVtbl->VirtualFree(f->m, f->base, 0, MEM_RELEASE);
}
static HRESULT op_protect(struct fixture *f)
{
    DWORD old;
    return f->m->lpVtbl->VirtualProtect(f->m, f->base + 1 * P, 6 * P, PAGE_NOACCESS, &old);
}
static HRESULT op_reset(struct fixture *f)
{
    void *p;
    return f->m->lpVtbl->VirtualAlloc(f->m, f->base, 8 * P, MEM_RESET, PAGE_READWRITE, eTaskCritical, &p);
}
static HRESULT op_query_foreign(struct fixture *f)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    int local = 0;
    return f->m->lpVtbl->VirtualQuery(f->m, &local, &info, sizeof info, &n);
}

static HRESULT op_heap(struct fixture *f)
{
    IHostMalloc *h;
    HRESULT hr = f->m->lpVtbl->CreateMalloc(f->m, MALLOC_THREADSAFE, &h);
    if (hr != S_OK)
        return hr;
    void *small[40], *big = NULL;
    int n = 0;
    for (; n < 40; n++) {
        hr = h->lpVtbl->Alloc(h, 3000, eTaskCritical, &small[n]);
        if (hr != S_OK)
            break;
        memset(small[n], n, 3000);
    }
    if (hr == S_OK)
        hr = h->lpVtbl->Alloc(h, 200000, eTaskCritical, &big);
    for (int i = 0; i < n; i++) {
        const unsigned char *b = small[i];
        if (b[0] != (unsigned char)i || b[2999] != (unsigned char)i)
            hr = E_LOST_CONTENTS;
        HRESULT freed = h->lpVtbl->Free(h, small[i]);
        if (freed == E_FAIL || freed == HOST_E_CLRNOTAVAILABLE) {
            if (hr == S_OK)
                hr = E_FAIL; /* the manager gave up (checked below) */
        } else if (freed != S_OK && hr == S_OK) {
            if (getenv("FAULT_TRACE"))
                fprintf(stderr, "    Free(block %d) -> 0x%08X\n", i, (unsigned)freed);
            hr = E_UNEXPECTED_FREE;
        }
    }
    if (big) {
        HRESULT freed = h->lpVtbl->Free(h, big);
        if (freed == E_OUTOFMEMORY) {
            /* refused by the kernel, nothing changed: the block is still live */
            int at = fault_at;
            fault_at = 0;
            freed = h->lpVtbl->Free(h, big);
            fault_at = at;
            if (hr == S_OK)
                hr = E_OUTOFMEMORY;
        }
        if (freed != S_OK && freed != E_FAIL && freed != HOST_E_CLRNOTAVAILABLE && hr == S_OK)
            hr = E_UNEXPECTED_FREE;
    }
    h->lpVtbl->Release(h);
    return hr;
}
/* Emulated write watch (in the sweep made with HOSTMEM_EMULATE_WRITE_WATCH): a
 * watched reservation, writes (their handler's calls not swept: a refused one
 * would make the write itself fail), a scan with reset, a protection change, a
 * reset, a release. */
static uint32_t sweep_flags;
static HRESULT op_watch(struct fixture *f)
{
    if (!(sweep_flags & HOSTMEM_EMULATE_WRITE_WATCH))
        return S_OK;
    void *p;
    HRESULT hr = f->m->lpVtbl->VirtualAlloc(f->m, NULL, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                                            PAGE_READWRITE, eTaskCritical, &p);
    if (hr != S_OK)
        return hr;
    char *b = p;
    int at = fault_at;
    fault_at = 0;
    volatile char *v = b; /* in order with fault_at's stores: the handler reads it */
    v[P] = v[5 * P] = v[6 * P] = 1;
    fault_at = at;
    void *a[16];
    uintptr_t n = 16;
    ULONG g;
    hr = hostmem_get_write_watch(f->m, WRITE_WATCH_FLAG_RESET, b, 16 * P, a, &n, &g);
    if (hr == S_OK && n != 3)
        hr = E_LOST_CONTENTS;
    DWORD old;
    if (hr == S_OK)
        hr = f->m->lpVtbl->VirtualProtect(f->m, b, 4 * P, PAGE_READONLY, &old);
    if (hr == S_OK)
        hr = hostmem_reset_write_watch(f->m, b, 16 * P);
    fault_at = 0;
    HRESULT freed = f->m->lpVtbl->VirtualFree(f->m, b, 0, MEM_RELEASE);
    fault_at = at;
    if (freed != S_OK && freed != HOST_E_CLRNOTAVAILABLE && hr == S_OK)
        hr = E_UNEXPECTED_FREE;
    return hr;
}
static HRESULT op_load(struct fixture *f)
{
    DWORD load;
    SIZE_T available;
    return f->m->lpVtbl->GetMemoryLoad(f->m, &load, &available);
}
static HRESULT op_needs(struct fixture *f)
{
    void *p;
    HRESULT hr = f->m->lpVtbl->VirtualAlloc(f->m, NULL, 1u << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p);
    if (hr == S_OK)
        hr = f->m->lpVtbl->VirtualFree(f->m, p, 0, MEM_RELEASE);
    if (hr != S_OK)
        return hr;
    return f->m->lpVtbl->NeedsVirtualAddressSpace(f->m, NULL, 1u << 20);
}
static HRESULT op_create(struct fixture *f)
{
    (void)f;
    IHostMemoryManager *other;
    hostmem_config c = {sizeof c}; /* no monitor thread: it would race the fault counter */
    HRESULT hr = hostmem_create(&c, &other);
    /* the operation is the creation; its tear-down runs with faults paused */
    int at = fault_at;
    fault_at = 0;
    if (hr == S_OK)
        other->lpVtbl->Release(other);
    fault_at = at;
    return hr;
}

static const struct {
    const char *name;
    operation run;
    int changes; /* does a success change the fixture's reservation? */
} operations[] = {
    {"heap", op_heap, 0},               {"memory_load", op_load, 0},
    {"needs_space", op_needs, 0},       {"create", op_create, 0},
    {"reserve", op_reserve, 0},         {"reserve_commit", op_reserve_commit, 0},
    {"reserve_big", op_reserve_big, 0}, {"commit_mixed", op_commit_mixed, 1},
    {"commit_rw", op_commit_rw, 1},     {"decommit", op_decommit, 1},
    {"decommit_run", op_decommit_run, 1},
    {"release", op_release, 1},         {"protect", op_protect, 1},
    {"reset", op_reset, 1},             {"query_foreign", op_query_foreign, 0},
    {"watch", op_watch, 0},
};

static int fixture_make(struct fixture *f, uint32_t flags)
{
    hostmem_config c = {sizeof c};
    c.flags = flags;
    if (hostmem_create(&c, &f->m) != S_OK)
        return 0;
    void *p;
    if (f->m->lpVtbl->VirtualAlloc(f->m, NULL, SNAP_PAGES * P, MEM_RESERVE, PAGE_READWRITE,
                                   eTaskCritical, &p) != S_OK)
        return 0;
    f->base = p;
    if (f->m->lpVtbl->VirtualAlloc(f->m, f->base, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) != S_OK)
        return 0;
    for (int i = 0; i < 8; i++)
        f->base[i * P] = (char)(0x41 + i);
    DWORD old;
    if (f->m->lpVtbl->VirtualProtect(f->m, f->base + 4 * P, 4 * P, PAGE_READONLY, &old) != S_OK)
        return 0;
    return 1;
}

static long faults_injected;
static long sweep_runs;

static void sweep(uint32_t flags)
{
    sweep_flags = flags;
    const char *only = getenv("FAULT_ONLY"); /* for debugging one operation */
    int only_at = getenv("FAULT_AT") ? atoi(getenv("FAULT_AT")) : 0;
    for (size_t o = 0; o < sizeof operations / sizeof operations[0]; o++) {
        if (only && strcmp(only, operations[o].name))
            continue;
        for (int persistent = 0; persistent < 2; persistent++) {
            for (int at = only_at ? only_at : 1; at < 64; at++) {
                struct fixture f;
                long long net_before = atomic_load(&net_mapped);
                long long refused_before = atomic_load(&refused_unmap);
                size_t leaves_before = atomic_load(&radix_leaf_bytes) + atomic_load(&pool_bytes);
                hostmem_os = &faulty;
                if (!fixture_make(&f, flags)) {
                    TEST_FAIL_AT("fixture");
                    return;
                }
                struct snapshot before, after;
                snap(f.m, f.base, &before);
                arm(at, persistent);
                HRESULT hr = operations[o].run(&f);
                int fired = fault_fired, discard = fault_first_was_discard || discarded_before_fault;
                arm(0, 0);
                sweep_runs++;
                faults_injected += fired;
                /* SPEC §7, hresult.c: every refused system call is counted in
                 * os_refusals, and nothing else is (but for creation's, which
                 * belong to the manager that was never made) */
                size_t counted = stats_of(f.m).os_refusals - before.stats.os_refusals;
                if (operations[o].run != op_create && counted != (size_t)fired)
                    TEST_FAIL_AT("%s: fault at call %d (%s): %d calls refused, os_refusals counts %zu",
                                 operations[o].name, at, persistent ? "persistent" : "transient", fired,
                                 counted);
                char why[256];
                /* a manager that gave up says so on every later call */
                MEMORY_BASIC_INFORMATION probe;
                SIZE_T probe_n;
                bool disabled = f.m->lpVtbl->VirtualQuery(f.m, f.base, &probe, sizeof probe, &probe_n) ==
                                HOST_E_CLRNOTAVAILABLE;
                if (disabled && hr != E_FAIL && hr != HOST_E_CLRNOTAVAILABLE)
                    hr = E_FAIL; /* found out through a call that cannot return E_FAIL (Release) */
                if (hr == HOST_E_CLRNOTAVAILABLE)
                    hr = E_FAIL;
                if (hr == E_UNEXPECTED_FREE) {
                    TEST_FAIL_AT("%s: a block the heap handed out was refused by Free", operations[o].name);
                } else if (hr == E_LOST_CONTENTS) {
                    TEST_FAIL_AT("%s: a heap block lost its contents (fault at call %d)", operations[o].name, at);
                } else if (hr == E_FAIL) {
                    /* Only when the change cannot be undone: a failed discard (part of
                     * the range may be gone), or an undo that failed too. */
                    if (!persistent && !discard)
                        TEST_FAIL_AT("%s: E_FAIL on a transient fault at call %d", operations[o].name, at);
                    void *p;
                    CHECK_HR(f.m->lpVtbl->VirtualAlloc(f.m, NULL, P, MEM_RESERVE, PAGE_READWRITE,
                                                       eTaskCritical, &p),
                             HOST_E_CLRNOTAVAILABLE);
                    CHECK_HR(f.m->lpVtbl->VirtualFree(f.m, f.base, 0, MEM_RELEASE), HOST_E_CLRNOTAVAILABLE);
                } else if (hr != S_OK) {
                    if (hr != E_OUTOFMEMORY)
                        TEST_FAIL_AT("%s: fault at call %d (%s) -> 0x%08X", operations[o].name, at,
                                     persistent ? "persistent" : "transient", (unsigned)hr);
                    snap(f.m, f.base, &after);
                    if (!snap_equal(&before, &after))
                        TEST_FAIL_AT("%s: fault at call %d (%s) changed the state", operations[o].name,
                                     at, persistent ? "persistent" : "transient");
                    if (hostmem_validate(f.m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why) != S_OK)
                        TEST_FAIL_AT("%s: fault at call %d: validate: %s", operations[o].name, at, why);
                } else {
                    if (hostmem_validate(f.m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why) != S_OK)
                        TEST_FAIL_AT("%s: success after fault %d: validate: %s", operations[o].name, at, why);
                    /* untouched committed pages kept their data */
                    if (!operations[o].changes || operations[o].run == op_commit_rw) {
                        for (int i = 0; i < 8; i++)
                            if (f.base[i * P] != (char)(0x41 + i))
                                TEST_FAIL_AT("%s: page %d lost its contents", operations[o].name, i);
                    }
                }
                f.m->lpVtbl->Release(f.m);
                hostmem_os = &hostmem_os_linux;
                /* nothing leaked: every byte mapped is unmapped, but for new leaves of
                 * the address map and new pool chunks, which are kept for the process,
                 * and what an injected unmap refusal kept */
                long long held = atomic_load(&net_mapped) - net_before -
                                 (atomic_load(&refused_unmap) - refused_before);
                long long leaves = (long long)(atomic_load(&radix_leaf_bytes) + atomic_load(&pool_bytes) -
                                               leaves_before);
                if (held != leaves)
                    TEST_FAIL_AT("%s: fault at call %d (%s): %lld bytes of address space leaked",
                                 operations[o].name, at, persistent ? "persistent" : "transient", held - leaves);
                if (!fired)
                    break; /* the operation made fewer calls than at: sweep done */
            }
        }
    }
}

TEST(os_fault_sweep_strict_every_call_transient_and_persistent)
{
    sweep(0);
}

TEST(os_fault_sweep_compact_every_call_transient_and_persistent)
{
    sweep(HOSTMEM_COMPACT);
}

TEST(os_fault_sweep_emulated_write_watch_every_call_transient_and_persistent)
{
    sweep(HOSTMEM_EMULATE_WRITE_WATCH);
}

/* hostmem.h, issue 13: hostmem_validate answers S_OK, or E_FAIL with a
 * description - also when the kernel refuses what the check itself needs. */
TEST(validate_says_why_when_it_cannot_check)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    void *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    for (int at = 1; at <= 3; at++) {
        char why[200] = "unchanged";
        hostmem_os = &faulty;
        arm(at, 1);
        HRESULT hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
        int fired = fault_fired;
        arm(0, 0);
        hostmem_os = &hostmem_os_linux;
        if (!fired)
            break;
        CHECK_HR(hr, E_FAIL);
        CHECK(why[0] != 0 && strcmp(why, "unchanged") != 0);
    }
    char why[200];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* A seam that refuses every new mapping (vm.max_map_count, RLIMIT_AS used up). */
static _Atomic int maps_asked;
static int refuse_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    (void)hint, (void)size, (void)prot, (void)fixed, (void)out;
    atomic_fetch_add(&maps_asked, 1);
    return ENOMEM;
}

static int validate_finds(IHostMemoryManager *m, const char *expected)
{
    char why[200] = "";
    HRESULT hr = hostmem_validate(m, 0, why, sizeof why);
    if (hr != E_FAIL || !strstr(why, expected)) {
        fprintf(stderr, "    validate -> %#x \"%s\", expected E_FAIL \"%s...\"\n", (unsigned)hr, why, expected);
        return 0;
    }
    return 1;
}

/* SPEC §4 rule 7: validate of the books is a give-back path: with every new
 * mapping refused it answers S_OK without asking for one, and still finds a
 * counter that is wrong, two arenas that overlap and an arena counted twice
 * (its list of arenas in address order is the kernel check's alone). */
TEST(validate_of_the_books_needs_no_memory_and_still_finds_problems)
{
    hostmem_config c = {sizeof c};
    c.arena_size = (size_t)4 << 20; /* a 2 MiB reservation gets an arena of its own */
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *small[8], *alone;
    for (int i = 0; i < 8; i++)
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, (size_t)(i + 1) * P, MEM_RESERVE | (i % 2 ? MEM_COMMIT : 0),
                                           PAGE_READWRITE, eTaskCritical, &small[i]), S_OK);
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, (size_t)2 << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &alone),
               S_OK);
    struct manager *books = manager_from(m);
    struct arena *arena = NULL, *standalone = NULL;
    uint32_t standalone_slot = 0;
    for (uint32_t i = 0; i < atomic_load(&books->arena_count); i++) {
        struct arena *a = atomic_load(&books->arenas[i]);
        if (a && a->standalone) {
            standalone = a;
            standalone_slot = i;
        } else if (a) {
            arena = a;
        }
    }
    REQUIRE(arena && standalone);
    struct hostmem_os_ops no_maps = hostmem_os_linux;
    no_maps.map = refuse_map;
    no_maps.map_large = refuse_map;
    atomic_store(&maps_asked, 0);
    hostmem_os = &no_maps;
    char why[200];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    /* a counter put wrong */
    atomic_fetch_add(&books->reservations, 1);
    CHECK(validate_finds(m, "reservations, counter says"));
    atomic_fetch_sub(&books->reservations, 1);
    /* the standalone arena's bounds moved onto the other arena's first granule */
    uintptr_t base = atomic_load(&standalone->base), end = atomic_load(&standalone->end);
    atomic_store(&standalone->base, atomic_load(&arena->base));
    atomic_store(&standalone->end, atomic_load(&arena->base) + hostmem_granularity());
    CHECK(validate_finds(m, "overlap"));
    atomic_store(&standalone->base, base);
    atomic_store(&standalone->end, end);
    /* one arena in two slots of the table */
    atomic_store(&books->arenas[standalone_slot], arena);
    CHECK(validate_finds(m, "in table slot"));
    atomic_store(&books->arenas[standalone_slot], standalone);
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    CHECK_EQ(atomic_load(&maps_asked), 0);
    /* the kernel check needs its lists: E_FAIL that says so */
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), E_FAIL);
    CHECK(strstr(why, "cannot check") != NULL);
    hostmem_os = &hostmem_os_linux;
    for (int i = 0; i < 8; i++)
        CHECK_HR(m->lpVtbl->VirtualFree(m, small[i], 0, MEM_RELEASE), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, alone, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* ---- the kernel's mapping ceiling (issue 13 item 4, docs/host.md) ----------------- */
static MEMORY_BASIC_INFORMATION query(IHostMemoryManager *m, void *a)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    memset(&info, 0, sizeof info);
    m->lpVtbl->VirtualQuery(m, a, &info, sizeof info, &n);
    return info;
}

/* A release elsewhere gives mappings back: what stale_restore_all waits for. */
static void release_elsewhere(IHostMemoryManager *m)
{
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
}

/* At vm.max_map_count (mprotect refused), a decommit succeeds as on Windows:
 * the pages are discarded and reserved in the books - VirtualQuery, the budget,
 * the statistics - and hostmem_stats.book_protected_pages counts those whose
 * hardware protection lags; the kernel check knows which they are. */
TEST(decommit_at_the_mapping_ceiling_succeeds_and_is_counted)
{
    struct fixture f; /* pages 0-3 read-write with data, 4-7 READONLY, the rest reserved */
    REQUIRE(fixture_make(&f, 0));
    IHostMemoryManager *m = f.m;
    hostmem_stats s0 = stats_of(m);
    hostmem_os = &faulty;
    at_ceiling = 1;
    CHECK_HR(m->lpVtbl->VirtualFree(m, f.base + P, 5 * P, MEM_DECOMMIT), S_OK);
    hostmem_stats s1 = stats_of(m);
    CHECK_EQ(s1.committed_bytes, s0.committed_bytes - 5 * P);
    CHECK_EQ(s1.book_protected_pages, 5);
    CHECK(s1.os_refusals > s0.os_refusals);
    MEMORY_BASIC_INFORMATION info = query(m, f.base + 2 * P);
    CHECK(info.BaseAddress == f.base + 2 * P && info.AllocationBase == f.base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.Protect, 0);
    CHECK_EQ(info.RegionSize, 4 * P); /* pages 2-5: once read-write, once read-only, one region */
    info = query(m, f.base);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.RegionSize, P);
    info = query(m, f.base + 6 * P);
    CHECK_EQ(info.Protect, PAGE_READONLY);
    CHECK_EQ(info.RegionSize, 2 * P);
    CHECK_EQ(f.base[0], 0x41);
    CHECK_EQ(f.base[6 * P], 0x47);
    /* discarded: what the hardware still lets be read is zero */
    CHECK_EQ(f.base[1 * P], 0);
    CHECK_EQ(f.base[4 * P], 0);
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    /* VirtualProtect may be refused there, with nothing changed */
    struct snapshot before, after;
    snap(m, f.base, &before);
    DWORD old;
    CHECK_HR(m->lpVtbl->VirtualProtect(m, f.base + 6 * P, P, PAGE_READWRITE, &old), E_OUTOFMEMORY);
    snap(m, f.base, &after);
    CHECK(snap_equal(&before, &after));
    CHECK_EQ(stats_of(m).book_protected_pages, 5);
    /* stale pages are reserved pages to every call */
    CHECK_HR(m->lpVtbl->VirtualProtect(m, f.base + P, P, PAGE_READWRITE, &old),
             HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(m->lpVtbl->VirtualFree(m, f.base + P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).committed_bytes, s1.committed_bytes);
    /* a recommitted stale page reads zero, even one written while only the
     * books protected it (Windows would have faulted the write) */
    f.base[2 * P] = 9;
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, f.base + 2 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(f.base[2 * P], 0);
    hostmem_stats s2 = stats_of(m);
    CHECK_EQ(s2.committed_bytes, s1.committed_bytes + P);
    CHECK_EQ(s2.book_protected_pages, 4);
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    /* mappings come back: the stale pages get their protection, which the
     * kernel check confirms; the region map does not change */
    at_ceiling = 0;
    release_elsewhere(m);
    CHECK_EQ(stats_of(m).book_protected_pages, 0);
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    info = query(m, f.base + 3 * P);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, 3 * P);
    hostmem_os = &hostmem_os_linux;
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* The stale pages of a reservation get their protection before its next change,
 * and those of many reservations (more than the manager remembers by address)
 * after a release; release itself takes stale pages off the count. */
TEST(stale_pages_are_restored_when_mappings_come_back)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    enum { N = 20 };
    char *r[N];
    void *p;
    for (int i = 0; i < N; i++) {
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        r[i] = p;
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, r[i], 3 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        r[i][0] = r[i][2 * P] = (char)(i + 1);
    }
    hostmem_os = &faulty;
    at_ceiling = 1;
    for (int i = 0; i < N; i++)
        CHECK_HR(m->lpVtbl->VirtualFree(m, r[i] + P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).book_protected_pages, N);
    /* at the ceiling still: recommitting a stale page with the protection its
     * hardware kept needs no new mapping, and goes on */
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, r[0] + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(stats_of(m).book_protected_pages, N - 1);
    at_ceiling = 0;
    /* the next change of r[2] restores its stale page first */
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, r[2] + 8 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    CHECK_EQ(stats_of(m).book_protected_pages, N - 2);
    /* releasing a stale reservation takes its page off the count */
    CHECK_HR(m->lpVtbl->VirtualFree(m, r[1], 0, MEM_RELEASE), S_OK);
    /* ... and that release gave mappings back: every other one is restored */
    CHECK_EQ(stats_of(m).book_protected_pages, 0);
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    for (int i = 2; i < N; i++) {
        CHECK_EQ(r[i][0], (char)(i + 1));
        CHECK_EQ(r[i][2 * P], (char)(i + 1));
        CHECK_EQ(query(m, r[i] + P).State, MEM_RESERVE);
    }
    hostmem_os = &hostmem_os_linux;
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* A commit over stale pages and the committed pages between them discards the
 * stale ones only (once it discarded the whole span, data and all). */
TEST(recommit_over_stale_pages_keeps_the_committed_between)
{
    struct fixture f; /* pages 0-3 read-write with data, 4-7 READONLY */
    REQUIRE(fixture_make(&f, 0));
    IHostMemoryManager *m = f.m;
    DWORD old;
    CHECK_HR(m->lpVtbl->VirtualProtect(m, f.base, 8 * P, PAGE_READWRITE, &old), S_OK);
    hostmem_os = &faulty;
    at_ceiling = 1;
    CHECK_HR(m->lpVtbl->VirtualFree(m, f.base + P, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, f.base + 5 * P, P, MEM_DECOMMIT), S_OK);
    CHECK_EQ(stats_of(m).book_protected_pages, 2);
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, f.base, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(f.base[i * P], (i == 1 || i == 5) ? 0 : (char)(0x41 + i));
    at_ceiling = 0;
    hostmem_os = &hostmem_os_linux;
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Emulated write watch at the ceiling (docs/writewatch.md): the first write to a
 * clean page cannot give that page a mapping of its own; the write still goes
 * on, and its whole run reads as written - more pages than were written, never
 * fewer. */
TEST(emulated_write_at_the_mapping_ceiling_marks_its_run)
{
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_EMULATE_WRITE_WATCH;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 8 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE,
                                       eTaskCritical, &p), S_OK);
    char *b = p;
    hostmem_os = &faulty;
    at_ceiling = 1;
    size_t refused = stats_of(m).os_refusals;
    b[3 * P] = 1;
    CHECK_EQ(b[3 * P], 1);
    CHECK(stats_of(m).os_refusals > refused);
    void *a[16];
    uintptr_t count = 16;
    ULONG g;
    CHECK_HR(hostmem_get_write_watch(m, 0, b, 8 * P, a, &count, &g), S_OK);
    CHECK_EQ(count, 8);
    CHECK(a[3] == b + 3 * P);
    char why[256];
    at_ceiling = 0;
    hostmem_os = &hostmem_os_linux;
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    /* room again: a reset makes them clean, and one write marks one page */
    CHECK_HR(hostmem_reset_write_watch(m, b, 8 * P), S_OK);
    b[5 * P] = 2;
    count = 16;
    CHECK_HR(hostmem_get_write_watch(m, 0, b, 8 * P, a, &count, &g), S_OK);
    CHECK_EQ(count, 1);
    CHECK_HR(m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* SPEC §2: an unrecoverable OS failure gives E_FAIL once, then the disabled state. */
TEST(os_unrecoverable_failure_disables_the_manager)
{
    struct fixture f;
    REQUIRE(fixture_make(&f, 0));
    hostmem_os = &faulty;
    arm(1, 1); /* mprotect fails and so does its undo */
    HRESULT hr = op_commit_mixed(&f);
    arm(0, 0);
    hostmem_os = &hostmem_os_linux;
    CHECK_HR(hr, E_FAIL);
    void *p;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    DWORD old;
    CHECK_HR(f.m->lpVtbl->VirtualAlloc(f.m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
             HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(f.m->lpVtbl->VirtualFree(f.m, f.base, 0, MEM_RELEASE), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(f.m->lpVtbl->VirtualQuery(f.m, f.base, &info, sizeof info, &n), HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(f.m->lpVtbl->VirtualProtect(f.m, f.base, P, PAGE_READONLY, &old), HOST_E_CLRNOTAVAILABLE);
    CHECK_EQ(f.m->lpVtbl->Release(f.m), 0);
}

/* ---- lock faults ------------------------------------------------------------------------- */
static _Atomic HRESULT lock_enter_result = S_OK;
static _Atomic HRESULT lock_leave_result = S_OK;
static _Atomic int lock_entered;

static HRESULT l_create(void *c, void **lock)
{
    return lock_posix_ops.create(c, lock);
}
static HRESULT l_enter(void *c, void *lock, DWORD timeout)
{
    HRESULT hr = atomic_load(&lock_enter_result);
    if (hr != S_OK)
        return hr;
    atomic_fetch_add(&lock_entered, 1);
    return lock_posix_ops.enter(c, lock, timeout);
}
static HRESULT l_leave(void *c, void *lock)
{
    HRESULT forced = atomic_load(&lock_leave_result);
    HRESULT hr = lock_posix_ops.leave(c, lock);
    return forced != S_OK ? forced : hr;
}
static void l_destroy(void *c, void *lock)
{
    lock_posix_ops.destroy(c, lock);
}
static const hostmem_lock_ops injected_locks = {NULL, l_create, l_enter, l_leave, l_destroy};

/* SPEC §2: a lock failure is returned unchanged and the operation is not applied. */
TEST(lock_enter_failures_are_returned_unchanged_and_nothing_changes)
{
    const HRESULT results[] = {HOST_E_TIMEOUT, HOST_E_ABANDONED, HOST_E_NOT_OWNER};
    for (size_t i = 0; i < sizeof results / sizeof results[0]; i++) {
        hostmem_config c = {sizeof c};
        c.lock_ops = &injected_locks;
        IHostMemoryManager *m;
        REQUIRE_HR(hostmem_create(&c, &m), S_OK);
        void *base, *p;
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base), S_OK);
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, base, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        ((char *)base)[0] = 7;
        struct snapshot before, after;
        snap(m, base, &before);
        atomic_store(&lock_enter_result, results[i]);
        DWORD old;
        CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), results[i]);
        CHECK_HR(m->lpVtbl->VirtualAlloc(m, (char *)base + 4 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
                 results[i]);
        CHECK_HR(m->lpVtbl->VirtualFree(m, base, P, MEM_DECOMMIT), results[i]);
        CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), results[i]);
        CHECK_HR(m->lpVtbl->VirtualProtect(m, base, P, PAGE_READONLY, &old), results[i]);
        /* VirtualQuery takes no lock (SPEC §5) */
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(m->lpVtbl->VirtualQuery(m, base, &info, sizeof info, &n), S_OK);
        /* foreign memory is refused before any lock is taken */
        int local;
        CHECK_HR(m->lpVtbl->VirtualFree(m, &local, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
        snap(m, base, &after);
        CHECK(snap_equal(&before, &after));
        CHECK(((char *)base)[0] == 7);
        atomic_store(&lock_enter_result, S_OK);
        /* not disabled: the next call works */
        CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
        CHECK_EQ(m->lpVtbl->Release(m), 0);
    }
}

/* SPEC §2: E_FAIL from the host's lock is catastrophic: the manager is disabled. */
TEST(lock_enter_e_fail_disables_the_manager)
{
    hostmem_config c = {sizeof c};
    c.lock_ops = &injected_locks;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *p;
    atomic_store(&lock_enter_result, E_FAIL);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), E_FAIL);
    atomic_store(&lock_enter_result, S_OK);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
             HOST_E_CLRNOTAVAILABLE);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* SPEC §2: a host lock's HOST_E_NOT_OWNER on leave is the call's answer; what
 * the call did before it stays accounted (the harness validates the manager). */
TEST(lock_leave_not_owner_is_returned)
{
    hostmem_config c = {sizeof c};
    c.lock_ops = &injected_locks;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *base;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base), S_OK);
    atomic_store(&lock_leave_result, HOST_E_NOT_OWNER);
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, base, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), HOST_E_NOT_OWNER);
    /* The commit was made before the lock reported: it stays, and so does its charge. */
    CHECK_EQ(stats_of(m).committed_bytes, P);
    /* A reservation made before the arena lock reports is given back whole. */
    hostmem_stats before = stats_of(m);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), HOST_E_NOT_OWNER);
    CHECK_EQ(stats_of(m).reservations, before.reservations);
    CHECK_EQ(stats_of(m).reserved_bytes, before.reserved_bytes);
    atomic_store(&lock_leave_result, S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* ---- the default POSIX lock's mapping ------------------------------------------------------- */
__attribute__((unused)) static void *hold_and_die(void *lock)
{
    lock_posix_ops.enter(NULL, lock, HOSTMEM_INFINITE);
    return NULL; /* exits owning the lock: robust mutexes report it */
}

struct holder {
    void *lock;
    pthread_barrier_t held, done;
};

static void *hold_until_told(void *arg)
{
    struct holder *h = arg;
    lock_posix_ops.enter(NULL, h->lock, HOSTMEM_INFINITE);
    pthread_barrier_wait(&h->held);
    pthread_barrier_wait(&h->done);
    lock_posix_ops.leave(NULL, h->lock);
    return NULL;
}

/* SPEC §2: ETIMEDOUT -> HOST_E_TIMEOUT, EOWNERDEAD -> HOST_E_ABANDONED, EPERM -> HOST_E_NOT_OWNER. */
TEST(default_lock_maps_etimedout_eownerdead_eperm)
{
    void *lock;
    REQUIRE_HR(lock_posix_ops.create(NULL, &lock), S_OK);
    struct holder h = {lock};
    pthread_barrier_init(&h.held, NULL, 2);
    pthread_barrier_init(&h.done, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, hold_until_told, &h);
    pthread_barrier_wait(&h.held);
    CHECK_HR(lock_posix_ops.enter(NULL, lock, 10), HOST_E_TIMEOUT);
#ifndef UNDER_TSAN /* TSan reports the deliberate unlock by a non-owner as an error */
    CHECK_HR(lock_posix_ops.leave(NULL, lock), HOST_E_NOT_OWNER); /* EPERM: not ours */
#endif
    pthread_barrier_wait(&h.done);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&h.held);
    pthread_barrier_destroy(&h.done);

#ifndef UNDER_TSAN /* and a thread that exits holding a lock */
    pthread_create(&t, NULL, hold_and_die, lock);
    pthread_join(t, NULL);
    CHECK_HR(lock_posix_ops.enter(NULL, lock, HOSTMEM_INFINITE), HOST_E_ABANDONED);
    /* and the lock is usable again */
    CHECK_HR(lock_posix_ops.enter(NULL, lock, 10), S_OK);
    CHECK_HR(lock_posix_ops.leave(NULL, lock), S_OK);
#endif
    lock_posix_ops.destroy(NULL, lock);
}

/* ---- a lock held by a stopped thread: timeouts, and VirtualQuery still answers --------------- */
static void *g_locks[80];
static _Atomic int g_lock_count;

static HRESULT rec_create(void *c, void **lock)
{
    HRESULT hr = lock_posix_ops.create(c, lock);
    if (hr == S_OK)
        g_locks[atomic_fetch_add(&g_lock_count, 1)] = *lock;
    return hr;
}
static const hostmem_lock_ops recorded_locks = {NULL, rec_create, NULL, NULL, NULL};

struct all_holder {
    int first, count;
    pthread_barrier_t *held, *done;
};

/* Two threads share the holding: ThreadSanitizer tracks at most 64 locks per thread. */
static void *hold_all(void *arg)
{
    struct all_holder *h = arg;
    for (int i = h->first; i < h->first + h->count; i++)
        lock_posix_ops.enter(NULL, g_locks[i], HOSTMEM_INFINITE);
    pthread_barrier_wait(h->held);
    pthread_barrier_wait(h->done);
    for (int i = h->first; i < h->first + h->count; i++)
        lock_posix_ops.leave(NULL, g_locks[i]);
    return NULL;
}

/* SPEC §2 and §5: with a timeout configured, a held lock gives HOST_E_TIMEOUT, not a hang;
 * VirtualQuery takes no lock and answers. */
TEST(held_locks_time_out_and_virtualquery_still_answers)
{
    hostmem_lock_ops ops = recorded_locks;
    ops.enter = lock_posix_ops.enter;
    ops.leave = lock_posix_ops.leave;
    ops.destroy = lock_posix_ops.destroy;
    hostmem_config c = {sizeof c};
    c.lock_ops = &ops;
    c.lock_timeout_ms = 20;
    atomic_store(&g_lock_count, 0);
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *base, *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 8 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &base),
               S_OK);
    int total = atomic_load(&g_lock_count);
    pthread_barrier_t held, done;
    pthread_barrier_init(&held, NULL, 3);
    pthread_barrier_init(&done, NULL, 3);
    struct all_holder h[2] = {{0, total / 2, &held, &done}, {total / 2, total - total / 2, &held, &done}};
    pthread_t t[2];
    pthread_create(&t[0], NULL, hold_all, &h[0]);
    pthread_create(&t[1], NULL, hold_all, &h[1]);
    pthread_barrier_wait(&held);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.RegionSize, 8 * P);
    CHECK_HR(m->lpVtbl->VirtualFree(m, base, P, MEM_DECOMMIT), HOST_E_TIMEOUT);
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p), HOST_E_TIMEOUT);
    pthread_barrier_wait(&done);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    pthread_barrier_destroy(&held);
    pthread_barrier_destroy(&done);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, base, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.RegionSize, 8 * P); /* the timed-out decommit changed nothing */
    CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* SPEC §2: after shutdown every call is HOST_E_CLRNOTAVAILABLE and the memory is gone. */
TEST(shutdown_makes_calls_clrnotavailable_and_returns_memory)
{
    IHostMemoryManager *m, *other;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    REQUIRE_HR(hostmem_create(NULL, &other), S_OK);
    void *base;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &base),
               S_OK);
    CHECK_HR(hostmem_shutdown(m), S_OK);
    void *p;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, NULL, P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p),
             HOST_E_CLRNOTAVAILABLE);
    CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), HOST_E_CLRNOTAVAILABLE);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(other->lpVtbl->VirtualQuery(other, base, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_FREE);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
    CHECK_EQ(other->lpVtbl->Release(other), 0);
}

int main(void)
{
    P = hostmem_page_size();
    RUN(os_fault_sweep_strict_every_call_transient_and_persistent);
    RUN(os_fault_sweep_compact_every_call_transient_and_persistent);
    RUN(os_fault_sweep_emulated_write_watch_every_call_transient_and_persistent);
    RUN(os_unrecoverable_failure_disables_the_manager);
    RUN(lock_enter_failures_are_returned_unchanged_and_nothing_changes);
    RUN(lock_enter_e_fail_disables_the_manager);
    RUN(lock_leave_not_owner_is_returned);
    RUN(validate_says_why_when_it_cannot_check);
    RUN(validate_of_the_books_needs_no_memory_and_still_finds_problems);
    RUN(decommit_at_the_mapping_ceiling_succeeds_and_is_counted);
    RUN(stale_pages_are_restored_when_mappings_come_back);
    RUN(emulated_write_at_the_mapping_ceiling_marks_its_run);
    RUN(recommit_over_stale_pages_keeps_the_committed_between);
    RUN(default_lock_maps_etimedout_eownerdead_eperm);
    RUN(held_locks_time_out_and_virtualquery_still_answers);
    RUN(shutdown_makes_calls_clrnotavailable_and_returns_memory);
    printf("test_faults: %ld sweep runs, %ld faults injected\n", sweep_runs, faults_injected);
    return TEST_SUMMARY("test_faults");
}
