/*
 * test_nomalloc.c - SPEC §5: VirtualQuery never allocates heap memory (a
 * runtime calls it while other threads may be stopped inside malloc). This
 * program replaces malloc and friends with counting wrappers around glibc's and
 * checks that VirtualQuery of every kind of address - a reservation, arena
 * slack, free space, the stack, the program's image, a file mapping - calls
 * none of them. Skipped under sanitizers, which own malloc.
 */
#define COBJMACROS
#include <fcntl.h>
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
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
void *malloc(size_t n)
{
    atomic_fetch_add(&allocations, 1);
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    atomic_fetch_add(&allocations, 1);
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    atomic_fetch_add(&allocations, 1);
    return __libc_realloc(p, n);
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

int main(void)
{
#ifdef UNDER_SANITIZER
    printf("test_nomalloc: skipped under a sanitizer (it replaces malloc itself)\n");
#else
    RUN(virtualquery_allocates_nothing_for_any_address);
#endif
    return TEST_SUMMARY("test_nomalloc");
}
