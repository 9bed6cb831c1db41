/*
 * rseq_py.h - the public C interface of rseq_py.
 *
 * Everything the Python binding calls is declared here and nothing else.
 * All functions are safe to call from any thread, with or without the GIL;
 * none blocks except the stress and benchmark drivers, which run their own
 * threads until done.
 */
#ifndef RSEQ_PY_H
#define RSEQ_PY_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The text from here to "end of binding" is also the cffi cdef of the Python
 * binding (rseq_py/_build.py): keep it to plain declarations and integer
 * #defines. */

/* ---- backend and registration ---------------------------------------- */

enum rseq_py_backend {
    RSEQ_PY_BACKEND_FALLBACK = 0, /* per-CPU slots updated with atomic adds */
    RSEQ_PY_BACKEND_RSEQ = 1      /* per-CPU slots updated by rseq sections */
};

enum rseq_py_registrar {
    RSEQ_PY_REGISTRAR_NONE = 0,
    RSEQ_PY_REGISTRAR_GLIBC = 1,  /* glibc registered every thread */
    RSEQ_PY_REGISTRAR_SELF = 2    /* rseq_py registers each thread lazily */
};

enum rseq_py_request {
    RSEQ_PY_REQUEST_AUTO = 0,     /* rseq when possible, else fallback */
    RSEQ_PY_REQUEST_FALLBACK = 1, /* never use rseq */
    RSEQ_PY_REQUEST_RSEQ = 2      /* rseq or fail */
};

struct rseq_py_info {
    int backend;                /* enum rseq_py_backend */
    int registrar;              /* enum rseq_py_registrar */
    const char *arch;           /* "x86_64", "aarch64", or the machine name */
    uint32_t feature_size;      /* bytes of struct rseq the kernel fills */
    uint32_t kernel_feature_size; /* getauxval(AT_RSEQ_FEATURE_SIZE), 0 if absent */
    uint32_t area_size;         /* bytes registered for each thread's area */
    int has_node_id;
    int has_mm_cid;
    uint32_t cpu_slots;         /* per-CPU slots every structure allocates */
    uint32_t signature;
    int64_t glibc_rseq_offset;  /* __rseq_offset, 0 if glibc has none */
    int64_t glibc_rseq_size;    /* __rseq_size, -1 if glibc has none */
    const char *reason;         /* why this backend, in words */
};

/* Decide the backend once per process (later calls return the first
 * outcome).  Returns 0, or -1 when RSEQ_PY_REQUEST_RSEQ cannot be met. */
int rseq_py_init(int request);
void rseq_py_get_info(struct rseq_py_info *out);

/* CPU the calling thread runs on (from the rseq area when registered). */
int rseq_py_current_cpu(void);
/* Concurrency id (per process) or -1 when the kernel does not fill it. */
int rseq_py_current_mm_cid(void);
/* NUMA node, from the rseq area when filled, else from getcpu(2). */
int rseq_py_current_numa_node(void);

struct rseq_py_stats {
    uint64_t escapes;            /* sections not entered (unregistered) */
    uint64_t exhausted;          /* sections that aborted every attempt */
    uint64_t slow_path_adds;     /* adds done with an atomic instead */
    uint64_t self_registrations; /* threads rseq_py registered, ever */
    uint64_t self_unregistrations;
    uint64_t self_registration_failures;
    int64_t self_registrations_live;
    uint64_t owner_takeovers;    /* freelist stacks taken from an owner that was
                                    gone (dead process, or a thread not copied by fork) */
    uint64_t moves_recovered;    /* freelist pool moves finished or undone for them */
};
void rseq_py_get_stats(struct rseq_py_stats *out);

/* ---- per-CPU counters ------------------------------------------------- */

typedef struct rseq_py_counter rseq_py_counter;

/* ncounters in [1, RSEQ_PY_COUNTER_MAX]; NULL on bad size or no memory. */
#define RSEQ_PY_COUNTER_MAX 1048576
rseq_py_counter *rseq_py_counter_new(uint32_t ncounters);
void rseq_py_counter_free(rseq_py_counter *c);
uint32_t rseq_py_counter_size(const rseq_py_counter *c);
uint32_t rseq_py_counter_cpu_slots(const rseq_py_counter *c);

/* Add delta (wrapping modulo 2^64) to counter `index` on this CPU's slot.
 * Returns 0, or -1 if index is out of range. */
int rseq_py_counter_add(rseq_py_counter *c, uint32_t index, int64_t delta);
/* Sum over all CPUs (wrapping).  index must be < size. */
int64_t rseq_py_counter_value(const rseq_py_counter *c, uint32_t index);
/* out[size]: every counter's sum. */
void rseq_py_counter_values(const rseq_py_counter *c, int64_t *out);
/* out[cpu_slots]: counter `index` as seen on each CPU. */
void rseq_py_counter_per_cpu(const rseq_py_counter *c, uint32_t index, int64_t *out);
/* Subtract, from each CPU, what that CPU held when it was read; returns the
 * total subtracted.  Concurrent adds are each either in that total or left
 * in the counter, never lost and never counted twice. */
int64_t rseq_py_counter_reset(rseq_py_counter *c, uint32_t index);

/* ---- shared segments ------------------------------------------------ */

/* Every shared segment starts with this header (128 bytes).  Attaching
 * checks all of it; nothing in a segment is trusted before that. */
#define RSEQ_PY_SEGMENT_MAGIC 5139549801255621458 /* "RSEQPYSG" little-endian */
#define RSEQ_PY_SEGMENT_VERSION 1
#define RSEQ_PY_SEGMENT_READY 1497646418 /* "REDY" */
#define RSEQ_PY_SEGMENT_HEADER 128

enum rseq_py_segment_kind { RSEQ_PY_KIND_COUNTER = 1, RSEQ_PY_KIND_FREELIST = 2 };
enum rseq_py_arch { RSEQ_PY_ARCH_OTHER = 0, RSEQ_PY_ARCH_X86_64 = 1, RSEQ_PY_ARCH_AARCH64 = 2 };

struct rseq_py_segment_header {
    uint64_t magic;        /* RSEQ_PY_SEGMENT_MAGIC */
    uint32_t version;      /* RSEQ_PY_SEGMENT_VERSION */
    uint32_t kind;         /* enum rseq_py_segment_kind */
    uint32_t arch;         /* RSEQ_PY_ARCH_* of the creator */
    uint32_t word_size;    /* 8 */
    uint32_t cpu_slots;    /* per-CPU slots (possible CPUs) */
    uint32_t ready;        /* RSEQ_PY_SEGMENT_READY once fully initialised */
    uint64_t total_size;   /* bytes of the whole segment */
    uint64_t geometry[4];  /* counter: ncounters, stride; freelist: capacity, per_cpu, stride */
    uint64_t reserved[7];
};

enum rseq_py_segment_error {
    RSEQ_PY_SEG_OK = 0,
    RSEQ_PY_SEG_TRUNCATED = 1,  /* smaller than its header or its geometry */
    RSEQ_PY_SEG_FOREIGN = 2,    /* no rseq_py magic: not one of ours */
    RSEQ_PY_SEG_VERSION = 3,
    RSEQ_PY_SEG_KIND = 4,
    RSEQ_PY_SEG_ARCH = 5,
    RSEQ_PY_SEG_WORD_SIZE = 6,
    RSEQ_PY_SEG_CPU_SLOTS = 7,
    RSEQ_PY_SEG_INCOMPLETE = 8, /* its creator has not finished (or died) */
    RSEQ_PY_SEG_GEOMETRY = 9    /* geometry inconsistent with its size */
};

/* Checks the header of a mapped segment of `size` bytes for `kind`;
 * writes the reason into why[whylen] on failure. */
int rseq_py_segment_check(const void *mem, uint64_t size, uint32_t kind, char *why, uint64_t whylen);

/* Bytes a shared counter of ncounters needs (0 if ncounters is bad). */
uint64_t rseq_py_counter_shared_size(uint32_t ncounters);
/* Lay out a new shared counter in zeroed mem (>= shared_size bytes). */
rseq_py_counter *rseq_py_counter_create_at(void *mem, uint64_t size, uint32_t ncounters);
/* A counter over a segment that rseq_py_segment_check accepted. */
rseq_py_counter *rseq_py_counter_attach_at(void *mem, uint64_t size);

/* ---- per-CPU freelists ----------------------------------------------- */

typedef struct rseq_py_freelist rseq_py_freelist;

#define RSEQ_PY_FREELIST_MAX 4294967296
#define RSEQ_PY_FREELIST_PER_CPU_MAX 16777216
/* capacity in [1, RSEQ_PY_FREELIST_MAX]; per_cpu: room of each CPU's stack
 * (0: default, capped at capacity).  NULL on bad arguments or no memory. */
rseq_py_freelist *rseq_py_freelist_new(uint64_t capacity, uint32_t per_cpu);
void rseq_py_freelist_free(rseq_py_freelist *fl);
uint64_t rseq_py_freelist_capacity(const rseq_py_freelist *fl);
uint32_t rseq_py_freelist_per_cpu(const rseq_py_freelist *fl);
int rseq_py_freelist_uses_sections(const rseq_py_freelist *fl);
/* 1 unless the segment's creator had no robust mutexes (qemu-user): then a
 * process dying while it holds the pool lock blocks the others. */
int rseq_py_freelist_robust(const rseq_py_freelist *fl);
/* Shared freelists: as for counters (rseq_py_counter_create_at). */
uint64_t rseq_py_freelist_shared_size(uint64_t capacity, uint32_t per_cpu);
rseq_py_freelist *rseq_py_freelist_create_at(void *mem, uint64_t size, uint64_t capacity,
                                             uint32_t per_cpu);
rseq_py_freelist *rseq_py_freelist_attach_at(void *mem, uint64_t size);
/* Attached segments: 0, or -1 with the reason in why[whylen] when its
 * control block or stacks break an invariant (the segment was overwritten). */
int rseq_py_freelist_check(rseq_py_freelist *fl, char *why, uint64_t whylen);
/* Handles held: exact when no operation runs concurrently. */
uint64_t rseq_py_freelist_len(const rseq_py_freelist *fl);
/* 0, or -1 when the freelist already holds capacity handles. */
int rseq_py_freelist_push(rseq_py_freelist *fl, int64_t handle);
/* 0 with *out set, or -1 when the freelist held nothing at some instant
 * during the call. */
int rseq_py_freelist_pop(rseq_py_freelist *fl, int64_t *out);
/* pop without an out-parameter (cheaper to call from Python): the handle,
 * or INT64_MIN with *this thread's* rseq_py_freelist_was_empty() set to 1
 * when it ran empty (INT64_MIN is also a valid handle: check the flag). */
int64_t rseq_py_freelist_pop_value(rseq_py_freelist *fl);
int rseq_py_freelist_was_empty(void);
/* One try of the critical section only, never a slow path (so never a wait):
 * 1 when done, 0 when the caller must use push / pop. */
int rseq_py_freelist_try_push(rseq_py_freelist *fl, int64_t handle);
int rseq_py_freelist_try_pop(rseq_py_freelist *fl, int64_t *out);
/* Pushes src[0..n) in order; returns how many (fewer than n only when full). */
uint64_t rseq_py_freelist_push_many(rseq_py_freelist *fl, const int64_t *src, uint64_t n);
/* Pops up to n into dst; fewer only when it ran empty (as for pop). */
uint64_t rseq_py_freelist_pop_many(rseq_py_freelist *fl, int64_t *dst, uint64_t n);
/* Takes every handle (dst has room for capacity); returns how many. */
uint64_t rseq_py_freelist_drain(rseq_py_freelist *fl, int64_t *dst);

/* Tests only: in a shared freelist, own this CPU's stack (and for a move,
 * the pool lock) and _exit() at `point`, as a SIGKILL there would.  Never
 * returns. */
enum rseq_py_crash_point {
    RSEQ_PY_CRASH_OWNING_STACK = 1,
    RSEQ_PY_CRASH_SPILL_JOURNALED = 2,
    RSEQ_PY_CRASH_SPILL_STACK_COMMITTED = 3,
    RSEQ_PY_CRASH_REFILL_JOURNALED = 4,
    RSEQ_PY_CRASH_REFILL_STACK_COMMITTED = 5
};
void rseq_py_freelist_test_crash(rseq_py_freelist *fl, int point);

/* ---- stress driver (tests) -------------------------------------------- */

enum rseq_py_variant {
    RSEQ_PY_VARIANT_RSEQ = 0,        /* the shipped section */
    RSEQ_PY_VARIANT_RSEQ_INJECT = 1, /* injected delay + abort counter */
    RSEQ_PY_VARIANT_ATOMIC = 2,      /* the fallback path only */
    RSEQ_PY_VARIANT_UNPROTECTED = 3  /* load/delay/store with no section:
                                        a control that must lose updates */
};

struct rseq_py_stress_config {
    uint32_t threads;
    uint64_t ops_per_thread;
    int variant;                 /* enum rseq_py_variant */
    uint64_t inject_loops;       /* delay inside the section (inject/unprotected) */
    uint32_t signal_interval_us; /* 0: no signals; else every worker is
                                    signalled at about this interval */
    int handler_adds;            /* 1: the signal handler adds 1 to counter 0
                                    too (counters are async-signal-safe) */
};

struct rseq_py_stress_result {
    int64_t expected;            /* sum of every delta every worker added */
    int64_t observed;            /* sum read back after all workers joined */
    uint64_t aborts;             /* aborts counted by the inject variant */
    uint64_t signals;            /* signals delivered to workers */
    uint64_t escapes;            /* slow paths taken during the run */
    uint64_t exhausted;
    uint64_t handler_adds;       /* adds made by the signal handler (in expected) */
    uint64_t elapsed_ns;
    int error;                   /* 0, or an errno value */
};

/* Runs `threads` workers adding to counter c (every index in turn) and
 * fills *r.  Blocks until all workers are done. */
int rseq_py_counter_stress(rseq_py_counter *c, const struct rseq_py_stress_config *cfg,
                           struct rseq_py_stress_result *r);

struct rseq_py_fl_stress_config {
    uint32_t threads;
    uint64_t ops_per_thread;
    int variant;                 /* RSEQ_PY_VARIANT_RSEQ, _RSEQ_INJECT or _ATOMIC (owner path) */
    uint64_t inject_loops;
    uint32_t signal_interval_us;
    uint64_t handles;            /* distinct handles 0..handles-1 pushed first */
    uint32_t max_batch;          /* batches of 2..max_batch; 1: single ops only */
    uint32_t max_held;           /* handles one worker holds at most */
    int external;                /* 1: fl is filled and checked by the caller
                                    (e.g. shared with other processes): no fill,
                                    no drain, only this process's duplicates */
};

struct rseq_py_fl_stress_result {
    uint64_t pops, pushes, empty_pops;
    uint64_t duplicates;         /* a handle popped while another worker held it */
    uint64_t missing;            /* handles absent from the final drain */
    uint64_t unexpected;         /* drained values that were never pushed */
    uint64_t full_pushes;        /* pushes refused as full (must be 0) */
    uint64_t aborts, signals, escapes, exhausted;
    uint64_t elapsed_ns;
    int error;
};

/* Fill fl with handles 0..handles-1, run the workers (random pops, pushes
 * and batches of what they hold), push back what they hold, drain, and
 * account for every handle.  fl must be empty and of capacity >= handles. */
int rseq_py_freelist_stress(rseq_py_freelist *fl, const struct rseq_py_fl_stress_config *cfg,
                            struct rseq_py_fl_stress_result *r);

/* ---- C-level threaded benchmark --------------------------------------- */

enum rseq_py_bench_mode {
    RSEQ_PY_BENCH_RSEQ = 0,          /* rseq per-CPU counter (this library) */
    RSEQ_PY_BENCH_PERCPU_ATOMIC = 1, /* per-CPU slots, lock add, sched_getcpu */
    RSEQ_PY_BENCH_SHARED_ATOMIC = 2, /* one shared word, lock add */
    RSEQ_PY_BENCH_MUTEX = 3          /* one word under a pthread mutex */
};

/* ns per operation per thread and total throughput, threads running in
 * parallel for ops_per_thread each.  Returns 0 or an errno value. */
int rseq_py_counter_bench(int mode, uint32_t threads, uint64_t ops_per_thread,
                          double *ns_per_op, double *total_mops);

enum rseq_py_fl_bench_mode {
    RSEQ_PY_FL_BENCH_RSEQ = 0,    /* this library's freelist, rseq sections */
    RSEQ_PY_FL_BENCH_PERCPU_LOCK = 1, /* the same freelist on its owner path:
                                         per-CPU spinlocks (the fallback) */
    RSEQ_PY_FL_BENCH_MUTEX = 2    /* one array stack under a pthread mutex */
};

/* Each thread does ops_per_thread pop+push pairs (batch == 1) or
 * pop_many+push_many of `batch` handles; ns per handle moved per thread,
 * and total handle pairs per second in millions. */
int rseq_py_freelist_bench(int mode, uint32_t threads, uint64_t ops_per_thread, uint32_t batch,
                           double *ns_per_op, double *total_mops);

/* end of binding */

#ifdef __cplusplus
}
#endif
#endif
