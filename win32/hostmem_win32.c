/*
 * hostmem_win32.c - the Win32 face (include/hostmem_win32.h): VirtualAlloc,
 * VirtualFree, VirtualQuery, VirtualProtect, GetWriteWatch, ResetWriteWatch,
 * GetLargePageMinimum and the thread's last error, over one process-wide manager.
 *
 * A user of the public API, like integrations/: it includes hostmem.h and
 * nothing of src/, and the library never calls it. Each call forwards to the
 * manager's method (or the native write-watch calls) and turns a result other
 * than S_OK into Windows' return value and the Win32 error Windows sets, in one
 * place: win32_failed, through the one table win32_error_of.
 *
 * Invariants:
 *   - one manager for the process, created by the first call that needs it
 *     (pthread_once; hostmem_create(NULL, ...)) and never released, because
 *     what it handed out lives as long as the process and a late exit handler
 *     may still free it; after creation, finding it is one atomic load;
 *   - the last error is thread-local, 0 in a new thread, and changes only when
 *     a call fails (Windows leaves it alone on success);
 *   - a call either returns the manager's success or Windows' failure value
 *     with the last error set: NULL, FALSE, 0 or (UINT)-1.
 * Must never: call malloc (a hostmem rule: this face may sit under a malloc);
 * lock on VirtualQuery's path once the manager exists (a runtime queries while
 * other threads are stopped, and from signal handlers: the first call of the
 * process, which creates the manager, is the only one that may wait); touch
 * memory itself: every page is the manager's.
 */
#define COBJMACROS
#include "hostmem.h"
#include "hostmem_win32.h" /* after hostmem.h: the shared types are hostmem.h's */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Windows' failure value for the UINT calls (GetWriteWatch, ResetWriteWatch). */
#define WIN32_UINT_FAILED ((UINT)-1)

/* Every call asks at this level: a Win32 program has no critical levels, and
 * Windows refuses memory it cannot commit at once. */
#define WIN32_LEVEL eTaskCritical

/* ---- the last error --------------------------------------------------------- */

/* initial-exec: static TLS, which glibc never allocates lazily (with malloc)
 * the way it may for a dlopen'ed library's dynamic TLS. */
#if defined(__GNUC__)
#define WIN32_TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define WIN32_TLS_MODEL
#endif

static _Thread_local DWORD win32_last_error WIN32_TLS_MODEL;

DWORD GetLastError(void)
{
    return win32_last_error;
}

void SetLastError(DWORD dwErrCode)
{
    win32_last_error = dwErrCode;
}

/* ---- results: hostmem's HRESULT -> the Win32 error Windows sets ----------------- */

/*
 * The results that are not HRESULT_FROM_WIN32 of the error Windows sets, and
 * that error. Every other failure hostmem returns is HRESULT_FROM_WIN32(x)
 * (SPEC §2: E_INVALIDARG is x = ERROR_INVALID_PARAMETER, then
 * ERROR_INVALID_ADDRESS, ERROR_BAD_LENGTH, ERROR_NO_SYSTEM_RESOURCES,
 * ERROR_INVALID_DATA) and maps back to x. docs/win32.md has the whole table.
 */
static const struct {
    HRESULT result;
    DWORD error;
} win32_errors[] = {
    /* the OS or the budget refused memory: Windows' STATUS_NO_MEMORY; not
     * E_OUTOFMEMORY's low word, ERROR_OUTOFMEMORY (14), which Windows never
     * sets here (docs/win32.md: where Windows would say ERROR_COMMITMENT_LIMIT) */
    {E_OUTOFMEMORY, ERROR_NOT_ENOUGH_MEMORY},
    /* freeing what was never allocated: STATUS_MEMORY_NOT_ALLOCATED */
    {HOST_E_INVALIDOPERATION, ERROR_INVALID_ADDRESS},
    /* a NULL out-pointer: Windows faults writing through it (STATUS_ACCESS_VIOLATION) */
    {E_POINTER, ERROR_NOACCESS},
    /* the manager's locks (the default ones never time out) */
    {HOST_E_TIMEOUT, ERROR_TIMEOUT},
    {HOST_E_NOT_OWNER, ERROR_NOT_OWNER},
    {HOST_E_ABANDONED, ERROR_ABANDONED_WAIT_0},
    /* the manager could not vouch for its state and is disabled: no Windows twin */
    {E_FAIL, ERROR_INTERNAL_ERROR},
    {HOST_E_CLRNOTAVAILABLE, ERROR_INTERNAL_ERROR},
};

static DWORD win32_error_of(HRESULT hr)
{
    for (size_t i = 0; i < sizeof win32_errors / sizeof win32_errors[0]; i++)
        if (win32_errors[i].result == hr)
            return win32_errors[i].error;
    if (((uint32_t)hr >> 16) == 0x8007u) /* HRESULT_FROM_WIN32(x) -> x */
        return (uint32_t)hr & 0xFFFFu;
    return ERROR_INTERNAL_ERROR;
}

/* The one place a call's failure becomes the thread's last error. */
static void win32_failed(HRESULT hr)
{
    win32_last_error = win32_error_of(hr);
}

/* Whether a call succeeded; if not, its failure is the last error. */
static BOOL win32_ok(HRESULT hr)
{
    if (hr == S_OK)
        return TRUE;
    win32_failed(hr);
    return FALSE;
}

/* ---- the process-wide manager ----------------------------------------------- */

static pthread_once_t win32_once = PTHREAD_ONCE_INIT;
static _Atomic(IHostMemoryManager *) win32_the_manager;
static HRESULT win32_create_result; /* written once, inside pthread_once */

/* HOSTMEM_DYNAMIC_CODE: the face's policy (docs/win32.md); S_OK with it in
 * *policy, or E_INVALIDARG, said on stderr, for a value it does not know: a
 * host that asked for a policy never gets a manager without it. */
static HRESULT win32_dynamic_code(uint32_t *policy)
{
    static const struct {
        const char *name;
        uint32_t policy;
    } names[] = {{"any", HOSTMEM_CODE_ANY}, {"wx", HOSTMEM_CODE_WX}, {"none", HOSTMEM_CODE_NONE}};
    const char *value = getenv("HOSTMEM_DYNAMIC_CODE");
    *policy = HOSTMEM_CODE_ANY;
    if (!value || !*value)
        return S_OK;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(value, names[i].name) == 0) {
            *policy = names[i].policy;
            return S_OK;
        }
    fprintf(stderr, "hostmem: HOSTMEM_DYNAMIC_CODE=%s: expected any, wx or none; "
                    "the Win32 calls refuse every request\n", value);
    return E_INVALIDARG;
}

/* The modes a program may ask of the face's manager before it exists
 * (hostmem_win32_set_flags, or the environment): those that install the
 * process-wide SIGSEGV handler, and so are asked for rather than taken. */
#define WIN32_FLAGS (HOSTMEM_GUARD_PAGES | HOSTMEM_EMULATE_WRITE_WATCH)
static pthread_mutex_t win32_flags_lock = PTHREAD_MUTEX_INITIALIZER;
static DWORD win32_flags;     /* asked for by hostmem_win32_set_flags */
static bool win32_flags_read; /* the manager is being (or was) created: too late */

/* A flag's environment variable: "1" on, "0", empty or unset off; S_OK, or
 * E_INVALIDARG said on stderr for another value (as HOSTMEM_DYNAMIC_CODE). */
static HRESULT win32_flag_from(const char *name, DWORD flag, DWORD *flags)
{
    const char *value = getenv(name);
    if (!value || !*value || strcmp(value, "0") == 0)
        return S_OK;
    if (strcmp(value, "1") == 0) {
        *flags |= flag;
        return S_OK;
    }
    fprintf(stderr, "hostmem: %s=%s: expected 1 or 0; the Win32 calls refuse every request\n", name, value);
    return E_INVALIDARG;
}

BOOL hostmem_win32_set_flags(DWORD flags)
{
    if (flags & ~(DWORD)WIN32_FLAGS) {
        win32_last_error = ERROR_INVALID_PARAMETER;
        return FALSE;
    }
    pthread_mutex_lock(&win32_flags_lock);
    bool late = win32_flags_read;
    if (!late)
        win32_flags |= flags;
    pthread_mutex_unlock(&win32_flags_lock);
    if (late)
        win32_last_error = ERROR_ALREADY_INITIALIZED;
    return !late;
}

static void win32_create(void)
{
    IHostMemoryManager *m = NULL;
    hostmem_config config = {sizeof config};
    pthread_mutex_lock(&win32_flags_lock);
    win32_flags_read = true;
    config.flags = win32_flags;
    pthread_mutex_unlock(&win32_flags_lock);
    win32_create_result = win32_dynamic_code(&config.dynamic_code);
    if (win32_create_result == S_OK)
        win32_create_result = win32_flag_from("HOSTMEM_GUARD_PAGES", HOSTMEM_GUARD_PAGES, &config.flags);
    if (win32_create_result == S_OK)
        win32_create_result =
            win32_flag_from("HOSTMEM_EMULATE_WRITE_WATCH", HOSTMEM_EMULATE_WRITE_WATCH, &config.flags);
    if (win32_create_result == S_OK)
        win32_create_result = hostmem_create(&config, &m);
    if (win32_create_result == S_OK)
        atomic_store_explicit(&win32_the_manager, m, memory_order_release);
}

/* The manager, created on first use; NULL (last error set) if it cannot be. */
static IHostMemoryManager *win32_manager(void)
{
    IHostMemoryManager *m = atomic_load_explicit(&win32_the_manager, memory_order_acquire);
    if (m)
        return m;
    pthread_once(&win32_once, win32_create);
    m = atomic_load_explicit(&win32_the_manager, memory_order_acquire);
    if (!m)
        win32_failed(win32_create_result);
    return m;
}

struct IHostMemoryManager *hostmem_win32_manager(void)
{
    return win32_manager();
}

/* ---- the calls --------------------------------------------------------------- */

LPVOID VirtualAlloc(LPVOID lpAddress, SIZE_T dwSize, DWORD flAllocationType, DWORD flProtect)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return NULL;
    void *mem = NULL;
    HRESULT hr = IHostMemoryManager_VirtualAlloc(m, lpAddress, dwSize, flAllocationType, flProtect,
                                                 WIN32_LEVEL, &mem);
    return win32_ok(hr) ? mem : NULL;
}

BOOL VirtualFree(LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return FALSE;
    return win32_ok(IHostMemoryManager_VirtualFree(m, lpAddress, dwSize, dwFreeType));
}

SIZE_T VirtualQuery(LPCVOID lpAddress, PMEMORY_BASIC_INFORMATION lpBuffer, SIZE_T dwLength)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return 0;
    SIZE_T written = 0;
    HRESULT hr = IHostMemoryManager_VirtualQuery(m, (void *)(uintptr_t)lpAddress, lpBuffer, dwLength,
                                                 &written);
    return win32_ok(hr) ? written : 0;
}

BOOL VirtualProtect(LPVOID lpAddress, SIZE_T dwSize, DWORD flNewProtect, PDWORD lpflOldProtect)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return FALSE;
    return win32_ok(IHostMemoryManager_VirtualProtect(m, lpAddress, dwSize, flNewProtect, lpflOldProtect));
}

/* hostmem_get_write_watch checks the arguments in Windows' order and answers
 * with Windows' errors (HRESULT_FROM_WIN32 of ERROR_INVALID_PARAMETER or
 * ERROR_NOACCESS), so the call only forwards. */
UINT GetWriteWatch(DWORD dwFlags, PVOID lpBaseAddress, SIZE_T dwRegionSize, PVOID *lpAddresses,
                   ULONG_PTR *lpdwCount, LPDWORD lpdwGranularity)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return WIN32_UINT_FAILED;
    HRESULT hr = hostmem_get_write_watch(m, dwFlags, lpBaseAddress, dwRegionSize, lpAddresses,
                                         lpdwCount, lpdwGranularity);
    return win32_ok(hr) ? 0 : WIN32_UINT_FAILED;
}

UINT ResetWriteWatch(LPVOID lpBaseAddress, SIZE_T dwRegionSize)
{
    IHostMemoryManager *m = win32_manager();
    if (!m)
        return WIN32_UINT_FAILED;
    HRESULT hr = hostmem_reset_write_watch(m, lpBaseAddress, dwRegionSize);
    return win32_ok(hr) ? 0 : WIN32_UINT_FAILED;
}

SIZE_T GetLargePageMinimum(void)
{
    return hostmem_large_page_minimum();
}
