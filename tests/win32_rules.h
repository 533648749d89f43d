/*
 * win32_rules.h - the Win32 rules the tests predict results from, written once
 * (SPEC §3): which protections and allocation types are valid, and what a
 * protection lets a program do. Static functions: each test includes it.
 */
#ifndef HOSTMEM_TESTS_WIN32_RULES_H
#define HOSTMEM_TESTS_WIN32_RULES_H

#include "hostmem.h"

static const DWORD BASE_PROTS[6] = {PAGE_NOACCESS,    PAGE_READONLY,     PAGE_READWRITE,
                                    PAGE_EXECUTE,     PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE};
static const DWORD MODIFIERS[3] = {PAGE_GUARD, PAGE_NOCACHE, PAGE_WRITECOMBINE};

static inline int base_prot_known(DWORD p)
{
    for (int i = 0; i < 6; i++)
        if ((p & 0xFFu) == BASE_PROTS[i])
            return 1;
    return 0;
}

/* at most one of GUARD, NOCACHE, WRITECOMBINE and nothing else above the base */
static inline int modifiers_valid(DWORD p)
{
    DWORD mod = p & ~0xFFu;
    return !(mod & ~(DWORD)(PAGE_GUARD | PAGE_NOCACHE | PAGE_WRITECOMBINE)) && !(mod & (mod - 1));
}

/* §3: exactly one base value, at most one modifier, no modifier with NOACCESS. */
static inline int prot_valid(DWORD p)
{
    return base_prot_known(p) && modifiers_valid(p) && !((p & 0xFFu) == PAGE_NOACCESS && (p & ~0xFFu));
}

/* §3: COMMIT, RESERVE, COMMIT|RESERVE (TOP_DOWN optional, LARGE_PAGES only with
 * COMMIT|RESERVE), RESET or RESET_UNDO alone. */
static inline int alloc_type_valid(DWORD t)
{
    if ((t & MEM_WRITE_WATCH) && (!(t & MEM_RESERVE) || (t & MEM_LARGE_PAGES)))
        return 0; /* write watch: chosen at reservation, on normal pages (issue 14) */
    DWORD base = t & ~(DWORD)(MEM_TOP_DOWN | MEM_LARGE_PAGES | MEM_WRITE_WATCH);
    if (t & MEM_LARGE_PAGES)
        return base == (MEM_COMMIT | MEM_RESERVE);
    if (base == MEM_RESET || base == MEM_RESET_UNDO)
        return t == base;
    return base == MEM_COMMIT || base == MEM_RESERVE || base == (MEM_COMMIT | MEM_RESERVE);
}

/* Issue 14, current Windows ([wine-k32] test_VirtualAlloc: "PAGE_NOCACHE cannot
 * be set per page"): NOCACHE / WRITECOMBINE belong to the allocation. What a
 * commit or VirtualProtect with p gives inside an allocation made with aprot. */
static inline DWORD allocation_wide(DWORD aprot, DWORD p)
{
    const DWORD cache = PAGE_NOCACHE | PAGE_WRITECOMBINE;
    DWORD base = p & ~cache;
    if ((base & 0xFFu) == PAGE_NOACCESS || (base & PAGE_GUARD))
        return base;
    return base | (aprot & cache);
}

/* PAGE_EXECUTE is readable too, as on Windows x86-64 and in Wine (issue 23:
 * hostmem maps it PROT_READ | PROT_EXEC). */
static inline int readable(DWORD p)
{
    DWORD b = p & 0xFFu;
    return !(p & PAGE_GUARD) && (b == PAGE_READONLY || b == PAGE_READWRITE || b == PAGE_EXECUTE ||
                                 b == PAGE_EXECUTE_READ || b == PAGE_EXECUTE_READWRITE);
}

static inline int writable(DWORD p)
{
    DWORD b = p & 0xFFu;
    return !(p & PAGE_GUARD) && (b == PAGE_READWRITE || b == PAGE_EXECUTE_READWRITE);
}

/* Issue 23, the dynamic-code policy (hostmem_config.dynamic_code, HOSTMEM_CODE_*):
 * whether the policy refuses a protection (checked once the arguments are valid,
 * before the address; MEM_RESET and MEM_RESET_UNDO ignore the protection). W^X
 * refuses one writable and executable at once; no dynamic code (Windows'
 * Arbitrary Code Guard) every executable one. */
static inline int code_policy_refuses(uint32_t policy, DWORD p)
{
    DWORD b = p & 0xFFu;
    int executable = b == PAGE_EXECUTE || b == PAGE_EXECUTE_READ || b == PAGE_EXECUTE_READWRITE ||
                     b == PAGE_EXECUTE_WRITECOPY;
    int writable_code = b == PAGE_EXECUTE_READWRITE || b == PAGE_EXECUTE_WRITECOPY;
    return policy == HOSTMEM_CODE_NONE ? executable : policy == HOSTMEM_CODE_WX && writable_code;
}

#endif
