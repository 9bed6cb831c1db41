/*
 * registration.c - the only place that knows where a thread's rseq area is.
 *
 * Either glibc (2.35+) registered every thread and exports where the area
 * sits (__rseq_offset from the thread pointer), or we register an area of
 * our own in each thread, lazily, and unregister it when the thread exits.
 * If neither works the process runs on the fallback backend and says why.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal.h"

#ifndef AT_RSEQ_FEATURE_SIZE
#define AT_RSEQ_FEATURE_SIZE 27
#endif
#ifndef AT_RSEQ_ALIGN
#define AT_RSEQ_ALIGN 28
#endif
#define RSEQ_FLAG_UNREGISTER 1
#define RSEQ_CPU_ID_REGISTRATION_FAILED ((uint32_t)-2)
#define ORIG_RSEQ_SIZE 32

_Static_assert(offsetof(struct rseq_py_area, cpu_id_start) == RSEQ_PY_AREA_CPU_ID_START, "abi");
_Static_assert(offsetof(struct rseq_py_area, cpu_id) == RSEQ_PY_AREA_CPU_ID, "abi");
_Static_assert(offsetof(struct rseq_py_area, rseq_cs) == RSEQ_PY_AREA_RSEQ_CS, "abi");
_Static_assert(offsetof(struct rseq_py_area, node_id) == RSEQ_PY_AREA_NODE_ID, "abi");
_Static_assert(offsetof(struct rseq_py_area, mm_cid) == RSEQ_PY_AREA_MM_CID, "abi");

HIDDEN int rseq_py_mode = RSEQ_PY_MODE_UNDECIDED;
HIDDEN ptrdiff_t rseq_py_glibc_offset;
HIDDEN __thread struct rseq_py_area *rseq_py_self_area __attribute__((tls_model("initial-exec")));
HIDDEN uint32_t rseq_py_nslots = 1;
HIDDEN struct rseq_py_counters_internal rseq_py_stat;

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_result;
static struct rseq_py_info info;
static char reason[512];
static pthread_key_t self_area_key;
static uint32_t self_len;   /* rseq_len passed to the kernel */
static uint32_t self_align;
static size_t self_bytes;    /* bytes mapped for each area: whole pages */
static uint32_t usable_size; /* bytes of the area the kernel fills */

/* A thread whose registration failed points here: cpu_id -2 makes every
 * section escape to the slow path without touching the kernel again. */
static struct rseq_py_area failed_area = {
    .cpu_id_start = 0, .cpu_id = RSEQ_CPU_ID_REGISTRATION_FAILED,
};

#if defined(__x86_64__)
#define ARCH_NAME "x86_64"
#elif defined(__aarch64__)
#define ARCH_NAME "aarch64"
#else
#define ARCH_NAME NULL
#endif

static long sys_rseq(void *area, uint32_t len, int flags, uint32_t sig)
{
#ifdef SYS_rseq
    return syscall(SYS_rseq, area, len, flags, sig);
#else
    (void)area; (void)len; (void)flags; (void)sig;
    errno = ENOSYS;
    return -1;
#endif
}

/* Highest possible CPU id + 1: cpu_id never reaches it, even after
 * hotplug.  /sys lists ranges like "0-63" or "0,2-5". */
static uint32_t possible_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_CONF);
    FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
    if (f) {
        char buf[256];
        if (fgets(buf, sizeof buf, f)) {
            long max = -1;
            for (char *p = buf; *p;) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p) { p++; continue; }
                if (v > max) max = v;
                p = end;
            }
            if (max + 1 > n) n = max + 1;
        }
        fclose(f);
    }
    if (n < 1) n = 1;
    if (n > 65536) n = 65536;
    return (uint32_t)n;
}

static void self_area_destructor(void *p)
{
    struct rseq_py_area *a = p;
    if (a == NULL || a == &failed_area)
        return;
    /* The kernel writes into the area on every return to this thread until
     * it is unregistered: unregister before the memory goes back. */
    if (sys_rseq(a, self_len, RSEQ_FLAG_UNREGISTER, RSEQ_PY_SIG) == 0)
        STAT_INC(self_unregistrations);
    /* Not NULL: a handler that counts on this exiting thread must not
     * register a new area that no destructor would release.  The rest of
     * its life takes the slow path. */
    rseq_py_self_area = &failed_area;
    munmap(a, self_bytes);
}

/* A zeroed area registered for the calling thread, or NULL with errno set.
 * mmap, not malloc: a counter add in a signal handler may get here (its
 * thread's first operation), and malloc is not async-signal-safe. */
static struct rseq_py_area *new_registered_area(void)
{
    struct rseq_py_area *a =
        mmap(NULL, self_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        return NULL;
    a->cpu_id = (uint32_t)-1;
    if (sys_rseq(a, self_len, 0, RSEQ_PY_SIG) != 0) {
        int e = errno;
        munmap(a, self_bytes);
        errno = e;
        return NULL;
    }
    /* The key's destructor unregisters and unmaps it at thread exit.  (glibc's
     * setspecific for an early key only stores into the thread's own
     * descriptor: no allocation, safe in a handler.) */
    if (pthread_setspecific(self_area_key, a) != 0) {
        sys_rseq(a, self_len, RSEQ_FLAG_UNREGISTER, RSEQ_PY_SIG);
        munmap(a, self_bytes);
        errno = ENOMEM;
        return NULL;
    }
    STAT_INC(self_registrations);
    rseq_py_self_area = a;
    return a;
}

/* First operation of a thread in self-registration mode.  Signals are
 * blocked meanwhile, so a handler that counts never finds the thread half
 * registered (area given to the kernel, rseq_py_self_area not yet set); a
 * handler that ran just before the block registered it completely, hence
 * the second look. */
HIDDEN struct rseq_py_area *rseq_py_self_register(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    struct rseq_py_area *a = rseq_py_self_area;
    if (a == NULL) {
        a = new_registered_area();
        if (a == NULL) {
            STAT_INC(self_registration_failures);
            rseq_py_self_area = a = &failed_area;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return a;
}

static int decide(int request)
{
    unsigned long kfs = getauxval(AT_RSEQ_FEATURE_SIZE);
    unsigned long kalign = getauxval(AT_RSEQ_ALIGN);
    /* Before 6.3 the kernel exports neither; it fills the original 20 bytes. */
    uint32_t kernel_fills = kfs ? (uint32_t)kfs : 20;
    const ptrdiff_t *off = dlsym(RTLD_DEFAULT, "__rseq_offset");
    const unsigned int *size = dlsym(RTLD_DEFAULT, "__rseq_size");

    info.arch = ARCH_NAME ? ARCH_NAME : "unknown";
    info.kernel_feature_size = (uint32_t)kfs;
    info.signature = RSEQ_PY_SIG;
    info.glibc_rseq_offset = off ? (int64_t)*off : 0;
    info.glibc_rseq_size = size ? (int64_t)*size : -1;
    rseq_py_nslots = possible_cpus();
    info.cpu_slots = rseq_py_nslots;

    if (request == RSEQ_PY_REQUEST_FALLBACK) {
        snprintf(reason, sizeof reason,
                 "fallback requested (RSEQ_PY_BACKEND=fallback): rseq is not used");
        return RSEQ_PY_MODE_FALLBACK;
    }
#ifdef RSEQ_PY_NO_ASM
    struct utsname u;
    uname(&u);
    snprintf(reason, sizeof reason,
             "no rseq critical sections for this architecture (%s): built with the fallback only",
             u.machine);
    info.arch = strdup(u.machine);
    return RSEQ_PY_MODE_FALLBACK;
#else
    if (size && *size > 0 && off) {
        struct rseq_py_area *a =
            (struct rseq_py_area *)((char *)__builtin_thread_pointer() + *off);
        if ((int32_t)__atomic_load_n(&a->cpu_id, __ATOMIC_RELAXED) < 0) {
            snprintf(reason, sizeof reason,
                     "glibc reports an rseq area (__rseq_size=%u) but this thread's cpu_id is %d",
                     *size, (int)a->cpu_id);
            return RSEQ_PY_MODE_FALLBACK;
        }
        /* glibc 2.35-2.40 report 20 or 32 whatever the kernel fills; only
         * AT_RSEQ_FEATURE_SIZE says whether node_id and mm_cid are live. */
        if (*size == 20 || *size == ORIG_RSEQ_SIZE)
            usable_size = kernel_fills < ORIG_RSEQ_SIZE ? kernel_fills : ORIG_RSEQ_SIZE;
        else
            usable_size = *size;
        info.area_size = *size;
        rseq_py_glibc_offset = *off;
        snprintf(reason, sizeof reason,
                 "glibc registered this thread's rseq area (__rseq_size=%u, __rseq_offset=%td)",
                 *size, *off);
        return RSEQ_PY_MODE_GLIBC;
    }

    self_align = kalign > ORIG_RSEQ_SIZE ? (uint32_t)kalign : ORIG_RSEQ_SIZE;
    /* A length >= the kernel's feature size lets newer kernels fill every
     * field they know; 32 is the minimum every kernel accepts. */
    self_len = kernel_fills > ORIG_RSEQ_SIZE ? kernel_fills : ORIG_RSEQ_SIZE;
    if (self_len != ORIG_RSEQ_SIZE)
        self_len = (self_len + self_align - 1) / self_align * self_align;
    usable_size = kernel_fills;
    info.area_size = self_len;
    {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t need = (self_len + self_align - 1) / self_align * self_align;
        self_bytes = (need + page - 1) / page * page; /* page-aligned, so self_align-aligned */
    }

    if (pthread_key_create(&self_area_key, self_area_destructor) != 0) {
        snprintf(reason, sizeof reason, "pthread_key_create failed: cannot unregister at thread exit");
        return RSEQ_PY_MODE_FALLBACK;
    }
    /* Probe in this thread: the outcome is the process's outcome, since
     * every thread meets the same kernel, seccomp filter and libc. */
    if (new_registered_area() == NULL) {
        int e = errno;
        const char *why =
            e == ENOSYS ? "the kernel (or an emulator such as valgrind or qemu-user, or a seccomp filter) does not implement rseq"
            : e == EPERM ? "rseq is forbidden here (seccomp or a security policy)"
            : (e == EBUSY || e == EINVAL) ? "this thread already has an rseq area registered by another component, and glibc does not say where"
            : "rseq registration failed";
        const char *name = e == ENOSYS ? "ENOSYS, " : e == EPERM ? "EPERM, "
                         : e == EBUSY  ? "EBUSY, "  : e == EINVAL ? "EINVAL, " : "";
        snprintf(reason, sizeof reason, "%s (rseq: %s%s; glibc __rseq_size=%lld)", why, name,
                 strerror(e), (long long)info.glibc_rseq_size);
        return RSEQ_PY_MODE_FALLBACK;
    }
    snprintf(reason, sizeof reason,
             "glibc did not register rseq (__rseq_size=%lld, e.g. GLIBC_TUNABLES=glibc.pthread.rseq=0 "
             "or a libc without rseq support): rseq_py registers each thread's area itself",
             (long long)info.glibc_rseq_size);
    return RSEQ_PY_MODE_SELF;
#endif
}

int rseq_py_init(int request)
{
    pthread_mutex_lock(&init_lock);
    if (rseq_py_mode == RSEQ_PY_MODE_UNDECIDED) {
        int mode = decide(request);
        info.backend = mode == RSEQ_PY_MODE_FALLBACK ? RSEQ_PY_BACKEND_FALLBACK : RSEQ_PY_BACKEND_RSEQ;
        info.registrar = mode == RSEQ_PY_MODE_GLIBC  ? RSEQ_PY_REGISTRAR_GLIBC
                         : mode == RSEQ_PY_MODE_SELF ? RSEQ_PY_REGISTRAR_SELF
                                                     : RSEQ_PY_REGISTRAR_NONE;
        if (mode == RSEQ_PY_MODE_FALLBACK)
            usable_size = 0;
        info.feature_size = usable_size;
        info.has_node_id = usable_size >= RSEQ_PY_AREA_NODE_ID + 4;
        info.has_mm_cid = usable_size >= RSEQ_PY_AREA_MM_CID + 4;
        info.reason = reason;
        init_result = (request == RSEQ_PY_REQUEST_RSEQ && mode == RSEQ_PY_MODE_FALLBACK) ? -1 : 0;
        /* Published last: readers of rseq_py_mode see a complete info. */
        __atomic_store_n(&rseq_py_mode, mode, __ATOMIC_RELEASE);
    }
    int r = init_result;
    pthread_mutex_unlock(&init_lock);
    return r;
}

void rseq_py_get_info(struct rseq_py_info *out)
{
    *out = info;
}

void rseq_py_get_stats(struct rseq_py_stats *out)
{
    out->escapes = __atomic_load_n(&rseq_py_stat.escapes, __ATOMIC_RELAXED);
    out->exhausted = __atomic_load_n(&rseq_py_stat.exhausted, __ATOMIC_RELAXED);
    out->slow_path_adds = __atomic_load_n(&rseq_py_stat.slow_path_adds, __ATOMIC_RELAXED);
    out->self_registrations = __atomic_load_n(&rseq_py_stat.self_registrations, __ATOMIC_RELAXED);
    out->self_unregistrations = __atomic_load_n(&rseq_py_stat.self_unregistrations, __ATOMIC_RELAXED);
    out->self_registration_failures =
        __atomic_load_n(&rseq_py_stat.self_registration_failures, __ATOMIC_RELAXED);
    out->owner_takeovers = __atomic_load_n(&rseq_py_stat.owner_takeovers, __ATOMIC_RELAXED);
    out->moves_recovered = __atomic_load_n(&rseq_py_stat.moves_recovered, __ATOMIC_RELAXED);
    out->self_registrations_live =
        (int64_t)(out->self_registrations - out->self_unregistrations);
}

/* CPU for code outside a section: any valid CPU will do, because whatever
 * it indexes is only ever updated atomically. */
HIDDEN int rseq_py_slow_cpu(const struct rseq_py_area *area)
{
    if (area != NULL) {
        int32_t cpu = (int32_t)__atomic_load_n(&area->cpu_id, __ATOMIC_RELAXED);
        if (cpu >= 0)
            return cpu;
    }
    int cpu = sched_getcpu();
    return cpu < 0 ? 0 : cpu;
}

int rseq_py_current_cpu(void)
{
    return rseq_py_slow_cpu(rseq_py_area());
}

int rseq_py_current_mm_cid(void)
{
    struct rseq_py_area *a = rseq_py_area();
    if (!info.has_mm_cid || a == NULL || (int32_t)a->cpu_id < 0)
        return -1;
    return (int)__atomic_load_n(&a->mm_cid, __ATOMIC_RELAXED);
}

int rseq_py_current_numa_node(void)
{
    struct rseq_py_area *a = rseq_py_area();
    if (info.has_node_id && a != NULL && (int32_t)a->cpu_id >= 0)
        return (int)__atomic_load_n(&a->node_id, __ATOMIC_RELAXED);
    unsigned cpu, node;
    if (syscall(SYS_getcpu, &cpu, &node, NULL) != 0)
        return 0;
    return (int)node;
}
