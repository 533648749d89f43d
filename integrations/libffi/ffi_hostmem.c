/*
 * ffi_hostmem.c - counts what libffi's closure allocator asks of hostmem's
 * Win32 face, and reports it at exit.
 *
 * Linked into the hostmem build's libffi.so with the linker's
 * --wrap=VirtualAlloc,--wrap=VirtualFree,--wrap=VirtualQuery: each call that
 * dlmalloc's Windows memory path makes (win32mmap, win32direct_mmap and
 * win32munmap in libffi's src/dlmalloc.c) goes through a counter here and on
 * to the face's own call (__real_*), its arguments and its result untouched.
 * A failure's reason is the face's last error, read right after the call and
 * left as it was.
 *
 * With HOSTMEM_LIBFFI_REPORT=FILE in the environment, a program whose libffi
 * made any of these calls appends one line to FILE when it exits (run.sh reads
 * them after libffi's own test suite):
 *
 *   ffi_hostmem: program=NAME layer alloc=N ... hostmem hostmem_VirtualAlloc=N
 *                ... dynamic_code_refusals=N policy=N ... validate=S_OK
 *
 * The report runs as a destructor of libffi.so, after the program's own exit
 * work, and only where the face's manager already exists (asking for it then
 * creates nothing). It reads the manager's statistics, validates its region map
 * against the kernel's, and appends the line with one write(2) on an O_APPEND
 * descriptor, so that programs never mix their lines.
 *
 * Must never: change an argument or a result, or call the face on its own
 * behalf before the report (hostmem's call counts must equal the layer's).
 */
#define _GNU_SOURCE
#include "hostmem.h"
#include "hostmem_win32.h"

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
SIZE_T __real_VirtualQuery(LPCVOID address, PMEMORY_BASIC_INFORMATION buffer, SIZE_T length);
LPVOID __wrap_VirtualAlloc(LPVOID address, SIZE_T size, DWORD type, DWORD protect);
BOOL __wrap_VirtualFree(LPVOID address, SIZE_T size, DWORD type);
SIZE_T __wrap_VirtualQuery(LPCVOID address, PMEMORY_BASIC_INFORMATION buffer, SIZE_T length);

enum {
    ALLOC,
    ALLOC_FAILED,
    WRITABLE_EXECUTABLE,         /* asked PAGE_EXECUTE_READWRITE */
    WRITABLE_EXECUTABLE_GRANTED,
    TOP_DOWN,                    /* MEM_TOP_DOWN: dlmalloc's direct mmap */
    CODE_BLOCKED,                /* failed with ERROR_DYNAMIC_CODE_BLOCKED */
    QUERY,
    QUERY_FAILED,
    FREE,
    FREE_FAILED,
    RELEASE,
    COUNTS
};
static const char *const count_names[COUNTS] = {
    "alloc", "alloc_failed", "writable_executable", "writable_executable_granted", "top_down",
    "code_blocked", "query", "query_failed", "free", "free_failed", "release",
};
static atomic_size_t counts[COUNTS];

static void count(int what)
{
    atomic_fetch_add_explicit(&counts[what], 1, memory_order_relaxed);
}

LPVOID __wrap_VirtualAlloc(LPVOID address, SIZE_T size, DWORD type, DWORD protect)
{
    LPVOID result = __real_VirtualAlloc(address, size, type, protect);
    count(ALLOC);
    if (type & MEM_TOP_DOWN)
        count(TOP_DOWN);
    if (protect == PAGE_EXECUTE_READWRITE)
        count(WRITABLE_EXECUTABLE);
    if (result == NULL) {
        count(ALLOC_FAILED);
        if (GetLastError() == ERROR_DYNAMIC_CODE_BLOCKED)
            count(CODE_BLOCKED);
    } else if (protect == PAGE_EXECUTE_READWRITE) {
        count(WRITABLE_EXECUTABLE_GRANTED);
    }
    return result;
}

BOOL __wrap_VirtualFree(LPVOID address, SIZE_T size, DWORD type)
{
    BOOL result = __real_VirtualFree(address, size, type);
    count(FREE);
    if (type == MEM_RELEASE)
        count(RELEASE);
    if (!result)
        count(FREE_FAILED);
    return result;
}

SIZE_T __wrap_VirtualQuery(LPCVOID address, PMEMORY_BASIC_INFORMATION buffer, SIZE_T length)
{
    SIZE_T result = __real_VirtualQuery(address, buffer, length);
    count(QUERY);
    if (result == 0)
        count(QUERY_FAILED);
    return result;
}

static void append(char *line, size_t size, size_t *used, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *line, size_t size, size_t *used, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    int n = vsnprintf(line + *used, size - *used, format, args);
    va_end(args);
    if (n > 0)
        *used = *used + (size_t)n < size ? *used + (size_t)n : size - 1;
}

__attribute__((destructor)) static void ffi_hostmem_exit_report(void)
{
    const char *file = getenv("HOSTMEM_LIBFFI_REPORT");
    if (file == NULL || *file == '\0')
        return;
    size_t c[COUNTS];
    for (int i = 0; i < COUNTS; i++)
        c[i] = atomic_load_explicit(&counts[i], memory_order_relaxed);
    if (c[ALLOC] + c[QUERY] + c[FREE] == 0)
        return; /* no closure: this program never met the face */
    int saved_errno = errno;
    DWORD saved_error = GetLastError();

    char line[2048];
    size_t used = 0;
    append(line, sizeof line, &used, "ffi_hostmem: program=%s layer", program_invocation_short_name);
    for (int i = 0; i < COUNTS; i++)
        append(line, sizeof line, &used, " %s=%zu", count_names[i], c[i]);

    IHostMemoryManager *manager = hostmem_win32_manager();
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    if (manager == NULL || hostmem_get_stats(manager, &s) != S_OK) {
        append(line, sizeof line, &used, " hostmem none validate=no_manager\n");
    } else {
        append(line, sizeof line, &used,
               " hostmem hostmem_VirtualAlloc=%zu hostmem_VirtualFree=%zu hostmem_VirtualQuery=%zu "
               "hostmem_VirtualProtect=%zu hostmem_release=%zu dynamic_code_refusals=%zu policy=%u "
               "reservations=%zu committed_bytes=%zu",
               s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], s.calls[HOSTMEM_METHOD_VIRTUAL_FREE],
               s.calls[HOSTMEM_METHOD_VIRTUAL_QUERY], s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT],
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
