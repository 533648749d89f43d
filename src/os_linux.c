/*
 * os_linux.c - the only file that talks to the kernel about memory.
 *
 * Owns: mmap, munmap, mprotect, madvise, the reading of /proc/self/maps and
 * of small /proc files, getrlimit(RLIMIT_AS), the kernel's write tracking
 * (userfaultfd and PAGEMAP_SCAN), and its randomness (getrandom).
 * Must never: allocate heap memory (VirtualQuery reaches walk_mappings while
 * other threads may be suspended inside malloc), or map anything MAP_FIXED over
 * memory it was not given (reservations at fixed addresses use
 * MAP_FIXED_NOREPLACE, which refuses to replace).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Anonymous private memory with the given extra flags; fixed: at hint, never
 * over anything (MAP_FIXED_NOREPLACE). */
static int map_anonymous(void *hint, size_t size, int prot, int fixed, int flags, void **out)
{
    flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    if (fixed)
        flags |= MAP_FIXED_NOREPLACE;
    void *p = mmap(hint, size, prot, flags, -1, 0);
    if (p == MAP_FAILED)
        return errno;
    if (fixed && p != hint) {
        /* A kernel older than 4.17 takes MAP_FIXED_NOREPLACE as a hint. */
        munmap(p, size);
        return EEXIST;
    }
    *out = p;
    return 0;
}

static int linux_map(void *hint, size_t size, int prot, int fixed, void **out)
{
    return map_anonymous(hint, size, prot, fixed, MAP_NORESERVE, out);
}

static int linux_map_large(void *hint, size_t size, int prot, int fixed, void **out)
{
#ifdef MAP_HUGETLB
    /* No MAP_NORESERVE: the pool reserves the pages now, so a touch never finds
     * the pool empty (it would be SIGBUS); a pool too small is ENOMEM here. */
    return map_anonymous(hint, size, prot, fixed, MAP_HUGETLB, out);
#else
    (void)hint, (void)size, (void)prot, (void)fixed, (void)out;
    return ENOSYS;
#endif
}

static int linux_unmap(void *address, size_t size)
{
    return munmap(address, size) ? errno : 0;
}

static int linux_protect(void *address, size_t size, int prot)
{
    return mprotect(address, size, prot) ? errno : 0;
}

static int linux_discard(void *address, size_t size)
{
    return madvise(address, size, MADV_DONTNEED) ? errno : 0;
}

static int linux_reset(void *address, size_t size)
{
#ifdef MADV_FREE
    if (madvise(address, size, MADV_FREE) == 0)
        return 0;
    if (errno != EINVAL)
        return errno;
#endif
    /* Kernels before 4.5: dropping the pages now is a valid "contents undefined". */
    return madvise(address, size, MADV_DONTNEED) ? errno : 0;
}

static uint64_t parse_hex(const char **cursor)
{
    uint64_t v = 0;
    const char *s = *cursor;
    for (;; s++) {
        char c = *s;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uint64_t)(c - 'a' + 10);
        else
            break;
    }
    *cursor = s;
    return v;
}

static uint64_t parse_dec(const char **cursor)
{
    uint64_t v = 0;
    const char *s = *cursor;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    *cursor = s;
    return v;
}

/* Parses "start-end perms offset major:minor inode   path". */
static int parse_line(const char *s, struct os_mapping *m)
{
    m->start = (uintptr_t)parse_hex(&s);
    if (*s++ != '-')
        return 0;
    m->end = (uintptr_t)parse_hex(&s);
    if (*s++ != ' ')
        return 0;
    m->prot = 0;
    if (s[0] == 'r')
        m->prot |= OS_PROT_READ;
    if (s[1] == 'w')
        m->prot |= OS_PROT_WRITE;
    if (s[2] == 'x')
        m->prot |= OS_PROT_EXEC;
    m->shared = s[3] == 's';
    s += 4;
    while (*s == ' ')
        s++;
    parse_hex(&s); /* offset */
    while (*s == ' ')
        s++;
    uint64_t major = parse_hex(&s);
    if (*s == ':')
        s++;
    uint64_t minor = parse_hex(&s);
    m->device = major << 32 | minor;
    while (*s == ' ')
        s++;
    m->inode = parse_dec(&s);
    while (*s == ' ')
        s++;
    if (*s == '/')
        m->kind = 'f';
    else if (*s == '[' || m->inode != 0)
        m->kind = m->inode ? 'f' : 's';
    else
        m->kind = 'a';
    return 1;
}

static int linux_walk_mappings(os_mapping_fn fn, void *context)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    char buffer[4096];
    size_t have = 0;
    int result = 0;
    for (;;) {
        ssize_t n = read(fd, buffer + have, sizeof buffer - 1 - have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            result = errno;
            break;
        }
        have += (size_t)n;
        buffer[have] = 0;
        size_t used = 0;
        int stop = 0;
        for (;;) {
            char *line = buffer + used;
            char *nl = line;
            while (*nl && *nl != '\n')
                nl++;
            if (!*nl && n != 0)
                break; /* incomplete line: read more */
            if (nl == line && !*nl)
                break;
            *nl = 0;
            struct os_mapping m;
            if (parse_line(line, &m) && fn(context, &m)) {
                stop = 1;
                break;
            }
            used = (size_t)(nl - buffer) + 1;
            if (used >= have)
                break;
        }
        if (stop || n == 0)
            break;
        if (used == 0 && have == sizeof buffer - 1) {
            /* A line longer than the buffer (a very long path): skip its tail. */
            have = 0;
            continue;
        }
        for (size_t i = used; i < have; i++)
            buffer[i - used] = buffer[i];
        have -= used;
    }
    close(fd);
    return result;
}

static int linux_advise_huge(void *address, size_t size)
{
#ifdef MADV_HUGEPAGE
    return madvise(address, size, MADV_HUGEPAGE) ? errno : 0;
#else
    (void)address;
    (void)size;
    return 0;
#endif
}

static int linux_read_file(const char *path, char *buffer, size_t size, size_t *length)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t have = 0;
    while (have + 1 < size) {
        ssize_t n = read(fd, buffer + have, size - 1 - have);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int err = errno;
            close(fd);
            return err;
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    close(fd);
    buffer[have] = 0;
    *length = have;
    return 0;
}

static int linux_address_limit(uint64_t *bytes)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit))
        return errno;
    *bytes = limit.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)limit.rlim_cur;
    return 0;
}

/* ---- write tracking: userfaultfd + PAGEMAP_SCAN --------------------------------------
 * What Linux 6.7's headers declare and older installed headers may lack. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef PAGEMAP_SCAN
struct page_region {
    uint64_t start, end, categories;
};
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

/* The process's context: the userfaultfd and /proc/self/pagemap, opened on
 * first use and published together (uffd | pagemap << 32); opened again in a
 * forked child, whose inherited descriptors speak for the parent. */
static _Atomic uint64_t watch_fds;
static _Atomic pid_t watch_pid;
static _Atomic int watch_refused; /* the errno that says the kernel cannot */

static int watch_open_fds(int *uffd, int *pagemap)
{
    /* User-mode faults only: what an unprivileged process may ask for; the
     * asynchronous mode resolves the kernel's own writes without it. */
    int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (u < 0)
        return errno;
    struct uffdio_api api = {UFFD_API, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0};
    if (ioctl(u, UFFDIO_API, &api)) {
        int err = errno;
        close(u);
        return err;
    }
    int p = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (p < 0) {
        int err = errno;
        close(u);
        return err;
    }
    struct pm_scan_arg probe = {sizeof probe, 0, 0, 0, 0, 0, 0, 0, 0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN};
    if (ioctl(p, PAGEMAP_SCAN, &probe) < 0) {
        int err = errno;
        close(u);
        close(p);
        return err;
    }
    *uffd = u;
    *pagemap = p;
    return 0;
}

static int watch_context(int *uffd, int *pagemap)
{
    int refused = atomic_load_explicit(&watch_refused, memory_order_relaxed);
    if (refused)
        return refused;
    pid_t self = getpid();
    for (;;) {
        uint64_t fds = atomic_load_explicit(&watch_fds, memory_order_acquire);
        if (fds && atomic_load_explicit(&watch_pid, memory_order_acquire) == self) {
            *uffd = (int)(uint32_t)fds;
            *pagemap = (int)(fds >> 32);
            return 0;
        }
        int u = -1, p = -1, err = watch_open_fds(&u, &p);
        if (err) {
            if (err == ENOSYS || err == EPERM || err == EINVAL || err == ENOTTY || err == EOPNOTSUPP)
                atomic_store_explicit(&watch_refused, err, memory_order_relaxed);
            return err;
        }
        uint64_t mine = (uint32_t)u | (uint64_t)(uint32_t)p << 32;
        if (atomic_compare_exchange_strong(&watch_fds, &fds, mine)) {
            atomic_store_explicit(&watch_pid, self, memory_order_release);
            if (fds) { /* the parent's, inherited */
                close((int)(uint32_t)fds);
                close((int)(fds >> 32));
            }
        } else {
            close(u);
            close(p);
        }
    }
}

static int linux_watch_probe(void)
{
    int u, p;
    return watch_context(&u, &p);
}

static int linux_watch_add(void *address, size_t size, int clean)
{
    int u, p, err = watch_context(&u, &p);
    if (err)
        return err;
    struct uffdio_register reg = {{(uintptr_t)address, size}, UFFDIO_REGISTER_MODE_WP, 0};
    if (ioctl(u, UFFDIO_REGISTER, &reg))
        return errno;
    if (!clean)
        return 0;
    struct uffdio_writeprotect wp = {{(uintptr_t)address, size}, UFFDIO_WRITEPROTECT_MODE_WP};
    if (ioctl(u, UFFDIO_WRITEPROTECT, &wp)) {
        err = errno;
        struct uffdio_range range = {(uintptr_t)address, size};
        ioctl(u, UFFDIO_UNREGISTER, &range);
        return err;
    }
    return 0;
}

static int linux_watch_remove(void *address, size_t size)
{
    int u, p, err = watch_context(&u, &p);
    if (err)
        return err;
    struct uffdio_range range = {(uintptr_t)address, size};
    return ioctl(u, UFFDIO_UNREGISTER, &range) ? errno : 0;
}

static int linux_watch_clean(void *address, size_t size)
{
    int u, p, err = watch_context(&u, &p);
    if (err)
        return err;
    struct uffdio_writeprotect wp = {{(uintptr_t)address, size}, UFFDIO_WRITEPROTECT_MODE_WP};
    return ioctl(u, UFFDIO_WRITEPROTECT, &wp) ? errno : 0;
}

static int linux_watch_scan(void *address, size_t size, int reset, void **pages, size_t max, size_t *found)
{
    int u, p, err = watch_context(&u, &p);
    *found = 0;
    if (err)
        return err;
    /* Each PAGEMAP_SCAN with a reset flushes the TLBs once (an IPI, a VM exit
     * on a guest): a GC's dirty pages are scattered, a region a page or two,
     * so the vector's length is the number of calls. 512 regions (12 KiB of
     * stack) scanned a 480 MiB heap with a quarter of its pages written in a
     * third of the time 32 took (19-23 ms against 60-112). */
    struct page_region vec[512];
    uintptr_t at = (uintptr_t)address, end = at + size, page = (uintptr_t)os_page_size();
    size_t n = 0;
    while (at < end && n < max) {
        struct pm_scan_arg arg = {sizeof arg, reset ? PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC : 0,
                                  at, end, 0, (uintptr_t)vec, sizeof vec / sizeof vec[0], max - n,
                                  0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN};
        long regions = ioctl(p, PAGEMAP_SCAN, &arg);
        if (regions < 0) {
            *found = n;
            return errno;
        }
        for (long i = 0; i < regions; i++)
            for (uintptr_t a = vec[i].start; a < vec[i].end && n < max; a += page)
                pages[n++] = (void *)a;
        if (arg.walk_end <= at)
            break;
        at = arg.walk_end;
    }
    *found = n;
    return 0;
}

static int linux_random(void *buffer, size_t size)
{
    ssize_t n = getrandom(buffer, size, GRND_NONBLOCK);
    if (n < 0)
        return errno;
    return (size_t)n == size ? 0 : EAGAIN;
}

const struct hostmem_os_ops hostmem_os_linux = {
    .map = linux_map,
    .unmap = linux_unmap,
    .protect = linux_protect,
    .discard = linux_discard,
    .reset = linux_reset,
    .walk_mappings = linux_walk_mappings,
    .read_file = linux_read_file,
    .advise_huge = linux_advise_huge,
    .map_large = linux_map_large,
    .address_limit = linux_address_limit,
    .watch_probe = linux_watch_probe,
    .watch_add = linux_watch_add,
    .watch_remove = linux_watch_remove,
    .watch_clean = linux_watch_clean,
    .watch_scan = linux_watch_scan,
    .random = linux_random,
};

const struct hostmem_os_ops *hostmem_os = &hostmem_os_linux;

struct find_context {
    uintptr_t address;
    struct os_mapping *found;
    uintptr_t next_start;
    int hit;
};

static int find_step(void *context, const struct os_mapping *m)
{
    struct find_context *f = context;
    if (m->end <= f->address)
        return 0;
    if (m->start <= f->address) {
        *f->found = *m;
        f->hit = 1;
    } else {
        f->next_start = m->start;
    }
    return 1;
}

int os_find_mapping(uintptr_t address, struct os_mapping *found, uintptr_t *next_start)
{
    struct find_context f = {address, found, UINTPTR_MAX, 0};
    int err = hostmem_os->walk_mappings(find_step, &f);
    if (err)
        return -err;
    *next_start = f.next_start;
    return f.hit;
}

int os_map_aligned(void *hint, size_t size, size_t align, int prot, void **out)
{
    void *p;
    int err = hostmem_os->map(hint, size, prot, 0, &p);
    if (err)
        return err;
    if (((uintptr_t)p & (align - 1)) == 0) {
        *out = p;
        return 0;
    }
    hostmem_os->unmap(p, size);
    err = hostmem_os->map(hint, size + align, prot, 0, &p);
    if (err)
        return err;
    uintptr_t a = (uintptr_t)p, aligned = (a + align - 1) & ~(uintptr_t)(align - 1);
    if (aligned > a && (err = hostmem_os->unmap(p, aligned - a)) != 0) {
        hostmem_os->unmap(p, size + align);
        return err;
    }
    if (a + align > aligned) /* the tail past the aligned range */
        hostmem_os->unmap((void *)(aligned + size), a + align - aligned);
    *out = (void *)aligned;
    return 0;
}

uint64_t os_address_limit(void)
{
    uint64_t bytes;
    if (!hostmem_os->address_limit || hostmem_os->address_limit(&bytes))
        return UINT64_MAX; /* unknown: as without a limit, the kernel still has the last word */
    return bytes;
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint64_t os_random(void)
{
    static _Atomic uint64_t drawn;
    uint64_t value;
    if (hostmem_os->random && hostmem_os->random(&value, sizeof value) == 0)
        return value;
    struct timespec t = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t x = (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
    x = splitmix64(x ^ ((uint64_t)getpid() << 32));
    x = splitmix64(x ^ (uint64_t)(uintptr_t)&t); /* the stack: randomised by the kernel */
    return splitmix64(x ^ atomic_fetch_add_explicit(&drawn, 1, memory_order_relaxed));
}

size_t os_page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

/* The page size, read once (os_map_guarded is on the metadata paths). */
static size_t guard_page(void)
{
    static _Atomic size_t page;
    size_t p = atomic_load_explicit(&page, memory_order_relaxed);
    if (!p) {
        p = os_page_size();
        atomic_store_explicit(&page, p, memory_order_relaxed);
    }
    return p;
}

/*
 * [guard][size bytes, read-write][guard]: mapped inaccessible whole (over-mapped
 * by align when align is more than a page, the excess trimmed off), then the
 * middle made writable. Three kernel mappings at most; a guard merges with an
 * inaccessible neighbour. An aligned middle keeps a 2 MiB chunk eligible for a
 * huge page.
 */
/* A refused side call of os_map_guarded (a trim, the undo): counted in *side. */
static void side_refused(struct os_side *side, int err)
{
    if (err) {
        side->refused++;
        side->err = err;
    }
}

int os_map_guarded(size_t size, size_t align, void **out, struct os_side *side)
{
    side->refused = 0;
    side->err = 0;
    size_t page = guard_page();
    if (align < page)
        align = page;
    size_t total = size + 2 * page, extra = align > page ? align : 0;
    if (size == 0 || total < size || total + extra < total)
        return ENOMEM;
    void *p;
    int err = hostmem_os->map(NULL, total + extra, OS_PROT_NONE, 0, &p);
    if (err)
        return err;
    uintptr_t a = (uintptr_t)p;
    uintptr_t start = (a + page + align - 1) & ~(uintptr_t)(align - 1); /* the middle */
    uintptr_t low = start - page, high = start + size + page;
    if (extra) {
        /* the excess below and above; a refused trim leaves it mapped, inaccessible */
        if (low > a)
            side_refused(side, hostmem_os->unmap(p, low - a));
        if (a + total + extra > high)
            side_refused(side, hostmem_os->unmap((void *)high, a + total + extra - high));
    }
    if ((err = hostmem_os->protect((void *)start, size, OS_PROT_READ | OS_PROT_WRITE)) != 0) {
        side_refused(side, hostmem_os->unmap((void *)low, high - low));
        return err;
    }
    *out = (void *)start;
    return 0;
}

int os_unmap_guarded(void *address, size_t size)
{
    size_t page = guard_page();
    return hostmem_os->unmap((char *)address - page, size + 2 * page);
}

