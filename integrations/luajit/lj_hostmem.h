/*
 * lj_hostmem.h - the Win32 virtual-memory calls of LuaJIT's Windows code path,
 * answered by one IHostMemoryManager (integrations/luajit/lj_hostmem.c).
 *
 * Two readers:
 *   - LuaJIT's lj_alloc.c, lj_mcode.c and lj_ccallback.c, patched
 *     (luajit-hostmem.patch) to take their Windows branch and include this file
 *     instead of <windows.h>. They define LJ_HOSTMEM_CLIENT first; then the names
 *     they call - VirtualAlloc, VirtualFree, VirtualQuery, VirtualProtect,
 *     GetLastError, SetLastError, LJ_WIN_VALLOC, LJ_WIN_VPROTECT - become the
 *     lj_hostmem_* functions below, tagged with the caller. The Windows types and
 *     constants come from hostmem.h, which spells them as Windows does.
 *   - the host (host.c): attaches the manager before luaL_newstate and reads the
 *     counts and the live code areas afterwards.
 *
 * One manager serves the whole process: LuaJIT's allocator asks for pages with
 * no lua_State at hand, so there is nowhere else to keep it.
 */
#ifndef LJ_HOSTMEM_H
#define LJ_HOSTMEM_H

#include <stddef.h>
#include "hostmem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Who called: the allocator's OS pages, the trace compiler's machine code, or
 * the FFI's callback trampolines (machine code too). */
enum {
    LJ_HOSTMEM_ALLOCATOR,
    LJ_HOSTMEM_MCODE,
    LJ_HOSTMEM_CALLBACK,
    LJ_HOSTMEM_CLIENTS
};

/* Hands LuaJIT a manager (one reference is taken), or NULL to let it go. Attach
 * before the first luaL_newstate; let go only after the last lua_close, since
 * pages still out can no longer be given back. Without a manager every call
 * fails, so luaL_newstate returns NULL. */
void lj_hostmem_attach(IHostMemoryManager *manager);

/* What one client asked of the manager, counted by the glue itself (the
 * manager's own per-method counts, hostmem_stats.calls, cover all callers). */
typedef struct lj_hostmem_counts {
    size_t allocs, alloc_failures;     /* VirtualAlloc */
    size_t frees, free_failures;       /* VirtualFree */
    size_t queries, query_failures;    /* VirtualQuery */
    size_t protects, protect_failures; /* VirtualProtect */
    size_t to_executable;              /* VirtualProtect to PAGE_EXECUTE_READ */
    size_t to_writable;                /* VirtualProtect to PAGE_READWRITE */
    size_t writable_and_executable;    /* requests for PAGE_EXECUTE_READWRITE, by
                                          VirtualAlloc or VirtualProtect */
    size_t out_of_memory;              /* failures that were E_OUTOFMEMORY: the budget
                                          or the kernel refused */
    size_t code_blocked;               /* failures that were HOSTMEM_E_DYNAMIC_CODE_BLOCKED:
                                          the manager's dynamic-code policy refused */
} lj_hostmem_counts;
void lj_hostmem_get_counts(int client, lj_hostmem_counts *counts);
void lj_hostmem_reset_counts(void);

/* A live machine-code area (trace code or callback trampolines): where LuaJIT
 * got it and how many bytes it asked for. */
typedef struct lj_hostmem_area {
    void *base;
    size_t size;
    int client;
} lj_hostmem_area;
/* Copies up to max live code areas into areas; returns how many are live, or
 * (size_t)-1 when more were live at once than the glue can remember. */
size_t lj_hostmem_code_areas(lj_hostmem_area *areas, size_t max);

/* The calls themselves, with Win32's results: a pointer or NULL, TRUE or FALSE,
 * bytes written or 0; the reason is in lj_hostmem_GetLastError(). */
void *lj_hostmem_VirtualAlloc(int client, void *address, SIZE_T size, DWORD type, DWORD protect);
BOOL lj_hostmem_VirtualFree(int client, void *address, SIZE_T size, DWORD type);
SIZE_T lj_hostmem_VirtualQuery(int client, const void *address, MEMORY_BASIC_INFORMATION *info,
                               SIZE_T length);
BOOL lj_hostmem_VirtualProtect(int client, void *address, SIZE_T size, DWORD protect,
                               DWORD *old_protect);
DWORD lj_hostmem_GetLastError(void);
void lj_hostmem_SetLastError(DWORD error);

#ifdef __cplusplus
}
#endif

#ifdef LJ_HOSTMEM_CLIENT
/* Inside LuaJIT's patched files only. */
#if defined(LJ_64) && LJ_64 && defined(LJ_GC64) && !LJ_GC64
/* Without GC64, x64 LuaJIT needs its heap in the low 2 GiB, which Windows grants
 * through NtAllocateVirtualMemory's zero bits; IHostMemoryManager has no such
 * request. */
#error "LJ_HOSTMEM needs LuaJIT's GC64 mode"
#endif

#define VirtualAlloc(address, size, type, protect) \
    lj_hostmem_VirtualAlloc(LJ_HOSTMEM_CLIENT, (address), (size), (type), (protect))
#define VirtualFree(address, size, type) \
    lj_hostmem_VirtualFree(LJ_HOSTMEM_CLIENT, (address), (size), (type))
#define VirtualQuery(address, info, length) \
    lj_hostmem_VirtualQuery(LJ_HOSTMEM_CLIENT, (address), (info), (length))
#define VirtualProtect(address, size, protect, old) \
    lj_hostmem_VirtualProtect(LJ_HOSTMEM_CLIENT, (address), (size), (protect), (old))
#define GetLastError() lj_hostmem_GetLastError()
#define SetLastError(error) lj_hostmem_SetLastError(error)
/* lj_arch.h names these for Windows targets only. */
#ifndef LJ_WIN_VALLOC
#define LJ_WIN_VALLOC VirtualAlloc
#endif
#ifndef LJ_WIN_VPROTECT
#define LJ_WIN_VPROTECT VirtualProtect
#endif
#endif /* LJ_HOSTMEM_CLIENT */

#endif /* LJ_HOSTMEM_H */
