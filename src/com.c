/*
 * com.c - the COM face of a manager: vtable, QueryInterface, reference counts,
 * creation and destruction, and the native inspection calls.
 *
 * Owns: the manager's lifetime (its id and its place among the live managers
 * come from registry.c, and go back only after its entries in the address map
 * are gone). Must never: hand out a manager that is half-built; touch memory
 * after shutdown.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define DEFAULT_ARENA_SIZE ((size_t)1 << 30)
/* ---- IUnknown ----------------------------------------------------------------------- */
static HRESULT STDMETHODCALLTYPE m_query_interface(IHostMemoryManager *self, REFIID riid, void **ppv)
{
    return unknown_query(self, &manager_from(self)->references, &IID_IHostMemoryManager, riid, ppv);
}

static ULONG STDMETHODCALLTYPE m_add_ref(IHostMemoryManager *self)
{
    return atomic_fetch_add(&manager_from(self)->references, 1) + 1;
}

static void manager_teardown(struct manager *m)
{
    policy_fini(m); /* stops the monitor, releases the callback */
    vm_release_all(m);
}

static void manager_destroy(struct manager *m)
{
    if ((m->flags & HOSTMEM_LEAK_REPORT) && !m->torn_down &&
        atomic_load(&m->reservations) && atomic_load(&m->state) == STATE_LIVE) {
        fprintf(stderr, "hostmem: %zu reservations still live at shutdown:\n",
                atomic_load(&m->reservations));
        hostmem_print_map(&m->iface, stderr);
    }
    if (!m->torn_down)
        manager_teardown(m);
    if (m->locks_created) {
        for (int i = 0; i < STRIPES; i++)
            lock_destroy(m, m->stripes[i].lock);
        lock_destroy(m, m->arena_lock);
    }
    for (int i = 0; i < STRIPES; i++)
        slab_destroy(&m->stripes[i].slab);
    arena_fini(m);
    registry_remove(m);
    pages_free(NULL, m, sizeof *m); /* the manager is going: nobody can see a refusal */
}

/* The arena lock and the stripe locks: all of them, or none. */
static HRESULT locks_create(struct manager *m)
{
    HRESULT hr = lock_create(m, &m->arena_lock);
    if (hr != S_OK)
        return hr;
    for (int i = 0; i < STRIPES; i++) {
        hr = lock_create(m, &m->stripes[i].lock);
        if (hr != S_OK) {
            while (i-- > 0)
                lock_destroy(m, m->stripes[i].lock);
            lock_destroy(m, m->arena_lock);
            return hr;
        }
    }
    m->locks_created = true;
    return S_OK;
}

static ULONG STDMETHODCALLTYPE m_release(IHostMemoryManager *self)
{
    struct manager *m = manager_from(self);
    ULONG left = atomic_fetch_sub(&m->references, 1) - 1;
    if (left == 0) {
        /* The monitor thread first: nothing of the manager's own runs while
         * the registry's last look (a test's validate) and the teardown do. */
        policy_stop_monitor(m);
        registry_before_destroy(m);
        manager_destroy(m);
    }
    return left;
}

/* ---- counting calls --------------------------------------------------------------------- */
/* A count in the calling thread's block: its slot's alone, so one add without
 * the lock prefix - a single instruction, which a signal handler that calls
 * the manager (on the same block) cannot split. The shared block of threads
 * without a slot, and any build without that instruction (or whose accesses
 * ThreadSanitizer must see), count with an atomic add. */
static inline void count_one(_Atomic size_t *c, bool shared)
{
#if defined(__x86_64__) && !HM_TSAN
    if (__builtin_expect(!shared, 1)) {
        __asm__ volatile("addq $1, %0" : "+m"(*(size_t *)c));
        return;
    }
#else
    (void)shared;
#endif
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* The calling thread's slot: one load of a thread-local word after the first. */
static inline unsigned thread_slot(void)
{
    unsigned held = thread_slot_held;
    return __builtin_expect(held != 0, 1) ? held - 1 : thread_slot_take();
}

/* Counts a call of method (and of kind, unless HOSTMEM_METHODS) and its result. */
static inline HRESULT counted(struct manager *m, unsigned method, unsigned kind, HRESULT hr)
{
    unsigned slot = thread_slot();
    struct call_counts *c = &m->call_counts[slot];
    bool shared = slot == THREAD_SLOTS;
    count_one(&c->calls[method], shared);
    if (kind < HOSTMEM_METHODS)
        count_one(&c->calls[kind], shared);
    if (hr != S_OK) {
        count_one(&c->failures[method], shared);
        if (kind < HOSTMEM_METHODS)
            count_one(&c->failures[kind], shared);
    }
    return hr;
}

static unsigned alloc_kind(void *address, DWORD type)
{
    if (type & (MEM_RESET | MEM_RESET_UNDO))
        return HOSTMEM_KIND_RESET;
    if ((type & MEM_RESERVE) || (!address && (type & MEM_COMMIT)))
        return HOSTMEM_KIND_RESERVE; /* a commit at no address reserves too, as on Windows */
    return (type & MEM_COMMIT) ? HOSTMEM_KIND_COMMIT : HOSTMEM_METHODS;
}

static unsigned free_kind(DWORD type)
{
    return type == MEM_DECOMMIT ? HOSTMEM_KIND_DECOMMIT
           : type == MEM_RELEASE ? HOSTMEM_KIND_RELEASE
                                 : HOSTMEM_METHODS;
}

/* ---- the interface's methods -------------------------------------------------------- */
static HRESULT create_malloc(struct manager *m, DWORD type, IHostMalloc **out)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    HRESULT hr = manager_check(m);
    return hr != S_OK ? hr : heap_create(m, type, out);
}

static HRESULT STDMETHODCALLTYPE m_create_malloc(IHostMemoryManager *self, DWORD type,
                                                 IHostMalloc **out)
{
    struct manager *m = manager_from(self);
    return counted(m, HOSTMEM_METHOD_CREATE_MALLOC, HOSTMEM_METHODS, create_malloc(m, type, out));
}

/* Every method that moves the load sends the notifications it caused on its
 * way out, after it left every lock. */
static HRESULT STDMETHODCALLTYPE m_virtual_alloc(IHostMemoryManager *self, void *address,
                                                 SIZE_T size, DWORD type, DWORD protect,
                                                 EMemoryCriticalLevel level, void **out)
{
    struct manager *m = manager_from(self);
    HRESULT hr = vm_alloc(m, address, size, type, protect, level, out);
    if (manager_check(m) == S_OK)
        policy_deliver(m);
    return counted(m, HOSTMEM_METHOD_VIRTUAL_ALLOC, alloc_kind(address, type), hr);
}

static HRESULT STDMETHODCALLTYPE m_virtual_free(IHostMemoryManager *self, LPVOID address,
                                                SIZE_T size, DWORD type)
{
    struct manager *m = manager_from(self);
    HRESULT hr = vm_free(m, address, size, type);
    if (hr == S_OK && manager_check(m) == S_OK)
        policy_deliver(m);
    return counted(m, HOSTMEM_METHOD_VIRTUAL_FREE, free_kind(type), hr);
}

static HRESULT virtual_query(struct manager *m, void *address, void *buffer, SIZE_T length,
                             SIZE_T *result)
{
    HRESULT hr = manager_check(m);
    if (hr != S_OK)
        return hr;
    if (!buffer || !result)
        return E_POINTER;
    if (length < sizeof(MEMORY_BASIC_INFORMATION))
        return HRESULT_FROM_WIN32(ERROR_BAD_LENGTH);
    if ((uintptr_t)buffer % _Alignof(MEMORY_BASIC_INFORMATION) == 0) {
        /* straight into the caller's buffer (a copy through one of ours would
         * load what was just stored in other widths: a stall of its own) */
        hr = vm_query(m, address, buffer);
    } else {
        MEMORY_BASIC_INFORMATION info;
        hr = vm_query(m, address, &info);
        if (hr == S_OK)
            memcpy(buffer, &info, sizeof info);
    }
    if (hr == S_OK)
        *result = sizeof(MEMORY_BASIC_INFORMATION);
    return hr;
}

static HRESULT STDMETHODCALLTYPE m_virtual_query(IHostMemoryManager *self, void *address,
                                                 void *buffer, SIZE_T length, SIZE_T *result)
{
    struct manager *m = manager_from(self);
    return counted(m, HOSTMEM_METHOD_VIRTUAL_QUERY, HOSTMEM_METHODS,
                   virtual_query(m, address, buffer, length, result));
}

static HRESULT STDMETHODCALLTYPE m_virtual_protect(IHostMemoryManager *self, void *address,
                                                   SIZE_T size, DWORD protect, DWORD *old)
{
    struct manager *m = manager_from(self);
    return counted(m, HOSTMEM_METHOD_VIRTUAL_PROTECT, HOSTMEM_METHODS,
                   vm_protect(m, address, size, protect, old));
}

static HRESULT STDMETHODCALLTYPE m_get_memory_load(IHostMemoryManager *self, DWORD *load,
                                                   SIZE_T *available)
{
    struct manager *m = manager_from(self);
    HRESULT hr = manager_check(m);
    return counted(m, HOSTMEM_METHOD_GET_MEMORY_LOAD, HOSTMEM_METHODS,
                   hr != S_OK ? hr : policy_memory_load(m, load, available));
}

static HRESULT STDMETHODCALLTYPE m_register_callback(IHostMemoryManager *self,
                                                     ICLRMemoryNotificationCallback *callback)
{
    struct manager *m = manager_from(self);
    HRESULT hr = manager_check(m);
    return counted(m, HOSTMEM_METHOD_REGISTER_CALLBACK, HOSTMEM_METHODS,
                   hr != S_OK ? hr : policy_register(m, callback));
}

static HRESULT STDMETHODCALLTYPE m_needs_space(IHostMemoryManager *self, LPVOID start, SIZE_T size)
{
    struct manager *m = manager_from(self);
    HRESULT hr = manager_check(m);
    return counted(m, HOSTMEM_METHOD_NEEDS_SPACE, HOSTMEM_METHODS,
                   hr != S_OK ? hr : policy_needs_space(m, (uintptr_t)start, size));
}

static HRESULT STDMETHODCALLTYPE m_acquired_space(IHostMemoryManager *self, LPVOID start,
                                                  SIZE_T size)
{
    struct manager *m = manager_from(self);
    HRESULT hr = manager_check(m);
    return counted(m, HOSTMEM_METHOD_ACQUIRED_SPACE, HOSTMEM_METHODS,
                   hr != S_OK ? hr : policy_acquired_space(m, (uintptr_t)start, size));
}

static HRESULT STDMETHODCALLTYPE m_released_space(IHostMemoryManager *self, LPVOID start)
{
    struct manager *m = manager_from(self);
    HRESULT hr = manager_check(m);
    return counted(m, HOSTMEM_METHOD_RELEASED_SPACE, HOSTMEM_METHODS,
                   hr != S_OK ? hr : policy_released_space(m, (uintptr_t)start));
}

static const IHostMemoryManagerVtbl manager_vtbl = {
    m_query_interface,   m_add_ref,         m_release,           m_create_malloc,
    m_virtual_alloc,     m_virtual_free,    m_virtual_query,     m_virtual_protect,
    m_get_memory_load,   m_register_callback, m_needs_space,     m_acquired_space,
    m_released_space,
};

static int is_manager(IHostMemoryManager *i)
{
    return i && i->lpVtbl == &manager_vtbl;
}

/* ---- creation ------------------------------------------------------------------------- */
/* The configuration's first problem, checked in field order; c has the
 * caller's fields (zero past its size). */
static const char *config_problem(const hostmem_config *c)
{
    if (c->flags & ~(HOSTMEM_COMPACT | HOSTMEM_LEAK_REPORT | HOSTMEM_GUARD_PAGES | HOSTMEM_EMULATE_WRITE_WATCH |
                     HOSTMEM_FIXED_PLACEMENT))
        return "flags: only HOSTMEM_COMPACT, HOSTMEM_LEAK_REPORT, HOSTMEM_GUARD_PAGES, "
               "HOSTMEM_EMULATE_WRITE_WATCH and HOSTMEM_FIXED_PLACEMENT are defined";
    if (c->commit_limit && c->commit_limit != HOSTMEM_UNLIMITED && c->commit_limit < g_page)
        return "commit_limit: a budget under one page cannot hold a single commit";
    if (c->lock_ops && (!c->lock_ops->create || !c->lock_ops->enter || !c->lock_ops->leave ||
                        !c->lock_ops->destroy))
        return "lock_ops: create, enter, leave and destroy are all needed";
    /* A reservation of more than a quarter of arena_size gets a mapping of its own (arena.c):
     * a quarter must hold one granule for any reservation to come from an arena. */
    if (c->arena_size && (c->arena_size % g_granule || c->arena_size < 4 * g_granule ||
                          c->arena_size > ((size_t)1 << 40)))
        return "arena_size: must be a multiple of the allocation granularity (64 KiB with 4 KiB pages), "
               "at least 4 of them (256 KiB), at most 1 TiB";
    return policy_config_problem(c);
}

const char *hostmem_config_problem(const hostmem_config *config)
{
    geometry_ensure();
    if (!config)
        return NULL;
    if (config->size < offsetof(hostmem_config, lock_ops) || config->size > 4096)
        return "size: set it to sizeof(hostmem_config)";
    hostmem_config c;
    memset(&c, 0, sizeof c);
    memcpy(&c, config, config->size < sizeof c ? config->size : sizeof c);
    return config_problem(&c);
}
HRESULT hostmem_create(const hostmem_config *config, IHostMemoryManager **out)
{
    if (!out)
        return E_POINTER;
    *out = NULL;
    geometry_ensure();
    hostmem_config c;
    memset(&c, 0, sizeof c);
    if (config) {
        if (config->size < offsetof(hostmem_config, lock_ops) || config->size > 4096)
            return E_INVALIDARG;
        memcpy(&c, config, config->size < sizeof c ? config->size : sizeof c);
    }
    if (config_problem(&c))
        return E_INVALIDARG; /* hostmem_config_problem says why */
    if (c.arena_size == 0)
        c.arena_size = DEFAULT_ARENA_SIZE;

    void *fresh;
    if (pages_alloc(NULL, sizeof(struct manager), &fresh) != 0)
        return E_OUTOFMEMORY; /* zeroed pages, not calloc: a malloc may sit on hostmem */
    struct manager *m = fresh;
    m->iface.lpVtbl = &manager_vtbl;
    atomic_init(&m->references, 1);
    m->flags = c.flags;
    m->compact = (c.flags & HOSTMEM_COMPACT) != 0;
    m->purge_delay_ms = c.purge_delay_ms ? c.purge_delay_ms : 10;
    m->purge_cap = c.purge_cap ? c.purge_cap : (size_t)64 << 20;
    m->signals = (c.flags & (HOSTMEM_GUARD_PAGES | HOSTMEM_EMULATE_WRITE_WATCH)) != 0;
    if (m->signals && guard_install() != 0) {
        pages_free(NULL, m, sizeof(struct manager));
        return E_OUTOFMEMORY; /* the kernel refused the handler */
    }
    m->timeout_ms = c.lock_timeout_ms ? c.lock_timeout_ms : HOSTMEM_INFINITE;
    m->arena_size = c.arena_size;
    m->commit_limit = c.commit_limit;
    m->lock_ops = c.lock_ops ? *c.lock_ops : lock_posix_ops;
    fork_install();
    /* Each step leaves what manager_destroy can take apart. */
    HRESULT hr = registry_add(m);
    if (hr == S_OK)
        hr = arena_init(m);
    if (hr == S_OK)
        hr = locks_create(m);
    if (hr == S_OK)
        hr = policy_init(m, &c);
    if (hr != S_OK) {
        manager_destroy(m);
        return hr;
    }
    *out = &m->iface;
    return S_OK;
}

/*
 * Shutdown: from now on every call returns HOST_E_CLRNOTAVAILABLE (calls
 * re-check the state after taking a lock). Each lock is then entered and left
 * once, so calls already inside the manager drain out, one lock at a time
 * (never holding them all: a host's lock may limit how many a thread holds).
 * The caller must not start new calls that race with the teardown itself.
 */
HRESULT hostmem_shutdown(IHostMemoryManager *manager)
{
    if (!is_manager(manager))
        return E_POINTER;
    struct manager *m = manager_from(manager);
    int expected = STATE_LIVE;
    if (!atomic_compare_exchange_strong(&m->state, &expected, STATE_SHUTDOWN) &&
        expected == STATE_SHUTDOWN)
        return HOST_E_CLRNOTAVAILABLE;
    atomic_store(&m->state, STATE_SHUTDOWN);
    void *locks[STRIPES + 1];
    locks[0] = m->arena_lock;
    for (int i = 0; i < STRIPES; i++)
        locks[i + 1] = m->stripes[i].lock;
    for (int i = 0; i <= STRIPES; i++) {
        HRESULT hr = m->lock_ops.enter(m->lock_ops.context, locks[i], m->timeout_ms);
        if (hr == S_OK)
            m->lock_ops.leave(m->lock_ops.context, locks[i]);
        else if (hr != HOST_E_ABANDONED)
            return hr; /* a call is still inside: the memory stays until the last Release */
    }
    manager_teardown(m);
    m->torn_down = true;
    return S_OK;
}

HRESULT hostmem_get_stats(IHostMemoryManager *manager, hostmem_stats *stats)
{
    if (!is_manager(manager) || !stats)
        return E_POINTER;
    if (stats->size < offsetof(hostmem_stats, arena_bytes) + sizeof(size_t))
        return E_INVALIDARG;
    struct manager *m = manager_from(manager);
    struct policy *p = &m->policy;
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
    s.reserved_bytes = LOAD(m->reserved_bytes);
    s.committed_bytes = LOAD(m->committed_bytes);
    s.peak_committed_bytes = LOAD(m->peak_committed);
    s.reservations = LOAD(m->reservations);
    s.arenas = LOAD(m->arenas_live);
    s.arena_bytes = LOAD(m->arena_bytes);
    s.heap_bytes = LOAD(m->heap_bytes);
    s.kernel_mappings = LOAD(m->mapping_estimate);
    s.commit_limit = atomic_load_explicit(&p->limit, memory_order_relaxed);
    _Static_assert(sizeof s.refusals / sizeof s.refusals[0] == sizeof p->refusals / sizeof p->refusals[0] &&
                       sizeof s.notifications / sizeof s.notifications[0] ==
                           sizeof p->notifications / sizeof p->notifications[0],
                   "hostmem_stats has a counter for every level and every state");
    for (size_t i = 0; i < sizeof s.refusals / sizeof s.refusals[0]; i++)
        s.refusals[i] = LOAD(p->refusals[i]);
    s.os_refusals = LOAD(m->os_refusals);
    s.book_protected_pages = LOAD(m->book_protected);
    s.purge_pending_bytes = LOAD(m->pending_pages) << g_page_shift;
    for (size_t i = 0; i < sizeof s.notifications / sizeof s.notifications[0]; i++)
        s.notifications[i] = LOAD(p->notifications[i]);
    for (unsigned k = 0, used = thread_slots_used(); k <= THREAD_SLOTS; k++) {
        if (k == used) /* past the slots ever taken: the shared block */
            k = THREAD_SLOTS;
        for (unsigned i = 0; i < HOSTMEM_METHODS; i++) {
            s.calls[i] += LOAD(m->call_counts[k].calls[i]);
            s.call_failures[i] += LOAD(m->call_counts[k].failures[i]);
        }
    }
    s.external_bytes = LOAD(p->external_bytes);
    s.external_ranges = LOAD(p->external_ranges);
    s.memory_state = (DWORD)LOAD(p->state);
    s.dynamic_code_refusals = LOAD(p->code_refusals);
    s.dynamic_code = LOAD(p->dynamic_code);
    s.heap_corruptions = LOAD(m->heap_corruptions);
    s.write_watch_gets = LOAD(m->watch_gets);
    s.write_watch_resets = LOAD(m->watch_resets);
    s.write_watch_pages = LOAD(m->watch_pages);
#undef LOAD
    size_t n = stats->size < sizeof s ? stats->size : sizeof s;
    memcpy((char *)stats + sizeof s.size, (char *)&s + sizeof s.size, n - sizeof s.size);
    return S_OK;
}

HRESULT hostmem_get_write_watch(IHostMemoryManager *manager, DWORD flags, void *base, SIZE_T size,
                                void **addresses, uintptr_t *count, ULONG *granularity)
{
    if (!is_manager(manager))
        return E_POINTER;
    return watch_get(manager_from(manager), flags, base, size, addresses, count, granularity);
}

HRESULT hostmem_reset_write_watch(IHostMemoryManager *manager, void *base, SIZE_T size)
{
    if (!is_manager(manager))
        return E_POINTER;
    return watch_reset(manager_from(manager), base, size);
}

/* The manager behind a native call that changes it: E_POINTER when it is none,
 * HOST_E_CLRNOTAVAILABLE when it is disabled or shut down. */
static HRESULT live_manager(IHostMemoryManager *manager, struct manager **out)
{
    if (!is_manager(manager))
        return E_POINTER;
    *out = manager_from(manager);
    return manager_check(*out);
}

HRESULT hostmem_set_guard_handler(IHostMemoryManager *manager, hostmem_guard_fn fn, void *context)
{
    struct manager *m;
    HRESULT hr = live_manager(manager, &m);
    if (hr != S_OK)
        return hr;
    if (!(m->flags & HOSTMEM_GUARD_PAGES))
        return E_INVALIDARG; /* made without HOSTMEM_GUARD_PAGES: guards never fire */
    atomic_store_explicit(&m->guard_fn, NULL, memory_order_release);
    atomic_store_explicit(&m->guard_context, context, memory_order_relaxed);
    atomic_store_explicit(&m->guard_fn, fn, memory_order_release);
    return S_OK;
}

HRESULT hostmem_purge(IHostMemoryManager *manager)
{
    struct manager *m;
    HRESULT hr = live_manager(manager, &m);
    if (hr == S_OK)
        deferred_purge(m);
    return hr;
}

const char *hostmem_write_watch_mode(void)
{
    return os_watch_probe() ? "unavailable" : "kernel";
}

HRESULT hostmem_restrict_dynamic_code(IHostMemoryManager *manager, uint32_t policy)
{
    struct manager *m;
    HRESULT hr = live_manager(manager, &m);
    return hr != S_OK ? hr : policy_restrict_code(m, policy);
}

HRESULT hostmem_poll_system(IHostMemoryManager *manager)
{
    struct manager *m;
    HRESULT hr = live_manager(manager, &m);
    return hr != S_OK ? hr : policy_poll_system(m);
}

HRESULT hostmem_set_commit_limit(IHostMemoryManager *manager, size_t bytes)
{
    struct manager *m;
    HRESULT hr = live_manager(manager, &m);
    if (hr != S_OK)
        return hr;
    policy_set_limit(m, bytes == HOSTMEM_UNLIMITED ? 0 : bytes);
    return S_OK;
}
