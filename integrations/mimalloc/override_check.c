/*
 * override_check.c - mimalloc, built with -DMI_MALLOC_OVERRIDE on hostmem, is the
 * process's malloc: memory that libc allocates for itself (strdup, stdio,
 * asprintf, a new thread's first malloc) comes from mimalloc's heap, and that
 * heap's pages from the layer's one IHostMemoryManager.
 *
 * Unlike mimalloc's main-override.c it does not include mimalloc-override.h, so
 * every malloc here is the C library's symbol, resolved to mimalloc's by the
 * linker. Prints "override_check: N passed, N failed".
 */
#define _GNU_SOURCE
#define COBJMACROS
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mimalloc.h>

#include "hostmem.h"
#include "mi_hostmem.h"

static int passed, failed;

static void check(bool ok, const char *name)
{
    if (ok)
        passed++;
    else
        failed++;
    printf(ok ? "ok - %s\n" : "  FAIL %s\n", name);
}

struct search {
    const void *p;
    bool committed;
};

static int find_region(void *context, const MEMORY_BASIC_INFORMATION *region)
{
    struct search *search = context;
    const char *base = region->BaseAddress, *p = search->p;
    if (p >= base && p < base + region->RegionSize) {
        search->committed = region->State == MEM_COMMIT;
        return 1;
    }
    return 0;
}

/* The pointer is a block of mimalloc's heap, on a committed page of one of the
 * layer's manager's reservations (hostmem_walk visits that manager's only). */
static bool from_hostmem(const void *p)
{
    if (p == NULL || !mi_is_in_heap_region(p))
        return false;
    struct search search = {p, false};
    return hostmem_walk(mi_hostmem_manager(), find_region, &search) == S_OK && search.committed;
}

static void *in_thread(void *arg)
{
    (void)arg;
    char *p = malloc(4000);
    if (p != NULL)
        memset(p, 1, 4000);
    bool ok = from_hostmem(p);
    free(p);
    return ok ? p : NULL; /* only compared with NULL */
}

int main(void)
{
    void *p = malloc(100);
    if (p != NULL)
        memset(p, 1, 100);
    check(from_hostmem(p), "malloc is mimalloc's, on a page the manager committed");
    free(p);

    char *s = strdup("a string libc copies with its own malloc");
    check(from_hostmem(s) && strcmp(s, "a string libc copies with its own malloc") == 0,
          "strdup allocates from mimalloc");
    free(s);

    char *formatted = NULL;
    int n = asprintf(&formatted, "%d %s", 42, "formatted");
    check(n > 0 && from_hostmem(formatted), "asprintf allocates from mimalloc");
    free(formatted);

    void *q = calloc(1000, 1000);
    check(from_hostmem(q) && ((unsigned char *)q)[999999] == 0, "calloc of 1 MB: zeroed, mimalloc's");
    q = realloc(q, 40u << 20);
    check(from_hostmem(q), "realloc to 40 MiB (a huge block: a reservation of its own)");
    free(q);

    FILE *f = tmpfile();
    bool io = f != NULL && fputs("through a stdio buffer\n", f) >= 0 && fflush(f) == 0;
    if (f != NULL)
        fclose(f);
    check(io, "stdio works with mimalloc as malloc");

    pthread_t thread;
    void *result = NULL;
    bool threaded = pthread_create(&thread, NULL, in_thread, NULL) == 0 &&
                    pthread_join(thread, &result) == 0 && result != NULL;
    check(threaded, "a new thread's malloc comes from mimalloc too");

    hostmem_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    check(hostmem_get_stats(mi_hostmem_manager(), &stats) == S_OK && stats.reservations > 0,
          "the manager holds mimalloc's reservations");

    printf("override_check: %d passed, %d failed\n", passed, failed);
    /* Now: stdout's buffer is mimalloc's, and with destroy_on_exit it is gone
     * before exit() would flush it. */
    fflush(stdout);
    return failed != 0;
}
