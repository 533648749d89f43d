/*
 * demo.c - `hostmem demo`, the main job: a walk through the whole contract,
 * annotated for a person (colour on a terminal only) or as JSON for a machine
 * (--json). It tells its story in order: every address names its reservation
 * (A, B), and a callback of the runtime prints under the call that caused it.
 * A step the walk needs that fails stops it there, with why and what to do on
 * standard error, and the exit code of docs/cli.md; it never goes on past it.
 */
#define COBJMACROS
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static bool json, colour;

/* The demo's own figures: A, the reservation the walk works in, is 44 pages, so
 * that with 4 KiB pages its last 64 KiB granule has an unused tail; the budget
 * is 64 pages unless --commit-limit gives another; a budget of more pages than
 * DEMO_FILL_MAX is not filled (the refusals are then not shown). The walk
 * needs A's 4 committed pages, and for the heap its first segment's header
 * (8 KiB at most, in whole pages) between its two no-access guard pages and a
 * 64 KiB span for each of its three block sizes (docs/heap.md): walk_needs()
 * bytes, 56 pages with 4 KiB pages; a smaller budget stops it at the step
 * refused (tests/test_cli.sh checks the boundary). */
enum { A_PAGES = 44, DEMO_BUDGET_PAGES = 64, DEMO_FILL_MAX = 1024, A_COMMITTED_PAGES = 4, HEAP_SPANS = 3 };
static size_t walk_needs(void)
{
    size_t page = hostmem_page_size(), header = (8192 + page - 1) / page * page;
    return (A_COMMITTED_PAGES + 2) * page + header + HEAP_SPANS * ((size_t)64 << 10);
}
static int steps; /* printed so far (the JSON separator) */

/* The step the walk could not do without (its call and result), if any: the
 * demo stops there, says why and what to do, and exits 3 or 1 (docs/cli.md). */
static const char *stopped_at;
static HRESULT stopped_hr;
static bool stopped_by_budget; /* the budget refused it (not the kernel) */
static size_t stopped_budget;

/* The manager of the walk, and its budget refusals as of the last step: a step
 * that adds one was refused by the budget, not by the kernel. */
static IHostMemoryManager *walk;
static size_t budget_refusals_seen;
static bool budget_refused_last;

/* The runtime's callbacks heard during the call in progress: step() prints
 * them under the call that caused them (the manager calls back before the
 * call returns, so printing them as they come would put them above it). */
static EMemoryAvailable heard[8];
static int heard_count;

/* A step the walk needs: false (and the walk stops) when it failed. */
static bool needed(HRESULT hr, const char *what)
{
    if (hr == S_OK)
        return true;
    if (!stopped_at) {
        stopped_at = what;
        stopped_hr = hr;
        stopped_by_budget = budget_refused_last;
    }
    return false;
}

/* Says why the walk stopped and what to do; the exit code (docs/cli.md): 3 when
 * the step was refused for want of memory, 1 for anything else. */
static int explain_stop(void)
{
    char rn[16], sz[32];
    if (stopped_hr == E_OUTOFMEMORY && stopped_by_budget) {
        fprintf(stderr,
                "hostmem demo: %s was refused by the budget (%s): the walk needs a budget of at least %s\n"
                "(%zu pages; without --commit-limit it has %d). Give a larger --commit-limit, or none.\n",
                stopped_at, cli_size_text(stopped_budget, sz, sizeof sz), cli_size_text(walk_needs(), rn, sizeof rn),
                walk_needs() / hostmem_page_size(), DEMO_BUDGET_PAGES);
        return EXIT_MANAGER;
    }
    if (stopped_hr == E_OUTOFMEMORY) {
        cli_explain_out_of_memory("demo", stopped_at, CLI_DEMO_NEEDS_MIB);
        return EXIT_MANAGER;
    }
    fprintf(stderr,
            "hostmem demo: the walk stopped: %s returned %s where it needs S_OK.\n"
            "That is not what the contract says: please report it, with the output of hostmem info.\n",
            stopped_at, cli_result_name(stopped_hr, rn, sizeof rn));
    return EXIT_FAILED;
}

static const char *paint(const char *code)
{
    return colour ? code : "";
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void section(const char *title, const char *why)
{
    if (json)
        return;
    printf("\n%s== %s%s\n", paint("\033[1m"), title, paint("\033[0m"));
    if (why)
        printf("%s%s%s\n", paint("\033[2m"), why, paint("\033[0m"));
}

/* One call: what was asked, what came back, and what it shows. */
static void step(const char *call, HRESULT hr, const char *note, ...)
{
    char rn[16], text[256] = "";
    if (note) {
        va_list ap;
        va_start(ap, note);
        vsnprintf(text, sizeof text, note, ap);
        va_end(ap);
    }
    static const char *names[] = {"?", "Low", "Neutral", "High"};
    const char *result = cli_result_name(hr, rn, sizeof rn);
    if (json) {
        printf("%s\n    {\"call\": ", steps ? "," : "");
        json_string(call);
        printf(", \"result\": ");
        json_string(result);
        printf(", \"note\": ");
        json_string(text);
        printf(", \"callbacks\": [");
        for (int i = 0; i < heard_count; i++)
            printf("%s\"eMemoryAvailable%s\"", i ? ", " : "", names[heard[i]]);
        printf("]}");
    } else {
        printf("  %-62s %s%s%s", call, paint(hr == S_OK ? "\033[32m" : "\033[33m"), result, paint("\033[0m"));
        if (*text)
            printf("  %s", text);
        printf("\n");
        for (int i = 0; i < heard_count; i++)
            printf("      %s-> the runtime's callback: OnMemoryNotification(eMemoryAvailable%s)%s\n",
                   paint("\033[36m"), names[heard[i]], paint("\033[0m"));
    }
    heard_count = 0;
    steps++;
    if (walk) {
        hostmem_stats s;
        memset(&s, 0, sizeof s);
        s.size = sizeof s;
        hostmem_get_stats(walk, &s);
        size_t refusals = s.refusals[0] + s.refusals[1] + s.refusals[2];
        budget_refused_last = refusals > budget_refusals_seen;
        budget_refusals_seen = refusals;
        stopped_budget = s.commit_limit;
    }
}

static int map_line(void *context, const MEMORY_BASIC_INFORMATION *info)
{
    uintptr_t base = *(uintptr_t *)context;
    char p[48], sz[32];
    if (json)
        return 0;
    printf("    A+0x%-6jx %8s  %-7s %s\n", (uintmax_t)((uintptr_t)info->BaseAddress - base),
           cli_size_text(info->RegionSize, sz, sizeof sz), info->State == MEM_COMMIT ? "commit" : "reserve",
           cli_protect_name(info->Protect, p, sizeof p));
    return 0;
}

struct runtime {
    ICLRMemoryNotificationCallback iface;
    int low, neutral, high;
};
static HRESULT STDMETHODCALLTYPE rt_query(ICLRMemoryNotificationCallback *self, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = self;
    return S_OK;
}
static ULONG STDMETHODCALLTYPE rt_ref(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 1;
}
static HRESULT STDMETHODCALLTYPE rt_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable e)
{
    struct runtime *rt = (struct runtime *)self;
    if (e == eMemoryAvailableLow)
        rt->low++;
    else if (e == eMemoryAvailableNeutral)
        rt->neutral++;
    else
        rt->high++;
    if (heard_count < (int)(sizeof heard / sizeof heard[0]))
        heard[heard_count++] = e >= eMemoryAvailableLow && e <= eMemoryAvailableHigh ? e : (EMemoryAvailable)0;
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl rt_vtbl = {rt_query, rt_ref, rt_ref, rt_notify};


static const char demo_help[] =
    "usage: hostmem demo [--json] [--no-colour] [MANAGER-OPTIONS]\n"
    "A walk through the whole contract: reserve and commit, the region map as\n"
    "VirtualQuery sees it, VirtualFree refusing memory the host never handed out, a\n"
    "decommit and a zeroed recommit, a budget hit by task- and process-critical\n"
    "requests, memory notifications reaching a runtime's callback, a heap, the\n"
    "statistics and the leak report. The manager gets a 64-page budget unless\n"
    "--commit-limit gives another. Colour only on a terminal (NO_COLOR: none).\n"
    "It needs about %d MiB of address space in all (ulimit -v %d); if a step is\n"
    "refused, the demo stops there, says why and exits 3.\n"
    "  --json                     machine-readable output\n"
    "  --no-colour, --no-color    no colour even on a terminal\n";


/* A remark between steps (text only). */
static void remark(const char *text)
{
    if (!json)
        printf("  %s%s%s\n", paint("\033[2m"), text, paint("\033[0m"));
}

static hostmem_stats stats_of(IHostMemoryManager *m)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(m, &s);
    return s;
}

static unsigned load_of(IHostMemoryManager *m)
{
    DWORD load = 0;
    SIZE_T available = 0;
    IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    return (unsigned)load;
}

int cmd_demo(int argc, char **argv)
{
    hostmem_config config = {sizeof config};
    bool budget_given = false;
    colour = isatty(1) && !getenv("NO_COLOR");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf(demo_help, CLI_DEMO_NEEDS_MIB, CLI_DEMO_NEEDS_MIB * 1024);
            cli_manager_options_print(stdout);
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(argv[i], "--no-colour") || !strcmp(argv[i], "--no-color")) {
            colour = false;
            continue;
        }
        int r = cli_manager_option(argc, argv, &i, &config);
        if (r < 0)
            return EXIT_USAGE;
        if (r == 0) {
            fprintf(stderr, "hostmem demo: unknown option '%s' (see hostmem demo --help)\n", argv[i]);
            return EXIT_USAGE;
        }
        if (!strncmp(argv[i - (strchr(argv[i], '=') ? 0 : 1)], "--commit-limit", 14))
            budget_given = true;
    }
    if (json)
        colour = false;
    size_t P = hostmem_page_size(), G = hostmem_granularity();
    if (!budget_given)
        config.commit_limit = DEMO_BUDGET_PAGES * P; /* a small budget, so that the demo can hit it */
    int status = cli_manager_config_check("demo", &config);
    if (status != EXIT_OK)
        return status;
    IHostMemoryManager *m;
    status = cli_manager_create("demo", &config, CLI_DEMO_NEEDS_MIB, &m);
    if (status != EXIT_OK)
        return status;
    char text[200], sz[32], call[96];
    if (json)
        printf("{\n  \"version\": \"%s\", \"page_size\": %zu, \"granularity\": %zu,\n  \"steps\": [", HOSTMEM_VERSION_STRING,
               P, G);
    else
        printf("%shostmem %s%s: a host memory manager (IHostMemoryManager) on Linux. Page %zu bytes, "
               "allocation granularity %zu.\n",
               paint("\033[1m"), HOSTMEM_VERSION_STRING, paint("\033[0m"), P, G);

    struct runtime rt = {{&rt_vtbl}, 0, 0, 0};
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface);
    walk = m;
    void *base = NULL, *p = NULL, *big = NULL;
    IHostMalloc *heap = NULL;
    void *blocks[3] = {NULL, NULL, NULL};
    HRESULT hr;

    section("Reserve, then commit",
            "A runtime reserves address space (A, 44 pages), then commits pages of it as it needs them.");
    hr = IHostMemoryManager_VirtualAlloc(m, NULL, A_PAGES * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base);
    step("A = VirtualAlloc(NULL, 44 pages, MEM_RESERVE, PAGE_READWRITE)", hr, hr == S_OK ? "A is 64 KiB aligned: %s" : NULL,
         ((uintptr_t)base % G) == 0 ? "yes" : "no");
    if (!needed(hr, "reserving A"))
        goto finish;
    char *a = base;
    hr = IHostMemoryManager_VirtualAlloc(m, a + P, A_COMMITTED_PAGES * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    step("VirtualAlloc(A+1 page, 4 pages, MEM_COMMIT, PAGE_READWRITE)", hr, hr == S_OK ? "new pages read zero: %s" : NULL,
         hr == S_OK && a[P] == 0 && a[4 * P] == 0 ? "yes" : "no");
    if (!needed(hr, "committing 4 pages of A"))
        goto finish;
    memset(a + P, 0x5A, 4 * P);
    DWORD old = 0;
    hr = IHostMemoryManager_VirtualProtect(m, a + 3 * P, P, PAGE_READONLY, &old);
    step("VirtualProtect(A+3 pages, 1 page, PAGE_READONLY)", hr, "old protection %s",
         cli_protect_name(old, text, sizeof text));
    if (!needed(hr, "VirtualProtect of a page of A"))
        goto finish;

    section("The region map of A, as VirtualQuery sees it", "One line a run of pages with equal state and protection.");
    uintptr_t a0 = (uintptr_t)a;
    hostmem_walk(m, map_line, &a0);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    hr = IHostMemoryManager_VirtualQuery(m, a + 2 * P, &info, sizeof info, &got);
    step("VirtualQuery(A+2 pages)", hr, "State %s, Protect %s, RegionSize %s",
         info.State == MEM_COMMIT ? "MEM_COMMIT" : "MEM_RESERVE", cli_protect_name(info.Protect, text, sizeof text),
         cli_size_text(info.RegionSize, sz, sizeof sz));
    if (!needed(hr, "VirtualQuery of A"))
        goto finish;
    hr = IHostMemoryManager_VirtualQuery(m, (void *)&cmd_demo, &info, sizeof info, &got);
    step("VirtualQuery(this program's code)", hr, "outside host memory: the kernel's view, %s",
         info.Type == MEM_IMAGE ? "MEM_IMAGE" : "other");
    if (!needed(hr, "VirtualQuery of the program's code"))
        goto finish;

    section("VirtualFree refuses what the host never handed out",
            "HOST_E_INVALIDOPERATION, and nothing is touched.");
    int local = 0;
    void *libc = malloc(32);
    hr = IHostMemoryManager_VirtualFree(m, &local, 0, MEM_RELEASE);
    step("VirtualFree(a stack address, 0, MEM_RELEASE)", hr, NULL);
    hr = IHostMemoryManager_VirtualFree(m, libc, 0, MEM_RELEASE);
    step("VirtualFree(a malloc block, 0, MEM_RELEASE)", hr, NULL);
    free(libc);
    hr = IHostMemoryManager_VirtualFree(m, a + A_PAGES * P, 0, MEM_RELEASE);
    if ((A_PAGES * P) % G) /* the rest of A's last granule */
        step("VirtualFree(A+44 pages, 0, MEM_RELEASE)", hr, "the unused tail of A's last 64 KiB: nobody's, ever");
    else
        step("VirtualFree(A+44 pages, 0, MEM_RELEASE)", hr, "the address just past A: not host memory");
    hr = IHostMemoryManager_VirtualFree(m, a + P, 0, MEM_RELEASE);
    step("VirtualFree(A+1 page, 0, MEM_RELEASE)", hr, "size 0 must name the base (Win32 rule)");

    section("Decommit, then commit again", "Decommitted pages go back to the OS and read zero when committed again.");
    hr = IHostMemoryManager_VirtualFree(m, a + P, P, MEM_DECOMMIT);
    step("VirtualFree(A+1 page, 1 page, MEM_DECOMMIT)", hr, NULL);
    if (!needed(hr, "decommitting a page of A"))
        goto finish;
    hr = IHostMemoryManager_VirtualAlloc(m, a + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    /* a page left decommitted cannot be read */
    step("VirtualAlloc(A+1 page, 1 page, MEM_COMMIT)", hr,
         hr == S_OK ? "first byte 0x%02x (was 0x5a); its neighbour kept 0x%02x" : NULL, hr == S_OK ? (unsigned char)a[P] : 0,
         hr == S_OK ? (unsigned char)a[2 * P] : 0);
    if (!needed(hr, "recommitting a page of A"))
        goto finish;

    hostmem_stats s = stats_of(m);
    size_t limit = s.commit_limit, committed = s.committed_bytes;
    section("The budget and the critical levels",
            "Committed bytes may not pass the budget. Task-critical requests are refused at once;\n"
            "process-critical ones may use the emergency reserve; the runtime hears Low as the load\n"
            "crosses 90%, and High as it falls back.");
    DWORD load = 0;
    SIZE_T available = 0;
    hr = IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    if (limit)
        step("GetMemoryLoad()", hr, "load %u%%: %zu of the budget's %zu pages committed (A's), %zu available",
             (unsigned)load, committed / P, limit / P, (size_t)available / P);
    else
        step("GetMemoryLoad()", hr, "load %u%% of the machine: no budget in force", (unsigned)load);
    if (!needed(hr, "GetMemoryLoad"))
        goto finish;
    size_t fill = limit && limit > committed ? (limit - committed) / P : 0;
    if (!limit || !fill || fill > DEMO_FILL_MAX) {
        if (!limit)
            snprintf(text, sizeof text, "(no budget: nothing to fill; without --commit-limit it is %d pages)",
                     DEMO_BUDGET_PAGES);
        else if (!fill)
            snprintf(text, sizeof text, "(a budget of %s: A's pages fill it already; without --commit-limit it is %d pages)",
                     cli_size_text(limit, sz, sizeof sz), DEMO_BUDGET_PAGES);
        else
            snprintf(text, sizeof text, "(a budget of %s: more than the demo fills; without --commit-limit it is %d pages)",
                     cli_size_text(limit, sz, sizeof sz), DEMO_BUDGET_PAGES);
        remark(text);
    } else {
        snprintf(call, sizeof call, "B = VirtualAlloc(NULL, %zu pages, MEM_RESERVE|MEM_COMMIT, task)", fill);
        hr = IHostMemoryManager_VirtualAlloc(m, NULL, fill * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
                                             eTaskCritical, &big);
        s = stats_of(m);
        step(call, hr, hr == S_OK ? "the rest of the budget: %zu of %zu pages committed, load %u%%" : NULL,
             s.committed_bytes / P, limit / P, load_of(m));
        if (!needed(hr, "committing the rest of the budget (B)"))
            goto finish;
        hr = IHostMemoryManager_VirtualAlloc(m, a + 8 * P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        step("VirtualAlloc(A+8 pages, 8 pages, MEM_COMMIT, task)", hr,
             hr == E_OUTOFMEMORY ? "the budget is full: refused at once, nothing changed" : NULL);
        hr = IHostMemoryManager_VirtualAlloc(m, a + 8 * P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p);
        bool emergency = hr == S_OK;
        if (emergency)
            step("VirtualAlloc(A+8 pages, 8 pages, MEM_COMMIT, process)", hr, "taken from the emergency reserve (%s)",
                 cli_size_text(config.emergency_reserve, sz, sizeof sz));
        else
            step("VirtualAlloc(A+8 pages, 8 pages, MEM_COMMIT, process)", hr,
                 config.emergency_reserve ? "more than the emergency reserve (%s) holds"
                                          : "refused too: no emergency reserve (--emergency-reserve)",
                 cli_size_text(config.emergency_reserve, sz, sizeof sz));
        hr = IHostMemoryManager_GetMemoryLoad(m, &load, &available);
        step("GetMemoryLoad()", hr, "load %u%%, %s available", (unsigned)load,
             cli_size_text(available, sz, sizeof sz));
        hr = IHostMemoryManager_VirtualFree(m, big, 0, MEM_RELEASE);
        step("VirtualFree(B, 0, MEM_RELEASE)", hr, "the load falls back to %u%%: the runtime hears it", load_of(m));
        if (!needed(hr, "releasing B"))
            goto finish;
        big = NULL;
        if (emergency) { /* the heap below starts from A's 4 pages, as without the reserve */
            hr = IHostMemoryManager_VirtualFree(m, a + 8 * P, 8 * P, MEM_DECOMMIT);
            step("VirtualFree(A+8 pages, 8 pages, MEM_DECOMMIT)", hr, "the emergency pages given back");
            if (!needed(hr, "decommitting the emergency pages"))
                goto finish;
        }
    }

    section("A heap on host pages", "CreateMalloc gives the runtime an IHostMalloc whose pages the budget covers: as the\n"
                                    "heap commits them the load rises, and the runtime hears it.");
    hr = IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    step("CreateMalloc(MALLOC_THREADSAFE)", hr, NULL);
    if (!needed(hr, "CreateMalloc"))
        goto finish;
    hr = IHostMalloc_DebugAlloc(heap, 100, eTaskCritical, (char *)"jit.cpp", 120, &blocks[0]);
    step("DebugAlloc(100 bytes, \"jit.cpp\", 120)", hr, NULL);
    if (!needed(hr, "the heap's first block"))
        goto finish;
    hr = IHostMalloc_DebugAlloc(heap, 5000, eTaskCritical, (char *)"loader.cpp", 77, &blocks[1]);
    step("DebugAlloc(5000 bytes, \"loader.cpp\", 77)", hr, NULL);
    if (!needed(hr, "the heap's second block"))
        goto finish;
    hr = IHostMalloc_Alloc(heap, 0, eTaskCritical, &blocks[2]);
    step("Alloc(0 bytes)", hr, "a unique pointer");
    if (!needed(hr, "a 0-byte block"))
        goto finish;
    hr = IHostMalloc_Free(heap, (char *)blocks[0] + 8);
    step("Free(an interior pointer)", hr, "refused, heap intact");
    hr = IHostMalloc_Free(heap, blocks[2]);
    step("Free(the 0-byte block)", hr, NULL);
    if (!needed(hr, "freeing the 0-byte block"))
        goto finish;
    hr = IHostMalloc_Free(heap, blocks[2]);
    blocks[2] = NULL;
    step("Free(the same block again)", hr, "a double free is refused");

    section("Statistics", NULL);
    s = stats_of(m);
    char c1[32], c2[32], c3[32], c4[32], c5[32];
    if (!json) {
        printf("  reserved %s, committed %s (peak %s), heap %s, budget %s\n",
               cli_size_text(s.reserved_bytes, c1, sizeof c1), cli_size_text(s.committed_bytes, c2, sizeof c2),
               cli_size_text(s.peak_committed_bytes, c3, sizeof c3), cli_size_text(s.heap_bytes, c4, sizeof c4),
               s.commit_limit ? cli_size_text(s.commit_limit, c5, sizeof c5) : "none");
        printf("  %zu reservation%s in %zu arena%s; refusals: task %zu, appdomain %zu, process %zu\n", s.reservations,
               s.reservations == 1 ? "" : "s", s.arenas, s.arenas == 1 ? "" : "s", s.refusals[0], s.refusals[1],
               s.refusals[2]);
        printf("  notifications sent: Low %zu, Neutral %zu, High %zu (the runtime counted %d, %d, %d)\n",
               s.notifications[1], s.notifications[2], s.notifications[3], rt.low, rt.neutral, rt.high);
    }
    section("The leak report", "Live heap blocks with the file:line DebugAlloc recorded.");

finish:;
    size_t live = 0;
    if (heap)
        hostmem_heap_report(heap, json || stopped_at ? NULL : stdout, &live);
    if (json) {
        s = stats_of(m);
        printf("\n  ],\n  \"stopped\": ");
        if (stopped_at)
            json_string(stopped_at);
        else
            printf("null");
        printf(",\n  \"stats\": {\"reserved\": %zu, \"committed\": %zu, \"peak_committed\": %zu, \"heap\": %zu, "
               "\"commit_limit\": %zu, \"reservations\": %zu, \"arenas\": %zu, \"refusals\": [%zu, %zu, %zu], "
               "\"notifications\": {\"low\": %zu, \"neutral\": %zu, \"high\": %zu}, \"live_heap_blocks\": %zu}\n}\n",
               s.reserved_bytes, s.committed_bytes, s.peak_committed_bytes, s.heap_bytes, s.commit_limit,
               s.reservations, s.arenas, s.refusals[0], s.refusals[1], s.refusals[2], s.notifications[1],
               s.notifications[2], s.notifications[3], live);
    }
    /* The clean-up: what the walk made, in reverse; its notifications are not part of the walk. */
    if (heap) {
        for (int i = 0; i < 3; i++)
            if (blocks[i])
                IHostMalloc_Free(heap, blocks[i]);
        IHostMalloc_Release(heap);
    }
    if (big)
        IHostMemoryManager_VirtualFree(m, big, 0, MEM_RELEASE);
    if (base)
        IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL);
    IHostMemoryManager_Release(m);
    fflush(stdout);
    if (stopped_at)
        return explain_stop();
    if (!json)
        printf("\nEvery call above is an IHostMemoryManager or IHostMalloc method; docs/contract.md has the rules.\n");
    return EXIT_OK;
}
