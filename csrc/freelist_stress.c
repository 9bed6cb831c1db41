/*
 * freelist_stress.c - the freelist stress driver: exact conservation of a
 * multiset of handles under oversubscribed threads, injected delays and
 * signals.
 *
 * Every handle has a flag that its holder sets when it pops it and clears
 * before pushing it back, so a handle popped twice (by two threads at once)
 * is caught the moment it happens, not only in the final count.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "internal.h"

struct flworker {
    rseq_py_freelist *fl;
    const struct rseq_py_fl_stress_config *cfg;
    const struct rseq_py_fl_ops *ops;
    uint8_t *flags;
    int64_t *held;
    uint64_t nheld;
    uint32_t id;
    uint64_t pops, pushes, empty_pops, duplicates, unexpected, full_pushes;
};

static uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static void took(struct flworker *w, uint64_t from, uint64_t m)
{
    for (uint64_t i = from; i < from + m; i++) {
        int64_t h = w->held[i];
        if (h < 0 || (uint64_t)h >= w->cfg->handles)
            w->unexpected++;
        else if (__atomic_exchange_n(&w->flags[h], 1, __ATOMIC_RELAXED) != 0)
            w->duplicates++;
    }
}

static void give_back(struct flworker *w, uint64_t k)
{
    int64_t *src = w->held + w->nheld - k;
    for (uint64_t i = 0; i < k; i++)
        if (src[i] >= 0 && (uint64_t)src[i] < w->cfg->handles)
            __atomic_store_n(&w->flags[src[i]], 0, __ATOMIC_RELAXED);
    uint64_t pushed = rseq_py_freelist_push_many_with(w->fl, src, k, w->ops);
    for (uint64_t i = pushed; i < k; i++) /* refused: still ours */
        if (src[i] >= 0 && (uint64_t)src[i] < w->cfg->handles)
            __atomic_store_n(&w->flags[src[i]], 1, __ATOMIC_RELAXED);
    w->full_pushes += k - pushed;
    /* Keep the refused ones (they sit at the end of the pushed range). */
    memmove(src, src + pushed, (k - pushed) * 8);
    w->nheld -= pushed;
    w->pushes += pushed;
}

static void *flworker_main(void *arg)
{
    struct flworker *w = arg;
    const struct rseq_py_fl_stress_config *cfg = w->cfg;
    uint64_t rng = 0x9e3779b97f4a7c15ull * (w->id + 1);
    for (uint64_t i = 0; i < cfg->ops_per_thread; i++) {
        uint64_t r = next_random(&rng);
        uint64_t op = r % 4, batch = 1;
        if (cfg->max_batch > 1 && (op == 1 || op == 3))
            batch = 2 + (r >> 8) % (cfg->max_batch - 1);
        if (w->nheld == 0 || (op < 2 && w->nheld < cfg->max_held)) {
            uint64_t room = cfg->max_held - w->nheld;
            uint64_t k = batch < room ? batch : room;
            uint64_t m = rseq_py_freelist_pop_many_with(w->fl, w->held + w->nheld, k, w->ops);
            if (m == 0)
                w->empty_pops++;
            took(w, w->nheld, m);
            w->nheld += m;
            w->pops += m;
        } else {
            give_back(w, batch < w->nheld ? batch : w->nheld);
        }
    }
    while (w->nheld && w->full_pushes == 0)
        give_back(w, w->nheld);
    return NULL;
}

int rseq_py_freelist_stress(rseq_py_freelist *fl, const struct rseq_py_fl_stress_config *cfg,
                            struct rseq_py_fl_stress_result *r)
{
    memset(r, 0, sizeof *r);
    if (cfg->threads == 0 || cfg->threads > 4096 || cfg->handles > fl->capacity ||
        cfg->max_held == 0 || cfg->max_batch == 0 || cfg->max_batch > cfg->max_held ||
        (cfg->variant != RSEQ_PY_VARIANT_RSEQ && cfg->variant != RSEQ_PY_VARIANT_RSEQ_INJECT &&
         cfg->variant != RSEQ_PY_VARIANT_ATOMIC))
        return r->error = EINVAL;
    if (!cfg->external && rseq_py_freelist_len(fl) != 0)
        return r->error = EBUSY;
    const struct rseq_py_fl_ops *ops = NULL;
#ifndef RSEQ_PY_NO_ASM
    if (cfg->variant == RSEQ_PY_VARIANT_RSEQ)
        ops = &rseq_py_fl_plain_ops;
    else if (cfg->variant == RSEQ_PY_VARIANT_RSEQ_INJECT)
        ops = &rseq_py_fl_inject_ops;
#endif
    struct flworker *w = calloc(cfg->threads, sizeof *w);
    uint8_t *flags = calloc(cfg->handles ? cfg->handles : 1, 1);
    int64_t *held = calloc((size_t)cfg->threads * cfg->max_held, 8);
    int64_t *all = malloc((fl->capacity + (size_t)cfg->threads * cfg->max_held) * 8);
    uint32_t *seen = calloc(cfg->handles ? cfg->handles : 1, sizeof *seen);
    if (!w || !flags || !held || !all || !seen) {
        r->error = ENOMEM;
        goto out;
    }
    for (uint64_t h = 0; h < cfg->handles; h++)
        all[h] = (int64_t)h;
    if (!cfg->external && rseq_py_freelist_push_many(fl, all, cfg->handles) != cfg->handles) {
        r->error = ENOSPC;
        goto out;
    }
    for (uint32_t i = 0; i < cfg->threads; i++)
        w[i] = (struct flworker){.fl = fl, .cfg = cfg, .ops = ops, .flags = flags,
                                 .held = held + (size_t)i * cfg->max_held, .id = i};

    rseq_py_run_lock();
    struct rseq_py_stats s0, s1;
    rseq_py_get_stats(&s0);
    uint64_t aborts0 = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED);
    rseq_py_inject_loops = cfg->inject_loops;
    r->error = rseq_py_run_workers(cfg->threads, flworker_main, w, sizeof *w,
                                   cfg->signal_interval_us, &r->signals, &r->elapsed_ns);
    rseq_py_inject_loops = 0;
    r->aborts = __atomic_load_n(&rseq_py_inject_aborts, __ATOMIC_RELAXED) - aborts0;
    rseq_py_get_stats(&s1);
    r->escapes = s1.escapes - s0.escapes;
    r->exhausted = s1.exhausted - s0.exhausted;
    rseq_py_run_unlock();

    for (uint32_t i = 0; i < cfg->threads; i++) {
        r->pops += w[i].pops;
        r->pushes += w[i].pushes;
        r->empty_pops += w[i].empty_pops;
        r->duplicates += w[i].duplicates;
        r->unexpected += w[i].unexpected;
        r->full_pushes += w[i].full_pushes;
    }
    if (cfg->external)
        goto out; /* the caller accounts for the handles */
    /* Account for every handle: drained ones plus any a worker still holds
     * (only if a push was refused, which is itself an error). */
    uint64_t n = rseq_py_freelist_drain(fl, all);
    for (uint32_t i = 0; i < cfg->threads; i++)
        for (uint64_t j = 0; j < w[i].nheld; j++)
            all[n++] = w[i].held[j];
    for (uint64_t i = 0; i < n; i++) {
        if (all[i] < 0 || (uint64_t)all[i] >= cfg->handles)
            r->unexpected++;
        else if (seen[all[i]]++)
            r->duplicates++;
    }
    for (uint64_t h = 0; h < cfg->handles; h++)
        r->missing += seen[h] == 0;
out:
    free(w);
    free(flags);
    free(held);
    free(all);
    free(seen);
    return r->error;
}
