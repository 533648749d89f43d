/*
 * registry.h - what the tests see of the registry of live managers
 * (registry.c). Not part of the public API: tests link the static library and
 * use it to check every manager after each test (tests/test.h).
 */
#ifndef HOSTMEM_REGISTRY_H
#define HOSTMEM_REGISTRY_H

#include "hostmem.h"

/* Calls fn for every manager not yet destroyed; live: not disabled, not shut
 * down. fn runs under the registry lock: it must not create or destroy a manager. */
void hostmem_registry_each(void (*fn)(IHostMemoryManager *manager, int live, void *context),
                           void *context);

/* When set, called as the last reference to a manager goes, before anything is
 * given back (no other thread may use the manager then). */
extern void (*hostmem_registry_on_destroy)(IHostMemoryManager *manager, int live);

#endif /* HOSTMEM_REGISTRY_H */
