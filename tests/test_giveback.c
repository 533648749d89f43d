/*
 * test_giveback.c - SPEC §4 rule 7 (issue 22): a VirtualFree of the host's own
 * memory is refused only by rules 1-5, the host's lock results or a disabled
 * manager - never for want of kernel resources: not at vm.max_map_count, not
 * with RLIMIT_AS used up, not when the kernel refuses an mmap, mprotect or
 * munmap. No give-back path (decommit, release, heap Free and Release,
 * hostmem_validate of the books) needs a new kernel mapping.
 *
 * Where the kernel has nothing left, in forked children (a child prints its
 * own failures and reports them in its exit status; the test program itself is
 * never filled or limited): everything the give-back paths work on is made
 * first, then the kernel is filled for real - the mapping table with single
 * pages of alternating protection, which never merge, or the address space up
 * to a lowered RLIMIT_AS - and topped up again after every call, so that a call
 * that gave mappings back does not make room for the next. Then every shape of
 * decommit, every release, the heap's Free and Release must return S_OK and
 * leave VirtualQuery, the counters and the neighbours' data right, and the
 * books must validate. Once the filler is gone and the manager has made one
 * more call, no page is protected only in the books and the kernel agrees with
 * the map. Refusals are counted per kind of call and reported once each, with
 * the first refusal's words.
 *
 * Through the seam (src/os.h): each map, protect and unmap a give-back call
 * makes is refused in turn (countdown, transient and persistent), and no
 * give-back path calls map at all.
 *
 * Fork: a child forked while threads reserve, commit, decommit and release
 * finds the half-made reservations of threads it does not have given back
 * whole (no-access, discarded, uncommitted).
 *
 * Sanitizers: none can live under a small RLIMIT_AS (their shadow memory is
 * terabytes of address space); ThreadSanitizer aborts at vm.max_map_count and
 * cannot fork with threads. Those tests say so and are skipped there.
 */
#define COBJMACROS
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "os.h"
#include "test.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)

static size_t P;

/* ---- filling the kernel: the filler, and its removal ------------------------------------- */

/* Mappings of the test's own, not hostmem's: made with mmap directly, each
 * remembered so that it can be unmapped again. */
struct filler {
    struct filled {
        void *at;
        size_t size;
    } *maps;
    size_t count, capacity;
    size_t chunk;      /* the size each top-up starts with: P (the mapping table) or larger */
    int last_error;    /* the errno of the refusal that ended the last fill */
};

static size_t max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    size_t n = 65530;
    if (f) {
        if (fscanf(f, "%zu", &n) != 1)
            n = 65530;
        fclose(f);
    }
    return n;
}

/* The list is made before the kernel is full: it needs memory of its own. */
static int filler_make(struct filler *f, size_t capacity, size_t chunk)
{
    memset(f, 0, sizeof *f);
    f->maps = mmap(NULL, capacity * sizeof *f->maps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f->maps == MAP_FAILED) {
        f->maps = NULL;
        return 0;
    }
    memset(f->maps, 0, capacity * sizeof *f->maps); /* every page of the list present now */
    f->capacity = capacity;
    f->chunk = chunk;
    return 1;
}

/* Maps chunks of size bytes until the kernel refuses one (its errno in
 * f->last_error). Protections alternate, PROT_READ and PROT_NONE, and no
 * MAP_NORESERVE: neighbours never merge, with each other or with hostmem's
 * mappings, so each chunk is one more line of the mapping table. */
static void fill_with(struct filler *f, size_t size)
{
    while (f->count < f->capacity) {
        int prot = f->count & 1 ? PROT_NONE : PROT_READ;
        void *at = mmap(NULL, size, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (at == MAP_FAILED) {
            f->last_error = errno;
            return;
        }
        f->maps[f->count].at = at;
        f->maps[f->count].size = size;
        f->count++;
    }
    f->last_error = 0; /* the list ran out first */
}

/* Fills the kernel again after a call that may have given something back:
 * chunks of f->chunk first, then single pages for what is left. */
static void fill(struct filler *f)
{
    if (!f)
        return;
    if (f->chunk > P)
        fill_with(f, f->chunk);
    fill_with(f, P);
}

static void unfill(struct filler *f)
{
    for (size_t i = f->count; i-- > 0;)
        munmap(f->maps[i].at, f->maps[i].size);
    f->count = 0;
}

static void filler_free(struct filler *f)
{
    unfill(f);
    if (f->maps)
        munmap(f->maps, f->capacity * sizeof *f->maps);
    f->maps = NULL;
}

/* ---- failures, counted by kind and reported once each ------------------------------------------ */

/* At the ceiling today's library refuses dozens of calls; one line per kind of
 * call, with the first refusal's words, says it better than dozens of lines. */
struct tally {
    const char *what;
    int calls, failures;
    char first[240];
};

__attribute__((format(printf, 2, 3))) static void tally_fail(struct tally *t, const char *format, ...)
{
    if (t->failures++)
        return;
    va_list ap;
    va_start(ap, format);
    vsnprintf(t->first, sizeof t->first, format, ap);
    va_end(ap);
}

static void tally_report(const struct tally *t)
{
    if (t->failures)
        TEST_FAIL_AT("%s: %d of %d failed; the first: %s", t->what, t->failures, t->calls, t->first);
}

static const char *hr_name(HRESULT hr)
{
    static char buffer[4][16];
    static int next;
    next = (next + 1) % 4;
    return test_hr_name(hr, buffer[next], sizeof buffer[next]);
}

/* ---- the scene: everything the give-back paths work on ------------------------------------------ */

#define PIECE_PAGES 16
#define MAX_EACH 8
#define MAX_BLOCKS 160
#define LARGE_SIZE (300 * MIB) /* more than a quarter of the largest arena: a reservation of its own */
#define LARGE_RUNS 3
#define LARGE_RUN_PAGES 4

/* The shapes of a decommit, one reservation of 16 committed pages each. */
enum shape {
    SHAPE_INTERIOR,  /* page 5 */
    SHAPE_FIRST,     /* page 0 */
    SHAPE_LAST,      /* page 15 */
    SHAPE_WHOLE,     /* dwSize 0 at the base */
    SHAPE_HOLES,     /* pages 2, 6-7 and 11-13: three calls */
    SHAPE_ACROSS,    /* pages 6-9, where 0-7 are read-write and 8-15 read-only */
    SHAPE_GUARD,     /* pages 3-5, where 4-7 are guard pages */
    SHAPE_WATCH,     /* pages 5-6 of a write-watched reservation */
    SHAPE_UNTOUCHED, /* none: released whole as it was made */
    SHAPES
};

static const char *const shape_names[SHAPES] = {
    "decommit of an interior page",         "decommit of the first page",
    "decommit of the last page",            "decommit of the whole reservation (dwSize 0)",
    "decommit of three holes",              "decommit across two protections",
    "decommit across guard pages",          "decommit in a write-watched reservation",
    "(no decommit)",
};

struct piece {
    char *base;
    enum shape shape;
    bool live;
    bool committed[PIECE_PAGES];
    DWORD protect[PIECE_PAGES];
    unsigned char pattern;
};

struct scene {
    IHostMemoryManager *m;
    struct piece pieces[SHAPES * MAX_EACH];
    int count;
    bool watch;            /* MEM_WRITE_WATCH works in this kernel */
    char *spare_reserved;  /* reserved only: a commit there may be refused at the ceiling */
    char *spare_committed; /* read-write: a VirtualProtect there may be refused */
    char *catch_up;        /* released once there is room: the manager's one call to catch up */
    char *large;
    bool large_live;
    bool large_committed[LARGE_RUNS][LARGE_RUN_PAGES];
    IHostMalloc *heap;
    void *blocks[MAX_BLOCKS];
    size_t block_sizes[MAX_BLOCKS];
    int block_count;
    struct filler *filler; /* topped up after each call; NULL: the kernel is not filled */
    struct tally decommits[SHAPES], releases, large_calls, heap_frees, heap_release, books, state;
};

static unsigned char pattern_at(const struct piece *p, int page)
{
    return (unsigned char)(p->pattern + 3 * page) | 1; /* never zero */
}

static size_t large_offset(int run)
{
    static const size_t offsets[LARGE_RUNS] = {1 * MIB, 150 * MIB, LARGE_SIZE - 1 * MIB};
    return offsets[run];
}

static unsigned char block_pattern(int i)
{
    return (unsigned char)(0x40 + i) | 1;
}

static HRESULT commit(IHostMemoryManager *m, char *at, size_t size, DWORD protect)
{
    void *p;
    return IHostMemoryManager_VirtualAlloc(m, at, size, MEM_COMMIT, protect, eTaskCritical, &p);
}

static MEMORY_BASIC_INFORMATION query(IHostMemoryManager *m, const void *at)
{
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n = 0;
    memset(&info, 0, sizeof info);
    if (IHostMemoryManager_VirtualQuery(m, (void *)at, &info, sizeof info, &n) != S_OK || n != sizeof info)
        info.State = 0;
    return info;
}

/* Makes one reservation of the given shape: 16 pages committed, each with its
 * pattern, then the shape's protections. 0 when the shape cannot be made here
 * (write watch without the kernel's support). */
static int piece_make(struct scene *s, enum shape shape, int index)
{
    struct piece *p = &s->pieces[s->count];
    memset(p, 0, sizeof *p);
    p->shape = shape;
    p->pattern = (unsigned char)(index * 37 + shape * 5);
    void *base;
    DWORD type = MEM_RESERVE | (shape == SHAPE_WATCH ? MEM_WRITE_WATCH : 0);
    HRESULT hr = IHostMemoryManager_VirtualAlloc(s->m, NULL, PIECE_PAGES * P, type, PAGE_READWRITE, eTaskCritical, &base);
    if (shape == SHAPE_WATCH && hr == HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED))
        return 0;
    if (hr != S_OK) {
        TEST_FAIL_AT("setting up: reserve for %s -> %s", shape_names[shape], hr_name(hr));
        return -1;
    }
    p->base = base;
    p->live = true;
    if ((hr = commit(s->m, p->base, PIECE_PAGES * P, PAGE_READWRITE)) != S_OK) {
        TEST_FAIL_AT("setting up: commit for %s -> %s", shape_names[shape], hr_name(hr));
        return -1;
    }
    for (int i = 0; i < PIECE_PAGES; i++) {
        memset(p->base + i * P, pattern_at(p, i), P);
        p->committed[i] = true;
        p->protect[i] = PAGE_READWRITE;
    }
    DWORD old;
    if (shape == SHAPE_ACROSS) {
        hr = IHostMemoryManager_VirtualProtect(s->m, p->base + 8 * P, 8 * P, PAGE_READONLY, &old);
        for (int i = 8; i < PIECE_PAGES; i++)
            p->protect[i] = PAGE_READONLY;
    } else if (shape == SHAPE_GUARD) {
        hr = IHostMemoryManager_VirtualProtect(s->m, p->base + 4 * P, 4 * P, PAGE_READWRITE | PAGE_GUARD, &old);
        for (int i = 4; i < 8; i++)
            p->protect[i] = PAGE_READWRITE | PAGE_GUARD;
    }
    if (hr != S_OK) {
        TEST_FAIL_AT("setting up: protect for %s -> %s", shape_names[shape], hr_name(hr));
        return -1;
    }
    s->count++;
    return 1;
}

/* Everything, made while the kernel still has room: `each` reservations of
 * each shape, the spares, a large reservation with three committed runs, and a
 * heap with blocks of many sizes (small ones in shared segments, large ones in
 * their own). Into a scene whose earlier pieces are all given back, the same
 * manager's metadata can serve again (no_give_back_path_maps_memory). */
static int scene_populate(struct scene *s, int each, int blocks)
{
    s->count = 0;
    s->watch = true;
    for (int j = 0; j < each; j++)
        for (int k = 0; k < SHAPES; k++) {
            int made = piece_make(s, (enum shape)k, j);
            if (made < 0)
                return 0;
            if (!made)
                s->watch = false;
        }
    void *p;
    if (!s->spare_reserved) {
        if (IHostMemoryManager_VirtualAlloc(s->m, NULL, PIECE_PAGES * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical,
                                            &p) != S_OK)
            return 0;
        s->spare_reserved = p;
        if (IHostMemoryManager_VirtualAlloc(s->m, NULL, PIECE_PAGES * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                            eTaskCritical, &p) != S_OK)
            return 0;
        s->spare_committed = p;
        memset(p, 0x5C, PIECE_PAGES * P);
    }
    if (IHostMemoryManager_VirtualAlloc(s->m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) !=
        S_OK)
        return 0;
    s->catch_up = p;
    if (IHostMemoryManager_VirtualAlloc(s->m, NULL, LARGE_SIZE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &p) != S_OK) {
        TEST_FAIL_AT("setting up: reserve of %zu MiB", LARGE_SIZE / MIB);
        return 0;
    }
    s->large = p;
    s->large_live = true;
    for (int r = 0; r < LARGE_RUNS; r++) {
        if (commit(s->m, s->large + large_offset(r), LARGE_RUN_PAGES * P, PAGE_READWRITE) != S_OK)
            return 0;
        for (int i = 0; i < LARGE_RUN_PAGES; i++) {
            memset(s->large + large_offset(r) + i * P, 0x60 + r * LARGE_RUN_PAGES + i, P);
            s->large_committed[r][i] = true;
        }
    }
    if (IHostMemoryManager_CreateMalloc(s->m, MALLOC_THREADSAFE, &s->heap) != S_OK) {
        TEST_FAIL_AT("setting up: CreateMalloc");
        return 0;
    }
    s->block_count = 0;
    for (int i = 0; i < blocks && i < MAX_BLOCKS; i++) {
        size_t size = i % 16 == 15 ? 200 * KIB + (size_t)i * 100 : 16 + (size_t)i * 61 % 4000;
        if (IHostMalloc_Alloc(s->heap, size, eTaskCritical, &s->blocks[i]) != S_OK) {
            TEST_FAIL_AT("setting up: heap Alloc(%zu)", size);
            return 0;
        }
        memset(s->blocks[i], block_pattern(i), size);
        s->block_sizes[i] = size;
        s->block_count++;
    }
    return 1;
}

static int scene_make(struct scene *s, int each, int blocks)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < SHAPES; k++)
        s->decommits[k].what = shape_names[k];
    s->releases.what = "release (MEM_RELEASE) of a reservation";
    s->large_calls.what = "decommit and release of a reservation larger than an arena's quarter";
    s->heap_frees.what = "IHostMalloc Free";
    s->heap_release.what = "IHostMalloc Release (the heap's segments)";
    s->books.what = "hostmem_validate(m, 0) (the books) after a give-back";
    s->state.what = "the state after a give-back (VirtualQuery, counters, neighbours' data)";
    if (hostmem_create(NULL, &s->m) != S_OK) {
        TEST_FAIL_AT("setting up: hostmem_create");
        return 0;
    }
    return scene_populate(s, each, blocks);
}

/* What VirtualQuery says of every page, the counters, and the data of every
 * page still committed and readable; the first difference goes to s->state. */
static void scene_check(struct scene *s, const char *after)
{
    for (int k = 0; k < s->count; k++) {
        const struct piece *p = &s->pieces[k];
        if (!p->live) {
            MEMORY_BASIC_INFORMATION info = query(s->m, p->base);
            if (info.State != MEM_FREE) {
                tally_fail(&s->state, "after %s: released reservation %p: state %#x, not MEM_FREE", after,
                           (void *)p->base, (unsigned)info.State);
                return;
            }
            continue;
        }
        for (int i = 0; i < PIECE_PAGES; i++) {
            MEMORY_BASIC_INFORMATION info = query(s->m, p->base + i * P);
            DWORD state = p->committed[i] ? MEM_COMMIT : MEM_RESERVE;
            if (info.State != state || info.AllocationBase != p->base ||
                (p->committed[i] && info.Protect != p->protect[i]) || (!p->committed[i] && info.Protect != 0)) {
                tally_fail(&s->state,
                           "after %s: page %d of a reservation for %s: state %#x protect %#x, expected %#x %#x", after,
                           i, shape_names[p->shape], (unsigned)info.State, (unsigned)info.Protect, (unsigned)state,
                           p->committed[i] ? (unsigned)p->protect[i] : 0u);
                return;
            }
            /* guard pages are not touched: the touch would be the guard's one shot */
            if (p->committed[i] && !(p->protect[i] & PAGE_GUARD)) {
                const volatile unsigned char *page = (const unsigned char *)p->base + i * P;
                if (page[0] != pattern_at(p, i) || page[P - 1] != pattern_at(p, i)) {
                    tally_fail(&s->state, "after %s: page %d of a reservation for %s lost its data (%#x, not %#x)",
                               after, i, shape_names[p->shape], page[0], pattern_at(p, i));
                    return;
                }
            }
        }
    }
    if (s->large_live)
        for (int r = 0; r < LARGE_RUNS; r++)
            for (int i = 0; i < LARGE_RUN_PAGES; i++) {
                char *page = s->large + large_offset(r) + i * P;
                MEMORY_BASIC_INFORMATION info = query(s->m, page);
                DWORD state = s->large_committed[r][i] ? MEM_COMMIT : MEM_RESERVE;
                if (info.State != state) {
                    tally_fail(&s->state, "after %s: page %d of run %d of the large reservation: state %#x, not %#x",
                               after, i, r, (unsigned)info.State, (unsigned)state);
                    return;
                }
                if (s->large_committed[r][i] && *(volatile unsigned char *)page != 0x60 + r * LARGE_RUN_PAGES + i) {
                    tally_fail(&s->state, "after %s: page %d of run %d of the large reservation lost its data", after,
                               i, r);
                    return;
                }
            }
    for (int i = 0; i < PIECE_PAGES; i++)
        if (((volatile unsigned char *)s->spare_committed)[i * P] != 0x5C) {
            tally_fail(&s->state, "after %s: a committed page nobody freed lost its data", after);
            return;
        }
}

/* After every give-back call: its state, the books, and the kernel full again. */
static void after_give_back(struct scene *s, const char *what)
{
    const struct hostmem_os_ops *swept = hostmem_os;
    hostmem_os = &hostmem_os_linux; /* the test's own checks: not the call swept or counted */
    scene_check(s, what);
    char why[256] = "";
    s->books.calls++;
    HRESULT hr = hostmem_validate(s->m, 0, why, sizeof why);
    if (hr != S_OK)
        tally_fail(&s->books, "after %s: %s: %s", what, hr_name(hr), why);
    fill(s->filler);
    hostmem_os = swept;
}

/* A decommit of pages [first, first + count) of p (count 0: dwSize 0 at the
 * base); the books and the counters follow it only when it succeeded. */
static HRESULT decommit(struct scene *s, struct piece *p, int first, int count)
{
    struct tally *t = &s->decommits[p->shape];
    hostmem_stats before = stats_of(s->m);
    t->calls++;
    HRESULT hr = IHostMemoryManager_VirtualFree(s->m, p->base + first * P, (size_t)count * P, MEM_DECOMMIT);
    if (hr != S_OK) {
        tally_fail(t, "VirtualFree(base + %d pages, %d pages, MEM_DECOMMIT) -> %s", first, count, hr_name(hr));
        return hr;
    }
    size_t newly = 0;
    for (int i = first; i < (count ? first + count : PIECE_PAGES); i++)
        if (p->committed[i]) {
            p->committed[i] = false;
            newly++;
        }
    hostmem_stats now = stats_of(s->m);
    if (before.committed_bytes - now.committed_bytes != newly * P)
        tally_fail(&s->state, "after %s: committed_bytes went down by %zu, not %zu", shape_names[p->shape],
                   before.committed_bytes - now.committed_bytes, newly * P);
    after_give_back(s, shape_names[p->shape]);
    return hr;
}

/* The decommits of a piece's shape: S_OK, or the first refusal. */
static HRESULT decommit_shape(struct scene *s, struct piece *p)
{
    HRESULT hr = S_OK, next;
    switch (p->shape) {
    case SHAPE_INTERIOR:
        return decommit(s, p, 5, 1);
    case SHAPE_FIRST:
        return decommit(s, p, 0, 1);
    case SHAPE_LAST:
        return decommit(s, p, PIECE_PAGES - 1, 1);
    case SHAPE_WHOLE:
        return decommit(s, p, 0, 0);
    case SHAPE_HOLES:
        hr = decommit(s, p, 2, 1);
        if ((next = decommit(s, p, 6, 2)) != S_OK && hr == S_OK)
            hr = next;
        if ((next = decommit(s, p, 11, 3)) != S_OK && hr == S_OK)
            hr = next;
        return hr;
    case SHAPE_ACROSS:
        return decommit(s, p, 6, 4);
    case SHAPE_GUARD:
        return decommit(s, p, 3, 3);
    case SHAPE_WATCH:
        return decommit(s, p, 5, 2);
    case SHAPE_UNTOUCHED:
    case SHAPES:
        break;
    }
    return S_OK;
}

static HRESULT release_piece(struct scene *s, struct piece *p)
{
    size_t committed = 0;
    for (int i = 0; i < PIECE_PAGES; i++)
        committed += p->committed[i];
    hostmem_stats before = stats_of(s->m);
    s->releases.calls++;
    HRESULT hr = IHostMemoryManager_VirtualFree(s->m, p->base, 0, MEM_RELEASE);
    if (hr != S_OK) {
        tally_fail(&s->releases, "VirtualFree(base of a reservation for %s, 0, MEM_RELEASE) -> %s",
                   shape_names[p->shape], hr_name(hr));
        return hr;
    }
    p->live = false;
    hostmem_stats now = stats_of(s->m);
    if (before.committed_bytes - now.committed_bytes != committed * P ||
        before.reserved_bytes - now.reserved_bytes != PIECE_PAGES * P || before.reservations - now.reservations != 1)
        tally_fail(&s->state, "after a release: counters went down by %zu committed, %zu reserved, %zu reservations",
                   before.committed_bytes - now.committed_bytes, before.reserved_bytes - now.reserved_bytes,
                   before.reservations - now.reservations);
    after_give_back(s, "a release");
    return hr;
}

/* The large reservation: an interior page of a committed run, then the whole
 * reservation (dwSize 0), then its release. S_OK or the first refusal. */
static HRESULT large_decommit_interior(struct scene *s)
{
    s->large_calls.calls++;
    HRESULT hr = IHostMemoryManager_VirtualFree(s->m, s->large + large_offset(1) + P, P, MEM_DECOMMIT);
    if (hr != S_OK) {
        tally_fail(&s->large_calls, "decommit of an interior page -> %s", hr_name(hr));
        return hr;
    }
    s->large_committed[1][1] = false;
    after_give_back(s, "decommit of an interior page of the large reservation");
    return hr;
}

static HRESULT large_decommit_whole(struct scene *s)
{
    s->large_calls.calls++;
    HRESULT hr = IHostMemoryManager_VirtualFree(s->m, s->large, 0, MEM_DECOMMIT);
    if (hr != S_OK) {
        tally_fail(&s->large_calls, "decommit of the whole (dwSize 0) -> %s", hr_name(hr));
        return hr;
    }
    memset(s->large_committed, 0, sizeof s->large_committed);
    after_give_back(s, "decommit of the whole large reservation");
    return hr;
}

static HRESULT large_release(struct scene *s)
{
    s->large_calls.calls++;
    HRESULT hr = IHostMemoryManager_VirtualFree(s->m, s->large, 0, MEM_RELEASE);
    if (hr != S_OK) {
        tally_fail(&s->large_calls, "release -> %s", hr_name(hr));
        return hr;
    }
    s->large_live = false;
    MEMORY_BASIC_INFORMATION info = query(s->m, s->large + large_offset(1));
    if (info.State != MEM_FREE)
        tally_fail(&s->state, "the released large reservation: state %#x, not MEM_FREE", (unsigned)info.State);
    after_give_back(s, "release of the large reservation");
    return hr;
}

/* Frees every block, odd ones first (holes in every segment, then whole
 * segments empty), each checked for its data just before. */
static HRESULT heap_free_all(struct scene *s)
{
    HRESULT first = S_OK;
    for (int pass = 1; pass >= 0; pass--)
        for (int i = pass; i < s->block_count; i += 2) {
            const volatile unsigned char *b = s->blocks[i];
            if (!b)
                continue;
            if (b[0] != block_pattern(i) || b[s->block_sizes[i] - 1] != block_pattern(i))
                tally_fail(&s->state, "heap block %d lost its data before its Free", i);
            s->heap_frees.calls++;
            HRESULT hr = IHostMalloc_Free(s->heap, s->blocks[i]);
            if (hr != S_OK) {
                tally_fail(&s->heap_frees, "Free of block %d (%zu bytes) -> %s", i, s->block_sizes[i], hr_name(hr));
                if (first == S_OK)
                    first = hr;
                continue;
            }
            s->blocks[i] = NULL;
            after_give_back(s, "a heap Free");
        }
    return first;
}

/* The heap's last Release gives its segments back; S_OK when the heap holds
 * no committed byte afterwards and the books validate. */
static HRESULT heap_release(struct scene *s)
{
    s->heap_release.calls++;
    ULONG left = IHostMalloc_Release(s->heap);
    s->heap = NULL;
    hostmem_stats now = stats_of(s->m);
    if (left != 0 || now.heap_bytes != 0) {
        tally_fail(&s->heap_release, "Release -> %u references left, %zu heap bytes still committed", (unsigned)left,
                   now.heap_bytes);
        return E_FAIL;
    }
    after_give_back(s, "the heap's Release");
    return S_OK;
}

static void scene_report(const struct scene *s)
{
    for (int k = 0; k < SHAPES; k++)
        tally_report(&s->decommits[k]);
    tally_report(&s->releases);
    tally_report(&s->large_calls);
    tally_report(&s->heap_frees);
    tally_report(&s->heap_release);
    tally_report(&s->books);
    tally_report(&s->state);
}

/* The words of the first failure any tally of the scene counted, or "". */
static const char *scene_first_failure(const struct scene *s)
{
    const struct tally *all[] = {&s->releases, &s->large_calls, &s->heap_frees, &s->heap_release, &s->books, &s->state};
    for (int k = 0; k < SHAPES; k++)
        if (s->decommits[k].failures)
            return s->decommits[k].first;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->failures)
            return all[i]->first;
    return "";
}

/* Gives back whatever is still held, with room in the kernel, and releases
 * the manager; checked: every call must succeed (else the caller has reported
 * the failure that came first, a disabled manager say). */
static void scene_free(struct scene *s, bool checked)
{
    HRESULT hr;
#define FREED(call)                                           \
    do {                                                      \
        if ((hr = (call)) != S_OK && checked)                 \
            TEST_FAIL_AT("%s -> %s", #call, hr_name(hr));      \
    } while (0)
    for (int k = 0; k < s->count; k++)
        if (s->pieces[k].live)
            FREED(IHostMemoryManager_VirtualFree(s->m, s->pieces[k].base, 0, MEM_RELEASE));
    if (s->large_live)
        FREED(IHostMemoryManager_VirtualFree(s->m, s->large, 0, MEM_RELEASE));
    if (s->heap) {
        for (int i = 0; i < s->block_count; i++)
            if (s->blocks[i])
                FREED(IHostMalloc_Free(s->heap, s->blocks[i]));
        IHostMalloc_Release(s->heap);
    }
    FREED(IHostMemoryManager_VirtualFree(s->m, s->spare_committed, 0, MEM_RELEASE));
    FREED(IHostMemoryManager_VirtualFree(s->m, s->spare_reserved, 0, MEM_RELEASE));
#undef FREED
    CHECK_EQ(IHostMemoryManager_Release(s->m), 0);
}

/* ---- the give-backs where the kernel has nothing left (items 1 to 3) -------------------------- */

struct snapshot {
    hostmem_stats stats;
    MEMORY_BASIC_INFORMATION info[PIECE_PAGES];
};

static void snap(IHostMemoryManager *m, char *base, struct snapshot *out)
{
    memset(out, 0, sizeof *out);
    out->stats = stats_of(m);
    for (int i = 0; i < PIECE_PAGES; i++)
        out->info[i] = query(m, base + i * P);
}

static bool snap_equal(const struct snapshot *a, const struct snapshot *b)
{
    return memcmp(a->info, b->info, sizeof a->info) == 0 && a->stats.reservations == b->stats.reservations &&
           a->stats.reserved_bytes == b->stats.reserved_bytes && a->stats.committed_bytes == b->stats.committed_bytes &&
           a->stats.book_protected_pages == b->stats.book_protected_pages;
}

/* What may still be refused where the kernel is full - a reserve, a commit, a
 * VirtualProtect that needs a new mapping - is refused with E_OUTOFMEMORY and
 * nothing changed (SPEC §2). Refusal is not required. */
static void taking_is_refused_cleanly_or_works(struct scene *s)
{
    struct snapshot before, after;
    void *p;
    snap(s->m, s->spare_reserved, &before);
    HRESULT hr = IHostMemoryManager_VirtualAlloc(s->m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                 eTaskCritical, &p);
    snap(s->m, s->spare_reserved, &after);
    if (hr == S_OK) {
        CHECK_HR(IHostMemoryManager_VirtualFree(s->m, p, 0, MEM_RELEASE), S_OK);
    } else {
        CHECK_HR(hr, E_OUTOFMEMORY);
        CHECK(snap_equal(&before, &after));
    }
    fill(s->filler);

    snap(s->m, s->spare_reserved, &before);
    hr = commit(s->m, s->spare_reserved + 5 * P, P, PAGE_READWRITE);
    snap(s->m, s->spare_reserved, &after);
    if (hr == S_OK) {
        CHECK(after.info[5].State == MEM_COMMIT);
        CHECK_HR(IHostMemoryManager_VirtualFree(s->m, s->spare_reserved + 5 * P, P, MEM_DECOMMIT), S_OK);
    } else {
        CHECK_HR(hr, E_OUTOFMEMORY);
        CHECK(snap_equal(&before, &after));
    }
    fill(s->filler);

    DWORD old = 0;
    snap(s->m, s->spare_committed, &before);
    hr = IHostMemoryManager_VirtualProtect(s->m, s->spare_committed + 7 * P, P, PAGE_READONLY, &old);
    snap(s->m, s->spare_committed, &after);
    if (hr == S_OK) {
        CHECK_EQ(old, PAGE_READWRITE);
        CHECK_HR(IHostMemoryManager_VirtualProtect(s->m, s->spare_committed + 7 * P, P, PAGE_READWRITE, &old), S_OK);
    } else {
        CHECK_HR(hr, E_OUTOFMEMORY);
        CHECK(snap_equal(&before, &after));
    }
    CHECK(((volatile unsigned char *)s->spare_committed)[7 * P] == 0x5C);
    fill(s->filler);
}

/* hostmem.h, SPEC §4 rule 7: the books are checked without the kernel: S_OK.
 * Only the kernel check may say it cannot look (E_FAIL, "cannot ..."). */
static void validate_answers_when_full(IHostMemoryManager *m, const char *where)
{
    char why[256] = "";
    HRESULT hr = hostmem_validate(m, 0, why, sizeof why);
    if (hr != S_OK)
        TEST_FAIL_AT("%s: hostmem_validate(m, 0) -> %s: %s", where, hr_name(hr), why);
    why[0] = 0;
    hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK && !(hr == E_FAIL && strstr(why, "cannot")))
        TEST_FAIL_AT("%s: hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL) -> %s: %s", where, hr_name(hr), why);
}

/* Every give-back of the scene, with the kernel full all along. The first
 * of each two reservations of a shape is released here; the other stays
 * (with whatever pages the kernel could not yet protect) until after room is
 * made. */
static void give_everything_back(struct scene *s, const char *where)
{
    taking_is_refused_cleanly_or_works(s);
    validate_answers_when_full(s->m, where);
    for (int k = 0; k < s->count; k++)
        decommit_shape(s, &s->pieces[k]);
    heap_free_all(s);
    for (int k = 0; k < s->count; k += 2)
        release_piece(s, &s->pieces[k]);
    heap_release(s);
    large_decommit_interior(s);
    large_decommit_whole(s);
    large_release(s);
    validate_answers_when_full(s->m, where);
}

/* Room again: one more call (a release) is the manager's chance to catch up;
 * then no page is protected only in the books, and the kernel agrees. */
static void after_room_is_made(struct scene *s)
{
    CHECK_HR(IHostMemoryManager_VirtualFree(s->m, s->catch_up, 0, MEM_RELEASE), S_OK);
    hostmem_stats now = stats_of(s->m);
    CHECK_EQ(now.book_protected_pages, 0);
    char why[256] = "";
    HRESULT hr = hostmem_validate(s->m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        TEST_FAIL_AT("with room again: hostmem_validate(HOSTMEM_VALIDATE_KERNEL) -> %s: %s", hr_name(hr), why);
    scene_check(s, "room was made again");
}

#define CEILING_EACH 8
#define CEILING_BLOCKS 160

static void at_the_mapping_ceiling_body(void)
{
    struct scene s;
    if (!scene_make(&s, CEILING_EACH, CEILING_BLOCKS))
        return;
    struct filler f;
    size_t limit = max_map_count();
    REQUIRE(filler_make(&f, limit + 4096, P));
    printf("filling the mapping table (vm.max_map_count %zu)\n", limit);
    fflush(stdout);
    fill(&f);
    REQUIRE(f.last_error == ENOMEM);
    s.filler = &f;
    give_everything_back(&s, "at vm.max_map_count");
    s.filler = NULL;
    size_t filled = f.count;
    unfill(&f);
    after_room_is_made(&s);
    scene_report(&s);
    if (!s.watch)
        printf("(MEM_WRITE_WATCH is not supported here: write-watched reservations left out)\n");
    printf("at vm.max_map_count: %d reservations, the heap and %zu MiB; %zu filler mappings at the end\n", s.count,
           LARGE_SIZE / MIB, filled);
    scene_free(&s, true);
    filler_free(&f);
}

/* SPEC §4 rule 7 (issue 22 item 1): at vm.max_map_count every decommit -
 * interior, first and last page, the whole reservation, holes, across
 * protections and guard pages, write-watched, in a reservation larger than
 * an arena's quarter - every release, every heap Free and the heap's Release
 * succeed; the books follow and validate; with room again, one call later,
 * no page is protected only in the books and the kernel agrees. */
TEST(every_give_back_succeeds_at_vm_max_map_count)
{
    if (max_map_count() > 400000)
        TEST_SKIP("vm.max_map_count is %zu: over 400,000 mappings are too many to fill in a test", max_map_count());
    test_in_child(at_the_mapping_ceiling_body, "give-backs at vm.max_map_count");
}

/* The little the address space may grow by once the limit is set: the manager's
 * books may need nothing more, and the filler takes it all anyway. */
#define AS_HEADROOM (8 * MIB)

static void with_the_address_space_used_up_body(void)
{
    struct scene s;
    if (!scene_make(&s, CEILING_EACH, CEILING_BLOCKS))
        return;
    struct filler f;
    /* chunks for what the large release gives back, pages for the rest */
    REQUIRE(filler_make(&f, 16384, 1 * MIB));
    size_t now = test_vm_size();
    REQUIRE(now > 0);
    REQUIRE(test_limit_address_space(now + AS_HEADROOM) == 0);
    fill(&f);
    REQUIRE(f.last_error == ENOMEM);
    s.filler = &f;
    give_everything_back(&s, "with RLIMIT_AS used up");
    s.filler = NULL;
    CHECK(test_limit_address_space(UINT64_MAX) == 0);
    unfill(&f);
    after_room_is_made(&s);
    scene_report(&s);
    scene_free(&s, true);
    filler_free(&f);
}

/* SPEC §4 rule 7 (issue 22 item 2): the same with RLIMIT_AS used up by other
 * mappings. */
TEST(every_give_back_succeeds_with_rlimit_as_used_up)
{
    test_in_child(with_the_address_space_used_up_body, "give-backs with RLIMIT_AS used up");
}

/* A manager with one committed reservation, for the look at its books. */
static IHostMemoryManager *manager_with_a_reservation(void **p)
{
    IHostMemoryManager *m = NULL;
    if (hostmem_create(NULL, &m) != S_OK)
        return NULL;
    if (IHostMemoryManager_VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, p) !=
        S_OK) {
        IHostMemoryManager_Release(m);
        return NULL;
    }
    return m;
}

static void validate_at_the_ceiling_body(void)
{
    void *p;
    IHostMemoryManager *m = manager_with_a_reservation(&p);
    REQUIRE(m);
    struct filler f;
    REQUIRE(filler_make(&f, max_map_count() + 4096, P));
    fill(&f);
    REQUIRE(f.last_error == ENOMEM);
    validate_answers_when_full(m, "at vm.max_map_count");
    filler_free(&f);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* hostmem.h, SPEC §4 rule 7 (issue 22 item 3): hostmem_validate of the books
 * answers S_OK at vm.max_map_count - not "cannot check"; only the kernel
 * check may say that it cannot look. */
TEST(validate_of_the_books_answers_at_vm_max_map_count)
{
    if (max_map_count() > 400000)
        TEST_SKIP("vm.max_map_count is %zu: over 400,000 mappings are too many to fill in a test", max_map_count());
    test_in_child(validate_at_the_ceiling_body, "validate at vm.max_map_count");
}

static void validate_with_the_address_space_used_up_body(void)
{
    void *p;
    IHostMemoryManager *m = manager_with_a_reservation(&p);
    REQUIRE(m);
    struct filler f;
    REQUIRE(filler_make(&f, 16384, 1 * MIB));
    REQUIRE(test_limit_address_space(test_vm_size() + AS_HEADROOM) == 0);
    fill(&f);
    REQUIRE(f.last_error == ENOMEM);
    validate_answers_when_full(m, "with RLIMIT_AS used up");
    CHECK(test_limit_address_space(UINT64_MAX) == 0);
    filler_free(&f);
    CHECK_HR(IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* The same (issue 22 item 3) with RLIMIT_AS used up by other mappings. */
TEST(validate_of_the_books_answers_with_rlimit_as_used_up)
{
    test_in_child(validate_with_the_address_space_used_up_body, "validate with RLIMIT_AS used up");
}

/* ---- fork while threads give back (item 4) ---------------------------------------------- */
#if defined(UNDER_ASAN)
#define FORKS 100
#else
#define FORKS 300
#endif
#define CYCLE_SIZE (192 * KIB)
#define CHILD_RESERVATIONS 8

static _Atomic int cycling_stop;
struct cycler {
    IHostMemoryManager *m;
    int decommit_first; /* reserve, commit, decommit, release; else reserve+commit, release */
};

/* The first and last pages are written, so that a page not discarded is seen (only
 * those: the time between the kernel's change and the books' is what a fork must hit). */
static void *cycle_main(void *arg)
{
    struct cycler *c = arg;
    while (!atomic_load(&cycling_stop)) {
        void *r, *p;
        if (c->decommit_first) {
            if (IHostMemoryManager_VirtualAlloc(c->m, NULL, CYCLE_SIZE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r) !=
                S_OK)
                continue;
            if (IHostMemoryManager_VirtualAlloc(c->m, r, CYCLE_SIZE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p) ==
                S_OK) {
                ((volatile char *)r)[0] = 0x33;
                ((volatile char *)r)[CYCLE_SIZE - 1] = 0x33;
                IHostMemoryManager_VirtualFree(c->m, r, CYCLE_SIZE, MEM_DECOMMIT);
            }
        } else {
            if (IHostMemoryManager_VirtualAlloc(c->m, NULL, CYCLE_SIZE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                                eTaskCritical, &r) != S_OK)
                continue;
            ((volatile char *)r)[0] = 0x44;
            ((volatile char *)r)[CYCLE_SIZE - 1] = 0x44;
        }
        IHostMemoryManager_VirtualFree(c->m, r, 0, MEM_RELEASE);
    }
    return NULL;
}

/* In a child forked while the cyclers ran: the manager agrees with the kernel;
 * new reservations where the vanished threads' were are reserved and
 * no-access (VirtualQuery, and the kernel check), and committed they read
 * zero. The exit status says what failed (0: nothing). */
static int child_after_fork(IHostMemoryManager *m)
{
    alarm(10); /* a watchdog: a hang becomes a failure, not a stuck test */
    char why[256] = "";
    if (hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why) != S_OK) {
        fprintf(stderr, "  FAIL (a child) validate after fork: %s\n", why); /* run.sh shows FAIL lines */
        return 1;
    }
    void *r[CHILD_RESERVATIONS];
    for (int k = 0; k < CHILD_RESERVATIONS; k++)
        if (IHostMemoryManager_VirtualAlloc(m, NULL, CYCLE_SIZE, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r[k]) != S_OK)
            return 2;
    for (int k = 0; k < CHILD_RESERVATIONS; k++) {
        MEMORY_BASIC_INFORMATION info = query(m, r[k]);
        if (info.State != MEM_RESERVE || info.RegionSize != CYCLE_SIZE || info.Protect != 0) {
            fprintf(stderr, "  FAIL (a child) a new reservation at %p: state %#x, %zu bytes\n", r[k],
                    (unsigned)info.State, (size_t)info.RegionSize);
            return 3;
        }
    }
    if (hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why) != S_OK) {
        fprintf(stderr, "  FAIL (a child) validate of new reservations: %s\n", why);
        return 4;
    }
    for (int k = 0; k < CHILD_RESERVATIONS; k++) {
        if (commit(m, r[k], CYCLE_SIZE, PAGE_READWRITE) != S_OK)
            return 2;
        for (size_t i = 0; i < CYCLE_SIZE; i += P)
            if (((volatile char *)r[k])[i] != 0) {
                fprintf(stderr, "  FAIL (a child) a newly committed page at %p reads %#x\n", (void *)((char *)r[k] + i),
                        ((volatile unsigned char *)r[k])[i]);
                return 5;
            }
    }
    for (int k = 0; k < CHILD_RESERVATIONS; k++)
        if (IHostMemoryManager_VirtualFree(m, r[k], 0, MEM_RELEASE) != S_OK)
            return 2;
    return 0; /* the parent's harness validates its own manager: no third look here */
}

/* docs/host.md "fork", SPEC §4 (issue 22 item 4): a child forked while one
 * thread reserves+commits 192 KiB and releases, and another reserves,
 * commits, decommits and releases, finds every half-made reservation of the
 * threads it does not have given back whole: the kernel agrees with the map,
 * new reservations there are no-access, and their pages read zero. */
TEST(fork_gives_back_whole_what_vanished_threads_were_making)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    struct cycler c[2] = {{m, 0}, {m, 1}};
    pthread_t t[2];
    atomic_store(&cycling_stop, 0);
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&t[i], NULL, cycle_main, &c[i]) == 0);
    int failed = 0, forks = 0, statuses[8] = {0};
    fflush(stdout);
    fflush(stderr);
    for (; forks < FORKS && failed < 5; forks++) { /* five failures say enough */
        pid_t pid = fork();
        if (pid < 0) {
            TEST_FAIL_AT("fork: %s", strerror(errno));
            break;
        }
        if (pid == 0)
            _exit(child_after_fork(m));
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
            statuses[WIFEXITED(status) ? WEXITSTATUS(status) & 7 : 0]++;
        }
    }
    atomic_store(&cycling_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    if (failed)
        TEST_FAIL_AT("%d of %d children failed (killed %d; validate after fork %d; calls refused %d; new reservation "
                     "not reserved %d; kernel disagrees on new reservations %d; recommitted pages not zero %d)",
                     failed, forks, statuses[0], statuses[1], statuses[2], statuses[3], statuses[4], statuses[5]);
    CHECK_EQ(IHostMemoryManager_Release(m), 0); /* the parent went on undisturbed: it validates */
}

/* ---- through the seam (item 5) -------------------------------------------------------------------- */

/* A copy of the real table whose map, protect and unmap can be refused by
 * countdown (the seam_at-th call; persistent: and every later one) and whose
 * maps are counted. */
static struct hostmem_os_ops seam;
static int seam_at, seam_persistent, seam_calls, seam_fired;
static long seam_maps;
static const char *seam_refused_call;

static int seam_refuses(const char *call)
{
    if (!seam_at)
        return 0;
    seam_calls++;
    if (seam_calls == seam_at || (seam_persistent && seam_calls > seam_at)) {
        if (!seam_fired++)
            seam_refused_call = call;
        return 1;
    }
    return 0;
}

static int s_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    seam_maps++;
    return seam_refuses("map") ? ENOMEM : hostmem_os_linux.map(hint, size, prot, fixed, out);
}
static int s_map_large(void *hint, size_t size, int prot, int fixed, void **out)
{
    seam_maps++;
    return seam_refuses("map_large") ? ENOMEM : hostmem_os_linux.map_large(hint, size, prot, fixed, out);
}
static int s_protect(void *a, size_t s, int p)
{
    return seam_refuses("protect") ? ENOMEM : hostmem_os_linux.protect(a, s, p);
}
static int s_unmap(void *a, size_t s)
{
    return seam_refuses("unmap") ? ENOMEM : hostmem_os_linux.unmap(a, s);
}

static void seam_arm(int at, int persistent)
{
    seam_at = at;
    seam_persistent = persistent;
    seam_calls = 0;
    seam_fired = 0;
    seam_refused_call = "";
}

/* One give-back of the scene; S_OK or the first refusal. */
typedef HRESULT (*give_back_fn)(struct scene *s);

static struct piece *piece_of(struct scene *s, enum shape shape)
{
    for (int k = 0; k < s->count; k++)
        if (s->pieces[k].shape == shape && s->pieces[k].live)
            return &s->pieces[k];
    return NULL;
}

#define SHAPE_FN(name, shape)                        \
    static HRESULT name(struct scene *s)             \
    {                                                \
        struct piece *p = piece_of(s, shape);        \
        return p ? decommit_shape(s, p) : S_OK;      \
    }
SHAPE_FN(gb_interior, SHAPE_INTERIOR)
SHAPE_FN(gb_first, SHAPE_FIRST)
SHAPE_FN(gb_last, SHAPE_LAST)
SHAPE_FN(gb_whole, SHAPE_WHOLE)
SHAPE_FN(gb_holes, SHAPE_HOLES)
SHAPE_FN(gb_across, SHAPE_ACROSS)
SHAPE_FN(gb_guard, SHAPE_GUARD)
SHAPE_FN(gb_watch, SHAPE_WATCH)

static HRESULT gb_release_untouched(struct scene *s)
{
    return release_piece(s, piece_of(s, SHAPE_UNTOUCHED));
}
/* a reservation with holes: its pieces of protection are several runs */
static HRESULT gb_release_decommitted(struct scene *s)
{
    struct piece *p = piece_of(s, SHAPE_HOLES);
    const struct hostmem_os_ops *swept = hostmem_os;
    hostmem_os = &hostmem_os_linux; /* the holes are made with the kernel's consent */
    decommit_shape(s, p);
    hostmem_os = swept;
    return release_piece(s, p);
}
static HRESULT gb_release_guard(struct scene *s)
{
    return release_piece(s, piece_of(s, SHAPE_GUARD));
}
static HRESULT gb_large_interior(struct scene *s)
{
    return large_decommit_interior(s);
}
static HRESULT gb_large_whole(struct scene *s)
{
    return large_decommit_whole(s);
}
static HRESULT gb_large_release(struct scene *s)
{
    return large_release(s);
}
static HRESULT gb_heap_free(struct scene *s)
{
    return heap_free_all(s);
}
static HRESULT gb_heap_release(struct scene *s)
{
    const struct hostmem_os_ops *swept = hostmem_os;
    hostmem_os = &hostmem_os_linux; /* the blocks go with the kernel's consent; the Release is what is swept */
    for (int i = 0; i < s->block_count; i++)
        if (s->blocks[i] && IHostMalloc_Free(s->heap, s->blocks[i]) == S_OK)
            s->blocks[i] = NULL;
    hostmem_os = swept;
    return heap_release(s);
}
static HRESULT gb_validate_books(struct scene *s)
{
    char why[256] = "";
    s->books.calls++;
    HRESULT hr = hostmem_validate(s->m, 0, why, sizeof why);
    if (hr != S_OK)
        tally_fail(&s->books, "hostmem_validate(m, 0) -> %s: %s", hr_name(hr), why);
    return hr;
}

static const struct {
    const char *name;
    give_back_fn run;
} give_backs[] = {
    {"decommit of an interior page", gb_interior},
    {"decommit of the first page", gb_first},
    {"decommit of the last page", gb_last},
    {"decommit of the whole reservation (dwSize 0)", gb_whole},
    {"decommit of three holes", gb_holes},
    {"decommit across two protections", gb_across},
    {"decommit across guard pages", gb_guard},
    {"decommit in a write-watched reservation", gb_watch},
    {"release of a reservation as it was made", gb_release_untouched},
    {"release of a reservation with holes", gb_release_decommitted},
    {"release of a reservation with guard pages", gb_release_guard},
    {"decommit of an interior page of a large reservation", gb_large_interior},
    {"decommit of a whole large reservation", gb_large_whole},
    {"release of a large reservation", gb_large_release},
    {"IHostMalloc Free of every block", gb_heap_free},
    {"IHostMalloc Release", gb_heap_release},
    {"hostmem_validate(m, 0)", gb_validate_books},
};
#define GIVE_BACKS (sizeof give_backs / sizeof give_backs[0])
#define SEAM_BLOCKS 24

/* SPEC §4 rule 7 (issue 22 item 5): whichever map, protect or unmap of a
 * give-back call the kernel refuses - each in turn, once (transient) or from
 * then on (persistent) - the call returns S_OK, VirtualQuery, the counters and
 * the neighbours' data are right, and the books validate; with the real
 * kernel back and one more call made, no page is protected only in the books
 * and the kernel agrees. */
TEST(every_give_back_succeeds_when_the_kernel_refuses_any_one_call)
{
    long runs = 0, refused = 0;
    for (size_t o = 0; o < GIVE_BACKS; o++)
        for (int persistent = 0; persistent < 2; persistent++) {
            int failures = 0;
            char first[400] = "";
            for (int at = 1; at <= 200; at++) {
                struct scene s;
                hostmem_os = &hostmem_os_linux;
                if (!scene_make(&s, 1, SEAM_BLOCKS))
                    return;
                hostmem_os = &seam;
                seam_arm(at, persistent);
                HRESULT hr = give_backs[o].run(&s);
                int fired = seam_fired;
                const char *call = seam_refused_call;
                seam_arm(0, 0);
                hostmem_os = &hostmem_os_linux;
                runs++;
                refused += fired;
                /* one more call, with the real kernel: the manager's chance to catch up */
                HRESULT catch_up = IHostMemoryManager_VirtualFree(s.m, s.catch_up, 0, MEM_RELEASE);
                hostmem_stats now = stats_of(s.m);
                char why[256] = "";
                HRESULT kernel = hostmem_validate(s.m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
                const char *counted = scene_first_failure(&s);
                char what[300] = "";
                if (hr != S_OK)
                    snprintf(what, sizeof what, "%s", counted[0] ? counted : hr_name(hr));
                else if (counted[0])
                    snprintf(what, sizeof what, "S_OK, but %s", counted);
                else if (catch_up != S_OK)
                    snprintf(what, sizeof what, "then a release with the kernel back -> %s", hr_name(catch_up));
                else if (now.book_protected_pages)
                    snprintf(what, sizeof what, "then, one call later, %zu pages protected only in the books",
                             now.book_protected_pages);
                else if (kernel != S_OK)
                    snprintf(what, sizeof what, "then the kernel check: %s", why);
                if (what[0] && !failures++)
                    snprintf(first, sizeof first, "%s call %d (%s) refused: %s",
                             persistent ? "from" : "only", at, call, what);
                scene_free(&s, false);
                if (!fired)
                    break; /* the give-back made fewer calls than at: swept */
            }
            if (failures)
                TEST_FAIL_AT("%s, the kernel refusing %s: %d run%s failed; the first: %s", give_backs[o].name,
                             persistent ? "persistently" : "one call", failures, failures == 1 ? "" : "s", first);
        }
    printf("test_giveback: %ld runs through the seam, %ld calls refused\n", runs, refused);
}

/* SPEC §4 rule 7, STYLE.md "metadata that never needs a new mapping" (issue 22
 * item 5): no give-back path calls map - once the manager's normal paths have
 * their metadata (every give-back made once before). */
TEST(no_give_back_path_maps_memory)
{
    struct scene s;
    REQUIRE(scene_make(&s, 1, SEAM_BLOCKS));
    for (size_t o = 0; o < GIVE_BACKS; o++)
        give_backs[o].run(&s);
    for (int k = 0; k < s.count; k++)
        if (s.pieces[k].live)
            release_piece(&s, &s.pieces[k]);
    CHECK_HR(IHostMemoryManager_VirtualFree(s.m, s.catch_up, 0, MEM_RELEASE), S_OK);
    /* the same manager again: what the warm-up's metadata was is there to serve */
    REQUIRE(scene_populate(&s, 1, SEAM_BLOCKS));
    for (size_t o = 0; o < GIVE_BACKS; o++) {
        hostmem_os = &seam;
        long before = seam_maps;
        give_backs[o].run(&s);
        long maps = seam_maps - before;
        hostmem_os = &hostmem_os_linux;
        if (maps)
            TEST_FAIL_AT("%s called map %ld time%s", give_backs[o].name, maps, maps == 1 ? "" : "s");
    }
    scene_report(&s);
    CHECK_HR(IHostMemoryManager_VirtualFree(s.m, s.catch_up, 0, MEM_RELEASE), S_OK);
    scene_free(&s, true);
}

int main(void)
{
    P = hostmem_page_size();
    seam = hostmem_os_linux;
    seam.map = s_map;
    seam.protect = s_protect;
    seam.unmap = s_unmap;
    if (hostmem_os_linux.map_large)
        seam.map_large = s_map_large;
    /* Filling the mapping table: ThreadSanitizer unmaps shadow memory of its own,
     * which at vm.max_map_count the kernel refuses ("unable to unmap"), and
     * aborts; AddressSanitizer lives with it. make check sets
     * HOSTMEM_SKIP_MAP_LIMIT for both sanitizer runs, as for test_scale. */
#if defined(UNDER_TSAN)
    const char *no_ceiling = "ThreadSanitizer aborts at vm.max_map_count: it cannot unmap its own shadow memory there";
#else
    const char *no_ceiling = getenv("HOSTMEM_SKIP_MAP_LIMIT")
                                 ? "HOSTMEM_SKIP_MAP_LIMIT is set (make check sets it for the sanitizer runs)"
                                 : NULL;
#endif
#if defined(UNDER_ASAN) || defined(UNDER_TSAN)
    const char *no_limit = "a sanitizer's shadow memory (terabytes of address space) cannot live under a small RLIMIT_AS";
#else
    const char *no_limit = NULL;
#endif
    if (no_ceiling) {
        SKIP(every_give_back_succeeds_at_vm_max_map_count, "%s", no_ceiling);
        SKIP(validate_of_the_books_answers_at_vm_max_map_count, "%s", no_ceiling);
    } else {
        RUN(every_give_back_succeeds_at_vm_max_map_count);
        RUN(validate_of_the_books_answers_at_vm_max_map_count);
    }
    if (no_limit) {
        SKIP(every_give_back_succeeds_with_rlimit_as_used_up, "%s", no_limit);
        SKIP(validate_of_the_books_answers_with_rlimit_as_used_up, "%s", no_limit);
    } else {
        RUN(every_give_back_succeeds_with_rlimit_as_used_up);
        RUN(validate_of_the_books_answers_with_rlimit_as_used_up);
    }
#ifdef UNDER_TSAN
    SKIP(fork_gives_back_whole_what_vanished_threads_were_making, "ThreadSanitizer does not support fork with threads");
#else
    RUN(fork_gives_back_whole_what_vanished_threads_were_making);
#endif
    RUN(every_give_back_succeeds_when_the_kernel_refuses_any_one_call);
    RUN(no_give_back_path_maps_memory);
    return TEST_SUMMARY("test_giveback");
}
