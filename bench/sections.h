/*
 * sections.h - the benchmark's sections, which bench/bench.c runs in this
 * order; each file of a section includes it, so that its definitions agree.
 */
#ifndef HOSTMEM_BENCH_SECTIONS_H
#define HOSTMEM_BENCH_SECTIONS_H

#include "hostmem.h"

void bench_reserve(IHostMemoryManager *mgr); /* vm.c */
void bench_commit(IHostMemoryManager *mgr);  /* vm.c */
void bench_threads(IHostMemoryManager *mgr); /* threads.c */
void glibc_resolve(void);                    /* heap.c; before any section */
void bench_heap(IHostMemoryManager *mgr);    /* heap.c */
void bench_compact(void);                    /* scale.c */
void bench_scale(void);                      /* scale.c */
void bench_watch(void);                      /* watch.c */

#endif
