/*
 * workers.c - the thread machinery of the stress drivers: start N pthreads
 * that begin together, optionally storm them with signals while they run,
 * join them.  One run at a time per process (the inject globals and the
 * signal handler are process-wide).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "internal.h"

HIDDEN volatile uint64_t rseq_py_inject_loops;
HIDDEN uint64_t rseq_py_inject_aborts;

HIDDEN rseq_py_counter *volatile rseq_py_handler_counter;
HIDDEN uint64_t rseq_py_handler_adds;

static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t signals_handled;

/* Workers wait at the gate until all exist, so they really run together. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t open;
    int is_open;
    int abandon; /* thread creation failed: workers do nothing */
};

struct start {
    struct gate *gate;
    void *(*fn)(void *);
    void *arg;
    volatile int done;
};

/* With a handler counter set, the handler counts too, on the thread it
 * interrupted, often in the middle of that thread's own section: the kernel
 * has already moved the interrupted section to its abort handler when this
 * runs (signal delivery is a preemption point), so the handler's section
 * and the restarted one never both commit against the same load. */
static void on_signal(int sig)
{
    (void)sig;
    rseq_py_counter *c = rseq_py_handler_counter;
    if (c != NULL) {
        rseq_py_counter_add(c, 0, 1);
        __atomic_fetch_add(&rseq_py_handler_adds, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&signals_handled, 1, __ATOMIC_RELAXED);
}

HIDDEN uint64_t rseq_py_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *trampoline(void *p)
{
    struct start *s = p;
    pthread_mutex_lock(&s->gate->lock);
    while (!s->gate->is_open)
        pthread_cond_wait(&s->gate->open, &s->gate->lock);
    int abandon = s->gate->abandon;
    pthread_mutex_unlock(&s->gate->lock);
    if (!abandon)
        s->fn(s->arg);
    __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

HIDDEN void rseq_py_run_lock(void) { pthread_mutex_lock(&run_lock); }
HIDDEN void rseq_py_run_unlock(void) { pthread_mutex_unlock(&run_lock); }

HIDDEN int rseq_py_run_workers(uint32_t n, void *(*fn)(void *), void *args, size_t arg_size,
                               uint32_t signal_interval_us, uint64_t *signals,
                               uint64_t *elapsed_ns)
{
    struct start *s = calloc(n, sizeof *s);
    pthread_t *t = calloc(n, sizeof *t);
    if (s == NULL || t == NULL) {
        free(s);
        free(t);
        return ENOMEM;
    }
    /* SIGURG: ignored by default (a straggler after the handler is restored
     * is harmless), unused by Python, and a standard signal, so pending ones
     * coalesce.  A realtime signal would queue one entry per send and, with
     * oversubscribed workers, exhaust the user's pending-signal limit. */
    int sig = SIGURG;
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (signal_interval_us)
        sigaction(sig, &sa, &old_sa);
    uint64_t handled0 = __atomic_load_n(&signals_handled, __ATOMIC_RELAXED);

    struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    int err = 0;
    uint32_t started = 0;
    for (; started < n; started++) {
        s[started] = (struct start){&gate, fn, (char *)args + started * arg_size, 0};
        if (pthread_create(&t[started], NULL, trampoline, &s[started]) != 0) {
            err = EAGAIN;
            break;
        }
    }
    uint64_t t0 = rseq_py_now_ns();
    pthread_mutex_lock(&gate.lock);
    gate.is_open = 1;
    gate.abandon = err != 0;
    pthread_cond_broadcast(&gate.open);
    pthread_mutex_unlock(&gate.lock);

    if (signal_interval_us && err == 0) {
        struct timespec gap = {.tv_sec = signal_interval_us / 1000000,
                               .tv_nsec = (long)(signal_interval_us % 1000000) * 1000};
        for (;;) {
            uint32_t live = 0;
            for (uint32_t i = 0; i < started; i++) {
                if (__atomic_load_n(&s[i].done, __ATOMIC_ACQUIRE))
                    continue;
                live++;
                pthread_kill(t[i], sig);
            }
            if (live == 0)
                break;
            nanosleep(&gap, NULL);
        }
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    *elapsed_ns = rseq_py_now_ns() - t0;
    if (signal_interval_us)
        sigaction(sig, &old_sa, NULL);
    *signals = __atomic_load_n(&signals_handled, __ATOMIC_RELAXED) - handled0;
    free(s);
    free(t);
    return err;
}
