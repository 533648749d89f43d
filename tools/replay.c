/*
 * replay.c - `hostmem replay`: a line-oriented script of manager operations.
 *
 * The whole script is parsed first (a syntax error runs nothing and exits 2
 * with FILE:LINE:COLUMN), then run statement by statement. Each statement
 * prints one line: its line number, its text, "->", its result and what it
 * returned, with addresses written relative to the script's names so that the
 * output is the same from run to run (the golden tests rely on it). The
 * language is documented in docs/cli.md.
 */
#define COBJMACROS
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define MAX_TOKENS 16
#define MAX_SYMBOLS 256
#define ACCESS_VIOLATION ((HRESULT)0xC0000005u)

enum verb {
    V_RESERVE, V_RESERVE_COMMIT, V_COMMIT, V_DECOMMIT, V_RELEASE, V_FREE_VM, V_PROTECT, V_QUERY,
    V_RESET, V_RESET_UNDO, V_WRITE, V_CHECK, V_HEAP, V_ALLOC, V_FREE, V_BUDGET, V_MAP, V_STATS,
    V_EXPECT
};

enum loc_kind { L_NAME, L_NUMBER, L_NULL, L_STACK, L_LIBC, L_STATIC };
struct loc {
    enum loc_kind kind;
    int symbol;
    int64_t offset;
    uintptr_t number;
};

enum symbol_kind { S_REGION, S_HEAP, S_BLOCK };
struct symbol {
    unsigned seq; /* when it was last given a value: the newest name wins */
    char name[40];
    enum symbol_kind kind;
    uintptr_t address;
    size_t size;
    IHostMalloc *heap;
};

struct statement {
    int line;
    char text[160];
    enum verb verb;
    int target; /* symbol defined by "NAME =", or -1 */
    struct loc loc, at;
    bool has_at, top_down, budget_none, threadsafe, executable;
    size_t size;
    DWORD protect, free_type;
    EMemoryCriticalLevel level;
    int heap; /* symbol */
    int byte;
    HRESULT expected;
};

struct script {
    const char *file;
    struct statement *statements;
    size_t count, capacity;
    struct symbol symbols[MAX_SYMBOLS];
    int symbol_count;
};

/* ---- parsing ------------------------------------------------------------------------------ */
struct token {
    const char *text;
    int column;
};

static int syntax(const struct script *s, int line, int column, const char *format, const char *what)
{
    fprintf(stderr, "%s:%d:%d: ", s->file, line, column);
    fprintf(stderr, format, what);
    fputc('\n', stderr);
    return -1;
}

static int find_symbol(const struct script *s, const char *name)
{
    for (int i = 0; i < s->symbol_count; i++)
        if (!strcmp(s->symbols[i].name, name))
            return i;
    return -1;
}

static bool valid_name(const char *t)
{
    if (!isalpha((unsigned char)t[0]) && t[0] != '_')
        return false;
    for (const char *c = t; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_')
            return false;
    return strlen(t) < 40;
}

static int define_symbol(struct script *s, const char *name, enum symbol_kind kind)
{
    int i = find_symbol(s, name);
    if (i < 0) {
        if (s->symbol_count == MAX_SYMBOLS)
            return -1;
        i = s->symbol_count++;
        snprintf(s->symbols[i].name, sizeof s->symbols[i].name, "%s", name);
    }
    s->symbols[i].kind = kind;
    return i;
}

static int parse_size_token(const struct script *s, int line, const struct token *t, size_t *out)
{
    int r = cli_parse_size(t->text, out);
    if (r == -2)
        return syntax(s, line, t->column, "size '%s' is too large", t->text);
    if (r)
        return syntax(s, line, t->column, "'%s' is not a size (a number with an optional K, M or G)", t->text);
    return 0;
}

static int parse_loc(const struct script *s, int line, const struct token *t, struct loc *out)
{
    char name[64];
    const char *text = t->text;
    memset(out, 0, sizeof *out);
    if (isdigit((unsigned char)text[0])) {
        size_t v;
        if (cli_parse_size(text, &v))
            return syntax(s, line, t->column, "'%s' is not an address", text);
        out->kind = L_NUMBER;
        out->number = v;
        return 0;
    }
    size_t n = strcspn(text, "+-");
    if (n == 0 || n >= sizeof name)
        return syntax(s, line, t->column, "'%s' is not a location", text);
    memcpy(name, text, n);
    name[n] = 0;
    if (text[n]) {
        size_t off;
        int r = cli_parse_size(text + n + 1, &off);
        if (r || off > INT64_MAX)
            return syntax(s, line, t->column, "bad offset in '%s'", text);
        out->offset = text[n] == '+' ? (int64_t)off : -(int64_t)off;
    }
    if (!strcmp(name, "null"))
        out->kind = L_NULL;
    else if (!strcmp(name, "stack"))
        out->kind = L_STACK;
    else if (!strcmp(name, "libc"))
        out->kind = L_LIBC;
    else if (!strcmp(name, "static"))
        out->kind = L_STATIC;
    else {
        out->kind = L_NAME;
        out->symbol = find_symbol(s, name);
        if (out->symbol < 0)
            return syntax(s, line, t->column, "unknown name '%s'", name);
        if (s->symbols[out->symbol].kind == S_HEAP)
            return syntax(s, line, t->column, "'%s' is a heap, not a location", name);
    }
    return 0;
}

static const struct {
    const char *word;
    enum verb verb;
    int min, max; /* arguments after the verb */
    bool defines;
} verbs[] = {
    {"reserve", V_RESERVE, 1, 5, true},          {"reserve-commit", V_RESERVE_COMMIT, 1, 5, true},
    {"commit", V_COMMIT, 2, 4, false},           {"decommit", V_DECOMMIT, 2, 2, false},
    {"release", V_RELEASE, 1, 1, false},         {"free-vm", V_FREE_VM, 3, 3, false},
    {"protect", V_PROTECT, 3, 3, false},         {"query", V_QUERY, 1, 1, false},
    {"reset", V_RESET, 2, 2, false},             {"reset-undo", V_RESET_UNDO, 2, 2, false},
    {"write", V_WRITE, 3, 3, false},             {"check", V_CHECK, 3, 3, false},
    {"heap", V_HEAP, 1, 3, false},               {"alloc", V_ALLOC, 2, 3, true},
    {"free", V_FREE, 2, 2, false},               {"budget", V_BUDGET, 1, 1, false},
    {"map", V_MAP, 0, 0, false},                 {"stats", V_STATS, 0, 0, false},
    {"expect", V_EXPECT, 1, 1, false},
};

static int parse_statement(struct script *s, int line, struct token *t, int n, struct statement *st)
{
    memset(st, 0, sizeof *st);
    st->line = line;
    st->target = -1;
    st->protect = PAGE_READWRITE;
    st->level = eTaskCritical;
    int i = 0;
    const char *target_name = NULL;
    int target_column = 0;
    if (n >= 2 && !strcmp(t[1].text, "=")) {
        if (!valid_name(t[0].text))
            return syntax(s, line, t[0].column, "'%s' is not a name (letters, digits, _)", t[0].text);
        static const char *reserved[] = {"null", "stack", "libc", "static"};
        for (size_t k = 0; k < 4; k++)
            if (!strcmp(t[0].text, reserved[k]))
                return syntax(s, line, t[0].column, "'%s' is a reserved name", t[0].text);
        target_name = t[0].text;
        target_column = t[0].column;
        i = 2;
        if (n == 2)
            return syntax(s, line, t[1].column + 1, "%s", "an operation must follow '='");
    }
    size_t v;
    for (v = 0; v < sizeof verbs / sizeof verbs[0]; v++)
        if (!strcmp(t[i].text, verbs[v].word))
            break;
    if (v == sizeof verbs / sizeof verbs[0])
        return syntax(s, line, t[i].column, "unknown operation '%s'", t[i].text);
    st->verb = verbs[v].verb;
    int args = n - i - 1;
    struct token *a = t + i + 1;
    if (target_name && !verbs[v].defines)
        return syntax(s, line, target_column, "'%s' gives no value to name", verbs[v].word);
    if (!target_name && verbs[v].defines)
        return syntax(s, line, t[i].column, "'%s' needs a name: NAME = ...", verbs[v].word);
    if (args < verbs[v].min)
        return syntax(s, line, t[n - 1].column + (int)strlen(t[n - 1].text) + 1, "%s: too few arguments",
                      verbs[v].word);
    if (args > verbs[v].max)
        return syntax(s, line, a[verbs[v].max].column, "%s: too many arguments", verbs[v].word);

    switch (st->verb) {
    case V_RESERVE:
    case V_RESERVE_COMMIT:
        if (parse_size_token(s, line, &a[0], &st->size))
            return -1;
        for (int k = 1; k < args; k++) {
            if (!strcmp(a[k].text, "at")) {
                if (k + 1 >= args)
                    return syntax(s, line, a[k].column, "%s", "'at' needs a location");
                if (parse_loc(s, line, &a[k + 1], &st->at))
                    return -1;
                st->has_at = true;
                k++;
            } else if (!strcmp(a[k].text, "top-down")) {
                st->top_down = true;
            } else if (cli_parse_level(a[k].text, &st->level)) {
            } else if (!cli_parse_protect(a[k].text, &st->protect)) {
                return syntax(s, line, a[k].column, "'%s' is not a protection, level, 'at' or 'top-down'",
                              a[k].text);
            }
        }
        break;
    case V_COMMIT:
        if (parse_loc(s, line, &a[0], &st->loc) || parse_size_token(s, line, &a[1], &st->size))
            return -1;
        for (int k = 2; k < args; k++)
            if (!cli_parse_level(a[k].text, &st->level) && !cli_parse_protect(a[k].text, &st->protect))
                return syntax(s, line, a[k].column, "'%s' is not a protection or a level", a[k].text);
        break;
    case V_DECOMMIT:
    case V_RESET:
    case V_RESET_UNDO:
        if (parse_loc(s, line, &a[0], &st->loc) || parse_size_token(s, line, &a[1], &st->size))
            return -1;
        break;
    case V_RELEASE:
    case V_QUERY:
        if (parse_loc(s, line, &a[0], &st->loc))
            return -1;
        break;
    case V_FREE_VM:
        if (parse_loc(s, line, &a[0], &st->loc) || parse_size_token(s, line, &a[1], &st->size))
            return -1;
        if (!strcmp(a[2].text, "decommit"))
            st->free_type = MEM_DECOMMIT;
        else if (!strcmp(a[2].text, "release"))
            st->free_type = MEM_RELEASE;
        else if (cli_parse_size(a[2].text, &v) == 0 && v <= 0xFFFFFFFFu)
            st->free_type = (DWORD)v;
        else
            return syntax(s, line, a[2].column, "'%s' is not decommit, release or a number", a[2].text);
        break;
    case V_PROTECT:
        if (parse_loc(s, line, &a[0], &st->loc) || parse_size_token(s, line, &a[1], &st->size))
            return -1;
        if (!cli_parse_protect(a[2].text, &st->protect))
            return syntax(s, line, a[2].column, "'%s' is not a protection", a[2].text);
        break;
    case V_WRITE:
    case V_CHECK: {
        if (parse_loc(s, line, &a[0], &st->loc) || parse_size_token(s, line, &a[1], &st->size))
            return -1;
        size_t b;
        if (cli_parse_size(a[2].text, &b) || b > 255)
            return syntax(s, line, a[2].column, "'%s' is not a byte value (0-255)", a[2].text);
        st->byte = (int)b;
        if (st->loc.kind != L_NAME)
            return syntax(s, line, a[0].column, "%s", "write and check take memory the script named");
        break;
    }
    case V_HEAP:
        if (!valid_name(a[0].text))
            return syntax(s, line, a[0].column, "'%s' is not a name", a[0].text);
        for (int k = 1; k < args; k++) {
            if (!strcmp(a[k].text, "threadsafe"))
                st->threadsafe = true;
            else if (!strcmp(a[k].text, "executable"))
                st->executable = true;
            else
                return syntax(s, line, a[k].column, "'%s' is not threadsafe or executable", a[k].text);
        }
        st->heap = define_symbol(s, a[0].text, S_HEAP);
        if (st->heap < 0)
            return syntax(s, line, a[0].column, "%s", "too many names");
        break;
    case V_ALLOC:
    case V_FREE: {
        int h = find_symbol(s, a[0].text);
        if (h < 0 || s->symbols[h].kind != S_HEAP)
            return syntax(s, line, a[0].column, "'%s' is not a heap", a[0].text);
        st->heap = h;
        if (st->verb == V_ALLOC) {
            if (parse_size_token(s, line, &a[1], &st->size))
                return -1;
            if (args == 3 && !cli_parse_level(a[2].text, &st->level))
                return syntax(s, line, a[2].column, "'%s' is not a level (task, appdomain, process)", a[2].text);
        } else if (parse_loc(s, line, &a[1], &st->loc)) {
            return -1;
        }
        break;
    }
    case V_BUDGET:
        if (!strcmp(a[0].text, "none"))
            st->budget_none = true;
        else if (parse_size_token(s, line, &a[0], &st->size))
            return -1;
        break;
    case V_MAP:
    case V_STATS:
        break;
    case V_EXPECT:
        if (!cli_parse_result(a[0].text, &st->expected))
            return syntax(s, line, a[0].column, "'%s' is not a result name (S_OK, E_INVALIDARG, ...)", a[0].text);
        break;
    }
    if (target_name) {
        st->target = define_symbol(s, target_name, st->verb == V_ALLOC ? S_BLOCK : S_REGION);
        if (st->target < 0)
            return syntax(s, line, target_column, "%s", "too many names");
    }
    return 0;
}

static int parse(struct script *s, FILE *in)
{
    char *text = NULL;
    size_t capacity = 0;
    ssize_t length;
    int line = 0, errors = 0;
    while ((length = getline(&text, &capacity, in)) >= 0) {
        line++;
        if (memchr(text, 0, (size_t)length)) {
            syntax(s, line, 1, "%s", "a NUL byte: not a text script");
            errors++;
            break;
        }
        char *hash = strchr(text, '#');
        if (hash)
            *hash = 0;
        struct token t[MAX_TOKENS + 1];
        int n = 0;
        char *c = text;
        bool too_many = false;
        while (*c) {
            while (*c && isspace((unsigned char)*c))
                c++;
            if (!*c)
                break;
            if (n == MAX_TOKENS) {
                too_many = true;
                break;
            }
            t[n].text = c;
            t[n].column = (int)(c - text) + 1;
            n++;
            while (*c && !isspace((unsigned char)*c))
                c++;
            if (*c)
                *c++ = 0;
        }
        if (too_many) {
            syntax(s, line, (int)(c - text) + 1, "%s", "too many words on one line");
            errors++;
            continue;
        }
        if (!n)
            continue;
        if (s->count == s->capacity) {
            size_t grown = s->capacity ? s->capacity * 2 : 64;
            void *p = realloc(s->statements, grown * sizeof *s->statements);
            if (!p) {
                fprintf(stderr, "%s: out of memory\n", s->file);
                free(text);
                return -1;
            }
            s->statements = p;
            s->capacity = grown;
        }
        struct statement *st = &s->statements[s->count];
        if (parse_statement(s, line, t, n, st)) {
            errors++;
            if (errors >= 20)
                break;
            continue;
        }
        /* the statement's text, for the output */
        size_t used = 0;
        st->text[0] = 0;
        for (int k = 0; k < n && used + 1 < sizeof st->text; k++)
            used += (size_t)snprintf(st->text + used, sizeof st->text - used, "%s%s", k ? " " : "", t[k].text);
        s->count++;
    }
    free(text);
    if (ferror(in)) {
        fprintf(stderr, "%s: read error\n", s->file);
        return -1;
    }
    return errors ? -1 : 0;
}

/* ---- running ------------------------------------------------------------------------------ */
static char stack_probe_dummy;
static int static_area[64];

struct run {
    struct script *s;
    IHostMemoryManager *m;
    void *libc_block;
    char *stack_area;
    bool defined[MAX_SYMBOLS];
    unsigned seq;
};

static uintptr_t resolve(struct run *r, const struct loc *l)
{
    switch (l->kind) {
    case L_NAME:
        return r->s->symbols[l->symbol].address + (uintptr_t)l->offset;
    case L_NUMBER:
        return l->number;
    case L_NULL:
        return (uintptr_t)l->offset;
    case L_STACK:
        return (uintptr_t)r->stack_area + (uintptr_t)l->offset;
    case L_LIBC:
        return (uintptr_t)r->libc_block + (uintptr_t)l->offset;
    case L_STATIC:
        return (uintptr_t)static_area + (uintptr_t)l->offset;
    }
    return 0;
}

/* An address written relative to the script's names. */
static const char *symbolize(struct run *r, uintptr_t a, char *buffer, size_t size)
{
    int best = -1;
    for (int i = 0; i < r->s->symbol_count; i++) {
        const struct symbol *y = &r->s->symbols[i];
        if (!r->defined[i] || y->kind == S_HEAP)
            continue;
        if (a >= y->address && a - y->address < (y->size ? y->size : 1) &&
            (best < 0 || y->address > r->s->symbols[best].address ||
             (y->address == r->s->symbols[best].address && y->seq > r->s->symbols[best].seq)))
            best = i;
    }
    if (best >= 0) {
        uintptr_t off = a - r->s->symbols[best].address;
        if (off)
            snprintf(buffer, size, "%s+0x%jx", r->s->symbols[best].name, (uintmax_t)off);
        else
            snprintf(buffer, size, "%s", r->s->symbols[best].name);
    } else if (a == 0) {
        snprintf(buffer, size, "null");
    } else if (a >= (uintptr_t)r->stack_area && a < (uintptr_t)r->stack_area + 4096) {
        snprintf(buffer, size, "stack+0x%jx", (uintmax_t)(a - (uintptr_t)r->stack_area));
    } else {
        snprintf(buffer, size, "0x%jx", (uintmax_t)a);
    }
    return buffer;
}

static void print_query(struct run *r, const MEMORY_BASIC_INFORMATION *info)
{
    char b1[64], b2[64], p1[48], p2[48], sz[32];
    if (info->State == MEM_FREE) {
        printf(" free at %s", symbolize(r, (uintptr_t)info->BaseAddress, b1, sizeof b1));
        return;
    }
    const char *state = info->State == MEM_COMMIT ? "commit" : "reserve";
    const char *type = info->Type == MEM_PRIVATE ? "private" : info->Type == MEM_IMAGE ? "image" : "mapped";
    printf(" base %s allocation %s (%s) size %s %s %s %s",
           symbolize(r, (uintptr_t)info->BaseAddress, b1, sizeof b1),
           symbolize(r, (uintptr_t)info->AllocationBase, b2, sizeof b2),
           cli_protect_name(info->AllocationProtect, p1, sizeof p1),
           cli_size_text(info->RegionSize, sz, sizeof sz), state,
           cli_protect_name(info->Protect, p2, sizeof p2), type);
}

struct map_context {
    struct run *r;
};

static int map_line(void *context, const MEMORY_BASIC_INFORMATION *info)
{
    struct run *r = ((struct map_context *)context)->r;
    char b1[64], b2[64], p[48], sz[32];
    printf("    %-16s %-16s %8s %-7s %s\n", symbolize(r, (uintptr_t)info->BaseAddress, b1, sizeof b1),
           symbolize(r, (uintptr_t)info->BaseAddress + info->RegionSize - 1, b2, sizeof b2),
           cli_size_text(info->RegionSize, sz, sizeof sz),
           info->State == MEM_COMMIT ? "commit" : "reserve", cli_protect_name(info->Protect, p, sizeof p));
    return 0;
}

static void print_stats(IHostMemoryManager *m)
{
    hostmem_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    hostmem_get_stats(m, &st);
    char a[32], b[32], c[32], d[32], e[32];
    printf("    reserved %s committed %s peak %s reservations %zu heap %s limit %s\n",
           cli_size_text(st.reserved_bytes, a, sizeof a), cli_size_text(st.committed_bytes, b, sizeof b),
           cli_size_text(st.peak_committed_bytes, c, sizeof c), st.reservations,
           cli_size_text(st.heap_bytes, d, sizeof d),
           st.commit_limit ? cli_size_text(st.commit_limit, e, sizeof e) : "none");
    printf("    refusals task %zu appdomain %zu process %zu; notifications low %zu neutral %zu high %zu\n",
           st.refusals[0], st.refusals[1], st.refusals[2], st.notifications[1], st.notifications[2],
           st.notifications[3]);
}

/* Is [a, a+n) inside the named memory and readable (or writable)? */
static HRESULT accessible(struct run *r, const struct statement *st, uintptr_t a, size_t n, bool write)
{
    const struct symbol *y = &r->s->symbols[st->loc.symbol];
    if (!r->defined[st->loc.symbol] || a < y->address || n > y->size || a - y->address > y->size - n)
        return E_INVALIDARG;
    for (uintptr_t p = a & ~(uintptr_t)(hostmem_page_size() - 1); p < a + n; p += hostmem_page_size()) {
        MEMORY_BASIC_INFORMATION info;
        SIZE_T got;
        if (IHostMemoryManager_VirtualQuery(r->m, (void *)p, &info, sizeof info, &got) != S_OK)
            return ACCESS_VIOLATION;
        DWORD base = info.Protect & 0xFF;
        bool ok = info.State == MEM_COMMIT && !(info.Protect & PAGE_GUARD) &&
                  (base == PAGE_READWRITE || base == PAGE_EXECUTE_READWRITE ||
                   (!write && (base == PAGE_READONLY || base == PAGE_EXECUTE_READ)));
        if (!ok)
            return ACCESS_VIOLATION;
    }
    return S_OK;
}

static int execute(struct run *r)
{
    struct script *s = r->s;
    IHostMemoryManager *m = r->m;
    for (size_t i = 0; i < s->count; i++) {
        struct statement *st = &s->statements[i];
        char b1[64], b2[64], p1[48], rn[16], re[16];
        if (st->verb == V_EXPECT) {
            fprintf(stderr, "%s:%d: expect follows no operation\n", s->file, st->line);
            return EXIT_USAGE;
        }
        HRESULT hr = S_OK;
        void *out = NULL;
        char detail[256] = "";
        uintptr_t a = resolve(r, &st->loc);
        switch (st->verb) {
        case V_RESERVE:
        case V_RESERVE_COMMIT: {
            DWORD type = st->verb == V_RESERVE ? MEM_RESERVE : MEM_RESERVE | MEM_COMMIT;
            if (st->top_down)
                type |= MEM_TOP_DOWN;
            hr = IHostMemoryManager_VirtualAlloc(m, st->has_at ? (void *)resolve(r, &st->at) : NULL, st->size, type,
                                                 st->protect, st->level, &out);
            if (hr == S_OK) {
                struct symbol *y = &s->symbols[st->target];
                y->address = (uintptr_t)out;
                MEMORY_BASIC_INFORMATION info;
                SIZE_T got;
                y->size = st->size;
                if (IHostMemoryManager_VirtualQuery(m, out, &info, sizeof info, &got) == S_OK) {
                    /* the reservation's extent: up to where its last region ends */
                    uintptr_t end = (uintptr_t)out;
                    while (IHostMemoryManager_VirtualQuery(m, (void *)end, &info, sizeof info, &got) == S_OK &&
                           info.State != MEM_FREE && info.AllocationBase == out)
                        end = (uintptr_t)info.BaseAddress + info.RegionSize;
                    y->size = end - (uintptr_t)out;
                }
                r->defined[st->target] = true;
                y->seq = ++r->seq;
                snprintf(detail, sizeof detail, " %s, %s", y->name, cli_size_text(y->size, b2, sizeof b2));
            }
            break;
        }
        case V_COMMIT:
            hr = IHostMemoryManager_VirtualAlloc(m, (void *)a, st->size, MEM_COMMIT, st->protect, st->level, &out);
            if (hr == S_OK)
                snprintf(detail, sizeof detail, " %s", symbolize(r, (uintptr_t)out, b1, sizeof b1));
            break;
        case V_DECOMMIT:
            hr = IHostMemoryManager_VirtualFree(m, (void *)a, st->size, MEM_DECOMMIT);
            break;
        case V_RELEASE:
            hr = IHostMemoryManager_VirtualFree(m, (void *)a, 0, MEM_RELEASE);
            break;
        case V_FREE_VM:
            hr = IHostMemoryManager_VirtualFree(m, (void *)a, st->size, st->free_type);
            break;
        case V_PROTECT: {
            DWORD old = 0;
            hr = IHostMemoryManager_VirtualProtect(m, (void *)a, st->size, st->protect, &old);
            if (hr == S_OK)
                snprintf(detail, sizeof detail, " old %s", cli_protect_name(old, p1, sizeof p1));
            break;
        }
        case V_QUERY: {
            MEMORY_BASIC_INFORMATION info;
            SIZE_T got;
            hr = IHostMemoryManager_VirtualQuery(m, (void *)a, &info, sizeof info, &got);
            printf("%d: %s -> %s", st->line, st->text, cli_result_name(hr, rn, sizeof rn));
            if (hr == S_OK)
                print_query(r, &info);
            printf("\n");
            goto judged;
        }
        case V_RESET:
        case V_RESET_UNDO:
            hr = IHostMemoryManager_VirtualAlloc(m, (void *)a, st->size, st->verb == V_RESET ? MEM_RESET : MEM_RESET_UNDO,
                                                 PAGE_READWRITE, eTaskCritical, &out);
            break;
        case V_WRITE:
        case V_CHECK:
            hr = accessible(r, st, a, st->size, st->verb == V_WRITE);
            if (hr == S_OK && st->verb == V_WRITE) {
                memset((void *)a, st->byte, st->size);
            } else if (hr == S_OK) {
                const unsigned char *p = (const unsigned char *)a;
                for (size_t k = 0; k < st->size; k++) {
                    if (p[k] != st->byte) {
                        printf("%d: %s -> FAILED: byte at %s is 0x%02x\n", st->line, st->text,
                               symbolize(r, a + k, b1, sizeof b1), p[k]);
                        return EXIT_FAILED;
                    }
                }
            }
            break;
        case V_HEAP: {
            IHostMalloc *h = NULL;
            DWORD type = (st->threadsafe ? MALLOC_THREADSAFE : 0) | (st->executable ? MALLOC_EXECUTABLE : 0);
            hr = IHostMemoryManager_CreateMalloc(m, type, &h);
            if (hr == S_OK) {
                if (s->symbols[st->heap].heap)
                    IHostMalloc_Release(s->symbols[st->heap].heap);
                s->symbols[st->heap].heap = h;
            }
            break;
        }
        case V_ALLOC: {
            IHostMalloc *h = s->symbols[st->heap].heap;
            hr = h ? IHostMalloc_Alloc(h, st->size, st->level, &out) : E_POINTER;
            if (hr == S_OK) {
                struct symbol *y = &s->symbols[st->target];
                y->address = (uintptr_t)out;
                y->size = st->size;
                r->defined[st->target] = true;
                y->seq = ++r->seq;
                snprintf(detail, sizeof detail, " %s", y->name);
            }
            break;
        }
        case V_FREE: {
            IHostMalloc *h = s->symbols[st->heap].heap;
            hr = h ? IHostMalloc_Free(h, (void *)a) : E_POINTER;
            break;
        }
        case V_BUDGET:
            hr = hostmem_set_commit_limit(m, st->budget_none ? HOSTMEM_UNLIMITED : st->size);
            break;
        case V_MAP:
            printf("%d: %s\n", st->line, st->text);
            {
                struct map_context c = {r};
                hr = hostmem_walk(m, map_line, &c);
            }
            goto judged;
        case V_STATS:
            printf("%d: %s\n", st->line, st->text);
            print_stats(m);
            goto judged;
        case V_EXPECT:
            break;
        }
        printf("%d: %s -> %s%s\n", st->line, st->text, cli_result_name(hr, rn, sizeof rn), detail);
    judged:;
        bool expected = i + 1 < s->count && s->statements[i + 1].verb == V_EXPECT;
        if (expected) {
            struct statement *e = &s->statements[++i];
            if (hr == e->expected) {
                printf("%d: %s -> ok\n", e->line, e->text);
            } else {
                printf("%d: %s -> FAILED: got %s, expected %s\n", e->line, e->text,
                       cli_result_name(hr, rn, sizeof rn), cli_result_name(e->expected, re, sizeof re));
                return EXIT_FAILED;
            }
        } else if (hr != S_OK) {
            printf("%d: stopped: %s failed with %s and no expect follows\n", st->line, st->text,
                   cli_result_name(hr, rn, sizeof rn));
            return EXIT_FAILED;
        }
    }
    return EXIT_OK;
}

static const char replay_help[] =
    "usage: hostmem replay [OPTIONS] [FILE|-]\n"
    "Runs a script of manager operations (standard input when FILE is - or absent)\n"
    "and prints one line a statement. The language is in docs/cli.md and hostmem(1):\n"
    "  a = reserve 192K rw          commit a+4K 8K rx        decommit a+4K 4K\n"
    "  protect a+4K 4K r            query a+4K               release a\n"
    "  write a+4K 4K 0x5a           check a+4K 4K 0x5a       reset a 64K\n"
    "  heap h threadsafe            x = alloc h 100          free h x\n"
    "  budget 64M                   map                      stats\n"
    "  expect E_INVALIDARG          (after any statement)    # comments\n";

int cmd_replay(int argc, char **argv)
{
    hostmem_config config = {sizeof config};
    const char *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(replay_help, stdout);
            cli_manager_options_print(stdout);
            return EXIT_OK;
        }
        int r = cli_manager_option(argc, argv, &i, &config);
        if (r < 0)
            return EXIT_USAGE;
        if (r)
            continue;
        if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "hostmem replay: unknown option '%s' (see hostmem replay --help)\n", argv[i]);
            return EXIT_USAGE;
        }
        if (file) {
            fprintf(stderr, "hostmem replay: one script at a time ('%s' and '%s')\n", file, argv[i]);
            return EXIT_USAGE;
        }
        file = argv[i];
    }
    if (cli_manager_config_check("replay", &config) != EXIT_OK)
        return EXIT_USAGE;
    FILE *in = stdin;
    struct script *s = calloc(1, sizeof *s);
    if (!s) {
        cli_explain_out_of_memory("replay", "memory for the script (malloc)", 0);
        return EXIT_MANAGER;
    }
    s->file = "<stdin>";
    if (file && strcmp(file, "-")) {
        in = fopen(file, "r");
        if (!in) {
            fprintf(stderr, "hostmem replay: cannot open '%s'\n", file);
            free(s);
            return EXIT_USAGE;
        }
        s->file = file;
    }
    int parsed = parse(s, in);
    if (in != stdin)
        fclose(in);
    if (parsed) {
        free(s->statements);
        free(s);
        return EXIT_USAGE;
    }
    struct run r;
    memset(&r, 0, sizeof r);
    r.s = s;
    char stack_area[4096];
    memset(stack_area, 0, sizeof stack_area);
    r.stack_area = stack_area;
    (void)stack_probe_dummy;
    r.libc_block = malloc(64);
    int status = cli_manager_create("replay", &config, 0, &r.m);
    if (status == EXIT_OK) {
        status = execute(&r);
        for (int i = 0; i < s->symbol_count; i++)
            if (s->symbols[i].kind == S_HEAP && s->symbols[i].heap)
                IHostMalloc_Release(s->symbols[i].heap);
        IHostMemoryManager_Release(r.m);
    }
    free(r.libc_block);
    free(s->statements);
    free(s);
    return status;
}
