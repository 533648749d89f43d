/*
 * mi_hostmem.h - what a program sees of mimalloc's hostmem OS layer (os_hostmem.c).
 *
 * mimalloc built with -DMI_HOSTMEM takes every page it uses (reserve, commit,
 * decommit, reset, protect, release, large OS pages) from one IHostMemoryManager.
 * The layer creates that manager on mimalloc's first OS call, configured from the
 * environment (read once, at creation):
 *
 *   HOSTMEM_MI_COMMIT_LIMIT=N[K|M|G]  the manager's commit budget (hostmem_config.
 *                                     commit_limit); unset: hostmem's default (the
 *                                     cgroup's limit, if any)
 *   HOSTMEM_MI_COMPACT=1              hostmem's compact mode (docs/modes.md)
 *   HOSTMEM_MI_REPORT=1               at process exit, after mimalloc's own exit work,
 *                                     validate the manager against the kernel and print
 *                                     the report lines described in README.md
 *
 * A host that wants its own manager (its own budget, locks, callbacks) hands it over
 * with mi_hostmem_use() before mimalloc's first OS call. hostmem_set_commit_limit()
 * on mi_hostmem_manager() changes the budget at any time.
 */
#ifndef MI_HOSTMEM_H
#define MI_HOSTMEM_H

#include <stdbool.h>
#include <stddef.h>

#include "hostmem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Makes manager the one every OS call of mimalloc goes through, and takes a
 * reference to it. false (and nothing changes) when the layer already has a
 * manager: mimalloc made an OS call first, or another manager was handed over. */
bool mi_hostmem_use(IHostMemoryManager *manager);

/* The layer's manager, created from the environment if it has none yet; NULL if
 * it could not be created. The reference stays the layer's. */
IHostMemoryManager *mi_hostmem_manager(void);

/* What the layer asked of the manager, counted by the layer itself (hostmem's
 * own per-method counts are in hostmem_stats.calls). A "refused" call returned
 * anything but S_OK; a budget refusal is also counted in out_of_memory. */
typedef struct mi_hostmem_counts {
    size_t reserve, reserve_refused;      /* VirtualAlloc(MEM_RESERVE [| MEM_COMMIT]) */
    size_t release, release_refused;      /* VirtualFree(MEM_RELEASE) */
    size_t commit, commit_refused;        /* VirtualAlloc(MEM_COMMIT) */
    size_t decommit, decommit_refused;    /* VirtualFree(MEM_DECOMMIT) */
    size_t reset, reset_refused;          /* VirtualAlloc(MEM_RESET) */
    size_t protect, protect_refused;      /* VirtualProtect */
    size_t query;                         /* VirtualQuery */
    size_t out_of_memory;                 /* results E_OUTOFMEMORY (budget or kernel) */
    size_t large_tries, large_granted;    /* MEM_LARGE_PAGES asked / granted */
    size_t aligned_retries;               /* an aligned address taken by another thread */
    size_t aligned_kept_whole;            /* aligned by keeping an over-sized reservation */
    size_t guard_on_reserved;             /* protect/unprotect of pages not committed: skipped */
    size_t window_misses;                 /* an address in mimalloc's window was in use */
    size_t outside_window;                /* segment memory placed outside mimalloc's segment
                                             map (the window was crowded) */
    size_t live_reservations;             /* reserved and not yet released */
    size_t metadata_live, metadata_bytes; /* of those, mimalloc's own metadata (_mi_os_alloc:
                                             thread data, arena bitmaps) and its bytes */
} mi_hostmem_counts;
void mi_hostmem_get_counts(mi_hostmem_counts *out);

#ifdef __cplusplus
}
#endif

#endif /* MI_HOSTMEM_H */
