/*
 * test_scale.c - issue 2 item 5: a million live reservations, and the
 * kernel's mapping limit.
 *
 *  - default (strict) mode: 1,000,000 reservations of 64 KiB live at once, in a
 *    few kernel mappings per arena, not one per reservation;
 *  - compact mode: 1,000,000 reservations with one committed page each, far
 *    below vm.max_map_count;
 *  - strict mode: committing one page in each of many reservations needs two
 *    kernel mappings per reservation; at vm.max_map_count the kernel refuses
 *    and hostmem returns E_OUTOFMEMORY with nothing changed.
 * HOSTMEM_SCALE sets the count (sanitizer builds use fewer).
 */
#include <stdlib.h>
#include <string.h>

#include "test.h"

static size_t P, G;
static size_t count = 1000000;

static size_t max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    size_t v = 65530;
    if (f) {
        if (fscanf(f, "%zu", &v) != 1)
            v = 65530;
        fclose(f);
    }
    return v;
}

static size_t mappings(IHostMemoryManager *m)
{
    size_t n = 0;
    hostmem_kernel_mappings(m, &n);
    return n;
}

static void **table(size_t n)
{
    void **t = calloc(n, sizeof *t);
    return t;
}

/* Issue 2 item 5: 1,000,000 live reservations in the default mode. */
TEST(million_reservations_default_mode_few_kernel_mappings)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    void **r = table(count);
    REQUIRE(r);
    size_t made = 0;
    for (; made < count; made++) {
        HRESULT hr = m->lpVtbl->VirtualAlloc(m, NULL, G, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r[made]);
        if (hr != S_OK) {
            CHECK_HR(hr, S_OK);
            break;
        }
    }
    CHECK_EQ(made, count);
    hostmem_stats s = {sizeof s};
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.reservations, made);
    CHECK_EQ(s.reserved_bytes, made * G);
    /* one kernel mapping per arena (plus none per reservation) */
    size_t k = mappings(m);
    CHECK(k <= s.arenas + 2);
    CHECK(k < made / 1000 + 10);
    /* every reservation answers for itself; foreign memory is refused */
    for (size_t i = 0; i < made; i += made / 97 + 1) {
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(m->lpVtbl->VirtualQuery(m, (char *)r[i] + 5 * P, &info, sizeof info, &n), S_OK);
        CHECK(info.AllocationBase == r[i]);
        CHECK_EQ(info.State, MEM_RESERVE);
        CHECK_EQ(info.RegionSize, G - 5 * P);
    }
    int local;
    CHECK_HR(m->lpVtbl->VirtualFree(m, &local, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    for (size_t i = 0; i < made; i++)
        if (m->lpVtbl->VirtualFree(m, r[i], 0, MEM_RELEASE) != S_OK) {
            TEST_FAIL_AT("release %zu failed", i);
            break;
        }
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.reservations, 0);
    CHECK_EQ(s.reserved_bytes, 0);
    printf("default mode: %zu reservations in %zu kernel mappings (%zu arenas)\n", made, k, s.arenas);
    free(r);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Issue 2 item 5: compact mode, 1,000,000 reservations with one committed page each. */
TEST(million_reservations_one_committed_page_each_compact_mode)
{
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_COMPACT;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void **r = table(count);
    REQUIRE(r);
    size_t made = 0;
    for (; made < count; made++) {
        void *p;
        HRESULT hr = m->lpVtbl->VirtualAlloc(m, NULL, G, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r[made]);
        if (hr == S_OK)
            hr = m->lpVtbl->VirtualAlloc(m, (char *)r[made] + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        if (hr != S_OK) {
            CHECK_HR(hr, S_OK);
            break;
        }
    }
    CHECK_EQ(made, count);
    hostmem_stats s = {sizeof s};
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.committed_bytes, made * P);
    size_t k = mappings(m);
    CHECK(k <= s.arenas + 2);
    CHECK(k < max_map_count() / 10);
    for (size_t i = 0; i < made; i += made / 89 + 1) {
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        CHECK_HR(m->lpVtbl->VirtualQuery(m, r[i], &info, sizeof info, &n), S_OK);
        CHECK_EQ(info.State, MEM_RESERVE);
        CHECK_EQ(info.RegionSize, P);
        CHECK_HR(m->lpVtbl->VirtualQuery(m, (char *)r[i] + P, &info, sizeof info, &n), S_OK);
        CHECK_EQ(info.State, MEM_COMMIT);
        CHECK_EQ(info.Protect, PAGE_READWRITE);
        CHECK_EQ(info.RegionSize, P);
        ((char *)r[i])[P] = 1; /* the committed page is usable */
    }
    char why[256];
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    printf("compact mode: %zu reservations, one committed page each, in %zu kernel mappings\n", made, k);
    for (size_t i = 0; i < made; i++)
        if (m->lpVtbl->VirtualFree(m, r[i], 0, MEM_RELEASE) != S_OK) {
            TEST_FAIL_AT("release %zu failed", i);
            break;
        }
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.committed_bytes, 0);
    free(r);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Issue 2 item 5: in strict mode the refusal at the kernel's limit is clean. */
TEST(strict_mode_refusal_at_max_map_count_changes_nothing)
{
    size_t limit = max_map_count();
    if (limit > 400000)
        TEST_SKIP("vm.max_map_count is %zu: over 400,000 mappings are too many to fill in a test", limit);
    size_t n = limit / 2 + 1000;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    void **r = table(n);
    REQUIRE(r);
    /* three committed pages in one kernel mapping, for the decommit below */
    void *probe_base;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, G, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, eTaskCritical,
                                       &probe_base), S_OK);
    char *probe = probe_base;
    probe[0] = 1;
    probe[2 * P] = 3;
    for (size_t i = 0; i < n; i++)
        REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, G, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &r[i]), S_OK);
    size_t committed = 0, refused_at = n;
    HRESULT refusal = S_OK;
    for (size_t i = 0; i < n; i++) {
        void *p;
        HRESULT hr = m->lpVtbl->VirtualAlloc(m, (char *)r[i] + P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p);
        if (hr != S_OK) {
            refusal = hr;
            refused_at = i;
            break;
        }
        ((char *)r[i])[P] = (char)(i | 1);
        committed++;
    }
    CHECK_HR(refusal, E_OUTOFMEMORY);
    CHECK(refused_at < n);
    /* nothing changed for the refused one, and the counters are exact */
    MEMORY_BASIC_INFORMATION info;
    SIZE_T got;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, (char *)r[refused_at] + P, &info, sizeof info, &got), S_OK);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, G - P);
    hostmem_stats s = {sizeof s};
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.committed_bytes, committed * P + G);
    /* Issue 13 item 4: at the ceiling a decommit in the middle of a mapping still
     * succeeds, as on Windows; its page is protected only in the books */
    char why[256];
    CHECK_HR(m->lpVtbl->VirtualFree(m, probe + P, P, MEM_DECOMMIT), S_OK);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, probe + P, &info, sizeof info, &got), S_OK);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, P);
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.committed_bytes, committed * P + G - P);
    CHECK_EQ(s.book_protected_pages, 1);
    /* (the kernel check needs a mapping for its list: after room is made) */
    CHECK_HR(hostmem_validate(m, 0, why, sizeof why), S_OK);
    /* make room, then the page gets its protection and the kernel's view agrees with the map */
    for (size_t i = 0; i < 2000 && i < committed; i++)
        CHECK_HR(m->lpVtbl->VirtualFree(m, r[i], 0, MEM_RELEASE), S_OK);
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK_EQ(s.book_protected_pages, 0);
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    if (why[0])
        printf("validate: %s\n", why);
    CHECK_EQ(probe[0], 1);
    CHECK_EQ(probe[2 * P], 3);
    for (size_t i = 2000; i < committed; i++)
        if (((char *)r[i])[P] != (char)(i | 1)) {
            TEST_FAIL_AT("page of reservation %zu lost its contents", i);
            break;
        }
    printf("strict mode: kernel refused commit %zu of %zu (vm.max_map_count %zu): %s\n", refused_at, n, limit,
           hostmem_result_name(refusal));
    for (size_t i = 2000; i < n; i++)
        CHECK_HR(m->lpVtbl->VirtualFree(m, r[i], 0, MEM_RELEASE), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, probe, 0, MEM_RELEASE), S_OK);
    free(r);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

/* Issue 2 item 5: a huge reservation (256 GiB, as a GC reserves) is cheap and exact,
 * including the partial GiBs at both ends of one at an unaligned address. */
TEST(huge_reservations_whole_and_partial_gib)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    size_t huge = (size_t)256 << 30;
    void *base, *p;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, NULL, huge, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base), S_OK);
    char *b = base;
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, b + ((size_t)100 << 30), &info, sizeof info, &n), S_OK);
    CHECK(info.AllocationBase == base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, huge - ((size_t)100 << 30));
    char *mid = b + ((size_t)131 << 30) + 3 * P;
    CHECK_HR(m->lpVtbl->VirtualAlloc(m, mid, 2 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
    mid[0] = 42;
    CHECK_HR(m->lpVtbl->VirtualQuery(m, mid + P, &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.RegionSize, P);
    int local;
    CHECK_HR(m->lpVtbl->VirtualFree(m, &local, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(m->lpVtbl->VirtualFree(m, mid, 0, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    char why[256];
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, base, 0, MEM_RELEASE), S_OK);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, b + ((size_t)100 << 30), &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_FREE);
    /* again at an unaligned address: a partial GiB at each end */
    char *at = b + ((size_t)1 << 30) - 5 * G + 123;
    size_t size = ((size_t)3 << 30) + 7 * G;
    REQUIRE_HR(m->lpVtbl->VirtualAlloc(m, at, size, MEM_RESERVE, PAGE_READONLY, eTaskCritical, &p), S_OK);
    CHECK(p == b + ((size_t)1 << 30) - 5 * G);
    char *probes[] = {p, (char *)p + G, b + ((size_t)2 << 30) + 17, at + size - 1};
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        CHECK_HR(m->lpVtbl->VirtualQuery(m, probes[i], &info, sizeof info, &n), S_OK);
        CHECK(info.AllocationBase == p);
        CHECK_EQ(info.AllocationProtect, PAGE_READONLY);
        CHECK_EQ(info.State, MEM_RESERVE);
    }
    CHECK_HR(m->lpVtbl->VirtualFree(m, b + ((size_t)2 << 30), 0, MEM_RELEASE), HRESULT_FROM_WIN32(ERROR_INVALID_ADDRESS));
    CHECK_HR(hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE), S_OK);
    CHECK_HR(m->lpVtbl->VirtualFree(m, p, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
    CHECK_HR(m->lpVtbl->VirtualQuery(m, b + ((size_t)2 << 30), &info, sizeof info, &n), S_OK);
    CHECK_EQ(info.State, MEM_FREE);
    CHECK_EQ(m->lpVtbl->Release(m), 0);
}

int main(void)
{
    P = hostmem_page_size();
    G = hostmem_granularity();
    const char *e = getenv("HOSTMEM_SCALE");
    if (e && atol(e) > 0)
        count = (size_t)atol(e);
    RUN(huge_reservations_whole_and_partial_gib);
    RUN(million_reservations_default_mode_few_kernel_mappings);
    RUN(million_reservations_one_committed_page_each_compact_mode);
    if (getenv("HOSTMEM_SKIP_MAP_LIMIT"))
        SKIP(strict_mode_refusal_at_max_map_count_changes_nothing,
             "HOSTMEM_SKIP_MAP_LIMIT is set (make check sets it for the sanitizer runs)");
    else
        RUN(strict_mode_refusal_at_max_map_count_changes_nothing);
    return TEST_SUMMARY("test_scale");
}
