/*
 * hostmem_win32.h - the Win32 virtual-memory calls, for code ported from Windows.
 *
 * VirtualAlloc, VirtualFree, VirtualQuery, VirtualProtect, GetWriteWatch,
 * ResetWriteWatch, GetLargePageMinimum, GetLastError and SetLastError with
 * Windows' signatures and results, over ONE process-wide hostmem manager that
 * the first call creates (hostmem_create(NULL, ...): the defaults, so the
 * budget is the cgroup's memory.max where one applies). A call that fails
 * returns what Windows returns (NULL, FALSE, 0 or a non-zero UINT) and sets
 * the calling thread's last error to the Win32 error Windows sets; a call
 * that succeeds leaves the last error as it was, as Windows does. The
 * mapping and what differs from Windows: docs/win32.md.
 *
 * Library: libhostmem_win32 (link -lhostmem_win32 -lhostmem -pthread, or
 * `pkg-config --libs hostmem-win32`), apart from libhostmem so that these
 * global names come only to a program that asks for them.
 *
 * This header stands alone: a ported program includes it instead of
 * windows.h and needs nothing else. A program that also uses the COM face
 * includes hostmem.h FIRST; the types and constants the two headers share
 * are then hostmem.h's. With HOSTMEM_NO_WINDOWS_TYPES defined (a program
 * that brings its own Windows types), neither header defines the base types.
 */
#ifndef HOSTMEM_WIN32_H
#define HOSTMEM_WIN32_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Windows base types (LP64, as hostmem.h) ------------------------------- */
#ifndef HOSTMEM_NO_WINDOWS_TYPES
#ifndef HOSTMEM_H
typedef uint32_t DWORD;
typedef int32_t BOOL;
typedef size_t SIZE_T;
typedef void *LPVOID;
typedef void *PVOID;

typedef struct _MEMORY_BASIC_INFORMATION {
    PVOID BaseAddress;
    PVOID AllocationBase;
    DWORD AllocationProtect;
    SIZE_T RegionSize;
    DWORD State;
    DWORD Protect;
    DWORD Type;
} MEMORY_BASIC_INFORMATION, *PMEMORY_BASIC_INFORMATION;
#endif /* HOSTMEM_H */

typedef unsigned int UINT;
typedef uintptr_t ULONG_PTR;
typedef ULONG_PTR *PULONG_PTR;
typedef const void *LPCVOID;
typedef DWORD *PDWORD;
typedef DWORD *LPDWORD;
#endif /* HOSTMEM_NO_WINDOWS_TYPES */

#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif

/* ---- constants (Windows values; hostmem.h has the same) --------------------- */
#ifndef HOSTMEM_H
#define MEM_COMMIT 0x00001000
#define MEM_RESERVE 0x00002000
#define MEM_DECOMMIT 0x00004000
#define MEM_RELEASE 0x00008000
#define MEM_FREE 0x00010000
#define MEM_PRIVATE 0x00020000
#define MEM_MAPPED 0x00040000
#define MEM_RESET 0x00080000
#define MEM_TOP_DOWN 0x00100000
#define MEM_WRITE_WATCH 0x00200000
#define MEM_PHYSICAL 0x00400000
#define MEM_IMAGE 0x01000000
#define MEM_RESET_UNDO 0x01000000
#define MEM_LARGE_PAGES 0x20000000

#define PAGE_NOACCESS 0x01
#define PAGE_READONLY 0x02
#define PAGE_READWRITE 0x04
#define PAGE_WRITECOPY 0x08
#define PAGE_EXECUTE 0x10
#define PAGE_EXECUTE_READ 0x20
#define PAGE_EXECUTE_READWRITE 0x40
#define PAGE_EXECUTE_WRITECOPY 0x80
#define PAGE_GUARD 0x100
#define PAGE_NOCACHE 0x200
#define PAGE_WRITECOMBINE 0x400

#define WRITE_WATCH_FLAG_RESET 0x01

#define ERROR_INVALID_DATA 13L
#define ERROR_BAD_LENGTH 24L
#define ERROR_INVALID_PARAMETER 87L
#define ERROR_INVALID_ADDRESS 487L
#define ERROR_NO_SYSTEM_RESOURCES 1450L
#define ERROR_DYNAMIC_CODE_BLOCKED 1655L
#endif /* HOSTMEM_H */

/* The other Win32 errors these calls set (docs/win32.md has the table). */
#ifndef ERROR_SUCCESS
#define ERROR_SUCCESS 0L
#endif
#ifndef ERROR_NOT_ENOUGH_MEMORY
#define ERROR_NOT_ENOUGH_MEMORY 8L
#endif
#ifndef ERROR_NOT_SUPPORTED
#define ERROR_NOT_SUPPORTED 50L
#endif
#ifndef ERROR_NOT_OWNER
#define ERROR_NOT_OWNER 288L
#endif
#ifndef ERROR_ABANDONED_WAIT_0
#define ERROR_ABANDONED_WAIT_0 735L
#endif
#ifndef ERROR_NOACCESS
#define ERROR_NOACCESS 998L
#endif
#ifndef ERROR_INTERNAL_ERROR
#define ERROR_INTERNAL_ERROR 1359L
#endif
#ifndef ERROR_TIMEOUT
#define ERROR_TIMEOUT 1460L
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* ---- the calls ---------------------------------------------------------------- */
LPVOID VirtualAlloc(LPVOID lpAddress, SIZE_T dwSize, DWORD flAllocationType, DWORD flProtect);
BOOL VirtualFree(LPVOID lpAddress, SIZE_T dwSize, DWORD dwFreeType);
SIZE_T VirtualQuery(LPCVOID lpAddress, PMEMORY_BASIC_INFORMATION lpBuffer, SIZE_T dwLength);
BOOL VirtualProtect(LPVOID lpAddress, SIZE_T dwSize, DWORD flNewProtect, PDWORD lpflOldProtect);

/* 0 on success; on failure (UINT)-1, as Windows returns, with the last error set. */
UINT GetWriteWatch(DWORD dwFlags, PVOID lpBaseAddress, SIZE_T dwRegionSize, PVOID *lpAddresses,
                   ULONG_PTR *lpdwCount, LPDWORD lpdwGranularity);
UINT ResetWriteWatch(LPVOID lpBaseAddress, SIZE_T dwRegionSize);

SIZE_T GetLargePageMinimum(void);

/* The calling thread's last error: 0 in a new thread, set only by a failure. */
DWORD GetLastError(void);
void SetLastError(DWORD dwErrCode);

/*
 * Not Windows: the process-wide manager these calls use (created now if it
 * was not yet), for a host that wants its statistics, budget or region map
 * through hostmem.h; NULL if it could not be created (the last error says
 * why). The manager lives as long as the process: never Release it to zero.
 * Its dynamic-code policy is HOSTMEM_DYNAMIC_CODE from the environment when it
 * is created ("any", "wx" or "none"; empty or unset is "any"; another value
 * is refused with ERROR_INVALID_PARAMETER by every call), and can be tightened later with
 * hostmem_restrict_dynamic_code(hostmem_win32_manager(), ...).
 */
struct IHostMemoryManager;
struct IHostMemoryManager *hostmem_win32_manager(void);

/*
 * Not Windows: modes of that manager that install hostmem's process-wide
 * SIGSEGV handler, and so are asked for (docs/win32.md): HOSTMEM_GUARD_PAGES
 * (one-shot PAGE_GUARD, docs/guard.md) and HOSTMEM_EMULATE_WRITE_WATCH (write
 * watch without the kernel's tracking, docs/writewatch.md), or'ed. Before the
 * first call that creates the manager: TRUE, the flags added to those the
 * environment asks for (HOSTMEM_GUARD_PAGES=1, HOSTMEM_EMULATE_WRITE_WATCH=1).
 * After it: FALSE, last error ERROR_ALREADY_INITIALIZED, nothing changed.
 * Another flag: FALSE, ERROR_INVALID_PARAMETER.
 */
#ifndef HOSTMEM_H
#define HOSTMEM_GUARD_PAGES 0x4u
#define HOSTMEM_EMULATE_WRITE_WATCH 0x8u
#endif
#ifndef ERROR_ALREADY_INITIALIZED
#define ERROR_ALREADY_INITIALIZED 1247L
#endif
BOOL hostmem_win32_set_flags(DWORD flags);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* HOSTMEM_WIN32_H */
