/*
 * bench_heap.c - a large live heap under steady mutation, where incremental
 * marking matters: the benchmark of integrations/bdwgc/bench.sh.
 *
 *   bench_heap [LIVE_MB [MUTATIONS_MILLIONS]]     (defaults 96 and 8)
 *
 * Builds LIVE_MB of live objects - a table of pointers to nodes of 64 bytes,
 * each pointing at another node - then, with incremental collection on,
 * makes MUTATIONS_MILLIONS million mutations: a new node replaces a random
 * table slot and is linked from a random old node, so writes land on pages all
 * over the heap and most allocations soon become garbage. Prints one line:
 *   bench_heap: wall=S collections=N pause_total_ms=T pause_max_ms=M vdb=...
 * where a pause is the time the world was stopped (from bdwgc's
 * GC_EVENT_PRE_STOP_WORLD to GC_EVENT_POST_START_WORLD, on its own clock
 * readings), and checks the table at the end (exit 1 if a node is damaged).
 * Not a test: it asserts only that the heap survived.
 */
#define _POSIX_C_SOURCE 200809L
#include <gc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct node {
    struct node *link;
    uintptr_t tag;
    uintptr_t payload[6];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double stopped_at, pause_total, pause_max;
static unsigned long pauses;

static void GC_CALLBACK on_event(GC_EventType event)
{
    if (event == GC_EVENT_PRE_STOP_WORLD) {
        stopped_at = now();
    } else if (event == GC_EVENT_POST_START_WORLD && stopped_at > 0) {
        double pause = now() - stopped_at;
        pause_total += pause;
        if (pause > pause_max)
            pause_max = pause;
        pauses++;
        stopped_at = 0;
    }
}

static uint64_t next_random(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

static struct node *new_node(uintptr_t tag, struct node *link)
{
    struct node *n = GC_MALLOC(sizeof *n);
    if (n == NULL) {
        fprintf(stderr, "bench_heap: out of memory\n");
        exit(2);
    }
    n->tag = tag;
    n->link = link;
    n->payload[0] = tag * 3;
    return n;
}

int main(int argc, char **argv)
{
    size_t live_mb = argc > 1 ? strtoul(argv[1], NULL, 10) : 96;
    size_t mutations = (argc > 2 ? strtoul(argv[2], NULL, 10) : 8) * 1000000;
    size_t count = (live_mb << 20) / (sizeof(struct node) + sizeof(struct node *));
    uint64_t state = 0x9e3779b97f4a7c15u;
    double start = now();

    GC_INIT();
    GC_set_on_collection_event(on_event);
    GC_enable_incremental();
    struct node **table = GC_MALLOC(count * sizeof *table);
    if (table == NULL) {
        fprintf(stderr, "bench_heap: out of memory for the table\n");
        return 2;
    }
    for (size_t i = 0; i < count; i++)
        table[i] = new_node(i, i > 0 ? table[(size_t)next_random(&state) % i] : NULL);
    for (size_t m = 0; m < mutations; m++) {
        size_t victim = (size_t)(next_random(&state) % count);
        size_t holder = (size_t)(next_random(&state) % count);
        struct node *fresh = new_node(victim, table[holder]);
        table[holder]->link = fresh;
        fresh->link = table[victim]->link;
        table[victim] = fresh;
    }
    for (size_t i = 0; i < count; i++)
        if (table[i]->payload[0] != table[i]->tag * 3) {
            printf("bench_heap: FAIL: node %zu damaged\n", i);
            return 1;
        }
    printf("bench_heap: wall=%.3f collections=%lu pauses=%lu pause_total_ms=%.1f pause_max_ms=%.2f"
           " heap_mb=%zu incremental=%d\n",
           now() - start, (unsigned long)GC_get_gc_no(), pauses, pause_total * 1e3, pause_max * 1e3,
           (size_t)GC_get_heap_size() >> 20, GC_is_incremental_mode());
    return 0;
}
