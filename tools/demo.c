/*
 * demo.c - `hostmem demo`, the main job: a walk through the whole contract on
 * built-in defaults, annotated for a person (colour on a terminal only) or as
 * JSON for a machine (--json).
 */
#define COBJMACROS
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static bool json, json_requested, colour;
static int steps;
static const char *short_of_room; /* the first step refused for want of address space */

/* A step the demo sized to succeed: E_OUTOFMEMORY there means the process had
 * no address space to give (a small RLIMIT_AS, `ulimit -v`), not a rule. */
static void needs_room(HRESULT hr, const char *what)
{
    if (hr == E_OUTOFMEMORY && !short_of_room)
        short_of_room = what;
}

/* Says why the walk could not run, and returns the exit code of a manager
 * that could not be set up (docs/cli.md). */
static int explain_no_room(void)
{
    cli_explain_out_of_memory("demo", short_of_room, CLI_DEMO_NEEDS_MIB);
    return EXIT_MANAGER;
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
    const char *result = cli_result_name(hr, rn, sizeof rn);
    if (json) {
        printf("%s\n    {\"call\": ", steps ? "," : "");
        json_string(call);
        printf(", \"result\": ");
        json_string(result);
        printf(", \"note\": ");
        json_string(text);
        printf("}");
    } else {
        printf("  %-58s %s%s%s", call, paint(hr == S_OK ? "\033[32m" : "\033[33m"), result, paint("\033[0m"));
        if (*text)
            printf("  %s", text);
        printf("\n");
    }
    steps++;
}

static int map_line(void *context, const MEMORY_BASIC_INFORMATION *info)
{
    uintptr_t base = *(uintptr_t *)context;
    char p[48], sz[32];
    if (json)
        return 0;
    printf("    base+0x%-6jx %8s  %-7s %s\n", (uintmax_t)((uintptr_t)info->BaseAddress - base),
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
    static const char *names[] = {"?", "Low", "Neutral", "High"};
    if (e == eMemoryAvailableLow)
        rt->low++;
    else if (e == eMemoryAvailableNeutral)
        rt->neutral++;
    else
        rt->high++;
    if (!json)
        printf("  %s-> runtime callback: OnMemoryNotification(eMemoryAvailable%s)%s\n", paint("\033[36m"),
               names[e >= 1 && e <= 3 ? e : 0], paint("\033[0m"));
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl rt_vtbl = {rt_query, rt_ref, rt_ref, rt_notify};

static const char demo_help[] =
    "usage: hostmem demo [--json] [--no-colour] [OPTIONS]\n"
    "A walk through the whole contract on built-in defaults: reserve and commit, the\n"
    "region map as VirtualQuery sees it, VirtualFree refusing memory the host never\n"
    "handed out, a decommit and a zeroed recommit, a budget hit by task- and process-\n"
    "critical requests, a memory notification reaching a runtime's callback, a heap,\n"
    "the statistics and the leak report. Colour only on a terminal (NO_COLOR: none).\n"
    "Options:\n"
    "  --json                     machine-readable output\n"
    "  --no-colour, --no-color    no colour even on a terminal\n";

int cmd_demo(int argc, char **argv)
{
    hostmem_config config = {sizeof config};
    bool budget_given = false;
    colour = isatty(1) && !getenv("NO_COLOR");
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(demo_help, stdout);
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
    json_requested = json;
    size_t P = hostmem_page_size(), G = hostmem_granularity();
    if (!budget_given)
        config.commit_limit = 64 * P; /* a small budget, so that the demo can hit it */
    config.flags |= 0;
    int status = cli_manager_config_check("demo", &config);
    if (status != EXIT_OK)
        return status;
    IHostMemoryManager *m;
    status = cli_manager_create("demo", &config, CLI_DEMO_NEEDS_MIB, &m);
    if (status != EXIT_OK)
        return status;
    HRESULT hr;
    char text[160], sz[32];
    if (json)
        printf("{\n  \"version\": \"%s\", \"page_size\": %zu, \"granularity\": %zu,\n  \"steps\": [", HOSTMEM_VERSION_STRING,
               P, G);
    else
        printf("%shostmem %s%s: a host memory manager (IHostMemoryManager) on Linux. Page %zu bytes, "
               "allocation granularity %zu.\n",
               paint("\033[1m"), HOSTMEM_VERSION_STRING, paint("\033[0m"), P, G);

    struct runtime rt = {{&rt_vtbl}, 0, 0, 0};
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, &rt.iface);

    section("Reserve, then commit",
            "A runtime reserves address space, then commits pages as it needs them.");
    void *base = NULL, *p = NULL;
    hr = IHostMemoryManager_VirtualAlloc(m, NULL, 48 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base);
    step("VirtualAlloc(NULL, 48 pages, MEM_RESERVE, PAGE_READWRITE)", hr, "base is 64 KiB aligned: %s",
         base && ((uintptr_t)base % G) == 0 ? "yes" : "no");
    if (hr != S_OK) {
        IHostMemoryManager_Release(m);
        needs_room(hr, "the first reservation");
        return short_of_room ? explain_no_room() : EXIT_FAILED;
    }
    char *b = base;
    hr = IHostMemoryManager_VirtualAlloc(m, b + P, 4 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    if (hr != S_OK) { /* the pages stay reserved: the walk cannot touch them */
        step("VirtualAlloc(base+1 page, 4 pages, MEM_COMMIT, PAGE_READWRITE)", hr, NULL);
        IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
        IHostMemoryManager_Release(m);
        needs_room(hr, "the first commit");
        return short_of_room ? explain_no_room() : EXIT_FAILED;
    }
    step("VirtualAlloc(base+1 page, 4 pages, MEM_COMMIT, PAGE_READWRITE)", hr, "new pages read zero: %s",
         b[P] == 0 && b[4 * P] == 0 ? "yes" : "no");
    memset(b + P, 0x5A, 4 * P);
    DWORD old = 0;
    hr = IHostMemoryManager_VirtualProtect(m, b + 3 * P, P, PAGE_READONLY, &old);
    needs_room(hr, "VirtualProtect");
    cli_protect_name(old, text, sizeof text);
    step("VirtualProtect(base+3 pages, 1 page, PAGE_READONLY)", hr, "old protection %s", text);

    section("The region map, as VirtualQuery sees it", "One line a run of pages with equal state and protection.");
    uintptr_t b0 = (uintptr_t)base;
    hostmem_walk(m, map_line, &b0);
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    hr = IHostMemoryManager_VirtualQuery(m, b + 2 * P, &info, sizeof info, &got);
    step("VirtualQuery(base+2 pages)", hr, "State %s, Protect %s, RegionSize %s",
         info.State == MEM_COMMIT ? "MEM_COMMIT" : "MEM_RESERVE", cli_protect_name(info.Protect, text, sizeof text),
         cli_size_text(info.RegionSize, sz, sizeof sz));
    hr = IHostMemoryManager_VirtualQuery(m, (void *)&cmd_demo, &info, sizeof info, &got);
    step("VirtualQuery(this program's code)", hr, "outside host memory: the kernel's view, %s",
         info.Type == MEM_IMAGE ? "MEM_IMAGE" : "other");

    section("VirtualFree refuses what the host never handed out",
            "HOST_E_INVALIDOPERATION, and nothing is touched.");
    int local = 0;
    void *libc = malloc(32);
    hr = IHostMemoryManager_VirtualFree(m, &local, 0, MEM_RELEASE);
    step("VirtualFree(a stack address, 0, MEM_RELEASE)", hr, NULL);
    hr = IHostMemoryManager_VirtualFree(m, libc, 0, MEM_RELEASE);
    step("VirtualFree(a malloc block, 0, MEM_RELEASE)", hr, NULL);
    hr = IHostMemoryManager_VirtualFree(m, b + 48 * P, 0, MEM_RELEASE);
    step("VirtualFree(the unused tail of the last 64 KiB, 0, MEM_RELEASE)", hr, NULL);
    free(libc);
    hr = IHostMemoryManager_VirtualFree(m, b + P, 0, MEM_RELEASE);
    step("VirtualFree(base+1 page, 0, MEM_RELEASE)", hr, "size 0 must name the base (Win32 rule)");

    section("Decommit, then commit again", "Decommitted pages go back to the OS and read zero when committed again.");
    hr = IHostMemoryManager_VirtualFree(m, b + P, P, MEM_DECOMMIT);
    step("VirtualFree(base+1 page, 1 page, MEM_DECOMMIT)", hr, NULL);
    hr = IHostMemoryManager_VirtualAlloc(m, b + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    needs_room(hr, "the recommit");
    if (hr == S_OK) /* a page left decommitted cannot be read */
        step("VirtualAlloc(base+1 page, 1 page, MEM_COMMIT)", hr,
             "first byte 0x%02x (was 0x5a); its neighbour kept 0x%02x", (unsigned char)b[P], (unsigned char)b[2 * P]);
    else
        step("VirtualAlloc(base+1 page, 1 page, MEM_COMMIT)", hr, NULL);

    section("The budget and the critical levels",
            "A 64-page budget. Task-critical requests are refused at once; process-critical ones may use\n"
            "the emergency reserve (none here); the runtime hears Low as the load crosses 90%.");
    void *big = NULL;
    hr = IHostMemoryManager_VirtualAlloc(m, NULL, 60 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &big);
    needs_room(hr, "a reservation within the budget");
    step("VirtualAlloc(NULL, 60 pages, MEM_RESERVE|MEM_COMMIT, task)", hr, NULL);
    hr = IHostMemoryManager_VirtualAlloc(m, b + 8 * P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
    step("VirtualAlloc(base+8 pages, 8 pages, MEM_COMMIT, task)", hr, "over the budget: refused, nothing changed");
    hr = IHostMemoryManager_VirtualAlloc(m, b + 8 * P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eProcessCritical, &p);
    step("VirtualAlloc(base+8 pages, 8 pages, MEM_COMMIT, process)", hr, "no emergency reserve configured");
    DWORD load = 0;
    SIZE_T available = 0;
    hr = IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    step("GetMemoryLoad()", hr, "load %u%%, %s available", (unsigned)load, cli_size_text(available, sz, sizeof sz));
    if (big) {
        hr = IHostMemoryManager_VirtualFree(m, big, 0, MEM_RELEASE);
        step("VirtualFree(the 60 pages, 0, MEM_RELEASE)", hr, "the load falls: the runtime hears it");
    }

    section("A heap on host pages", "CreateMalloc gives the runtime an IHostMalloc whose pages the budget covers.");
    IHostMalloc *heap = NULL;
    hr = IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, &heap);
    needs_room(hr, "CreateMalloc");
    step("CreateMalloc(MALLOC_THREADSAFE)", hr, NULL);
    void *blocks[3] = {NULL, NULL, NULL};
    if (heap) {
        hr = IHostMalloc_DebugAlloc(heap, 100, eTaskCritical, (char *)"jit.cpp", 120, &blocks[0]);
        needs_room(hr, "the heap's first block");
        step("DebugAlloc(100 bytes, \"jit.cpp\", 120)", hr, NULL);
        hr = IHostMalloc_DebugAlloc(heap, 5000, eTaskCritical, (char *)"loader.cpp", 77, &blocks[1]);
        step("DebugAlloc(5000 bytes, \"loader.cpp\", 77)", hr, NULL);
        hr = IHostMalloc_Alloc(heap, 0, eTaskCritical, &blocks[2]);
        step("Alloc(0 bytes)", hr, "a unique pointer");
        hr = IHostMalloc_Free(heap, (char *)blocks[0] + 8);
        step("Free(an interior pointer)", hr, "refused, heap intact");
        hr = IHostMalloc_Free(heap, blocks[2]);
        step("Free(the 0-byte block)", hr, NULL);
        hr = IHostMalloc_Free(heap, blocks[2]);
        step("Free(the same block again)", hr, "a double free is refused");
    }

    section("Statistics", NULL);
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(m, &s);
    char c1[32], c2[32], c3[32], c4[32], c5[32];
    if (!json) {
        printf("  reserved %s, committed %s (peak %s), heap %s, budget %s\n",
               cli_size_text(s.reserved_bytes, c1, sizeof c1), cli_size_text(s.committed_bytes, c2, sizeof c2),
               cli_size_text(s.peak_committed_bytes, c3, sizeof c3), cli_size_text(s.heap_bytes, c4, sizeof c4),
               s.commit_limit ? cli_size_text(s.commit_limit, c5, sizeof c5) : "none");
        printf("  %zu reservations in %zu arenas; refusals: task %zu, appdomain %zu, process %zu\n",
               s.reservations, s.arenas, s.refusals[0], s.refusals[1], s.refusals[2]);
        printf("  notifications sent: Low %zu, Neutral %zu, High %zu (the runtime counted %d, %d, %d)\n",
               s.notifications[1], s.notifications[2], s.notifications[3], rt.low, rt.neutral, rt.high);
    }

    section("The leak report", "Live heap blocks with the file:line DebugAlloc recorded.");
    size_t live = 0;
    if (heap)
        hostmem_heap_report(heap, json ? NULL : stdout, &live);
    if (json) {
        printf("\n  ],\n  \"stats\": {\"reserved\": %zu, \"committed\": %zu, \"peak_committed\": %zu, \"heap\": %zu, "
               "\"commit_limit\": %zu, \"reservations\": %zu, \"refusals\": [%zu, %zu, %zu], "
               "\"notifications\": {\"low\": %zu, \"neutral\": %zu, \"high\": %zu}, \"live_heap_blocks\": %zu}\n}\n",
               s.reserved_bytes, s.committed_bytes, s.peak_committed_bytes, s.heap_bytes, s.commit_limit,
               s.reservations, s.refusals[0], s.refusals[1], s.refusals[2], s.notifications[1], s.notifications[2],
               s.notifications[3], live);
    }
    json = true; /* the clean-up's notifications are not part of the walk */
    if (heap) {
        IHostMalloc_Free(heap, blocks[0]);
        IHostMalloc_Free(heap, blocks[1]);
        IHostMalloc_Release(heap);
    }
    IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
    IHostMemoryManager_RegisterMemoryNotificationCallback(m, NULL);
    IHostMemoryManager_Release(m);
    if (short_of_room)
        return explain_no_room();
    if (!json_requested)
        printf("\nEvery call above is an IHostMemoryManager or IHostMalloc method; docs/contract.md has the rules.\n");
    return EXIT_OK;
}
