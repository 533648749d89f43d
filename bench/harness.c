/*
 * harness.c - the benchmark's one timing and reporting helper, shared by every
 * section: the run's settings (options and batch sizes, which bench.c sets), the clock's medians (median_of, and medians_interleaved for figures
 * compared with each other), the random numbers, the figures table (add, le,
 * ge) and its three outputs (the table, --json, the --svg chart), and the
 * machine's state (other CPUs busy, RSS from /proc, a child process for a
 * clean one).
 *
 * Invariants: a figure is printed once, when add() records it, and again in
 * the table or JSON at the end, in the order added; progress goes to stderr
 * under --json so stdout stays JSON. Never measures anything itself and never
 * judges a timing beyond the MET/MISSED a section asks le() or ge() for.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* ---- the run's settings ------------------------------------------------------------- */

int opt_quick, opt_json, opt_runs = 7;
/* the page size, and each section's batch sizes: set once from --quick, before
 * any section runs */
size_t P;
size_t n_pairs, n_commit, n_query, n_foreign, n_million, heap_ops, watch_bytes;

/* ---- time, statistics ---------------------------------------------------------- */

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double median_of(run_fn fn, void *ctx)
{
    double v[MAX_RUNS];
    fn(ctx);
    for (int i = 0; i < opt_runs; i++)
        v[i] = fn(ctx);
    qsort(v, (size_t)opt_runs, sizeof v[0], cmp_double);
    return v[opt_runs / 2];
}

/* median_of for k functions at once, taken in turn: a warm-up call of each, then
 * opt_runs rounds of one call each. A change in the machine's speed during the
 * section (another process, a CPU's clock) then falls on all of them alike and
 * their ratios hold. */
void medians_interleaved(int k, const run_fn *fn, void *const *ctx, double *out)
{
    double v[INTERLEAVED_MAX][MAX_RUNS];
    for (int j = 0; j < k; j++)
        fn[j](ctx[j]);
    for (int i = 0; i < opt_runs; i++)
        for (int j = 0; j < k; j++)
            v[j][i] = fn[j](ctx[j]);
    for (int j = 0; j < k; j++) {
        qsort(v[j], (size_t)opt_runs, sizeof v[j][0], cmp_double);
        out[j] = v[j][opt_runs / 2];
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* progress goes to stderr in --json mode, to stdout otherwise */
void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(opt_json ? stderr : stdout, fmt, ap);
    va_end(ap);
    fflush(opt_json ? stderr : stdout);
}

_Noreturn void die(const char *what, HRESULT hr)
{
    const char *name = hostmem_result_name(hr);
    fprintf(stderr, "bench: %s failed: %s (0x%08x)\n", what, name ? name : "?", (unsigned)hr);
    exit(1);
}

/* /proc/self/status field in bytes (kB lines) */
size_t status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t v = 0, n = strlen(field);
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            v = strtoull(line + n + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

/* A virtual CPU that was idle runs slowly for a while after it wakes: each
 * thread first keeps its CPU busy, then waits at a spinning barrier, so that
 * the timed part starts with both CPUs running. */
void cpu_warm(double seconds)
{
    double t0 = now();
    while (now() - t0 < seconds)
        ;
}

/* CPUs busy with other processes: /proc/stat sampled over 0.3 s while this one sleeps */
double busy_at_start;
double other_busy_cpus(void)
{
    unsigned long long v[2][8] = {{0}};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen("/proc/stat", "r");
        if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[k][0], &v[k][1], &v[k][2],
                         &v[k][3], &v[k][4], &v[k][5], &v[k][6], &v[k][7]) != 8) {
            if (f)
                fclose(f);
            return 0;
        }
        fclose(f);
        if (!k)
            usleep(300000);
    }
    unsigned long long busy = 0, total = 0;
    for (int i = 0; i < 8; i++) {
        unsigned long long d = v[1][i] - v[0][i];
        total += d;
        if (i != 3 && i != 4)
            busy += d;
    }
    return total ? (double)busy / (double)total * (double)sysconf(_SC_NPROCESSORS_ONLN) : 0;
}

/* Runs fn(arg, fd) in a child process of its own and reads size bytes of its
 * result from the pipe fd: 0 when they all came. */
int in_child(void (*fn)(int, int), int arg, void *out, size_t size)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        fn(arg, fds[1]);
        _exit(0);
    }
    close(fds[1]);
    size_t got = 0;
    while (got < size) {
        ssize_t k = read(fds[0], (char *)out + got, size - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    return got == size ? 0 : -1;
}

/* ---- the results ---------------------------------------------------------------- */

struct figure {
    char name[96];
    double value;
    char unit[16];
    double floor; /* 0: none */
    char floor_name[64];
    double ratio; /* the figure the target is about; value/floor unless stated */
    char target[64];
    enum status status;
    char note[512];
};
static struct figure figures[64];
static int nfigures;

void add(const char *name, double value, const char *unit, double floor, const char *floor_name, double ratio,
         const char *target, enum status st, const char *note)
{
    struct figure *f = &figures[nfigures++];
    snprintf(f->name, sizeof f->name, "%s", name);
    f->value = value;
    snprintf(f->unit, sizeof f->unit, "%s", unit);
    f->floor = floor;
    snprintf(f->floor_name, sizeof f->floor_name, "%s", floor_name ? floor_name : "");
    f->ratio = ratio;
    snprintf(f->target, sizeof f->target, "%s", target ? target : "");
    f->status = st;
    snprintf(f->note, sizeof f->note, "%s", note ? note : "");
    const char *s = st == MET ? "MET" : st == MISSED ? "MISSED" : "";
    if (floor > 0)
        say("  %-48s %10.1f %-6s floor %9.1f (%s)  ratio %.2f  target %s  %s\n", name, value, unit,
            floor, f->floor_name, ratio, f->target, s);
    else if (ratio != 0)
        say("  %-48s %10.1f %-6s ratio %.2f  target %s  %s\n", name, value, unit, ratio, f->target, s);
    else
        say("  %-48s %10.1f %-6s %s %s\n", name, value, unit, f->target, s);
    if (note && *note)
        say("      %s\n", note);
}

enum status le(double x, double limit)
{
    return x <= limit ? MET : MISSED;
}
enum status ge(double x, double limit)
{
    return x >= limit ? MET : MISSED;
}

/* ---- the chart ---------------------------------------------------------------------- */

const size_t level_count[LEVELS] = {1, 10, 100, 1000, 10000, 100000, 1000000};
double level_query[LEVELS], level_foreign[LEVELS], level_mincore[LEVELS];
int nlevels;

void write_svg(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return;
    }
    const double W = 720, H = 420, L = 70, R = 190, T = 50, B = 60;
    const double pw = W - L - R, ph = H - T - B;
    /* y: log scale, whole decades from 1 ns to above the largest value */
    double ymax = 100;
    for (int i = 0; i < nlevels; i++) {
        double v[3] = {level_query[i], level_foreign[i], level_mincore[i]};
        for (int k = 0; k < 3; k++)
            while (v[k] > ymax)
                ymax *= 10;
    }
    double decades = log10(ymax);
#define X(i) (L + pw * (double)(i) / (LEVELS - 1))
#define Y(v) (T + ph * (1.0 - log10((v) < 1 ? 1 : (v)) / decades))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"24\" font-size=\"15\" font-weight=\"bold\">hostmem: latency against live "
               "reservations (median, ns per call)</text>\n", L);
    for (double d = 1; d <= ymax * 1.001; d *= 10)
        for (int k = 1; k < 10 && d * k <= ymax * 1.001; k++) {
            double v = d * k;
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", L, Y(v), L + pw,
                    Y(v), k == 1 ? "#ccc" : "#f0f0f0");
            if (k == 1 || k == 2 || k == 5)
                fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.0f</text>\n", L - 6, Y(v) + 4, v);
        }
    const char *xl[LEVELS] = {"1", "10", "100", "1,000", "10,000", "100,000", "1,000,000"};
    for (int i = 0; i < LEVELS; i++) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", X(i), T, X(i), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", X(i), T + ph + 18, xl[i]);
    }
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">live reservations (log scale)</text>\n",
            L + pw / 2, H - 18);
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">ns per call (log scale)</text>\n",
            T + ph / 2);
    /* targets */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" stroke-dasharray=\"6 4\"/>\n",
            L, Y(100), L + pw, Y(100));
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\n",
            L, Y(50), L + pw, Y(50));
    struct {
        const double *v;
        const char *colour, *label;
    } series[3] = {{level_query, "#1f77b4", "VirtualQuery"},
                   {level_foreign, "#d62728", "VirtualFree, foreign"},
                   {level_mincore, "#999", "mincore (floor)"}};
    for (int s = 0; s < 3; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"", series[s].colour);
        for (int i = 0; i < nlevels; i++)
            fprintf(f, "%.1f,%.1f ", X(i), Y(series[s].v[i]));
        fprintf(f, "\"/>\n");
        for (int i = 0; i < nlevels; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>%s, %zu live: %.1f ns</title></circle>\n",
                    X(i), Y(series[s].v[i]), series[s].colour, series[s].label, level_count[i], series[s].v[i]);
        double ly = T + 10 + 22.0 * s;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"/>\n",
                L + pw + 12, ly, L + pw + 36, ly, series[s].colour);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", L + pw + 42, ly + 4, series[s].label);
    }
    double ly = T + 10 + 22.0 * 3;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#666\" stroke-dasharray=\"6 4\"/>\n",
            L + pw + 12, ly, L + pw + 36, ly);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">targets (100, 50 ns)</text>\n", L + pw + 42, ly + 4);
    fprintf(f, "</svg>\n");
#undef X
#undef Y
    fclose(f);
}

/* ---- output ---------------------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* one chart series: a key and a value per level measured */
static void json_series(FILE *f, const char *key, const double *v)
{
    fprintf(f, ",\n    \"%s\": [", key);
    for (int i = 0; i < nlevels; i++)
        fprintf(f, "%s%.2f", i ? ", " : "", v[i]);
    fprintf(f, "]");
}

void print_json(double seconds)
{
    FILE *f = stdout;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(f, "{\n  \"runs\": %d,\n  \"quick\": %s,\n  \"cpus\": %ld,\n  \"busy_cpus_at_start\": %.2f,\n"
               "  \"seconds\": %.1f,\n  \"figures\": [\n",
            opt_runs, opt_quick ? "true" : "false", cpus, busy_at_start, seconds);
    for (int i = 0; i < nfigures; i++) {
        struct figure *g = &figures[i];
        fprintf(f, "    {\"name\": ");
        json_string(f, g->name);
        fprintf(f, ", \"value\": %.10g, \"unit\": ", g->value);
        json_string(f, g->unit);
        if (g->floor > 0) {
            fprintf(f, ", \"floor\": %.10g, \"floor_name\": ", g->floor);
            json_string(f, g->floor_name);
        }
        if (g->ratio != 0)
            fprintf(f, ", \"ratio\": %.6g", g->ratio);
        fprintf(f, ", \"target\": ");
        json_string(f, g->target);
        fprintf(f, ", \"status\": \"%s\"", g->status == MET ? "MET" : g->status == MISSED ? "MISSED" : "info");
        if (g->note[0]) {
            fprintf(f, ", \"note\": ");
            json_string(f, g->note);
        }
        fprintf(f, "}%s\n", i + 1 < nfigures ? "," : "");
    }
    fprintf(f, "  ],\n  \"chart\": {\"live_reservations\": [");
    for (int i = 0; i < nlevels; i++)
        fprintf(f, "%s%zu", i ? ", " : "", level_count[i]);
    fprintf(f, "]");
    json_series(f, "virtualquery_ns", level_query);
    json_series(f, "foreign_virtualfree_ns", level_foreign);
    json_series(f, "mincore_ns", level_mincore);
    fprintf(f, "}\n}\n");
}

void print_table(double seconds)
{
    int met = 0, missed = 0;
    printf("\n%-50s %12s %18s %8s  %-24s %s\n", "figure (median)", "hostmem", "floor", "ratio", "target", "");
    for (int i = 0; i < nfigures; i++) {
        struct figure *g = &figures[i];
        char v[32], fl[32] = "", ra[16] = "";
        snprintf(v, sizeof v, "%.1f %s", g->value, g->unit);
        if (g->floor > 0)
            snprintf(fl, sizeof fl, "%.1f %s", g->floor, g->unit);
        if (g->ratio != 0)
            snprintf(ra, sizeof ra, "%.2f", g->ratio);
        printf("%-50s %12s %18s %8s  %-24s %s\n", g->name, v, fl, ra, g->target,
               g->status == MET ? "MET" : g->status == MISSED ? "MISSED" : "");
        met += g->status == MET;
        missed += g->status == MISSED;
    }
    printf("\ntargets: %d met, %d missed (%d runs per figure, median; %.0f s)\n", met, missed, opt_runs, seconds);
    if (busy_at_start > 0.25)
        printf("warning: %.2f CPUs were busy with other processes at the start: the figures (the 2-thread ones\n"
               "above all) are not this machine's best; run again on a quiet machine\n", busy_at_start);
}
