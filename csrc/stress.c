/*
 * stress.c - the parameterised counter stress driver, for every section
 * variant and injection mode.
 *
 * Workers are real pthreads (the caller drops the GIL for the whole run),
 * typically many more than CPUs, optionally signalled at a high rate; each
 * counts what it added, and the driver compares that with what the counter
 * gained.  With the inject variant a delay sits between the section's load
 * and its commit, so preemption, migration and signals land inside sections
 * and the aborts are counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "internal.h"

struct worker {
    rseq_py_counter *c;
    const struct rseq_py_stress_config *cfg;
    uint32_t id;
    int64_t added;
};

/* The negative control: what the section does, without the section.  A
 * preemption between the load and the store lets another thread on the
 * same CPU add in between, and that add is lost. */
static void unprotected_add(rseq_py_counter *c, uint32_t index, int64_t delta, uint64_t loops)
{
    uint32_t cpu = (uint32_t)rseq_py_slow_cpu(NULL) % c->nslots;
    volatile int64_t *p = (int64_t *)((char *)c->rseq_slots + (uint64_t)cpu * c->stride) + index;
    int64_t v = *p;
    for (volatile uint64_t i = 0; i < loops; i++)
        ;
    *p = v + delta;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const struct rseq_py_stress_config *cfg = w->cfg;
    rseq_py_percpu_add_fn fn = NULL;
#ifndef RSEQ_PY_NO_ASM
    if (cfg->variant == RSEQ_PY_VARIANT_RSEQ)
        fn = rseq_py_percpu_add;
    else if (cfg->variant == RSEQ_PY_VARIANT_RSEQ_INJECT)
        fn = rseq_py_percpu_add_inject;
#endif
    int64_t delta = (int64_t)(w->id % 7) + 1;
    uint32_t n = w->c->ncounters;
    for (uint64_t i = 0; i < cfg->ops_per_thread; i++) {
        uint32_t index = (uint32_t)((i + w->id) % n);
        if (cfg->variant == RSEQ_PY_VARIANT_UNPROTECTED)
            unprotected_add(w->c, index, delta, cfg->inject_loops);
        else
            rseq_py_counter_add_with(w->c, index, delta, fn);
        w->added += delta;
    }
    return NULL;
}

static int64_t total(const rseq_py_counter *c, int64_t *vals)
{
    uint64_t sum = 0;
    rseq_py_counter_values(c, vals);
    for (uint32_t i = 0; i < c->ncounters; i++)
        sum += (uint64_t)vals[i];
    return (int64_t)sum;
}

int rseq_py_counter_stress(rseq_py_counter *c, const struct rseq_py_stress_config *cfg,
                           struct rseq_py_stress_result *r)
{
    memset(r, 0, sizeof *r);
    if (cfg->threads == 0 || cfg->threads > 4096 || cfg->variant < 0 ||
        cfg->variant > RSEQ_PY_VARIANT_UNPROTECTED)
        return r->error = EINVAL;
#ifdef RSEQ_PY_NO_ASM
    if (cfg->variant == RSEQ_PY_VARIANT_RSEQ || cfg->variant == RSEQ_PY_VARIANT_RSEQ_INJECT)
        return r->error = ENOTSUP;
#endif
    struct worker *w = calloc(cfg->threads, sizeof *w);
    int64_t *vals = calloc(c->ncounters, sizeof *vals);
    if (w == NULL || vals == NULL) {
        free(w);
        free(vals);
        return r->error = ENOMEM;
    }
    for (uint32_t i = 0; i < cfg->threads; i++)
        w[i] = (struct worker){.c = c, .cfg = cfg, .id = i};

    rseq_py_run_lock();
    int64_t before = total(c, vals);
    struct rseq_py_stats s0, s1;
    rseq_py_get_stats(&s0);
    uint64_t aborts0 = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED);
    rseq_py_inject_loops = cfg->inject_loops;
    uint64_t handler0 = __atomic_load_n(&rseq_py_handler_adds, __ATOMIC_RELAXED);
    if (cfg->handler_adds)
        rseq_py_handler_counter = c;

    r->error = rseq_py_run_workers(cfg->threads, worker_main, w, sizeof *w,
                                   cfg->signal_interval_us, &r->signals, &r->elapsed_ns);

    rseq_py_inject_loops = 0;
    rseq_py_handler_counter = NULL;
    r->handler_adds = __atomic_load_n(&rseq_py_handler_adds, __ATOMIC_RELAXED) - handler0;
    r->expected = (int64_t)r->handler_adds;
    for (uint32_t i = 0; i < cfg->threads; i++)
        r->expected = (int64_t)((uint64_t)r->expected + (uint64_t)w[i].added);
    r->observed = (int64_t)((uint64_t)total(c, vals) - (uint64_t)before);
    rseq_py_get_stats(&s1);
    r->aborts = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED) - aborts0;
    r->escapes = s1.escapes - s0.escapes;
    r->exhausted = s1.exhausted - s0.exhausted;
    rseq_py_run_unlock();
    free(vals);
    free(w);
    return r->error;
}
