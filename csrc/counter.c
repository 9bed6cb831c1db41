/*
 * counter.c - per-CPU counters: layout, the add path, sums and reset.
 *
 * Every counter has two arrays of per-CPU slots with the same geometry:
 *   rseq_slots    written only by a critical section running on that CPU;
 *   atomic_slots  written only with atomic read-modify-writes.
 * A plain section store and an atomic add from another CPU on the same
 * word would lose one of the two updates, so the two kinds of writer never
 * share a word.  The value of a counter is the sum of both arrays, modulo
 * 2^64: wrapping of a single slot cancels out in the sum, which is exact
 * as long as the true total fits in an int64.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Two CPUs' slots never share a 128-byte block: adjacent-line prefetch
 * pairs 64-byte lines, so 64 would still let one CPU's writes disturb the
 * line its neighbour writes. */
#define CPU_BLOCK 128

static inline int64_t *slot(int64_t *base, uint64_t stride, uint32_t cpu, uint32_t index)
{
    return (int64_t *)((char *)base + (uint64_t)cpu * stride) + index;
}

HIDDEN uint64_t rseq_py_counter_stride(uint32_t ncounters)
{
    return ((uint64_t)ncounters * 8 + CPU_BLOCK - 1) / CPU_BLOCK * CPU_BLOCK;
}

/* A descriptor over slots at `slots` (2 * stride * nslots bytes). */
static rseq_py_counter *describe(void *slots, uint32_t ncounters)
{
    rseq_py_counter *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->stride = rseq_py_counter_stride(ncounters);
    c->ncounters = ncounters;
    c->nslots = rseq_py_nslots;
    c->rseq_slots = slots;
    c->atomic_slots = (int64_t *)((char *)slots + c->stride * rseq_py_nslots);
    return c;
}

rseq_py_counter *rseq_py_counter_new(uint32_t ncounters)
{
    if (ncounters == 0 || ncounters > RSEQ_PY_COUNTER_MAX)
        return NULL;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO); /* no-op once decided */
    uint64_t bytes = 2 * rseq_py_counter_stride(ncounters) * rseq_py_nslots;
    void *mem = aligned_alloc(CPU_BLOCK, bytes);
    if (mem == NULL)
        return NULL;
    memset(mem, 0, bytes);
    rseq_py_counter *c = describe(mem, ncounters);
    if (c == NULL)
        free(mem);
    else
        c->mem = mem;
    return c;
}

/* Shared layout: the segment header (one CPU block), then the slots. */
uint64_t rseq_py_counter_shared_size(uint32_t ncounters)
{
    if (ncounters == 0 || ncounters > RSEQ_PY_COUNTER_MAX)
        return 0;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    return RSEQ_PY_SEGMENT_HEADER + 2 * rseq_py_counter_stride(ncounters) * rseq_py_nslots;
}

rseq_py_counter *rseq_py_counter_create_at(void *mem, uint64_t size, uint32_t ncounters)
{
    uint64_t need = rseq_py_counter_shared_size(ncounters);
    if (need == 0 || size < need || ((uintptr_t)mem % CPU_BLOCK) != 0)
        return NULL;
    struct rseq_py_segment_header *h = mem;
    rseq_py_segment_init(h, RSEQ_PY_KIND_COUNTER, need);
    h->geometry[0] = ncounters;
    h->geometry[1] = rseq_py_counter_stride(ncounters);
    rseq_py_counter *c = describe((char *)mem + RSEQ_PY_SEGMENT_HEADER, ncounters);
    if (c != NULL)
        rseq_py_segment_ready(h);
    return c;
}

rseq_py_counter *rseq_py_counter_attach_at(void *mem, uint64_t size)
{
    char why[8];
    if (rseq_py_segment_check(mem, size, RSEQ_PY_KIND_COUNTER, why, sizeof why) != RSEQ_PY_SEG_OK)
        return NULL;
    const struct rseq_py_segment_header *h = mem;
    return describe((char *)mem + RSEQ_PY_SEGMENT_HEADER, (uint32_t)h->geometry[0]);
}

void rseq_py_counter_free(rseq_py_counter *c)
{
    if (c == NULL)
        return;
    free(c->mem);
    free(c);
}

uint32_t rseq_py_counter_size(const rseq_py_counter *c) { return c->ncounters; }
uint32_t rseq_py_counter_cpu_slots(const rseq_py_counter *c) { return c->nslots; }

static void atomic_add(rseq_py_counter *c, const struct rseq_py_area *area, uint32_t index,
                       int64_t delta)
{
    uint32_t cpu = (uint32_t)rseq_py_slow_cpu(area) % c->nslots;
    __atomic_fetch_add((uint64_t *)slot(c->atomic_slots, c->stride, cpu, index),
                       (uint64_t)delta, __ATOMIC_RELAXED);
}

/* fn == NULL: the atomic path only (fallback backend).  Inlined with a
 * constant fn, so the shipped add calls its section directly. */
static inline __attribute__((always_inline)) int add_impl(rseq_py_counter *c, uint32_t index,
                                                          int64_t delta, rseq_py_percpu_add_fn fn)
{
    if (UNLIKELY(index >= c->ncounters))
        return -1;
    struct rseq_py_area *area = fn ? rseq_py_area() : NULL;
    if (LIKELY(area != NULL)) {
        int r = fn(area, c->rseq_slots + index, c->stride, delta, c->nslots);
        if (LIKELY(r == RSEQ_PY_OK))
            return 0;
        if (r == RSEQ_PY_ESCAPE)
            STAT_INC(escapes);
        else
            STAT_INC(exhausted);
        STAT_INC(slow_path_adds);
    }
    atomic_add(c, area, index, delta);
    return 0;
}

HIDDEN int rseq_py_counter_add_with(rseq_py_counter *c, uint32_t index, int64_t delta,
                                    rseq_py_percpu_add_fn fn)
{
    return add_impl(c, index, delta, fn);
}

int rseq_py_counter_add(rseq_py_counter *c, uint32_t index, int64_t delta)
{
#ifndef RSEQ_PY_NO_ASM
    return add_impl(c, index, delta, rseq_py_percpu_add);
#else
    return add_impl(c, index, delta, NULL);
#endif
}

/* Relaxed 64-bit loads: single-copy atomic, so a slot is never read torn;
 * no ordering between slots is promised (see value()'s guarantee). */
static inline uint64_t load(const int64_t *p)
{
    return (uint64_t)__atomic_load_n(p, __ATOMIC_RELAXED);
}

int64_t rseq_py_counter_value(const rseq_py_counter *c, uint32_t index)
{
    uint64_t sum = 0;
    if (index >= c->ncounters)
        return 0;
    for (uint32_t cpu = 0; cpu < c->nslots; cpu++)
        sum += load(slot(c->rseq_slots, c->stride, cpu, index)) +
               load(slot(c->atomic_slots, c->stride, cpu, index));
    return (int64_t)sum;
}

void rseq_py_counter_values(const rseq_py_counter *c, int64_t *out)
{
    for (uint32_t i = 0; i < c->ncounters; i++)
        out[i] = 0;
    for (uint32_t cpu = 0; cpu < c->nslots; cpu++)
        for (uint32_t i = 0; i < c->ncounters; i++)
            out[i] = (int64_t)((uint64_t)out[i] + load(slot(c->rseq_slots, c->stride, cpu, i)) +
                               load(slot(c->atomic_slots, c->stride, cpu, i)));
}

void rseq_py_counter_per_cpu(const rseq_py_counter *c, uint32_t index, int64_t *out)
{
    for (uint32_t cpu = 0; cpu < c->nslots; cpu++)
        out[cpu] = index < c->ncounters
                       ? (int64_t)(load(slot(c->rseq_slots, c->stride, cpu, index)) +
                                   load(slot(c->atomic_slots, c->stride, cpu, index)))
                       : 0;
}

/*
 * Per CPU: r = rseq slot as read now; then atomic slot := -r, taking its old
 * value a in the same exchange.  That CPU's sum becomes (rseq slot) - r:
 * exactly the adds its section commits after our read.  Adds committed
 * before the read are in r + a and are returned.  No section is stopped
 * and no store of a section can be lost, because we never write the rseq
 * slots.
 */
int64_t rseq_py_counter_reset(rseq_py_counter *c, uint32_t index)
{
    uint64_t removed = 0;
    if (index >= c->ncounters)
        return 0;
    for (uint32_t cpu = 0; cpu < c->nslots; cpu++) {
        uint64_t r = load(slot(c->rseq_slots, c->stride, cpu, index));
        uint64_t a = __atomic_exchange_n((uint64_t *)slot(c->atomic_slots, c->stride, cpu, index),
                                         (uint64_t)0 - r, __ATOMIC_RELAXED);
        removed += r + a;
    }
    return (int64_t)removed;
}
