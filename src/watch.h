/*
 * watch.h - write watch (watch.c) as vm.c calls it at the steps of a change;
 * GetWriteWatch and ResetWriteWatch themselves are in internal.h (com.c's).
 */
#ifndef HOSTMEM_WATCH_H
#define HOSTMEM_WATCH_H

#include "range.h"

/* A new reservation at base, not yet published, starts to be watched: a slot
 * (emulate) or the kernel's registration. */
HRESULT watch_begin(struct manager *m, struct reservation *r, uintptr_t base, size_t bytes, bool emulate) HIDDEN;
/* Undoes watch_begin for a reservation that is abandoned; E_FAIL when the kernel
 * will not let go of it (the manager is disabled), else hr. */
HRESULT watch_abandon(struct manager *m, struct reservation *r, uintptr_t base, size_t bytes, HRESULT hr) HIDDEN;
/* A commit or VirtualProtect of [start,end) to attr in a reservation with an
 * emulated write watch: written pages get attr's protection, the others the
 * same without write; undone on a refusal as range_protect. */
HRESULT watch_protect(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end, unsigned attr) HIDDEN;
/* Before a change of [start,end) to attr (applied in the runs, which may be a
 * stale or pending mark) is published: a decommit's discarded pages read as not
 * written, from the kernel too; newly committed ones start clean. */
void watch_changed(struct manager *m, struct locked *l, const struct survey *s, uintptr_t start, uintptr_t end,
                   unsigned attr, unsigned applied) HIDDEN;
/* Before a VirtualProtect of a write-watched reservation: the slot its
 * captured pages need (E_OUTOFMEMORY, nothing changed, if none can be had). */
HRESULT watch_capture_ready(struct manager *m, struct locked *l) HIDDEN;
/* After it succeeded over [start,end): the pages written there are captured -
 * reported until they are reset, decommitted and committed again or not
 * (Windows' latch). */
void watch_capture(struct manager *m, struct locked *l, uintptr_t start, uintptr_t end) HIDDEN;
/* A reservation being released stops being watched: the kernel's
 * registration (S_OK, or E_FAIL through os_refused_stuck). */
HRESULT watch_unregister(struct manager *m, struct locked *l) HIDDEN;
/* Its emulated slot back, once the reservation is gone. */
void watch_give_back(struct manager *m, struct watched *w) HIDDEN;
/* In a forked child: the kernel's tracking of r's pages registered anew. */
void watch_after_fork(struct manager *m, const struct reservation *r, uintptr_t base) HIDDEN;
/* In a forked child, after arena_after_fork: the slots of reservations that
 * vanished threads were making, back. */
void watch_slots_after_fork(struct manager *m) HIDDEN;
/* At shutdown: every slot back. */
void watch_release_all(struct manager *m) HIDDEN;

#endif /* HOSTMEM_WATCH_H */
