/*
 * internal.h - what the C files share and the Python binding never sees.
 */
#ifndef RSEQ_PY_INTERNAL_H
#define RSEQ_PY_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "rseq_py.h"
#include "../asm/rseq_abi.h"

#define HIDDEN __attribute__((visibility("hidden")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Kernel ABI struct rseq: only the fields we read.  Offsets are checked
 * against asm/rseq_abi.h at compile time in registration.c. */
struct rseq_py_area {
    uint32_t cpu_id_start;
    uint32_t cpu_id;
    uint64_t rseq_cs;
    uint32_t flags;
    uint32_t node_id;
    uint32_t mm_cid;
} __attribute__((aligned(32)));

/* ---- registration.c ---------------------------------------------------- */

enum rseq_py_mode {
    RSEQ_PY_MODE_UNDECIDED = 0,
    RSEQ_PY_MODE_FALLBACK,
    RSEQ_PY_MODE_GLIBC,
    RSEQ_PY_MODE_SELF
};

extern HIDDEN int rseq_py_mode;
extern HIDDEN ptrdiff_t rseq_py_glibc_offset;
/* initial-exec: the pointer lives in static TLS, set up when the thread is
 * created.  With the default (lazy, dynamic) TLS of a dlopen'ed module, the
 * first access allocates the thread's block; a signal handler that counts
 * during that first access would allocate a second block and lose the
 * registration recorded in the first.  One pointer fits the static TLS
 * surplus glibc keeps for dlopen'ed modules (a whole area would not). */
extern HIDDEN __thread struct rseq_py_area *rseq_py_self_area
    __attribute__((tls_model("initial-exec")));
extern HIDDEN uint32_t rseq_py_nslots;

HIDDEN struct rseq_py_area *rseq_py_self_register(void);
HIDDEN int rseq_py_slow_cpu(const struct rseq_py_area *area);

/* The calling thread's registered area, or NULL on the fallback backend.
 * A thread whose own registration failed gets an area whose cpu_id is -2,
 * so the section escapes at once and no extra branch is needed here. */
static inline struct rseq_py_area *rseq_py_area(void)
{
    if (LIKELY(rseq_py_mode == RSEQ_PY_MODE_GLIBC))
        return (struct rseq_py_area *)((char *)__builtin_thread_pointer() + rseq_py_glibc_offset);
    if (rseq_py_mode == RSEQ_PY_MODE_SELF) {
        struct rseq_py_area *a = rseq_py_self_area;
        return LIKELY(a != NULL) ? a : rseq_py_self_register();
    }
    return NULL;
}

/* ---- statistics (relaxed atomics, bumped on slow paths only) ----------- */

struct rseq_py_counters_internal {
    uint64_t escapes;
    uint64_t exhausted;
    uint64_t slow_path_adds;
    uint64_t self_registrations;
    uint64_t self_unregistrations;
    uint64_t self_registration_failures;
    uint64_t owner_takeovers;
    uint64_t moves_recovered;
};
extern HIDDEN struct rseq_py_counters_internal rseq_py_stat;

#define STAT_INC(field) __atomic_fetch_add(&rseq_py_stat.field, 1, __ATOMIC_RELAXED)

/* ---- assembly (asm/<arch>/percpu_counter.S, asm/CONTRACT.md) ----------- */

typedef int (*rseq_py_percpu_add_fn)(struct rseq_py_area *area, int64_t *slot0,
                                     uint64_t stride, int64_t delta, uint64_t nslots);

#ifndef RSEQ_PY_NO_ASM
HIDDEN int rseq_py_percpu_add(struct rseq_py_area *area, int64_t *slot0,
                              uint64_t stride, int64_t delta, uint64_t nslots);
HIDDEN int rseq_py_percpu_add_inject(struct rseq_py_area *area, int64_t *slot0,
                                     uint64_t stride, int64_t delta, uint64_t nslots);
#endif

/* Set by the stress driver, read by the _inject sections. */
extern HIDDEN volatile uint64_t rseq_py_inject_loops;
extern HIDDEN uint64_t rseq_py_inject_aborts;
/* Stress runs: when set, the workers' signal handler adds 1 to counter 0 of
 * this counter (and counts it in rseq_py_handler_adds). */
extern HIDDEN rseq_py_counter *volatile rseq_py_handler_counter;
extern HIDDEN uint64_t rseq_py_handler_adds;

/* ---- workers.c (stress drivers) ------------------------------------------ */

HIDDEN uint64_t rseq_py_now_ns(void);
/* Serialises stress runs: hold it around a whole run. */
HIDDEN void rseq_py_run_lock(void);
HIDDEN void rseq_py_run_unlock(void);
/* Runs fn(args + i * arg_size) in n threads started together, signalling
 * the live ones every signal_interval_us (0: never).  Returns 0 or errno. */
HIDDEN int rseq_py_run_workers(uint32_t n, void *(*fn)(void *), void *args, size_t arg_size,
                               uint32_t signal_interval_us, uint64_t *signals,
                               uint64_t *elapsed_ns);

/* ---- fence.c ------------------------------------------------------------ */

HIDDEN int rseq_py_fence_init(void);
HIDDEN void rseq_py_fence_cpu(uint32_t cpu);

/* ---- freelist.c / asm/<arch>/freelist.S ---------------------------------- */

struct rseq_py_fl_geom {
    char *blocks;    /* CPU 0's block (header line, then its stack) */
    uint64_t stride; /* bytes between two CPUs' blocks: a multiple of 128 */
    uint64_t nslots;
};

struct rseq_py_fl_ops {
    int (*push)(struct rseq_py_area *, const struct rseq_py_fl_geom *, int64_t);
    int (*pop)(struct rseq_py_area *, const struct rseq_py_fl_geom *, int64_t *);
    int (*push_many)(struct rseq_py_area *, const struct rseq_py_fl_geom *, const int64_t *,
                     uint64_t);
    int (*pop_many)(struct rseq_py_area *, const struct rseq_py_fl_geom *, int64_t *, uint64_t,
                    uint64_t *);
};

#ifndef RSEQ_PY_NO_ASM
#define FL_SECTIONS(sfx)                                                                       \
    HIDDEN int rseq_py_fl_push##sfx(struct rseq_py_area *, const struct rseq_py_fl_geom *,     \
                                    int64_t);                                                  \
    HIDDEN int rseq_py_fl_pop##sfx(struct rseq_py_area *, const struct rseq_py_fl_geom *,      \
                                   int64_t *);                                                 \
    HIDDEN int rseq_py_fl_push_many##sfx(struct rseq_py_area *, const struct rseq_py_fl_geom *,\
                                         const int64_t *, uint64_t);                           \
    HIDDEN int rseq_py_fl_pop_many##sfx(struct rseq_py_area *, const struct rseq_py_fl_geom *, \
                                        int64_t *, uint64_t, uint64_t *);
FL_SECTIONS()
FL_SECTIONS(_inject)
extern HIDDEN const struct rseq_py_fl_ops rseq_py_fl_plain_ops, rseq_py_fl_inject_ops;
#endif

/* The mutable state every user of a freelist shares: in the same memory as
 * its stacks (a private allocation, or a shared segment after its header). */
struct rseq_py_fl_control {
    uint64_t capacity, per_cpu, batch; /* fixed at creation */
    uint64_t free_credits; /* atomic: capacity not granted to any CPU or the pool */
    uint64_t pool_count;   /* written under pool_lock, read racily */
    uint64_t pool_pushes;  /* changes with every move into the pool */
    /* A move between a stack and the pool in progress (shared segments):
     * what recovery needs if its process dies holding the pool lock. */
    uint64_t j_op, j_cpu, j_k, j_word_after, j_limit_before, j_pool_count_before;
    uint64_t not_robust;   /* the creator's libc/kernel had no robust mutexes */
    pthread_mutex_t pool_lock; /* process-shared and robust in a segment */
} __attribute__((aligned(128)));

struct rseq_py_freelist {
    struct rseq_py_fl_geom g;
    struct rseq_py_fl_control *ctl;
    int64_t *pool;         /* capacity handles */
    uint64_t capacity;
    uint64_t per_cpu;      /* room of each CPU's stack */
    uint64_t batch;        /* handles or credits moved per slow-path trip */
    int sections;          /* 1: rseq sections + fences; 0: stop words as locks */
    int shared;            /* in a segment other processes map: affinity fences,
                              dead owners taken over, journaled moves */
    void *mem;             /* what to free: NULL for a segment */
    struct rseq_py_freelist *next_private; /* the process's private freelists (fork) */
};

/* ops == NULL: the owner (lock) path only. */
HIDDEN uint64_t rseq_py_freelist_push_many_with(rseq_py_freelist *fl, const int64_t *src,
                                                uint64_t n, const struct rseq_py_fl_ops *ops);
HIDDEN uint64_t rseq_py_freelist_pop_many_with(rseq_py_freelist *fl, int64_t *dst, uint64_t n,
                                               const struct rseq_py_fl_ops *ops);

/* ---- counter.c ---------------------------------------------------------- */

struct rseq_py_counter {
    /* [cpu][index] at rseq_slots + cpu * stride: written only by sections
     * running on that cpu (plain stores), read by anyone. */
    int64_t *rseq_slots;
    /* Same geometry: written only with atomic read-modify-writes (fallback
     * backend, slow paths, reset), so they never race with a section. */
    int64_t *atomic_slots;
    uint64_t stride;     /* bytes between two CPUs' slots: a multiple of 128 */
    uint32_t ncounters;
    uint32_t nslots;
    void *mem;           /* what to free: NULL for a shared segment's counter */
};

/* ---- segment.c ------------------------------------------------------------ */

HIDDEN void rseq_py_segment_init(struct rseq_py_segment_header *h, uint32_t kind, uint64_t size);
HIDDEN void rseq_py_segment_ready(struct rseq_py_segment_header *h);
HIDDEN int rseq_py_freelist_geometry_ok(const struct rseq_py_segment_header *h, uint64_t size);

HIDDEN uint64_t rseq_py_counter_stride(uint32_t ncounters);

/* add with an explicit section (NULL: the atomic path only). */
HIDDEN int rseq_py_counter_add_with(rseq_py_counter *c, uint32_t index, int64_t delta,
                                    rseq_py_percpu_add_fn fn);

#endif
