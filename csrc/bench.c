/*
 * bench.c - C-level threaded counter benchmark: this library's per-CPU
 * counter beside what C code would use instead, with no Python in the loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define LINE 128

struct bench {
    int mode;
    uint64_t ops;
    rseq_py_counter *counter;
    char *percpu;   /* nslots blocks of LINE bytes */
    uint64_t *shared;
    pthread_mutex_t mutex;
    uint64_t locked_word;
    /* start line */
    pthread_mutex_t gate_lock;
    pthread_cond_t gate;
    int go;
};

static void *bench_thread(void *arg)
{
    struct bench *b = arg;
    pthread_mutex_lock(&b->gate_lock);
    while (!b->go)
        pthread_cond_wait(&b->gate, &b->gate_lock);
    pthread_mutex_unlock(&b->gate_lock);

    switch (b->mode) {
    case RSEQ_PY_BENCH_RSEQ:
        for (uint64_t i = 0; i < b->ops; i++)
            rseq_py_counter_add(b->counter, 0, 1);
        break;
    case RSEQ_PY_BENCH_PERCPU_ATOMIC:
        for (uint64_t i = 0; i < b->ops; i++) {
            uint32_t cpu = (uint32_t)sched_getcpu() % rseq_py_nslots;
            __atomic_fetch_add((uint64_t *)(b->percpu + (size_t)cpu * LINE), 1, __ATOMIC_RELAXED);
        }
        break;
    case RSEQ_PY_BENCH_SHARED_ATOMIC:
        for (uint64_t i = 0; i < b->ops; i++)
            __atomic_fetch_add(b->shared, 1, __ATOMIC_RELAXED);
        break;
    case RSEQ_PY_BENCH_MUTEX:
        for (uint64_t i = 0; i < b->ops; i++) {
            pthread_mutex_lock(&b->mutex);
            b->locked_word++;
            pthread_mutex_unlock(&b->mutex);
        }
        break;
    }
    return NULL;
}

int rseq_py_counter_bench(int mode, uint32_t threads, uint64_t ops_per_thread,
                          double *ns_per_op, double *total_mops)
{
    if (mode < RSEQ_PY_BENCH_RSEQ || mode > RSEQ_PY_BENCH_MUTEX || threads == 0 ||
        threads > 4096 || ops_per_thread == 0)
        return EINVAL;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    struct bench b;
    memset(&b, 0, sizeof b);
    b.mode = mode;
    b.ops = ops_per_thread;
    pthread_mutex_init(&b.mutex, NULL);
    pthread_mutex_init(&b.gate_lock, NULL);
    pthread_cond_init(&b.gate, NULL);
    b.counter = rseq_py_counter_new(1);
    b.percpu = aligned_alloc(LINE, (size_t)rseq_py_nslots * LINE);
    b.shared = aligned_alloc(LINE, LINE);
    pthread_t *t = calloc(threads, sizeof *t);
    int err = 0;
    uint32_t n = 0;
    if (!b.counter || !b.percpu || !b.shared || !t) {
        err = ENOMEM;
        goto out;
    }
    memset(b.percpu, 0, (size_t)rseq_py_nslots * LINE);
    memset(b.shared, 0, LINE);
    for (; n < threads; n++)
        if (pthread_create(&t[n], NULL, bench_thread, &b) != 0) {
            err = EAGAIN;
            break;
        }
    if (err)
        b.ops = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_mutex_lock(&b.gate_lock);
    b.go = 1;
    pthread_cond_broadcast(&b.gate);
    pthread_mutex_unlock(&b.gate_lock);
    for (uint32_t i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (!err) {
        double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
        *ns_per_op = ns / (double)ops_per_thread;
        *total_mops = (double)threads * (double)ops_per_thread / ns * 1e3;
    }
out:
    rseq_py_counter_free(b.counter);
    free(b.percpu);
    free(b.shared);
    free(t);
    return err;
}

/* ---- freelist ------------------------------------------------------------- */

struct fl_bench {
    int mode;
    uint64_t ops;
    uint32_t batch;
    rseq_py_freelist *fl;
    pthread_mutex_t mutex; /* RSEQ_PY_FL_BENCH_MUTEX: guards stack/top */
    int64_t *stack;
    uint64_t top;
};

struct fl_bench_thread {
    struct fl_bench *b;
    int64_t buf[256];
};

static void *fl_bench_thread(void *arg)
{
    struct fl_bench_thread *t = arg;
    struct fl_bench *b = t->b;
    const struct rseq_py_fl_ops *ops = NULL;
#ifndef RSEQ_PY_NO_ASM
    if (b->mode == RSEQ_PY_FL_BENCH_RSEQ)
        ops = &rseq_py_fl_plain_ops;
#endif
    for (uint64_t i = 0; i < b->ops; i++) {
        if (b->mode == RSEQ_PY_FL_BENCH_MUTEX) {
            pthread_mutex_lock(&b->mutex);
            uint64_t k = b->batch < b->top ? b->batch : b->top;
            memcpy(t->buf, b->stack + b->top - k, k * 8);
            b->top -= k;
            pthread_mutex_unlock(&b->mutex);
            pthread_mutex_lock(&b->mutex);
            memcpy(b->stack + b->top, t->buf, k * 8);
            b->top += k;
            pthread_mutex_unlock(&b->mutex);
        } else {
            uint64_t k = rseq_py_freelist_pop_many_with(b->fl, t->buf, b->batch, ops);
            rseq_py_freelist_push_many_with(b->fl, t->buf, k, ops);
        }
    }
    return NULL;
}

int rseq_py_freelist_bench(int mode, uint32_t threads, uint64_t ops_per_thread, uint32_t batch,
                           double *ns_per_op, double *total_mops)
{
    if (mode < RSEQ_PY_FL_BENCH_RSEQ || mode > RSEQ_PY_FL_BENCH_MUTEX || threads == 0 ||
        threads > 4096 || ops_per_thread == 0 || batch == 0 || batch > 256)
        return EINVAL;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    struct fl_bench b = {.mode = mode, .ops = ops_per_thread, .batch = batch};
    uint64_t handles = (uint64_t)threads * batch * 4;
    int err = 0;
    struct fl_bench_thread *t = calloc(threads, sizeof *t);
    b.fl = rseq_py_freelist_new(handles, 0);
    b.stack = malloc(handles * 8);
    if (!t || !b.fl || !b.stack) {
        err = ENOMEM;
        goto out;
    }
    if (mode == RSEQ_PY_FL_BENCH_PERCPU_LOCK)
        b.fl->sections = 0;
    pthread_mutex_init(&b.mutex, NULL);
    for (uint64_t h = 0; h < handles; h++)
        b.stack[h] = (int64_t)h;
    b.top = handles;
    rseq_py_freelist_push_many(b.fl, b.stack, handles);
    for (uint32_t i = 0; i < threads; i++)
        t[i].b = &b;
    uint64_t signals, elapsed;
    rseq_py_run_lock();
    err = rseq_py_run_workers(threads, fl_bench_thread, t, sizeof *t, 0, &signals, &elapsed);
    rseq_py_run_unlock();
    /* Every handle must still be there, exactly once. */
    if (!err && mode != RSEQ_PY_FL_BENCH_MUTEX) {
        uint64_t n = rseq_py_freelist_drain(b.fl, b.stack);
        uint8_t *seen = calloc(handles, 1);
        if (seen == NULL)
            err = ENOMEM;
        for (uint64_t i = 0; !err && i < n; i++)
            if (b.stack[i] < 0 || (uint64_t)b.stack[i] >= handles || seen[b.stack[i]]++)
                err = EIO;
        if (!err && n != handles)
            err = EIO;
        free(seen);
    }
    if (!err) {
        double moved = (double)ops_per_thread * batch;
        *ns_per_op = (double)elapsed / moved;
        *total_mops = (double)threads * moved / (double)elapsed * 1e3;
    }
    pthread_mutex_destroy(&b.mutex);
out:
    rseq_py_freelist_free(b.fl);
    free(b.stack);
    free(t);
    return err;
}
