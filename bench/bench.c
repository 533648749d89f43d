/*
 * bench.c - the benchmark suite of issue 6: its options and main(). Not a test: it asserts nothing.
 *
 * Every figure is the median of several timed runs after a warm-up run; each
 * timed run batches many operations and divides (CLOCK_MONOTONIC). Each figure
 * is printed with its floor - the raw Linux system calls doing the same work,
 * measured in the same run - the ratio to it, the target of issue 6 and MET or
 * MISSED. `--json` prints the same as JSON; the chart of VirtualQuery and
 * foreign-VirtualFree latency against the number of live reservations goes to
 * docs/bench.svg (`--svg PATH`, `--svg ''` for none). Section `watch` (issue
 * 14: write watch three ways, guard pages) has no targets: its figures are
 * informational, each against a floor written here.
 *
 * Where a figure and its floor could differ by where they run, both ways are
 * measured: the commit cycle on an interior page (2 mapping splits) and on an
 * edge page (1), each against the raw calls on the same kind of page; the
 * 1,000,000-reservation VirtualQuery on 65,536 addresses picked once (the
 * cached case) and at random over all of them, against a pointer chase over a
 * buffer as big as their metadata. Figures compared with each other are taken
 * in turn, run by run (medians_interleaved). A two-thread figure is reported
 * only when a control loop (arithmetic, no memory) scales >= 1.8x at 2
 * threads, before and after it, in the same run.
 *
 *   build/bench [--quick] [--json] [--runs N] [--svg PATH] [--only SECTION]
 *
 * This file owns the options, the sizes and the order of the run; each section
 * is a file of its own (vm.c: reserve, commit; threads.c; heap.c; scale.c:
 * compact, scale; watch.c), and the timing and reporting they share is
 * harness.c's (harness.h declares what they share, sections.h the sections). It never measures or prints
 * a figure itself.
 *
 * jemalloc and mimalloc are linked into this program only, never the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "sections.h"

/* ---- options ------------------------------------------------------------------------ */

#ifdef HOSTMEM_BENCH_IN_TOOL
#define BENCH_SVG_DEFAULT "none by default"
/* Built into `hostmem bench`: the installed tool links no other allocator, so the
 * heap comparison is left to `make bench`; no chart unless asked for. */
static const char *opt_svg = "";
#else
#define BENCH_SVG_DEFAULT "default docs/bench.svg; '' for none"
static const char *opt_svg = "docs/bench.svg";
#endif
static const char *opt_only; /* run one section: reserve, commit, threads, heap, compact, scale, watch */
static int section(const char *name)
{
    return !opt_only || !strcmp(opt_only, name);
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(int code)
{
#ifdef HOSTMEM_BENCH_IN_TOOL
#define BENCH_NAME "hostmem bench"
#else
#define BENCH_NAME "bench"
#endif
    fprintf(code ? stderr : stdout, "usage: " BENCH_NAME " [--quick] [--json] [--runs N] [--svg PATH] [--only reserve|commit|threads|heap|compact|scale|watch]\n"
                                    "  --quick  fewer runs and smaller batches; --json  JSON on stdout, progress on stderr\n"
                                    "  --svg PATH  the chart (" BENCH_SVG_DEFAULT ")\n");
    exit(code);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            opt_quick = 1;
        else if (!strcmp(argv[i], "--json"))
            opt_json = 1;
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            opt_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--svg") && i + 1 < argc)
            opt_svg = argv[++i];
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            opt_only = argv[++i];
        else if (!strncmp(argv[i], "--svg=", 6))
            opt_svg = argv[i] + 6;
        else
            usage(strcmp(argv[i], "--help") ? 2 : 0);
    }
    if (opt_quick && opt_runs == 7)
        opt_runs = 3;
    if (opt_runs < 1 || opt_runs > MAX_RUNS)
        usage(2);
    glibc_resolve();
    int scale = opt_quick ? 5 : 1;
    n_pairs = 20000 / scale;
    n_commit = 10000 / scale;
    n_query = 400000 / scale;
    n_foreign = 2000000 / scale;
    n_million = 1000000;
    heap_ops = 2000000 / scale;
    watch_bytes = (opt_quick ? 128 : 1024) * (size_t)1048576;
    P = hostmem_page_size();
    double start = now();

    busy_at_start = other_busy_cpus();
    say("hostmem benchmark: %d runs per figure after a warm-up, median; %ld cpus, %.2f of them busy "
        "with other work at the start\n",
        opt_runs, sysconf(_SC_NPROCESSORS_ONLN), busy_at_start);

    /* one manager for the sections that measure calls one at a time; the ones
     * after the heap make managers of their own (compact mode, write watch,
     * guard pages, a million reservations) */
    IHostMemoryManager *mgr;
    HRESULT hr = hostmem_create(NULL, &mgr);
    if (hr != S_OK)
        die("hostmem_create", hr);

    if (section("reserve"))
        bench_reserve(mgr);
    if (section("commit"))
        bench_commit(mgr);
    if (section("threads"))
        bench_threads(mgr);
    if (section("heap"))
        bench_heap(mgr);
    IHostMemoryManager_Release(mgr);
    if (section("compact"))
        bench_compact();
    if (section("scale"))
        bench_scale();
    if (section("watch"))
        bench_watch();

    double seconds = now() - start;
    if (opt_svg && *opt_svg && nlevels) {
        write_svg(opt_svg);
        say("chart: %s\n", opt_svg);
    }
    if (opt_json)
        print_json(seconds);
    else
        print_table(seconds);
    return 0;
}
