/*
 * stress.c - the parameterised stress driver for every section variant.
 *
 * Workers are real pthreads (the caller drops the GIL for the whole run),
 * typically many more than CPUs, optionally signalled at a high rate by a
 * signaller thread; each counts what it added, and the driver compares
 * that with what the counter holds afterwards.  With the inject variant a
 * delay sits between the section's load and its commit, so preemption,
 * migration and signals land inside sections and the aborts are counted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

HIDDEN volatile uint64_t rseq_py_inject_loops;
HIDDEN uint64_t rseq_py_inject_aborts;

/* One stress run at a time: the inject globals and the signal handler are
 * process-wide. */
static pthread_mutex_t stress_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t signals_handled;

struct worker {
    pthread_t thread;
    rseq_py_counter *c;
    const struct rseq_py_stress_config *cfg;
    struct gate *start;
    uint32_t id;
    int64_t added;
    volatile int done;
};

/* Workers wait at the gate until all exist, so they really run together. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t open;
    int is_open;
    int abandon; /* thread creation failed: workers do nothing */
};

static int gate_wait(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->is_open)
        pthread_cond_wait(&g->open, &g->lock);
    int abandon = g->abandon;
    pthread_mutex_unlock(&g->lock);
    return abandon;
}

static void gate_open(struct gate *g, int abandon)
{
    pthread_mutex_lock(&g->lock);
    g->is_open = 1;
    g->abandon = abandon;
    pthread_cond_broadcast(&g->open);
    pthread_mutex_unlock(&g->lock);
}

static void on_signal(int sig)
{
    (void)sig;
    __atomic_fetch_add(&signals_handled, 1, __ATOMIC_RELAXED);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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
    uint64_t ops = gate_wait(w->start) ? 0 : cfg->ops_per_thread;
    for (uint64_t i = 0; i < ops; i++) {
        uint32_t index = (uint32_t)((i + w->id) % n);
        if (cfg->variant == RSEQ_PY_VARIANT_UNPROTECTED)
            unprotected_add(w->c, index, delta, cfg->inject_loops);
        else
            rseq_py_counter_add_with(w->c, index, delta, fn);
        w->added += delta;
    }
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
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
    if (w == NULL)
        return r->error = ENOMEM;
    pthread_mutex_lock(&stress_lock);

    int64_t before = 0, after = 0;
    int64_t *vals = calloc(c->ncounters, sizeof *vals);
    if (vals == NULL) {
        pthread_mutex_unlock(&stress_lock);
        free(w);
        return r->error = ENOMEM;
    }
    rseq_py_counter_values(c, vals);
    for (uint32_t i = 0; i < c->ncounters; i++)
        before = (int64_t)((uint64_t)before + (uint64_t)vals[i]);

    struct rseq_py_stats s0, s1;
    rseq_py_get_stats(&s0);
    uint64_t aborts0 = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED);
    rseq_py_inject_loops = cfg->inject_loops;

    /* A realtime signal nobody else in a Python process uses; restored
     * afterwards. */
    int sig = SIGRTMIN + 5;
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (cfg->signal_interval_us)
        sigaction(sig, &sa, &old_sa);
    uint64_t handled0 = __atomic_load_n(&signals_handled, __ATOMIC_RELAXED);

    struct gate start = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    uint32_t started = 0;
    for (; started < cfg->threads; started++) {
        w[started] = (struct worker){.c = c, .cfg = cfg, .start = &start, .id = started};
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0) {
            r->error = EAGAIN;
            break;
        }
    }
    uint64_t t0 = now_ns();
    gate_open(&start, r->error != 0);

    if (cfg->signal_interval_us && r->error == 0) {
        struct timespec gap = {.tv_sec = cfg->signal_interval_us / 1000000,
                               .tv_nsec = (long)(cfg->signal_interval_us % 1000000) * 1000};
        for (;;) {
            uint32_t live = 0;
            for (uint32_t i = 0; i < started; i++) {
                if (__atomic_load_n(&w[i].done, __ATOMIC_ACQUIRE))
                    continue;
                live++;
                pthread_kill(w[i].thread, sig);
            }
            if (live == 0)
                break;
            nanosleep(&gap, NULL);
        }
    }
    for (uint32_t i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
        r->expected = (int64_t)((uint64_t)r->expected + (uint64_t)w[i].added);
    }
    r->elapsed_ns = now_ns() - t0;
    if (cfg->signal_interval_us)
        sigaction(sig, &old_sa, NULL);

    rseq_py_counter_values(c, vals);
    for (uint32_t i = 0; i < c->ncounters; i++)
        after = (int64_t)((uint64_t)after + (uint64_t)vals[i]);
    r->observed = (int64_t)((uint64_t)after - (uint64_t)before);
    rseq_py_get_stats(&s1);
    r->aborts = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED) - aborts0;
    r->signals = __atomic_load_n(&signals_handled, __ATOMIC_RELAXED) - handled0;
    r->escapes = s1.escapes - s0.escapes;
    r->exhausted = s1.exhausted - s0.exhausted;
    rseq_py_inject_loops = 0;

    pthread_mutex_unlock(&stress_lock);
    free(vals);
    free(w);
    return r->error;
}
