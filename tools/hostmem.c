/*
 * hostmem.c - the command-line tool. For now one subcommand, demo: a short
 * walk through the four virtual-memory methods with the region map printed
 * after each step (issue 5 grows it into the full tool).
 */
#define COBJMACROS
#include <stdio.h>
#include <string.h>

#include "hostmem.h"

static const char *name(HRESULT hr)
{
    static char buffer[16];
    const char *n = hostmem_result_name(hr);
    if (n)
        return n;
    snprintf(buffer, sizeof buffer, "0x%08X", (unsigned)hr);
    return buffer;
}

static void show(IHostMemoryManager *m, const char *title)
{
    printf("\n-- %s\n", title);
    hostmem_print_map(m, stdout);
}

static int demo(void)
{
    IHostMemoryManager *m;
    HRESULT hr = hostmem_create(NULL, &m);
    if (hr != S_OK) {
        fprintf(stderr, "hostmem: cannot create a manager: %s\n", name(hr));
        return 1;
    }
    printf("hostmem %s demo: page %zu bytes, allocation granularity %zu bytes\n",
           HOSTMEM_VERSION_STRING, hostmem_page_size(), hostmem_granularity());

    void *base = NULL, *got = NULL;
    hr = IHostMemoryManager_VirtualAlloc(m, NULL, 192 * 1024, MEM_RESERVE, PAGE_READWRITE,
                                         eTaskCritical, &base);
    printf("VirtualAlloc(NULL, 192K, MEM_RESERVE, PAGE_READWRITE) -> %s, %p\n", name(hr), base);
    hr = IHostMemoryManager_VirtualAlloc(m, (char *)base + 4096, 8192, MEM_COMMIT, PAGE_READWRITE,
                                         eTaskCritical, &got);
    printf("VirtualAlloc(base+4K, 8K, MEM_COMMIT, PAGE_READWRITE) -> %s, %p\n", name(hr), got);
    memset(got, 0x5A, 8192);
    DWORD old = 0;
    hr = IHostMemoryManager_VirtualProtect(m, (char *)base + 8192, 4096, PAGE_READONLY, &old);
    printf("VirtualProtect(base+8K, 4K, PAGE_READONLY) -> %s, old protection %#x\n", name(hr),
           (unsigned)old);
    show(m, "region map after reserve, commit and protect");

    MEMORY_BASIC_INFORMATION info;
    SIZE_T written;
    void *probes[] = {base, (char *)base + 4096, (char *)base + 8192, (char *)base + 64 * 1024,
                      (void *)&demo, &info};
    const char *labels[] = {"reservation base", "committed page", "read-only page",
                            "reserved page", "this program's code", "a stack variable"};
    printf("\n-- VirtualQuery\n");
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        hr = IHostMemoryManager_VirtualQuery(m, probes[i], &info, sizeof info, &written);
        printf("%-20s %p: %s state %#7x protect %#5x type %#8x region %zu KiB\n", labels[i],
               probes[i], name(hr), (unsigned)info.State, (unsigned)info.Protect,
               (unsigned)info.Type, info.RegionSize / 1024);
    }

    int on_stack = 0;
    hr = IHostMemoryManager_VirtualFree(m, &on_stack, 0, MEM_RELEASE);
    printf("\nVirtualFree(a stack address, 0, MEM_RELEASE) -> %s (memory the host never handed out)\n",
           name(hr));
    hr = IHostMemoryManager_VirtualFree(m, (char *)base + 4096, 4096, MEM_DECOMMIT);
    printf("VirtualFree(base+4K, 4K, MEM_DECOMMIT) -> %s\n", name(hr));
    hr = IHostMemoryManager_VirtualAlloc(m, (char *)base + 4096, 4096, MEM_COMMIT, PAGE_READWRITE,
                                         eTaskCritical, &got);
    printf("VirtualAlloc(base+4K, 4K, MEM_COMMIT) -> %s; first byte now %d (recommitted pages read zero)\n",
           name(hr), *(unsigned char *)got);
    show(m, "region map after decommit and recommit");

    hr = IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
    printf("\nVirtualFree(base, 0, MEM_RELEASE) -> %s\n", name(hr));
    hr = IHostMemoryManager_VirtualFree(m, base, 0, MEM_RELEASE);
    printf("VirtualFree(base, 0, MEM_RELEASE) again -> %s\n", name(hr));
    show(m, "region map after release (empty)");
    IHostMemoryManager_Release(m);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "demo") == 0)
        return demo();
    if (strcmp(argv[1], "--version") == 0) {
        printf("hostmem %s\n", HOSTMEM_VERSION_STRING);
        return 0;
    }
    fprintf(stderr, "usage: hostmem [demo|--version]\n");
    return 2;
}
