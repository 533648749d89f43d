/*
 * registry.c - every live manager of the process, in one place, and the ids
 * that tag their entries in the process-wide address map.
 *
 * A manager joins when it is created (registry_add takes its id) and leaves
 * when it is destroyed (registry_remove gives the id back, after its entries
 * are gone from the address map, so an id is never seen on two managers).
 * What needs every manager at once - the fork handlers, the tests' check
 * after each test - walks the list under the registry lock.
 *
 * Must never: call into a manager while a caller of registry_add or
 * registry_remove could be waiting (registry_each's callback runs under the
 * lock and must not create or destroy a manager).
 */
#include <pthread.h>

#include "internal.h"
#include "registry.h"

#define MAX_MANAGERS 65535u
_Static_assert(MAX_MANAGERS < ((uintptr_t)1 << (64 - ENTRY_ID_SHIFT)),
               "a manager id fits in the top bits of an address-map entry");

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_used[(MAX_MANAGERS + 1) / 64 + 1];
static unsigned id_next = 1;
static struct manager *registry_head; /* the live managers, newest first */
static _Atomic(struct manager *) registry_by_id[MAX_MANAGERS + 1]; /* for a signal handler */

struct manager *registry_find(unsigned id)
{
    return id <= MAX_MANAGERS ? atomic_load_explicit(&registry_by_id[id], memory_order_acquire) : NULL;
}

void (*hostmem_registry_on_destroy)(IHostMemoryManager *manager, int live);

static unsigned id_take(void)
{
    for (unsigned tries = 0; tries < MAX_MANAGERS; tries++) {
        unsigned c = id_next;
        id_next = id_next == MAX_MANAGERS ? 1 : id_next + 1;
        if (!(id_used[c / 64] >> (c % 64) & 1)) {
            id_used[c / 64] |= (uint64_t)1 << (c % 64);
            return c;
        }
    }
    return 0;
}

HRESULT registry_add(struct manager *m)
{
    pthread_mutex_lock(&registry_lock);
    m->id = id_take();
    if (m->id) {
        m->registry_prev = NULL;
        m->registry_next = registry_head;
        if (registry_head)
            registry_head->registry_prev = m;
        registry_head = m;
        atomic_store_explicit(&registry_by_id[m->id], m, memory_order_release);
    }
    pthread_mutex_unlock(&registry_lock);
    return m->id ? S_OK : E_OUTOFMEMORY;
}

void registry_remove(struct manager *m)
{
    if (!m->id)
        return;
    pthread_mutex_lock(&registry_lock);
    hm_assert(id_used[m->id / 64] >> (m->id % 64) & 1);
    id_used[m->id / 64] &= ~((uint64_t)1 << (m->id % 64));
    atomic_store_explicit(&registry_by_id[m->id], NULL, memory_order_release);
    if (m->registry_prev)
        m->registry_prev->registry_next = m->registry_next;
    else
        registry_head = m->registry_next;
    if (m->registry_next)
        m->registry_next->registry_prev = m->registry_prev;
    m->registry_next = m->registry_prev = NULL;
    pthread_mutex_unlock(&registry_lock);
    m->id = 0;
}

static bool manager_live(struct manager *m)
{
    return manager_check(m) == S_OK && !m->torn_down;
}

void registry_each(void (*fn)(struct manager *m, void *context), void *context)
{
    pthread_mutex_lock(&registry_lock);
    for (struct manager *m = registry_head; m; m = m->registry_next)
        fn(m, context);
    pthread_mutex_unlock(&registry_lock);
}

void registry_before_destroy(struct manager *m)
{
    if (hostmem_registry_on_destroy)
        hostmem_registry_on_destroy(&m->iface, manager_live(m));
}

struct each_public {
    void (*fn)(IHostMemoryManager *manager, int live, void *context);
    void *context;
};

static void each_public_step(struct manager *m, void *context)
{
    struct each_public *e = context;
    e->fn(&m->iface, manager_live(m), e->context);
}

void hostmem_registry_each(void (*fn)(IHostMemoryManager *manager, int live, void *context),
                           void *context)
{
    struct each_public e = {fn, context};
    registry_each(each_public_step, &e);
}

/* fork.c: the registry's lock is the first taken before a fork and the last
 * let go after it; each runs for every manager in between. */
void registry_fork_prepare(void (*each)(struct manager *m))
{
    pthread_mutex_lock(&registry_lock);
    for (struct manager *m = registry_head; m; m = m->registry_next)
        each(m);
}

void registry_fork_finish(void (*each)(struct manager *m))
{
    for (struct manager *m = registry_head; m; m = m->registry_next)
        each(m);
    pthread_mutex_unlock(&registry_lock);
}
