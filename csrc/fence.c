/*
 * fence.c - making another CPU's in-flight critical sections finish or abort.
 *
 * A section protects only the CPU it runs on.  To edit another CPU's data,
 * a slow path first sets that data's stop word (sections check it inside,
 * and give up) and then fences the CPU: after membarrier's RSEQ command
 * returns, every section that read stop == 0 there has either committed
 * or will abort when it next returns to user space.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define CMD_PRIVATE_EXPEDITED_RSEQ (1 << 7)
#define CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ (1 << 8)
#define CMD_FLAG_CPU (1 << 0)

static long sys_membarrier(int cmd, unsigned flags, int cpu)
{
#ifdef SYS_membarrier
    return syscall(SYS_membarrier, cmd, flags, cpu);
#else
    (void)cmd; (void)flags; (void)cpu;
    errno = ENOSYS;
    return -1;
#endif
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int registered_pid; /* registration belongs to a process (its mm) */
static int per_cpu_ok = 1; /* MEMBARRIER_CMD_FLAG_CPU works (Linux 5.10+) */

/* 0 when fences work in this process, else an errno value. */
HIDDEN int rseq_py_fence_init(void)
{
    int err = 0;
    pthread_mutex_lock(&lock);
    if (registered_pid != getpid()) {
        if (sys_membarrier(CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0)
            registered_pid = getpid();
        else
            err = errno;
    }
    pthread_mutex_unlock(&lock);
    return err;
}

HIDDEN void rseq_py_fence_cpu(uint32_t cpu)
{
    for (int tries = 0; tries < 3; tries++) {
        long r = per_cpu_ok ? sys_membarrier(CMD_PRIVATE_EXPEDITED_RSEQ, CMD_FLAG_CPU, (int)cpu)
                            : sys_membarrier(CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0);
        if (r == 0 || errno == ENXIO) /* ENXIO: CPU offline, nothing runs there */
            return;
        if (errno == EPERM) /* a forked child: registration is per process */
            rseq_py_fence_init();
        else if (errno == EINVAL && per_cpu_ok)
            per_cpu_ok = 0; /* before 5.10: fence every CPU instead */
    }
    /* Freelists are only built on sections after rseq_py_fence_init()
     * succeeded in this process, so this is unreachable short of the
     * kernel changing its mind; stopping is better than corrupting. */
    abort();
}
