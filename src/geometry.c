/*
 * geometry.c - the process-wide page size and allocation granularity, read
 * once (geometry_ensure) and then only read: every module rounds with them
 * (internal.h's page_down, granule_up, ...).
 *
 * P is the kernel's page size; G, the granularity reservations start on and
 * are sized in, is 64 KiB as on Windows, or P where pages are larger.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

size_t g_page;
unsigned g_page_shift;
size_t g_granule;
unsigned g_granule_shift;

static void geometry_init(void)
{
    size_t page = os_page_size();
    size_t granule = page > 65536 ? page : 65536;
    unsigned ps = 0, gs = 0;
    while (((size_t)1 << ps) < page)
        ps++;
    while (((size_t)1 << gs) < granule)
        gs++;
    g_page_shift = ps;
    g_granule_shift = gs;
    g_granule = granule;
    g_page = page;
}

static pthread_once_t geometry_once = PTHREAD_ONCE_INIT;

void geometry_ensure(void)
{
    pthread_once(&geometry_once, geometry_init);
}

size_t hostmem_page_size(void)
{
    geometry_ensure();
    return g_page;
}

size_t hostmem_granularity(void)
{
    geometry_ensure();
    return g_granule;
}

/* The kernel's default huge page, from /proc/meminfo ("Hugepagesize:"), read
 * once it could be read; 1 caches "none". */
static _Atomic size_t large_page;

size_t geometry_large_page(void)
{
    size_t v = atomic_load_explicit(&large_page, memory_order_acquire);
    if (v)
        return v == 1 ? 0 : v;
    char text[8192];
    size_t length;
    if (os_read_file("/proc/meminfo", text, sizeof text, &length) != 0)
        return 0; /* unreadable now: not cached */
    size_t found = 1;
    const char *at = strstr(text, "Hugepagesize:");
    if (at) {
        unsigned long long kib = strtoull(at + strlen("Hugepagesize:"), NULL, 10);
        if (kib)
            found = (size_t)kib * 1024;
    }
    atomic_store_explicit(&large_page, found, memory_order_release);
    return found == 1 ? 0 : found;
}

size_t hostmem_large_page_minimum(void)
{
    geometry_ensure();
    return geometry_large_page();
}
