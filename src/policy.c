/*
 * policy.c - what the host decides: the commit budget and its critical
 * levels, the memory load, notifications to the runtime, the address space
 * the runtime maps itself, and the optional monitor of the machine's memory.
 *
 * Invariants: committed_bytes never exceeds the limit, except by requests at
 * eProcessCritical, which may use the emergency reserve above it; charging is
 * one compare-and-swap, so racing threads cannot overshoot. Notifications are
 * sent by policy_deliver only, never while a lock of the manager is held, one
 * at a time, and never twice in a row for the same state: the runtime's
 * callback may call back into the manager. Must never: sleep to wait for
 * memory except an eAppDomainCritical request, for at most appdomain_wait_ms.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define DEFAULT_APPDOMAIN_WAIT_MS 100
#define DEFAULT_LOW_LOAD 90
#define DEFAULT_HIGH_LOAD 60
#define DEFAULT_HYSTERESIS 5

/* ---- waiting for memory ----------------------------------------------------------- */
static void futex_wait(_Atomic uint32_t *word, uint32_t seen, long timeout_ns)
{
    struct timespec t = {timeout_ns / 1000000000L, timeout_ns % 1000000000L};
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, seen, &t, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* ---- the state the load says ---------------------------------------------------------- */
/* used as a percent of total, whole percents rounded down, 100 at or past it. */
static int percent_of(size_t used, size_t total)
{
    return used >= total ? 100 : (int)((double)used * 100.0 / (double)total);
}

static int load_percent(struct manager *m)
{
    struct policy *p = &m->policy;
    if (atomic_load_explicit(&p->pressure, memory_order_acquire))
        return 100; /* a request is short of memory: Low until some is given back */
    int load = -1;
    size_t limit = atomic_load_explicit(&p->limit, memory_order_relaxed);
    if (limit) {
        size_t committed = atomic_load_explicit(&m->committed_bytes, memory_order_relaxed);
        load = percent_of(committed, limit);
    }
    int machine = atomic_load_explicit(&p->machine_load, memory_order_relaxed);
    return machine > load ? machine : load;
}

/* The next state from the current one and the load, with hysteresis. */
static int next_state(const struct policy *p, int state, int load)
{
    int low = (int)p->low, high = (int)p->high, h = (int)p->hysteresis;
    if (load < 0)
        return state;
    if (load >= low)
        return eMemoryAvailableLow;
    switch (state) {
    case eMemoryAvailableLow:
        if (load >= low - h)
            return eMemoryAvailableLow;
        return load <= high ? eMemoryAvailableHigh : eMemoryAvailableNeutral;
    case eMemoryAvailableHigh:
        return load > high + h ? eMemoryAvailableNeutral : eMemoryAvailableHigh;
    default:
        return load <= high ? eMemoryAvailableHigh : eMemoryAvailableNeutral;
    }
}

static void note(struct manager *m)
{
    struct policy *p = &m->policy;
    int load = load_percent(m);
    int state = atomic_load_explicit(&p->state, memory_order_relaxed);
    for (;;) {
        int next = next_state(p, state, load);
        if (next == state ||
            atomic_compare_exchange_weak_explicit(&p->state, &state, next, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    }
}

/* Sends the current state if the runtime has not been told it yet. No lock of the
 * manager is held here; the callback may call back into the manager, and a thread
 * that finds another one sending leaves the news to it. */
void policy_deliver(struct manager *m)
{
    struct policy *p = &m->policy;
    note(m);
    for (;;) {
        int state = atomic_load_explicit(&p->state, memory_order_acquire);
        if (state == atomic_load_explicit(&p->delivered, memory_order_relaxed))
            return;
        if (atomic_exchange_explicit(&p->delivering, 1, memory_order_acquire))
            return; /* the sender will see the new state when it looks again */
        p->deliverer = pthread_self();
        for (;;) {
            state = atomic_load_explicit(&p->state, memory_order_acquire);
            if (state == atomic_load_explicit(&p->delivered, memory_order_relaxed))
                break;
            ICLRMemoryNotificationCallback *cb = NULL;
            if (lock_enter(m, p->callback_lock) != S_OK) {
                /* cannot look at the callback now: a later call will send it */
                atomic_store_explicit(&p->delivering, 0, memory_order_release);
                return;
            }
            cb = p->callback;
            if (cb)
                cb->lpVtbl->AddRef(cb);
            lock_leave(m, p->callback_lock);
            atomic_store_explicit(&p->delivered, state, memory_order_relaxed);
            if (cb) {
                atomic_fetch_add_explicit(&p->notifications[state], 1, memory_order_relaxed);
                cb->lpVtbl->OnMemoryNotification(cb, (EMemoryAvailable)state);
                cb->lpVtbl->Release(cb);
            }
        }
        atomic_store_explicit(&p->delivering, 0, memory_order_release);
    }
}

/* ---- the budget ------------------------------------------------------------------------ */
bool policy_try_charge(struct manager *m, size_t bytes, EMemoryCriticalLevel level)
{
    struct policy *p = &m->policy;
    size_t limit = atomic_load_explicit(&p->limit, memory_order_relaxed);
    size_t now = atomic_load_explicit(&m->committed_bytes, memory_order_relaxed), next;
    do {
        next = now + bytes;
        if (next < now)
            return false;
        if (limit) {
            size_t allowed = limit;
            if (level == eProcessCritical)
                allowed = allowed + p->emergency < allowed ? SIZE_MAX : allowed + p->emergency;
            if (next > allowed)
                return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&m->committed_bytes, &now, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    size_t peak = atomic_load_explicit(&m->peak_committed, memory_order_relaxed);
    while (next > peak && !atomic_compare_exchange_weak_explicit(&m->peak_committed, &peak, next,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed))
        ;
    return true;
}

/* The one place a budget refusal is made: count it, return E_OUTOFMEMORY. */
HRESULT policy_refuse(struct manager *m, EMemoryCriticalLevel level)
{
    unsigned i = (unsigned)level <= eProcessCritical ? (unsigned)level : eTaskCritical;
    atomic_fetch_add_explicit(&m->policy.refusals[i], 1, memory_order_relaxed);
    return E_OUTOFMEMORY;
}

HRESULT policy_charge(struct manager *m, size_t bytes, EMemoryCriticalLevel level)
{
    struct policy *p = &m->policy;
    if (policy_try_charge(m, bytes, level))
        return S_OK;
    if (level != eAppDomainCritical)
        return policy_refuse(m, level);
    /* Tell the runtime memory is low (it may free some): the state is Low from
     * now until memory is given back (load_percent), so the notice survives
     * policy_deliver's look at the load. Then wait a bounded time - or not at
     * all with HOSTMEM_NO_WAIT - for someone to give memory back. */
    bool wait = p->appdomain_wait_ms != HOSTMEM_NO_WAIT;
    long deadline = now_ns() + (wait ? (long)p->appdomain_wait_ms * 1000000L : 0);
    atomic_store_explicit(&p->pressure, 1, memory_order_release);
    /* Counted as a waiter before each look at the budget: policy_uncharge takes
     * its bytes back, then looks for waiters (both sequentially consistent), so
     * either this look sees the bytes or the uncharge sees the waiter and bumps
     * freed, and the futex wait below does not sleep through it. */
    atomic_fetch_add(&p->waiters, 1);
    HRESULT hr;
    for (;;) {
        policy_deliver(m);
        uint32_t seen = atomic_load_explicit(&p->freed, memory_order_acquire);
        atomic_thread_fence(memory_order_seq_cst); /* the waiter count, then the budget */
        if (policy_try_charge(m, bytes, level)) {
            hr = S_OK;
            break;
        }
        if (manager_check(m) != S_OK) {
            hr = HOST_E_CLRNOTAVAILABLE;
            break;
        }
        long left = deadline - now_ns();
        if (!wait || left <= 0) {
            hr = policy_refuse(m, level);
            break;
        }
        futex_wait(&p->freed, seen, left);
    }
    atomic_fetch_sub(&p->waiters, 1);
    return hr;
}

void policy_uncharge(struct manager *m, size_t bytes)
{
    struct policy *p = &m->policy;
    if (!bytes)
        return;
    atomic_fetch_sub(&m->committed_bytes, bytes); /* before the look at waiters: policy_charge */
    if (atomic_load_explicit(&p->pressure, memory_order_relaxed))
        atomic_store_explicit(&p->pressure, 0, memory_order_relaxed); /* the state follows the load again */
    /* freed is bumped only for waiters: without them, an uncharge writes no
     * line but the budget's */
    if (atomic_load(&p->waiters)) {
        atomic_fetch_add_explicit(&p->freed, 1, memory_order_release);
        futex_wake_all(&p->freed);
    }
}

/* The address-space limit covers host reservations and the runtime's own mappings. */
bool policy_try_reserve(struct manager *m, size_t bytes)
{
    struct policy *p = &m->policy;
    size_t now = atomic_load_explicit(&m->reserved_bytes, memory_order_relaxed), next;
    do {
        next = now + bytes;
        if (next < now)
            return false;
        if (p->address_space_limit &&
            next + atomic_load_explicit(&p->external_bytes, memory_order_relaxed) >
                p->address_space_limit)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(&m->reserved_bytes, &now, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    return true;
}

void policy_unreserve(struct manager *m, size_t bytes)
{
    atomic_fetch_sub_explicit(&m->reserved_bytes, bytes, memory_order_relaxed);
}

/* ---- the machine ---------------------------------------------------------------------- */
static int read_rooted(const struct policy *p, const char *path, char *buffer, size_t size)
{
    char full[512];
    snprintf(full, sizeof full, "%s%s", p->root, path);
    size_t length;
    return os_read_file(full, buffer, size, &length);
}

static int meminfo_field(const char *text, const char *name, size_t *bytes)
{
    const char *at = strstr(text, name);
    if (!at)
        return 0;
    at += strlen(name);
    while (*at == ' ' || *at == ':')
        at++;
    unsigned long long kib = strtoull(at, NULL, 10);
    *bytes = (size_t)kib * 1024;
    return 1;
}

/* The machine's memory from /proc/meminfo; an unreadable file is a refusal. */
static HRESULT system_memory(struct manager *m, size_t *total, size_t *available)
{
    char text[4096];
    int err = read_rooted(&m->policy, "/proc/meminfo", text, sizeof text);
    if (err)
        return os_refused(m, err, "reading /proc/meminfo");
    if (!meminfo_field(text, "MemTotal", total) || !*total)
        return E_OUTOFMEMORY; /* unreadable figures: nothing to say */
    if (!meminfo_field(text, "MemAvailable", available) &&
        !meminfo_field(text, "MemFree", available))
        return E_OUTOFMEMORY; /* unreadable figures: nothing to say */
    if (*available > *total)
        *available = *total;
    return S_OK;
}

/* Percent of the machine in use, raised to the memory pressure (PSI "some avg10")
 * when the kernel reports stalls. */
static int system_load(struct manager *m)
{
    const struct policy *p = &m->policy;
    size_t total, available;
    if (system_memory(m, &total, &available) != S_OK)
        return -1;
    int load = percent_of(total - available, total);
    char text[512];
    if (read_rooted(p, "/proc/pressure/memory", text, sizeof text) == 0) {
        const char *at = strstr(text, "some avg10=");
        if (at) {
            double stall = strtod(at + 11, NULL); /* percent of time stalled */
            if (stall >= 10.0 && load < (int)p->low)
                load = (int)p->low; /* stalling on memory: treat as Low */
        }
    }
    return load;
}

void policy_set_limit(struct manager *m, size_t bytes)
{
    atomic_store(&m->policy.limit, bytes);
    atomic_store(&m->policy.pressure, 0);
    atomic_fetch_add(&m->policy.freed, 1); /* waiting requests look again */
    futex_wake_all(&m->policy.freed);
    policy_deliver(m);
}

HRESULT policy_poll_system(struct manager *m)
{
    int load = system_load(m);
    if (load < 0)
        return E_OUTOFMEMORY; /* nothing to read: nothing changes */
    atomic_store_explicit(&m->policy.machine_load, load, memory_order_relaxed);
    policy_deliver(m);
    return S_OK;
}

static void *monitor_main(void *arg)
{
    struct manager *m = arg;
    struct policy *p = &m->policy;
    while (!atomic_load(&p->monitor_stop)) {
        policy_poll_system(m);
        futex_wait(&p->monitor_stop, 0, (long)p->monitor_interval_ms * 1000000L);
    }
    return NULL;
}

HRESULT policy_memory_load(struct manager *m, DWORD *load, SIZE_T *available)
{
    struct policy *p = &m->policy;
    if (!load || !available)
        return E_POINTER;
    size_t limit = atomic_load_explicit(&p->limit, memory_order_relaxed);
    if (limit) {
        size_t committed = atomic_load_explicit(&m->committed_bytes, memory_order_relaxed);
        *load = (DWORD)percent_of(committed, limit);
        *available = committed >= limit ? 0 : limit - committed;
        return S_OK;
    }
    size_t total, free_bytes;
    HRESULT hr = system_memory(m, &total, &free_bytes);
    if (hr != S_OK)
        return hr; /* nothing to say, nothing changed */
    *load = (DWORD)percent_of(total - free_bytes, total);
    *available = free_bytes;
    return S_OK;
}

/* ---- cgroups ------------------------------------------------------------------------------ */
static size_t parse_limit(const char *text)
{
    while (*text == ' ' || *text == '\n')
        text++;
    if (strncmp(text, "max", 3) == 0 || !*text)
        return 0;
    unsigned long long v = strtoull(text, NULL, 10);
    /* cgroup v1 says "no limit" with a huge page-rounded number */
    if (v >= ((unsigned long long)1 << 62))
        return 0;
    return (size_t)v;
}

/* The smallest limit on the path from the process's cgroup up to the root. */
static size_t walk_up(const char *root, const char *mount, const char *group, const char *file)
{
    char path[512], text[128];
    char dir[256];
    snprintf(dir, sizeof dir, "%s", group);
    size_t best = 0;
    for (;;) {
        snprintf(path, sizeof path, "%s%s%s/%s", root, mount, strcmp(dir, "/") ? dir : "", file);
        size_t length;
        if (os_read_file(path, text, sizeof text, &length) == 0) {
            size_t v = parse_limit(text);
            if (v && (!best || v < best))
                best = v;
        }
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir) {
            if (strcmp(dir, "/") == 0)
                break;
            strcpy(dir, "/");
            continue;
        }
        *slash = 0;
    }
    return best;
}

/* The cgroup memory limit the process runs under (0 = none), read below root. */
static size_t policy_cgroup_limit(const char *root)
{
    char path[512], text[2048];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    size_t length;
    if (os_read_file(path, text, sizeof text, &length))
        return 0;
    size_t best = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        /* "hierarchy:controllers:path" */
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = 0;
        *c2 = 0;
        const char *controllers = c1 + 1, *group = c2 + 1;
        size_t v = 0;
        if (strcmp(line, "0") == 0 && *controllers == 0)
            v = walk_up(root, "/sys/fs/cgroup", group, "memory.max");
        else if (strstr(controllers, "memory"))
            v = walk_up(root, "/sys/fs/cgroup/memory", group, "memory.limit_in_bytes");
        if (v && (!best || v < best))
            best = v;
    }
    return best;
}

/* ---- the runtime's own address space ----------------------------------------------------- */
HRESULT policy_acquired_space(struct manager *m, uintptr_t start, size_t size)
{
    struct policy *p = &m->policy;
    if (!start || !size || start + size < start)
        return E_INVALIDARG;
    HRESULT hr = lock_enter(m, p->external_lock);
    if (hr != S_OK)
        return hr;
    for (size_t i = 0; i < p->range_count; i++) {
        const struct external_range *r = &p->ranges[i];
        if (start < r->start + r->size && r->start < start + size) {
            lock_leave(m, p->external_lock);
            return E_INVALIDARG; /* reported twice */
        }
    }
    if (p->range_count == p->range_capacity) {
        size_t capacity = p->range_capacity ? p->range_capacity * 2 : 256;
        void *grown;
        int err = pages_alloc(m, capacity * sizeof *p->ranges, &grown);
        if (err) {
            lock_leave(m, p->external_lock);
            return os_refused(m, err, "mmap of the runtime's range list");
        }
        if (p->range_count)
            memcpy(grown, p->ranges, p->range_count * sizeof *p->ranges);
        pages_free(m, p->ranges, p->range_capacity * sizeof *p->ranges);
        p->ranges = grown;
        p->range_capacity = capacity;
    }
    p->ranges[p->range_count++] = (struct external_range){start, size};
    atomic_fetch_add(&p->external_bytes, size);
    atomic_fetch_add(&p->external_ranges, 1);
    return lock_leave(m, p->external_lock);
}

HRESULT policy_released_space(struct manager *m, uintptr_t start)
{
    struct policy *p = &m->policy;
    HRESULT hr = lock_enter(m, p->external_lock);
    if (hr != S_OK)
        return hr;
    for (size_t i = 0; i < p->range_count; i++) {
        if (p->ranges[i].start == start) {
            atomic_fetch_sub(&p->external_bytes, p->ranges[i].size);
            atomic_fetch_sub(&p->external_ranges, 1);
            p->ranges[i] = p->ranges[--p->range_count];
            return lock_leave(m, p->external_lock);
        }
    }
    lock_leave(m, p->external_lock);
    return HOST_E_INVALIDOPERATION; /* never reported as acquired */
}

HRESULT policy_needs_space(struct manager *m, uintptr_t start, size_t size)
{
    struct policy *p = &m->policy;
    if (!size)
        return E_INVALIDARG;
    (void)start;
    /* Give back the address space the manager caches: arenas no reservation uses. */
    arena_trim(m);
    if (p->address_space_limit) {
        size_t used = atomic_load(&m->reserved_bytes) + atomic_load(&p->external_bytes);
        if (used + size < used || used + size > p->address_space_limit)
            return E_OUTOFMEMORY;
    }
    return S_OK;
}

/* ---- registration, set-up, tear-down ---------------------------------------------------------- */
HRESULT policy_register(struct manager *m, ICLRMemoryNotificationCallback *callback)
{
    struct policy *p = &m->policy;
    HRESULT hr = lock_enter(m, p->callback_lock);
    if (hr != S_OK)
        return hr;
    if (callback)
        callback->lpVtbl->AddRef(callback);
    ICLRMemoryNotificationCallback *old = p->callback;
    p->callback = callback;
    /* A new runtime has been told nothing: it assumes memory is plentiful, and
     * hears at once if it is not - unless it registers from inside a
     * notification: then it is being told the current state right now, and a
     * callback that registers again on every notice must not be told forever
     * (one notification per transition, whatever the callback calls). */
    bool inside = atomic_load_explicit(&p->delivering, memory_order_acquire) &&
                  pthread_equal(p->deliverer, pthread_self());
    if (!inside)
        atomic_store(&p->delivered, eMemoryAvailableHigh);
    hr = lock_leave(m, p->callback_lock);
    if (old)
        old->lpVtbl->Release(old); /* outside the lock: it may call back */
    if (hr == S_OK)
        policy_deliver(m);
    return hr;
}

/* A watermark as configured, or its default (0). */
static unsigned watermark(uint32_t configured, unsigned fallback)
{
    return configured ? configured : fallback;
}

/* Can a file of the policy's be read below root? */
static bool root_readable(const char *root, const char *path)
{
    char full[512], text[64];
    size_t length;
    snprintf(full, sizeof full, "%s%s", root, path);
    return os_read_file(full, text, sizeof text, &length) == 0;
}

const char *policy_config_problem(const hostmem_config *c)
{
    unsigned low = watermark(c->notify_low_load, DEFAULT_LOW_LOAD);
    if (low > 100)
        return "notify_low_load: a percentage, at most 100";
    if (watermark(c->notify_high_load, DEFAULT_HIGH_LOAD) >= low)
        return "notify_high_load: must be below notify_low_load (defaults 60 and 90)";
    if (watermark(c->notify_hysteresis, DEFAULT_HYSTERESIS) > low)
        return "notify_hysteresis: larger than notify_low_load";
    const char *root = c->system_root;
    if (root && strcmp(root, "/") && strcmp(root, "") && !root_readable(root, "/proc/meminfo") &&
        !root_readable(root, "/proc/self/cgroup"))
        return "system_root: neither proc/meminfo nor proc/self/cgroup can be read below it";
    if (c->dynamic_code > HOSTMEM_CODE_NONE)
        return "dynamic_code: HOSTMEM_CODE_ANY, HOSTMEM_CODE_WX or HOSTMEM_CODE_NONE";
    return NULL;
}

HRESULT policy_init(struct manager *m, const hostmem_config *c)
{
    struct policy *p = &m->policy;
    snprintf(p->root, sizeof p->root, "%s", c->system_root ? c->system_root : "");
    if (strcmp(p->root, "/") == 0)
        p->root[0] = 0;
    if (c->commit_limit == HOSTMEM_UNLIMITED)
        atomic_init(&p->limit, 0);
    else if (c->commit_limit)
        atomic_init(&p->limit, c->commit_limit);
    else
        atomic_init(&p->limit, policy_cgroup_limit(p->root));
    p->emergency = c->emergency_reserve;
    p->appdomain_wait_ms = c->appdomain_wait_ms ? c->appdomain_wait_ms : DEFAULT_APPDOMAIN_WAIT_MS;
    p->low = watermark(c->notify_low_load, DEFAULT_LOW_LOAD);
    p->high = watermark(c->notify_high_load, DEFAULT_HIGH_LOAD);
    p->hysteresis = watermark(c->notify_hysteresis, DEFAULT_HYSTERESIS);
    hm_assert(!policy_config_problem(c)); /* hostmem_create refused it before */
    p->address_space_limit = c->address_space_limit;
    atomic_init(&p->dynamic_code, c->dynamic_code);
    atomic_init(&p->machine_load, -1);
    atomic_init(&p->state, eMemoryAvailableHigh);
    atomic_init(&p->delivered, eMemoryAvailableHigh);
    HRESULT hr = lock_create(m, &p->callback_lock);
    if (hr != S_OK)
        return hr;
    hr = lock_create(m, &p->external_lock);
    if (hr != S_OK) {
        lock_destroy(m, p->callback_lock);
        p->callback_lock = NULL;
        return hr;
    }
    p->monitor_interval_ms = c->monitor_interval_ms;
    if (p->monitor_interval_ms) {
        pthread_t t;
        if (pthread_create(&t, NULL, monitor_main, m) != 0)
            return E_OUTOFMEMORY;
        p->monitor_thread = (uintptr_t)t;
        p->monitor_running = true;
    }
    return S_OK;
}

/* ---- what may execute ---------------------------------------------------------- */

/*
 * The dynamic-code policy (docs/security.md). W^X refuses a protection that is
 * writable and executable at once; "no dynamic code", as Windows' Arbitrary
 * Code Guard, every executable one. The policy only ever tightens: a runtime
 * that could loosen it could undo the host's decision.
 */
HRESULT policy_code_refusal(struct manager *m, DWORD protect)
{
    struct policy *p = &m->policy;
    uint32_t policy = atomic_load_explicit(&p->dynamic_code, memory_order_relaxed);
    bool refused = policy == HOSTMEM_CODE_NONE ||
                   (policy == HOSTMEM_CODE_WX && (protect & (PAGE_EXECUTE_READWRITE | PAGE_EXECUTE_WRITECOPY)));
    if (!refused)
        return S_OK;
    atomic_fetch_add_explicit(&p->code_refusals, 1, memory_order_relaxed);
    return HOSTMEM_E_DYNAMIC_CODE_BLOCKED;
}

HRESULT policy_restrict_code(struct manager *m, uint32_t policy)
{
    if (policy > HOSTMEM_CODE_NONE)
        return E_INVALIDARG;
    struct policy *p = &m->policy;
    uint32_t now = atomic_load_explicit(&p->dynamic_code, memory_order_relaxed);
    do {
        if (policy < now)
            return E_ACCESSDENIED;
        if (policy == now)
            return S_OK;
    } while (!atomic_compare_exchange_weak_explicit(&p->dynamic_code, &now, policy, memory_order_relaxed,
                                                    memory_order_relaxed));
    return S_OK;
}

void policy_stop_monitor(struct manager *m)
{
    struct policy *p = &m->policy;
    if (p->monitor_running) {
        atomic_store(&p->monitor_stop, 1);
        futex_wake_all(&p->monitor_stop);
        pthread_join((pthread_t)p->monitor_thread, NULL);
        p->monitor_running = false;
    }
}

void policy_fini(struct manager *m)
{
    struct policy *p = &m->policy;
    atomic_fetch_add(&p->freed, 1); /* waiting requests look again and see the shutdown */
    futex_wake_all(&p->freed);
    policy_stop_monitor(m);
    ICLRMemoryNotificationCallback *cb = p->callback;
    p->callback = NULL;
    if (cb)
        cb->lpVtbl->Release(cb);
    pages_free(m, p->ranges, p->range_capacity * sizeof *p->ranges);
    p->ranges = NULL;
    p->range_count = p->range_capacity = 0;
    if (p->callback_lock)
        lock_destroy(m, p->callback_lock);
    if (p->external_lock)
        lock_destroy(m, p->external_lock);
    p->callback_lock = p->external_lock = NULL;
}

void policy_after_fork(struct manager *m)
{
    struct policy *p = &m->policy;
    /* a thread that was sending or waiting is not in the child */
    atomic_store(&p->delivering, 0);
    atomic_store(&p->waiters, 0);
    /* nor is the monitor: hostmem_poll_system still samples on demand */
    p->monitor_running = false;
}
