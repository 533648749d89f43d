/*
 * pcre2_hostmem.c - counts sljit's Win32 calls and reports them at exit.
 *
 * Owns: the layer's counts (pcre2_hostmem.h) and the exit report. The wrappers
 * stand between sljit and hostmem's Win32 face only because the programs are
 * linked with --wrap=VirtualAlloc,--wrap=VirtualFree,--wrap=VirtualProtect:
 * each passes its arguments to the face's own call (__real_*) and its result
 * back untouched, and counts what was asked and what came of it. A failure's
 * reason is the face's last error, read right after the call, and left as it
 * was for sljit.
 *
 * The report (HOSTMEM_PCRE2_REPORT=FILE) runs as a destructor, after the
 * program's own exit work, and only in a program that made one of these calls:
 * the face's manager exists then, and asking for it creates nothing. It reads
 * the manager's statistics, validates the region map against the kernel's, and
 * appends one line with write(2) on an O_APPEND descriptor, so that programs
 * running side by side (make check -j2) never mix their lines.
 */
#define _GNU_SOURCE
#include "hostmem.h"
#include "hostmem_win32.h"

#include "pcre2_hostmem.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

LPVOID __real_VirtualAlloc(LPVOID address, SIZE_T size, DWORD type, DWORD protect);
BOOL __real_VirtualFree(LPVOID address, SIZE_T size, DWORD type);
BOOL __real_VirtualProtect(LPVOID address, SIZE_T size, DWORD protect, PDWORD old_protect);
LPVOID __wrap_VirtualAlloc(LPVOID address, SIZE_T size, DWORD type, DWORD protect);
BOOL __wrap_VirtualFree(LPVOID address, SIZE_T size, DWORD type);
BOOL __wrap_VirtualProtect(LPVOID address, SIZE_T size, DWORD protect, PDWORD old_protect);

enum {
    ALLOC,
    ALLOC_FAILED,
    RESERVE,
    COMMIT,
    ALLOC_EXECUTABLE,
    ALLOC_EXECUTABLE_GRANTED,
    PROTECT,
    PROTECT_FAILED,
    PROTECT_EXECUTABLE,
    PROTECT_EXECUTABLE_GRANTED,
    PROTECT_WRITABLE,
    WRITABLE_EXECUTABLE,
    WRITABLE_EXECUTABLE_GRANTED,
    CODE_BLOCKED,
    FREE,
    FREE_FAILED,
    DECOMMIT,
    RELEASE,
    COUNTS
};
static atomic_size_t counts[COUNTS];

static void count(int what)
{
    atomic_fetch_add_explicit(&counts[what], 1, memory_order_relaxed);
}

static int executable(DWORD protect)
{
    return (protect & 0xF0u) != 0; /* PAGE_EXECUTE, _READ, _READWRITE, _WRITECOPY */
}

static int writable_executable(DWORD protect)
{
    return (protect & (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY)) != 0;
}

/* After a failed call: was it the dynamic-code policy? The last error stays. */
static void count_failure(int what)
{
    count(what);
    if (GetLastError() == ERROR_DYNAMIC_CODE_BLOCKED)
        count(CODE_BLOCKED);
}

LPVOID __wrap_VirtualAlloc(LPVOID address, SIZE_T size, DWORD type, DWORD protect)
{
    LPVOID result = __real_VirtualAlloc(address, size, type, protect);
    count(ALLOC);
    if (type & MEM_RESERVE)
        count(RESERVE);
    else if (type & MEM_COMMIT)
        count(COMMIT);
    if (executable(protect))
        count(ALLOC_EXECUTABLE);
    if (writable_executable(protect))
        count(WRITABLE_EXECUTABLE);
    if (result == NULL) {
        count_failure(ALLOC_FAILED);
        return NULL;
    }
    if (executable(protect))
        count(ALLOC_EXECUTABLE_GRANTED);
    if (writable_executable(protect))
        count(WRITABLE_EXECUTABLE_GRANTED);
    return result;
}

BOOL __wrap_VirtualProtect(LPVOID address, SIZE_T size, DWORD protect, PDWORD old_protect)
{
    BOOL result = __real_VirtualProtect(address, size, protect, old_protect);
    count(PROTECT);
    if (executable(protect))
        count(PROTECT_EXECUTABLE);
    if (protect == PAGE_READWRITE)
        count(PROTECT_WRITABLE);
    if (writable_executable(protect))
        count(WRITABLE_EXECUTABLE);
    if (!result) {
        count_failure(PROTECT_FAILED);
        return result;
    }
    if (executable(protect))
        count(PROTECT_EXECUTABLE_GRANTED);
    if (writable_executable(protect))
        count(WRITABLE_EXECUTABLE_GRANTED);
    return result;
}

BOOL __wrap_VirtualFree(LPVOID address, SIZE_T size, DWORD type)
{
    BOOL result = __real_VirtualFree(address, size, type);
    count(FREE);
    if (type & MEM_DECOMMIT)
        count(DECOMMIT);
    if (type & MEM_RELEASE)
        count(RELEASE);
    if (!result)
        count_failure(FREE_FAILED);
    return result;
}

void pcre2_hostmem_get_counts(pcre2_hostmem_counts *c)
{
    size_t v[COUNTS];
    for (int i = 0; i < COUNTS; i++)
        v[i] = atomic_load_explicit(&counts[i], memory_order_relaxed);
    *c = (pcre2_hostmem_counts){
        .alloc = v[ALLOC],
        .alloc_failed = v[ALLOC_FAILED],
        .reserve = v[RESERVE],
        .commit = v[COMMIT],
        .alloc_executable = v[ALLOC_EXECUTABLE],
        .alloc_executable_granted = v[ALLOC_EXECUTABLE_GRANTED],
        .protect = v[PROTECT],
        .protect_failed = v[PROTECT_FAILED],
        .protect_executable = v[PROTECT_EXECUTABLE],
        .protect_executable_granted = v[PROTECT_EXECUTABLE_GRANTED],
        .protect_writable = v[PROTECT_WRITABLE],
        .writable_executable = v[WRITABLE_EXECUTABLE],
        .writable_executable_granted = v[WRITABLE_EXECUTABLE_GRANTED],
        .code_blocked = v[CODE_BLOCKED],
        .free = v[FREE],
        .free_failed = v[FREE_FAILED],
        .decommit = v[DECOMMIT],
        .release = v[RELEASE],
    };
}

/* ---- the exit report ------------------------------------------------------- */

/* Appends to the line; a line too long for the buffer is cut, never overrun. */
static void append(char *line, size_t size, size_t *used, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *line, size_t size, size_t *used, const char *format, ...)
{
    if (*used >= size)
        return;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line + *used, size - *used, format, args);
    va_end(args);
    if (n > 0)
        *used = *used + (size_t)n < size ? *used + (size_t)n : size - 1;
}

__attribute__((destructor)) static void pcre2_hostmem_exit_report(void)
{
    const char *file = getenv("HOSTMEM_PCRE2_REPORT");
    if (file == NULL || *file == '\0')
        return;
    pcre2_hostmem_counts c;
    pcre2_hostmem_get_counts(&c);
    if (c.alloc + c.protect + c.free == 0)
        return; /* no JIT code and no JIT stack: the program never met the face */
    int saved_errno = errno;
    DWORD saved_error = GetLastError();

    char line[2048];
    size_t used = 0;
    append(line, sizeof line, &used,
           "pcre2_hostmem: program=%s layer alloc=%zu alloc_failed=%zu reserve=%zu commit=%zu "
           "alloc_executable=%zu alloc_executable_granted=%zu protect=%zu protect_failed=%zu "
           "protect_executable=%zu protect_executable_granted=%zu protect_writable=%zu "
           "writable_executable=%zu writable_executable_granted=%zu code_blocked=%zu free=%zu "
           "free_failed=%zu decommit=%zu release=%zu",
           program_invocation_short_name, c.alloc, c.alloc_failed, c.reserve, c.commit,
           c.alloc_executable, c.alloc_executable_granted, c.protect, c.protect_failed,
           c.protect_executable, c.protect_executable_granted, c.protect_writable,
           c.writable_executable, c.writable_executable_granted, c.code_blocked, c.free,
           c.free_failed, c.decommit, c.release);

    IHostMemoryManager *manager = hostmem_win32_manager();
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    if (manager == NULL || hostmem_get_stats(manager, &s) != S_OK) {
        append(line, sizeof line, &used, " hostmem none validate=no_manager\n");
    } else {
        append(line, sizeof line, &used,
               " hostmem hostmem_VirtualAlloc=%zu hostmem_VirtualFree=%zu "
               "hostmem_VirtualProtect=%zu hostmem_reserve=%zu hostmem_commit=%zu "
               "hostmem_decommit=%zu hostmem_release=%zu dynamic_code_refusals=%zu policy=%u "
               "reservations=%zu committed_bytes=%zu",
               s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], s.calls[HOSTMEM_METHOD_VIRTUAL_FREE],
               s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT], s.calls[HOSTMEM_KIND_RESERVE],
               s.calls[HOSTMEM_KIND_COMMIT], s.calls[HOSTMEM_KIND_DECOMMIT],
               s.calls[HOSTMEM_KIND_RELEASE], s.dynamic_code_refusals, (unsigned)s.dynamic_code,
               s.reservations, s.committed_bytes);
        char why[512] = "";
        HRESULT valid = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
        for (char *p = why; *p; p++)
            if (*p == '\n' || *p == ' ')
                *p = '_'; /* one line, one field */
        append(line, sizeof line, &used, " validate=%s%s%s\n", hostmem_result_name(valid),
               valid == S_OK ? "" : " why=", valid == S_OK ? "" : why);
    }
    if (line[used - 1] != '\n')
        line[used - 1] = '\n';

    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t written = write(fd, line, used);
        (void)written; /* a short report shows as a malformed line in run.sh */
        close(fd);
    }
    SetLastError(saved_error);
    errno = saved_errno;
}
