/*
 * test_win32_code.c - issue 23 through the Win32 face (include/hostmem_win32.h):
 * the process-wide manager's dynamic-code policy, from HOSTMEM_DYNAMIC_CODE
 * ("any", "wx", "none"; read once, when the first call creates the manager)
 * or from hostmem_restrict_dynamic_code(hostmem_win32_manager(), ...) before
 * the first VirtualAlloc. A refusal is what Windows returns under Arbitrary
 * Code Guard: NULL or FALSE with the last error ERROR_DYNAMIC_CODE_BLOCKED
 * (1655); an unknown value makes every call fail with ERROR_INVALID_PARAMETER
 * and says so once on stderr.
 *
 * The face's manager is process-wide and the variable is read once, so each
 * case runs in a forked child of a parent that never calls the face
 * (test_in_child): the child sets the variable, then makes its first call.
 * A host that also uses hostmem.h includes it first (hostmem_win32.h says so);
 * tests/test.h brings it.
 */
#define COBJMACROS
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "hostmem_win32.h"

#define SENTINEL 0xDEADBEEFu

static size_t P;

/*
 * CHECK_FAILS(call, failure, error): the call returns Windows' failure value
 * and sets the thread's last error to error (it was SENTINEL before).
 */
#define CHECK_FAILS(call, failure, error)                                                    \
    do {                                                                                     \
        SetLastError(SENTINEL);                                                              \
        uintmax_t fails_result_ = (uintmax_t)(call);                                         \
        DWORD fails_error_ = GetLastError();                                                 \
        if (fails_result_ != (uintmax_t)(failure) || fails_error_ != (DWORD)(error))         \
            TEST_FAIL_AT("%s -> 0x%jx, last error %u; expected 0x%jx, last error %u", #call, \
                         fails_result_, (unsigned)fails_error_, (uintmax_t)(failure),        \
                         (unsigned)(error));                                                 \
    } while (0)

/* The value the child puts in HOSTMEM_DYNAMIC_CODE before its first call; NULL: unset. */
static const char *child_value;

static void set_value(void)
{
    if (child_value)
        setenv("HOSTMEM_DYNAMIC_CODE", child_value, 1);
    else
        unsetenv("HOSTMEM_DYNAMIC_CODE");
}

static hostmem_stats face_stats(void)
{
    return stats_of(hostmem_win32_manager());
}

static void face_validates(void)
{
    char why[256] = "";
    HRESULT hr = hostmem_validate(hostmem_win32_manager(), HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    if (hr != S_OK)
        TEST_FAIL_AT("hostmem_validate(the face's manager, KERNEL) -> %08x: %s", (unsigned)hr, why);
}

/* ---- wx -------------------------------------------------------------------------- */

static void face_wx(void)
{
    set_value();
    DWORD old = SENTINEL;
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE, PAGE_EXECUTE_READWRITE), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_EXECUTE_READWRITE | PAGE_GUARD), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    /* invalid first: Windows refuses PAGE_EXECUTE_WRITECOPY for private memory */
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY), 0, ERROR_INVALID_PARAMETER);
    SetLastError(SENTINEL);
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
    CHECK(base != NULL);
    if (!base)
        return;
    base[0] = 1;
    CHECK(VirtualProtect(base, P, PAGE_EXECUTE_READ, &old)); /* RW -> RX */
    CHECK_EQ(old, PAGE_READWRITE);
    CHECK(VirtualProtect(base, P, PAGE_READWRITE, &old)); /* and back */
    CHECK_EQ(old, PAGE_EXECUTE_READ);
    CHECK(VirtualAlloc(base + P, P, MEM_COMMIT, PAGE_EXECUTE) == base + P);
    CHECK_EQ(GetLastError(), SENTINEL); /* successes leave it alone */
    old = SENTINEL;
    CHECK_FAILS(VirtualProtect(base, 2 * P, PAGE_EXECUTE_READWRITE, &old), FALSE, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_EQ(old, SENTINEL);
    MEMORY_BASIC_INFORMATION info;
    CHECK_EQ(VirtualQuery(base, &info, sizeof info), sizeof info);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK_EQ(info.RegionSize, P);
    CHECK_EQ(base[0], 1);
    /* MEM_RESET ignores the protection */
    CHECK(VirtualAlloc(base, P, MEM_RESET, PAGE_EXECUTE_READWRITE) == base);
    hostmem_stats s = face_stats();
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_WX);
    CHECK_EQ(s.dynamic_code_refusals, 4);
    /* the variable was read once: changing it now changes nothing */
    setenv("HOSTMEM_DYNAMIC_CODE", "none", 1);
    CHECK(VirtualProtect(base, P, PAGE_EXECUTE_READ, &old));
    /* the host may tighten it, never loosen it */
    CHECK_HR(hostmem_restrict_dynamic_code(hostmem_win32_manager(), HOSTMEM_CODE_ANY), E_ACCESSDENIED);
    CHECK_HR(hostmem_restrict_dynamic_code(hostmem_win32_manager(), HOSTMEM_CODE_NONE), S_OK);
    CHECK_FAILS(VirtualProtect(base, P, PAGE_EXECUTE_READ, &old), FALSE, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_FAILS(VirtualAlloc(base + 2 * P, P, MEM_COMMIT, PAGE_EXECUTE_READ), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    face_validates();
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* Windows ACG ([ms-PROCESS_MITIGATION_DYNAMIC_CODE_POLICY]) as W^X: under HOSTMEM_DYNAMIC_CODE=wx: VirtualAlloc
 * with PAGE_EXECUTE_READWRITE (with or without MEM_COMMIT, with a modifier)
 * returns NULL with ERROR_DYNAMIC_CODE_BLOCKED; PAGE_EXECUTE_WRITECOPY is
 * ERROR_INVALID_PARAMETER first; RW -> RX -> RW by VirtualProtect succeeds,
 * leaving the last error alone; a refused VirtualProtect fails with 1655 and
 * changes nothing; the variable is read once; the host can tighten the
 * policy to none through hostmem_win32_manager(), never loosen it. */
TEST(face_wx_refuses_writable_code_with_dynamic_code_blocked)
{
    child_value = "wx";
    test_in_child(face_wx, "HOSTMEM_DYNAMIC_CODE=wx");
}

/* ---- none -------------------------------------------------------------------------- */

static void face_none(void)
{
    set_value();
    static const DWORD code[] = {PAGE_EXECUTE, PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE, PAGE_EXECUTE_READ | PAGE_GUARD,
                                 PAGE_EXECUTE | PAGE_NOCACHE};
    for (size_t i = 0; i < sizeof code / sizeof code[0]; i++) {
        CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, code[i]), 0, ERROR_DYNAMIC_CODE_BLOCKED);
        CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE, code[i]), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    }
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_COMMIT, PAGE_EXECUTE_WRITECOPY), 0, ERROR_INVALID_PARAMETER);
    DWORD old = SENTINEL;
    char *base = VirtualAlloc(NULL, 4 * P, MEM_RESERVE, PAGE_READWRITE);
    CHECK(base != NULL);
    if (!base)
        return;
    CHECK(VirtualAlloc(base, 2 * P, MEM_COMMIT, PAGE_READWRITE) == base);
    CHECK_FAILS(VirtualAlloc(base + 2 * P, P, MEM_COMMIT, PAGE_EXECUTE_READ), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_FAILS(VirtualAlloc(base, P, MEM_COMMIT, PAGE_EXECUTE_READ), 0, ERROR_DYNAMIC_CODE_BLOCKED); /* committed */
    CHECK_FAILS(VirtualProtect(base, P, PAGE_EXECUTE_READ, &old), FALSE, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_FAILS(VirtualProtect(base, P, PAGE_EXECUTE, &old), FALSE, ERROR_DYNAMIC_CODE_BLOCKED);
    CHECK_EQ(old, SENTINEL);
    MEMORY_BASIC_INFORMATION info;
    CHECK_EQ(VirtualQuery(base, &info, sizeof info), sizeof info);
    CHECK_EQ(info.State, MEM_COMMIT);
    CHECK_EQ(info.Protect, PAGE_READWRITE);
    CHECK_EQ(info.RegionSize, 2 * P);
    CHECK_EQ(VirtualQuery(base + 2 * P, &info, sizeof info), sizeof info);
    CHECK_EQ(info.State, MEM_RESERVE);
    SetLastError(SENTINEL);
    CHECK(VirtualProtect(base, P, PAGE_READONLY, &old)); /* nothing executable: fine */
    CHECK(VirtualAlloc(base, P, MEM_RESET, PAGE_EXECUTE_READ) == base); /* protection ignored */
    CHECK_EQ(GetLastError(), SENTINEL);
    hostmem_stats s = face_stats();
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_EQ(s.dynamic_code_refusals, 2 * 5 + 4);
    CHECK_HR(hostmem_restrict_dynamic_code(hostmem_win32_manager(), HOSTMEM_CODE_WX), E_ACCESSDENIED);
    CHECK_HR(hostmem_restrict_dynamic_code(hostmem_win32_manager(), HOSTMEM_CODE_ANY), E_ACCESSDENIED);
    face_validates();
    CHECK(VirtualFree(base, 0, MEM_RELEASE));
}

/* Under HOSTMEM_DYNAMIC_CODE=none (Windows' Arbitrary Code Guard): every
 * executable protection is refused with ERROR_DYNAMIC_CODE_BLOCKED - on a
 * reservation, a commit (of pages already committed too) and VirtualProtect
 * to PAGE_EXECUTE_READ or PAGE_EXECUTE - changing nothing; MEM_RESET ignores
 * the protection; the host cannot loosen the policy. */
TEST(face_none_refuses_every_executable_protection)
{
    child_value = "none";
    test_in_child(face_none, "HOSTMEM_DYNAMIC_CODE=none");
}

/* ---- any, unset ------------------------------------------------------------------------ */

static void face_any(void)
{
    set_value();
    char *rwx = VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE);
    CHECK(rwx != NULL);
    DWORD old;
    if (rwx) {
        rwx[0] = 1;
        CHECK(VirtualProtect(rwx, P, PAGE_EXECUTE, &old));
        CHECK_EQ(old, PAGE_EXECUTE_READWRITE);
        CHECK_EQ(((volatile char *)rwx)[0], 1); /* PAGE_EXECUTE is readable */
        CHECK(VirtualFree(rwx, 0, MEM_RELEASE));
    }
    hostmem_stats s = face_stats();
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_ANY);
    CHECK_EQ(s.dynamic_code_refusals, 0);
    face_validates();
}

/* HOSTMEM_DYNAMIC_CODE unset, or "any": every protection Windows allows. */
TEST(face_unset_or_any_allows_code)
{
    child_value = NULL;
    test_in_child(face_any, "HOSTMEM_DYNAMIC_CODE unset");
    child_value = "any";
    test_in_child(face_any, "HOSTMEM_DYNAMIC_CODE=any");
}

/* ---- a value the face does not know ---------------------------------------------------------- */

static void face_bogus(void)
{
    char path[] = "/tmp/hostmem-win32-code-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        TEST_FAIL_AT("mkstemp: %s", strerror(errno));
        return;
    }
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    set_value();
    MEMORY_BASIC_INFORMATION info;
    DWORD old = SENTINEL;
    int local = 0;
    void *written[4];
    ULONG_PTR count = 4;
    DWORD granularity;
    SetLastError(SENTINEL);
    struct IHostMemoryManager *m = hostmem_win32_manager();
    DWORD manager_error = GetLastError();
    /* every call, whatever it asks */
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE, PAGE_NOACCESS), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualFree(&local, 0, MEM_RELEASE), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualQuery(&local, &info, sizeof info), 0, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(VirtualProtect(&local, 1, PAGE_READONLY, &old), FALSE, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(GetWriteWatch(0, &local, 1, written, &count, &granularity), (UINT)-1, ERROR_INVALID_PARAMETER);
    CHECK_FAILS(ResetWriteWatch(&local, 1), (UINT)-1, ERROR_INVALID_PARAMETER);
    SetLastError(SENTINEL);
    CHECK(hostmem_win32_manager() == NULL);
    CHECK_EQ(GetLastError(), ERROR_INVALID_PARAMETER);
    (void)GetLargePageMinimum(); /* not the manager's: answers */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    CHECK(m == NULL);
    CHECK_EQ(manager_error, ERROR_INVALID_PARAMETER);
    CHECK_EQ(old, SENTINEL);
    /* one line on stderr, naming the variable and its value, however many calls failed */
    char text[1024];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = 0;
    const char *named = strstr(text, "HOSTMEM_DYNAMIC_CODE=");
    CHECK(named != NULL);
    if (named && child_value)
        CHECK(strncmp(named + strlen("HOSTMEM_DYNAMIC_CODE="), child_value, strlen(child_value)) == 0);
    size_t lines = 0;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    CHECK_EQ(lines, 1);
    if (lines != 1)
        fprintf(stderr, "  stderr was: %s", text);
}

/* docs/win32.md and hostmem_win32.h: an unknown HOSTMEM_DYNAMIC_CODE (a host
 * asked for a policy the face cannot give) makes every call that needs the
 * manager fail with ERROR_INVALID_PARAMETER - VirtualAlloc, VirtualFree,
 * VirtualQuery, VirtualProtect, GetWriteWatch, ResetWriteWatch,
 * hostmem_win32_manager() - and says why in one stderr line. */
TEST(face_unknown_value_fails_every_call_invalid_parameter)
{
    static const char *bogus[] = {"bogus", "WX", "any ", "1"};
    for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
        child_value = bogus[i];
        test_in_child(face_bogus, bogus[i]);
    }
}

/* ---- the host's call before the first VirtualAlloc ---------------------------------------------- */

static void face_restricted_by_host(void)
{
    set_value();
    struct IHostMemoryManager *m = hostmem_win32_manager(); /* creates it: no VirtualAlloc yet */
    CHECK(m != NULL);
    if (!m)
        return;
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_WX), S_OK);
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READWRITE), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    char *base = VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ);
    CHECK(base != NULL);
    CHECK_HR(hostmem_restrict_dynamic_code(m, HOSTMEM_CODE_NONE), S_OK);
    CHECK_FAILS(VirtualAlloc(NULL, P, MEM_RESERVE | MEM_COMMIT, PAGE_EXECUTE_READ), 0, ERROR_DYNAMIC_CODE_BLOCKED);
    DWORD old;
    if (base) {
        CHECK(VirtualProtect(base, P, PAGE_READWRITE, &old)); /* code stops being code */
        CHECK_FAILS(VirtualProtect(base, P, PAGE_EXECUTE_READ, &old), FALSE, ERROR_DYNAMIC_CODE_BLOCKED);
        CHECK(VirtualFree(base, 0, MEM_RELEASE));
    }
    hostmem_stats s = stats_of(m);
    CHECK_EQ(s.dynamic_code, HOSTMEM_CODE_NONE);
    CHECK_EQ(s.dynamic_code_refusals, 3);
    face_validates();
}

/* hostmem_win32_manager() creates the face's manager without a VirtualAlloc;
 * hostmem_restrict_dynamic_code on it then decides what the Win32 calls may
 * do from the first one on (docs/win32.md), and tightens again later. */
TEST(face_policy_from_the_host_before_the_first_virtualalloc)
{
    child_value = NULL;
    test_in_child(face_restricted_by_host, "restricted by the host");
}

int main(void)
{
    P = (size_t)sysconf(_SC_PAGESIZE);
    RUN(face_wx_refuses_writable_code_with_dynamic_code_blocked);
    RUN(face_none_refuses_every_executable_protection);
    RUN(face_unset_or_any_allows_code);
    RUN(face_unknown_value_fails_every_call_invalid_parameter);
    RUN(face_policy_from_the_host_before_the_first_virtualalloc);
    return TEST_SUMMARY("test_win32_code");
}
