/*
 * jit_check.c - PCRE2's JIT on hostmem's Win32 face, under a dynamic-code policy.
 *
 *   jit_check default|wx compiled|refused|restrict
 *
 * The first argument names the executable allocator the linked libpcre2-8 was
 * built with (sljit's default one, or its W^X one); the policy is the Win32
 * face's, from HOSTMEM_DYNAMIC_CODE. Every mode matches a table of patterns
 * whose answers are written below, with the interpreter (PCRE2_NO_JIT) and
 * with whatever pcre2_jit_compile gave, and checks the manager around it:
 *
 *   compiled  every JIT compile succeeds and its code gives the table's
 *             answers; while the code lives, the manager holds executable
 *             pages: PAGE_EXECUTE_READWRITE chunks (default allocator), or
 *             PAGE_EXECUTE pages and nothing writable and executable (W^X
 *             allocator); a match too deep for the 32 KiB machine stack runs
 *             on a JIT stack, which grows by MEM_COMMIT.
 *   refused   every JIT compile returns PCRE2_ERROR_NOMEMORY, pcre2_jit_match
 *             says there is no JIT code, no executable page exists, and the
 *             interpreter still gives every answer; the policy's refusals were
 *             counted (hostmem_stats.dynamic_code_refusals) and each was a call
 *             of sljit's that failed with ERROR_DYNAMIC_CODE_BLOCKED.
 *   restrict  patterns compiled under a looser policy; then
 *             hostmem_restrict_dynamic_code(HOSTMEM_CODE_NONE): the code made
 *             before still runs, new compiles are refused (the default
 *             allocator may still place code in the PAGE_EXECUTE_READWRITE
 *             chunk it already holds: pages already executable stay so, as on
 *             Windows), and no new executable page appears.
 *
 * Every mode ends with everything freed (pcre2_jit_free_unused_memory): no
 * reservation and no committed byte left, and hostmem_validate with the
 * kernel's view is S_OK. Prints "ok NAME", "FAIL NAME: why" and "info ..."
 * lines, then "jit_check: N passed, N failed"; exits 1 on any failure.
 *
 * Must never: touch the manager's pages itself, or call the Win32 face other
 * than through PCRE2 (the layer's counts must stay sljit's).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "hostmem.h"
#include "hostmem_win32.h"

#include "pcre2.h"
#include "pcre2_hostmem.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(int ok, const char *name, const char *why_format, ...)
    __attribute__((format(printf, 3, 4)));
static void check(int ok, const char *name, const char *why_format, ...)
{
    if (ok) {
        passed++;
        printf("ok %s\n", name);
        return;
    }
    failed++;
    printf("FAIL %s: ", name);
    va_list args;
    va_start(args, why_format);
    vprintf(why_format, args);
    va_end(args);
    printf("\n");
}

/* ---- the patterns and their answers -------------------------------------------------- */

typedef struct {
    const char *pattern;
    uint32_t options;
    const char *subject;
    int rc;            /* pcre2_match's result: pairs set, or PCRE2_ERROR_NOMATCH */
    size_t start, end; /* ovector[0], ovector[1] when it matched */
} case_t;

static const case_t cases[] = {
    {"a(b+)c", 0, "xabbbcx", 2, 1, 6},
    {"^\\d{3}-\\d{4}$", 0, "555-1234", 1, 0, 8},
    {"hello", PCRE2_CASELESS, "say HeLLo", 1, 4, 9},
    {"colou?r", 0, "The color red", 1, 4, 9},
    {"(\\w+)@(\\w+)\\.com", 0, "mail bob@example.com now", 3, 5, 20},
    {"(a|ab)(c|bcd)(d*)", 0, "abcd", 4, 0, 4},
    {"(?<=foo)bar", 0, "foobar", 1, 3, 6},
    {"x(?!y)", 0, "xyxz", 1, 2, 3},
    {"^(a+)+$", 0, "aaaaaaaaaaaaaaab", PCRE2_ERROR_NOMATCH, 0, 0},
    {"(\\d+)(?:px|em)", 0, "width: 120em;", 2, 7, 12},
    {"\\bcat\\b", 0, "concatenate cat", 1, 12, 15},
    {"(?<year>\\d{4})-(?<month>\\d\\d)", 0, "on 2024-06-01", 3, 3, 10},
    {"\\p{Lu}+", PCRE2_UTF, "abc\xC3\x84\xC3\x96\xC3\x9C" "def", 1, 3, 9},
    {"(foo|bar)\\1", 0, "foobarbar", 2, 3, 9},
    {"[^aeiou\\s]+", 0, "queue strength", 1, 0, 1},
    {"a*?b", 0, "aaab", 1, 0, 4},
    {"(?(?=a)ab|cd)", 0, "xcd", 1, 1, 3},
    {"^(\\((?:[^()]|(?1))*\\))$", 0, "(a(b)c)", 2, 0, 7},
    {"z", 0, "abc", PCRE2_ERROR_NOMATCH, 0, 0},
    {"^end$", PCRE2_MULTILINE, "start\nend\n", 1, 6, 9},
    {"(*MARK:A)x|(*MARK:B)y", 0, "zy", 1, 1, 2},
    {"a{2,3}", 0, "caaaat", 1, 1, 4},
    {"[[:digit:]]+\\.[[:digit:]]+", 0, "pi is 3.14159", 1, 6, 13},
    {"(?x) a \\s b  # spaced", 0, "xa b", 1, 1, 4},
};
#define CASES (sizeof cases / sizeof cases[0])

/* A match too deep for the JIT's 32 KiB machine stack: (ab) 50000 times, then c. */
#define DEEP_PATTERN "(a|b)*c"
#define DEEP_PAIRS 50000

static pcre2_code *compile(const char *pattern, uint32_t options)
{
    int error;
    PCRE2_SIZE offset;
    return pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &error, &offset,
                         NULL);
}

/* One match of a case: its result, and 0 when it agrees with the table. */
static int match_differs(const case_t *c, pcre2_code *code, uint32_t options, int jit_only,
                         char *why, size_t why_size)
{
    pcre2_match_data *data = pcre2_match_data_create_from_pattern(code, NULL);
    if (data == NULL) {
        snprintf(why, why_size, "no match data");
        return 1;
    }
    int rc = jit_only ? pcre2_jit_match(code, (PCRE2_SPTR)c->subject, strlen(c->subject), 0,
                                        options, data, NULL)
                      : pcre2_match(code, (PCRE2_SPTR)c->subject, strlen(c->subject), 0,
                                    options, data, NULL);
    int differs = rc != c->rc;
    if (!differs && rc > 0) {
        PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(data);
        differs = ovector[0] != c->start || ovector[1] != c->end;
        snprintf(why, why_size, "rc %d, [%zu, %zu), expected rc %d, [%zu, %zu)", rc,
                 (size_t)ovector[0], (size_t)ovector[1], c->rc, c->start, c->end);
    } else {
        snprintf(why, why_size, "rc %d, expected %d", rc, c->rc);
    }
    pcre2_match_data_free(data);
    return differs;
}

/* ---- the manager ----------------------------------------------------------------------- */

static IHostMemoryManager *manager;

static hostmem_stats stats(void)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    if (hostmem_get_stats(manager, &s) != S_OK)
        memset(&s, 0, sizeof s);
    return s;
}

typedef struct {
    size_t execute, execute_read, execute_readwrite; /* committed regions */
    size_t executable_bytes;
} code_pages;

static int count_region(void *context, const MEMORY_BASIC_INFORMATION *region)
{
    code_pages *pages = context;
    if (region->State != MEM_COMMIT)
        return 0;
    DWORD protect = region->Protect & 0xFFu;
    if (protect == PAGE_EXECUTE)
        pages->execute++;
    else if (protect == PAGE_EXECUTE_READ)
        pages->execute_read++;
    else if (protect == PAGE_EXECUTE_READWRITE || protect == PAGE_EXECUTE_WRITECOPY)
        pages->execute_readwrite++;
    else
        return 0;
    pages->executable_bytes += region->RegionSize;
    return 0;
}

static code_pages walk(void)
{
    code_pages pages = {0};
    if (hostmem_walk(manager, count_region, &pages) != S_OK)
        pages.executable_bytes = (size_t)-1;
    return pages;
}

static void check_validate(const char *name)
{
    char why[512] = "";
    HRESULT hr = hostmem_validate(manager, HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    check(hr == S_OK, name, "hostmem_validate(KERNEL) -> %s: %s", hostmem_result_name(hr), why);
}

/* ---- the modes ----------------------------------------------------------------------------- */

static pcre2_code *codes[CASES];

/* Compiles every case; jit_rc[i] gets pcre2_jit_compile's result. */
static void compile_all(int jit_rc[CASES])
{
    for (size_t i = 0; i < CASES; i++) {
        codes[i] = compile(cases[i].pattern, cases[i].options);
        jit_rc[i] = codes[i] ? pcre2_jit_compile(codes[i], PCRE2_JIT_COMPLETE) : 1;
    }
}

/* Every case's answer from the interpreter, and from pcre2_match as it comes
 * (the JIT's code where there is some). */
static void check_answers(const char *name)
{
    char why[160];
    size_t wrong = 0;
    for (size_t i = 0; i < CASES; i++) {
        if (codes[i] == NULL) {
            printf("  case %zu /%s/ did not compile\n", i, cases[i].pattern);
            wrong++;
            continue;
        }
        if (match_differs(&cases[i], codes[i], PCRE2_NO_JIT, 0, why, sizeof why)) {
            printf("  case %zu /%s/ interpreter: %s\n", i, cases[i].pattern, why);
            wrong++;
        }
        if (match_differs(&cases[i], codes[i], 0, 0, why, sizeof why)) {
            printf("  case %zu /%s/ pcre2_match: %s\n", i, cases[i].pattern, why);
            wrong++;
        }
    }
    check(wrong == 0, name, "%zu wrong answers of %zu (above)", wrong, 2 * CASES);
}

/* pcre2_jit_match of every case with JIT code gives the table's answer. */
static size_t check_jit_answers(const char *name, const int jit_rc[CASES])
{
    char why[160];
    size_t wrong = 0, ran = 0;
    for (size_t i = 0; i < CASES; i++) {
        if (jit_rc[i] != 0)
            continue;
        ran++;
        if (match_differs(&cases[i], codes[i], 0, 1, why, sizeof why)) {
            printf("  case %zu /%s/ pcre2_jit_match: %s\n", i, cases[i].pattern, why);
            wrong++;
        }
    }
    check(wrong == 0, name, "%zu of %zu JIT matches wrong (above)", wrong, ran);
    return ran;
}

static void free_all(void)
{
    for (size_t i = 0; i < CASES; i++) {
        pcre2_code_free(codes[i]);
        codes[i] = NULL;
    }
}

/* The deep match: beyond the machine stack without a JIT stack, and on one of
 * up to 8 MiB, which grows by committing pages as the match goes down. */
static void check_jit_stack(void)
{
    size_t length = 2 * DEEP_PAIRS + 1;
    char *subject = malloc(length + 1);
    pcre2_code *code = compile(DEEP_PATTERN, 0);
    pcre2_match_data *data = code ? pcre2_match_data_create_from_pattern(code, NULL) : NULL;
    pcre2_match_context *context = pcre2_match_context_create(NULL);
    if (subject == NULL || code == NULL || data == NULL || context == NULL ||
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) != 0) {
        check(0, "jit_stack", "could not set up the deep match");
        goto out;
    }
    for (size_t i = 0; i < DEEP_PAIRS; i++)
        memcpy(subject + 2 * i, "ab", 2);
    subject[length - 1] = 'c';
    subject[length] = '\0';

    int rc = pcre2_jit_match(code, (PCRE2_SPTR)subject, length, 0, 0, data, context);
    check(rc == PCRE2_ERROR_JIT_STACKLIMIT, "jit_stack_machine_limit",
          "without a JIT stack the deep match gave %d, expected PCRE2_ERROR_JIT_STACKLIMIT", rc);

    pcre2_hostmem_counts before, after;
    pcre2_hostmem_get_counts(&before);
    pcre2_jit_stack *stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    check(stack != NULL, "jit_stack_create", "pcre2_jit_stack_create(32 KiB, 8 MiB) gave NULL");
    if (stack == NULL)
        goto out;
    pcre2_hostmem_counts created;
    pcre2_hostmem_get_counts(&created);
    check(created.reserve == before.reserve + 1 && created.commit == before.commit + 1,
          "jit_stack_reserved", "the JIT stack took %zu reservations and %zu commits, expected 1 and 1",
          created.reserve - before.reserve, created.commit - before.commit);

    pcre2_jit_stack_assign(context, NULL, stack);
    rc = pcre2_jit_match(code, (PCRE2_SPTR)subject, length, 0, 0, data, context);
    PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(data);
    check(rc == 2 && ovector[0] == 0 && ovector[1] == length, "jit_stack_match",
          "on the JIT stack the deep match gave rc %d, [%zu, %zu), expected 2, [0, %zu)", rc,
          rc > 0 ? (size_t)ovector[0] : 0, rc > 0 ? (size_t)ovector[1] : 0, length);
    pcre2_hostmem_get_counts(&after);
    check(after.commit > created.commit && after.alloc_failed == created.alloc_failed,
          "jit_stack_grew", "the JIT stack grew by %zu commits (%zu refused); expected some, none refused",
          after.commit - created.commit, after.alloc_failed - created.alloc_failed);
    printf("info jit_stack: %zu commits of 8 KiB as the match went down, %zu decommits\n",
           after.commit - created.commit, after.decommit - created.decommit);
    pcre2_jit_stack_free(stack);
out:
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
    pcre2_code_free(code);
    free(subject);
}

static void mode_compiled(int wx_allocator)
{
    int jit_rc[CASES];
    pcre2_hostmem_counts before, after;
    pcre2_hostmem_get_counts(&before);
    compile_all(jit_rc);
    size_t refused = 0;
    for (size_t i = 0; i < CASES; i++)
        if (jit_rc[i] != 0) {
            printf("  case %zu /%s/: pcre2_jit_compile -> %d\n", i, cases[i].pattern, jit_rc[i]);
            refused++;
        }
    check(refused == 0, "jit_compiled", "%zu of %zu JIT compiles failed (above)", refused, CASES);
    size_t ran = check_jit_answers("jit_answers", jit_rc);
    check_answers("answers");
    pcre2_hostmem_get_counts(&after);

    code_pages pages = walk();
    printf("info code pages: %zu PAGE_EXECUTE, %zu PAGE_EXECUTE_READ, %zu PAGE_EXECUTE_READWRITE "
           "regions, %zu bytes, for %zu patterns\n",
           pages.execute, pages.execute_read, pages.execute_readwrite, pages.executable_bytes, ran);
    if (wx_allocator) {
        check(pages.execute > 0 && pages.execute_readwrite == 0, "code_pages_wx",
              "expected PAGE_EXECUTE regions and none writable and executable");
        check(after.protect_executable_granted - before.protect_executable_granted >= CASES &&
                  after.writable_executable == 0,
              "code_flipped", "%zu VirtualProtect calls to PAGE_EXECUTE granted for %zu compiles; "
              "%zu writable and executable asked",
              after.protect_executable_granted - before.protect_executable_granted, CASES,
              after.writable_executable);
    } else {
        check(pages.execute_readwrite > 0, "code_pages_rwx",
              "expected sljit's PAGE_EXECUTE_READWRITE chunks");
        check(after.writable_executable_granted > before.writable_executable_granted,
              "code_chunks", "no PAGE_EXECUTE_READWRITE chunk was granted");
    }
    free_all();
    check_jit_stack();
}

static void mode_refused(void)
{
    int jit_rc[CASES];
    compile_all(jit_rc);
    size_t wrong = 0;
    for (size_t i = 0; i < CASES; i++)
        if (jit_rc[i] != PCRE2_ERROR_NOMEMORY) {
            printf("  case %zu /%s/: pcre2_jit_compile -> %d\n", i, cases[i].pattern, jit_rc[i]);
            wrong++;
        }
    check(wrong == 0, "jit_refused", "%zu of %zu JIT compiles not refused with "
          "PCRE2_ERROR_NOMEMORY (above)", wrong, CASES);

    size_t has_jit = 0, no_jit_code = 0;
    pcre2_match_data *data = pcre2_match_data_create(16, NULL);
    for (size_t i = 0; i < CASES && data; i++) {
        size_t size = 1;
        if (pcre2_pattern_info(codes[i], PCRE2_INFO_JITSIZE, &size) == 0 && size != 0)
            has_jit++;
        if (pcre2_jit_match(codes[i], (PCRE2_SPTR)"x", 1, 0, 0, data, NULL) ==
            PCRE2_ERROR_JIT_BADOPTION)
            no_jit_code++;
    }
    pcre2_match_data_free(data);
    check(has_jit == 0 && no_jit_code == CASES, "no_jit_code",
          "%zu patterns report JIT code, %zu of %zu answer pcre2_jit_match with "
          "PCRE2_ERROR_JIT_BADOPTION", has_jit, no_jit_code, CASES);
    check_answers("answers");

    code_pages pages = walk();
    check(pages.executable_bytes == 0, "no_code_pages", "%zu executable bytes in the manager",
          pages.executable_bytes);

    /* A JIT stack is data, not code: it is still made under any policy. */
    pcre2_jit_stack *stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    check(stack != NULL, "jit_stack_create", "pcre2_jit_stack_create gave NULL");
    pcre2_jit_stack_free(stack);

    hostmem_stats s = stats();
    pcre2_hostmem_counts c;
    pcre2_hostmem_get_counts(&c);
    /* (not the error's name: make check's output shows every line that says ERROR) */
    printf("info refusals: %zu counted by hostmem, %zu of sljit's calls failed as blocked "
           "dynamic code (last error 1655), for %zu JIT compiles\n",
           s.dynamic_code_refusals, c.code_blocked, CASES);
    check(s.dynamic_code_refusals > 0 && s.dynamic_code_refusals == c.code_blocked,
          "refusals_counted", "hostmem counted %zu refusals, sljit saw %zu", s.dynamic_code_refusals,
          c.code_blocked);
    check(c.alloc_executable_granted == 0 && c.protect_executable_granted == 0,
          "nothing_executable", "%zu executable allocations and %zu executable protections granted",
          c.alloc_executable_granted, c.protect_executable_granted);
    free_all();
}

/* Patterns to compile after the restriction: distinct, with some code each. */
#define LATE_PATTERNS 200

static void mode_restrict(int wx_allocator)
{
    int jit_rc[CASES];
    compile_all(jit_rc);
    size_t ok = 0;
    for (size_t i = 0; i < CASES; i++)
        ok += jit_rc[i] == 0;
    check(ok == CASES, "jit_compiled_before", "%zu of %zu JIT compiles succeeded", ok, CASES);
    code_pages before = walk();

    HRESULT hr = hostmem_restrict_dynamic_code(manager, HOSTMEM_CODE_NONE);
    hostmem_stats s = stats();
    check(hr == S_OK && s.dynamic_code == HOSTMEM_CODE_NONE, "restricted",
          "hostmem_restrict_dynamic_code(NONE) -> %s, policy %u", hostmem_result_name(hr),
          (unsigned)s.dynamic_code);
    hr = hostmem_restrict_dynamic_code(manager, HOSTMEM_CODE_ANY);
    check(hr == E_ACCESSDENIED, "not_loosened", "loosening to ANY -> %s, expected E_ACCESSDENIED",
          hostmem_result_name(hr));

    check_jit_answers("jit_answers_after", jit_rc);
    check_answers("answers_after");

    /* Kept until the end, so that the code already made fills the chunks the
     * default allocator holds and a new one has to be asked for. */
    static pcre2_code *late[LATE_PATTERNS];
    size_t compiled = 0, refused = 0, other = 0, wrong = 0;
    for (int n = 0; n < LATE_PATTERNS; n++) {
        /* x{n+1} then y or z and two or more of a-f, then a digit; the subject has
         * one x more in front, so the match starts at 1 and runs to the end. */
        char pattern[64], subject[LATE_PATTERNS + 8];
        snprintf(pattern, sizeof pattern, "(x{%d})(y+|z[a-f]{2,%d})\\d", n + 1, n + 2);
        memset(subject, 'x', (size_t)n + 2);
        memcpy(subject + n + 2, "zab7", 5);
        pcre2_code *code = compile(pattern, 0);
        if (code == NULL) {
            other++;
            continue;
        }
        int rc = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
        compiled += rc == 0;
        refused += rc == PCRE2_ERROR_NOMEMORY;
        other += rc != 0 && rc != PCRE2_ERROR_NOMEMORY;
        pcre2_match_data *data = pcre2_match_data_create_from_pattern(code, NULL);
        int m = data ? pcre2_match(code, (PCRE2_SPTR)subject, PCRE2_ZERO_TERMINATED, 0, 0, data,
                                   NULL)
                     : 0;
        PCRE2_SIZE *ovector = data ? pcre2_get_ovector_pointer(data) : NULL;
        size_t length = strlen(subject);
        if (m != 3 || ovector[0] != 1 || ovector[1] != length)
            wrong++;
        pcre2_match_data_free(data);
        late[n] = code;
    }
    code_pages after = walk();
    for (int n = 0; n < LATE_PATTERNS; n++)
        pcre2_code_free(late[n]);
    printf("info after the restriction: %zu JIT compiles succeeded, %zu refused, of %d; "
           "executable bytes %zu before, %zu after\n",
           compiled, refused, LATE_PATTERNS, before.executable_bytes, after.executable_bytes);
    if (wx_allocator)
        check(refused == LATE_PATTERNS, "refused_after",
              "%zu of %d JIT compiles refused, expected all", refused, LATE_PATTERNS);
    else
        check(refused > 0 && compiled + refused == LATE_PATTERNS, "refused_after",
              "%zu refused, %zu compiled into chunks already executable, %zu other, of %d",
              refused, compiled, other, LATE_PATTERNS);
    check(wrong == 0, "answers_late", "%zu of %d late patterns matched wrong", wrong,
          LATE_PATTERNS);
    check(after.executable_bytes <= before.executable_bytes, "no_new_code_pages",
          "executable bytes grew from %zu to %zu", before.executable_bytes,
          after.executable_bytes);
    s = stats();
    check(s.dynamic_code_refusals > 0, "refusals_counted", "no refusal counted");
    free_all();
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "default") != 0 && strcmp(argv[1], "wx") != 0) ||
        (strcmp(argv[2], "compiled") != 0 && strcmp(argv[2], "refused") != 0 &&
         strcmp(argv[2], "restrict") != 0)) {
        fprintf(stderr, "usage: jit_check default|wx compiled|refused|restrict\n");
        return 2;
    }
    int wx_allocator = strcmp(argv[1], "wx") == 0;
    manager = hostmem_win32_manager();
    if (manager == NULL) {
        printf("FAIL manager: hostmem_win32_manager() gave NULL (last error %u)\n",
               (unsigned)GetLastError());
        printf("jit_check: 0 passed, 1 failed\n");
        return 1;
    }
    printf("info policy %u (HOSTMEM_DYNAMIC_CODE=%s), %s allocator\n", (unsigned)stats().dynamic_code,
           getenv("HOSTMEM_DYNAMIC_CODE") ? getenv("HOSTMEM_DYNAMIC_CODE") : "", argv[1]);

    if (strcmp(argv[2], "compiled") == 0)
        mode_compiled(wx_allocator);
    else if (strcmp(argv[2], "refused") == 0)
        mode_refused();
    else
        mode_restrict(wx_allocator);

    check_validate("validate_in_use");
    pcre2_jit_free_unused_memory(NULL);
    hostmem_stats s = stats();
    check(s.reservations == 0 && s.committed_bytes == 0, "nothing_left",
          "%zu reservations, %zu committed bytes left after everything was freed", s.reservations,
          s.committed_bytes);
    check_validate("validate_at_end");

    pcre2_hostmem_counts c;
    pcre2_hostmem_get_counts(&c);
    check(s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC] == c.alloc &&
              s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT] == c.protect &&
              s.calls[HOSTMEM_METHOD_VIRTUAL_FREE] == c.free && c.alloc > 0,
          "one_manager", "hostmem counted VirtualAlloc %zu, VirtualProtect %zu, VirtualFree %zu; "
          "sljit called %zu, %zu, %zu",
          s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], s.calls[HOSTMEM_METHOD_VIRTUAL_PROTECT],
          s.calls[HOSTMEM_METHOD_VIRTUAL_FREE], c.alloc, c.protect, c.free);
    printf("info calls: VirtualAlloc %zu (reserve %zu, commit %zu, refused %zu), VirtualProtect %zu "
           "(to executable %zu, granted %zu), VirtualFree %zu (decommit %zu, release %zu); "
           "dynamic-code refusals %zu\n",
           c.alloc, c.reserve, c.commit, c.alloc_failed, c.protect, c.protect_executable,
           c.protect_executable_granted, c.free, c.decommit, c.release, s.dynamic_code_refusals);
    printf("jit_check: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
