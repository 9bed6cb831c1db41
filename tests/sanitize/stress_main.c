/*
 * stress_main.c - the C stress drivers as a standalone program, for the
 * sanitizer (ASan + UBSan) and valgrind builds of tests/test_sanitizers.py.
 *
 * Linked directly with the C core (csrc/ *.c) and the critical sections
 * (asm/<machine>/ *.S), or built with -DRSEQ_PY_NO_ASM where there are none;
 * uses the public header only.
 *
 *   stress_main [--scale F] [--request auto|fallback|rseq]
 *
 * --scale multiplies every workload (valgrind runs use a small one).
 * Prints one "INFO" line (backend, registrar, reason), one "RUN" line per
 * run (exact totals, aborts, signals), one "STATS" line, then "ALL OK"; exits
 * 1 on the first wrong total (and on any check that fails), 0 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rseq_py.h"

static double scale = 1.0;
static int failures;
static struct rseq_py_info info;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static uint64_t scaled(uint64_t n)
{
    uint64_t v = (uint64_t)((double)n * scale);
    return v ? v : 1;
}

static uint32_t allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? (uint32_t)n : 1;
}

static const char *variant_name(int v)
{
    return v == RSEQ_PY_VARIANT_RSEQ          ? "rseq"
           : v == RSEQ_PY_VARIANT_RSEQ_INJECT ? "rseq_inject"
           : v == RSEQ_PY_VARIANT_ATOMIC      ? "atomic"
                                              : "?";
}

/* Section variants cannot run in a build without sections. */
static int variant_available(int v)
{
#ifdef RSEQ_PY_NO_ASM
    return v == RSEQ_PY_VARIANT_ATOMIC;
#else
    (void)v;
    return 1;
#endif
}

/* The kernel aborts sections only when a preemption or signal lands inside
 * one: a matter of time.  The inject variant on the rseq backend is rerun
 * (each run exact on its own) until one saw an abort, a few times at most. */
static int want_aborts(int variant)
{
    return variant == RSEQ_PY_VARIANT_RSEQ_INJECT && info.backend == RSEQ_PY_BACKEND_RSEQ;
}

/* ---- counters ------------------------------------------------------------ */

static void counter_run(const char *label, rseq_py_counter *c, int variant, uint32_t threads,
                        uint64_t ops, uint64_t loops, uint32_t signal_us)
{
    if (!variant_available(variant)) {
        printf("SKIP counter %s variant=%s (no sections in this build)\n", label,
               variant_name(variant));
        return;
    }
    for (int attempt = 1;; attempt++) {
        struct rseq_py_stress_config cfg = {
            .threads = threads, .ops_per_thread = ops, .variant = variant,
            .inject_loops = loops, .signal_interval_us = signal_us,
        };
        struct rseq_py_stress_result r;
        int64_t before = 0;
        for (uint32_t i = 0; i < rseq_py_counter_size(c); i++)
            before += rseq_py_counter_value(c, i);
        int err = rseq_py_counter_stress(c, &cfg, &r);
        int64_t after = 0;
        for (uint32_t i = 0; i < rseq_py_counter_size(c); i++)
            after += rseq_py_counter_value(c, i);
        /* What the workers add: worker i adds (i % 7 + 1) per op (stress.c). */
        int64_t want = 0;
        for (uint32_t i = 0; i < threads; i++)
            want += (int64_t)(i % 7 + 1) * (int64_t)ops;
        printf("RUN counter %s variant=%s threads=%u ops=%llu loops=%llu signal_us=%u "
               "expected=%lld observed=%lld aborts=%llu signals=%llu escapes=%llu "
               "exhausted=%llu elapsed_ms=%.1f error=%d attempt=%d\n",
               label, variant_name(variant), threads, (unsigned long long)ops,
               (unsigned long long)loops, signal_us, (long long)r.expected,
               (long long)r.observed, (unsigned long long)r.aborts,
               (unsigned long long)r.signals, (unsigned long long)r.escapes,
               (unsigned long long)r.exhausted, r.elapsed_ns / 1e6, r.error, attempt);
        fflush(stdout);
        CHECK(err == 0 && r.error == 0, "stress error %d", r.error);
        /* expected may include adds made by signal handlers (newer drivers);
         * the workers' own share is known exactly. */
        CHECK(r.expected >= want, "expected %lld < workers' %lld", (long long)r.expected,
              (long long)want);
        CHECK(r.observed == r.expected, "observed %lld != expected %lld", (long long)r.observed,
              (long long)r.expected);
        CHECK(after - before == r.observed, "counter gained %lld, driver saw %lld",
              (long long)(after - before), (long long)r.observed);
        if (!want_aborts(variant))
            CHECK(r.aborts == 0, "%llu aborts without the inject section",
                  (unsigned long long)r.aborts);
        if (failures || !want_aborts(variant) || r.aborts > 0)
            return;
        if (attempt == 5) {
            CHECK(r.aborts > 0, "no abort in %d inject runs", attempt);
            return;
        }
    }
}

static void counters(uint32_t threads)
{
    rseq_py_counter *c = rseq_py_counter_new(3);
    CHECK(c != NULL, "counter_new");
    if (c == NULL)
        return;
    counter_run("private", c, RSEQ_PY_VARIANT_RSEQ, threads, scaled(100000), 0, 200);
    counter_run("private", c, RSEQ_PY_VARIANT_RSEQ_INJECT, threads, scaled(30000), 200, 200);
    counter_run("private", c, RSEQ_PY_VARIANT_ATOMIC, threads, scaled(50000), 0, 200);
    /* reset takes out everything the runs added, and leaves zero. */
    int64_t total = 0, removed = 0;
    for (uint32_t i = 0; i < 3; i++) {
        total += rseq_py_counter_value(c, i);
        removed += rseq_py_counter_reset(c, i);
    }
    CHECK(removed == total, "reset removed %lld of %lld", (long long)removed, (long long)total);
    for (uint32_t i = 0; i < 3; i++)
        CHECK(rseq_py_counter_value(c, i) == 0, "counter %u after reset", i);
    rseq_py_counter_free(c);
}

/* ---- freelists ----------------------------------------------------------- */

struct fl_case {
    int variant;
    uint64_t handles;
    uint32_t per_cpu, max_batch, max_held;
    uint64_t loops;
    uint32_t signal_us;
    uint64_t ops;
};

static void check_fl_result(const char *label, const struct fl_case *k,
                            const struct rseq_py_fl_stress_result *r, int attempt, int external)
{
    printf("RUN freelist %s variant=%s handles=%llu per_cpu=%u max_batch=%u max_held=%u "
           "pops=%llu pushes=%llu empty_pops=%llu duplicates=%llu missing=%llu unexpected=%llu "
           "full_pushes=%llu aborts=%llu signals=%llu escapes=%llu exhausted=%llu "
           "elapsed_ms=%.1f error=%d attempt=%d\n",
           label, variant_name(k->variant), (unsigned long long)k->handles, k->per_cpu,
           k->max_batch, k->max_held, (unsigned long long)r->pops, (unsigned long long)r->pushes,
           (unsigned long long)r->empty_pops, (unsigned long long)r->duplicates,
           (unsigned long long)r->missing, (unsigned long long)r->unexpected,
           (unsigned long long)r->full_pushes, (unsigned long long)r->aborts,
           (unsigned long long)r->signals, (unsigned long long)r->escapes,
           (unsigned long long)r->exhausted, r->elapsed_ns / 1e6, r->error, attempt);
    fflush(stdout);
    CHECK(r->error == 0, "stress error %d", r->error);
    CHECK(r->duplicates == 0 && r->missing == 0 && r->unexpected == 0 && r->full_pushes == 0,
          "duplicates %llu missing %llu unexpected %llu full_pushes %llu",
          (unsigned long long)r->duplicates, (unsigned long long)r->missing,
          (unsigned long long)r->unexpected, (unsigned long long)r->full_pushes);
    CHECK(r->pops == r->pushes, "pops %llu != pushes %llu", (unsigned long long)r->pops,
          (unsigned long long)r->pushes);
    CHECK(r->pops > 0, "no handle moved");
    if (!external && k->handles > (uint64_t)k->max_held * 4 * allowed_cpus())
        CHECK(r->empty_pops == 0, "%llu empty pops while handles remained",
              (unsigned long long)r->empty_pops);
    if (!want_aborts(k->variant))
        CHECK(r->aborts == 0, "%llu aborts without the inject section",
              (unsigned long long)r->aborts);
}

static void freelist_run(const char *label, const struct fl_case *k, uint32_t threads)
{
    if (!variant_available(k->variant)) {
        printf("SKIP freelist %s variant=%s (no sections in this build)\n", label,
               variant_name(k->variant));
        return;
    }
    rseq_py_freelist *fl = rseq_py_freelist_new(k->handles, k->per_cpu);
    CHECK(fl != NULL, "freelist_new(%llu, %u)", (unsigned long long)k->handles, k->per_cpu);
    if (fl == NULL)
        return;
    for (int attempt = 1;; attempt++) {
        struct rseq_py_fl_stress_config cfg = {
            .threads = threads, .ops_per_thread = k->ops, .variant = k->variant,
            .inject_loops = k->loops, .signal_interval_us = k->signal_us,
            .handles = k->handles, .max_batch = k->max_batch, .max_held = k->max_held,
        };
        struct rseq_py_fl_stress_result r;
        rseq_py_freelist_stress(fl, &cfg, &r);
        check_fl_result(label, k, &r, attempt, 0);
        CHECK(rseq_py_freelist_len(fl) == 0, "left %llu handles after the drain",
              (unsigned long long)rseq_py_freelist_len(fl));
        if (failures || !want_aborts(k->variant) || r.aborts > 0)
            break;
        if (attempt == 5) {
            CHECK(r.aborts > 0, "no abort in %d inject runs", attempt);
            break;
        }
    }
    rseq_py_freelist_free(fl);
}

static void freelists(uint32_t threads)
{
    const struct fl_case cases[] = {
        /* plenty: fast paths and batches */
        {RSEQ_PY_VARIANT_RSEQ, 2000, 64, 16, 64, 0, 200, scaled(20000)},
        /* scarce: empties, refills, steals */
        {RSEQ_PY_VARIANT_RSEQ, 100, 8, 8, 32, 0, 200, scaled(20000)},
        {RSEQ_PY_VARIANT_RSEQ_INJECT, 2000, 16, 16, 64, 200, 200, scaled(10000)},
        {RSEQ_PY_VARIANT_RSEQ_INJECT, 64, 4, 4, 8, 100, 200, scaled(10000)},
        /* one handle fought over, single ops only */
        {RSEQ_PY_VARIANT_RSEQ_INJECT, 1, 1, 1, 1, 100, 200, scaled(5000)},
        /* the fallback (owner) path */
        {RSEQ_PY_VARIANT_ATOMIC, 100, 8, 8, 32, 0, 200, scaled(20000)},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        freelist_run("private", &cases[i], threads);

    /* Single operations and their edge cases on a small private freelist. */
    rseq_py_freelist *fl = rseq_py_freelist_new(4, 2);
    CHECK(fl != NULL, "freelist_new(4, 2)");
    if (fl == NULL)
        return;
    int64_t out = 0, buf[8];
    CHECK(rseq_py_freelist_pop(fl, &out) == -1, "pop from empty");
    CHECK(rseq_py_freelist_pop_value(fl) == INT64_MIN && rseq_py_freelist_was_empty() == 1,
          "pop_value from empty");
    for (int64_t h = 0; h < 4; h++)
        CHECK(rseq_py_freelist_push(fl, INT64_MIN + h) == 0, "push %lld", (long long)h);
    CHECK(rseq_py_freelist_push(fl, 7) == -1, "push beyond capacity");
    CHECK(rseq_py_freelist_len(fl) == 4, "len %llu", (unsigned long long)rseq_py_freelist_len(fl));
    int64_t v = rseq_py_freelist_pop_value(fl);
    CHECK(rseq_py_freelist_was_empty() == 0 && v >= INT64_MIN && v < INT64_MIN + 4,
          "pop_value %lld", (long long)v);
    CHECK(rseq_py_freelist_push(fl, v) == 0, "push back");
    uint64_t n = rseq_py_freelist_pop_many(fl, buf, 8);
    CHECK(n == 4, "pop_many got %llu", (unsigned long long)n);
    CHECK(rseq_py_freelist_push_many(fl, buf, n) == n, "push_many back");
    n = rseq_py_freelist_drain(fl, buf);
    uint64_t seen = 0;
    for (uint64_t i = 0; i < n; i++)
        if (buf[i] >= INT64_MIN && buf[i] < INT64_MIN + 4)
            seen |= 1u << (buf[i] - INT64_MIN);
    CHECK(n == 4 && seen == 0xf, "drain got %llu handles (mask %llx)", (unsigned long long)n,
          (unsigned long long)seen);
    rseq_py_freelist_free(fl);
    printf("RUN freelist single-ops exact=%d\n", failures == 0);
}

/* ---- shared segments ----------------------------------------------------- */

static void *map_shared(uint64_t size)
{
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? NULL : m;
}

static void shared_counter(uint32_t threads)
{
    uint64_t size = rseq_py_counter_shared_size(4);
    CHECK(size > RSEQ_PY_SEGMENT_HEADER, "counter_shared_size %llu", (unsigned long long)size);
    void *mem = map_shared(size);
    CHECK(mem != NULL, "mmap %llu", (unsigned long long)size);
    if (mem == NULL)
        return;
    rseq_py_counter *a = rseq_py_counter_create_at(mem, size, 4);
    char why[256];
    CHECK(rseq_py_segment_check(mem, size, RSEQ_PY_KIND_COUNTER, why, sizeof why) == RSEQ_PY_SEG_OK,
          "segment_check");
    CHECK(rseq_py_segment_check(mem, size, RSEQ_PY_KIND_FREELIST, why, sizeof why) ==
              RSEQ_PY_SEG_KIND, "a counter checked as a freelist");
    CHECK(rseq_py_segment_check(mem, size - 8, RSEQ_PY_KIND_COUNTER, why, sizeof why) ==
              RSEQ_PY_SEG_TRUNCATED, "truncated counter: %s", why);
    CHECK(rseq_py_freelist_attach_at(mem, size) == NULL, "freelist attached to a counter");
    rseq_py_counter *b = rseq_py_counter_attach_at(mem, size);
    CHECK(a != NULL && b != NULL, "create_at/attach_at");
    if (a == NULL || b == NULL)
        goto out;
    CHECK(rseq_py_counter_size(b) == 4, "attached size %u", rseq_py_counter_size(b));
    /* Work through the attached descriptor, read through the creator's. */
    counter_run("shared", b, RSEQ_PY_VARIANT_RSEQ_INJECT, threads, scaled(20000), 100, 200);
    counter_run("shared", b, RSEQ_PY_VARIANT_ATOMIC, threads, scaled(20000), 0, 200);
    /* A child process adds through its own attach. */
    int64_t vals[4], before = 0, after = 0;
    rseq_py_counter_values(a, vals);
    for (int i = 0; i < 4; i++)
        before += vals[i];
    pid_t pid = fork();
    if (pid == 0) {
        rseq_py_counter *c = rseq_py_counter_attach_at(mem, size);
        if (c == NULL)
            _exit(2);
        for (int i = 0; i < 1000; i++)
            rseq_py_counter_add(c, 3, 2);
        rseq_py_counter_free(c);
        /* The inherited descriptors are this process's copies: freed here
         * too, or the child's leak check (valgrind) reports them. */
        rseq_py_counter_free(b);
        rseq_py_counter_free(a);
        _exit(0);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0, "child status %d", status);
    int64_t per_cpu[4096];
    int64_t sum = 0;
    uint32_t slots = rseq_py_counter_cpu_slots(a);
    if (slots <= 4096) {
        rseq_py_counter_per_cpu(a, 3, per_cpu);
        for (uint32_t i = 0; i < slots; i++)
            sum += per_cpu[i];
    }
    rseq_py_counter_values(a, vals);
    for (int i = 0; i < 4; i++)
        after += vals[i];
    CHECK(slots > 4096 || sum == vals[3], "per-CPU sum %lld != value %lld", (long long)sum,
          (long long)vals[3]);
    printf("RUN counter shared-fork expected=2000 observed=%lld\n", (long long)(after - before));
    CHECK(after - before == 2000, "the child's adds: %lld, not 2000", (long long)(after - before));
out:
    rseq_py_counter_free(b);
    rseq_py_counter_free(a);
    munmap(mem, size);
}

static void shared_freelist(uint32_t threads)
{
    const uint64_t cap = 512;
    uint64_t size = rseq_py_freelist_shared_size(cap, 16);
    CHECK(size > RSEQ_PY_SEGMENT_HEADER, "freelist_shared_size %llu", (unsigned long long)size);
    void *mem = map_shared(size);
    CHECK(mem != NULL, "mmap %llu", (unsigned long long)size);
    if (mem == NULL)
        return;
    rseq_py_freelist *a = rseq_py_freelist_create_at(mem, size, cap, 16);
    rseq_py_freelist *b = rseq_py_freelist_attach_at(mem, size);
    CHECK(a != NULL && b != NULL, "create_at/attach_at");
    CHECK(rseq_py_counter_attach_at(mem, size) == NULL, "counter attached to a freelist");
    int64_t *all = malloc(cap * sizeof *all);
    CHECK(all != NULL, "malloc");
    if (a == NULL || b == NULL || all == NULL)
        goto out;
    CHECK(rseq_py_freelist_capacity(b) == cap && rseq_py_freelist_per_cpu(b) == 16,
          "attached geometry");
    for (uint64_t h = 0; h < cap; h++)
        all[h] = (int64_t)h;
    CHECK(rseq_py_freelist_push_many(a, all, cap) == cap, "fill");
    /* The workers churn through the attached descriptor (external: filled
     * and checked here, through the creator's). */
    const int variants[] = {RSEQ_PY_VARIANT_RSEQ_INJECT, RSEQ_PY_VARIANT_ATOMIC};
    for (size_t v = 0; v < 2; v++) {
        if (!variant_available(variants[v]))
            continue;
        struct fl_case k = {variants[v], cap, 16, 8, 16, 100, 200, scaled(10000)};
        struct rseq_py_fl_stress_config cfg = {
            .threads = threads, .ops_per_thread = k.ops, .variant = k.variant,
            .inject_loops = k.loops, .signal_interval_us = k.signal_us,
            .handles = cap, .max_batch = k.max_batch, .max_held = k.max_held, .external = 1,
        };
        struct rseq_py_fl_stress_result r;
        rseq_py_freelist_stress(b, &cfg, &r);
        check_fl_result("shared", &k, &r, 1, 1);
        CHECK(rseq_py_freelist_len(a) == cap, "len %llu after the run",
              (unsigned long long)rseq_py_freelist_len(a));
    }
    /* A child pops half through its own attach and pushes them back. */
    pid_t pid = fork();
    if (pid == 0) {
        rseq_py_freelist *c = rseq_py_freelist_attach_at(mem, size);
        int64_t got[256];
        if (c == NULL || rseq_py_freelist_pop_many(c, got, 256) != 256 ||
            rseq_py_freelist_push_many(c, got, 256) != 256)
            _exit(2);
        rseq_py_freelist_free(c);
        rseq_py_freelist_free(b);
        rseq_py_freelist_free(a);
        free(all);
        _exit(0);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
              WEXITSTATUS(status) == 0, "child status %d", status);
    uint64_t n = rseq_py_freelist_drain(a, all);
    uint8_t seen[512] = {0};
    uint64_t dup = 0, bad = 0, missing = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (all[i] < 0 || (uint64_t)all[i] >= cap)
            bad++;
        else if (seen[all[i]]++)
            dup++;
    }
    for (uint64_t h = 0; h < cap; h++)
        missing += !seen[h];
    printf("RUN freelist shared-drain drained=%llu duplicates=%llu missing=%llu unexpected=%llu\n",
           (unsigned long long)n, (unsigned long long)dup, (unsigned long long)missing,
           (unsigned long long)bad);
    CHECK(n == cap && dup == 0 && missing == 0 && bad == 0, "shared drain");
    CHECK(rseq_py_freelist_len(b) == 0, "len after drain");
out:
    free(all);
    rseq_py_freelist_free(b);
    rseq_py_freelist_free(a);
    munmap(mem, size);
}

int main(int argc, char **argv)
{
    int request = RSEQ_PY_REQUEST_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
            scale = strtod(argv[++i], NULL);
        } else if (!strcmp(argv[i], "--request") && i + 1 < argc) {
            const char *r = argv[++i];
            request = !strcmp(r, "fallback") ? RSEQ_PY_REQUEST_FALLBACK
                      : !strcmp(r, "rseq")   ? RSEQ_PY_REQUEST_RSEQ
                                             : RSEQ_PY_REQUEST_AUTO;
        } else {
            fprintf(stderr, "usage: %s [--scale F] [--request auto|fallback|rseq]\n", argv[0]);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (rseq_py_init(request) != 0) {
        fprintf(stderr, "FAIL rseq_py_init(%d)\n", request);
        return 1;
    }
    rseq_py_get_info(&info);
    printf("INFO backend=%s registrar=%s arch=%s feature_size=%u cpu_slots=%u allowed_cpus=%u "
           "reason=%s\n",
           info.backend == RSEQ_PY_BACKEND_RSEQ ? "rseq" : "fallback",
           info.registrar == RSEQ_PY_REGISTRAR_GLIBC  ? "glibc"
           : info.registrar == RSEQ_PY_REGISTRAR_SELF ? "rseq_py"
                                                      : "none",
           info.arch, info.feature_size, info.cpu_slots, allowed_cpus(), info.reason);

    /* Oversubscribed: 4 threads per CPU guarantee preemption in sections. */
    uint32_t threads = 4 * allowed_cpus();
    counters(threads);
    if (!failures)
        freelists(threads);
    if (!failures)
        shared_counter(threads);
    if (!failures)
        shared_freelist(threads);

    /* Every worker thread has exited: in self-registration mode each one
     * unregistered its area (only this thread's may remain). */
    struct rseq_py_stats s;
    rseq_py_get_stats(&s);
    printf("STATS escapes=%llu exhausted=%llu slow_path_adds=%llu self_registrations=%llu "
           "self_unregistrations=%llu self_registration_failures=%llu live=%lld\n",
           (unsigned long long)s.escapes, (unsigned long long)s.exhausted,
           (unsigned long long)s.slow_path_adds, (unsigned long long)s.self_registrations,
           (unsigned long long)s.self_unregistrations,
           (unsigned long long)s.self_registration_failures, (long long)s.self_registrations_live);
    if (info.registrar == RSEQ_PY_REGISTRAR_SELF) {
        CHECK(s.self_registrations > threads, "only %llu self registrations",
              (unsigned long long)s.self_registrations);
        CHECK(s.self_registrations_live <= 1, "%lld registrations outlived their threads",
              (long long)s.self_registrations_live);
        CHECK(s.self_registration_failures == 0, "registration failures");
    } else {
        CHECK(s.self_registrations == 0, "registered threads itself while %s",
              info.registrar == RSEQ_PY_REGISTRAR_GLIBC ? "glibc did" : "on the fallback");
    }
    if (failures) {
        printf("FAILED %d check(s)\n", failures);
        return 1;
    }
    printf("ALL OK\n");
    return 0;
}
