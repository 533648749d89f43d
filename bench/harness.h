/*
 * harness.h - what the benchmark's files share, from bench/harness.c: the
 * run's settings (bench/bench.c sets them from the command line), the timing
 * and the reporting. Each section (vm.c, threads.c, heap.c, scale.c,
 * watch.c) stands on it; bench.c, the program, stands on them all
 * (sections.h). Not installed, never included by the library or the tool's
 * own files.
 *
 * Every figure goes through add() in harness.c, in the order the sections run;
 * a section never prints a figure of its own. Nothing here asserts a timing.
 */
#ifndef HOSTMEM_BENCH_HARNESS_H
#define HOSTMEM_BENCH_HARNESS_H

#define COBJMACROS
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "hostmem.h"

/* ---- options (harness.c holds them; bench.c parses them) ----------------------------------------------- */

extern int opt_quick, opt_json, opt_runs;
#define MAX_RUNS 31 /* the most --runs may ask for */

/* ---- sizes (harness.c holds them; bench.c sets them from --quick before any section runs) --------------- */

extern size_t P; /* the page size */
#define K64 ((size_t)65536)
extern size_t n_pairs, n_commit, n_query, n_foreign, n_million, heap_ops, watch_bytes;
#define QADDR 65536 /* random addresses per set, reused round-robin */

/* ---- time and statistics (harness.c) ----------------------------------------------- */

/* seconds on CLOCK_MONOTONIC; inline, as it was when the bench was one file, so
 * that reading the clock costs the same around every timed loop */
static inline double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}
int cmp_double(const void *a, const void *b);
/* One warm-up call, then opt_runs timed calls; the median of what fn returns. */
typedef double (*run_fn)(void *ctx);
double median_of(run_fn fn, void *ctx);
#define INTERLEAVED_MAX 8
void medians_interleaved(int k, const run_fn *fn, void *const *ctx, double *out);
uint64_t rnd(void);
void cpu_warm(double seconds);

/* ---- the process and the machine (harness.c) ---------------------------------------- */

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void die(const char *what, HRESULT hr);
size_t status_bytes(const char *field);
int in_child(void (*fn)(int, int), int arg, void *out, size_t size);
extern double busy_at_start;
double other_busy_cpus(void);

/* ---- the results (harness.c) ------------------------------------------------------- */

enum status { INFO, MET, MISSED };
void add(const char *name, double value, const char *unit, double floor, const char *floor_name, double ratio,
         const char *target, enum status st, const char *note);
enum status le(double x, double limit);
enum status ge(double x, double limit);

/* the chart: VirtualQuery, foreign VirtualFree and mincore against live
 * reservations, filled in by the scale section, drawn by write_svg */
#define LEVELS 7
extern const size_t level_count[LEVELS];
extern double level_query[LEVELS], level_foreign[LEVELS], level_mincore[LEVELS];
extern int nlevels;

void write_svg(const char *path);
void print_json(double seconds);
void print_table(double seconds);

#endif
