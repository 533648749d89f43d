/*
 * cli.c - what the tool's commands share: parsing and naming (sizes,
 * protections, levels, results), the manager options, and making the manager:
 * options the library would refuse are a usage error said with the option
 * (exit 2), a manager it cannot make is exit 3 with why and what to do
 * (docs/cli.md, Exit status).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "cli.h"

int cli_parse_size(const char *text, size_t *out)
{
    if (!text || !*text)
        return -1;
    const char *s = text;
    int base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    uint64_t v = 0;
    int digits = 0;
    for (; *s; s++, digits++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = *s - 'a' + 10;
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = *s - 'A' + 10;
        else
            break;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return -2;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (!digits)
        return -1;
    unsigned shift = 0;
    if (*s) {
        switch (*s) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return -1;
        }
        s++;
        if (*s == 'B' || *s == 'b') /* 64KB, 64KiB */
            s++;
        else if (*s == 'i' && s[1] == 'B')
            s += 2;
        if (*s)
            return -1;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return -2;
    v <<= shift;
    if (v > SIZE_MAX)
        return -2;
    *out = (size_t)v;
    return 0;
}

static const struct {
    const char *name, *alias;
    DWORD value;
} protections[] = {
    {"noaccess", "none", PAGE_NOACCESS},
    {"readonly", "r", PAGE_READONLY},
    {"readwrite", "rw", PAGE_READWRITE},
    {"execute", "x", PAGE_EXECUTE},
    {"execute-read", "rx", PAGE_EXECUTE_READ},
    {"execute-readwrite", "rwx", PAGE_EXECUTE_READWRITE},
    {"writecopy", "wc", PAGE_WRITECOPY},
    {"execute-writecopy", "xwc", PAGE_EXECUTE_WRITECOPY},
};

bool cli_parse_protect(const char *text, DWORD *out)
{
    char base[64];
    const char *plus = strchr(text, '+');
    size_t n = plus ? (size_t)(plus - text) : strlen(text);
    if (n == 0 || n >= sizeof base)
        return false;
    memcpy(base, text, n);
    base[n] = 0;
    DWORD value = 0;
    bool found = false;
    if (base[0] >= '0' && base[0] <= '9') {
        size_t v;
        if (cli_parse_size(base, &v) != 0 || v > 0xFFFFFFFFu)
            return false;
        value = (DWORD)v;
        found = true;
    }
    for (size_t i = 0; !found && i < sizeof protections / sizeof protections[0]; i++) {
        if (!strcmp(base, protections[i].name) || !strcmp(base, protections[i].alias)) {
            value = protections[i].value;
            found = true;
        }
    }
    if (!found)
        return false;
    while (plus) {
        const char *next = strchr(plus + 1, '+');
        size_t len = next ? (size_t)(next - plus - 1) : strlen(plus + 1);
        if (len == 5 && !strncmp(plus + 1, "guard", 5))
            value |= PAGE_GUARD;
        else if (len == 7 && !strncmp(plus + 1, "nocache", 7))
            value |= PAGE_NOCACHE;
        else if (len == 12 && !strncmp(plus + 1, "writecombine", 12))
            value |= PAGE_WRITECOMBINE;
        else
            return false;
        plus = next;
    }
    *out = value;
    return true;
}

const char *cli_protect_name(DWORD p, char *buffer, size_t size)
{
    if (p == 0) {
        snprintf(buffer, size, "-");
        return buffer;
    }
    const char *base = NULL;
    for (size_t i = 0; i < sizeof protections / sizeof protections[0]; i++)
        if (protections[i].value == (p & 0xFF))
            base = protections[i].name;
    if (!base) {
        snprintf(buffer, size, "0x%x", (unsigned)p);
        return buffer;
    }
    snprintf(buffer, size, "%s%s%s%s", base, p & PAGE_GUARD ? "+guard" : "",
             p & PAGE_NOCACHE ? "+nocache" : "", p & PAGE_WRITECOMBINE ? "+writecombine" : "");
    return buffer;
}

bool cli_parse_level(const char *text, EMemoryCriticalLevel *out)
{
    if (!strcmp(text, "task"))
        *out = eTaskCritical;
    else if (!strcmp(text, "appdomain"))
        *out = eAppDomainCritical;
    else if (!strcmp(text, "process"))
        *out = eProcessCritical;
    else
        return false;
    return true;
}

static const HRESULT known_results[] = {
    S_OK, E_NOTIMPL, E_NOINTERFACE, E_POINTER, E_FAIL, E_OUTOFMEMORY, E_INVALIDARG,
    HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS), HRESULT_FROM_WIN32(ERROR_BAD_LENGTH),
    HOST_E_INVALIDOPERATION, HOST_E_CLRNOTAVAILABLE, HOST_E_TIMEOUT, HOST_E_NOT_OWNER,
    HOST_E_ABANDONED, HOSTMEM_E_CONTENTS_LOST, HOSTMEM_E_DYNAMIC_CODE_BLOCKED, E_ACCESSDENIED,
};

bool cli_parse_result(const char *text, HRESULT *out)
{
    for (size_t i = 0; i < sizeof known_results / sizeof known_results[0]; i++) {
        if (!strcmp(text, hostmem_result_name(known_results[i]))) {
            *out = known_results[i];
            return true;
        }
    }
    if (!strcmp(text, "ACCESS_VIOLATION")) {
        *out = (HRESULT)0xC0000005u;
        return true;
    }
    size_t v;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X') && cli_parse_size(text, &v) == 0 &&
        v <= 0xFFFFFFFFu) {
        *out = (HRESULT)(uint32_t)v;
        return true;
    }
    return false;
}

const char *cli_result_name(HRESULT hr, char *buffer, size_t size)
{
    if (hr == (HRESULT)0xC0000005u)
        return "ACCESS_VIOLATION";
    const char *name = hostmem_result_name(hr);
    if (name)
        return name;
    snprintf(buffer, size, "0x%08X", (unsigned)hr);
    return buffer;
}

const char *cli_size_text(size_t bytes, char *buffer, size_t size)
{
    if (bytes && bytes % ((size_t)1 << 30) == 0)
        snprintf(buffer, size, "%zuG", bytes >> 30);
    else if (bytes && bytes % ((size_t)1 << 20) == 0)
        snprintf(buffer, size, "%zuM", bytes >> 20);
    else if (bytes && bytes % 1024 == 0)
        snprintf(buffer, size, "%zuK", bytes >> 10);
    else
        snprintf(buffer, size, "%zu", bytes);
    return buffer;
}

void cli_manager_options_print(FILE *out)
{
    char g[32], least[32];
    cli_size_text(hostmem_granularity(), g, sizeof g);
    cli_size_text(4 * hostmem_granularity(), least, sizeof least);
    fprintf(out,
            "Manager options (demo and replay; they set the hostmem_config of the manager made):\n"
            "  --commit-limit SIZE|none   the commit budget (default: the cgroup's limit, if any)\n"
            "  --emergency-reserve SIZE   extra budget for process-critical requests (default none)\n"
            "  --appdomain-wait MS        how long appdomain-critical requests wait for memory\n"
            "                             (default 100; 0: refused at once, after the Low notice)\n"
            "  --lock-timeout MS          lock waits time out after MS milliseconds (default, or 0:\n"
            "                             never)\n"
            "  --arena-size SIZE          the largest arena of address space: a multiple of %s,\n"
            "                             at least %s, at most 1024G (default 1G)\n"
            "  --compact                  compact mode: reserved pages not hardware-protected\n"
            "A SIZE is a number (decimal, or hex with 0x) with an optional K, M or G (binary):\n"
            "4096, 0x10000, 64K, 12M, 1G.\n",
            g, least);
}

/* The option that sets a hostmem_config field, for the library's reasons
 * (hostmem_config_problem starts each with the field's name). */
static const struct {
    const char *field, *option;
    size_t offset;
    bool milliseconds; /* a DWORD, else a size_t */
} option_fields[] = {
    {"commit_limit", "--commit-limit", offsetof(hostmem_config, commit_limit), false},
    {"emergency_reserve", "--emergency-reserve", offsetof(hostmem_config, emergency_reserve), false},
    {"appdomain_wait_ms", "--appdomain-wait", offsetof(hostmem_config, appdomain_wait_ms), true},
    {"lock_timeout_ms", "--lock-timeout", offsetof(hostmem_config, lock_timeout_ms), true},
    {"arena_size", "--arena-size", offsetof(hostmem_config, arena_size), false},
};

int cli_manager_config_check(const char *command, const hostmem_config *c)
{
    const char *why = hostmem_config_problem(c);
    if (!why)
        return EXIT_OK;
    for (size_t i = 0; i < sizeof option_fields / sizeof option_fields[0]; i++) {
        size_t n = strlen(option_fields[i].field);
        if (strncmp(why, option_fields[i].field, n) || strncmp(why + n, ": ", 2))
            continue;
        const char *field = (const char *)c + option_fields[i].offset;
        char value[32];
        if (option_fields[i].milliseconds) {
            DWORD ms;
            memcpy(&ms, field, sizeof ms);
            snprintf(value, sizeof value, "%u", (unsigned)ms);
        } else {
            size_t bytes;
            memcpy(&bytes, field, sizeof bytes);
            cli_size_text(bytes, value, sizeof value);
        }
        fprintf(stderr, "hostmem %s: %s %s: %s\n", command, option_fields[i].option, value, why + n + 2);
        return EXIT_USAGE;
    }
    fprintf(stderr, "hostmem %s: the manager options cannot work together: %s\n", command, why);
    return EXIT_USAGE;
}

/* The process's address-space limit (RLIMIT_AS, ulimit -v) in bytes; 0 if none. */
static uint64_t address_space_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
        return (uint64_t)limit.rlim_cur;
    return 0;
}

void cli_explain_out_of_memory(const char *command, const char *what, size_t needs_mib)
{
    uint64_t limit = address_space_limit();
    if (limit && needs_mib)
        fprintf(stderr,
                "hostmem %s: %s was refused for want of address space.\n"
                "The process's address-space limit (RLIMIT_AS, set by ulimit -v) is %.1f MiB, and this\n"
                "command needs about %zu MiB in all: raise the limit (ulimit -v %zu) or lift it\n"
                "(ulimit -v unlimited). hostmem info shows the limit and what is left of it.\n",
                command, what, (double)limit / (double)(1 << 20), needs_mib, needs_mib * 1024);
    else if (limit)
        fprintf(stderr,
                "hostmem %s: %s was refused for want of address space.\n"
                "The process's address-space limit (RLIMIT_AS, set by ulimit -v) is %.1f MiB: raise it\n"
                "or lift it (ulimit -v unlimited). hostmem info shows the limit and what is left of it.\n",
                command, what, (double)limit / (double)(1 << 20));
    else
        fprintf(stderr,
                "hostmem %s: %s was refused: the kernel had no memory to give (E_OUTOFMEMORY).\n"
                "Free some memory and try again; hostmem info shows the overcommit mode, the memory\n"
                "load and the kernel mappings in use.\n",
                command, what);
}

int cli_manager_create(const char *command, const hostmem_config *c, size_t needs_mib, IHostMemoryManager **m)
{
    HRESULT hr = hostmem_create(c, m);
    if (hr == S_OK)
        return EXIT_OK;
    char rn[16];
    const char *why = hr == E_INVALIDARG ? hostmem_config_problem(c) : NULL;
    fprintf(stderr, "hostmem %s: cannot create the manager: %s%s%s\n", command, cli_result_name(hr, rn, sizeof rn),
            why ? ": " : "", why ? why : "");
    if (hr == E_OUTOFMEMORY)
        cli_explain_out_of_memory(command, "creating the manager", needs_mib);
    return EXIT_MANAGER;
}

static int option_value(int argc, char **argv, int *i, const char **value)
{
    const char *arg = argv[*i];
    const char *eq = strchr(arg, '=');
    if (eq) {
        *value = eq + 1;
        return 1;
    }
    if (*i + 1 >= argc) {
        fprintf(stderr, "hostmem: option %s needs a value\n", arg);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

static bool option_is(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == 0 || arg[n] == '=');
}

static int size_value(const char *option, const char *value, size_t *out)
{
    int r = cli_parse_size(value, out);
    if (r == -2) {
        fprintf(stderr, "hostmem: %s: size '%s' is too large\n", option, value);
        return -1;
    }
    if (r != 0) {
        fprintf(stderr, "hostmem: %s: '%s' is not a size (a number with an optional K, M or G)\n",
                option, value);
        return -1;
    }
    return 1;
}

static int ms_value(const char *option, const char *value, DWORD *out)
{
    size_t v;
    if (cli_parse_size(value, &v) != 0 || v > 0xFFFFFFFEu) {
        fprintf(stderr, "hostmem: %s: '%s' is not a number of milliseconds\n", option, value);
        return -1;
    }
    *out = (DWORD)v;
    return 1;
}

int cli_manager_option(int argc, char **argv, int *i, hostmem_config *c)
{
    const char *arg = argv[*i], *value;
    if (!strcmp(arg, "--compact")) {
        c->flags |= HOSTMEM_COMPACT;
        return 1;
    }
    if (option_is(arg, "--commit-limit")) {
        if (option_value(argc, argv, i, &value) < 0)
            return -1;
        if (!strcmp(value, "none")) {
            c->commit_limit = HOSTMEM_UNLIMITED;
            return 1;
        }
        int r = size_value("--commit-limit", value, &c->commit_limit);
        if (r == 1 && c->commit_limit == 0) {
            fprintf(stderr, "hostmem: --commit-limit: 0 is not a budget (use none)\n");
            return -1;
        }
        return r;
    }
    if (option_is(arg, "--emergency-reserve"))
        return option_value(argc, argv, i, &value) < 0
                   ? -1
                   : size_value("--emergency-reserve", value, &c->emergency_reserve);
    if (option_is(arg, "--arena-size"))
        return option_value(argc, argv, i, &value) < 0 ? -1
                                                       : size_value("--arena-size", value, &c->arena_size);
    if (option_is(arg, "--appdomain-wait")) {
        if (option_value(argc, argv, i, &value) < 0 || ms_value("--appdomain-wait", value, &c->appdomain_wait_ms) < 0)
            return -1;
        if (c->appdomain_wait_ms == 0) /* the library's 0 is its default (100 ms): no wait is HOSTMEM_NO_WAIT */
            c->appdomain_wait_ms = HOSTMEM_NO_WAIT;
        return 1;
    }
    if (option_is(arg, "--lock-timeout"))
        return option_value(argc, argv, i, &value) < 0
                   ? -1
                   : ms_value("--lock-timeout", value, &c->lock_timeout_ms);
    return 0;
}
