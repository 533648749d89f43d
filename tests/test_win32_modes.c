/*
 * test_win32_modes.c - the Win32 face's manager with one-shot guard pages and
 * emulated write watch (docs/win32.md "Modes"): asked for by the environment
 * (HOSTMEM_GUARD_PAGES=1, HOSTMEM_EMULATE_WRITE_WATCH=1) or by
 * hostmem_win32_set_flags before the first call creates the manager; too late
 * after it (ERROR_ALREADY_INITIALIZED, nothing changed); a value other than 1
 * or 0 makes every call fail with ERROR_INVALID_PARAMETER, as an unknown
 * HOSTMEM_DYNAMIC_CODE does.
 *
 * The face's manager is process-wide and read once, so each case runs in a
 * forked child of a parent that never calls the face (test_in_child).
 */
#define COBJMACROS
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "hostmem_win32.h"

#define SENTINEL 0xDEADBEEFu

static size_t P;

static void clear_environment(void)
{
    unsetenv("HOSTMEM_GUARD_PAGES");
    unsetenv("HOSTMEM_EMULATE_WRITE_WATCH");
    unsetenv("HOSTMEM_DYNAMIC_CODE");
}

static void face_validates(void)
{
    char why[256] = "";
    HRESULT hr = hostmem_validate(hostmem_win32_manager(), HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        TEST_FAIL_AT("hostmem_validate(the face's manager, KERNEL) -> %08x: %s", (unsigned)hr, why);
}

/* ---- guard pages ----------------------------------------------------------------------------- */

static volatile int guard_fired;
static void *volatile guard_page;

static int on_guard(void *context, void *page, int access)
{
    (void)context, (void)access;
    guard_fired++;
    guard_page = page;
    return HOSTMEM_GUARD_RETRY;
}

/* With guard pages on, PAGE_GUARD is one-shot as on Windows: the first access
 * clears the guard on that page only, and VirtualQuery shows it gone. */
static void guard_is_one_shot(void)
{
    char *p = VirtualAlloc(NULL, 2 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    CHECK(p != NULL);
    if (!p)
        return;
    CHECK_HR(hostmem_set_guard_handler(hostmem_win32_manager(), on_guard, NULL), S_OK);
    ((volatile char *)p)[P] = 7; /* the second page's guard fires; the write is retried */
    CHECK_EQ(guard_fired, 1);
    CHECK(guard_page == p + P);
    ((volatile char *)p)[P + 1] = 8; /* a plain write now */
    CHECK_EQ(guard_fired, 1);
    CHECK_EQ(p[P], 7);
    MEMORY_BASIC_INFORMATION info;
    CHECK_EQ(VirtualQuery(p, &info, sizeof info), sizeof info);
    CHECK_EQ(info.Protect, PAGE_READWRITE | PAGE_GUARD); /* the first page keeps its guard */
    CHECK_EQ(info.RegionSize, P);
    CHECK_EQ(VirtualQuery(p + P, &info, sizeof info), sizeof info);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    face_validates();
    CHECK(VirtualFree(p, 0, MEM_RELEASE));
}

static void guard_from_environment(void)
{
    clear_environment();
    setenv("HOSTMEM_GUARD_PAGES", "1", 1);
    guard_is_one_shot();
}

static void guard_from_the_call(void)
{
    clear_environment();
    CHECK(hostmem_win32_set_flags(HOSTMEM_GUARD_PAGES));
    guard_is_one_shot();
}

TEST(guard_pages_on_by_environment_or_call_are_one_shot)
{
    test_in_child(guard_from_environment, "HOSTMEM_GUARD_PAGES=1");
    test_in_child(guard_from_the_call, "hostmem_win32_set_flags(HOSTMEM_GUARD_PAGES)");
}

/* Without the mode a guard page's first access is an access violation, as
 * hostmem's default has always been (PAGE_GUARD stays: docs/contract.md). */
static sigjmp_buf violation;
static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(violation, 1);
}

/* A guard page's first access faults, and the guard stays. */
static void guard_faults(void)
{
    char *p = VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD);
    CHECK(p != NULL);
    if (!p)
        return;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, &old);
    volatile int faulted = 0;
    if (sigsetjmp(violation, 1) == 0)
        ((volatile char *)p)[0] = 1;
    else
        faulted = 1;
    sigaction(SIGSEGV, &old, NULL);
    CHECK_EQ(faulted, 1);
    MEMORY_BASIC_INFORMATION info;
    CHECK_EQ(VirtualQuery(p, &info, sizeof info), sizeof info);
    CHECK_EQ(info.Protect, PAGE_READWRITE | PAGE_GUARD);
    CHECK(VirtualFree(p, 0, MEM_RELEASE));
}

static void guard_off_by_default(void)
{
    clear_environment();
    guard_faults();
}

TEST(guard_pages_off_unless_asked_for)
{
    test_in_child(guard_off_by_default, "no mode asked for");
}

/* ---- emulated write watch -------------------------------------------------------------------- */

/* Whether the kernel's own write into a clean page of p fails (EFAULT): the
 * emulation's mark (docs/writewatch.md), where the kernel's tracking records it. */
static int kernel_write_faults(char *p)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    int faults = write(fds[1], "x", 1) == 1 && read(fds[0], p, 1) == -1 && errno == EFAULT;
    close(fds[0]);
    close(fds[1]);
    return faults;
}

/* Emulated write watch answers as the kernel's: the written pages, in order;
 * it is the emulation that answers (a kernel write into a clean page fails). */
static void watch_works(void)
{
    char *p = VirtualAlloc(NULL, 8 * P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    CHECK(p != NULL);
    if (!p)
        return;
    ((volatile char *)p)[3 * P] = 1;
    ((volatile char *)p)[6 * P + 9] = 2;
    void *found[8];
    ULONG_PTR count = 8;
    DWORD granularity = 0;
    CHECK_EQ(GetWriteWatch(WRITE_WATCH_FLAG_RESET, p, 8 * P, found, &count, &granularity), 0);
    CHECK_EQ(count, 2);
    CHECK(found[0] == p + 3 * P && found[1] == p + 6 * P);
    CHECK_EQ(granularity, P);
    count = 8;
    CHECK_EQ(GetWriteWatch(0, p, 8 * P, found, &count, &granularity), 0);
    CHECK_EQ(count, 0);
    CHECK_EQ(kernel_write_faults(p + 5 * P), 1);
    face_validates();
    CHECK(VirtualFree(p, 0, MEM_RELEASE));
}

static void watch_from_environment(void)
{
    clear_environment();
    setenv("HOSTMEM_EMULATE_WRITE_WATCH", "1", 1);
    watch_works();
}

static void watch_from_the_call(void)
{
    clear_environment();
    CHECK(hostmem_win32_set_flags(HOSTMEM_EMULATE_WRITE_WATCH | HOSTMEM_GUARD_PAGES));
    watch_works();
    guard_is_one_shot();
}

TEST(emulated_write_watch_on_by_environment_or_call)
{
    test_in_child(watch_from_environment, "HOSTMEM_EMULATE_WRITE_WATCH=1");
    test_in_child(watch_from_the_call, "hostmem_win32_set_flags(EMULATE_WRITE_WATCH | GUARD_PAGES)");
}

/* ---- when and what may be asked ---------------------------------------------------------------- */

static void too_late(void)
{
    clear_environment();
    SetLastError(SENTINEL);
    CHECK(!hostmem_win32_set_flags(0x1u)); /* HOSTMEM_COMPACT is not the face's to ask */
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    CHECK(hostmem_win32_set_flags(0)); /* nothing asked: nothing to refuse */
    void *p = VirtualAlloc(NULL, P, MEM_RESERVE, PAGE_NOACCESS);
    CHECK(p != NULL);
    SetLastError(SENTINEL);
    CHECK(!hostmem_win32_set_flags(HOSTMEM_GUARD_PAGES));
    CHECK_EQ(GetLastError(), ERROR_ALREADY_INITIALIZED);
    CHECK(VirtualFree(p, 0, MEM_RELEASE));
    /* the variables are read once, too: neither mode is on */
    setenv("HOSTMEM_GUARD_PAGES", "1", 1);
    setenv("HOSTMEM_EMULATE_WRITE_WATCH", "1", 1);
    guard_faults();
    char *w = VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH, PAGE_READWRITE);
    if (w) { /* where the kernel cannot track writes, the reservation is refused instead */
        CHECK_EQ(kernel_write_faults(w), 0);
        CHECK(VirtualFree(w, 0, MEM_RELEASE));
    } else {
        CHECK_EQ(GetLastError(), ERROR_NOT_SUPPORTED);
    }
}

TEST(flags_are_asked_for_before_the_first_call_only)
{
    test_in_child(too_late, "hostmem_win32_set_flags after the first call");
}

static void bogus_value(void)
{
    clear_environment();
    setenv("HOSTMEM_GUARD_PAGES", "yes", 1);
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    SetLastError(SENTINEL);
    void *p = VirtualAlloc(NULL, P, MEM_RESERVE, PAGE_NOACCESS);
    DWORD error = GetLastError();
    dup2(saved, 2);
    close(saved);
    close(null);
    CHECK(p == NULL);
    CHECK_EQ(error, ERROR_INVALID_PARAMETER);
    CHECK(hostmem_win32_manager() == NULL);
}

TEST(a_value_other_than_1_or_0_refuses_every_call)
{
    test_in_child(bogus_value, "HOSTMEM_GUARD_PAGES=yes");
}

int main(void)
{
    P = (size_t)sysconf(_SC_PAGESIZE);
    RUN(guard_pages_on_by_environment_or_call_are_one_shot);
    RUN(guard_pages_off_unless_asked_for);
    RUN(emulated_write_watch_on_by_environment_or_call);
    RUN(flags_are_asked_for_before_the_first_call_only);
    RUN(a_value_other_than_1_or_0_refuses_every_call);
    return TEST_SUMMARY("test_win32_modes");
}
