/*
 * os.h - the seam between hostmem and the kernel.
 *
 * Every system call hostmem makes on memory goes through the table below, so
 * that tests can fail any of them (tests/test_faults.c). Contract of every
 * primitive: page-aligned arguments, an errno value as result, 0 = success.
 * A primitive never changes anything when it fails, except where noted: the
 * kernel may apply mprotect and madvise to part of a range spanning several
 * kernel mappings before failing, so callers restore what they changed.
 */
#ifndef HOSTMEM_OS_H
#define HOSTMEM_OS_H

#include <stddef.h>
#include <stdint.h>

/* Hardware protections, as mmap's PROT_* bits. */
enum { OS_PROT_NONE = 0, OS_PROT_READ = 1, OS_PROT_WRITE = 2, OS_PROT_EXEC = 4 };

/* One line of /proc/self/maps. */
struct os_mapping {
    uintptr_t start, end;
    int prot;           /* OS_PROT_* */
    int shared;         /* 's' in the permissions */
    uint64_t inode;     /* 0 for anonymous memory */
    uint64_t device;
    char kind;          /* 'a' anonymous, 'f' file, 's' special ([stack], [vdso], ...) */
};

/* Returns non-zero to stop the walk. */
typedef int (*os_mapping_fn)(void *context, const struct os_mapping *mapping);

struct hostmem_os_ops {
    /* mmap anonymous private memory with MAP_NORESERVE. fixed: MAP_FIXED_NOREPLACE
     * at hint (EEXIST when anything is there). */
    int (*map)(void *hint, size_t size, int prot, int fixed, void **out);
    int (*unmap)(void *address, size_t size);
    int (*protect)(void *address, size_t size, int prot);
    int (*discard)(void *address, size_t size);   /* MADV_DONTNEED: pages read zero again */
    int (*reset)(void *address, size_t size);     /* MADV_FREE: contents may be dropped */
    /* Walks /proc/self/maps in address order without allocating heap memory. */
    int (*walk_mappings)(os_mapping_fn fn, void *context);
    /* Asks for transparent huge pages on a 2 MiB-aligned range (a hint: may be NULL). */
    int (*advise_huge)(void *address, size_t size);
    /* Reads a small file (/proc, /sys) into buffer, NUL-terminated; *length = bytes read. */
    int (*read_file)(const char *path, char *buffer, size_t size, size_t *length);
    /* mmap of the kernel's default huge pages (MAP_HUGETLB), committed and reserved
     * in the huge-page pool at once: ENOMEM when the pool cannot hold them. size is
     * a multiple of the huge page; fixed as for map. NULL: the seam has none. */
    int (*map_large)(void *hint, size_t size, int prot, int fixed, void **out);
    /* The address space the process may map (RLIMIT_AS's soft limit, read now,
     * so a limit changed mid-run is followed), in bytes; UINT64_MAX when there
     * is none. NULL: the seam cannot tell, which counts as no limit. */
    int (*address_limit)(uint64_t *bytes);
    /* Write watch in the kernel (docs/writewatch.md): userfaultfd write-protection
     * in asynchronous mode, read and reset with PAGEMAP_SCAN (Linux 6.7), one
     * context for the process. An errno; ENOSYS, EPERM, EINVAL or ENOTTY when the
     * kernel has no such interface. NULL: the seam has none. */
    int (*watch_probe)(void);                          /* 0 when it can */
    /* tracked from now; clean: every page clean, else a page present reads as written */
    int (*watch_add)(void *address, size_t size, int clean);
    int (*watch_remove)(void *address, size_t size);   /* no longer tracked */
    int (*watch_clean)(void *address, size_t size);    /* every page clean again */
    /* The written pages of [address, +size), ascending, at most max of them
     * (max >= 1) into pages; reset: those found are clean again. *found: how many. */
    int (*watch_scan)(void *address, size_t size, int reset, void **pages, size_t max, size_t *found);
    /* size bytes from the kernel's random source (getrandom, never blocking).
     * NULL: the seam has none. */
    int (*random)(void *buffer, size_t size);
};

/* The table in force; tests swap it (never while another thread is inside hostmem). */
extern const struct hostmem_os_ops *hostmem_os;
extern const struct hostmem_os_ops hostmem_os_linux;

/* Finds the kernel mapping containing address, or the first one above it.
 * Returns 1 and fills *found when one contains address; 0 when none does, with
 * *next_start = start of the next mapping (or UINTPTR_MAX); an errno < 0 on failure. */
int os_find_mapping(uintptr_t address, struct os_mapping *found, uintptr_t *next_start);

/* Maps size bytes aligned to align (a power of two, at least a page), near
 * hint: as asked first (the kernel often gives an aligned address), else
 * over-mapped by align and trimmed. Uses the seam's map and unmap; an errno. */
int os_map_aligned(void *hint, size_t size, size_t align, int prot, void **out);

/* Metadata mappings (docs/security.md): size bytes readable and
 * writable, aligned to align (a page, or a larger power of two), with one
 * inaccessible page just below and one just above, inside the same mapping,
 * so that no page the runtime is handed can lie directly beside the library's
 * books whatever the kernel or a fixed-address VirtualAlloc puts next to them.
 * Uses the seam's map, unmap and protect (faults injected there apply); an
 * errno, nothing left mapped on failure - unless the unmap undoing a refused
 * protect is refused too. Every refused side call (a trim of the excess, which
 * then stays mapped and inaccessible, or the undo) is left in *side for the
 * caller to count. os_unmap_guarded gives back what os_map_guarded returned,
 * guards included. */
struct os_side {
    int refused; /* side calls the kernel refused */
    int err;     /* the errno of the last of them */
};
int os_map_guarded(size_t size, size_t align, void **out, struct os_side *side);
int os_unmap_guarded(void *address, size_t size);

/* The process's address-space limit through the table in force (its
 * address_limit): bytes, UINT64_MAX when there is none or the seam cannot tell. */
uint64_t os_address_limit(void);

size_t os_page_size(void);

/* A random 64-bit value: the seam's random source, or, when it has none or it
 * fails (no getrandom, a seccomp filter, entropy not ready), the time, the
 * process, a stack address and a counter mixed (splitmix64): never a value a
 * second call of the process repeats. */
uint64_t os_random(void);

#endif /* HOSTMEM_OS_H */
