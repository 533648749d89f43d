/*
 * gc_hostmem.c - bdwgc's Win32 calls on one IHostMemoryManager.
 *
 * Owns: each calling thread's last error, the budget a run asks for, and the
 * report a run leaves behind.
 *
 * The manager is hostmem's Win32 face's (hostmem_win32_manager()), so the
 * environment chooses its write watch as for any Win32 program:
 * HOSTMEM_EMULATE_WRITE_WATCH=1 the emulation, unset the kernel's tracking.
 * Every call is one method of the manager with bdwgc's own arguments, called
 * as the CLR calls it (COBJMACROS): heap sections are
 * VirtualAlloc(MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH), unmapped blocks
 * VirtualFree(MEM_DECOMMIT) and remapped by VirtualAlloc(MEM_COMMIT), split at
 * reservation ends with VirtualQuery; dirty pages come from
 * hostmem_get_write_watch with WRITE_WATCH_FLAG_RESET. The glue adds no policy
 * and never touches memory: a refusal is passed on as NULL, FALSE or a non-zero
 * UINT and the collector decides what it means. Every request is eTaskCritical:
 * bdwgc answers a refused heap growth by collecting.
 *
 * Two environment variables of its own, read at the first call:
 *   GC_HOSTMEM_BUDGET=N[K|M|G]  the manager's commit budget
 *                               (hostmem_set_commit_limit) before any commit;
 *   GC_HOSTMEM_REPORT=FILE      at exit, append one line to FILE: the manager's
 *                               counts and hostmem_validate's verdict
 *                               (integrations/bdwgc/run.sh reads it).
 */
#define _GNU_SOURCE
#define COBJMACROS
#include "gc_hostmem.h"
#include "hostmem_win32.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GC_ERROR_GEN_FAILURE 31u /* a failure Win32 has no code for */
#define GC_FACILITY_WIN32 7

static _Thread_local DWORD last_error;
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static IHostMemoryManager *manager;
static const char *report_path;
/* MEM_WRITE_WATCH reservations made, and refused for memory (hostmem's
 * emulation keeps a fixed number of them a manager, docs/writewatch.md). */
static atomic_size_t watched_made, watched_refused;

static void report_at_exit(void);
static void report_line(const char *line, int length);
static void report_refusal(void);

/* N, NK, NM or NG; 0 for anything else. */
static size_t parse_size(const char *text)
{
    char *end;
    unsigned long long value;
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0 || end == text)
        return 0;
    switch (*end) {
    case 'K': value <<= 10; end++; break;
    case 'M': value <<= 20; end++; break;
    case 'G': value <<= 30; end++; break;
    default: break;
    }
    return *end == '\0' ? (size_t)value : 0;
}

static void setup(void)
{
    const char *budget = getenv("GC_HOSTMEM_BUDGET");
    manager = hostmem_win32_manager();
    if (manager == NULL)
        return;
    if (budget != NULL && *budget != '\0') {
        size_t bytes = parse_size(budget);
        if (bytes == 0 || hostmem_set_commit_limit(manager, bytes) != S_OK) {
            fprintf(stderr, "gc_hostmem: GC_HOSTMEM_BUDGET=%s is not a budget\n", budget);
            abort();
        }
    }
    report_path = getenv("GC_HOSTMEM_REPORT");
    if (report_path != NULL && *report_path != '\0')
        atexit(report_at_exit);
}

static IHostMemoryManager *the_manager(void)
{
    pthread_once(&setup_once, setup);
    return manager;
}

/* Win32 keeps a failure's reason per thread; an HRESULT of FACILITY_WIN32
 * carries it in its low word. Out of memory is ERROR_NOT_ENOUGH_MEMORY, what
 * Windows' VirtualAlloc sets (and what the Win32 face sets). */
static void failed(HRESULT hr)
{
    if (hr == E_OUTOFMEMORY)
        last_error = ERROR_NOT_ENOUGH_MEMORY;
    else if ((((uint32_t)hr >> 16) & 0x7ffu) == GC_FACILITY_WIN32)
        last_error = (DWORD)hr & 0xffffu;
    else
        last_error = GC_ERROR_GEN_FAILURE;
}

void *gc_hostmem_VirtualAlloc(void *address, SIZE_T size, DWORD type, DWORD protect)
{
    IHostMemoryManager *m = the_manager();
    void *result = NULL;
    HRESULT hr;
    if (m == NULL) {
        failed(E_FAIL);
        return NULL;
    }
    hr = IHostMemoryManager_VirtualAlloc(m, address, size, type, protect, eTaskCritical, &result);
    if (hr != S_OK) {
        if ((type & MEM_WRITE_WATCH) && hr == E_OUTOFMEMORY &&
            atomic_fetch_add_explicit(&watched_refused, 1, memory_order_relaxed) == 0)
            report_refusal();
        failed(hr);
        return NULL;
    }
    if (type & MEM_WRITE_WATCH)
        atomic_fetch_add_explicit(&watched_made, 1, memory_order_relaxed);
    return result;
}

BOOL gc_hostmem_VirtualFree(void *address, SIZE_T size, DWORD type)
{
    IHostMemoryManager *m = the_manager();
    HRESULT hr;
    if (m == NULL) {
        failed(E_FAIL);
        return FALSE;
    }
    hr = IHostMemoryManager_VirtualFree(m, address, size, type);
    if (hr != S_OK) {
        failed(hr);
        return FALSE;
    }
    return TRUE;
}

SIZE_T gc_hostmem_VirtualQuery(const void *address, MEMORY_BASIC_INFORMATION *info, SIZE_T length)
{
    IHostMemoryManager *m = the_manager();
    SIZE_T written = 0;
    HRESULT hr;
    if (m == NULL) {
        failed(E_FAIL);
        return 0;
    }
    hr = IHostMemoryManager_VirtualQuery(m, (void *)address, info, length, &written);
    if (hr != S_OK) {
        failed(hr);
        return 0;
    }
    return written;
}

UINT gc_hostmem_GetWriteWatch(DWORD flags, void *base, SIZE_T size, void **addresses,
                              uintptr_t *count, ULONG *granularity)
{
    IHostMemoryManager *m = the_manager();
    HRESULT hr;
    if (m == NULL) {
        failed(E_FAIL);
        return ~0u;
    }
    hr = hostmem_get_write_watch(m, flags, base, size, addresses, count, granularity);
    if (hr != S_OK) {
        failed(hr);
        return ~0u;
    }
    return 0;
}

DWORD gc_hostmem_GetLastError(void)
{
    return last_error;
}

/* bdwgc finds GetWriteWatch as Windows programs did before Windows XP made it
 * universal: GetProcAddress(GetModuleHandle("kernel32.dll"), "GetWriteWatch"),
 * then a trial reservation with MEM_WRITE_WATCH. The glue is that kernel32. */
static struct gc_hostmem_module {
    int unused;
} kernel32;

HMODULE gc_hostmem_GetModuleHandle(const char *name)
{
    return strcmp(name, "kernel32.dll") == 0 ? &kernel32 : NULL;
}

FARPROC gc_hostmem_GetProcAddress(HMODULE module, const char *name)
{
    if (module == &kernel32 && strcmp(name, "GetWriteWatch") == 0)
        return (FARPROC)gc_hostmem_GetWriteWatch;
    return NULL;
}

/* One line, appended with one write(2) so that the lines of concurrent or
 * forked processes do not interleave:
 *   gc_hostmem: program=NAME pid=P mode=M virtual_alloc=N virtual_free=N virtual_query=N
 *   reserve=N commit=N decommit=N release=N alloc_failures=N refusals=N
 *   ww_gets=N ww_resets=N ww_pages=N committed=B peak_committed=B budget=B
 *   reservations=N watched_made=N watched_refused=N validate=ok | validate=FAIL:why */
/* The first refused MEM_WRITE_WATCH reservation, said at once: a collector
 * out of memory may abort, and abort runs no exit handler. */
static void report_refusal(void)
{
    char line[256];
    int n = snprintf(line, sizeof line, "gc_hostmem_refused: program=%s pid=%ld watched=%zu\n",
                     program_invocation_short_name, (long)getpid(), atomic_load(&watched_made));
    if (n > 0 && (size_t)n < sizeof line)
        report_line(line, n);
}

static void report_line(const char *line, int length)
{
    int fd;
    if (report_path == NULL || *report_path == '\0')
        return;
    fd = open(report_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)length) != length)
        fprintf(stderr, "gc_hostmem: could not write the report to %s\n", report_path);
    close(fd);
}

static void report_at_exit(void)
{
    hostmem_stats stats;
    char why[256] = "";
    char line[1024];
    const char *emulate = getenv("HOSTMEM_EMULATE_WRITE_WATCH");
    HRESULT valid;
    int n;

    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    if (hostmem_get_stats(manager, &stats) != S_OK)
        snprintf(why, sizeof why, "hostmem_get_stats failed");
    valid = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    for (char *c = why; *c != '\0'; c++)
        if (*c == ' ' || *c == '\n')
            *c = '_';
    n = snprintf(line, sizeof line,
                 "gc_hostmem: program=%s pid=%ld mode=%s virtual_alloc=%zu virtual_free=%zu"
                 " virtual_query=%zu reserve=%zu commit=%zu decommit=%zu release=%zu"
                 " alloc_failures=%zu refusals=%zu ww_gets=%zu ww_resets=%zu ww_pages=%zu"
                 " committed=%zu peak_committed=%zu budget=%zu reservations=%zu watched_made=%zu watched_refused=%zu"
                 " validate=%s%s\n",
                 program_invocation_short_name, (long)getpid(),
                 emulate != NULL && strcmp(emulate, "1") == 0 ? "emulated"
                                                              : hostmem_write_watch_mode(),
                 stats.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], stats.calls[HOSTMEM_METHOD_VIRTUAL_FREE],
                 stats.calls[HOSTMEM_METHOD_VIRTUAL_QUERY], stats.calls[HOSTMEM_KIND_RESERVE],
                 stats.calls[HOSTMEM_KIND_COMMIT], stats.calls[HOSTMEM_KIND_DECOMMIT],
                 stats.calls[HOSTMEM_KIND_RELEASE],
                 stats.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC],
                 stats.refusals[0] + stats.refusals[1] + stats.refusals[2],
                 stats.write_watch_gets, stats.write_watch_resets, stats.write_watch_pages,
                 stats.committed_bytes, stats.peak_committed_bytes, stats.commit_limit,
                 stats.reservations, atomic_load(&watched_made), atomic_load(&watched_refused),
                 valid == S_OK ? "ok" : "FAIL:", valid == S_OK ? "" : why);
    if (n <= 0)
        return;
    if ((size_t)n >= sizeof line)
        n = (int)sizeof line - 1;
    report_line(line, n);
}
