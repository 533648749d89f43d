/*
 * embed_lua.c - issue 4, item 3: Lua 5.4 embedded over an IHostMalloc heap
 * (SPEC §7: CreateMalloc, the budget, notifications).
 *
 * The host creates the state with lua_newstate and an allocator function over a
 * MALLOC_THREADSAFE heap from the manager (realloc semantics: nsize 0 -> Free; else
 * Alloc the new block, copy min(osize, nsize) when there was an old one, Free it;
 * a failed Alloc -> NULL, except that a shrink may keep the old block). Every block
 * is asked for at eTaskCritical: under a budget it is refused at once, and Lua turns
 * that into its "not enough memory" error.
 */
#define COBJMACROS
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ---- the host's allocator ------------------------------------------------------------- */

struct host {
    IHostMemoryManager *m;
    IHostMalloc *heap;
    size_t live;          /* bytes Lua holds, by its own osize/nsize accounting */
    size_t allocs, frees, failures, failed_shrinks;
    size_t allocated_total; /* bytes of every successful Alloc */
    int in_alloc;         /* inside a heap call (the notification may come from there) */
    HRESULT last_failure;
};

static void *host_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct host *h = ud;
    size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
    if (nsize == 0) {
        if (ptr) {
            h->in_alloc = 1;
            HRESULT hr = IHostMalloc_Free(h->heap, ptr);
            h->in_alloc = 0;
            if (hr != S_OK) {
                h->last_failure = hr;
                h->failures++;
            }
            h->frees++;
            h->live -= old;
        }
        return NULL;
    }
    void *block = NULL;
    h->in_alloc = 1;
    HRESULT hr = IHostMalloc_Alloc(h->heap, nsize, eTaskCritical, &block);
    h->in_alloc = 0;
    if (hr != S_OK || block == NULL) {
        if (ptr && nsize <= osize) {
            /* a shrink that cannot move keeps the block it has (realloc may do that) */
            h->failed_shrinks++;
            h->live -= osize - nsize;
            return ptr;
        }
        h->failures++;
        h->last_failure = hr;
        return NULL;
    }
    h->allocs++;
    h->allocated_total += nsize;
    if (ptr) {
        memcpy(block, ptr, osize < nsize ? osize : nsize);
        h->in_alloc = 1;
        HRESULT fr = IHostMalloc_Free(h->heap, ptr);
        h->in_alloc = 0;
        if (fr != S_OK) {
            h->last_failure = fr;
            h->failures++;
        }
        h->frees++;
    }
    h->live += nsize - old;
    return block;
}

static int host_panic(lua_State *L)
{
    fprintf(stderr, "embed_lua: Lua panic: %s\n", lua_tostring(L, -1));
    abort();
}

/* ---- the runtime side of notifications: a callback that only sets a flag ---------------- */

struct watcher {
    ICLRMemoryNotificationCallback iface;
    atomic_int references;
    atomic_int low_pending; /* set by the callback, cleared by the host at a safe point */
    atomic_int calls[4];
    atomic_int calls_inside_alloc;
    struct host *host;
};

static HRESULT STDMETHODCALLTYPE w_query(ICLRMemoryNotificationCallback *self, REFIID riid, void **ppv)
{
    if (!memcmp(riid, &IID_IUnknown, sizeof(IID)) ||
        !memcmp(riid, &IID_ICLRMemoryNotificationCallback, sizeof(IID))) {
        *ppv = self;
        self->lpVtbl->AddRef(self);
        return S_OK;
    }
    *ppv = NULL;
    return E_NOINTERFACE;
}
static ULONG STDMETHODCALLTYPE w_add_ref(ICLRMemoryNotificationCallback *self)
{
    return (ULONG)atomic_fetch_add(&((struct watcher *)self)->references, 1) + 1;
}
static ULONG STDMETHODCALLTYPE w_release(ICLRMemoryNotificationCallback *self)
{
    return (ULONG)atomic_fetch_sub(&((struct watcher *)self)->references, 1) - 1;
}
/* Called by hostmem, perhaps from inside an allocation Lua is making: touching the
 * Lua state here would re-enter it. Only note what happened. */
static HRESULT STDMETHODCALLTYPE w_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable state)
{
    struct watcher *w = (struct watcher *)self;
    if (state >= eMemoryAvailableLow && state <= eMemoryAvailableHigh)
        atomic_fetch_add(&w->calls[state], 1);
    if (w->host && w->host->in_alloc)
        atomic_fetch_add(&w->calls_inside_alloc, 1);
    if (state == eMemoryAvailableLow)
        atomic_store(&w->low_pending, 1);
    return S_OK;
}
static const ICLRMemoryNotificationCallbackVtbl watcher_vtbl = {w_query, w_add_ref, w_release, w_notify};

/* ---- helpers ---------------------------------------------------------------------------- */

static size_t lua_bytes(lua_State *L)
{
    return (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
}

/* Manager with the given budget, a thread-safe heap, a Lua state with its libraries. */
static lua_State *open_state(struct host *h, size_t commit_limit)
{
    memset(h, 0, sizeof *h);
    hostmem_config c = {sizeof c};
    c.commit_limit = commit_limit;
    if (hostmem_create(&c, &h->m) != S_OK)
        return NULL;
    HRESULT hr = IHostMemoryManager_CreateMalloc(h->m, MALLOC_THREADSAFE, &h->heap);
    if (hr != S_OK) {
        char b[16];
        fprintf(stderr, "  CreateMalloc(MALLOC_THREADSAFE) -> %s\n", test_hr_name(hr, b, sizeof b));
        IHostMemoryManager_Release(h->m);
        h->m = NULL;
        return NULL;
    }
    lua_State *L = lua_newstate(host_alloc, h);
    if (!L)
        return NULL;
    lua_atpanic(L, host_panic);
    luaL_openlibs(L);
    return L;
}

/* lua_close, then the heap's Release, then the manager's. Lua must have freed every
 * block it allocated; once the heap is gone the manager holds no page and no
 * reservation (the heap may cache empty spans until then), and the region map agrees
 * with the kernel. */
static void close_state(struct host *h, lua_State *L)
{
    if (L)
        lua_close(L);
    CHECK_EQ(h->live, 0);
    CHECK_EQ(h->allocs, h->frees);
    if (h->heap)
        CHECK_EQ(IHostMalloc_Release(h->heap), 0);
    if (h->m) {
        hostmem_stats s = stats_of(h->m);
        CHECK_EQ(s.heap_bytes, 0);
        CHECK_EQ(s.committed_bytes, 0);
        CHECK_EQ(s.reservations, 0);
        char why[256] = "";
        HRESULT hr = hostmem_validate(h->m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
        if (hr != S_OK)
            fprintf(stderr, "  validate: %s\n", why);
        CHECK_HR(hr, S_OK);
        CHECK_EQ(IHostMemoryManager_Release(h->m), 0);
    }
}

static int run(lua_State *L, const char *code, const char *name)
{
    int status = luaL_loadbuffer(L, code, strlen(code), name);
    if (status == LUA_OK)
        status = lua_pcall(L, 0, 1, 0);
    return status;
}

/* ---- tests ------------------------------------------------------------------------------ */

/* §7 budget through a real runtime: a script that keeps growing a table under a budget of
 * a few MiB gets Lua's "not enough memory" error through lua_pcall; the host survives;
 * the same state still runs code (at the limit, and afterwards); dropping the table and
 * collecting gives the heap's pages back (committed bytes fall well before shutdown). */
TEST(lua_table_growth_hits_budget_state_survives_and_pages_return)
{
    const size_t limit = (size_t)8 << 20;
    struct host h;
    lua_State *L = open_state(&h, limit);
    REQUIRE(L);
    CHECK_EQ(h.live, lua_bytes(L)); /* the allocator sees exactly what Lua counts */

    /* Functions defined before the budget runs out, called after. */
    CHECK_EQ(run(L,
                 "function sum(n) local s = 0 for i = 1, n do s = s + i end return s end\n"
                 "function release() big = nil collectgarbage() collectgarbage() return true end\n"
                 "return true",
                 "=setup"),
             LUA_OK);
    lua_pop(L, 1);
    size_t committed_before = stats_of(h.m).committed_bytes;

    int status = run(L,
                     "big = {}\n"
                     "local t, i = big, 0\n"
                     "while true do i = i + 1; t[i] = string.rep('x', 100) .. i end\n",
                     "=grow");
    hostmem_stats s = stats_of(h.m);
    CHECK_EQ(status, LUA_ERRMEM);
    const char *msg = lua_tostring(L, -1);
    CHECK(msg && strcmp(msg, "not enough memory") == 0);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  grow: status %d \"%s\", committed %zu of %zu, lua %zu bytes, %zu failed allocs\n",
                status, msg ? msg : "(null)", s.committed_bytes, limit, lua_bytes(L), h.failures);
    lua_pop(L, 1);
    CHECK(h.failures > 0);
    CHECK_HR(h.last_failure, E_OUTOFMEMORY);
    CHECK(s.refusals[eTaskCritical] > 0);
    CHECK(s.committed_bytes <= limit);
    CHECK(s.committed_bytes > limit / 2); /* the table really filled the budget */
    size_t committed_full = s.committed_bytes;
    size_t failures_at_limit = h.failures;

    /* The host survived and the state runs code: a function compiled before. */
    lua_getglobal(L, "sum");
    lua_pushinteger(L, 1000);
    CHECK_EQ(lua_pcall(L, 1, 1, 0), LUA_OK);
    CHECK_EQ(lua_tointeger(L, -1), 500500);
    lua_pop(L, 1);
    /* The table is still there, whole up to where it stopped. */
    CHECK_EQ(run(L, "return #big > 10000 and big[1] == string.rep('x', 100) .. 1", "=check"), LUA_OK);
    CHECK(lua_toboolean(L, -1));
    lua_pop(L, 1);

    /* Dropping the table gives the pages back, now, not at lua_close. */
    lua_getglobal(L, "release");
    CHECK_EQ(lua_pcall(L, 0, 1, 0), LUA_OK);
    lua_pop(L, 1);
    s = stats_of(h.m);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  committed: before %zu, full %zu, after release %zu (heap bytes %zu, lua %zu)\n",
                committed_before, committed_full, s.committed_bytes, s.heap_bytes, lua_bytes(L));
    CHECK(s.committed_bytes < committed_full);
    /* at least half of what the table added is given back (the heap may keep spare spans
     * and spans pinned by the few blocks Lua still holds) */
    CHECK(s.committed_bytes <= committed_before + (committed_full - committed_before) / 2);

    /* New code, allocating megabytes again, runs in the same state. */
    CHECK_EQ(run(L,
                 "local t = {} for i = 1, 20000 do t[i] = ('y'):rep(100) .. i end\n"
                 "return #t == 20000 and t[20000] == ('y'):rep(100) .. 20000",
                 "=again"),
             LUA_OK);
    CHECK(lua_toboolean(L, -1));
    lua_pop(L, 1);
    CHECK_EQ(h.failures, failures_at_limit);
    CHECK_EQ(h.live, lua_bytes(L));
    close_state(&h, L);
}

/* §7 notifications through a real runtime: with Lua's collector stopped, garbage piles up
 * until the load crosses the Low watermark; hostmem calls the callback (perhaps from inside
 * one of Lua's allocations), which only sets a flag; at its next safe point the host runs a
 * full Lua GC, and Lua's memory and the committed bytes drop. Repeated, the workload makes
 * many times the budget in garbage without a single refused allocation. */
TEST(lua_low_notification_makes_host_run_full_gc)
{
    const size_t limit = (size_t)16 << 20;
    struct host h;
    lua_State *L = open_state(&h, limit);
    REQUIRE(L);
    struct watcher w;
    memset(&w, 0, sizeof w);
    w.iface.lpVtbl = &watcher_vtbl;
    atomic_init(&w.references, 1);
    w.host = &h;
    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(h.m, &w.iface), S_OK);
    CHECK_EQ(atomic_load(&w.calls[eMemoryAvailableLow]), 0);

    CHECK_EQ(run(L,
                 "function churn() local t = {} for i = 1, 256 do t[i] = ('g'):rep(200) .. i end keep = t end\n"
                 "return true",
                 "=setup"),
             LUA_OK);
    lua_pop(L, 1);
    lua_gc(L, LUA_GCSTOP); /* only the host collects */

    int gcs = 0, errors = 0;
    size_t allocated_at_start = h.allocated_total, garbage_made = 0, iterations = 0;
    size_t lua_dropped = 0, committed_dropped = 0, failures_seen = h.failures;
    for (; iterations < 20000 && gcs < 4; iterations++) {
        lua_getglobal(L, "churn");
        if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
            errors++;
            lua_pop(L, 1);
            break;
        }
        /* the safe point: between calls into Lua */
        if (atomic_exchange(&w.low_pending, 0)) {
            if (h.failures != failures_seen)
                TEST_FAIL_AT("the Low notification came only after %zu refused allocation(s) (Lua's own "
                             "emergency GC already ran): it must come when the load crosses %d%%, "
                             "before the budget refuses",
                             h.failures - failures_seen, 90);
            failures_seen = h.failures;
            size_t lua_before = lua_bytes(L);
            size_t committed_before = stats_of(h.m).committed_bytes;
            lua_gc(L, LUA_GCCOLLECT);
            gcs++;
            size_t lua_after = lua_bytes(L);
            size_t committed_after = stats_of(h.m).committed_bytes;
            if (getenv("TEST_VERBOSE"))
                fprintf(stderr, "  Low at iteration %zu: full GC, lua %zu -> %zu, committed %zu -> %zu\n",
                        iterations, lua_before, lua_after, committed_before, committed_after);
            CHECK(lua_after < lua_before / 4);
            CHECK(committed_after < committed_before);
            lua_dropped += lua_before - lua_after;
            committed_dropped += committed_before > committed_after ? committed_before - committed_after : 0;
        }
    }
    garbage_made = h.allocated_total - allocated_at_start;
    hostmem_stats s = stats_of(h.m);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr,
                "  %zu iterations, %zu bytes allocated, %d host GCs, notifications Low %d Neutral %d "
                "High %d (%d from inside an allocation), peak committed %zu of %zu\n",
                iterations, garbage_made, gcs, atomic_load(&w.calls[eMemoryAvailableLow]),
                atomic_load(&w.calls[eMemoryAvailableNeutral]), atomic_load(&w.calls[eMemoryAvailableHigh]),
                atomic_load(&w.calls_inside_alloc), s.peak_committed_bytes, limit);
    CHECK_EQ(errors, 0);
    CHECK_EQ(gcs, 4);
    CHECK(atomic_load(&w.calls[eMemoryAvailableLow]) >= 4);
    CHECK(s.notifications[eMemoryAvailableLow] >= 4);
    CHECK(lua_dropped > 2 * limit);    /* each GC freed most of the budget's worth */
    CHECK(committed_dropped > limit);
    CHECK(garbage_made > 3 * limit);  /* far more than fits: the GCs made room */
    CHECK_EQ(h.failures, 0);          /* the warning came before any refusal */
    CHECK_EQ(s.refusals[eTaskCritical], 0);
    CHECK(s.peak_committed_bytes <= limit);

    CHECK_HR(IHostMemoryManager_RegisterMemoryNotificationCallback(h.m, NULL), S_OK);
    CHECK_EQ(atomic_load(&w.references), 1);
    close_state(&h, L);
}

int main(void)
{
    RUN(lua_table_growth_hits_budget_state_survives_and_pages_return);
    RUN(lua_low_notification_makes_host_run_full_gc);
    return TEST_SUMMARY("embed_lua");
}
