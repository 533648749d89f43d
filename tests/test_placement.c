/*
 * test_placement.c - where a manager's memory lands (docs/security.md).
 *
 * The rules: the first reservation of a process is at a random place, with at
 * least the entropy the kernel gives mmap - over 1,000 processes it never
 * repeats and at least 20 of its bits vary; two managers of one process are
 * not at a fixed offset from each other; HOSTMEM_FIXED_PLACEMENT (the flag or
 * the environment variable) gives the same addresses in every run; Windows'
 * order holds - bottom-up reservations ascend, also across arenas, MEM_TOP_DOWN
 * ones descend and sit above them; where the kernel does not give the random
 * place (a sanitizer's runtime holds it) arenas go to the fallback place.
 *
 * The processes are this program run again (/proc/self/exe --first), each
 * printing its first reservation's address and its two managers' offset.
 */
#define COBJMACROS
#include <spawn.h>
#include <stdint.h>

#include "test.h"

extern char **environ;

#define PROCESSES 1000
#define PLACE_LOW 0x100000000000ull  /* the random bottom-up place: [16, 80) TiB */
#define PLACE_HIGH 0x500000000000ull
#define PLACE_FIXED 0x200000000000ull /* HOSTMEM_FIXED_PLACEMENT's */

static size_t G;

static HRESULT reserve(IHostMemoryManager *m, size_t size, DWORD type, void **out)
{
    return IHostMemoryManager_VirtualAlloc(m, NULL, size, MEM_RESERVE | type, PAGE_READWRITE, eTaskCritical, out);
}

static HRESULT release(IHostMemoryManager *m, void *p)
{
    return IHostMemoryManager_VirtualFree(m, p, 0, MEM_RELEASE);
}

/* --first: a process as a new user's: a default manager, one 64 KiB
 * PAGE_EXECUTE_READWRITE reservation; then a second manager's. Prints both. */
static int first_main(void)
{
    IHostMemoryManager *m, *n;
    void *p = NULL, *q = NULL;
    if (hostmem_create(NULL, &m) != S_OK || hostmem_create(NULL, &n) != S_OK)
        return 1;
    if (IHostMemoryManager_VirtualAlloc(m, NULL, 64 << 10, MEM_RESERVE, PAGE_EXECUTE_READWRITE, eTaskCritical,
                                        &p) != S_OK ||
        reserve(n, 64 << 10, 0, &q) != S_OK)
        return 1;
    printf("%" PRIxPTR " %" PRIxPTR "\n", (uintptr_t)p, (uintptr_t)q);
    return 0;
}

/* Runs this program with --first and extra environment entries; its two
 * addresses, or 0 on any failure. */
static int run_first(char *const extra_env[], uintptr_t *first, uintptr_t *second)
{
    int fds[2];
    if (pipe(fds))
        return 0;
    char *env[256];
    size_t n = 0;
    for (char **e = environ; *e && n < 200; e++)
        if (strncmp(*e, "HOSTMEM_FIXED_PLACEMENT=", 24) != 0)
            env[n++] = *e;
    for (size_t i = 0; extra_env && extra_env[i]; i++)
        env[n++] = extra_env[i];
    env[n] = NULL;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    char *argv[] = {(char *)"test_placement", (char *)"--first", NULL};
    pid_t pid;
    int err = posix_spawn(&pid, "/proc/self/exe", &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (err) {
        close(fds[0]);
        return 0;
    }
    char text[128];
    ssize_t got = 0, r;
    while (got < (ssize_t)sizeof text - 1 && (r = read(fds[0], text + got, sizeof text - 1 - (size_t)got)) > 0)
        got += r;
    close(fds[0]);
    text[got > 0 ? got : 0] = 0;
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    unsigned long long a, b;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || sscanf(text, "%llx %llx", &a, &b) != 2)
        return 0;
    *first = (uintptr_t)a;
    *second = (uintptr_t)b;
    return 1;
}

static int compare_addresses(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static size_t distinct(uintptr_t *values, size_t n)
{
    qsort(values, n, sizeof *values, compare_addresses);
    size_t d = n ? 1 : 0;
    for (size_t i = 1; i < n; i++)
        d += values[i] != values[i - 1];
    return d;
}

static uintptr_t firsts[PROCESSES], offsets[PROCESSES];

/* Over 1,000 processes the first reservation's address repeats no more often
 * than chance allows (below), at least 20 of its bits vary, and it lies in the random place; the second manager's
 * offset from the first is not a constant. */
TEST(first_reservation_is_at_a_random_place_in_every_process)
{
    size_t n = 0;
    for (int i = 0; i < PROCESSES; i++) {
        uintptr_t a, b;
        if (!run_first(NULL, &a, &b)) {
            CHECK(!"a process ran and printed its first reservation");
            return;
        }
        firsts[n] = a;
        offsets[n] = b - a;
        n++;
    }
    uintptr_t varying = 0, lowest = UINTPTR_MAX, highest = 0;
    for (size_t i = 0; i < n; i++) {
        varying |= firsts[i] ^ firsts[0];
        lowest = firsts[i] < lowest ? firsts[i] : lowest;
        highest = firsts[i] > highest ? firsts[i] : highest;
        CHECK_EQ(firsts[i] % G, 0);
    }
    int bits = __builtin_popcountll(varying);
    printf("first reservation over %zu processes: %zu distinct, %d bits vary (mask %#" PRIxPTR
           ", bits %d to %d), from %#" PRIxPTR " to %#" PRIxPTR "\n",
           n, distinct(firsts, n), bits, varying, varying ? __builtin_ctzll(varying) : 0,
           varying ? 63 - __builtin_clzll(varying) : 0, lowest, highest);
    /* Repeats are the birthday bound's: 1,000 draws of 30 bits (the place,
     * docs/security.md) repeat with probability 0.05%, of the fallback's 22.6
     * bits (64-448 GiB, where a sanitizer holds the place) 8% - so one repeat,
     * or three under a sanitizer, is chance; more (P < 1e-5) is not random. */
#if defined(UNDER_ASAN) || defined(UNDER_TSAN)
    CHECK(distinct(firsts, n) + 3 >= n);
#else
    CHECK(distinct(firsts, n) + 1 >= n);
#endif
    CHECK(bits >= 20);
#if !defined(UNDER_ASAN) && !defined(UNDER_TSAN)
    CHECK(lowest >= PLACE_LOW && highest < PLACE_HIGH);
#endif
    size_t apart = distinct(offsets, n);
    printf("the second manager's offset from the first: %zu distinct over %zu processes\n", apart, n);
    CHECK(apart > n / 2);
}

/* HOSTMEM_FIXED_PLACEMENT in the environment: the same first address in every
 * run, the fixed one (for reproducible traces). */
TEST(fixed_placement_from_the_environment_repeats)
{
    char *fixed[] = {(char *)"HOSTMEM_FIXED_PLACEMENT=1", NULL};
    uintptr_t a1, b1, a2, b2;
    REQUIRE(run_first(fixed, &a1, &b1));
    REQUIRE(run_first(fixed, &a2, &b2));
    CHECK_EQ(a1, a2);
#if !defined(UNDER_ASAN) && !defined(UNDER_TSAN)
    /* a sanitizer's runtime holds one of the two fixed places; the kernel then
     * places the second manager's arena where its own randomisation says */
    CHECK_EQ(b1, b2);
    CHECK_EQ(a1, PLACE_FIXED);
#endif
    char *zero[] = {(char *)"HOSTMEM_FIXED_PLACEMENT=0", NULL};
    REQUIRE(run_first(zero, &a1, &b1));
    REQUIRE(run_first(zero, &a2, &b2));
    CHECK(a1 != a2); /* "0" is not a request: random, 2^-30 to repeat */
}

/* The configuration flag does what the environment variable does. */
TEST(fixed_placement_flag_gives_the_fixed_place)
{
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_FIXED_PLACEMENT;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    void *p;
    REQUIRE_HR(reserve(m, G, 0, &p), S_OK);
#if !defined(UNDER_ASAN) && !defined(UNDER_TSAN)
    CHECK_EQ((uintptr_t)p, PLACE_FIXED);
#endif
    CHECK_HR(release(m, p), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* Windows' order, with randomised places: bottom-up reservations ascend, also
 * when each needs a new arena; MEM_TOP_DOWN ones descend, above every
 * bottom-up one. Arenas of 4 granules, so that a new one comes every 4. */
TEST(windows_order_holds_within_and_across_arenas)
{
    hostmem_config c = {sizeof c};
    c.arena_size = 4 * G;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    enum { N = 24 };
    void *up[N], *down[N];
    for (int i = 0; i < N; i++) {
        REQUIRE_HR(reserve(m, G, 0, &up[i]), S_OK);
        REQUIRE_HR(reserve(m, G, MEM_TOP_DOWN, &down[i]), S_OK);
    }
    hostmem_stats s = {sizeof s};
    CHECK_HR(hostmem_get_stats(m, &s), S_OK);
    CHECK(s.arenas >= 2 * N / 4);
    for (int i = 1; i < N; i++) {
        CHECK((uintptr_t)up[i] > (uintptr_t)up[i - 1]);
        CHECK((uintptr_t)down[i] < (uintptr_t)down[i - 1]);
    }
    CHECK((uintptr_t)down[N - 1] > (uintptr_t)up[N - 1]);
    /* within an arena: the lowest free granule again once one is released */
    CHECK_HR(release(m, up[N - 2]), S_OK);
    void *again;
    CHECK_HR(reserve(m, G, 0, &again), S_OK);
    CHECK_EQ(again, up[N - 2]);
    for (int i = 0; i < N; i++) {
        CHECK_HR(release(m, i == N - 2 ? again : up[i]), S_OK);
        CHECK_HR(release(m, down[i]), S_OK);
    }
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

/* ---- the fallback place: a seam whose mmap ignores every hint in the random
 * bottom-up place, as a sanitizer's runtime holding that range does ---------- */
static const struct hostmem_os_ops *real_os;
static int held_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    uintptr_t h = (uintptr_t)hint;
    if (!fixed && h >= PLACE_LOW && h < PLACE_HIGH)
        hint = NULL;
    return real_os->map(hint, size, prot, fixed, out);
}

/* Where the kernel does not give the random place, bottom-up arenas come from
 * the fallback place (64 to 448 GiB), still ascending, and the manager's books
 * hold (validated after the test). */
TEST(bottom_up_falls_back_where_the_place_is_held)
{
    real_os = hostmem_os;
    struct hostmem_os_ops held = *hostmem_os;
    held.map = held_map;
    hostmem_config c = {sizeof c};
    c.arena_size = 4 * G;
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(&c, &m), S_OK);
    hostmem_os = &held;
    void *p[8];
    for (int i = 0; i < 8; i++)
        CHECK_HR(reserve(m, G, 0, &p[i]), S_OK);
    hostmem_os = real_os;
    for (int i = 0; i < 8; i++) {
        CHECK((uintptr_t)p[i] >= 0x1000000000ull && (uintptr_t)p[i] < 0x20000000000ull);
        if (i)
            CHECK((uintptr_t)p[i] > (uintptr_t)p[i - 1]);
    }
    for (int i = 0; i < 8; i++)
        CHECK_HR(release(m, p[i]), S_OK);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--first") == 0)
        return first_main();
    G = hostmem_granularity();
    RUN(first_reservation_is_at_a_random_place_in_every_process);
    RUN(fixed_placement_from_the_environment_repeats);
    RUN(fixed_placement_flag_gives_the_fixed_place);
    RUN(windows_order_holds_within_and_across_arenas);
#ifdef UNDER_ASAN
    SKIP(bottom_up_falls_back_where_the_place_is_held,
         "AddressSanitizer's shadow gap holds the fallback place (64 GiB - 2 TiB), and its runtime leaves the random place to "
         "programs, so the fallback is never needed under it");
#else
    RUN(bottom_up_falls_back_where_the_place_is_held);
#endif
    return TEST_SUMMARY("test_placement");
}
