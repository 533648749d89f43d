/*
 * latch_cut_kernel.c - a hostmem bug the write-watch model of tests/fuzz_model.c
 * found (issue 25): kept out of make check until hostmem is fixed.
 *
 * Kernel-tracked write watch (no HOSTMEM_EMULATE_WRITE_WATCH): a page written
 * after the reservation's first VirtualProtect, left out of a
 * WRITE_WATCH_FLAG_RESET answer because a captured page came first and the count
 * cut the list, is then decommitted - and is still reported. docs/writewatch.md:
 * "Decommitted pages are forgotten ... unless a VirtualProtect came between the
 * write and the decommit"; none did. The emulation forgets it (as Windows does),
 * so the two paths disagree.
 *
 * Why: kernel_get (src/watch.c) asks PAGEMAP_SCAN for up to *count written pages
 * and resets them in the kernel; when captured pages fill the answer first, the
 * kernel pages left over are put in the captured map so that the next call still
 * reports them - but a captured page survives a decommit, which a written one
 * must not.
 *
 * Build and run from the tree (exit 1 while the bug is there):
 *   cc -std=c11 -D_GNU_SOURCE -Iinclude -pthread tests/fuzz_findings/latch_cut_kernel.c \
 *      build/libhostmem.a -o build/latch_cut_kernel && build/latch_cut_kernel
 * The fuzz input: build/fuzz-test/fuzz_corpus tests/fuzz_findings/inputs (fails at step 131;
 * with byte 3 set to 0x0c, the same operations under emulation, it passes).
 */
#include <stdio.h>
#include <string.h>

#include "hostmem.h"

static long page_of(void *a, char *b, size_t page) { return (long)(((char *)a - b) / (long)page); }

int main(int argc, char **argv)
{
    int emulate = argc > 1 && strcmp(argv[1], "emulate") == 0;
    IHostMemoryManager *m;
    hostmem_config c = {sizeof c};
    c.flags = emulate ? HOSTMEM_EMULATE_WRITE_WATCH : 0;
    if (hostmem_create(&c, &m) != S_OK)
        return 2;
    if (!emulate && strcmp(hostmem_write_watch_mode(), "kernel") != 0) {
        printf("the kernel cannot track writes here (%s): nothing to show\n", hostmem_write_watch_mode());
        return 0;
    }
    size_t P = hostmem_page_size();
    void *v, *a[8];
    DWORD old;
    uintptr_t n;
    ULONG g;
    if (m->lpVtbl->VirtualAlloc(m, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE,
                                eTaskCritical, &v) != S_OK)
        return 2;
    char *b = v;
    b[0] = 1;                                                 /* page 0 written */
    m->lpVtbl->VirtualProtect(m, b, P, PAGE_READWRITE, &old); /* and captured */
    m->lpVtbl->VirtualFree(m, b, P, MEM_DECOMMIT);            /* still reported: captured */
    b[2 * P] = 1;                                             /* page 2 written: not captured */
    n = 1;
    hostmem_get_write_watch(m, WRITE_WATCH_FLAG_RESET, b, 4 * P, a, &n, &g);
    printf("GetWriteWatch(RESET, count 1): %lu answer(s), page %ld\n", (unsigned long)n,
           n ? page_of(a[0], b, P) : -1L);
    m->lpVtbl->VirtualFree(m, b + 2 * P, P, MEM_DECOMMIT); /* page 2 decommitted: forgotten */
    n = 8;
    hostmem_get_write_watch(m, 0, b, 4 * P, a, &n, &g);
    printf("after decommitting page 2 (%s):", emulate ? "emulated" : "kernel-tracked");
    for (uintptr_t i = 0; i < n; i++)
        printf(" page %ld", page_of(a[i], b, P));
    printf("%s; expected none\n", n ? "" : " none");
    int bad = n != 0;
    m->lpVtbl->VirtualFree(m, b, 0, MEM_RELEASE);
    m->lpVtbl->Release(m);
    return bad;
}
