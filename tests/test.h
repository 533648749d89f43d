/*
 * test.h - the small test harness every hostmem test program uses.
 *
 * TEST(name) defines a test; RUN(name) runs it. CHECK* macros are non-fatal:
 * they print the expression, both values (result codes by name) and the line,
 * mark the current test failed and go on. REQUIRE* return from the test on
 * failure. TEST_SUMMARY() prints "<program>: N passed, N failed, N skipped"
 * and returns the exit status. Tests never assert on time.
 *
 * test_in_child(body, what) runs a test's body in a forked child that reports
 * through its exit status (a test that must change the process itself);
 * test_vm_size() and test_limit_address_space(bytes) read its VmSize and set
 * its RLIMIT_AS.
 *
 * Skips are counted, never passed off as passes: TEST_SKIP(why...) in a test
 * stops it and counts it skipped; SKIP(name, why...) in main counts a test not
 * run here (SKIP_NOT_BUILT when the build leaves it out). Either prints one line, "<test>: skipped: <why>", in one piece
 * (tests/run.sh shows it whole and adds the count to the closing line).
 *
 * One hook checks every manager of every test program (STYLE.md: validate
 * after each test): after each test RUN validates every live manager, and
 * every manager is validated as its last reference goes, both with the kernel
 * check (hostmem_validate(HOSTMEM_VALIDATE_KERNEL)) against the real kernel,
 * whatever OS table a test injects. A manager a test disabled or shut down is
 * skipped: it no longer vouches for its map. TEST_NO_VALIDATE in a test turns
 * the hook off for the rest of that test (it must say why).
 */
#ifndef HOSTMEM_TEST_H
#define HOSTMEM_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hostmem.h"
#include "os.h"
#include "registry.h"

/* UNDER_ASAN: built with AddressSanitizer (gcc or clang) */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
/* UNDER_TSAN: built with ThreadSanitizer (gcc or clang) */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

static int test_current_failed __attribute__((unused));
static int test_current_skipped __attribute__((unused));
static int test_passed_count;
static int test_failed_count;
static int test_skipped_count;
static const char *test_current_name __attribute__((unused)) = "";

static inline const char *test_hr_name(HRESULT hr, char *buffer, size_t size)
{
    const char *name = hostmem_result_name(hr);
    if (name)
        return name;
    snprintf(buffer, size, "0x%08" PRIX32, (uint32_t)hr);
    return buffer;
}

#define TEST_FAIL_AT(...)                                                        \
    do {                                                                         \
        fprintf(stderr, "  FAIL %s (%s:%d): ", test_current_name, __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                            \
        fputc('\n', stderr);                                                     \
        test_current_failed = 1;                                                 \
    } while (0)

#define CHECK(cond)                                           \
    do {                                                      \
        if (!(cond))                                          \
            TEST_FAIL_AT("CHECK(%s)", #cond);                 \
    } while (0)

#define CHECK_HR(expr, expected)                                                     \
    do {                                                                             \
        HRESULT check_actual_ = (expr), check_expected_ = (expected);                \
        if (check_actual_ != check_expected_) {                                      \
            char check_b1_[16], check_b2_[16];                                       \
            TEST_FAIL_AT("%s -> %s, expected %s", #expr,                             \
                         test_hr_name(check_actual_, check_b1_, sizeof check_b1_),   \
                         test_hr_name(check_expected_, check_b2_, sizeof check_b2_)); \
        }                                                                            \
    } while (0)

#define CHECK_EQ(a, b)                                                                    \
    do {                                                                                  \
        uintmax_t check_a_ = (uintmax_t)(a), check_b_ = (uintmax_t)(b);                   \
        if (check_a_ != check_b_)                                                         \
            TEST_FAIL_AT("%s == %s: 0x%jx != 0x%jx", #a, #b, check_a_, check_b_);         \
    } while (0)

#define REQUIRE(cond)                                         \
    do {                                                      \
        if (!(cond)) {                                        \
            TEST_FAIL_AT("REQUIRE(%s)", #cond);               \
            return;                                           \
        }                                                     \
    } while (0)

#define REQUIRE_HR(expr, expected)                                                   \
    do {                                                                             \
        HRESULT check_actual_ = (expr), check_expected_ = (expected);                \
        if (check_actual_ != check_expected_) {                                      \
            char check_b1_[16], check_b2_[16];                                       \
            TEST_FAIL_AT("%s -> %s, expected %s", #expr,                             \
                         test_hr_name(check_actual_, check_b1_, sizeof check_b1_),   \
                         test_hr_name(check_expected_, check_b2_, sizeof check_b2_)); \
            return;                                                                  \
        }                                                                            \
    } while (0)

/* A manager's statistics, all of them. */
static inline hostmem_stats stats_of(IHostMemoryManager *m)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    hostmem_get_stats(m, &s);
    return s;
}

/* Runs body in a forked child (a test that must change the process: its
 * limits, its mapping table); the child's failures are printed by the child
 * (the harness's FAIL lines) and come back as its exit status. */
static inline void test_in_child(void (*body)(void), const char *what)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        TEST_FAIL_AT("fork for %s: %s", what, strerror(errno));
        return;
    }
    if (pid == 0) {
        test_current_failed = 0;
        body();
        fflush(stdout);
        fflush(stderr);
        _exit(test_current_failed ? 1 : 0);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            TEST_FAIL_AT("waitpid for %s: %s", what, strerror(errno));
            return;
        }
    if (WIFSIGNALED(status))
        TEST_FAIL_AT("the child (%s) was killed by signal %d", what, WTERMSIG(status));
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        TEST_FAIL_AT("the child (%s) failed (exit %d)", what, WEXITSTATUS(status));
}

/* The process's VmSize in bytes (the kernel's own count, what RLIMIT_AS bounds);
 * 0 if /proc cannot tell. */
static inline uint64_t test_vm_size(void)
{
    char text[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = 0;
    const char *field = strstr(text, "\nVmSize:");
    return field ? strtoull(field + 8, NULL, 10) * 1024 : 0;
}

/* This process's RLIMIT_AS soft limit to bytes (UINT64_MAX: back to the hard
 * limit); 0 or an errno. */
static inline int test_limit_address_space(uint64_t bytes)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl))
        return errno;
    rl.rlim_cur = bytes == UINT64_MAX ? rl.rlim_max : (rlim_t)bytes;
    return setrlimit(RLIMIT_AS, &rl) ? errno : 0;
}

static int test_validate_off __attribute__((unused));

static inline void test_validate_manager(IHostMemoryManager *m, int live, void *context)
{
    const char *when = (const char *)context;
    if (!live || test_validate_off)
        return;
    const struct hostmem_os_ops *injected = hostmem_os;
    hostmem_os = &hostmem_os_linux; /* the kernel's own view, whatever the test injects */
    char why[256];
    HRESULT hr = hostmem_validate(m, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    hostmem_os = injected;
    if (hr != S_OK) {
        char b[16];
        TEST_FAIL_AT("manager %p does not validate %s: %s (%s)", (void *)m, when,
                     test_hr_name(hr, b, sizeof b), why);
    }
}

static inline void test_validate_on_destroy(IHostMemoryManager *m, int live)
{
    test_validate_manager(m, live, (void *)"as it is released");
}

/* Turns the hook off for the rest of the current test. */
#define TEST_NO_VALIDATE(why) ((void)(why), test_validate_off = 1)

#define TEST(name) static void name(void)

/* One skip line, written between flushes so that stderr cannot cut into it. */
#define TEST_SKIP_LINE(name, ...)            \
    do {                                     \
        fflush(stdout);                      \
        printf("%s: skipped: ", (name));     \
        printf(__VA_ARGS__);                 \
        putchar('\n');                       \
        fflush(stdout);                      \
    } while (0)

/* In a test (not in a helper it calls): stops it, counted skipped. */
#define TEST_SKIP(...)                                  \
    do {                                                \
        TEST_SKIP_LINE(test_current_name, __VA_ARGS__); \
        test_current_skipped = 1;                       \
        return;                                         \
    } while (0)

/* In main, in place of RUN(name): a test not run here, counted skipped. */
#define SKIP(name, ...)                       \
    do {                                      \
        (void)name;                           \
        SKIP_NOT_BUILT(name, __VA_ARGS__);    \
    } while (0)
/* The same for a test not even compiled in this build. */
#define SKIP_NOT_BUILT(name, ...)             \
    do {                                      \
        TEST_SKIP_LINE(#name, __VA_ARGS__);   \
        test_skipped_count++;                 \
    } while (0)

#define RUN(name)                                                \
    do {                                                         \
        test_current_name = #name;                               \
        test_current_failed = 0;                                 \
        test_current_skipped = 0;                                \
        test_validate_off = 0;                                   \
        hostmem_registry_on_destroy = test_validate_on_destroy;  \
        name();                                                  \
        hostmem_registry_each(test_validate_manager, (void *)"after the test"); \
        test_validate_off = 0;                                   \
        if (test_current_failed) {                               \
            test_failed_count++;                                 \
            fprintf(stderr, "not ok %s\n", #name);               \
        } else if (test_current_skipped) {                       \
            test_skipped_count++;                                \
        } else {                                                 \
            test_passed_count++;                                 \
            if (getenv("TEST_VERBOSE"))                          \
                fprintf(stderr, "ok %s\n", #name);               \
        }                                                        \
    } while (0)

#define TEST_SUMMARY(program)                                                      \
    (printf("%s: %d passed, %d failed, %d skipped\n", (program), test_passed_count, \
            test_failed_count, test_skipped_count),                                \
     test_failed_count ? 1 : 0)

#endif /* HOSTMEM_TEST_H */
