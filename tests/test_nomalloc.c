/*
 * test_nomalloc.c - hostmem never calls malloc.
 *
 * SPEC §5: VirtualQuery never allocates heap memory (a runtime calls it while
 * other threads may be stopped inside malloc). Issue 12: no path of the
 * library calls malloc, calloc or realloc at all, so that an allocator that
 * IS malloc (mimalloc overriding it) can sit on hostmem and create its manager
 * from inside its own initialisation.
 *
 * This program replaces malloc and friends with wrappers around glibc's that
 * count, and that abort when called while the calling thread is inside a
 * hostmem call (INSIDE(...) marks one). Skipped under sanitizers, which own
 * malloc.
 */
#define COBJMACROS
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

#ifndef UNDER_SANITIZER
static _Atomic long allocations;
static __thread const char *inside; /* the hostmem call this thread is in */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static void allocation_seen(const char *what)
{
    atomic_fetch_add(&allocations, 1);
    if (inside) {
        /* no stdio here: it could allocate too */
        static const char a[] = "test_nomalloc: FAIL: ", b[] = " called inside ";
        write(2, a, sizeof a - 1);
        write(2, what, strlen(what));
        write(2, b, sizeof b - 1);
        write(2, inside, strlen(inside));
        write(2, "\n", 1);
        abort();
    }
}
void *malloc(size_t n)
{
    allocation_seen("malloc");
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    allocation_seen("calloc");
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    allocation_seen("realloc");
    return __libc_realloc(p, n);
}
int posix_memalign(void **out, size_t align, size_t n)
{
    allocation_seen("posix_memalign");
    void *p = __libc_memalign(align, n);
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t n)
{
    allocation_seen("aligned_alloc");
    return __libc_memalign(align, n);
}
void free(void *p)
{
    __libc_free(p);
}

static int file_mapped_target;
static void image_function(void) {}

/* SPEC §5: no heap allocation in VirtualQuery, for any address. */
TEST(virtualquery_allocates_nothing_for_any_address)
{
    IHostMemoryManager *m;
    REQUIRE_HR(hostmem_create(NULL, &m), S_OK);
    size_t P = hostmem_page_size();
    void *base, *p;
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, NULL, 16 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base),
               S_OK);
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, (char *)base + P, 3 * P, MEM_COMMIT, PAGE_READONLY, eTaskCritical, &p),
               S_OK);
    REQUIRE_HR(IHostMemoryManager_VirtualAlloc(m, (char *)base + 8 * P, P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p),
               S_OK);
    char path[] = "/tmp/hostmem-nomalloc-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, (off_t)P) == 0);
    void *file = mmap(NULL, P, PROT_READ, MAP_SHARED, fd, 0);
    REQUIRE(file != MAP_FAILED);
    void *hole = mmap(NULL, P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(hole, P);
    int local = 0;
    void *addresses[] = {base, (char *)base + P, (char *)base + 8 * P, (char *)base + 15 * P,
                         (char *)base + 64 * 1024, (char *)base + (1 << 20), &local, (void *)&image_function,
                         &file_mapped_target, file, hole, NULL};
    MEMORY_BASIC_INFORMATION info;
    SIZE_T n;
    long before = atomic_load(&allocations);
    for (size_t i = 0; i < sizeof addresses / sizeof addresses[0]; i++)
        CHECK_HR(IHostMemoryManager_VirtualQuery(m, addresses[i], &info, sizeof info, &n), S_OK);
    long after = atomic_load(&allocations);
    CHECK_EQ(after - before, 0);
    /* the counter works: a call that may allocate is seen */
    void *volatile probe = malloc(16); /* volatile: the compiler may not drop the pair */
    free(probe);
    CHECK(atomic_load(&allocations) > after);
    munmap(file, P);
    close(fd);
    unlink(path);
    CHECK_EQ(IHostMemoryManager_Release(m), 0);
}
#endif

#ifndef UNDER_SANITIZER
/* INSIDE(expr): evaluates a hostmem call with the thread marked as inside it. */
static uint64_t inside_end(uint64_t result)
{
    inside = NULL;
    return result;
}
#define INSIDE(expr) (inside = #expr, inside_end((uint64_t)(expr)))
#define CHECK_INSIDE(expr, expected) CHECK_HR((HRESULT)INSIDE(expr), (expected))

static ULONG STDMETHODCALLTYPE cb_add_ref(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 2;
}
static ULONG STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback *self)
{
    (void)self;
    return 1;
}
static HRESULT STDMETHODCALLTYPE cb_query(ICLRMemoryNotificationCallback *self, REFIID riid, void **ppv)
{
    (void)riid;
    *ppv = self;
    return S_OK;
}
static _Atomic int notified;
static HRESULT STDMETHODCALLTYPE cb_notify(ICLRMemoryNotificationCallback *self, EMemoryAvailable e)
{
    (void)self;
    (void)e;
    atomic_fetch_add(&notified, 1);
    return S_OK;
}
static ICLRMemoryNotificationCallbackVtbl cb_vtbl = {cb_query, cb_add_ref, cb_release, cb_notify};
static ICLRMemoryNotificationCallback cb = {&cb_vtbl};

struct worker {
    IHostMalloc *heap;
    void *block;
};

/* A new thread's first Alloc builds its cache; its exit hands the cache on. */
static void *heap_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 100; i++) {
        void *p;
        if ((HRESULT)INSIDE(IHostMalloc_Alloc(w->heap, (size_t)(16 + i * 40), eTaskCritical, &p)) == S_OK)
            INSIDE(IHostMalloc_Free(w->heap, p));
    }
    INSIDE(IHostMalloc_Alloc(w->heap, 64, eTaskCritical, &w->block));
    return NULL;
}

/* Issue 12: no path of the library calls malloc, calloc or realloc: creation
 * (default and configured), every method of both interfaces, the native calls,
 * a heap used from another thread and its exit, shutdown and the last Release. */
TEST(no_hostmem_call_allocates_from_malloc)
{
    size_t P = hostmem_page_size(), G = hostmem_granularity();
    IHostMemoryManager *m, *m2;
    hostmem_config c = {sizeof c};
    c.flags = HOSTMEM_COMPACT;
    c.commit_limit = 64u << 20;
    c.lock_timeout_ms = 1000;
    c.address_space_limit = (size_t)1 << 40;
    REQUIRE_HR((HRESULT)INSIDE(hostmem_create(NULL, &m)), S_OK);
    REQUIRE_HR((HRESULT)INSIDE(hostmem_create(&c, &m2)), S_OK);
    IHostMemoryManager *managers[2] = {m, m2};
    for (int k = 0; k < 2; k++) {
        IHostMemoryManager *x = managers[k];
        void *base, *p, *big, *top, *fixed, *q;
        CHECK_INSIDE(IHostMemoryManager_QueryInterface(x, &IID_IHostMemoryManager, &q), S_OK);
        INSIDE(IHostMemoryManager_AddRef(x));
        INSIDE(IHostMemoryManager_Release(x));
        INSIDE(IHostMemoryManager_Release(x));
        CHECK_INSIDE(IHostMemoryManager_RegisterMemoryNotificationCallback(x, &cb), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, NULL, 64 * P, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &base), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, (char *)base + P, 8 * P, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        /* many runs: the reservation's run buffers grow */
        for (int i = 0; i < 20; i++) {
            DWORD old;
            CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, (char *)base + (20 + 2 * i) * P, P, MEM_COMMIT,
                                                         i & 1 ? PAGE_READONLY : PAGE_READWRITE, eTaskCritical, &p), S_OK);
            CHECK_INSIDE(IHostMemoryManager_VirtualProtect(x, (char *)base + (20 + 2 * i) * P, P, PAGE_EXECUTE_READ, &old), S_OK);
        }
        CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, (char *)base + P, P, MEM_RESET, PAGE_READWRITE, eTaskCritical, &p), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, NULL, 512u << 20, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &big), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualAlloc(x, NULL, 4 * P, MEM_RESERVE | MEM_COMMIT | MEM_TOP_DOWN, PAGE_READWRITE, eAppDomainCritical, &top), S_OK);
        fixed = (char *)big + (1u << 30) + 16 * G; /* past the big one: free space */
        INSIDE(IHostMemoryManager_VirtualAlloc(x, fixed, G, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, &fixed));
        MEMORY_BASIC_INFORMATION info;
        SIZE_T n;
        int local;
        void *addresses[] = {base, p, top, big, &local, (void *)&cb_notify, NULL};
        for (size_t i = 0; i < sizeof addresses / sizeof addresses[0]; i++)
            CHECK_INSIDE(IHostMemoryManager_VirtualQuery(x, addresses[i], &info, sizeof info, &n), S_OK);
        DWORD load;
        SIZE_T available;
        CHECK_INSIDE(IHostMemoryManager_GetMemoryLoad(x, &load, &available), S_OK);
        CHECK_INSIDE(IHostMemoryManager_NeedsVirtualAddressSpace(x, NULL, G), S_OK);
        /* enough ranges that the list grows */
        for (uintptr_t i = 0; i < 600; i++)
            CHECK_INSIDE(IHostMemoryManager_AcquiredVirtualAddressSpace(x, (void *)(0x100000000000ull + i * 0x10000), 0x10000), S_OK);
        for (uintptr_t i = 0; i < 600; i++)
            CHECK_INSIDE(IHostMemoryManager_ReleasedVirtualAddressSpace(x, (void *)(0x100000000000ull + i * 0x10000)), S_OK);

        IHostMalloc *heaps[2];
        CHECK_INSIDE(IHostMemoryManager_CreateMalloc(x, MALLOC_THREADSAFE, &heaps[0]), S_OK);
        CHECK_INSIDE(IHostMemoryManager_CreateMalloc(x, MALLOC_EXECUTABLE, &heaps[1]), S_OK);
        for (int h = 0; h < 2; h++) {
            IHostMalloc *heap = heaps[h];
            void *blocks[200], *qi;
            CHECK_INSIDE(IHostMalloc_QueryInterface(heap, &IID_IHostMalloc, &qi), S_OK);
            INSIDE(IHostMalloc_AddRef(heap));
            INSIDE(IHostMalloc_Release(heap));
            INSIDE(IHostMalloc_Release(heap));
            for (int i = 0; i < 200; i++) {
                size_t size = i % 50 == 0 ? (size_t)100000 : (size_t)(8 + 37 * i);
                if (i % 3 == 0)
                    CHECK_INSIDE(IHostMalloc_DebugAlloc(heap, size, eTaskCritical, __FILE__, __LINE__, &blocks[i]), S_OK);
                else
                    CHECK_INSIDE(IHostMalloc_Alloc(heap, size, eTaskCritical, &blocks[i]), S_OK);
            }
            for (int i = 0; i < 200; i++)
                CHECK_INSIDE(IHostMalloc_Free(heap, blocks[i]), S_OK);
            if (h == 0) {
                struct worker w = {heap, NULL};
                pthread_t t;
                REQUIRE(pthread_create(&t, NULL, heap_worker, &w) == 0);
                pthread_join(t, NULL);
                CHECK(w.block != NULL);
                CHECK_INSIDE(IHostMalloc_Free(heap, w.block), S_OK);
            }
            INSIDE(IHostMalloc_Release(heap));
        }
        hostmem_stats st = {sizeof st};
        CHECK_INSIDE(hostmem_get_stats(x, &st), S_OK);
        char why[200];
        CHECK_INSIDE(hostmem_validate(x, HOSTMEM_VALIDATE_KERNEL, why, sizeof why), S_OK);
        size_t maps;
        CHECK_INSIDE(hostmem_kernel_mappings(x, &maps), S_OK);
        CHECK_INSIDE(hostmem_set_commit_limit(x, 32u << 20), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualFree(x, (char *)base + P, 4 * P, MEM_DECOMMIT), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualFree(x, base, 0, MEM_RELEASE), S_OK);
        CHECK_INSIDE(IHostMemoryManager_VirtualFree(x, big, 0, MEM_RELEASE), S_OK);
        CHECK_INSIDE(IHostMemoryManager_RegisterMemoryNotificationCallback(x, NULL), S_OK);
    }
    CHECK_INSIDE(hostmem_shutdown(m2), S_OK);
    CHECK_EQ(INSIDE(IHostMemoryManager_Release(m2)), 0);
    CHECK_EQ(INSIDE(IHostMemoryManager_Release(m)), 0);
}
#endif

int main(void)
{
#ifdef UNDER_SANITIZER
    SKIP_NOT_BUILT(virtualquery_allocates_nothing_for_any_address, "a sanitizer replaces malloc itself");
    SKIP_NOT_BUILT(no_hostmem_call_allocates_from_malloc, "a sanitizer replaces malloc itself");
#else
    RUN(virtualquery_allocates_nothing_for_any_address);
    RUN(no_hostmem_call_allocates_from_malloc);
#endif
    return TEST_SUMMARY("test_nomalloc");
}
