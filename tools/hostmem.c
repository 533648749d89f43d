/*
 * hostmem.c - the command-line tool: demo (the main job), replay, info.
 * Exit codes: 0 success, 1 a failed expectation or statement, 2 usage or
 * syntax error (a bad option value included: the manager options are checked
 * with hostmem_config_problem before a manager is made), 3 the manager could
 * not be created (or, for demo, had no room under the process's address-space
 * limit).
 */
#define COBJMACROS
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli.h"

static const char usage[] =
    "usage: hostmem [--help] [--version] [COMMAND [OPTIONS] [ARGS]]\n"
    "A host memory manager (IHostMemoryManager) for Linux; this tool shows what it does.\n"
    "\n"
    "Commands:\n"
    "  demo [OPTIONS]           a walk through the whole contract (the default command)\n"
    "  replay [OPTIONS] [FILE]  run a script of manager operations (FILE, or - or nothing:\n"
    "                           standard input); the language: hostmem help replay\n"
    "  info [--json]            this machine as hostmem sees it\n"
    "  bench [--quick] [--json] [--runs N] [--only SECTION] [--svg PATH]\n"
    "                           the benchmark against the raw system calls (make bench in\n"
    "                           the source tree adds the heap against glibc, mimalloc, jemalloc)\n"
    "  help [COMMAND]           this text, or a command's (the same as COMMAND --help)\n"
    "\n"
    "Output options:\n"
    "  --json                   demo and info: JSON instead of text\n"
    "  --no-colour, --no-color  demo: no colour even on a terminal (as NO_COLOR=1 does)\n"
    "\n";

static const char usage_end[] =
    "\n"
    "Exit codes: 0 success; 1 an expectation, check or statement failed; 2 usage or\n"
    "syntax error, a bad option value included; 3 the manager could not be created, or\n"
    "the demo had no room for a step under the address-space limit (ulimit -v).\n"
    "See hostmem(1) (man -l docs/hostmem.1 in the source tree) and docs/cli.md.\n";

static const char help_help[] =
    "usage: hostmem help [COMMAND]\n"
    "Prints the help of the tool, or of COMMAND: demo, replay, info, bench or help.\n"
    "hostmem COMMAND --help prints the same.\n";

static void print_usage(void)
{
    fputs(usage, stdout);
    cli_manager_options_print(stdout);
    fputs(usage_end, stdout);
}

static long read_number(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f) {
        if (fscanf(f, "%ld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static long count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* The process's VmSize in bytes: what RLIMIT_AS bounds; 0 when unreadable. */
static uint64_t mapped_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %llu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kib << 10;
}

/* A manager's largest arena with default settings (hostmem.h: arena_size 0). */
#define DEFAULT_LARGEST_ARENA ((size_t)1 << 30)

static double mib(uint64_t bytes)
{
    return (double)bytes / (double)(1 << 20);
}

static const char info_help[] =
    "usage: hostmem info [--json]\n"
    "Page size, allocation granularity, overcommit mode, vm.max_map_count, kernel\n"
    "mappings in use, the address-space limit (RLIMIT_AS, ulimit -v) and the arenas\n"
    "hostmem makes under it, the budget a manager with default settings applies (the\n"
    "cgroup's limit), and the memory load.\n";

int cmd_info(int argc, char **argv)
{
    bool json = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(info_help, stdout);
            return EXIT_OK;
        }
        if (!strcmp(argv[i], "--json")) {
            json = true;
            continue;
        }
        fprintf(stderr, "hostmem info: unknown argument '%s' (see hostmem info --help)\n", argv[i]);
        return EXIT_USAGE;
    }
    IHostMemoryManager *m;
    if (cli_manager_create("info", NULL, 0, &m) != EXIT_OK)
        return EXIT_MANAGER;
    /* The first arena, measured, not predicted: one reservation makes it. */
    struct rlimit as_limit;
    bool limited = getrlimit(RLIMIT_AS, &as_limit) == 0 && as_limit.rlim_cur != RLIM_INFINITY;
    uint64_t limit = limited ? (uint64_t)as_limit.rlim_cur : 0, mapped = mapped_bytes();
    uint64_t left = limit > mapped ? limit - mapped : 0;
    void *probe = NULL;
    HRESULT probe_hr = IHostMemoryManager_VirtualAlloc(m, NULL, hostmem_granularity(), MEM_RESERVE, PAGE_NOACCESS,
                                                       eTaskCritical, &probe);
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(m, &s);
    size_t first_arena = probe_hr == S_OK ? s.arena_bytes : 0;
    if (probe_hr == S_OK)
        IHostMemoryManager_VirtualFree(m, probe, 0, MEM_RELEASE);
    DWORD load = 0;
    SIZE_T available = 0;
    HRESULT load_hr = IHostMemoryManager_GetMemoryLoad(m, &load, &available);
    IHostMemoryManager_Release(m);
    long overcommit = read_number("/proc/sys/vm/overcommit_memory");
    long max_maps = read_number("/proc/sys/vm/max_map_count");
    long maps = count_lines("/proc/self/maps");
    static const char *modes[] = {"heuristic", "always", "never (strict accounting)"};
    if (json) {
        char limit_text[32] = "null", left_text[32] = "null";
        if (limited) {
            snprintf(limit_text, sizeof limit_text, "%llu", (unsigned long long)limit);
            snprintf(left_text, sizeof left_text, "%llu", (unsigned long long)left);
        }
        printf("{\"version\": \"%s\", \"page_size\": %zu, \"granularity\": %zu, \"overcommit_memory\": %ld, "
               "\"max_map_count\": %ld, \"kernel_mappings\": %ld, \"address_space_limit\": %s, "
               "\"address_space_left\": %s, \"first_arena\": %zu, \"largest_arena\": %zu, "
               "\"default_commit_limit\": %zu, \"memory_load\": %d, \"available_bytes\": %zu, "
               "\"write_watch\": \"%s\"}\n",
               HOSTMEM_VERSION_STRING, hostmem_page_size(), hostmem_granularity(), overcommit, max_maps, maps,
               limit_text, left_text, first_arena, DEFAULT_LARGEST_ARENA, s.commit_limit,
               load_hr == S_OK ? (int)load : -1, load_hr == S_OK ? (size_t)available : 0,
               hostmem_write_watch_mode());
        return EXIT_OK;
    }
    char a[32];
    printf("hostmem %s\n", HOSTMEM_VERSION_STRING);
    printf("page size              %zu bytes\n", hostmem_page_size());
    printf("allocation granularity %zu bytes\n", hostmem_granularity());
    printf("overcommit mode        %ld (%s)\n", overcommit,
           overcommit >= 0 && overcommit <= 2 ? modes[overcommit] : "unknown");
    printf("vm.max_map_count       %ld\n", max_maps);
    printf("kernel mappings        %ld in use by this process\n", maps);
    if (!limited)
        printf("address-space limit    none (RLIMIT_AS unlimited)\n");
    else
        printf("address-space limit    %.1f MiB (RLIMIT_AS), %.1f MiB of it left\n", mib(limit), mib(left));
    if (!first_arena)
        printf("arenas                 none: the kernel refused even a %zu KiB arena\n", hostmem_granularity() >> 10);
    else if (!limited)
        printf("arenas                 %.0f MiB each (no limit: every arena is the largest)\n", mib(first_arena));
    else
        printf("arenas                 %.1f MiB first, each next twice the last, up to %.0f GiB, but never\n"
               "                       more than a quarter of what the limit leaves\n",
               mib(first_arena), mib(DEFAULT_LARGEST_ARENA) / 1024);
    printf("default budget         %s\n",
           s.commit_limit ? cli_size_text(s.commit_limit, a, sizeof a) : "none (no cgroup memory limit)");
    if (load_hr == S_OK)
        printf("memory load            %u%%, %.1f GiB available\n", (unsigned)load,
               (double)available / (double)((size_t)1 << 30));
    else
        printf("memory load            unknown (/proc/meminfo unreadable)\n");
    if (strcmp(hostmem_write_watch_mode(), "kernel") == 0)
        printf("write watch            in the kernel (userfaultfd write-protection + PAGEMAP_SCAN);\n"
               "                       HOSTMEM_EMULATE_WRITE_WATCH emulates it (write-protection + SIGSEGV)\n");
    else
        printf("write watch            emulated only: this kernel cannot track writes (Linux 6.7 can);\n"
               "                       MEM_WRITE_WATCH needs a manager made with HOSTMEM_EMULATE_WRITE_WATCH\n");
    return EXIT_OK;
}

/* hostmem help [COMMAND]: the help of the tool, of help itself, or of one command. */
static int cmd_help(int argc, char **argv)
{
    if (argc == 0) {
        print_usage();
        return EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "hostmem help: one command at a time (see hostmem help --help)\n");
        return EXIT_USAGE;
    }
    const char *command = argv[0];
    char *help[] = {(char *)"--help", NULL};
    if (!strcmp(command, "--help") || !strcmp(command, "-h") || !strcmp(command, "help")) {
        fputs(help_help, stdout);
        return EXIT_OK;
    }
    if (!strcmp(command, "demo"))
        return cmd_demo(1, help);
    if (!strcmp(command, "replay"))
        return cmd_replay(1, help);
    if (!strcmp(command, "info"))
        return cmd_info(1, help);
    if (!strcmp(command, "bench")) {
        char *bench_help[] = {(char *)"bench", (char *)"--help", NULL};
        return hostmem_bench_main(2, bench_help);
    }
    fprintf(stderr, "hostmem help: no command '%s' (the commands: demo, replay, info, bench, help)\n", command);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return cmd_demo(0, argv + 1);
    const char *command = argv[1];
    if (!strcmp(command, "--help") || !strcmp(command, "-h")) {
        print_usage();
        return EXIT_OK;
    }
    if (!strcmp(command, "--version")) {
        printf("hostmem %s\n", HOSTMEM_VERSION_STRING);
        return EXIT_OK;
    }
    if (!strcmp(command, "help"))
        return cmd_help(argc - 2, argv + 2);
    if (!strcmp(command, "demo"))
        return cmd_demo(argc - 2, argv + 2);
    if (!strcmp(command, "replay"))
        return cmd_replay(argc - 2, argv + 2);
    if (!strcmp(command, "info"))
        return cmd_info(argc - 2, argv + 2);
    if (!strcmp(command, "bench"))
        return hostmem_bench_main(argc - 1, argv + 1);
    if (command[0] == '-')
        return cmd_demo(argc - 1, argv + 1); /* options for the default command */
    fprintf(stderr, "hostmem: unknown command '%s' (see hostmem --help)\n", command);
    return EXIT_USAGE;
}
