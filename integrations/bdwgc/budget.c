/*
 * budget.c - bdwgc under a commit budget collects instead of growing.
 *
 *   GC_HOSTMEM_BUDGET=64M GC_HOSTMEM_REPORT=FILE budget [LIVE_MB [TOTAL_MB]]
 *
 * Keeps LIVE_MB (default 16) of linked nodes live in a ring of lists and
 * allocates TOTAL_MB (default 1024) in all, replacing one list at a time, so
 * that almost everything allocated becomes garbage. A heap that may not grow
 * past the budget must be collected to go on. Prints "budget: ok" and the
 * collector's collection count and heap size, after checking every live list
 * (each node holds its list's number and its place in the list), or
 * "budget: FAIL ..." and exits 1. GC_set_max_retries lets the collector
 * collect again when a heap growth is refused, bdwgc's own answer to a heap
 * limit (GC_set_max_heap_size); run.sh checks from the manager's report that
 * the budget refused growth and was never exceeded.
 */
#include <gc.h>
#include <stdio.h>
#include <stdlib.h>

struct node {
    struct node *next;
    size_t list;
    size_t place;
    char payload[40];
};

#define LISTS 64

static struct node *make_list(size_t list, size_t nodes)
{
    struct node *head = NULL;
    for (size_t i = 0; i < nodes; i++) {
        struct node *n = GC_MALLOC(sizeof *n);
        if (n == NULL)
            return NULL;
        n->next = head;
        n->list = list;
        n->place = nodes - 1 - i;
        head = n;
    }
    return head;
}

static int check_list(const struct node *head, size_t list, size_t nodes)
{
    size_t place = 0;
    for (const struct node *n = head; n != NULL; n = n->next, place++)
        if (n->list != list || n->place != place)
            return 0;
    return place == nodes;
}

int main(int argc, char **argv)
{
    size_t live_mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 16;
    size_t total_mb = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
    size_t nodes = (live_mb << 20) / LISTS / sizeof(struct node);
    size_t rounds = (total_mb << 20) / (nodes * sizeof(struct node));
    static struct node *lists[LISTS];
    size_t serial[LISTS] = {0};

    GC_INIT();
    GC_set_max_retries(8);
    for (size_t round = 0; round < rounds; round++) {
        size_t slot = round % LISTS;
        struct node *fresh = make_list(round, nodes);
        if (fresh == NULL) {
            printf("budget: FAIL: out of memory at round %zu of %zu (heap %zu bytes)\n", round, rounds,
                   (size_t)GC_get_heap_size());
            return 1;
        }
        lists[slot] = fresh;
        serial[slot] = round;
    }
    for (size_t slot = 0; slot < LISTS && slot < rounds; slot++)
        if (!check_list(lists[slot], serial[slot], nodes)) {
            printf("budget: FAIL: list %zu damaged\n", slot);
            return 1;
        }
    printf("budget: ok: %zu MiB allocated, %zu MiB live, %lu collections, heap %zu KiB\n", total_mb,
           live_mb, (unsigned long)GC_get_gc_no(), (size_t)GC_get_heap_size() >> 10);
    return 0;
}
