/*
 * embed_sqlite.c - issue 4, item 3: SQLite embedded over an IHostMalloc heap
 * (SPEC §7: CreateMalloc, the budget).
 *
 * sqlite3_config(SQLITE_CONFIG_MALLOC) is the first SQLite call of the process: every
 * byte SQLite allocates comes from one MALLOC_THREADSAFE heap of one manager (each
 * block carries a 16-byte header with its size, for xSize, and keeps the heap's 16-byte
 * alignment), asked for at eTaskCritical so that the budget refuses at once. The
 * budget is then moved with hostmem_set_commit_limit.
 */
#define COBJMACROS
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* ---- SQLite's allocator over the heap --------------------------------------------------- */

#define HEADER 16

static IHostMemoryManager *g_m;
static IHostMalloc *g_heap;
static struct {
    size_t live_blocks, live_bytes;
    size_t allocs, frees, failures, bad_frees, inits, shutdowns;
    HRESULT last_failure;
} g_a;

static void *mem_malloc(int n)
{
    if (n <= 0)
        return NULL;
    char *p = NULL;
    HRESULT hr = IHostMalloc_Alloc(g_heap, (size_t)n + HEADER, eTaskCritical, (void **)&p);
    if (hr != S_OK || !p) {
        g_a.failures++;
        g_a.last_failure = hr;
        return NULL;
    }
    memcpy(p, &(size_t){(size_t)n}, sizeof(size_t));
    g_a.allocs++;
    g_a.live_blocks++;
    g_a.live_bytes += (size_t)n;
    return p + HEADER;
}

static int mem_size(void *p)
{
    if (!p)
        return 0;
    size_t n;
    memcpy(&n, (char *)p - HEADER, sizeof n);
    return (int)n;
}

static void mem_free(void *p)
{
    if (!p)
        return;
    size_t n = (size_t)mem_size(p);
    if (IHostMalloc_Free(g_heap, (char *)p - HEADER) != S_OK) {
        g_a.bad_frees++;
        return;
    }
    g_a.frees++;
    g_a.live_blocks--;
    g_a.live_bytes -= n;
}

static void *mem_realloc(void *p, int n)
{
    if (!p)
        return mem_malloc(n);
    int old = mem_size(p);
    void *q = mem_malloc(n);
    if (!q)
        return old >= n ? p : NULL; /* a shrink that cannot move keeps its block */
    memcpy(q, p, (size_t)(old < n ? old : n));
    mem_free(p);
    return q;
}

static int mem_roundup(int n) { return (n + 7) & ~7; }
static int mem_init(void *app) { (void)app; g_a.inits++; return SQLITE_OK; }
static void mem_shutdown(void *app) { (void)app; g_a.shutdowns++; }

static const sqlite3_mem_methods host_methods = {
    mem_malloc, mem_free, mem_realloc, mem_size, mem_roundup, mem_init, mem_shutdown, NULL,
};

/* ---- helpers ----------------------------------------------------------------------------- */

static hostmem_stats host_stats(void)
{
    return stats_of(g_m);
}

/* The payload of row id: deterministic, 40 to 1000 bytes, so any loss or damage shows. */
static size_t payload(sqlite3_int64 id, char *out)
{
    size_t len = 40 + (size_t)(id * 7919 % 961);
    for (size_t i = 0; i < len; i++)
        out[i] = (char)('a' + (id + (sqlite3_int64)i) % 26);
    out[len] = 0;
    return len;
}

static int exec(sqlite3 *db, const char *sql) { return sqlite3_exec(db, sql, NULL, NULL, NULL); }

/* Inserts rows first, first+1, ... one autocommit statement each until one fails;
 * returns the step's result code of the failure (or SQLITE_DONE after max rows). */
static int insert_until_failure(sqlite3_stmt *ins, sqlite3_int64 first, size_t max,
                                sqlite3_int64 *last_ok)
{
    static char buf[1024];
    *last_ok = first - 1;
    for (size_t k = 0; k < max; k++) {
        sqlite3_int64 id = first + (sqlite3_int64)k;
        size_t len = payload(id, buf);
        sqlite3_bind_int64(ins, 1, id);
        sqlite3_bind_text(ins, 2, buf, (int)len, SQLITE_TRANSIENT);
        int rc = sqlite3_step(ins);
        sqlite3_reset(ins);
        sqlite3_clear_bindings(ins);
        if (rc != SQLITE_DONE)
            return rc;
        *last_ok = id;
    }
    return SQLITE_DONE;
}

/* Every row 1..n is present exactly once with its payload, and nothing else. */
static int rows_intact(sqlite3 *db, sqlite3_int64 n)
{
    static char buf[1024];
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id, payload FROM t ORDER BY id", -1, &q, NULL) != SQLITE_OK)
        return 0;
    sqlite3_int64 expect = 1;
    int ok = 1, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        sqlite3_int64 id = sqlite3_column_int64(q, 0);
        const unsigned char *text = sqlite3_column_text(q, 1);
        size_t len = payload(id, buf);
        if (id != expect || !text || (size_t)sqlite3_column_bytes(q, 1) != len || memcmp(text, buf, len)) {
            ok = 0;
            break;
        }
        expect++;
    }
    if (rc != SQLITE_DONE && ok)
        ok = 0;
    sqlite3_finalize(q);
    return ok && expect == n + 1;
}

static int integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(q) == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text(q, 0);
        ok = text && strcmp((const char *)text, "ok") == 0;
        if (!ok)
            fprintf(stderr, "  integrity_check: %s\n", text ? (const char *)text : "(null)");
    }
    sqlite3_finalize(q);
    return ok;
}

static sqlite3_int64 count_rows(sqlite3 *db)
{
    sqlite3_stmt *q = NULL;
    sqlite3_int64 n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
        n = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    return n;
}

/* ---- tests ----------------------------------------------------------------------------- */

/* The allocator is SQLite's: sqlite3_initialize called xInit, and what SQLite allocates
 * is what the heap holds (SQLite's own count equals ours; the heap's bytes cover it). */
TEST(sqlite_allocates_through_the_heap)
{
    CHECK_EQ(g_a.inits, 1);
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK_EQ(exec(db, "CREATE TABLE probe(x); INSERT INTO probe VALUES (randomblob(100000));"), SQLITE_OK);
    hostmem_stats s = host_stats();
    CHECK((sqlite3_int64)g_a.live_bytes == sqlite3_memory_used());
    CHECK(g_a.live_bytes > 100000);
    CHECK(s.heap_bytes >= g_a.live_bytes + g_a.live_blocks * HEADER);
    CHECK(s.committed_bytes >= s.heap_bytes);
    CHECK_EQ(sqlite3_close(db), SQLITE_OK);
    CHECK_EQ(g_a.bad_frees, 0);
}

/* §7 budget through a real database: under a tight budget, inserts into an in-memory
 * database fail with SQLITE_NOMEM, cleanly (the failed statement changes nothing, the
 * connection stays open); after the budget is raised the same connection and the same
 * prepared statement work again, PRAGMA integrity_check says ok, and every row inserted
 * before the failure is there, intact. */
TEST(sqlite_nomem_under_budget_then_same_connection_recovers_nothing_lost)
{
    size_t committed_closed = host_stats().committed_bytes;
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK_EQ(exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"), SQLITE_OK);
    sqlite3_stmt *ins = NULL;
    REQUIRE(sqlite3_prepare_v2(db, "INSERT INTO t(id, payload) VALUES (?1, ?2)", -1, &ins, NULL) == SQLITE_OK);

    const size_t budget = (size_t)4 << 20;
    hostmem_stats s = host_stats();
    size_t limit = s.committed_bytes + budget;
    CHECK_HR(hostmem_set_commit_limit(g_m, limit), S_OK);
    size_t failures_before = g_a.failures;

    sqlite3_int64 last = 0;
    int rc = insert_until_failure(ins, 1, 1000000, &last);
    s = host_stats();
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  %lld rows in, then rc %d (%s); committed %zu of limit %zu; sqlite uses %lld\n",
                (long long)last, rc, sqlite3_errstr(rc), s.committed_bytes, limit,
                (long long)sqlite3_memory_used());
    CHECK_EQ(rc, SQLITE_NOMEM);
    CHECK_EQ(sqlite3_errcode(db), SQLITE_NOMEM);
    CHECK(last > 1000); /* the budget held thousands of rows first */
    CHECK(g_a.failures > failures_before);
    CHECK_HR(g_a.last_failure, E_OUTOFMEMORY);
    CHECK(s.committed_bytes <= limit);
    CHECK(s.refusals[eTaskCritical] > 0);

    /* Still at the limit: more inserts fail the same clean way, or succeed; nothing breaks. */
    sqlite3_int64 more = last;
    for (int i = 0; i < 20; i++) {
        sqlite3_int64 got;
        int r = insert_until_failure(ins, more + 1, 1, &got);
        CHECK(r == SQLITE_NOMEM || r == SQLITE_DONE);
        more = got;
    }

    /* Raise the budget: the same connection works. */
    CHECK_HR(hostmem_set_commit_limit(g_m, HOSTMEM_UNLIMITED), S_OK);
    CHECK(integrity_ok(db));
    CHECK_EQ(count_rows(db), more);
    CHECK(rows_intact(db, more));
    /* the same statement inserts again, far past the old limit */
    sqlite3_int64 after = 0;
    CHECK_EQ(insert_until_failure(ins, more + 1, 20000, &after), SQLITE_DONE);
    CHECK_EQ(after, more + 20000);
    CHECK(integrity_ok(db));
    CHECK(rows_intact(db, after));
    s = host_stats();
    CHECK(s.committed_bytes > limit);
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  after raising: %lld rows, committed %zu\n", (long long)after, s.committed_bytes);

    /* Closing the connection gives the database's pages back. */
    size_t committed_open = s.committed_bytes;
    CHECK_EQ(sqlite3_finalize(ins), SQLITE_OK);
    CHECK_EQ(sqlite3_close(db), SQLITE_OK);
    s = host_stats();
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  closed: committed %zu -> %zu (%zu before the open), heap bytes %zu\n",
                committed_open, s.committed_bytes, committed_closed, s.heap_bytes);
    /* most of what the open database held is given back (the heap may keep a span per
     * size class and a few spares committed) */
    CHECK(s.committed_bytes < committed_open);
    CHECK(s.committed_bytes <= committed_closed + (committed_open - committed_closed) / 3);
    CHECK_EQ(g_a.bad_frees, 0);
}

/* §7 budget, atomicity: a multi-row transaction interrupted by SQLITE_NOMEM leaves the
 * database as it was before the transaction or with all of it - never a part - and the
 * rows committed before it are intact. */
TEST(sqlite_transaction_interrupted_by_nomem_is_all_or_nothing)
{
    sqlite3 *db = NULL;
    REQUIRE(sqlite3_open(":memory:", &db) == SQLITE_OK);
    CHECK_EQ(exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"), SQLITE_OK);
    sqlite3_stmt *ins = NULL;
    REQUIRE(sqlite3_prepare_v2(db, "INSERT INTO t(id, payload) VALUES (?1, ?2)", -1, &ins, NULL) == SQLITE_OK);
    sqlite3_int64 base = 0;
    CHECK_EQ(exec(db, "BEGIN"), SQLITE_OK);
    CHECK_EQ(insert_until_failure(ins, 1, 2000, &base), SQLITE_DONE);
    CHECK_EQ(exec(db, "COMMIT"), SQLITE_OK);

    CHECK_HR(hostmem_set_commit_limit(g_m, host_stats().committed_bytes + ((size_t)2 << 20)), S_OK);
    CHECK_EQ(exec(db, "BEGIN"), SQLITE_OK);
    sqlite3_int64 last = 0;
    int rc = insert_until_failure(ins, base + 1, 1000000, &last);
    CHECK_EQ(rc, SQLITE_NOMEM);
    int still_open = !sqlite3_get_autocommit(db); /* SQLite may have rolled back itself */
    int end = still_open ? exec(db, "ROLLBACK") : SQLITE_OK;
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  transaction stopped after %lld rows: rc %d, transaction %s, rollback %d\n",
                (long long)(last - base), rc, still_open ? "still open" : "rolled back by SQLite", end);
    CHECK(end == SQLITE_OK || end == SQLITE_NOMEM);
    CHECK_HR(hostmem_set_commit_limit(g_m, HOSTMEM_UNLIMITED), S_OK);
    if (!sqlite3_get_autocommit(db))
        CHECK_EQ(exec(db, "ROLLBACK"), SQLITE_OK);
    CHECK(sqlite3_get_autocommit(db));
    CHECK(integrity_ok(db));
    CHECK_EQ(count_rows(db), base);
    CHECK(rows_intact(db, base));
    /* and the connection goes on */
    sqlite3_int64 after = 0;
    CHECK_EQ(insert_until_failure(ins, base + 1, 100, &after), SQLITE_DONE);
    CHECK(rows_intact(db, base + 100));
    CHECK_EQ(sqlite3_finalize(ins), SQLITE_OK);
    CHECK_EQ(sqlite3_close(db), SQLITE_OK);
    CHECK_EQ(g_a.bad_frees, 0);
}

/* sqlite3_shutdown frees every block SQLite allocated (xShutdown called once); then the
 * heap's Release (the heap may cache empty spans until then) leaves the manager with
 * no page and no reservation, the region map agrees with the kernel, and the manager's
 * Release is the last reference. */
TEST(sqlite_shutdown_returns_everything)
{
    CHECK_EQ(sqlite3_shutdown(), SQLITE_OK);
    CHECK_EQ(g_a.shutdowns, 1);
    CHECK_EQ(g_a.live_blocks, 0);
    CHECK_EQ(g_a.live_bytes, 0);
    CHECK_EQ(g_a.allocs, g_a.frees);
    hostmem_stats s = host_stats();
    if (getenv("TEST_VERBOSE"))
        fprintf(stderr, "  after sqlite3_shutdown: committed %zu, heap bytes %zu, reservations %zu\n",
                s.committed_bytes, s.heap_bytes, s.reservations);
    CHECK_EQ(IHostMalloc_Release(g_heap), 0);
    s = host_stats();
    CHECK_EQ(s.heap_bytes, 0);
    CHECK_EQ(s.committed_bytes, 0);
    CHECK_EQ(s.reservations, 0);
    char why[256] = "";
    HRESULT hr = hostmem_validate(g_m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        fprintf(stderr, "  validate: %s\n", why);
    CHECK_HR(hr, S_OK);
    CHECK_EQ(IHostMemoryManager_Release(g_m), 0);
}

int main(void)
{
    hostmem_config c = {sizeof c};
    c.commit_limit = HOSTMEM_UNLIMITED;
    HRESULT hr = hostmem_create(&c, &g_m);
    if (hr == S_OK)
        hr = IHostMemoryManager_CreateMalloc(g_m, MALLOC_THREADSAFE, &g_heap);
    /* sqlite3_config before any other use of SQLite in the process */
    int rc = hr == S_OK ? sqlite3_config(SQLITE_CONFIG_MALLOC, &host_methods) : SQLITE_ERROR;
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        char b[16];
        fprintf(stderr, "  FAIL setup: CreateMalloc(MALLOC_THREADSAFE) -> %s, sqlite3_config/initialize -> %d\n",
                test_hr_name(hr, b, sizeof b), rc);
        fprintf(stderr, "not ok setup\n");
        test_failed_count++;
        if (g_m)
            IHostMemoryManager_Release(g_m);
        return TEST_SUMMARY("embed_sqlite");
    }
    RUN(sqlite_allocates_through_the_heap);
    RUN(sqlite_nomem_under_budget_then_same_connection_recovers_nothing_lost);
    RUN(sqlite_transaction_interrupted_by_nomem_is_all_or_nothing);
    RUN(sqlite_shutdown_returns_everything);
    return TEST_SUMMARY("embed_sqlite");
}
