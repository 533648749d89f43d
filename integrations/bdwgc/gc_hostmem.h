/*
 * gc_hostmem.h - the Win32 calls of bdwgc's USE_WINALLOC and GWW_VDB code,
 * answered by one IHostMemoryManager (integrations/bdwgc/gc_hostmem.c).
 *
 * Two readers:
 *   - bdwgc, built with -DGC_HOSTMEM and bdwgc-hostmem.patch: its gc_priv.h
 *     includes this file where a Windows build includes <windows.h>. There the
 *     names the collector's Windows path calls - VirtualAlloc, VirtualFree,
 *     VirtualQuery, GetLastError, and GetModuleHandle/GetProcAddress, through
 *     which it finds GetWriteWatch - become the gc_hostmem_* functions below.
 *     The Windows types and constants come from hostmem.h, which spells them as
 *     Windows does; the few bdwgc needs beyond them are defined here.
 *   - gc_hostmem.c, which implements them (without GC_HOSTMEM, so the Windows
 *     names stay unmapped there).
 *
 * One manager serves the whole process: the collector's heap is process-wide.
 */
#ifndef GC_HOSTMEM_H
#define GC_HOSTMEM_H

#include <stddef.h>
#include <stdint.h>
#include "hostmem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The Windows names bdwgc's Windows path uses that hostmem.h does not define. */
typedef unsigned int UINT;
typedef ULONG *PULONG;
typedef struct gc_hostmem_module *HMODULE;
typedef void (*FARPROC)(void);
#define WINAPI
#define TEXT(s) s
#define ERROR_NOT_ENOUGH_MEMORY 8L
#define ERROR_OUTOFMEMORY 14L

void *gc_hostmem_VirtualAlloc(void *address, SIZE_T size, DWORD type, DWORD protect);
BOOL gc_hostmem_VirtualFree(void *address, SIZE_T size, DWORD type);
SIZE_T gc_hostmem_VirtualQuery(const void *address, MEMORY_BASIC_INFORMATION *info,
                               SIZE_T length);
UINT gc_hostmem_GetWriteWatch(DWORD flags, void *base, SIZE_T size, void **addresses,
                              uintptr_t *count, ULONG *granularity);
DWORD gc_hostmem_GetLastError(void);
/* kernel32.dll is the glue; GetProcAddress knows one name, "GetWriteWatch". */
HMODULE gc_hostmem_GetModuleHandle(const char *name);
FARPROC gc_hostmem_GetProcAddress(HMODULE module, const char *name);

#ifdef __cplusplus
}
#endif

#ifdef GC_HOSTMEM
/* Inside bdwgc only. */
#define VirtualAlloc gc_hostmem_VirtualAlloc
#define VirtualFree gc_hostmem_VirtualFree
#define VirtualQuery gc_hostmem_VirtualQuery
#define GetLastError gc_hostmem_GetLastError
#define GetModuleHandle gc_hostmem_GetModuleHandle
#define GetProcAddress gc_hostmem_GetProcAddress
#endif /* GC_HOSTMEM */

#endif /* GC_HOSTMEM_H */
