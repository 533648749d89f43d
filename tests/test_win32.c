/*
 * test_win32.c - the Win32 face (include/hostmem_win32.h) against Windows'
 * documented rules: results and the thread's last error of VirtualAlloc,
 * VirtualFree, VirtualQuery, VirtualProtect, GetWriteWatch, ResetWriteWatch,
 * GetLargePageMinimum, GetLastError and SetLastError, as a program ported from
 * Windows sees them.
 *
 * Written against hostmem_win32.h alone (and libc), as a ported program is: no
 * hostmem.h, so the small harness is this file's own (tests/test.h needs
 * hostmem.h). It ends with "test_win32: N passed, N failed" like every test.
 *
 * Each test is named after the rule it pins, and cites where the rule comes from:
 *   [ms-X]      Microsoft's documentation of X (learn.microsoft.com, memoryapi.h /
 *               errhandlingapi.h)
 *   [wine-k32]  Wine's conformance test dlls/kernel32/tests/virtual.c, which runs
 *               against real Windows (also reactos/reactos
 *               modules/rostests/winetests/kernel32/virtual.c)
 *   [ros-alloc] reactos/reactos modules/rostests/apitests/ntdll/NtAllocateVirtualMemory.c
 *   [ros-free]  reactos/reactos modules/rostests/apitests/ntdll/NtFreeVirtualMemory.c
 * NT statuses reach a Win32 program as the errors Windows maps them to:
 * STATUS_CONFLICTING_ADDRESSES, STATUS_FREE_VM_NOT_AT_BASE and
 * STATUS_MEMORY_NOT_ALLOCATED -> ERROR_INVALID_ADDRESS; STATUS_UNABLE_TO_FREE_VM
 * and STATUS_INVALID_PAGE_PROTECTION -> ERROR_INVALID_PARAMETER;
 * STATUS_ACCESS_VIOLATION (a bad out-pointer) -> ERROR_NOACCESS.
 *
 * The write-watch tests (ww_*) run where the kernel can track writes; where it
 * cannot, MEM_WRITE_WATCH is refused with ERROR_NOT_SUPPORTED (as Wine's test
 * allows for Windows versions without it) and they are skipped, saying so.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostmem_win32.h"

_Static_assert(sizeof(MEMORY_BASIC_INFORMATION) == 48, "MEMORY_BASIC_INFORMATION is 48 bytes on LP64");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, RegionSize) == 24, "Windows' field order");
_Static_assert(offsetof(MEMORY_BASIC_INFORMATION, Type) == 40, "Windows' field order");
_Static_assert(sizeof(DWORD) == 4 && sizeof(BOOL) == 4 && sizeof(UINT) == 4, "Windows' sizes");
_Static_assert(sizeof(ULONG_PTR) == sizeof(void *) && sizeof(SIZE_T) == sizeof(void *), "Windows' sizes");

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

/* ---- the harness ------------------------------------------------------------ */

static int test_passed_count, test_failed_count, test_skipped_count, test_current_failed;
static const char *test_current_name = "";

#define TEST_FAIL_AT(...)                                                                 \
    do {                                                                                  \
        fprintf(stderr, "  FAIL %s (%s:%d): ", test_current_name, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                                     \
        fputc('\n', stderr);                                                              \
        test_current_failed = 1;                                                          \
    } while (0)

#define CHECK(cond)                               \
    do {                                          \
        if (!(cond))                              \
            TEST_FAIL_AT("CHECK(%s)", #cond);     \
    } while (0)

#define CHECK_EQ(a, b)                                                            \
    do {                                                                          \
        uintmax_t check_a_ = (uintmax_t)(a), check_b_ = (uintmax_t)(b);           \
        if (check_a_ != check_b_)                                                 \
            TEST_FAIL_AT("%s == %s: 0x%jx != 0x%jx", #a, #b, check_a_, check_b_); \
    } while (0)

#define REQUIRE(cond)                             \
    do {                                          \
        if (!(cond)) {                            \
            TEST_FAIL_AT("REQUIRE(%s)", #cond);   \
            return;                               \
        }                                         \
    } while (0)

/* A value no call sets: what the last error holds before a call under test. */
#define SENTINEL 0xDEADBEEFu

/*
 * CHECK_FAILS(call, failure, error): the call returns Windows' failure value
 * and sets the thread's last error to error (it was SENTINEL before).
 */
#define CHECK_FAILS(call, failure, error)                                                        \
    do {                                                                                         \
        SetLastError(SENTINEL);                                                                  \
        uintmax_t fails_result_ = (uintmax_t)(call);                                             \
        DWORD fails_error_ = GetLastError();                                                     \
        if (fails_result_ != (uintmax_t)(failure) || fails_error_ != (DWORD)(error))             \
            TEST_FAIL_AT("%s -> 0x%jx, last error %u; expected 0x%jx, last error %u", #call,     \
                         fails_result_, (unsigned)fails_error_, (uintmax_t)(failure),            \
                         (unsigned)(error));                                                     \
    } while (0)

#define TEST(name) static void name(void)

#define RUN(name)                                    \
    do {                                             \
        test_current_name = #name;                   \
        test_current_failed = 0;                     \
        name();                                      \
        if (test_current_failed) {                   \
            test_failed_count++;                     \
            fprintf(stderr, "not ok %s\n", #name);   \
        } else {                                     \
            test_passed_count++;                     \
            if (getenv("TEST_VERBOSE"))              \
                fprintf(stderr, "ok %s\n", #name);   \
        }                                            \
    } while (0)

/* A test not run here: one line, "<test>: skipped: <why>" (tests/run.sh), counted. */
#define SKIP(name, why)                                    \
    do {                                                   \
        fflush(stdout);                                    \
        printf("%s: skipped: %s\n", #name, (why));         \
        fflush(stdout);                                    \
        test_skipped_count++;                              \
    } while (0)

/* ---- helpers ----------------------------------------------------------------- */

static size_t P; /* the page size */
static size_t G; /* Windows' allocation granularity: 64 KiB (or the page, if larger) */

#define UINT_FAILED ((UINT)-1) /* what GetWriteWatch and ResetWriteWatch return on failure */

/* VirtualQuery of one address, which must succeed with a whole structure. */
static MEMORY_BASIC_INFORMATION query(const void *address)
{
    MEMORY_BASIC_INFORMATION info;
    memset(&info, 0xA5, sizeof info);
    SIZE_T n = VirtualQuery(address, &info, sizeof info);
    if (n != sizeof info)
        TEST_FAIL_AT("VirtualQuery(%p) -> %zu (last error %u)", address, (size_t)n, (unsigned)GetLastError());
    return info;
}

static char *at(void *base, size_t pages)
{
    return (char *)base + pages * P;
}

/* ---- the manager allocates nothing (run first: it also covers creation) ---------- */

#ifndef UNDER_SANITIZER
static __thread volatile int inside_face; /* the thread is inside a call of the Win32 face */
static volatile long allocations_inside;
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

void *malloc(size_t n)
{
    allocations_inside += inside_face;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    allocations_inside += inside_face;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    allocations_inside += inside_face;
    return __libc_realloc(p, n);
}
int posix_memalign(void **out, size_t align, size_t n)
{
    allocations_inside += inside_face;
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t n)
{
    allocations_inside += inside_face;
    return __libc_memalign(align, n);
}
void free(void *p)
{
    __libc_free(p);
}

/* hostmem's rule, which the face keeps: no call allocates heap memory, the very
 * first one (which creates the process-wide manager) included. In a child
 * process, so that the first call of this process is one_manager_for_the_process's. */
static void no_allocation_in_a_fresh_process(void)
{
    MEMORY_BASIC_INFORMATION info;
    DWORD old;
    inside_face = 1;
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE, PAGE_NOACCESS); /* creates the manager */
    char *page = base ? VirtualAlloc(base, 2 * P, MEM_COMMIT, PAGE_READWRITE) : NULL;
    SIZE_T queried = VirtualQuery(base, &info, sizeof info);
    BOOL protected_ = page ? VirtualProtect(page, P, PAGE_READONLY, &old) : FALSE;
    void *written[4];
    ULONG_PTR count = 4;
    DWORD granularity;
    UINT watched = GetWriteWatch(0, base, P, written, &count, &granularity); /* refused: no watch */
    UINT reset = ResetWriteWatch(base, P);
    BOOL decommitted = VirtualFree(base, 0, MEM_DECOMMIT);
    BOOL released = VirtualFree(base, 0, MEM_RELEASE);
    void *refused = VirtualAlloc(NULL, 0, MEM_RESERVE, PAGE_NOACCESS);
    BOOL foreign = VirtualFree(&info, 0, MEM_RELEASE);
    SIZE_T large = GetLargePageMinimum();
    struct IHostMemoryManager *manager = hostmem_win32_manager();
    inside_face = 0;
    (void)large;
    CHECK(base && page == base && queried == sizeof info && protected_ && decommitted && released);
    CHECK(!refused && !foreign && manager && watched == UINT_FAILED && reset == UINT_FAILED);
    CHECK_EQ(allocations_inside, 0);
    /* the counter works: an allocation inside the bracket is seen */
    inside_face = 1;
    void *volatile probe = malloc(16);
    inside_face = 0;
    free(probe);
    CHECK_EQ(allocations_inside, 1);
}

TEST(no_call_allocates_heap_memory)
{
    fflush(NULL);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        no_allocation_in_a_fresh_process();
        fflush(NULL);
        _exit(test_current_failed);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* The same with a dynamic-code policy from HOSTMEM_DYNAMIC_CODE (issue 23): the
 * first call, which reads it and creates the manager, and the refusals
 * (ERROR_DYNAMIC_CODE_BLOCKED) allocate nothing; nor does an unknown value,
 * whose every call fails and whose line goes to stderr. */
static void no_allocation_under_a_policy(const char *value)
{
    setenv("HOSTMEM_DYNAMIC_CODE", value, 1); /* setenv may allocate: outside the bracket */
    int known = strcmp(value, "none") == 0;
    DWORD old = 0;
    inside_face = 1;
    char *code = VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_EXECUTE_READ);
    DWORD code_error = GetLastError();
    char *data = VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_READWRITE);
    BOOL protected_ = data ? VirtualProtect(data, P, PAGE_EXECUTE_READ, &old) : FALSE;
    DWORD protect_error = GetLastError();
    BOOL released = data ? VirtualFree(data, 0, MEM_RELEASE) : FALSE;
    inside_face = 0;
    CHECK(code == NULL && !protected_);
    if (known) {
        CHECK(data != NULL && released);
        CHECK_EQ(code_error, ERROR_DYNAMIC_CODE_BLOCKED);
        CHECK_EQ(protect_error, ERROR_DYNAMIC_CODE_BLOCKED);
    } else {
        CHECK(data == NULL);
        CHECK_EQ(code_error, ERROR_INVALID_PARAMETER);
    }
    CHECK_EQ(allocations_inside, 0);
}

TEST(no_call_allocates_heap_memory_under_a_policy)
{
    static const char *values[] = {"none", "bogus"};
    for (size_t i = 0; i < 2; i++) {
        fflush(NULL);
        pid_t child = fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            if (i == 1) { /* the unknown value's line, out of the test's output */
                int devnull = open("/dev/null", O_WRONLY);
                if (devnull >= 0)
                    dup2(devnull, 2);
            }
            no_allocation_under_a_policy(values[i]);
            fflush(NULL);
            _exit(test_current_failed);
        }
        int status = 0;
        REQUIRE(waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}
#endif

/* ---- VirtualAlloc / VirtualFree / VirtualQuery: the flow ------------------------- */

/* [ms-VirtualAlloc] [wine-k32 test_VirtualAlloc]: MEM_RESERVE with a NULL address
 * gives a 64 KiB-aligned base and rounds the size up to pages; reserved pages
 * query as MEM_RESERVE with Protect 0; MEM_COMMIT inside returns the page;
 * committed pages read zero. [ms-VirtualFree]: MEM_DECOMMIT makes pages
 * reserved (committed again they read zero), size 0 at the base decommits
 * all; MEM_RELEASE with size 0 gives the whole region back (MEM_FREE). */
TEST(reserve_commit_decommit_release)
{
    SetLastError(SENTINEL);
    char *base = VirtualAlloc(NULL, 16 * P - 4, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK_EQ((uintptr_t)base % G, 0);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK(info.BaseAddress == base && info.AllocationBase == base);
    CHECK_EQ(info.AllocationProtect, PAGE_NOACCESS);
    CHECK_EQ(info.RegionSize, 16 * P);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.Protect, 0);
    CHECK_EQ(info.Type, MEM_PRIVATE);

    CHECK(VirtualAlloc(base, P, MEM_COMMIT, PAGE_READWRITE) == base);
    info = query(base);
    CHECK_EQ(info.RegionSize, P);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK_EQ(info.AllocationProtect, PAGE_NOACCESS);
    CHECK_EQ(base[0], 0);
    memset(base, 0x55, P);

    /* an unaligned address commits every page the range touches and returns the first */
    CHECK(VirtualAlloc(at(base, 1) + 10, 2 * P - 20, MEM_COMMIT, PAGE_READONLY) == at(base, 1));
    info = query(at(base, 1) + 100);
    CHECK(info.BaseAddress == at(base, 1));
    CHECK_EQ(info.RegionSize, 2 * P);
    CHECK_EQ(info.Protect, PAGE_READONLY);

    CHECK(VirtualFree(base, P, MEM_DECOMMIT));
    info = query(base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.Protect, 0);
    CHECK_EQ(info.RegionSize, P);
    CHECK(VirtualAlloc(base, P, MEM_COMMIT, PAGE_READWRITE) == base);
    CHECK_EQ(base[0], 0);
    CHECK_EQ(base[P - 1], 0);

    CHECK(VirtualFree(base, 0, MEM_DECOMMIT));
    info = query(base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, 16 * P);

    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    info = query(base);
    CHECK_EQ(info.State, MEM_FREE);
    CHECK(info.AllocationBase == NULL);
    CHECK_EQ(info.Protect, PAGE_NOACCESS);
    CHECK(info.RegionSize >= G);
    CHECK_EQ(GetLastError(), SENTINEL);
}

/* [ms-VirtualAlloc]: MEM_COMMIT with a NULL address reserves and commits at once;
 * so does MEM_RESERVE | MEM_COMMIT. [wine-k32]: the base is 64 KiB-aligned and
 * a released base can be reserved again at the same address. */
TEST(commit_with_null_address_reserves_and_commits)
{
    char *base = VirtualAlloc(NULL, 3 * P, MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(base != NULL);
    CHECK_EQ((uintptr_t)base % G, 0);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK(info.AllocationBase == base);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.RegionSize, 3 * P);
    base[3 * P - 1] = 1;
    CHECK(VirtualFree(base, 0, MEM_RELEASE));

    char *again = VirtualAlloc(base, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    CHECK(again == base);
    if (again) {
        info = query(again);
        CHECK_EQ(info.Protect, PAGE_EXECUTE_READWRITE);
        CHECK_EQ(again[0], 0);
        CHECK(VirtualFree(again, 0, MEM_RELEASE));
    }
}

/* ---- VirtualAlloc's refusals ------------------------------------------------------ */

/* [wine-k32 test_VirtualAlloc]: a size of 0 is ERROR_INVALID_PARAMETER. */
TEST(alloc_size_zero_is_invalid_parameter)
{
    CHECK_FAILS(VirtualAlloc(NULL, 0, MEM_RESERVE, PAGE_NOACCESS), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualAlloc(NULL, 0, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), 0, ERROR_INVALID_PARAMETER);
}

/* [wine-k32 test_VirtualAlloc, test_VirtualAlloc_protection]: protection 0, two
 * base values, the WRITECOPY values are ERROR_INVALID_PARAMETER, for a reserve
 * and for a commit (which then commits nothing); [ms-memory-protection-constants]:
 * PAGE_GUARD cannot be used with PAGE_NOACCESS. */
TEST(alloc_bad_protection_is_invalid_parameter)
{
    static const DWORD bad[] = {0,
                                PAGE_READONLY | PAGE_READWRITE,
                                PAGE_READONLY | PAGE_EXECUTE,
                                PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE,
                                PAGE_WRITECOPY,
                                PAGE_EXECUTE_WRITECOPY,
                                PAGE_NOACCESS | PAGE_GUARD};
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE, bad[i]), 0, ERROR_INVALID_PARAMETER);
        CHECK_FAILS(VirtualAlloc(NULL, P, MEM_COMMIT, bad[i]), 0, ERROR_INVALID_PARAMETER);
        CHECK_FAILS(VirtualAlloc(base, P, MEM_COMMIT, bad[i]), 0, ERROR_INVALID_PARAMETER);
    }
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, 4 * P);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-VirtualAlloc]: the allocation type is MEM_COMMIT, MEM_RESERVE or both, or
 * MEM_RESET / MEM_RESET_UNDO alone; MEM_WRITE_WATCH needs MEM_RESERVE
 * ([wine-k32 test_write_watch]: MEM_WRITE_WATCH alone fails); MEM_PHYSICAL needs
 * MEM_RESERVE. Anything else is ERROR_INVALID_PARAMETER. */
TEST(alloc_bad_type_is_invalid_parameter)
{
    static const DWORD bad[] = {0,
                                MEM_DECOMMIT,
                                MEM_RELEASE,
                                MEM_FREE,
                                MEM_WRITE_WATCH,
                                MEM_PHYSICAL,
                                MEM_TOP_DOWN,
                                MEM_RESET | MEM_COMMIT,
                                MEM_COMMIT | 0x80000000u};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_FAILS(VirtualAlloc(NULL, P, bad[i], PAGE_READWRITE), 0, ERROR_INVALID_PARAMETER);
}

/* [wine-k32 test_VirtualAlloc]: reserving where memory is in use is
 * STATUS_CONFLICTING_ADDRESSES (ERROR_INVALID_ADDRESS), also inside the 64 KiB
 * granule of another reservation; committing or resetting outside one
 * reservation (free memory, or past its end) is ERROR_INVALID_ADDRESS. */
TEST(alloc_where_not_allowed_is_invalid_address)
{
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK_FAILS(VirtualAlloc(base, P, MEM_RESERVE, PAGE_READWRITE), 0, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualAlloc(at(base, 1), P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), 0,
                ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualAlloc(at(base, 15), 2 * P, MEM_COMMIT, PAGE_READWRITE), 0, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualAlloc(at(base, 15), 2 * P, MEM_RESET, PAGE_NOACCESS), 0, ERROR_INVALID_ADDRESS);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.State, MEM_RESERVE);
    CHECK_EQ(info.RegionSize, 16 * P);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    CHECK_FAILS(VirtualAlloc(base, P, MEM_COMMIT, PAGE_READWRITE), 0, ERROR_INVALID_ADDRESS);
}

/* The process's virtual size in bytes (/proc/self/status VmSize), 0 if unknown. */
static size_t virtual_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

/* [ms-system-error-codes]: memory that cannot be had is ERROR_NOT_ENOUGH_MEMORY
 * (8, "Not enough memory resources are available"; Windows' STATUS_NO_MEMORY),
 * not ERROR_OUTOFMEMORY (14). In a child whose address space is limited to
 * what it uses plus 64 MiB, a 4 GiB reservation and a 4 GiB commit fail so. */
TEST(out_of_memory_is_not_enough_memory)
{
    fflush(NULL);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        size_t used = virtual_size();
        struct rlimit limit = {used + (64u << 20), used + (64u << 20)};
        if (!used || setrlimit(RLIMIT_AS, &limit) != 0)
            _exit(2);
        CHECK_FAILS(VirtualAlloc(NULL, (size_t)4 << 30, MEM_RESERVE, PAGE_READWRITE), 0,
                    ERROR_NOT_ENOUGH_MEMORY);
        CHECK_FAILS(VirtualAlloc(NULL, (size_t)4 << 30, MEM_COMMIT, PAGE_READWRITE), 0,
                    ERROR_NOT_ENOUGH_MEMORY);
        char *small = VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_READWRITE); /* what fits still does */
        CHECK(small != NULL);
        fflush(NULL);
        _exit(test_current_failed);
    }
    int status = 0;
    REQUIRE(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* ---- VirtualFree's refusals ------------------------------------------------------ */

/* [ms-VirtualFree] [wine-k32]: dwFreeType is MEM_DECOMMIT or MEM_RELEASE, not
 * both, not 0, not MEM_FREE: else ERROR_INVALID_PARAMETER, nothing freed. */
TEST(free_bad_type_is_invalid_parameter)
{
    static const DWORD bad[] = {0, MEM_FREE, MEM_DECOMMIT | MEM_RELEASE, MEM_COMMIT, 0x80000000u};
    char *base = VirtualAlloc(NULL, 4 * P, MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(base != NULL);
    base[0] = 7;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_FAILS(VirtualFree(base, 4 * P, bad[i]), FALSE, ERROR_INVALID_PARAMETER);
        CHECK_FAILS(VirtualFree(base, 0, bad[i]), FALSE, ERROR_INVALID_PARAMETER);
    }
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(base[0], 7);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-VirtualFree] [wine-k32]: with MEM_RELEASE dwSize must be 0, else
 * ERROR_INVALID_PARAMETER and the region stays. */
TEST(release_with_nonzero_size_is_invalid_parameter)
{
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK_FAILS(VirtualFree(base, 1, MEM_RELEASE), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualFree(base, 4 * P, MEM_RELEASE), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_EQ(query(base).State, MEM_RESERVE);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-VirtualFree]: with MEM_RELEASE lpAddress must be the base VirtualAlloc
 * returned; a size of 0 elsewhere is STATUS_FREE_VM_NOT_AT_BASE
 * (ERROR_INVALID_ADDRESS). A decommit running past the region is
 * STATUS_UNABLE_TO_FREE_VM [ros-free] (ERROR_INVALID_PARAMETER). */
TEST(free_not_at_base_is_invalid_address)
{
    char *base = VirtualAlloc(NULL, 4 * P, MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(base != NULL);
    CHECK_FAILS(VirtualFree(at(base, 1), 0, MEM_RELEASE), FALSE, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualFree(at(base, 1), 0, MEM_DECOMMIT), FALSE, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualFree(base, 5 * P, MEM_DECOMMIT), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualFree(at(base, 3), 2 * P, MEM_DECOMMIT), FALSE, ERROR_INVALID_PARAMETER);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.RegionSize, 4 * P);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ros-alloc]: releasing memory that is not allocated (released already) is
 * STATUS_MEMORY_NOT_ALLOCATED: ERROR_INVALID_ADDRESS. */
TEST(double_free_is_invalid_address)
{
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    CHECK_FAILS(VirtualFree(base, 0, MEM_RELEASE), FALSE, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualFree(base, P, MEM_DECOMMIT), FALSE, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualFree(base, 0, MEM_DECOMMIT), FALSE, ERROR_INVALID_ADDRESS);
}

static int static_data = 42;
static const char read_only_data[] = "read-only";

/* [ros-alloc] STATUS_MEMORY_NOT_ALLOCATED: memory the manager never handed out
 * (NULL, the stack, malloc's heap, static and read-only data) is
 * ERROR_INVALID_ADDRESS, and is never touched. (On Windows the stack and the
 * heap are VirtualAlloc regions too; here they never are: docs/win32.md.) */
TEST(free_of_memory_never_allocated_is_invalid_address)
{
    int local = 42;
    char *heap = malloc(256);
    REQUIRE(heap != NULL);
    memset(heap, 0x11, 256);
    void *foreign[] = {NULL, &local, heap, &static_data, (void *)(uintptr_t)read_only_data};
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        CHECK_FAILS(VirtualFree(foreign[i], 0, MEM_RELEASE), FALSE, ERROR_INVALID_ADDRESS);
        CHECK_FAILS(VirtualFree(foreign[i], 16, MEM_DECOMMIT), FALSE, ERROR_INVALID_ADDRESS);
    }
    CHECK_EQ(local, 42);
    CHECK_EQ(static_data, 42);
    CHECK_EQ(heap[0], 0x11);
    CHECK_EQ(heap[255], 0x11);
    free(heap);
}

/* ---- VirtualProtect --------------------------------------------------------------- */

/* [wine-k32 test_VirtualAlloc]: VirtualProtect of reserved pages, or of a range
 * not all committed, is ERROR_INVALID_ADDRESS and changes no page. */
TEST(protect_of_reserved_pages_is_invalid_address)
{
    DWORD old = SENTINEL;
    char *base = VirtualAlloc(NULL, 16 * P - 4, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    CHECK_FAILS(VirtualProtect(base, 16 * P - 4, PAGE_READONLY, &old), FALSE, ERROR_INVALID_ADDRESS);
    CHECK(VirtualAlloc(base, P, MEM_COMMIT, PAGE_NOACCESS) == base);
    CHECK_FAILS(VirtualProtect(base, 16 * P - 4, PAGE_READONLY, &old), FALSE, ERROR_INVALID_ADDRESS);
    CHECK_FAILS(VirtualProtect(base, 2 * P, PAGE_READWRITE, &old), FALSE, ERROR_INVALID_ADDRESS);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.Protect, PAGE_NOACCESS);
    CHECK_EQ(info.RegionSize, P);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    CHECK_FAILS(VirtualProtect(base, P, PAGE_READONLY, &old), FALSE, ERROR_INVALID_ADDRESS);
}

/* [ms-VirtualProtect] [wine-k32]: *lpflOldProtect gets the protection the first
 * page had; an invalid protection is ERROR_INVALID_PARAMETER; a NULL
 * lpflOldProtect fails (Windows faults writing it: ERROR_NOACCESS). */
TEST(protect_returns_old_protection)
{
    DWORD old = SENTINEL;
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    REQUIRE(VirtualAlloc(base, P, MEM_COMMIT, PAGE_NOACCESS) == base);
    SetLastError(SENTINEL);
    CHECK(VirtualProtect(base, P, PAGE_READONLY, &old));
    CHECK_EQ(old, PAGE_NOACCESS);
    CHECK(VirtualProtect(base, P, PAGE_READWRITE, &old));
    CHECK_EQ(old, PAGE_READONLY);
    MEMORY_BASIC_INFORMATION info = query(base);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK_EQ(info.RegionSize, P);
    base[0] = 1;

    REQUIRE(VirtualAlloc(at(base, 1), P, MEM_COMMIT, PAGE_EXECUTE_READ) == at(base, 1));
    CHECK(VirtualProtect(base, 2 * P, PAGE_READONLY, &old)); /* two protections: the first page's */
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK(VirtualProtect(at(base, 1) + 1, 1, PAGE_READWRITE | PAGE_GUARD, &old));
    CHECK_EQ(old, PAGE_READONLY);
    CHECK_EQ(query(at(base, 1)).Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK_EQ(GetLastError(), SENTINEL);

    old = SENTINEL;
    CHECK_FAILS(VirtualProtect(base, P, 0, &old), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualProtect(base, P, PAGE_READWRITE | PAGE_EXECUTE_WRITECOPY, &old), FALSE,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualProtect(base, P, PAGE_WRITECOPY, &old), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_EQ(old, SENTINEL);
    CHECK_FAILS(VirtualProtect(base, P, PAGE_READWRITE, NULL), FALSE, ERROR_NOACCESS);
    CHECK_EQ(query(base).Protect, PAGE_READONLY);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* ---- VirtualQuery ------------------------------------------------------------------ */

/* [ms-VirtualQuery]: the return value is the number of bytes written (the
 * structure, even from a larger buffer); 0 on failure: an address beyond the
 * process's user address space is ERROR_INVALID_PARAMETER; a buffer shorter
 * than the structure is STATUS_INFO_LENGTH_MISMATCH (ERROR_BAD_LENGTH); a NULL
 * buffer faults (ERROR_NOACCESS). Free address space reads MEM_FREE with
 * PAGE_NOACCESS and no allocation base. */
TEST(query_results_and_refusals)
{
    struct {
        MEMORY_BASIC_INFORMATION info;
        char more[16];
    } big;
    MEMORY_BASIC_INFORMATION info;
    char *base = VirtualAlloc(NULL, 2 * P, MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(base != NULL);
    SetLastError(SENTINEL);
    CHECK_EQ(VirtualQuery(base + 5, &big.info, sizeof big), sizeof(MEMORY_BASIC_INFORMATION));
    CHECK(big.info.BaseAddress == base);
    CHECK_EQ(GetLastError(), SENTINEL);

    const void *beyond[] = {(const void *)(uintptr_t)0xFFFFFFFFFFFF0000u, (const void *)(uintptr_t)-1,
                            (const void *)((uintptr_t)1 << 63)};
    for (size_t i = 0; i < sizeof beyond / sizeof beyond[0]; i++)
        CHECK_FAILS(VirtualQuery(beyond[i], &info, sizeof info), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualQuery(base, &info, sizeof info - 1), 0, ERROR_BAD_LENGTH);
    CHECK_FAILS(VirtualQuery(base, &info, 0), 0, ERROR_BAD_LENGTH);
    CHECK_FAILS(VirtualQuery(base, NULL, sizeof info), 0, ERROR_NOACCESS);

    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    info = query(base);
    CHECK_EQ(info.State, MEM_FREE);
    CHECK_EQ(info.Protect, PAGE_NOACCESS);
    CHECK(info.AllocationBase == NULL);
    CHECK(info.BaseAddress == base);
}

/* [ms-VirtualQuery]: any address of the process can be queried - the stack is
 * committed read-write memory. */
TEST(query_answers_for_memory_not_from_virtualalloc)
{
    int local = 0;
    MEMORY_BASIC_INFORMATION info = query(&local);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK((char *)info.BaseAddress <= (char *)&local);
    CHECK((char *)info.BaseAddress + info.RegionSize > (char *)&local);
}

/* ---- the last error ------------------------------------------------------------------ */

/* [ms-GetLastError]: functions set the last error when they fail; these calls
 * leave it alone when they succeed (Windows' kernel32 sets it only from a
 * failed NTSTATUS), and SetLastError stores any value. */
TEST(last_error_unchanged_on_success)
{
    DWORD old;
    MEMORY_BASIC_INFORMATION info;
    SetLastError(0x12345678u);
    CHECK_EQ(GetLastError(), 0x12345678u);
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_NOACCESS);
    CHECK_EQ(GetLastError(), 0x12345678u);
    REQUIRE(base != NULL);
    CHECK(VirtualAlloc(base, P, MEM_COMMIT, PAGE_READWRITE) == base);
    CHECK_EQ(GetLastError(), 0x12345678u);
    CHECK_EQ(VirtualQuery(base, &info, sizeof info), sizeof info);
    CHECK_EQ(GetLastError(), 0x12345678u);
    CHECK(VirtualProtect(base, P, PAGE_READONLY, &old));
    CHECK_EQ(GetLastError(), 0x12345678u);
    CHECK(VirtualAlloc(base, P, MEM_RESET, PAGE_NOACCESS) == base);
    CHECK_EQ(GetLastError(), 0x12345678u);
    CHECK(VirtualFree(base, P, MEM_DECOMMIT));
    CHECK_EQ(GetLastError(), 0x12345678u);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
    CHECK_EQ(GetLastError(), 0x12345678u);
    (void)GetLargePageMinimum();
    CHECK_EQ(GetLastError(), 0x12345678u);
    SetLastError(ERROR_SUCCESS);
    CHECK_EQ(GetLastError(), 0);
}

/* [ms-GetLastError]: the last error is kept per thread; threads do not
 * overwrite each other's. A new thread starts with 0. */
static pthread_barrier_t error_barrier;
static DWORD error_seen[2][3];

static void *error_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    error_seen[me][0] = GetLastError(); /* a new thread's */
    SetLastError(me ? 222u : 111u);
    pthread_barrier_wait(&error_barrier); /* both have set theirs */
    if (me == 1)
        (void)VirtualAlloc(NULL, 0, MEM_RESERVE, PAGE_NOACCESS); /* fails: ERROR_INVALID_PARAMETER */
    pthread_barrier_wait(&error_barrier); /* thread 1 has failed a call */
    error_seen[me][1] = GetLastError();
    if (me == 0)
        (void)VirtualFree(NULL, 0, MEM_RELEASE); /* fails: ERROR_INVALID_ADDRESS */
    pthread_barrier_wait(&error_barrier); /* thread 0 has failed a call */
    error_seen[me][2] = GetLastError();
    return NULL;
}

TEST(last_error_is_per_thread)
{
    pthread_t threads[2];
    REQUIRE(pthread_barrier_init(&error_barrier, NULL, 2) == 0);
    SetLastError(0x5555u);
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_create(&threads[i], NULL, error_thread, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&error_barrier);
    CHECK_EQ(error_seen[0][0], ERROR_SUCCESS);
    CHECK_EQ(error_seen[1][0], ERROR_SUCCESS);
    CHECK_EQ(error_seen[0][1], 111u);
    CHECK_EQ(error_seen[1][1], ERROR_INVALID_PARAMETER);
    CHECK_EQ(error_seen[0][2], ERROR_INVALID_ADDRESS);
    CHECK_EQ(error_seen[1][2], ERROR_INVALID_PARAMETER);
    CHECK_EQ(GetLastError(), 0x5555u);
}

/* ---- one manager for the process -------------------------------------------------------- */

#define MANAGER_THREADS 8
static pthread_barrier_t manager_barrier;
static struct IHostMemoryManager *manager_seen[MANAGER_THREADS];
static void *manager_reserved[MANAGER_THREADS];

static void *manager_thread(void *arg)
{
    int me = (int)(intptr_t)arg;
    pthread_barrier_wait(&manager_barrier);
    manager_seen[me] = hostmem_win32_manager();
    manager_reserved[me] = VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_READWRITE);
    return NULL;
}

/* docs/win32.md: one process-wide manager, created once however many threads
 * make the process's first call at the same moment (main runs this first); memory reserved by one thread is
 * freed by another, as in a Windows process. */
TEST(one_manager_for_the_process)
{
    pthread_t threads[MANAGER_THREADS];
    REQUIRE(pthread_barrier_init(&manager_barrier, NULL, MANAGER_THREADS) == 0);
    for (int i = 0; i < MANAGER_THREADS; i++)
        REQUIRE(pthread_create(&threads[i], NULL, manager_thread, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < MANAGER_THREADS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&manager_barrier);
    struct IHostMemoryManager *m = hostmem_win32_manager();
    CHECK(m != NULL);
    for (int i = 0; i < MANAGER_THREADS; i++) {
        CHECK(manager_seen[i] == m);
        CHECK(manager_reserved[i] != NULL);
        if (manager_reserved[i])
            CHECK(VirtualFree(manager_reserved[i], 0, MEM_RELEASE));
    }
}

/* ---- large pages --------------------------------------------------------------------- */

/* The kernel's default huge page in bytes (/proc/meminfo), or 0 if it has none. */
static size_t kernel_huge_page(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    size_t kib = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Hugepagesize: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

/* [ms-GetLargePageMinimum]: the minimum large page, 0 when there are none.
 * [ms-VirtualAlloc]: MEM_LARGE_PAGES needs MEM_RESERVE | MEM_COMMIT and a size
 * that is a multiple of it (else ERROR_INVALID_PARAMETER); when no large pages
 * can be had the allocation fails (ERROR_NO_SYSTEM_RESOURCES), never silently
 * with small pages. */
TEST(large_pages_follow_the_minimum)
{
    SIZE_T minimum = GetLargePageMinimum();
    CHECK_EQ(minimum, kernel_huge_page());
    if (!minimum)
        return;
    CHECK_EQ(minimum & (minimum - 1), 0);
    CHECK_EQ(minimum % P, 0);
    CHECK_FAILS(VirtualAlloc(NULL, minimum, MEM_RESERVE | MEM_LARGE_PAGES, PAGE_READWRITE), 0,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualAlloc(NULL, minimum, MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE), 0,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualAlloc(NULL, minimum + P, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE),
                0, ERROR_INVALID_PARAMETER);
    SetLastError(SENTINEL);
    char *large = VirtualAlloc(NULL, minimum, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, PAGE_READWRITE);
    if (large) {
        CHECK_EQ(GetLastError(), SENTINEL);
        CHECK_EQ((uintptr_t)large % minimum, 0);
        large[0] = large[minimum - 1] = 1;
        CHECK(VirtualFree(large, 0, MEM_RELEASE));
    } else {
        CHECK_EQ(GetLastError(), ERROR_NO_SYSTEM_RESOURCES);
    }
}

/* ---- write watch ------------------------------------------------------------------- */

/* Whether MEM_WRITE_WATCH is available: [wine-k32] skips where Windows answers
 * ERROR_NOT_SUPPORTED; hostmem does where the kernel cannot track writes. */
static int write_watch_supported(void)
{
    char *base = VirtualAlloc(NULL, P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE);
    if (base) {
        VirtualFree(base, 0, MEM_RELEASE);
        return 1;
    }
    return GetLastError() != ERROR_NOT_SUPPORTED; /* another refusal: the ww_* tests say what fails */
}

/* [ms-VirtualAlloc]: "If you specify MEM_WRITE_WATCH, you must also specify
 * MEM_RESERVE": with it (and with MEM_COMMIT too) the allocation succeeds;
 * without it, ERROR_INVALID_PARAMETER. */
TEST(ww_needs_mem_reserve)
{
    CHECK_FAILS(VirtualAlloc(NULL, 16 * P, MEM_WRITE_WATCH, PAGE_READWRITE), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualAlloc(NULL, 16 * P, MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE), 0,
                ERROR_INVALID_PARAMETER);
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_READWRITE);
    CHECK(base != NULL);
    if (base) {
        CHECK_FAILS(VirtualAlloc(base, P, MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE), 0,
                    ERROR_INVALID_PARAMETER);
        CHECK(VirtualFree(base, 0, MEM_RELEASE));
    }
    base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    CHECK(base != NULL);
    if (base)
        CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-GetWriteWatch] [wine-k32 test_write_watch]: 0 on success; the pages
 * written since the allocation, in ascending order whatever the order of the
 * writes, *lpdwCount of them; *lpdwGranularity is the page size. The last error
 * is left alone. */
TEST(ww_reports_written_pages_in_ascending_order)
{
    void *results[64];
    ULONG_PTR count = 64;
    DWORD granularity = 0;
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    REQUIRE(base != NULL);
    SetLastError(SENTINEL);
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 0);
    CHECK_EQ(granularity, P);
    at(base, 4)[8] = 1;
    at(base, 1)[1] = 1;
    *(volatile char *)at(base, 2) = 1;
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    REQUIRE(count == 3);
    CHECK(results[0] == at(base, 1));
    CHECK(results[1] == at(base, 2));
    CHECK(results[2] == at(base, 4));
    /* without the reset flag nothing is reset */
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 3);
    /* a part of the region: only its pages */
    count = 64;
    CHECK_EQ(GetWriteWatch(0, at(base, 3), 2 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(results[0] == at(base, 4));
    CHECK_EQ(GetLastError(), SENTINEL);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-GetWriteWatch]: WRITE_WATCH_FLAG_RESET resets the state of the pages
 * reported; [ms-ResetWriteWatch]: resets a range, returns 0. */
TEST(ww_reset_flag_and_reset_write_watch)
{
    void *results[64];
    ULONG_PTR count = 64;
    DWORD granularity = 0;
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    REQUIRE(base != NULL);
    at(base, 1)[0] = 1;
    CHECK_EQ(GetWriteWatch(WRITE_WATCH_FLAG_RESET, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(count < 1 || results[0] == at(base, 1));
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 0);

    at(base, 2)[3] = 1;
    at(base, 4)[5] = 1;
    SetLastError(SENTINEL);
    CHECK_EQ(ResetWriteWatch(base, 3 * P), 0);
    CHECK_EQ(GetLastError(), SENTINEL);
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(count < 1 || results[0] == at(base, 4));
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [wine-k32 test_write_watch]: a count smaller than the written pages gets the
 * lowest ones, and with the reset flag only those are reset. */
TEST(ww_count_smaller_than_written_pages)
{
    void *results[64];
    ULONG_PTR count = 1;
    DWORD granularity = 0;
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    REQUIRE(base != NULL);
    at(base, 4)[0] = 1;
    at(base, 2)[0] = 1;
    at(base, 1)[0] = 1;
    CHECK_EQ(GetWriteWatch(WRITE_WATCH_FLAG_RESET, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(results[0] == at(base, 1));
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    REQUIRE(count == 2);
    CHECK(results[0] == at(base, 2));
    CHECK(results[1] == at(base, 4));
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [wine-k32 test_write_watch]: the initial protection does not matter, and
 * changing protections does not clear the pages written. */
TEST(ww_survives_protection_changes)
{
    void *results[64];
    ULONG_PTR count = 64;
    DWORD granularity = 0, old;
    char *base = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_WRITE_WATCH, PAGE_NOACCESS);
    REQUIRE(base != NULL);
    REQUIRE(VirtualAlloc(base, 16 * P, MEM_COMMIT, PAGE_NOACCESS) == base);
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 0);
    CHECK(VirtualProtect(base, 6 * P, PAGE_READWRITE, &old));
    at(base, 5)[200] = 3;
    CHECK(VirtualProtect(base, 6 * P, PAGE_NOACCESS, &old));
    CHECK_EQ(old, PAGE_READWRITE);
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, 16 * P, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(count < 1 || results[0] == at(base, 5));
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* [ms-GetWriteWatch]: "This address must be in a memory region that is
 * allocated by the VirtualAlloc function with MEM_WRITE_WATCH" - [wine-k32]:
 * otherwise the result is non-zero ((UINT)-1) and the last error
 * ERROR_INVALID_PARAMETER, for ResetWriteWatch too. */
TEST(ww_region_without_the_flag_is_invalid_parameter)
{
    void *results[64];
    ULONG_PTR count = 64;
    DWORD granularity = 0;
    int local = 0;
    char *plain = VirtualAlloc(NULL, 16 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    REQUIRE(plain != NULL);
    plain[0] = 1;
    CHECK_FAILS(GetWriteWatch(0, plain, 16 * P, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(ResetWriteWatch(plain, 16 * P), UINT_FAILED, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(GetWriteWatch(0, NULL, 16 * P, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(GetWriteWatch(0, &local, sizeof local, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(ResetWriteWatch(&local, sizeof local), UINT_FAILED, ERROR_INVALID_PARAMETER);
    CHECK(VirtualFree(plain, 0, MEM_RELEASE));
}

/* [wine-k32 test_write_watch] "some invalid parameter tests": a count of 0, a
 * bad flag, a size of 0, a range past the region are ERROR_INVALID_PARAMETER;
 * a NULL count, granularity or array (with a count) are ERROR_NOACCESS;
 * ResetWriteWatch with a size of 0 is ERROR_INVALID_PARAMETER. */
TEST(ww_bad_arguments)
{
    void *results[64];
    ULONG_PTR count;
    DWORD granularity = 0;
    size_t size = 16 * P;
    char *base = VirtualAlloc(NULL, size, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    REQUIRE(base != NULL);
    base[0] = 1;
    count = 0;
    CHECK_FAILS(GetWriteWatch(0, base, size, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    count = 0;
    CHECK_FAILS(GetWriteWatch(0, base, size, NULL, &count, &granularity), UINT_FAILED, ERROR_INVALID_PARAMETER);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0, base, size, NULL, &count, &granularity), UINT_FAILED, ERROR_NOACCESS);
    CHECK_FAILS(GetWriteWatch(0, base, size, results, NULL, &granularity), UINT_FAILED, ERROR_NOACCESS);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0, base, size, results, &count, NULL), UINT_FAILED, ERROR_NOACCESS);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0xDEADBEEFu, base, size, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0, base, 0, results, &count, &granularity), UINT_FAILED, ERROR_INVALID_PARAMETER);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0, base, 2 * size, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    count = 64;
    CHECK_FAILS(GetWriteWatch(0, base + size - P, P + 1, results, &count, &granularity), UINT_FAILED,
                ERROR_INVALID_PARAMETER);
    CHECK_FAILS(ResetWriteWatch(base, 0), UINT_FAILED, ERROR_INVALID_PARAMETER);
    /* none of these reset anything */
    count = 64;
    CHECK_EQ(GetWriteWatch(0, base, size, results, &count, &granularity), 0);
    CHECK_EQ(count, 1);
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

int main(void)
{
    P = (size_t)sysconf(_SC_PAGESIZE);
    G = P > 65536 ? P : 65536;
#ifndef UNDER_SANITIZER
    RUN(no_call_allocates_heap_memory); /* in a child: its first call creates its manager */
    RUN(no_call_allocates_heap_memory_under_a_policy);
#else
    SKIP(no_call_allocates_heap_memory, "a sanitizer replaces malloc itself");
    SKIP(no_call_allocates_heap_memory_under_a_policy, "a sanitizer replaces malloc itself");
#endif
    RUN(one_manager_for_the_process); /* first here: 8 threads race to create the manager */
    RUN(reserve_commit_decommit_release);
    RUN(commit_with_null_address_reserves_and_commits);
    RUN(alloc_size_zero_is_invalid_parameter);
    RUN(alloc_bad_protection_is_invalid_parameter);
    RUN(alloc_bad_type_is_invalid_parameter);
    RUN(alloc_where_not_allowed_is_invalid_address);
    RUN(out_of_memory_is_not_enough_memory);
    RUN(free_bad_type_is_invalid_parameter);
    RUN(release_with_nonzero_size_is_invalid_parameter);
    RUN(free_not_at_base_is_invalid_address);
    RUN(double_free_is_invalid_address);
    RUN(free_of_memory_never_allocated_is_invalid_address);
    RUN(protect_of_reserved_pages_is_invalid_address);
    RUN(protect_returns_old_protection);
    RUN(query_results_and_refusals);
    RUN(query_answers_for_memory_not_from_virtualalloc);
    RUN(last_error_unchanged_on_success);
    RUN(last_error_is_per_thread);
    RUN(large_pages_follow_the_minimum);
    if (write_watch_supported()) {
        RUN(ww_needs_mem_reserve);
        RUN(ww_reports_written_pages_in_ascending_order);
        RUN(ww_reset_flag_and_reset_write_watch);
        RUN(ww_count_smaller_than_written_pages);
        RUN(ww_survives_protection_changes);
        RUN(ww_region_without_the_flag_is_invalid_parameter);
        RUN(ww_bad_arguments);
    } else {
        const char *why = "MEM_WRITE_WATCH is not supported here (ERROR_NOT_SUPPORTED)";
        SKIP(ww_needs_mem_reserve, why);
        SKIP(ww_reports_written_pages_in_ascending_order, why);
        SKIP(ww_reset_flag_and_reset_write_watch, why);
        SKIP(ww_count_smaller_than_written_pages, why);
        SKIP(ww_survives_protection_changes, why);
        SKIP(ww_region_without_the_flag_is_invalid_parameter, why);
        SKIP(ww_bad_arguments, why);
    }
    printf("test_win32: %d passed, %d failed, %d skipped\n", test_passed_count, test_failed_count,
           test_skipped_count);
    return test_failed_count ? 1 : 0;
}
