/*
 * freelist.c - per-CPU freelists of int64 handles: layout, slow paths, pool.
 *
 * Fast path: one critical section on the current CPU's stack
 * (asm/<arch>/freelist.S).  Everything else happens as an *owner*: a slow
 * path sets a CPU's stop word and fences that CPU (fence.c), after which no
 * section touches the stack until the stop word is released, and edits it
 * with plain C.  A thread owns at most one CPU at a time, and may take the
 * pool's mutex while owning one (never the other way round), so slow paths
 * cannot deadlock.  Moves between a stack and the pool happen while owning
 * the stack and holding the pool, so a handle is never in flight between
 * two places: it is on one stack, in the pool, or handed to a caller.
 *
 * Capacity is exact, enforced with credits: capacity = free_credits (global)
 * + sum of every stack's limit + pool count.  A push needs a credit on its
 * CPU (count < limit); a pop leaves its credit there as free space.  Slow
 * paths move credits between CPUs and the global reserve, and a push fails
 * only after reclaiming every CPU's unused credits found none.
 *
 * Without rseq (fallback backend, or no membarrier) the stop words are
 * per-CPU spinlocks taken by every operation, and the same code does the
 * rest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define BLOCK_HEADER RSEQ_PY_FL_ITEMS
#define DEFAULT_PER_CPU 256

_Static_assert(offsetof(struct rseq_py_fl_geom, blocks) == RSEQ_PY_FL_GEOM_BLOCKS, "abi");
_Static_assert(offsetof(struct rseq_py_fl_geom, stride) == RSEQ_PY_FL_GEOM_STRIDE, "abi");
_Static_assert(offsetof(struct rseq_py_fl_geom, nslots) == RSEQ_PY_FL_GEOM_NSLOTS, "abi");

struct block {
    uint64_t word;  /* count | pushes << 32 */
    uint64_t limit;
    uint64_t stop;
    char pad[BLOCK_HEADER - 24];
    int64_t items[];
};
_Static_assert(offsetof(struct block, word) == RSEQ_PY_FL_WORD, "abi");
_Static_assert(offsetof(struct block, limit) == RSEQ_PY_FL_LIMIT, "abi");
_Static_assert(offsetof(struct block, stop) == RSEQ_PY_FL_STOP, "abi");
_Static_assert(offsetof(struct block, items) == RSEQ_PY_FL_ITEMS, "abi");

#define COUNT(w) ((uint32_t)(w))
#define PUSHES(w) ((w) >> 32)
#define WORD(count, pushes) ((uint64_t)(count) | ((uint64_t)(pushes) << 32))

static inline struct block *block(const rseq_py_freelist *fl, uint32_t cpu)
{
    return (struct block *)(fl->g.blocks + (uint64_t)cpu * fl->g.stride);
}

static inline uint64_t load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Who owns a stop word: the thread id + 1 (never 0), cached because the
 * owner path runs on every operation of the fallback backend. */
static __thread uint64_t token;

static uint64_t self_token(void)
{
    if (UNLIKELY(token == 0))
        token = (uint64_t)syscall(SYS_gettid) + 1;
    return token;
}

/* ---- ownership ---------------------------------------------------------- */

/* Take CPU cpu's stack.  wait == 0: give up (return 0) if another slow path
 * owns it.  Acquire pairs with the owner's release of stop, so its edits
 * are visible to us. */
static int own(rseq_py_freelist *fl, uint32_t cpu, int wait)
{
    uint64_t *stop = &block(fl, cpu)->stop;
    uint64_t token = self_token();
    for (;;) {
        uint64_t expected = 0;
        if (__atomic_compare_exchange_n(stop, &expected, token, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
            break;
        if (!wait)
            return 0;
        sched_yield();
    }
    if (fl->sections)
        rseq_py_fence_cpu(cpu);
    return 1;
}

/* Release pairs with the sections' acquire load of stop (aarch64). */
static void release(rseq_py_freelist *fl, uint32_t cpu)
{
    __atomic_store_n(&block(fl, cpu)->stop, 0, __ATOMIC_RELEASE);
}

static uint32_t current_cpu(const rseq_py_freelist *fl)
{
    struct rseq_py_area *area = fl->sections ? rseq_py_area() : NULL;
    return (uint32_t)rseq_py_slow_cpu(area) % fl->g.nslots;
}

/* ---- credits and pool --------------------------------------------------- */

static uint64_t take_credits(rseq_py_freelist *fl, uint64_t want)
{
    uint64_t avail = load(&fl->free_credits);
    for (;;) {
        uint64_t take = avail < want ? avail : want;
        if (take == 0)
            return 0;
        if (__atomic_compare_exchange_n(&fl->free_credits, &avail, avail - take, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return take;
    }
}

static void give_credits(rseq_py_freelist *fl, uint64_t n)
{
    if (n)
        __atomic_fetch_add(&fl->free_credits, n, __ATOMIC_RELAXED);
}

static void pool_lock(rseq_py_freelist *fl) { pthread_mutex_lock(&fl->pool_lock); }
static void pool_unlock(rseq_py_freelist *fl) { pthread_mutex_unlock(&fl->pool_lock); }

/* Owner of b, holding the pool: move the k lowest handles of b (the
 * coldest) to the pool, with their credits. */
static void spill(rseq_py_freelist *fl, struct block *b, uint64_t k)
{
    uint64_t w = load(&b->word), count = COUNT(w);
    memcpy(fl->pool + fl->pool_count, b->items, k * 8);
    memmove(b->items, b->items + k, (count - k) * 8);
    store(&fl->pool_count, fl->pool_count + k);
    store(&fl->pool_pushes, fl->pool_pushes + 1);
    store(&b->limit, load(&b->limit) - k);
    store(&b->word, WORD(count - k, PUSHES(w)));
}

/* Owner of b, holding the pool: move up to k handles from the pool onto b,
 * with their credits.  Returns how many moved. */
static uint64_t refill(rseq_py_freelist *fl, struct block *b, uint64_t k)
{
    uint64_t w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
    if (k > fl->pool_count)
        k = fl->pool_count;
    if (limit + k > fl->per_cpu) { /* make room: surplus free credits go global */
        give_credits(fl, limit - count);
        limit = count;
    }
    if (count + k > fl->per_cpu)
        k = fl->per_cpu - count;
    if (k == 0)
        return 0;
    memcpy(b->items + count, fl->pool + fl->pool_count - k, k * 8);
    store(&fl->pool_count, fl->pool_count - k);
    store(&b->limit, limit + k);
    store(&b->word, WORD(count + k, PUSHES(w) + 1));
    return k;
}

/* ---- slow paths ----------------------------------------------------------- */

/* Give every CPU's unused credits back to the global reserve. */
static void reclaim_credits(rseq_py_freelist *fl)
{
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++) {
        struct block *b = block(fl, cpu);
        own(fl, cpu, 1);
        uint64_t count = COUNT(load(&b->word)), limit = load(&b->limit);
        give_credits(fl, limit - count);
        store(&b->limit, count);
        release(fl, cpu);
    }
}

static int stable(const rseq_py_freelist *fl,
                  int (*ok)(const rseq_py_freelist *, const uint64_t *, uint64_t), uint64_t arg);
static int no_room_for(const rseq_py_freelist *fl, const uint64_t *c, uint64_t n);

/* Push n (1 <= n <= batch) handles as the owner of the current CPU: all or
 * none.  Returns 0, or -1 when n more handles provably do not fit (for
 * n == 1: the freelist held capacity handles at some instant). */
static int push_slow(rseq_py_freelist *fl, const int64_t *src, uint64_t n)
{
    for (;;) {
        uint32_t cpu = current_cpu(fl);
        struct block *b = block(fl, cpu);
        own(fl, cpu, 1);
        uint64_t w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
        if (limit - count < n) {
            if (count + n > fl->per_cpu) { /* no physical room: spill the bottom half */
                uint64_t k = count + n - fl->per_cpu;
                pool_lock(fl);
                spill(fl, b, count / 2 > k ? count / 2 : k);
                pool_unlock(fl);
                w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
            }
            uint64_t need = n - (limit - count);
            uint64_t want = need > fl->batch ? need : fl->batch;
            if (limit + want > fl->per_cpu)
                want = fl->per_cpu - limit;
            limit += take_credits(fl, want);
            store(&b->limit, limit);
        }
        if (limit - count >= n) {
            memcpy(b->items + count, src, n * 8);
            store(&b->word, WORD(count + n, PUSHES(w) + 1));
            release(fl, cpu);
            return 0;
        }
        release(fl, cpu);
        /* Unused room may sit on other CPUs: bring it back and retry,
         * unless the freelist provably holds capacity handles.  Another
         * pusher may take what we reclaimed, but then it made progress. */
        reclaim_credits(fl);
        if (load(&fl->free_credits) < n && stable(fl, no_room_for, n))
            return -1;
    }
}

/* A snapshot candidate: every stack's word, limit and stop, then the
 * pool's count and pushes and the global reserve.  Every change to a place
 * changes one of these words (pushes only count up; moves happen while
 * owning the stack, which shows in stop), so two equal collects in a row
 * mean that the first one's values all held at the instant between them. */
#define SMALL_SLOTS 64
#define COLLECT_WORDS(nslots) (3 * (size_t)(nslots) + 3)

static void collect(const rseq_py_freelist *fl, uint64_t *out)
{
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++) {
        struct block *b = block(fl, cpu);
        *out++ = __atomic_load_n(&b->word, __ATOMIC_ACQUIRE);
        *out++ = load(&b->limit);
        *out++ = load(&b->stop);
    }
    *out++ = __atomic_load_n(&fl->pool_count, __ATOMIC_ACQUIRE);
    *out++ = load(&fl->pool_pushes);
    *out++ = load(&fl->free_credits);
}

/* Two equal collects in a row whose values pass `ok`. */
static int stable(const rseq_py_freelist *fl,
                  int (*ok)(const rseq_py_freelist *, const uint64_t *, uint64_t), uint64_t arg)
{
    size_t words = COLLECT_WORDS(fl->g.nslots);
    uint64_t small[2 * COLLECT_WORDS(SMALL_SLOTS)];
    uint64_t *a = fl->g.nslots <= SMALL_SLOTS ? small : malloc(2 * words * sizeof(uint64_t));
    if (a == NULL)
        abort(); /* a few bytes: nothing sensible to do without them */
    uint64_t *b = a + words;
    collect(fl, a);
    int r = ok(fl, a, arg);
    if (r) {
        collect(fl, b);
        r = memcmp(a, b, words * sizeof(uint64_t)) == 0;
    }
    if (a != small)
        free(a);
    return r;
}

/* Fewer than n credits not held by a handle, no slow path mid-move:
 * n more handles do not fit (n == 1: full). */
static int no_room_for(const rseq_py_freelist *fl, const uint64_t *c, uint64_t n)
{
    uint64_t spare = 0;
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++, c += 3) {
        if (c[2] != 0)
            return 0;
        spare += c[1] - COUNT(c[0]);
    }
    return spare + c[2] < n; /* c[2]: free_credits */
}

/* No handle on any stack or in the pool, no slow path mid-move: empty. */
static int all_empty(const rseq_py_freelist *fl, const uint64_t *c, uint64_t unused)
{
    (void)unused;
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++, c += 3)
        if (COUNT(c[0]) != 0 || c[2] != 0)
            return 0;
    return c[0] == 0; /* pool_count */
}



/* Take up to n handles as an owner: from this CPU, else from the pool,
 * else stolen from other CPUs.  Returns how many; 0 only after proving
 * (stable(all_empty)) that the freelist held nothing at some instant
 * during the call. */
static uint64_t pop_slow(rseq_py_freelist *fl, int64_t *dst, uint64_t n)
{
    uint32_t nslots = fl->g.nslots;
    for (;;) {
        /* 1. This CPU's stack, refilled from the pool if empty. */
        uint32_t cpu = current_cpu(fl);
        struct block *b = block(fl, cpu);
        own(fl, cpu, 1);
        uint64_t w = load(&b->word), count = COUNT(w);
        if (count == 0 && load(&fl->pool_count) > 0) {
            pool_lock(fl);
            refill(fl, b, fl->batch > n ? fl->batch : n);
            pool_unlock(fl);
            w = load(&b->word), count = COUNT(w);
        }
        uint64_t got = count < n ? count : n;
        memcpy(dst, b->items + count - got, got * 8);
        store(&b->word, WORD(count - got, PUSHES(w)));
        release(fl, cpu);
        if (got)
            return got;

        /* 2. Steal half of the first non-empty stack into the pool, then
         * go round again (the refill takes it from there). */
        int busy = 0, stole = 0;
        for (uint32_t i = 1; i <= nslots && !stole; i++) {
            uint32_t victim = (cpu + i) % nslots;
            struct block *v = block(fl, victim);
            if (COUNT(load(&v->word)) == 0)
                continue;
            if (!own(fl, victim, 0)) {
                busy = 1;
                continue;
            }
            uint64_t vc = COUNT(load(&v->word));
            if (vc) {
                pool_lock(fl);
                spill(fl, v, (vc + 1) / 2);
                pool_unlock(fl);
                stole = 1;
            }
            release(fl, victim);
        }
        if (stole)
            continue;
        if (busy) {
            sched_yield();
            continue;
        }

        /* 3. Nothing anywhere, as far as one pass saw: prove it or retry. */
        if (stable(fl, all_empty, 0))
            return 0;
    }
}

/* ---- public API ----------------------------------------------------------- */

rseq_py_freelist *rseq_py_freelist_new(uint64_t capacity, uint32_t per_cpu)
{
    if (capacity == 0 || capacity > RSEQ_PY_FREELIST_MAX || per_cpu > RSEQ_PY_FREELIST_PER_CPU_MAX)
        return NULL;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    if (per_cpu == 0)
        per_cpu = DEFAULT_PER_CPU;
    if (per_cpu > capacity)
        per_cpu = (uint32_t)capacity;
    rseq_py_freelist *fl = calloc(1, sizeof *fl);
    if (fl == NULL)
        return NULL;
    uint64_t stride = BLOCK_HEADER + ((uint64_t)per_cpu * 8 + 127) / 128 * 128;
    uint64_t blocks_bytes = stride * rseq_py_nslots;
    fl->mem = aligned_alloc(128, blocks_bytes + capacity * 8);
    if (fl->mem == NULL) {
        free(fl);
        return NULL;
    }
    memset(fl->mem, 0, blocks_bytes);
    fl->g.blocks = fl->mem;
    fl->g.stride = stride;
    fl->g.nslots = rseq_py_nslots;
    fl->pool = (int64_t *)((char *)fl->mem + blocks_bytes);
    fl->capacity = capacity;
    fl->per_cpu = per_cpu;
    fl->batch = per_cpu / 2 ? per_cpu / 2 : 1;
    fl->free_credits = capacity;
    pthread_mutex_init(&fl->pool_lock, NULL);
#ifndef RSEQ_PY_NO_ASM
    fl->sections = rseq_py_mode != RSEQ_PY_MODE_FALLBACK && rseq_py_fence_init() == 0;
#endif
    return fl;
}

void rseq_py_freelist_free(rseq_py_freelist *fl)
{
    if (fl == NULL)
        return;
    pthread_mutex_destroy(&fl->pool_lock);
    free(fl->mem);
    free(fl);
}

uint64_t rseq_py_freelist_capacity(const rseq_py_freelist *fl) { return fl->capacity; }
uint32_t rseq_py_freelist_per_cpu(const rseq_py_freelist *fl) { return fl->per_cpu; }
int rseq_py_freelist_uses_sections(const rseq_py_freelist *fl) { return fl->sections; }

uint64_t rseq_py_freelist_len(const rseq_py_freelist *fl)
{
    uint64_t n = __atomic_load_n(&fl->pool_count, __ATOMIC_RELAXED);
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++)
        n += COUNT(__atomic_load_n(&block(fl, cpu)->word, __ATOMIC_RELAXED));
    return n;
}

static int note(int r)
{
    if (r == RSEQ_PY_ESCAPE)
        STAT_INC(escapes);
    else if (r == RSEQ_PY_EXHAUSTED)
        STAT_INC(exhausted);
    return r;
}

/* The fast path of every operation: its section when the freelist uses
 * them and the thread has an area; anything but OK/FULL/EMPTY leads to the
 * owner path, which is always correct. */
static inline __attribute__((always_inline)) uint64_t
push_many_impl(rseq_py_freelist *fl, const int64_t *src, uint64_t n, const struct rseq_py_fl_ops *ops)
{
    uint64_t done = 0;
    struct rseq_py_area *area = fl->sections && ops ? rseq_py_area() : NULL;
    while (done < n) {
        uint64_t chunk = n - done < fl->batch ? n - done : fl->batch;
        if (area) {
            int r = chunk == 1 ? ops->push(area, &fl->g, src[done])
                               : ops->push_many(area, &fl->g, src + done, chunk);
            if (LIKELY(r == RSEQ_PY_OK)) {
                done += chunk;
                continue;
            }
            note(r);
        }
        if (push_slow(fl, src + done, chunk) == 0) {
            done += chunk;
            continue;
        }
        /* The chunk does not fit whole: push what fits, one by one. */
        uint64_t end = done + chunk;
        while (done < end && push_slow(fl, src + done, 1) == 0)
            done++;
        if (done < end)
            break;
    }
    return done;
}

static inline __attribute__((always_inline)) uint64_t
pop_many_impl(rseq_py_freelist *fl, int64_t *dst, uint64_t n, const struct rseq_py_fl_ops *ops)
{
    uint64_t done = 0;
    struct rseq_py_area *area = fl->sections && ops ? rseq_py_area() : NULL;
    while (done < n) {
        uint64_t want = n - done < fl->per_cpu ? n - done : fl->per_cpu;
        if (area) {
            uint64_t m = 1;
            int r = want == 1 ? ops->pop(area, &fl->g, dst + done)
                              : ops->pop_many(area, &fl->g, dst + done, want, &m);
            if (LIKELY(r == RSEQ_PY_OK)) {
                done += m;
                continue;
            }
            note(r);
        }
        uint64_t m = pop_slow(fl, dst + done, want);
        if (m == 0)
            break;
        done += m;
    }
    return done;
}

#ifndef RSEQ_PY_NO_ASM
HIDDEN const struct rseq_py_fl_ops rseq_py_fl_plain_ops = {
    rseq_py_fl_push, rseq_py_fl_pop, rseq_py_fl_push_many, rseq_py_fl_pop_many};
HIDDEN const struct rseq_py_fl_ops rseq_py_fl_inject_ops = {
    rseq_py_fl_push_inject, rseq_py_fl_pop_inject, rseq_py_fl_push_many_inject,
    rseq_py_fl_pop_many_inject};
#define PLAIN (&rseq_py_fl_plain_ops)
#else
#define PLAIN NULL
#endif

HIDDEN uint64_t rseq_py_freelist_push_many_with(rseq_py_freelist *fl, const int64_t *src,
                                                uint64_t n, const struct rseq_py_fl_ops *ops)
{
    return push_many_impl(fl, src, n, ops);
}

HIDDEN uint64_t rseq_py_freelist_pop_many_with(rseq_py_freelist *fl, int64_t *dst, uint64_t n,
                                               const struct rseq_py_fl_ops *ops)
{
    return pop_many_impl(fl, dst, n, ops);
}

int rseq_py_freelist_push(rseq_py_freelist *fl, int64_t handle)
{
    return push_many_impl(fl, &handle, 1, PLAIN) == 1 ? 0 : -1;
}

int rseq_py_freelist_pop(rseq_py_freelist *fl, int64_t *out)
{
    return pop_many_impl(fl, out, 1, PLAIN) == 1 ? 0 : -1;
}

static __thread int was_empty;

int64_t rseq_py_freelist_pop_value(rseq_py_freelist *fl)
{
    int64_t h;
    was_empty = pop_many_impl(fl, &h, 1, PLAIN) != 1;
    return was_empty ? INT64_MIN : h;
}

int rseq_py_freelist_was_empty(void) { return was_empty; }

uint64_t rseq_py_freelist_push_many(rseq_py_freelist *fl, const int64_t *src, uint64_t n)
{
    return push_many_impl(fl, src, n, PLAIN);
}

uint64_t rseq_py_freelist_pop_many(rseq_py_freelist *fl, int64_t *dst, uint64_t n)
{
    return pop_many_impl(fl, dst, n, PLAIN);
}

/* Every CPU in turn, then the pool.  dst has room for capacity handles. */
uint64_t rseq_py_freelist_drain(rseq_py_freelist *fl, int64_t *dst)
{
    uint64_t n = 0;
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++) {
        struct block *b = block(fl, cpu);
        own(fl, cpu, 1);
        uint64_t w = load(&b->word), count = COUNT(w);
        memcpy(dst + n, b->items, count * 8);
        n += count;
        store(&b->word, WORD(0, PUSHES(w))); /* their credits stay as free space */
        release(fl, cpu);
    }
    pool_lock(fl);
    memcpy(dst + n, fl->pool, fl->pool_count * 8);
    n += fl->pool_count;
    give_credits(fl, fl->pool_count);
    store(&fl->pool_count, 0);
    pool_unlock(fl);
    return n;
}
