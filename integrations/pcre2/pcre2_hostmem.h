/*
 * pcre2_hostmem.h - what sljit asked of hostmem's Win32 face, counted.
 *
 * pcre2_hostmem.c is linked into every program of the hostmem pcre2 builds
 * (pcre2test, pcre2grep, pcre2_jit_test, pcre2posix_test, jit_check) with the
 * linker's --wrap=VirtualAlloc,--wrap=VirtualFree,--wrap=VirtualProtect: each
 * call sljit makes goes through a counter and on to the Win32 face unchanged.
 * The counts say what hostmem_stats cannot: which protections were asked and
 * granted, and which refusals were the dynamic-code policy's. With
 * HOSTMEM_PCRE2_REPORT=FILE in the environment, a program that made any of
 * these calls appends one line to FILE when it exits (run.sh reads them):
 *
 *   pcre2_hostmem: program=NAME layer alloc=N ... hostmem hostmem_VirtualAlloc=N ...
 *                  dynamic_code_refusals=N policy=N ... validate=S_OK
 *
 * Must never: change an argument or a result, or call the face on its own
 * behalf (hostmem's call counts must equal the layer's).
 */
#ifndef PCRE2_HOSTMEM_H
#define PCRE2_HOSTMEM_H

#include <stddef.h>

typedef struct pcre2_hostmem_counts {
    size_t alloc, alloc_failed;     /* VirtualAlloc */
    size_t reserve, commit;         /* ... with MEM_RESERVE, with MEM_COMMIT alone */
    size_t alloc_executable;        /* ... asking an executable protection, */
    size_t alloc_executable_granted; /* and granted */
    size_t protect, protect_failed; /* VirtualProtect */
    size_t protect_executable;      /* ... to an executable protection, */
    size_t protect_executable_granted; /* and granted */
    size_t protect_writable;        /* ... to PAGE_READWRITE */
    size_t writable_executable;     /* asked PAGE_EXECUTE_READWRITE or _WRITECOPY, either call */
    size_t writable_executable_granted;
    size_t code_blocked;            /* failures whose last error was ERROR_DYNAMIC_CODE_BLOCKED */
    size_t free, free_failed;       /* VirtualFree */
    size_t decommit, release;       /* ... with MEM_DECOMMIT, with MEM_RELEASE */
} pcre2_hostmem_counts;

void pcre2_hostmem_get_counts(pcre2_hostmem_counts *counts);

#endif /* PCRE2_HOSTMEM_H */
