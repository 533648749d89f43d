/*
 * query.c - VirtualQuery for any address of the process.
 *
 * Never takes a lock and never allocates: it reads the address map and the
 * reservation latches with atomic loads (a suspended writer cannot stall it),
 * and, outside this manager's memory, the kernel's view from /proc/self/maps
 * through a stack buffer.
 *
 * Regions: inside a reservation, the run of equal state and protection; in
 * address space this manager holds but has not handed out (arena slack, the
 * unused tail of a reservation's last granule), MEM_FREE, merged with any
 * unmapped space that follows; elsewhere, the kernel mapping, clipped where
 * this manager's address space begins.
 */
#include <string.h>

#include "internal.h"

static DWORD protect_from_os(int prot)
{
    switch (prot) {
    case OS_PROT_READ:
        return PAGE_READONLY;
    case OS_PROT_READ | OS_PROT_WRITE:
    case OS_PROT_WRITE:
        return PAGE_READWRITE;
    case OS_PROT_EXEC:
        return PAGE_EXECUTE;
    case OS_PROT_READ | OS_PROT_EXEC:
        return PAGE_EXECUTE_READ;
    case OS_PROT_READ | OS_PROT_WRITE | OS_PROT_EXEC:
    case OS_PROT_WRITE | OS_PROT_EXEC:
        return PAGE_EXECUTE_READWRITE;
    default:
        return PAGE_NOACCESS;
    }
}

enum owner { OWNER_OTHER, OWNER_FREE, OWNER_RESERVATION };

/* Classifies one address for this manager: free (slack or a granule tail), in
 * a reservation (view filled), or not this manager's. */
static enum owner classify(struct manager *m, uintptr_t address, struct run_snapshot *view)
{
    for (;;) {
        uintptr_t e = radix_load_prefetch(address);
        if (!e || entry_id(e) != m->id)
            return OWNER_OTHER;
        if (entry_is_slack(e))
            return OWNER_FREE;
        int seen = reservation_read(entry_pointer(e), e, address, view);
        if (seen == 1)
            return OWNER_RESERVATION;
        if (seen == 2)
            return OWNER_FREE;
    }
}

/* The end of the free space that starts at address (free or unmapped). */
static uintptr_t free_end(struct manager *m, uintptr_t address)
{
    uintptr_t a = address;
    struct run_snapshot view;
    while (a < ADDRESS_LIMIT) {
        enum owner o = classify(m, a, &view);
        if (o == OWNER_RESERVATION)
            return a;
        if (o == OWNER_FREE) {
            a = granule_down(a) + g_granule; /* slack and tails end on a granule */
            continue;
        }
        struct os_mapping found;
        uintptr_t next;
        int hit = os_find_mapping(a, &found, &next);
        if (hit < 0)
            os_refused(m, -hit, "reading /proc/self/maps");
        if (hit != 0)
            return a; /* mapped by someone else (or unreadable): free space ends */
        uintptr_t ours = arena_next_start(m, a);
        if (ours <= next && ours != UINTPTR_MAX) {
            a = ours; /* our arena begins before any foreign mapping */
            continue;
        }
        return next < ADDRESS_LIMIT ? next : ADDRESS_LIMIT;
    }
    return ADDRESS_LIMIT;
}

static void fill_free(MEMORY_BASIC_INFORMATION *info, uintptr_t page, uintptr_t end)
{
    memset(info, 0, sizeof *info);
    info->BaseAddress = (void *)page;
    info->AllocationBase = NULL;
    info->AllocationProtect = 0;
    info->RegionSize = end - page;
    info->State = MEM_FREE;
    info->Protect = PAGE_NOACCESS;
    info->Type = 0;
}

struct image_context {
    uint64_t inode, device;
    int executable;
};

static int image_step(void *context, const struct os_mapping *m)
{
    struct image_context *c = context;
    if (m->kind == 'f' && m->inode == c->inode && m->device == c->device &&
        (m->prot & OS_PROT_EXEC)) {
        c->executable = 1;
        return 1;
    }
    return 0;
}

/* Writes *info only to answer: a failure leaves it as it was (com.c hands in
 * the caller's own buffer). */
HRESULT vm_query(struct manager *m, void *address, MEMORY_BASIC_INFORMATION *info)
{
    uintptr_t page = page_down((uintptr_t)address);
    struct run_snapshot view;
    enum owner o = classify(m, page, &view);
    if (o == OWNER_RESERVATION) {
        memset(info, 0, sizeof *info);
        info->BaseAddress = (void *)page;
        info->AllocationBase = (void *)view.base;
        info->AllocationProtect = view.alloc_protect;
        info->RegionSize = view.base + (view.end << g_page_shift) - page;
        info->State = view.attr ? MEM_COMMIT : MEM_RESERVE;
        info->Protect = view.attr;
        info->Type = MEM_PRIVATE;
        return S_OK;
    }
    if (page >= ADDRESS_LIMIT)
        return E_INVALIDARG; /* beyond user space, as Windows answers past its highest address */
    if (o == OWNER_FREE) {
        fill_free(info, page, free_end(m, page));
        return S_OK;
    }
    struct os_mapping found;
    uintptr_t next;
    int hit = os_find_mapping(page, &found, &next);
    if (hit < 0) /* /proc/self/maps unreadable: nothing to say, nothing changed */
        return os_refused(m, -hit, "reading /proc/self/maps");
    if (hit == 0) {
        fill_free(info, page, free_end(m, page));
        return S_OK;
    }
    uintptr_t end = found.end;
    uintptr_t ours = arena_next_start(m, page);
    if (ours < end)
        end = ours;
    memset(info, 0, sizeof *info);
    info->BaseAddress = (void *)page;
    info->AllocationBase = (void *)found.start;
    info->AllocationProtect = protect_from_os(found.prot);
    info->RegionSize = end - page;
    info->State = MEM_COMMIT;
    info->Protect = protect_from_os(found.prot);
    if (found.kind == 'f') {
        struct image_context c = {found.inode, found.device, (found.prot & OS_PROT_EXEC) != 0};
        int err = c.executable ? 0 : os_walk_mappings(image_step, &c);
        if (err)
            os_refused(m, err, "reading /proc/self/maps"); /* MEM_MAPPED: the best it can say */
        info->Type = c.executable ? MEM_IMAGE : MEM_MAPPED;
    } else {
        info->Type = MEM_PRIVATE;
    }
    return S_OK;
}
