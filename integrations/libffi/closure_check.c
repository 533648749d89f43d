/*
 * closure_check.c - libffi closures on hostmem, checked from the host's side.
 *
 *   closure_check any        (no dynamic-code policy: the closure checks below)
 *   closure_check refused    (run under HOSTMEM_DYNAMIC_CODE=wx or none)
 *
 * Linked with the hostmem build of libffi.so, whose closure allocator (dlmalloc)
 * takes its pages through dlmalloc's Windows path from hostmem's Win32 face,
 * and with the same shared libhostmem_win32, so that hostmem_win32_manager()
 * is the manager libffi's calls reach. Each check names the rule it pins:
 *
 * any:
 *   closure_code_lies_in_a_reservation_of_the_manager   ffi_closure_alloc's code
 *       address is in a region the manager walks, committed PAGE_EXECUTE_READWRITE
 *       and reserved so (VirtualQuery's AllocationProtect), and the manager counted
 *       the VirtualAlloc that made it; the code address is the writable one, as on
 *       Windows (dlmalloc's segments have no second, executable view there)
 *   closures_return_what_their_handlers_compute   a burst of closures (40,000,
 *       above dlmalloc's 2 MiB trim threshold) of three signatures (integers,
 *       floating point, ten arguments, some on the stack), each called through its
 *       code pointer and through ffi_call, then freed in the order they were made
 *   threads_allocate_call_and_free_closures   threads that allocate batches of
 *       closures, call them and free them in a shuffled order, concurrently
 *   freed_closures_give_their_reservations_back   after the burst, and again after
 *       the threads and one more burst, the manager holds the reservations and
 *       committed bytes it held after the first closure: dlmalloc trims its top to
 *       one 64 KiB granule once more than its trim threshold is free there (below
 *       it, it keeps the space, on Windows too; the threads' shuffled frees can
 *       leave up to that, which the next burst joins); VirtualFree(MEM_RELEASE)
 *       was counted, each release preceded by dlmalloc's VirtualQuery of it
 *       (win32munmap walks a segment reservation by reservation), and no call of
 *       the manager failed
 *   manager_validates_against_the_kernel   hostmem_validate(KERNEL) is S_OK
 *
 * refused:
 *   closure_alloc_is_refused_under_the_policy   every ffi_closure_alloc returns
 *       NULL (dlmalloc's PAGE_EXECUTE_READWRITE request is what W^X and no dynamic
 *       code refuse), the manager counted the refusals, holds no reservation and
 *       granted nothing executable
 *   manager_validates_against_the_kernel   as above
 *
 * Prints "info ..." lines with figures, "FAIL <check>: ..." for each failure and
 * closes with "closure_check: N passed, N failed"; exits 1 on any failure.
 * Environment: LIBFFI_CHECK_THREADS (4), LIBFFI_CHECK_ROUNDS (20),
 * LIBFFI_CHECK_BATCH (10000: closures a thread holds at once, half to all),
 * LIBFFI_CHECK_CLOSURES (40000, the burst): the sizes of the runs.
 */
#include "hostmem.h"
#include "hostmem_win32.h"

#include <ffi.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(int ok, const char *name, const char *detail)
{
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s: %s\n", name, detail);
    }
}

static size_t size_from_env(const char *name, size_t fallback)
{
    const char *value = getenv(name);
    if (value == NULL || *value == '\0')
        return fallback;
    long long n = atoll(value);
    return n > 0 ? (size_t)n : fallback;
}

static hostmem_stats stats_now(void)
{
    hostmem_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    IHostMemoryManager *manager = hostmem_win32_manager();
    if (manager == NULL || hostmem_get_stats(manager, &s) != S_OK) {
        printf("FAIL stats: no manager, or hostmem_get_stats failed\n");
        exit(1);
    }
    return s;
}

/* ---- three signatures and their handlers --------------------------------- */

/* int f(int a, int b): 3a + b + the closure's tag */
static ffi_cif cif_int;
static ffi_type *args_int[2];
static void handler_int(ffi_cif *cif, void *result, void **args, void *user_data)
{
    (void)cif;
    int a = *(int *)args[0], b = *(int *)args[1];
    *(ffi_arg *)result = (ffi_arg)(int)(3 * a + b + (int)(intptr_t)user_data);
}

/* double f(double x, float y, int64_t z): x * 2 + y + z + tag */
static ffi_cif cif_double;
static ffi_type *args_double[3];
static void handler_double(ffi_cif *cif, void *result, void **args, void *user_data)
{
    (void)cif;
    double x = *(double *)args[0];
    float y = *(float *)args[1];
    int64_t z = *(int64_t *)args[2];
    *(double *)result = x * 2 + y + (double)z + (double)(intptr_t)user_data;
}

/* long f(long a0, ..., long a9): sum of a_i * (i + 1), plus tag; some on the stack */
static ffi_cif cif_ten;
static ffi_type *args_ten[10];
static void handler_ten(ffi_cif *cif, void *result, void **args, void *user_data)
{
    (void)cif;
    long sum = (long)(intptr_t)user_data;
    for (int i = 0; i < 10; i++)
        sum += *(long *)args[i] * (i + 1);
    *(ffi_arg *)result = (ffi_arg)sum;
}

static int prepare_cifs(void)
{
    args_int[0] = args_int[1] = &ffi_type_sint;
    args_double[0] = &ffi_type_double;
    args_double[1] = &ffi_type_float;
    args_double[2] = &ffi_type_sint64;
    for (int i = 0; i < 10; i++)
        args_ten[i] = &ffi_type_slong;
    return ffi_prep_cif(&cif_int, FFI_DEFAULT_ABI, 2, &ffi_type_sint, args_int) == FFI_OK &&
           ffi_prep_cif(&cif_double, FFI_DEFAULT_ABI, 3, &ffi_type_double, args_double) == FFI_OK &&
           ffi_prep_cif(&cif_ten, FFI_DEFAULT_ABI, 10, &ffi_type_slong, args_ten) == FFI_OK;
}

typedef struct closure {
    ffi_closure *writable;
    void *code;
    int kind; /* 0 int, 1 double, 2 ten */
    int tag;
} closure;

/* Allocates and prepares one closure of a kind; 0 if ffi_closure_alloc refused. */
static int closure_make(closure *c, int kind, int tag)
{
    c->writable = ffi_closure_alloc(sizeof(ffi_closure), &c->code);
    if (c->writable == NULL)
        return 0;
    c->kind = kind;
    c->tag = tag;
    void *user_data = (void *)(intptr_t)tag;
    ffi_status status = kind == 0   ? ffi_prep_closure_loc(c->writable, &cif_int, handler_int, user_data, c->code)
                        : kind == 1 ? ffi_prep_closure_loc(c->writable, &cif_double, handler_double, user_data, c->code)
                                    : ffi_prep_closure_loc(c->writable, &cif_ten, handler_ten, user_data, c->code);
    if (status != FFI_OK) {
        ffi_closure_free(c->writable);
        c->writable = NULL;
        return 0;
    }
    return 1;
}

/* Calls a closure directly and through ffi_call with arguments from seed: 1 when
 * both answers are the handler's. */
static int closure_call(const closure *c, int seed)
{
    switch (c->kind) {
    case 0: {
        int a = seed % 1000 - 500, b = seed % 77;
        int expected = 3 * a + b + c->tag;
        int (*f)(int, int) = (int (*)(int, int))c->code;
        ffi_arg via_call = 0;
        void *values[2] = {&a, &b};
        ffi_call(&cif_int, FFI_FN(c->code), &via_call, values);
        return f(a, b) == expected && (int)via_call == expected;
    }
    case 1: {
        double x = seed * 0.5;
        float y = (float)(seed % 13) * 0.25f;
        int64_t z = (int64_t)seed * 100000007;
        double expected = x * 2 + y + (double)z + c->tag;
        double (*f)(double, float, int64_t) = (double (*)(double, float, int64_t))c->code;
        double via_call = 0;
        void *values[3] = {&x, &y, &z};
        ffi_call(&cif_double, FFI_FN(c->code), &via_call, values);
        return f(x, y, z) == expected && via_call == expected;
    }
    default: {
        long a[10];
        void *values[10];
        long expected = c->tag;
        for (int i = 0; i < 10; i++) {
            a[i] = (long)seed * (i + 3) - 7 * i;
            values[i] = &a[i];
            expected += a[i] * (i + 1);
        }
        long (*f)(long, long, long, long, long, long, long, long, long, long) =
            (long (*)(long, long, long, long, long, long, long, long, long, long))c->code;
        ffi_arg via_call = 0;
        ffi_call(&cif_ten, FFI_FN(c->code), &via_call, values);
        return f(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]) == expected &&
               (long)via_call == expected;
    }
    }
}

/* ---- where the code lives -------------------------------------------------- */

typedef struct find_region {
    uintptr_t address;
    MEMORY_BASIC_INFORMATION found;
    int hit;
} find_region;

static int region_holds(void *context, const MEMORY_BASIC_INFORMATION *region)
{
    find_region *f = context;
    uintptr_t base = (uintptr_t)region->BaseAddress;
    if (f->address >= base && f->address - base < region->RegionSize) {
        f->found = *region;
        f->hit = 1;
        return 1;
    }
    return 0;
}

static void check_code_placement(void)
{
    const char *name = "closure_code_lies_in_a_reservation_of_the_manager";
    hostmem_stats before = stats_now();
    closure c;
    char detail[256];
    if (!closure_make(&c, 0, 1)) {
        check(0, name, "ffi_closure_alloc returned NULL");
        return;
    }
    hostmem_stats after = stats_now();
    find_region f = {.address = (uintptr_t)c.code};
    HRESULT walked = hostmem_walk(hostmem_win32_manager(), region_holds, &f);
    MEMORY_BASIC_INFORMATION info;
    memset(&info, 0, sizeof info);
    SIZE_T got = VirtualQuery(c.code, &info, sizeof info);
    snprintf(detail, sizeof detail,
             "code %p: walk %s hit %d (protect 0x%" PRIx32 "); VirtualQuery %zu: state 0x%" PRIx32
             " protect 0x%" PRIx32 " allocation protect 0x%" PRIx32 " type 0x%" PRIx32
             "; VirtualAlloc calls %zu -> %zu",
             c.code, hostmem_result_name(walked), f.hit, f.found.Protect, (size_t)got, info.State,
             info.Protect, info.AllocationProtect, info.Type, before.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC],
             after.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC]);
    check(walked == S_OK && f.hit && f.found.State == MEM_COMMIT && f.found.Protect == PAGE_EXECUTE_READWRITE,
          name, detail);
    check(got == sizeof info && info.State == MEM_COMMIT && info.Protect == PAGE_EXECUTE_READWRITE &&
              info.AllocationProtect == PAGE_EXECUTE_READWRITE && info.Type == MEM_PRIVATE,
          name, detail);
    check(after.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC] > before.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC] &&
              after.reservations > before.reservations,
          name, detail);
    check((void *)c.writable == c.code, name, "the code address is not the writable address");
    check(closure_call(&c, 12345), name, "the first closure returned a wrong value");
    printf("info first closure: code %p in a reservation at %p of %zu bytes, PAGE_EXECUTE_READWRITE\n", c.code,
           info.AllocationBase, (size_t)f.found.RegionSize);
    ffi_closure_free(c.writable);
}

/* ---- many closures, one thread -------------------------------------------- */

static void check_many(size_t count)
{
    const char *name = "closures_return_what_their_handlers_compute";
    closure *all = calloc(count, sizeof *all);
    size_t made = 0, wrong = 0;
    for (size_t i = 0; i < count; i++)
        made += (size_t)closure_make(&all[i], (int)(i % 3), (int)i);
    for (int pass = 0; pass < 3; pass++)
        for (size_t i = 0; i < count; i++)
            if (all[i].writable != NULL && !closure_call(&all[i], (int)(i * 7 + (size_t)pass)))
                wrong++;
    char detail[160];
    snprintf(detail, sizeof detail, "%zu of %zu closures made, %zu wrong answers in %zu calls", made, count,
             wrong, made * 3 * 2);
    check(made == count, name, detail);
    check(wrong == 0, name, detail);
    hostmem_stats s = stats_now();
    printf("info %zu closures live at once: %zu reservations, %zu bytes committed\n", made, s.reservations,
           s.committed_bytes);
    /* Freed in the order they were made: the free space stays one block below the
     * closures still live until the last one joins it to dlmalloc's top, which is
     * then above its trim threshold (2 MiB) and trimmed to one granule at once. */
    for (size_t i = 0; i < count; i++)
        if (all[i].writable != NULL)
            ffi_closure_free(all[i].writable);
    free(all);
}

/* ---- many closures, many threads ------------------------------------------ */

typedef struct worker {
    pthread_t thread;
    int index;
    size_t rounds, batch;
    size_t made, refused, wrong;
} worker;

static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void *worker_run(void *argument)
{
    worker *w = argument;
    closure *batch = calloc(w->batch, sizeof *batch);
    size_t *order = calloc(w->batch, sizeof *order);
    uint64_t seed = 0x9E3779B97F4A7C15u * (uint64_t)(w->index + 1);
    for (size_t round = 0; round < w->rounds; round++) {
        /* a batch of a size that varies from round to round, so segments grow and shrink */
        size_t n = w->batch / 2 + (size_t)(next_random(&seed) % (w->batch / 2 + 1));
        for (size_t i = 0; i < n; i++) {
            int tag = w->index * 1000000 + (int)(round * 1000 + i);
            if (closure_make(&batch[i], (int)(next_random(&seed) % 3), tag))
                w->made++;
            else
                w->refused++;
        }
        for (size_t i = 0; i < n; i++)
            if (batch[i].writable != NULL && !closure_call(&batch[i], (int)(round + i)))
                w->wrong++;
        for (size_t i = 0; i < n; i++)
            order[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = (size_t)(next_random(&seed) % i), t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        for (size_t i = 0; i < n; i++) {
            closure *c = &batch[order[i]];
            if (c->writable != NULL)
                ffi_closure_free(c->writable);
            c->writable = NULL;
        }
    }
    free(order);
    free(batch);
    return NULL;
}

static void check_threads(size_t threads, size_t rounds, size_t batch)
{
    const char *name = "threads_allocate_call_and_free_closures";
    worker *workers = calloc(threads, sizeof *workers);
    hostmem_stats before = stats_now();
    size_t started = 0;
    for (size_t t = 0; t < threads; t++) {
        workers[t] = (worker){.index = (int)t, .rounds = rounds, .batch = batch};
        if (pthread_create(&workers[t].thread, NULL, worker_run, &workers[t]) == 0)
            started++;
        else
            break;
    }
    size_t made = 0, refused = 0, wrong = 0;
    for (size_t t = 0; t < started; t++) {
        pthread_join(workers[t].thread, NULL);
        made += workers[t].made;
        refused += workers[t].refused;
        wrong += workers[t].wrong;
    }
    free(workers);
    char detail[200];
    snprintf(detail, sizeof detail, "%zu of %zu threads started; %zu closures made, %zu refused, %zu wrong answers",
             started, threads, made, refused, wrong);
    check(started == threads && made > 0 && refused == 0 && wrong == 0, name, detail);
    hostmem_stats after = stats_now();
    printf("info %zu threads x %zu rounds: %zu closures made, called twice each and freed; VirtualAlloc %zu, "
           "VirtualQuery %zu, VirtualFree %zu (MEM_RELEASE %zu)\n",
           threads, rounds, made, after.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC] - before.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC],
           after.calls[HOSTMEM_METHOD_VIRTUAL_QUERY] - before.calls[HOSTMEM_METHOD_VIRTUAL_QUERY],
           after.calls[HOSTMEM_METHOD_VIRTUAL_FREE] - before.calls[HOSTMEM_METHOD_VIRTUAL_FREE],
           after.calls[HOSTMEM_KIND_RELEASE] - before.calls[HOSTMEM_KIND_RELEASE]);
    printf("info after the threads: %zu reservations, %zu bytes committed (dlmalloc keeps up to its trim "
           "threshold free)\n", after.reservations, after.committed_bytes);
}

/* After closures beyond dlmalloc's trim threshold were freed, in an order that
 * lets their space join its top: back to the reservations and committed bytes
 * of baseline, given back with VirtualQuery and VirtualFree(MEM_RELEASE) since
 * start, and no call of the manager failed. */
static void check_given_back(const char *when, const hostmem_stats *baseline, const hostmem_stats *start)
{
    const char *name = "freed_closures_give_their_reservations_back";
    hostmem_stats now = stats_now();
    size_t releases = now.calls[HOSTMEM_KIND_RELEASE] - start->calls[HOSTMEM_KIND_RELEASE];
    size_t queries = now.calls[HOSTMEM_METHOD_VIRTUAL_QUERY] - start->calls[HOSTMEM_METHOD_VIRTUAL_QUERY];
    size_t failures = 0;
    for (int i = 0; i < HOSTMEM_METHODS; i++)
        failures += now.call_failures[i];
    char detail[300];
    snprintf(detail, sizeof detail,
             "%s: reservations %zu (after the first closure %zu), committed %zu bytes (then %zu); "
             "MEM_RELEASE %zu, VirtualQuery %zu; failed calls %zu",
             when, now.reservations, baseline->reservations, now.committed_bytes, baseline->committed_bytes, releases,
             queries, failures);
    check(now.reservations == baseline->reservations, name, detail);
    check(now.committed_bytes == baseline->committed_bytes, name, detail);
    check(releases > 0, name, detail);
    check(queries >= releases, name, detail);
    check(failures == 0, name, detail);
    printf("info %s\n", detail);
}

static void check_validates(void)
{
    char why[512] = "";
    HRESULT valid = hostmem_validate(hostmem_win32_manager(), HOSTMEM_VALIDATE_KERNEL, why, sizeof why);
    char detail[600];
    snprintf(detail, sizeof detail, "%s: %s", hostmem_result_name(valid), why);
    check(valid == S_OK, "manager_validates_against_the_kernel", detail);
}

/* ---- under a dynamic-code policy ------------------------------------------ */

static void check_refused(void)
{
    const char *name = "closure_alloc_is_refused_under_the_policy";
    size_t granted = 0;
    for (int i = 0; i < 100; i++) {
        void *code = NULL;
        ffi_closure *c = ffi_closure_alloc(sizeof(ffi_closure), &code);
        if (c != NULL) {
            granted++;
            ffi_closure_free(c);
        }
    }
    hostmem_stats s = stats_now();
    char detail[200];
    snprintf(detail, sizeof detail,
             "policy %" PRIu32 ": %zu of 100 closures granted; refusals %zu; reservations %zu; VirtualAlloc %zu "
             "(%zu failed)",
             s.dynamic_code, granted, s.dynamic_code_refusals, s.reservations,
             s.calls[HOSTMEM_METHOD_VIRTUAL_ALLOC], s.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC]);
    check(s.dynamic_code != HOSTMEM_CODE_ANY, name, detail);
    check(granted == 0, name, detail);
    check(s.dynamic_code_refusals > 0 &&
              s.dynamic_code_refusals == s.call_failures[HOSTMEM_METHOD_VIRTUAL_ALLOC],
          name, detail);
    check(s.reservations == 0 && s.committed_bytes == 0, name, detail);
    printf("info %s\n", detail);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "any";
    if (!prepare_cifs()) {
        printf("FAIL ffi_prep_cif failed\nclosure_check: 0 passed, 1 failed\n");
        return 1;
    }
    if (strcmp(mode, "refused") == 0) {
        check_refused();
    } else if (strcmp(mode, "any") == 0) {
        hostmem_stats start = stats_now();
        check_code_placement();
        hostmem_stats baseline = stats_now();
        size_t burst = size_from_env("LIBFFI_CHECK_CLOSURES", 40000);
        check_many(burst);
        check_given_back("one thread's closures freed", &baseline, &start);
        hostmem_stats before_threads = stats_now();
        check_threads(size_from_env("LIBFFI_CHECK_THREADS", 4), size_from_env("LIBFFI_CHECK_ROUNDS", 20),
                      size_from_env("LIBFFI_CHECK_BATCH", 10000));
        /* what the threads left free below the trim threshold joins the next burst's */
        check_many(burst);
        check_given_back("the threads' closures and one more burst freed", &baseline, &before_threads);
    } else {
        fprintf(stderr, "usage: closure_check any|refused\n");
        return 2;
    }
    check_validates();
    printf("closure_check: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
