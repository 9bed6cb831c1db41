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
#include <signal.h>
#include <stdio.h>
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

static void release(rseq_py_freelist *fl, uint32_t cpu);
static void pool_lock(rseq_py_freelist *fl);
static void pool_unlock(rseq_py_freelist *fl);

/* Who owns a stop word: pid << 32 | tid (never 0), cached because the
 * owner path runs on every operation of the fallback backend.  The pid
 * lets a waiter on a shared segment see that the owner's process died.
 * Reset in a forked child, whose pid and tid differ. */
static __thread uint64_t token;
static __thread pid_t token_pid;

static uint64_t self_token(void)
{
    pid_t pid = getpid();
    if (UNLIKELY(token == 0 || token_pid != pid)) {
        token = (uint64_t)(uint32_t)pid << 32 | (uint32_t)syscall(SYS_gettid);
        token_pid = pid;
    }
    return token;
}

static int owner_alive(uint64_t owner)
{
    pid_t pid = (pid_t)(owner >> 32);
    return kill(pid, 0) == 0 || errno != ESRCH;
}

/* Run on CPU cpu for a moment: any section in flight there, of any
 * process, was preempted by us (so it will abort) or has finished.  The
 * cross-process fence, since membarrier reaches only this process. */
static int affinity_fence(uint32_t cpu)
{
    cpu_set_t old, one;
    if (sched_getaffinity(0, sizeof old, &old) != 0)
        return -1;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0)
        return -1; /* e.g. a cpuset forbids it */
    sched_setaffinity(0, sizeof old, &old);
    return 0;
}

/* An owner that will never release: in a shared segment, one whose process
 * died; in a private freelist, one inherited from the parent by fork() (the
 * thread that held it does not exist in this process). */
static int owner_gone(const rseq_py_freelist *fl, uint64_t owner)
{
    if (fl->shared)
        return !owner_alive(owner);
    return (pid_t)(owner >> 32) != getpid();
}

/* Take CPU cpu's stack.  wait == 0: give up (return 0) if another slow path
 * owns it.  Acquire pairs with the owner's release of stop, so its edits
 * are visible to us.  In a shared segment, a stop word whose owner's
 * process died is taken over (after the pool lock, whose robust recovery
 * repairs any move that process left half done; likewise a private stop word
 * inherited across fork(), see fork_child), and a CPU that cannot be
 * fenced is not taken (return 0 even when waiting). */
static int own(rseq_py_freelist *fl, uint32_t cpu, int wait)
{
    uint64_t *stop = &block(fl, cpu)->stop;
    uint64_t token = self_token();
    for (;;) {
        uint64_t expected = 0;
        if (__atomic_compare_exchange_n(stop, &expected, token, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
            break;
        if (owner_gone(fl, expected)) {
            pool_lock(fl);
            int took = __atomic_compare_exchange_n(stop, &expected, token, 0, __ATOMIC_SEQ_CST,
                                                   __ATOMIC_RELAXED);
            pool_unlock(fl);
            if (took) {
                STAT_INC(owner_takeovers);
                break;
            }
            continue;
        }
        if (!wait)
            return 0;
        sched_yield();
    }
    if (fl->shared) {
        /* Always: even a process without sections shares the segment with
         * processes that may be inside one on that CPU. */
        if (affinity_fence(cpu) != 0) {
            release(fl, cpu);
            return 0;
        }
    } else if (fl->sections) {
        rseq_py_fence_cpu(cpu);
    }
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
    uint64_t avail = load(&fl->ctl->free_credits);
    for (;;) {
        uint64_t take = avail < want ? avail : want;
        if (take == 0)
            return 0;
        if (__atomic_compare_exchange_n(&fl->ctl->free_credits, &avail, avail - take, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return take;
    }
}

static void give_credits(rseq_py_freelist *fl, uint64_t n)
{
    if (n)
        __atomic_fetch_add(&fl->ctl->free_credits, n, __ATOMIC_RELAXED);
}

enum { J_NONE = 0, J_SPILL = 1, J_REFILL = 2 };

/* Tests only (rseq_py_freelist_test_crash): the process dies at this
 * point of a move, holding the stack and the pool lock, as a SIGKILL
 * there would leave them. */
static int die_at;
#define CRASH_POINT(n) do { if (UNLIKELY(die_at == (n))) _exit(0); } while (0)

/* Owner of b (CPU cpu), holding the pool: move the top k handles of b to
 * the pool, with their credits.  Crash-safe in a shared segment: the
 * handles are copied first, the journal says what is about to commit, then
 * the stack commits (one store of its word) and the pool commits (one
 * store of its count); recovery finishes a move the stack committed. */
static void spill(rseq_py_freelist *fl, uint32_t cpu, struct block *b, uint64_t k)
{
    struct rseq_py_fl_control *ctl = fl->ctl;
    uint64_t w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
    uint64_t pc = load(&ctl->pool_count);
    memcpy(fl->pool + pc, b->items + count - k, k * 8);
    ctl->j_cpu = cpu, ctl->j_k = k, ctl->j_word_after = WORD(count - k, PUSHES(w));
    ctl->j_pool_count_before = pc, ctl->j_limit_before = limit;
    __atomic_store_n(&ctl->j_op, J_SPILL, __ATOMIC_RELEASE);
    CRASH_POINT(RSEQ_PY_CRASH_SPILL_JOURNALED);
    store(&b->word, WORD(count - k, PUSHES(w)));  /* count first: count <= limit holds */
    CRASH_POINT(RSEQ_PY_CRASH_SPILL_STACK_COMMITTED);
    store(&b->limit, limit - k);
    store(&ctl->pool_pushes, load(&ctl->pool_pushes) + 1);
    __atomic_store_n(&ctl->pool_count, pc + k, __ATOMIC_RELEASE);
    __atomic_store_n(&ctl->j_op, J_NONE, __ATOMIC_RELEASE);
}

/* Owner of b (CPU cpu), holding the pool: move up to k handles from the
 * pool onto b, with their credits.  Returns how many moved.  Journaled
 * like spill: the stack commits, then the pool. */
static uint64_t refill(rseq_py_freelist *fl, uint32_t cpu, struct block *b, uint64_t k)
{
    struct rseq_py_fl_control *ctl = fl->ctl;
    uint64_t w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
    uint64_t pc = load(&ctl->pool_count);
    if (k > pc)
        k = pc;
    if (limit + k > fl->per_cpu) { /* make room: surplus free credits go global */
        store(&b->limit, count);   /* limit first: a crash leaks credits, never doubles them */
        give_credits(fl, limit - count);
        limit = count;
    }
    if (count + k > fl->per_cpu)
        k = fl->per_cpu - count;
    if (k == 0)
        return 0;
    memcpy(b->items + count, fl->pool + pc - k, k * 8);
    ctl->j_cpu = cpu, ctl->j_k = k, ctl->j_word_after = WORD(count + k, PUSHES(w) + 1);
    ctl->j_pool_count_before = pc, ctl->j_limit_before = limit;
    __atomic_store_n(&ctl->j_op, J_REFILL, __ATOMIC_RELEASE);
    CRASH_POINT(RSEQ_PY_CRASH_REFILL_JOURNALED);
    store(&b->limit, limit + k);                  /* limit first: count <= limit holds */
    store(&b->word, WORD(count + k, PUSHES(w) + 1));
    CRASH_POINT(RSEQ_PY_CRASH_REFILL_STACK_COMMITTED);
    __atomic_store_n(&ctl->pool_count, pc - k, __ATOMIC_RELEASE);
    __atomic_store_n(&ctl->j_op, J_NONE, __ATOMIC_RELEASE);
    return k;
}

/* The pool lock's previous holder died (shared segments), or was a thread
 * fork() did not copy (private, see fork_child): finish or undo the move it
 * journaled.  Its stack is still owned by the dead token,
 * so nothing touched the stack since. */
static void recover(rseq_py_freelist *fl)
{
    struct rseq_py_fl_control *ctl = fl->ctl;
    uint64_t op = load(&ctl->j_op);
    if (op == J_NONE)
        return;
    STAT_INC(moves_recovered);
    struct block *b = block(fl, (uint32_t)ctl->j_cpu);
    int stack_committed = load(&b->word) == ctl->j_word_after;
    uint64_t k = ctl->j_k, pc = ctl->j_pool_count_before;
    if (op == J_SPILL) {
        if (stack_committed) {    /* the handles left the stack: they belong to the pool */
            store(&b->limit, ctl->j_limit_before - k);
            store(&ctl->pool_pushes, load(&ctl->pool_pushes) + 1);
            store(&ctl->pool_count, pc + k);
        } else {                  /* nothing moved */
            store(&b->limit, ctl->j_limit_before);
            store(&ctl->pool_count, pc);
        }
    } else {
        if (stack_committed) {    /* the handles are on the stack: take them off the pool */
            store(&ctl->pool_count, pc - k);
        } else {                  /* nothing moved: the credits go back with the handles */
            store(&b->limit, ctl->j_limit_before);
            store(&ctl->pool_count, pc);
        }
    }
    store(&ctl->j_op, J_NONE);
}

static void pool_lock(rseq_py_freelist *fl)
{
    int r = pthread_mutex_lock(&fl->ctl->pool_lock);
    if (r == EOWNERDEAD) {
        recover(fl);
        pthread_mutex_consistent(&fl->ctl->pool_lock);
    }
}

static void pool_unlock(rseq_py_freelist *fl) { pthread_mutex_unlock(&fl->ctl->pool_lock); }

/* ---- slow paths ----------------------------------------------------------- */

/* Give every CPU's unused credits back to the global reserve. */
static void reclaim_credits(rseq_py_freelist *fl)
{
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++) {
        struct block *b = block(fl, cpu);
        if (!own(fl, cpu, 1))
            continue; /* a CPU this process may not run on (shared segments) */
        uint64_t count = COUNT(load(&b->word)), limit = load(&b->limit);
        store(&b->limit, count); /* first: a crash leaks credits, never doubles them */
        give_credits(fl, limit - count);
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
        if (!own(fl, cpu, 1)) {
            sched_yield();
            continue;
        }
        uint64_t w = load(&b->word), count = COUNT(w), limit = load(&b->limit);
        if (limit - count < n) {
            if (count + n > fl->per_cpu) { /* no physical room: spill the bottom half */
                uint64_t k = count + n - fl->per_cpu;
                pool_lock(fl);
                spill(fl, cpu, b, count / 2 > k ? count / 2 : k);
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
        if (load(&fl->ctl->free_credits) < n && stable(fl, no_room_for, n))
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
    *out++ = __atomic_load_n(&fl->ctl->pool_count, __ATOMIC_ACQUIRE);
    *out++ = load(&fl->ctl->pool_pushes);
    *out++ = load(&fl->ctl->free_credits);
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
        if (!own(fl, cpu, 1)) {
            sched_yield();
            continue;
        }
        uint64_t w = load(&b->word), count = COUNT(w);
        if (count == 0 && load(&fl->ctl->pool_count) > 0) {
            pool_lock(fl);
            refill(fl, cpu, b, fl->batch > n ? fl->batch : n);
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
                spill(fl, victim, v, (vc + 1) / 2);
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

/* Layout, shared or private: the control block, the CPU blocks, the pool. */
struct layout {
    uint64_t capacity, per_cpu, stride, control, blocks, pool, total;
};

static int plan(uint64_t capacity, uint32_t per_cpu, uint64_t offset, struct layout *l)
{
    if (capacity == 0 || capacity > RSEQ_PY_FREELIST_MAX || per_cpu > RSEQ_PY_FREELIST_PER_CPU_MAX)
        return -1;
    rseq_py_init(RSEQ_PY_REQUEST_AUTO);
    l->capacity = capacity;
    l->per_cpu = per_cpu == 0 ? DEFAULT_PER_CPU : per_cpu;
    if (l->per_cpu > capacity)
        l->per_cpu = capacity;
    l->stride = BLOCK_HEADER + (l->per_cpu * 8 + 127) / 128 * 128;
    l->control = offset;
    l->blocks = offset + sizeof(struct rseq_py_fl_control);
    l->pool = l->blocks + l->stride * rseq_py_nslots;
    l->total = l->pool + capacity * 8;
    return 0;
}

static rseq_py_freelist *describe(char *base, const struct layout *l, int shared)
{
    rseq_py_freelist *fl = calloc(1, sizeof *fl);
    if (fl == NULL)
        return NULL;
    fl->ctl = (struct rseq_py_fl_control *)(base + l->control);
    fl->g.blocks = base + l->blocks;
    fl->g.stride = l->stride;
    fl->g.nslots = rseq_py_nslots;
    fl->pool = (int64_t *)(base + l->pool);
    /* From the layout (the creator's arguments, or a checked header), not
     * the control block: rseq_py_freelist_check compares the two. */
    fl->capacity = l->capacity;
    fl->per_cpu = l->per_cpu;
    fl->batch = fl->ctl->batch;
    fl->shared = shared;
#ifndef RSEQ_PY_NO_ASM
    /* Private: membarrier fences.  Shared: affinity fences, which need no
     * registration. */
    fl->sections = rseq_py_mode != RSEQ_PY_MODE_FALLBACK && (shared || rseq_py_fence_init() == 0);
#endif
    return fl;
}

/* Whether the kernel (or emulator) really recovers a dead thread's robust
 * mutexes.  qemu-user answers the robust-list syscalls with ENOSYS while
 * glibc still initialises robust mutexes without complaint: a lock held by
 * a killed process would then block everyone, silently. */
static int robust_futexes(void)
{
    void *head;
    size_t len;
    return syscall(SYS_get_robust_list, 0, &head, &len) == 0 || errno != ENOSYS;
}

/* 0, or an errno value when the pool's mutex cannot be made. */
static int init_control(char *base, const struct layout *l, uint64_t capacity, int shared)
{
    struct rseq_py_fl_control *ctl = (struct rseq_py_fl_control *)(base + l->control);
    memset(base + l->control, 0, l->pool - l->control); /* control and blocks */
    ctl->capacity = capacity;
    ctl->per_cpu = l->per_cpu;
    ctl->batch = l->per_cpu / 2 ? l->per_cpu / 2 : 1;
    ctl->free_credits = capacity;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    if (shared) {
        /* Another process may die holding it: robust, so the next locker
         * is told (EOWNERDEAD) and repairs the journaled move. */
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    }
    int r = shared && !robust_futexes() ? ENOTSUP : pthread_mutex_init(&ctl->pool_lock, &a);
    if (r == ENOTSUP && shared) {
        /* No robust futexes here (qemu-user cannot emulate them): still
         * process-shared, without recovery from a holder's death. */
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_STALLED);
        r = pthread_mutex_init(&ctl->pool_lock, &a);
        ctl->not_robust = 1;
    }
    pthread_mutexattr_destroy(&a);
    if (r == 0) {
        /* glibc's first lock of a robust mutex leaves a byte changed for
         * good; take it once here, so that later users (an attach that only
         * checks the segment) leave the file byte for byte as they found it. */
        pthread_mutex_lock(&ctl->pool_lock);
        pthread_mutex_unlock(&ctl->pool_lock);
    }
    return r;
}

/* fork() copies a private freelist as the other threads left it: maybe
 * with the pool lock held, a move half done, or stop words owned by threads
 * the child does not have.  The child gets a fresh pool lock and finishes
 * or undoes the journaled move, exactly as after an owner's death in a
 * shared segment; inherited stop words are taken over lazily (owner_gone).
 * Handles that those threads held in hand are not in the child, as for any
 * thread that is not copied.  Shared segments need none of this: their
 * locks' holders live on in the parent and release them there. */
static pthread_mutex_t private_lock = PTHREAD_MUTEX_INITIALIZER;
static rseq_py_freelist *private_list;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) { pthread_mutex_lock(&private_lock); }
static void fork_parent(void) { pthread_mutex_unlock(&private_lock); }

static void fork_child(void)
{
    for (rseq_py_freelist *fl = private_list; fl != NULL; fl = fl->next_private) {
        pthread_mutex_init(&fl->ctl->pool_lock, NULL);
        recover(fl);
    }
    pthread_mutex_init(&private_lock, NULL);
}

static void install_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static void track_private(rseq_py_freelist *fl)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&private_lock);
    fl->next_private = private_list;
    private_list = fl;
    pthread_mutex_unlock(&private_lock);
}

static void untrack_private(rseq_py_freelist *fl)
{
    pthread_mutex_lock(&private_lock);
    for (rseq_py_freelist **p = &private_list; *p != NULL; p = &(*p)->next_private)
        if (*p == fl) {
            *p = fl->next_private;
            break;
        }
    pthread_mutex_unlock(&private_lock);
}

rseq_py_freelist *rseq_py_freelist_new(uint64_t capacity, uint32_t per_cpu)
{
    struct layout l;
    if (plan(capacity, per_cpu, 0, &l) != 0)
        return NULL;
    /* aligned_alloc wants a size that is a multiple of the alignment (C11;
     * ASan enforces it): the pool's end need not be. */
    char *mem = aligned_alloc(128, (l.total + 127) / 128 * 128);
    if (mem == NULL)
        return NULL;
    if (init_control(mem, &l, capacity, 0) != 0) {
        free(mem);
        return NULL;
    }
    rseq_py_freelist *fl = describe(mem, &l, 0);
    if (fl == NULL) {
        free(mem);
        return NULL;
    }
    fl->mem = mem;
    track_private(fl);
    return fl;
}

uint64_t rseq_py_freelist_shared_size(uint64_t capacity, uint32_t per_cpu)
{
    struct layout l;
    return plan(capacity, per_cpu, RSEQ_PY_SEGMENT_HEADER, &l) == 0 ? l.total : 0;
}

HIDDEN int rseq_py_freelist_geometry_ok(const struct rseq_py_segment_header *h, uint64_t size)
{
    struct layout l;
    return h->geometry[1] <= UINT32_MAX &&
           plan(h->geometry[0], (uint32_t)h->geometry[1], RSEQ_PY_SEGMENT_HEADER, &l) == 0 &&
           l.per_cpu == h->geometry[1] && l.stride == h->geometry[2] && l.total == size;
}

rseq_py_freelist *rseq_py_freelist_create_at(void *mem, uint64_t size, uint64_t capacity,
                                             uint32_t per_cpu)
{
    struct layout l;
    if (plan(capacity, per_cpu, RSEQ_PY_SEGMENT_HEADER, &l) != 0 || size < l.total ||
        ((uintptr_t)mem % 128) != 0)
        return NULL;
    struct rseq_py_segment_header *h = mem;
    rseq_py_segment_init(h, RSEQ_PY_KIND_FREELIST, l.total);
    h->geometry[0] = capacity;
    h->geometry[1] = l.per_cpu;
    h->geometry[2] = l.stride;
    if (init_control(mem, &l, capacity, 1) != 0)
        return NULL;
    rseq_py_freelist *fl = describe(mem, &l, 1);
    if (fl != NULL)
        rseq_py_segment_ready(h);
    return fl;
}

rseq_py_freelist *rseq_py_freelist_attach_at(void *mem, uint64_t size)
{
    char why[8];
    if (rseq_py_segment_check(mem, size, RSEQ_PY_KIND_FREELIST, why, sizeof why) != RSEQ_PY_SEG_OK)
        return NULL;
    const struct rseq_py_segment_header *h = mem;
    struct layout l;
    plan(h->geometry[0], (uint32_t)h->geometry[1], RSEQ_PY_SEGMENT_HEADER, &l);
    return describe(mem, &l, 1);
}

void rseq_py_freelist_free(rseq_py_freelist *fl)
{
    if (fl == NULL)
        return;
    if (fl->mem != NULL) { /* a segment's mutex belongs to every process using it */
        untrack_private(fl);
        pthread_mutex_destroy(&fl->ctl->pool_lock);
        free(fl->mem);
    }
    free(fl);
}

uint64_t rseq_py_freelist_capacity(const rseq_py_freelist *fl) { return fl->capacity; }
uint32_t rseq_py_freelist_per_cpu(const rseq_py_freelist *fl) { return fl->per_cpu; }
int rseq_py_freelist_uses_sections(const rseq_py_freelist *fl) { return fl->sections; }
int rseq_py_freelist_robust(const rseq_py_freelist *fl) { return !fl->ctl->not_robust; }

uint64_t rseq_py_freelist_len(const rseq_py_freelist *fl)
{
    uint64_t n = __atomic_load_n(&fl->ctl->pool_count, __ATOMIC_RELAXED);
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

/* The section alone (1: done; 0: the caller must take the full path): for
 * a binding that holds the GIL and so must never wait on a slow path. */
int rseq_py_freelist_try_push(rseq_py_freelist *fl, int64_t handle)
{
#ifndef RSEQ_PY_NO_ASM
    struct rseq_py_area *area = fl->sections ? rseq_py_area() : NULL;
    if (area != NULL && rseq_py_fl_push(area, &fl->g, handle) == RSEQ_PY_OK)
        return 1;
#else
    (void)fl, (void)handle;
#endif
    return 0;
}

int rseq_py_freelist_try_pop(rseq_py_freelist *fl, int64_t *out)
{
#ifndef RSEQ_PY_NO_ASM
    struct rseq_py_area *area = fl->sections ? rseq_py_area() : NULL;
    if (area != NULL && rseq_py_fl_pop(area, &fl->g, out) == RSEQ_PY_OK)
        return 1;
#else
    (void)fl, (void)out;
#endif
    return 0;
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

void rseq_py_freelist_test_crash(rseq_py_freelist *fl, int point)
{
    uint32_t cpu = current_cpu(fl);
    struct block *b = block(fl, cpu);
    die_at = point;
    if (!own(fl, cpu, 1))
        _exit(1);
    if (point == RSEQ_PY_CRASH_OWNING_STACK)
        _exit(0);
    pool_lock(fl);
    uint64_t count = COUNT(load(&b->word));
    if (point == RSEQ_PY_CRASH_SPILL_JOURNALED || point == RSEQ_PY_CRASH_SPILL_STACK_COMMITTED) {
        if (count)
            spill(fl, cpu, b, (count + 1) / 2);
    } else if (load(&fl->ctl->pool_count)) {
        refill(fl, cpu, b, fl->batch);
    }
    _exit(2); /* nothing to move: the test set it up wrong */
}

/* Every CPU in turn, then the pool.  dst has room for capacity handles. */
/* Every invariant of the control block and the stacks that holds at any
 * instant while we hold the pool lock (limits only grow under it, credits
 * leave free_credits before they join a limit).  A segment that breaks one
 * was overwritten, and trusting it would write past a stack, the pool or a
 * caller's buffer. */
int rseq_py_freelist_check(rseq_py_freelist *fl, char *why, uint64_t whylen)
{
    const struct rseq_py_fl_control *ctl = fl->ctl;
    int bad = 1;
    pool_lock(fl);
    uint64_t pc = load(&ctl->pool_count), free_c = load(&ctl->free_credits);
    uint64_t sum = pc + free_c;
    if (ctl->capacity != fl->capacity || ctl->per_cpu != fl->per_cpu)
        snprintf(why, whylen, "its control block says capacity %llu, per_cpu %llu; its header "
                 "says capacity %llu, per_cpu %llu", (unsigned long long)ctl->capacity,
                 (unsigned long long)ctl->per_cpu, (unsigned long long)fl->capacity,
                 (unsigned long long)fl->per_cpu);
    else if (ctl->batch < 1 || ctl->batch > fl->per_cpu)
        snprintf(why, whylen, "its batch size %llu is outside 1..per_cpu (%llu)",
                 (unsigned long long)ctl->batch, (unsigned long long)fl->per_cpu);
    else if (pc > fl->capacity || free_c > fl->capacity)
        snprintf(why, whylen, "its pool holds %llu and its free credits are %llu, beyond "
                 "capacity %llu", (unsigned long long)pc, (unsigned long long)free_c,
                 (unsigned long long)fl->capacity);
    else if (load(&ctl->j_op) > J_REFILL || ctl->j_cpu >= fl->g.nslots || ctl->j_k > fl->per_cpu)
        snprintf(why, whylen, "its move journal is garbage (op %llu, cpu %llu, k %llu)",
                 (unsigned long long)ctl->j_op, (unsigned long long)ctl->j_cpu,
                 (unsigned long long)ctl->j_k);
    else
        bad = 0;
    for (uint32_t cpu = 0; !bad && cpu < fl->g.nslots; cpu++) {
        const struct block *b = block(fl, cpu);
        uint64_t count = COUNT(load(&b->word)), limit = load(&b->limit);
        if (count > fl->per_cpu || limit > fl->per_cpu) {
            snprintf(why, whylen, "CPU %u's stack says %llu handles, room for %llu, beyond "
                     "per_cpu %llu", cpu, (unsigned long long)count, (unsigned long long)limit,
                     (unsigned long long)fl->per_cpu);
            bad = 1;
        }
        sum += limit;
    }
    if (!bad && sum > fl->capacity) {
        snprintf(why, whylen, "its stacks, pool and free credits account for %llu handles, "
                 "beyond capacity %llu", (unsigned long long)sum, (unsigned long long)fl->capacity);
        bad = 1;
    }
    pool_unlock(fl);
    return bad ? -1 : 0;
}

uint64_t rseq_py_freelist_drain(rseq_py_freelist *fl, int64_t *dst)
{
    uint64_t n = 0;
    for (uint32_t cpu = 0; cpu < fl->g.nslots; cpu++) {
        struct block *b = block(fl, cpu);
        if (!own(fl, cpu, 1))
            continue; /* a CPU this process may not run on (shared segments) */
        uint64_t w = load(&b->word), count = COUNT(w);
        if (count > fl->capacity - n) /* only an overwritten segment gets here */
            count = fl->capacity - n;
        memcpy(dst + n, b->items, count * 8);
        n += count;
        store(&b->word, WORD(0, PUSHES(w))); /* their credits stay as free space */
        release(fl, cpu);
    }
    pool_lock(fl);
    uint64_t pc = fl->ctl->pool_count;
    if (pc > fl->capacity - n) /* as above: never past dst's capacity handles */
        pc = fl->capacity - n;
    memcpy(dst + n, fl->pool, pc * 8);
    n += pc;
    give_credits(fl, pc);
    store(&fl->ctl->pool_count, 0);
    pool_unlock(fl);
    return n;
}
