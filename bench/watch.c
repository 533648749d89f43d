/*
 * watch.c - write watch three ways (issue 14): hostmem's kernel tracking
 * (userfaultfd write-protect + PAGEMAP_SCAN), hostmem's emulation (write-protect
 * and the first write's SIGSEGV), and the floor written here (Wine's way: a
 * bitmap and a SIGSEGV handler of its own), per scan and per first write at
 * 0.1%, 1% and 10% of the region written; what hostmem's handler costs another
 * handler's faults; and a PAGE_GUARD page's first touch against a fresh page's.
 *
 * The figures have no targets: informational, each against the floor measured
 * in the same process, medians of rounds. Never asserts a timing; never takes
 * SIGSEGV from a handler already there (the floor's handler passes on the
 * faults that are not its own, and is installed before any of hostmem's).
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "harness.h"
#include "sections.h"

/* ---- write watch three ways ---------------------------------------------------- */

/*
 * One region of watch_bytes, committed read-write and written through once
 * before anything is timed (every first write measured is then a write to a
 * resident page, and a scan walks a fully populated range, as a GC heap's is),
 * tracked by:
 *   - hostmem's kernel tracking (userfaultfd async write-protect + PAGEMAP_SCAN);
 *   - hostmem's emulation (HOSTMEM_EMULATE_WRITE_WATCH: write-protection and the
 *     first write's SIGSEGV);
 *   - the floor, Wine's approach written here: after a reset the region is
 *     read-only and a bitmap clear; a SIGSEGV handler sets the page's bit and
 *     makes that one page writable; a scan walks the bitmap.
 * A round writes one byte in each of `written` distinct random pages (timed:
 * per first write), then fetches them all with a reset (timed: per scan), with
 * room for every page of the region so that a scan reporting more or fewer
 * pages than were written is seen.
 */
enum { WATCH_RAW, WATCH_KERNEL, WATCH_EMULATED, WATCH_KINDS };
static const char *const watch_kind_name[WATCH_KINDS] = {"raw", "kernel", "emulated"};

/* the floor's state, read by its SIGSEGV handler */
static struct {
    char *_Atomic base;      /* NULL: no region */
    size_t bytes;
    _Atomic uint64_t *bits;  /* a bit a page: written since the last reset */
    _Atomic int overflowed;  /* a page's mprotect was refused (vm.max_map_count) */
} raw_watch;
static struct sigaction raw_watch_previous;

static void raw_watch_fault(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    uintptr_t base = (uintptr_t)atomic_load_explicit(&raw_watch.base, memory_order_acquire);
    uintptr_t at = (uintptr_t)info->si_addr;
    if (base && at - base < raw_watch.bytes) {
        size_t page = (at - base) / P;
        atomic_fetch_or_explicit(&raw_watch.bits[page / 64], (uint64_t)1 << (page % 64), memory_order_relaxed);
        if (mprotect((char *)base + page * P, P, PROT_READ | PROT_WRITE)) {
            /* a page cannot be a mapping of its own: the write must still go on */
            atomic_store(&raw_watch.overflowed, 1);
            mprotect((void *)base, raw_watch.bytes, PROT_READ | PROT_WRITE);
        }
        errno = saved;
        return;
    }
    /* not ours: the handler that was there, else the default action (the
     * access faults again and ends the process as it would have) */
    if ((raw_watch_previous.sa_flags & SA_SIGINFO) && raw_watch_previous.sa_sigaction) {
        raw_watch_previous.sa_sigaction(sig, info, context);
    } else if (!(raw_watch_previous.sa_flags & SA_SIGINFO) && raw_watch_previous.sa_handler != SIG_DFL &&
               raw_watch_previous.sa_handler != SIG_IGN) {
        raw_watch_previous.sa_handler(sig);
    } else {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &dfl, NULL);
    }
    errno = saved;
}

/* Once, before any manager that installs hostmem's handler: that one then
 * stands in front of this one and passes it the faults that are not hostmem's. */
static void raw_watch_install(void)
{
    static int installed;
    if (installed++)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = raw_watch_fault;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &raw_watch_previous)) {
        fprintf(stderr, "bench: sigaction(SIGSEGV): %s\n", strerror(errno));
        exit(1);
    }
}

/* The floor's GetWriteWatch with reset: the written pages in order, then the
 * whole region read-only again. */
static size_t raw_watch_scan(void **out, size_t max)
{
    char *base = atomic_load_explicit(&raw_watch.base, memory_order_relaxed);
    size_t n = 0, words = (raw_watch.bytes / P + 63) / 64;
    for (size_t w = 0; w < words; w++) {
        uint64_t bits = atomic_load_explicit(&raw_watch.bits[w], memory_order_relaxed);
        if (!bits)
            continue;
        atomic_store_explicit(&raw_watch.bits[w], 0, memory_order_relaxed);
        for (; bits && n < max; bits &= bits - 1)
            out[n++] = base + (w * 64 + (size_t)__builtin_ctzll(bits)) * P;
    }
    mprotect(base, raw_watch.bytes, PROT_READ);
    return n;
}

struct watch_region {
    IHostMemoryManager *m; /* NULL: the floor */
    char *base;
    size_t pages;
    uint32_t *order;       /* a permutation of the pages: a round writes its first `written` */
    void **found;          /* room for every page */
    size_t rounds, mismatched; /* rounds whose scan did not return exactly the pages written */
};

/* GetWriteWatch with WRITE_WATCH_FLAG_RESET over the whole region */
static size_t watch_scan(struct watch_region *w)
{
    if (!w->m)
        return raw_watch_scan(w->found, w->pages);
    uintptr_t count = w->pages;
    ULONG granularity;
    HRESULT hr = hostmem_get_write_watch(w->m, WRITE_WATCH_FLAG_RESET, w->base, w->pages * P, w->found, &count,
                                         &granularity);
    if (hr != S_OK)
        die("GetWriteWatch", hr);
    return count;
}

static void watch_open(struct watch_region *w, IHostMemoryManager *m)
{
    memset(w, 0, sizeof *w);
    w->m = m;
    w->pages = watch_bytes / P;
    if (m) {
        void *p;
        HRESULT hr = IHostMemoryManager_VirtualAlloc(m, NULL, watch_bytes, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
                                                     PAGE_READWRITE, eTaskCritical, &p);
        if (hr != S_OK)
            die("VirtualAlloc(MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH)", hr);
        w->base = p;
    } else {
        w->base = mmap(NULL, watch_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (w->base == MAP_FAILED)
            die("mmap", E_OUTOFMEMORY);
        raw_watch.bytes = watch_bytes;
        raw_watch.bits = calloc((w->pages + 63) / 64, sizeof(uint64_t));
        atomic_store(&raw_watch.overflowed, 0);
        atomic_store_explicit(&raw_watch.base, w->base, memory_order_release);
    }
    w->order = malloc(w->pages * sizeof *w->order);
    w->found = malloc(w->pages * sizeof *w->found);
    if (!w->order || !w->found || (!m && !raw_watch.bits))
        die("malloc", E_OUTOFMEMORY);
    for (size_t i = 0; i < w->pages; i++)
        w->order[i] = (uint32_t)i;
    /* every page resident, then everything reset */
    for (size_t i = 0; i < w->pages; i++)
        ((volatile char *)w->base)[i * P] = 1;
    watch_scan(w);
}

static void watch_close(struct watch_region *w)
{
    if (w->m) {
        IHostMemoryManager_VirtualFree(w->m, w->base, 0, MEM_RELEASE);
    } else {
        atomic_store(&raw_watch.base, NULL);
        munmap(w->base, watch_bytes);
        free((void *)raw_watch.bits);
        raw_watch.bits = NULL;
    }
    free(w->order);
    free(w->found);
}

/* One round: ns per first write, us per scan. */
static void watch_round(struct watch_region *w, size_t written, double *write_ns, double *scan_us)
{
    for (size_t i = 0; i < written; i++) { /* distinct random pages: a partial Fisher-Yates shuffle */
        size_t j = i + rnd() % (w->pages - i);
        uint32_t t = w->order[i];
        w->order[i] = w->order[j];
        w->order[j] = t;
    }
    volatile char *base = w->base;
    double t0 = now();
    for (size_t i = 0; i < written; i++)
        base[(size_t)w->order[i] * P] = (char)i;
    double t1 = now();
    size_t found = watch_scan(w);
    double t2 = now();
    w->rounds++;
    w->mismatched += found != written;
    *write_ns = (t1 - t0) * 1e9 / (double)written;
    *scan_us = (t2 - t1) * 1e6;
}

/* One warm-up round, then opt_runs rounds: the medians, and the rounds they
 * are of. A round longer than WATCH_SLOW_ROUND seconds (hostmem's emulation at
 * 10% of 1 GiB, whose fault handler's cost grows with the runs the writes make)
 * is its own warm-up: it counts, and more are taken only while the figure has
 * spent less than WATCH_SLOW_BUDGET, so that the section stays well under a
 * minute. */
#define WATCH_SLOW_ROUND 1.0
#define WATCH_SLOW_BUDGET 3.0
static int watch_measure(struct watch_region *w, size_t written, double *write_ns, double *scan_us, double *round_s)
{
    double wv[MAX_RUNS], sv[MAX_RUNS];
    double start = now();
    watch_round(w, written, &wv[0], &sv[0]);
    *round_s = now() - start;
    int slow = *round_s > WATCH_SLOW_ROUND, n = slow;
    while (n < opt_runs && (!slow || now() - start < WATCH_SLOW_BUDGET)) {
        watch_round(w, written, &wv[n], &sv[n]);
        n++;
    }
    qsort(wv, (size_t)n, sizeof wv[0], cmp_double);
    qsort(sv, (size_t)n, sizeof sv[0], cmp_double);
    *write_ns = wv[n / 2];
    *scan_us = sv[n / 2];
    return n;
}

/* Guard pages: the first touch of a PAGE_GUARD page (a one-byte write) whose
 * callback retries, against a fresh anonymous page's first write. Both time
 * only the touches of a range; the re-arm (one VirtualProtect of the range with
 * PAGE_GUARD) or the floor's MADV_DONTNEED of the range comes before the timed
 * loop, outside it. */
static _Atomic size_t guard_fired;
static int guard_retry(void *context, void *address, int access)
{
    (void)context;
    (void)address;
    (void)access;
    atomic_fetch_add_explicit(&guard_fired, 1, memory_order_relaxed);
    return HOSTMEM_GUARD_RETRY;
}

struct touch {
    IHostMemoryManager *m; /* NULL: the floor */
    char *base;
    size_t pages, rounds;
};

static double touch_rounds(void *ctx)
{
    struct touch *t = ctx;
    double seconds = 0;
    for (size_t r = 0; r < t->rounds; r++) {
        if (t->m) {
            DWORD old;
            HRESULT hr = IHostMemoryManager_VirtualProtect(t->m, t->base, t->pages * P, PAGE_READWRITE | PAGE_GUARD, &old);
            if (hr != S_OK)
                die("VirtualProtect(PAGE_READWRITE | PAGE_GUARD)", hr);
        } else {
            madvise(t->base, t->pages * P, MADV_DONTNEED);
        }
        volatile char *base = t->base;
        double t0 = now();
        for (size_t i = 0; i < t->pages; i++)
            base[i * P] = (char)i;
        seconds += now() - t0;
    }
    return seconds * 1e9 / (double)(t->rounds * t->pages);
}

/* Write watch three ways, and guard pages (issue 14): no targets, informational. */
void bench_watch(void)
{
    char note[512], buf[96];
    HRESULT hr;
    char size_name[16];
    if (watch_bytes >= ((size_t)1 << 30))
        snprintf(size_name, sizeof size_name, "%zu GiB", watch_bytes >> 30);
    else
        snprintf(size_name, sizeof size_name, "%zu MiB", watch_bytes >> 20);
    say("write watch over %s committed: per scan (GetWriteWatch with reset), per first write\n", size_name);
    /* first, so that hostmem's handler (the emulated manager's) stands in front of it */
    raw_watch_install();
    const char *mode = hostmem_write_watch_mode();
    int have[WATCH_KINDS] = {1, !strcmp(mode, "kernel"), 1};
    static const double fraction[3] = {0.001, 0.01, 0.1};
    static const char *const percent[3] = {"0.1%", "1%", "10%"};
    double write_ns[WATCH_KINDS][3], scan_us[WATCH_KINDS][3], round_s[WATCH_KINDS][3], behind_s;
    int used[WATCH_KINDS][3];
    size_t mismatched[WATCH_KINDS] = {0}, rounds[WATCH_KINDS] = {0}, pages = watch_bytes / P;
    double behind_ns = 0, behind_us = 0; /* the floor again, behind hostmem's handler, 1% */
    for (int kind = 0; kind < WATCH_KINDS; kind++) {
        if (!have[kind]) {
            say("  kernel tracking skipped: hostmem_write_watch_mode() is \"%s\"\n", mode);
            continue;
        }
        IHostMemoryManager *m = NULL;
        hostmem_config c = {sizeof c};
        c.flags = kind == WATCH_EMULATED ? HOSTMEM_EMULATE_WRITE_WATCH : 0;
        if (kind != WATCH_RAW && (hr = hostmem_create(&c, &m)) != S_OK)
            die("hostmem_create", hr);
        struct watch_region w;
        double t0 = now();
        watch_open(&w, m);
        double setup = now() - t0;
        for (int f = 0; f < 3; f++) {
            size_t written = (size_t)((double)pages * fraction[f]);
            used[kind][f] = watch_measure(&w, written ? written : 1, &write_ns[kind][f], &scan_us[kind][f],
                                          &round_s[kind][f]);
            say("  %-8s %4s of %zu pages: scan %9.1f us, first write %7.0f ns", watch_kind_name[kind],
                percent[f], pages, scan_us[kind][f], write_ns[kind][f]);
            if (used[kind][f] < opt_runs)
                say(" (median of %d, a round took %.1f s)", used[kind][f], round_s[kind][f]);
            say("\n");
        }
        watch_close(&w);
        mismatched[kind] = w.mismatched;
        rounds[kind] = w.rounds;
        if (kind == WATCH_RAW && atomic_load(&raw_watch.overflowed))
            say("  raw: a page's mprotect was refused (vm.max_map_count): some pages were not tracked\n");
        say("  %-8s region written through and reset in %.2f s%s\n", watch_kind_name[kind], setup,
            mismatched[kind] ? "" : "; every scan returned exactly the pages written");
        if (mismatched[kind])
            say("  %-8s %zu of %zu scans did not return exactly the pages written\n", watch_kind_name[kind],
                mismatched[kind], rounds[kind]);
        if (m)
            IHostMemoryManager_Release(m);
    }
    /* what hostmem's handler, once installed, costs another handler's faults */
    {
        struct watch_region w;
        watch_open(&w, NULL);
        watch_measure(&w, (size_t)((double)pages * fraction[1]), &behind_ns, &behind_us, &behind_s);
        watch_close(&w);
        say("  raw, behind hostmem's handler, 1%%: scan %.1f us, first write %.0f ns\n", behind_us, behind_ns);
    }
    for (int f = 0; f < 3; f++) {
        /* which is fastest, scan and write: the first figure of each says */
        int fast_scan = WATCH_RAW, fast_write = WATCH_RAW;
        for (int kind = 0; kind < WATCH_KINDS; kind++)
            if (have[kind]) {
                fast_scan = scan_us[kind][f] < scan_us[fast_scan][f] ? kind : fast_scan;
                fast_write = write_ns[kind][f] < write_ns[fast_write][f] ? kind : fast_write;
            }
        for (int what = 0; what < 2; what++) {
            double(*v)[3] = what ? write_ns : scan_us;
            int fastest = what ? fast_write : fast_scan;
            int first = 1;
            for (int kind = WATCH_KERNEL; kind < WATCH_KINDS; kind++) {
                if (!have[kind])
                    continue;
                int k = 0;
                note[0] = 0;
                if (first && have[WATCH_KERNEL])
                    k = snprintf(note, sizeof note, "fastest: %s (kernel %.1f, emulated %.1f, raw %.1f %s)",
                                 watch_kind_name[fastest], v[WATCH_KERNEL][f], v[WATCH_EMULATED][f],
                                 v[WATCH_RAW][f], what ? "ns" : "us");
                else if (first)
                    k = snprintf(note, sizeof note, "fastest: %s (emulated %.1f, raw %.1f %s; no kernel tracking)",
                                 watch_kind_name[fastest], v[WATCH_EMULATED][f], v[WATCH_RAW][f],
                                 what ? "ns" : "us");
                if (used[kind][f] < opt_runs && k >= 0 && (size_t)k < sizeof note)
                    snprintf(note + k, sizeof note - (size_t)k, "%smedian of %d round%s (a round took %.1f s)",
                             k ? "; " : "", used[kind][f], used[kind][f] == 1 ? "" : "s", round_s[kind][f]);
                snprintf(buf, sizeof buf, "watch %s, %s written: %s, %s", size_name, percent[f],
                         what ? "first write" : "scan+reset", watch_kind_name[kind]);
                add(buf, v[kind][f], what ? "ns" : "us", v[WATCH_RAW][f], "raw mprotect+SIGSEGV",
                    v[kind][f] / v[WATCH_RAW][f], "none (info)", INFO, note);
                first = 0;
            }
        }
    }
    snprintf(note, sizeof note, "%s: hostmem's SIGSEGV handler first, passing the fault on; scan %.1f us against %.1f",
             size_name, behind_us, scan_us[WATCH_RAW][1]);
    add("watch 1%: raw first write behind hostmem handler", behind_ns, "ns", write_ns[WATCH_RAW][1], "raw, its handler alone", behind_ns / write_ns[WATCH_RAW][1],
        "none (info)", INFO, note);

    say("guard pages: first touch of a PAGE_GUARD page, the callback retries\n");
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_GUARD_PAGES;
    IHostMemoryManager *gm;
    void *g;
    if ((hr = hostmem_create(&c, &gm)) != S_OK)
        die("hostmem_create(HOSTMEM_GUARD_PAGES)", hr);
    if ((hr = hostmem_set_guard_handler(gm, guard_retry, NULL)) != S_OK)
        die("hostmem_set_guard_handler", hr);
    size_t guard_pages = 256, guard_rounds = opt_quick ? 4 : 16;
    if ((hr = IHostMemoryManager_VirtualAlloc(gm, NULL, guard_pages * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                              eTaskCritical, &g)) != S_OK)
        die("VirtualAlloc", hr);
    struct touch guard = {gm, g, guard_pages, guard_rounds};
    struct touch fresh = {NULL, mmap(NULL, guard_pages * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                          guard_pages, guard_rounds};
    if (fresh.base == MAP_FAILED)
        die("mmap", E_OUTOFMEMORY);
    atomic_store(&guard_fired, 0);
    double gt = median_of(touch_rounds, &guard);
    size_t fired = atomic_load(&guard_fired), expected = (size_t)(opt_runs + 1) * guard_pages * guard_rounds;
    double ft = median_of(touch_rounds, &fresh);
    snprintf(note, sizeof note, "%zu pages x %zu rounds a run; re-arm (VirtualProtect) and MADV_DONTNEED untimed; "
             "%zu of %zu touches fired", guard_pages, guard_rounds, fired, expected);
    add("guard page first touch (callback retries)", gt, "ns", ft, "fresh anonymous page's first write", gt / ft,
        "none (info)", INFO, note);
    IHostMemoryManager_VirtualFree(gm, g, 0, MEM_RELEASE);
    IHostMemoryManager_Release(gm);
    munmap(fresh.base, guard_pages * P);
}

