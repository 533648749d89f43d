/*
 * host.c - runs one Lua program on LuaJIT whose every OS page comes from one
 * IHostMemoryManager, and checks the manager around it (issues 12 and 23).
 *
 *   host [--budget BYTES] [--oom caught|uncaught|newstate]
 *        [--dynamic-code any|wx|none] [--expect-error MESSAGE] [--tighten none] SCRIPT
 *
 * --dynamic-code is the manager's policy (hostmem_config.dynamic_code): any
 * protection, W^X, or no dynamic code at all. --expect-error: the script must
 * fail with exactly this Lua error (run.sh takes it from stock LuaJIT).
 * --tighten none: after the script, flush LuaJIT's traces, tighten the policy
 * to no dynamic code while the state lives (hostmem_restrict_dynamic_code), and
 * run hot code again.
 *
 * The script's own output goes to stdout untouched: run.sh compares it with
 * stock LuaJIT's. The host's findings go to stderr, one a line:
 *   ok NAME             a check that held
 *   FAIL NAME: WHY      a check that did not
 *   info ...            figures: traces, exits, calls
 * and the exit status is 0 exactly when no check failed.
 *
 * What is checked, and why it shows what issue 12 asks:
 *   - the lua_State and a new table lie in pages the manager committed
 *     (LuaJIT's allocator lives on VirtualAlloc);
 *   - the JIT compiled traces and left them through exits (the jit.attach
 *     hooks count "stop" and "texit" events), and each live trace's machine
 *     code lies in a committed PAGE_EXECUTE_READ region of a code area the
 *     manager handed out (jit.util.tracemc gives its address);
 *   - at rest every code area is PAGE_EXECUTE_READ over all its bytes, nothing
 *     in the manager is writable and executable at once, nothing executable lies
 *     outside a code area, and LuaJIT never asked for PAGE_EXECUTE_READWRITE:
 *     code pages are writable only while LuaJIT writes or patches them;
 *   - hostmem_validate(HOSTMEM_VALIDATE_KERNEL) holds while the state is open
 *     and after lua_close, and after lua_close nothing is reserved or committed;
 *   - under a budget: the budget is never exceeded, LuaJIT's memory error comes
 *     out as its own "not enough memory", and the state still works afterwards;
 *   - under W^X: all of the above (LuaJIT writes code RW and flips it to RX),
 *     and the policy refused nothing;
 *   - under no dynamic code: LuaJIT tried to compile, the manager refused the
 *     first code area's PAGE_EXECUTE_READ, and LuaJIT - not the host - turned
 *     its JIT off (jit.status() is false, no trace was compiled, it never asked
 *     again); a callback (ffi.cast of a function) is a Lua error LuaJIT raises;
 *     no page of the manager is executable, every refusal is counted in
 *     hostmem_stats.dynamic_code_refusals, and the state still runs code;
 *   - tightened at run time: once LuaJIT's traces are flushed, the next code
 *     area is refused and LuaJIT turns its JIT off the same way.
 *
 * Must never: print anything of its own on stdout, or touch the manager's
 * pages other than through LuaJIT and the manager's own calls.
 */
#define COBJMACROS
#include "lj_hostmem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "luajit.h"
#include "lualib.h"

static int passed, failed;

static void check(int ok, const char *name, const char *why_format, ...)
{
    if (ok) {
        passed++;
        fprintf(stderr, "ok %s\n", name);
        return;
    }
    failed++;
    fprintf(stderr, "FAIL %s: ", name);
    va_list ap;
    va_start(ap, why_format);
    vfprintf(stderr, why_format, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static IHostMemoryManager *manager;
/* The manager's dynamic-code policy, as the host created it (HOSTMEM_CODE_*). */
static uint32_t code_policy = HOSTMEM_CODE_ANY;
static const char *const policy_names[] = {"any", "wx", "none"};

/* LuaJIT's own answer to a callback it cannot make executable (lj_errmsg.h's
 * JITPROT, raised by the patched lj_ccallback.c). */
static const char code_refused_message[] = "runtime code generation failed, restricted kernel?";

/* ---- what the manager holds --------------------------------------------- */

/* The manager's view of one address: S_OK and its run, or the failure. */
static HRESULT query(const void *address, MEMORY_BASIC_INFORMATION *info)
{
    SIZE_T written = 0;
    memset(info, 0, sizeof *info);
    return IHostMemoryManager_VirtualQuery(manager, (void *)(uintptr_t)address, info,
                                           sizeof *info, &written);
}

#define MAX_AREAS 1024
static lj_hostmem_area areas[MAX_AREAS];
static size_t area_count; /* (size_t)-1: the glue lost count */

static void load_areas(void)
{
    area_count = lj_hostmem_code_areas(areas, MAX_AREAS);
}

static const lj_hostmem_area *area_holding(const void *address)
{
    uintptr_t a = (uintptr_t)address;
    for (size_t i = 0; i < area_count && i < MAX_AREAS; i++) {
        uintptr_t base = (uintptr_t)areas[i].base;
        if (a >= base && a - base < areas[i].size)
            return &areas[i];
    }
    return NULL;
}

/* A walk of every region the manager has handed out. */
struct survey {
    const void *find;                 /* an address to look up */
    MEMORY_BASIC_INFORMATION found;   /* its region, if found_it */
    int found_it;
    size_t regions, executable_regions, executable_bytes;
    size_t writable_executable_regions;
    size_t stray_executable_regions;  /* executable but in no code area */
    size_t trace_executable_regions;  /* executable and in a trace compiler's area */
    size_t committed_bytes;
};

static int survey_region(void *context, const MEMORY_BASIC_INFORMATION *r)
{
    struct survey *s = context;
    uintptr_t base = (uintptr_t)r->BaseAddress;
    s->regions++;
    if (s->find && (uintptr_t)s->find >= base && (uintptr_t)s->find - base < r->RegionSize) {
        s->found = *r;
        s->found_it = 1;
    }
    if (r->State != MEM_COMMIT)
        return 0;
    s->committed_bytes += r->RegionSize;
    DWORD p = r->Protect & 0xFF;
    if (p == PAGE_EXECUTE || p == PAGE_EXECUTE_READ || p == PAGE_EXECUTE_READWRITE ||
        p == PAGE_EXECUTE_WRITECOPY) {
        s->executable_regions++;
        s->executable_bytes += r->RegionSize;
        if (p == PAGE_EXECUTE_READWRITE || p == PAGE_EXECUTE_WRITECOPY)
            s->writable_executable_regions++;
        const lj_hostmem_area *area = area_holding(r->BaseAddress);
        if (!area)
            s->stray_executable_regions++;
        else if (area->client == LJ_HOSTMEM_MCODE)
            s->trace_executable_regions++;
    }
    return 0;
}

static HRESULT survey(struct survey *s, const void *find)
{
    memset(s, 0, sizeof *s);
    s->find = find;
    return hostmem_walk(manager, survey_region, s);
}

/* The address lies in a committed read-write region the manager handed out:
 * the allocator's pages. */
static void check_heap_address(const char *name, const void *address)
{
    struct survey s;
    HRESULT hr = survey(&s, address);
    check(hr == S_OK && s.found_it && s.found.State == MEM_COMMIT &&
              s.found.Protect == PAGE_READWRITE,
          name, "%p is not in a committed PAGE_READWRITE region of the manager (walk %s, found %d, "
                "state 0x%x, protect 0x%x)",
          address, hostmem_result_name(hr), s.found_it, (unsigned)s.found.State,
          (unsigned)s.found.Protect);
}

static hostmem_stats get_stats(void)
{
    hostmem_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    if (hostmem_get_stats(manager, &st) != S_OK)
        fprintf(stderr, "host: hostmem_get_stats failed\n");
    return st;
}

static void check_validate(const char *name)
{
    char why[512] = "";
    HRESULT hr = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    check(hr == S_OK, name, "hostmem_validate(KERNEL) -> %s: %s", hostmem_result_name(hr), why);
}

/* ---- the JIT, seen through its own hooks -------------------------------- */

static size_t traces_started, traces_compiled, traces_aborted, flushes, trace_exits;
/* What check_open_state saw, for the summary line. */
static size_t live_traces, live_code_areas;

static int on_trace(lua_State *L)
{
    const char *what = lua_tostring(L, 1);
    if (!what)
        return 0;
    if (strcmp(what, "start") == 0)
        traces_started++;
    else if (strcmp(what, "stop") == 0)
        traces_compiled++;
    else if (strcmp(what, "abort") == 0)
        traces_aborted++;
    else if (strcmp(what, "flush") == 0)
        flushes++;
    return 0;
}

static int on_trace_exit(lua_State *L)
{
    (void)L;
    trace_exits++;
    return 0;
}

/*
 * Hooks the counters in before the script runs; returns whether the JIT is on.
 * The exit hook is left out of runs under a budget: to call it, lj_trace_exit
 * grows the Lua stack outside any protected call, and this LuaJIT (Debian's
 * snapshot of 2022-03-20) cannot unwind a memory error raised there through
 * its exit handler - the process dies in err_unwind with a NULL lua_State
 * (seen here under a 16 MiB budget; the class of bug of tarantool/tarantool
 * #7956, fixed in LuaJIT after this snapshot). Stock LuaJIT has no hook there.
 */
static int attach_hooks(lua_State *L, int count_exits)
{
    static const char chunk[] =
        "local jit = require('jit')\n"
        "local on_trace, on_exit = ...\n"
        "jit.attach(on_trace, 'trace')\n"
        "if on_exit then jit.attach(on_exit, 'texit') end\n"
        "return (jit.status())\n";
    if (luaL_loadstring(L, chunk) != 0)
        return 0;
    lua_pushcfunction(L, on_trace);
    if (count_exits)
        lua_pushcfunction(L, on_trace_exit);
    else
        lua_pushnil(L);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        fprintf(stderr, "host: attaching the hooks: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    int on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return on;
}

/* LuaJIT's answer to a question about itself: a boolean as 0 or 1, a number
 * as an int; -1 when asking failed. */
static int ask_jit(lua_State *L, const char *chunk)
{
    int top = lua_gettop(L);
    int answer = -1;
    if (luaL_loadstring(L, chunk) == 0 && lua_pcall(L, 0, 1, 0) == 0)
        answer = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : (int)lua_tointeger(L, -1);
    lua_settop(L, top);
    return answer;
}

/* What jit.status() says now: whether LuaJIT's JIT engine is on. */
static int jit_is_on(lua_State *L)
{
    return ask_jit(L, "return (require('jit').status())") == 1;
}

/* Refusals by the dynamic-code policy, as the glue saw them: all clients, or
 * one. */
static size_t code_blocked(int client)
{
    size_t n = 0;
    for (int c = 0; c < LJ_HOSTMEM_CLIENTS; c++) {
        lj_hostmem_counts counts;
        lj_hostmem_get_counts(c, &counts);
        if (client < 0 || client == c)
            n += counts.code_blocked;
    }
    return n;
}

struct traces {
    size_t live, in_code_area;
    size_t without_code; /* trace objects whose machine code is gone (a flush) */
    uintptr_t bad_address;
    MEMORY_BASIC_INFORMATION bad;
};

/* Every live trace's machine code, looked up in the manager. The loop is C so
 * that looking does not itself compile a trace. */
static void inspect_traces(lua_State *L, struct traces *t)
{
    memset(t, 0, sizeof *t);
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "jit.util");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_settop(L, top);
        return;
    }
    for (int tr = 1; tr < 65536; tr++) {
        lua_getfield(L, -1, "traceinfo");
        lua_pushinteger(L, tr);
        if (lua_pcall(L, 1, 1, 0) != 0 || lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_pop(L, 1);
        lua_getfield(L, -1, "tracemc");
        lua_pushinteger(L, tr);
        if (lua_pcall(L, 1, 2, 0) != 0) {
            lua_pop(L, 1);
            continue;
        }
        if (lua_isnil(L, -2)) {
            /* tracemc answers nothing for a trace without machine code: stock
             * LuaJIT shows such traces too, after its GC flushed a dead
             * function's traces. Nothing of it can run. */
            t->without_code++;
            lua_pop(L, 2);
            continue;
        }
        size_t length = 0;
        lua_tolstring(L, -2, &length);
        uintptr_t address = (uintptr_t)lua_tonumber(L, -1);
        lua_pop(L, 2);
        t->live++;
        MEMORY_BASIC_INFORMATION info;
        const lj_hostmem_area *area = area_holding((void *)address);
        if (query((void *)address, &info) == S_OK && area && info.State == MEM_COMMIT &&
            info.Protect == PAGE_EXECUTE_READ && info.AllocationBase == area->base &&
            length <= info.RegionSize) {
            t->in_code_area++;
        } else if (!t->bad_address) {
            t->bad_address = address;
            t->bad = info;
        }
    }
    lua_settop(L, top);
}

/* ---- the run ------------------------------------------------------------- */

enum oom_mode { OOM_NONE, OOM_CAUGHT, OOM_UNCAUGHT, OOM_NEWSTATE };

static size_t parse_bytes(const char *text)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(text, &end, 10);
    if (errno || end == text)
        return 0;
    if (*end == 'K' || *end == 'k')
        n <<= 10;
    else if (*end == 'M' || *end == 'm')
        n <<= 20;
    return (size_t)n;
}

static int jit_on_at_end; /* jit.status() just before lua_close */

static void print_counts(void)
{
    static const char *const names[LJ_HOSTMEM_CLIENTS] = {"allocator", "mcode", "callback"};
    lj_hostmem_counts all = {0};
    for (int c = 0; c < LJ_HOSTMEM_CLIENTS; c++) {
        lj_hostmem_counts n;
        lj_hostmem_get_counts(c, &n);
        all.allocs += n.allocs;
        all.alloc_failures += n.alloc_failures;
        all.frees += n.frees;
        all.queries += n.queries;
        all.protects += n.protects;
        all.to_executable += n.to_executable;
        all.to_writable += n.to_writable;
        fprintf(stderr,
                "info calls %s: VirtualAlloc %zu (%zu refused, %zu out of memory), VirtualFree %zu "
                "(%zu refused), VirtualQuery %zu, VirtualProtect %zu (%zu refused; %zu to "
                "PAGE_EXECUTE_READ, %zu to PAGE_READWRITE, %zu to PAGE_EXECUTE_READWRITE); %zu "
                "refused by the dynamic-code policy\n",
                names[c], n.allocs, n.alloc_failures, n.out_of_memory, n.frees, n.free_failures,
                n.queries, n.protects, n.protect_failures, n.to_executable, n.to_writable,
                n.writable_and_executable, n.code_blocked);
    }
    /* One line for run.sh to pass on. */
    hostmem_stats st = get_stats();
    fprintf(stderr,
            "info summary: %zu traces compiled (%zu aborted), %zu exits, %zu live in %zu code "
            "areas; VirtualAlloc %zu (%zu refused), VirtualFree %zu, VirtualQuery %zu, "
            "VirtualProtect %zu (%zu to PAGE_EXECUTE_READ, %zu to PAGE_READWRITE); peak committed "
            "%zu KiB; dynamic code %s, %zu refused, JIT %s at the end\n",
            traces_compiled, traces_aborted, trace_exits, live_traces, live_code_areas, all.allocs,
            all.alloc_failures, all.frees, all.queries, all.protects, all.to_executable,
            all.to_writable, st.peak_committed_bytes >> 10,
            st.dynamic_code < 3 ? policy_names[st.dynamic_code] : "?", st.dynamic_code_refusals,
            jit_on_at_end ? "on" : "off");
}

/* The glue's counts against the manager's own (hostmem_stats.calls). The host
 * makes no VirtualAlloc, VirtualFree or VirtualProtect call of its own, so the
 * two must agree; a library without the per-call counters reads 0 and is only
 * reported. */
static void check_call_counts(void)
{
    size_t alloc = 0, freed = 0, protect = 0, alloc_failed = 0, free_failed = 0, protect_failed = 0;
    for (int c = 0; c < LJ_HOSTMEM_CLIENTS; c++) {
        lj_hostmem_counts n;
        lj_hostmem_get_counts(c, &n);
        alloc += n.allocs;
        freed += n.frees;
        protect += n.protects;
        alloc_failed += n.alloc_failures;
        free_failed += n.free_failures;
        protect_failed += n.protect_failures;
    }
    hostmem_stats st = get_stats();
    size_t m_alloc = st.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC];
    size_t m_free = st.calls[HOSTMEM_METHOD_VIRTUAL_FREE];
    size_t m_protect = st.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT];
    fprintf(stderr,
            "info manager counted: VirtualAlloc %zu (%zu failed), VirtualFree %zu (%zu failed), "
            "VirtualProtect %zu (%zu failed), VirtualQuery %zu\n",
            m_alloc, st.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC], m_free,
            st.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE], m_protect,
            st.call_failures[HOSTMEM_METHOD_VIRTUAL_PROTECT],
            st.calls[HOSTMEM_METHOD_VIRTUAL_QUERY]);
    if (m_alloc + m_free + m_protect == 0) {
        fprintf(stderr, "info the library does not count calls yet (hostmem_stats.calls reads 0)\n");
        return;
    }
    check(m_alloc == alloc && m_free == freed && m_protect == protect &&
              st.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC] == alloc_failed &&
              st.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE] == free_failed &&
              st.call_failures[HOSTMEM_METHOD_VIRTUAL_PROTECT] == protect_failed,
          "calls_counted",
          "manager counted VirtualAlloc %zu/%zu failed, VirtualFree %zu/%zu, VirtualProtect "
          "%zu/%zu; LuaJIT made %zu/%zu, %zu/%zu, %zu/%zu",
          m_alloc, st.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC], m_free,
          st.call_failures[HOSTMEM_METHOD_VIRTUAL_FREE], m_protect,
          st.call_failures[HOSTMEM_METHOD_VIRTUAL_PROTECT], alloc, alloc_failed, freed,
          free_failed, protect, protect_failed);
    /* LuaJIT's Windows path only ever reserves and commits in one call and
     * releases whole reservations: no MEM_COMMIT alone, no decommit, no reset. */
    check(st.calls[HOSTMEM_KIND_RESERVE] == alloc && st.calls[HOSTMEM_KIND_RELEASE] == freed &&
              st.calls[HOSTMEM_KIND_COMMIT] == 0 && st.calls[HOSTMEM_KIND_DECOMMIT] == 0 &&
              st.calls[HOSTMEM_KIND_RESET] == 0,
          "calls_kinds",
          "reserve %zu, commit %zu, reset %zu, decommit %zu, release %zu for %zu VirtualAlloc and "
          "%zu VirtualFree calls",
          st.calls[HOSTMEM_KIND_RESERVE], st.calls[HOSTMEM_KIND_COMMIT],
          st.calls[HOSTMEM_KIND_RESET], st.calls[HOSTMEM_KIND_DECOMMIT],
          st.calls[HOSTMEM_KIND_RELEASE], alloc, freed);
}

/* While the state is open and idle: the code areas, the traces, W^X. */
static void check_open_state(lua_State *L, enum oom_mode mode, size_t budget)
{
    load_areas();
    struct traces t;
    inspect_traces(L, &t);
    struct survey s;
    HRESULT hr = survey(&s, NULL);
    hostmem_stats st = get_stats();

    fprintf(stderr,
            "info traces: %zu started, %zu compiled, %zu aborted, %zu flushes, %zu exits, %zu live "
            "(%zu without code); "
            "%zu code areas, %zu executable regions (%zu KiB); %zu KiB committed, peak %zu KiB\n",
            traces_started, traces_compiled, traces_aborted, flushes, trace_exits, t.live,
            t.without_code, area_count == (size_t)-1 ? 0 : area_count, s.executable_regions,
            s.executable_bytes >> 10, st.committed_bytes >> 10, st.peak_committed_bytes >> 10);

    live_traces = t.live;
    live_code_areas = area_count == (size_t)-1 ? 0 : area_count;
    check(hr == S_OK, "walk", "hostmem_walk -> %s", hostmem_result_name(hr));
    check(area_count != (size_t)-1, "code_areas_known", "more code areas than the glue records");

    /* The dynamic-code policy: in force, and every refusal one LuaJIT met. */
    check(st.dynamic_code == code_policy, "policy_in_force",
          "hostmem_stats.dynamic_code %u, created %u", (unsigned)st.dynamic_code,
          (unsigned)code_policy);
    check(st.dynamic_code_refusals == code_blocked(-1), "code_refusals_counted",
          "the manager counted %zu dynamic-code refusals, LuaJIT met %zu", st.dynamic_code_refusals,
          code_blocked(-1));
    /* LUAJIT_SECURITY_MCODE=1, LuaJIT's default and Debian's: code written
     * PAGE_READWRITE, run PAGE_EXECUTE_READ, never both (0 would ask for
     * PAGE_EXECUTE_READWRITE, which W^X refuses). */
    int secure_mcode = ask_jit(L, "return require('jit').security('mcode')");
    check(secure_mcode == 1, "secure_mcode", "jit.security('mcode') -> %d, not 1 (RW^X)",
          secure_mcode);
    int jit_on = jit_is_on(L);
    lj_hostmem_counts mcode;
    lj_hostmem_get_counts(LJ_HOSTMEM_MCODE, &mcode);
    if (code_policy != HOSTMEM_CODE_NONE) {
        /* LuaJIT writes machine code PAGE_READWRITE and runs it PAGE_EXECUTE_READ
         * (LUAJIT_SECURITY_MCODE): W^X has nothing to refuse. */
        check(st.dynamic_code_refusals == 0, "no_code_refusals",
              "the %s policy refused %zu requests", policy_names[code_policy],
              st.dynamic_code_refusals);
        if (mode == OOM_NONE) {
            check(traces_compiled > 0, "traces_compiled", "the JIT compiled no trace");
            check(trace_exits > 0, "trace_exits", "no trace exit was seen");
            check(t.live > 0, "traces_live", "no trace is alive after the script");
            check(s.executable_regions > 0, "executable_regions",
                  "hostmem_walk shows no PAGE_EXECUTE_READ region while %zu traces live", t.live);
            check(mcode.to_executable > 0 && mcode.protect_failures == 0, "code_made_executable",
                  "the trace compiler made %zu areas PAGE_EXECUTE_READ, %zu refused",
                  mcode.to_executable, mcode.protect_failures);
            check(jit_on, "jit_still_on", "jit.status() says the JIT is off after the script");
        }
    } else {
        /* No dynamic code: LuaJIT tried, was refused its first code area's
         * PAGE_EXECUTE_READ, and turned its own JIT off - the host never did. */
        check(!jit_on, "jit_turned_off", "jit.status() says the JIT is still on");
        check(traces_started > 0 && traces_aborted > 0 && traces_compiled == 0 && t.live == 0,
              "jit_tried_no_trace", "%zu traces started, %zu aborted, %zu compiled, %zu live",
              traces_started, traces_aborted, traces_compiled, t.live);
        check(mcode.code_blocked == 1, "jit_asked_once",
              "the trace compiler was refused %zu times (once, then the JIT is off)",
              mcode.code_blocked);
        check(s.executable_regions == 0 && live_code_areas == 0, "nothing_executable",
              "%zu executable regions (%zu KiB), %zu code areas", s.executable_regions,
              s.executable_bytes >> 10, live_code_areas);
    }
    check(t.in_code_area == t.live, "trace_code_in_manager",
          "%zu of %zu live traces run outside the manager's executable code areas; first at "
          "0x%jx (state 0x%x, protect 0x%x, allocation base %p)",
          t.live - t.in_code_area, t.live, (uintmax_t)t.bad_address, (unsigned)t.bad.State,
          (unsigned)t.bad.Protect, t.bad.AllocationBase);

    /* At rest every code area is executable and not writable, over all its
     * bytes: LuaJIT made it writable only while it wrote or patched it. */
    const lj_hostmem_area *bad_area = NULL;
    MEMORY_BASIC_INFORMATION bad_info = {0};
    for (size_t i = 0; i < area_count && i < MAX_AREAS; i++) {
        MEMORY_BASIC_INFORMATION info;
        int resting = query(areas[i].base, &info) == S_OK && info.State == MEM_COMMIT &&
                      info.Protect == PAGE_EXECUTE_READ && info.AllocationBase == areas[i].base &&
                      info.RegionSize >= areas[i].size;
        if (!resting && !bad_area) {
            bad_area = &areas[i];
            bad_info = info;
        }
    }
    check(bad_area == NULL, "code_areas_executable",
          "code area %p (%zu bytes) reads state 0x%x protect 0x%x size %zu at rest",
          bad_area ? bad_area->base : NULL, bad_area ? bad_area->size : 0,
          (unsigned)bad_info.State, (unsigned)bad_info.Protect, bad_info.RegionSize);
    check(s.writable_executable_regions == 0, "no_writable_executable",
          "%zu regions are writable and executable", s.writable_executable_regions);
    check(s.stray_executable_regions == 0, "no_stray_executable",
          "%zu executable regions lie outside every code area", s.stray_executable_regions);
    size_t wx = 0;
    for (int c = 0; c < LJ_HOSTMEM_CLIENTS; c++) {
        lj_hostmem_counts n;
        lj_hostmem_get_counts(c, &n);
        wx += n.writable_and_executable;
    }
    check(wx == 0, "never_writable_executable", "LuaJIT asked %zu times for W+X pages", wx);

    lj_hostmem_counts heap;
    lj_hostmem_get_counts(LJ_HOSTMEM_ALLOCATOR, &heap);
    check(heap.allocs > 0 && st.committed_bytes > 0 && s.committed_bytes == st.committed_bytes,
          "heap_from_manager",
          "allocator VirtualAllocs %zu, committed %zu bytes (walk: %zu)", heap.allocs,
          st.committed_bytes, s.committed_bytes);
    if (budget)
        check(st.peak_committed_bytes <= budget, "budget_kept",
              "peak committed %zu bytes over a budget of %zu", st.peak_committed_bytes, budget);
    check_validate("validate_open");
}

static void check_released(void)
{
    hostmem_stats st = get_stats();
    load_areas();
    check(st.reservations == 0 && st.committed_bytes == 0 && st.reserved_bytes == 0,
          "all_released", "after lua_close: %zu reservations, %zu bytes reserved, %zu committed",
          st.reservations, st.reserved_bytes, st.committed_bytes);
    check(area_count == 0, "code_areas_released", "%zu code areas live after lua_close",
          area_count);
    check_validate("validate_closed");
}

static const char recovery_chunk[] =
    "collectgarbage() collectgarbage()\n"
    "local s = 0\n"
    "for i = 1, 100000 do s = s + i % 7 end\n"
    "local t = {}\n"
    "for i = 1, 1000 do t[i] = tostring(i) end\n"
    "return s + #table.concat(t)\n";

/* The state still runs code, hot loops included. */
static void check_runs(lua_State *L, const char *name, const char *after)
{
    int rs = luaL_loadstring(L, recovery_chunk);
    if (rs == 0)
        rs = lua_pcall(L, 0, 1, 0);
    lua_Number got = rs == 0 ? lua_tonumber(L, -1) : -1;
    check(rs == 0 && got == 300000 + 2893, name, "%s: %d, %g", after, rs, (double)got);
    lua_pop(L, 1);
}

/* Under no dynamic code: a callback needs a trampoline LuaJIT cannot make
 * executable, and ffi.cast says so as a Lua error a script can catch. */
static void check_callback_refused(lua_State *L)
{
    static const char chunk[] =
        "local ffi = require('ffi')\n"
        "return pcall(ffi.cast, 'int (*)(int)', function(x) return x end)\n";
    size_t before = code_blocked(LJ_HOSTMEM_CALLBACK);
    int top = lua_gettop(L);
    int rs = luaL_loadstring(L, chunk);
    if (rs == 0)
        rs = lua_pcall(L, 0, 2, 0);
    int ok = rs == 0 && lua_toboolean(L, -2);
    const char *message = rs == 0 ? lua_tostring(L, -1) : NULL;
    check(rs == 0 && !ok && message && strstr(message, code_refused_message) &&
              code_blocked(LJ_HOSTMEM_CALLBACK) == before + 1,
          "callback_refused", "pcall(ffi.cast, ..., function) -> %d, %s, %s; %zu refusals",
          rs, ok ? "true" : "false", message ? message : "no message",
          code_blocked(LJ_HOSTMEM_CALLBACK) - before);
    lua_settop(L, top);
}

/*
 * --tighten none: the policy tightened while the state lives. Pages already
 * executable stay so (as on Windows), but LuaJIT could never make a trace area
 * executable again after writing it, and its Windows path would end in
 * mcode_protfail; so the host flushes LuaJIT's traces first, as an embedder
 * must. Then the next code area LuaJIT asks for is refused, and LuaJIT turns
 * its JIT off as under no dynamic code from the start.
 */
static void check_tightened(lua_State *L, uint32_t policy)
{
    size_t compiled_before = traces_compiled;
    size_t blocked_before = code_blocked(LJ_HOSTMEM_MCODE);
    int flushed = luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_FLUSH);
    load_areas();
    size_t trace_areas = 0;
    for (size_t i = 0; i < area_count && i < MAX_AREAS; i++)
        trace_areas += areas[i].client == LJ_HOSTMEM_MCODE;
    check(flushed && area_count != (size_t)-1 && trace_areas == 0, "tighten_flushed",
          "luaJIT_setmode(FLUSH) -> %d, %zu trace areas left", flushed, trace_areas);
    HRESULT hr = hostmem_restrict_dynamic_code(manager, policy);
    hostmem_stats st = get_stats();
    check(hr == S_OK && st.dynamic_code == policy, "tightened",
          "hostmem_restrict_dynamic_code(%s) -> %s, policy now %u", policy_names[policy],
          hostmem_result_name(hr), (unsigned)st.dynamic_code);
    check_runs(L, "tightened_runs", "after tightening");
    check(!jit_is_on(L) && traces_compiled == compiled_before &&
              code_blocked(LJ_HOSTMEM_MCODE) == blocked_before + 1,
          "tightened_jit_off", "JIT %s, %zu traces compiled since, %zu refusals since",
          jit_is_on(L) ? "on" : "off", traces_compiled - compiled_before,
          code_blocked(LJ_HOSTMEM_MCODE) - blocked_before);

    /* A callback: LuaJIT writes every trampoline when it makes its callback
     * page, so a page made executable before still serves; without one, the
     * new page is refused and ffi.cast raises the error. */
    static const char callback_chunk[] =
        "local ffi = require('ffi')\n"
        "local ok, cb = pcall(ffi.cast, 'int (*)(int)', function(x) return x + 1 end)\n"
        "if not ok then return false, cb end\n"
        "local r = cb(41)\n"
        "cb:free()\n"
        "return true, r\n";
    load_areas();
    int had_page = 0;
    for (size_t i = 0; i < area_count && i < MAX_AREAS; i++)
        had_page |= areas[i].client == LJ_HOSTMEM_CALLBACK;
    int top = lua_gettop(L);
    int rs = luaL_loadstring(L, callback_chunk);
    if (rs == 0)
        rs = lua_pcall(L, 0, 2, 0);
    int made = rs == 0 && lua_toboolean(L, -2);
    const char *message = rs == 0 && !made ? lua_tostring(L, -1) : NULL;
    lua_Integer result = made ? lua_tointeger(L, -1) : 0;
    check(had_page ? made && result == 42
                   : rs == 0 && !made && message && strstr(message, code_refused_message),
          "tightened_callback", "callback page made before: %s; chunk -> %d, callback %s, "
          "cb(41) -> %ld, %s",
          had_page ? "yes" : "no", rs, made ? "made" : "refused", (long)result,
          message ? message : "no message");
    lua_settop(L, top);

    load_areas();
    struct survey s;
    hr = survey(&s, NULL);
    check(hr == S_OK && s.trace_executable_regions == 0 && s.stray_executable_regions == 0,
          "tightened_no_trace_code", "walk %s: %zu executable regions in trace areas, %zu stray",
          hostmem_result_name(hr), s.trace_executable_regions, s.stray_executable_regions);
    check_validate("validate_tightened");
}

static int policy_named(const char *name, uint32_t *policy)
{
    for (uint32_t p = 0; p < sizeof policy_names / sizeof *policy_names; p++) {
        if (strcmp(name, policy_names[p]) == 0) {
            *policy = p;
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t budget = 0;
    enum oom_mode mode = OOM_NONE;
    const char *script = NULL, *expected_error = NULL;
    int tighten = 0, usage = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            budget = parse_bytes(argv[++i]);
        else if (strcmp(argv[i], "--dynamic-code") == 0 && i + 1 < argc)
            usage |= !policy_named(argv[++i], &code_policy);
        else if (strcmp(argv[i], "--expect-error") == 0 && i + 1 < argc)
            expected_error = argv[++i];
        else if (strcmp(argv[i], "--tighten") == 0 && i + 1 < argc) {
            usage |= strcmp(argv[++i], "none") != 0;
            tighten = 1;
        } else if (strcmp(argv[i], "--oom") == 0 && i + 1 < argc) {
            const char *m = argv[++i];
            mode = strcmp(m, "caught") == 0     ? OOM_CAUGHT
                   : strcmp(m, "uncaught") == 0 ? OOM_UNCAUGHT
                   : strcmp(m, "newstate") == 0 ? OOM_NEWSTATE
                                                : OOM_NONE;
        } else if (!script)
            script = argv[i];
    }
    if (usage || (!script && mode != OOM_NEWSTATE)) {
        fprintf(stderr, "usage: host [--budget BYTES] [--oom caught|uncaught|newstate]\n"
                        "            [--dynamic-code any|wx|none] [--expect-error MESSAGE] "
                        "[--tighten none] SCRIPT\n");
        return 2;
    }

    hostmem_config config;
    memset(&config, 0, sizeof config);
    config.size = sizeof config;
    /* No budget means none at all, not the cgroup's: runs must not depend on
     * where they run. */
    config.commit_limit = budget ? budget : HOSTMEM_UNLIMITED;
    config.dynamic_code = code_policy;
    HRESULT hr = hostmem_create(&config, &manager);
    check(hr == S_OK, "create", "hostmem_create -> %s", hostmem_result_name(hr));
    if (hr != S_OK)
        return 1;
    lj_hostmem_attach(manager);

    lua_State *L = luaL_newstate();
    if (mode == OOM_NEWSTATE) {
        lj_hostmem_counts heap;
        lj_hostmem_get_counts(LJ_HOSTMEM_ALLOCATOR, &heap);
        check(L == NULL && heap.out_of_memory > 0, "newstate_refused",
              "luaL_newstate under a %zu-byte budget -> %p, %zu refusals", budget, (void *)L,
              heap.out_of_memory);
        if (L)
            lua_close(L);
    } else {
        check(L != NULL, "newstate", "luaL_newstate returned NULL");
        if (!L)
            return 1;
        luaL_openlibs(L);
        check_heap_address("state_in_manager", L);
        lua_newtable(L);
        check_heap_address("table_in_manager", lua_topointer(L, -1));
        lua_pop(L, 1);
        int jit_on = attach_hooks(L, mode == OOM_NONE);
        check(jit_on, "jit_on", "jit.status() says the JIT is off");

        int status = luaL_loadfile(L, script);
        if (status == 0)
            status = lua_pcall(L, 0, 0, 0);
        fflush(stdout);
        const char *message = status ? lua_tostring(L, -1) : NULL;
        if (mode == OOM_UNCAUGHT) {
            check(status == LUA_ERRMEM && message && strcmp(message, "not enough memory") == 0,
                  "memory_error", "lua_pcall -> %d (%s), expected LUA_ERRMEM \"not enough memory\"",
                  status, message ? message : "no message");
        } else if (expected_error) {
            /* run.sh expects this error where stock LuaJIT raised it */
            check(status == LUA_ERRRUN && message && strcmp(message, expected_error) == 0,
                  "script_error", "lua_pcall -> %d (%s), expected LUA_ERRRUN \"%s\"", status,
                  message ? message : "no message", expected_error);
        } else {
            check(status == 0, "script", "%s: %s", script, message ? message : "no message");
        }
        if (status)
            lua_pop(L, 1);
        if (mode != OOM_NONE) {
            lj_hostmem_counts heap;
            lj_hostmem_get_counts(LJ_HOSTMEM_ALLOCATOR, &heap);
            hostmem_stats st = get_stats();
            check(heap.out_of_memory > 0 && st.refusals[eTaskCritical] > 0, "budget_refused",
                  "the allocator met %zu refusals, the manager counted %zu", heap.out_of_memory,
                  st.refusals[eTaskCritical]);
            /* The state survives LuaJIT's memory error and still runs code,
             * once the garbage the script left is collected (loading the
             * chunk needs memory too). */
            lua_gc(L, LUA_GCCOLLECT, 0);
            check_runs(L, "recovered", "after the memory error");
        } else if (code_policy == HOSTMEM_CODE_NONE) {
            check_callback_refused(L);
            check_runs(L, "still_runs", "without the JIT");
        }
        check_open_state(L, mode, budget);
        if (tighten)
            check_tightened(L, HOSTMEM_CODE_NONE);
        jit_on_at_end = jit_is_on(L);
        lua_close(L);
    }
    check_released();
    print_counts();
    check_call_counts();
    lj_hostmem_attach(NULL);
    ULONG left = IHostMemoryManager_Release(manager);
    check(left == 0, "manager_released", "%lu references left", (unsigned long)left);
    fprintf(stderr, "host: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
