/* Reports what glibc and the kernel say about rseq for the main thread and checks it.
 *   rseq_smoke               expects glibc to have registered rseq (a real kernel)
 *   rseq_smoke --expect-none expects no rseq at all (qemu-user: the syscall is ENOSYS)
 * Exit status 0 when the expectation holds. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

/* Older uapi headers lack these; the values are fixed by the kernel ABI. */
#ifndef AT_RSEQ_FEATURE_SIZE
#define AT_RSEQ_FEATURE_SIZE 27
#endif
#ifndef AT_RSEQ_ALIGN
#define AT_RSEQ_ALIGN 28
#endif

int main(int argc, char **argv)
{
    int expect_rseq = !(argc > 1 && strcmp(argv[1], "--expect-none") == 0);
    /* Read as 32-bit words: glibc 2.36's struct rseq has no node_id / mm_cid members. */
    volatile uint32_t *area = (volatile uint32_t *)((char *)__builtin_thread_pointer() + __rseq_offset);
    unsigned long feature_size = getauxval(AT_RSEQ_FEATURE_SIZE);
    unsigned long align = getauxval(AT_RSEQ_ALIGN);
    struct utsname u;
    uname(&u);

    /* A NULL area is rejected with EINVAL by a kernel that has rseq, ENOSYS otherwise. */
    long r = syscall(SYS_rseq, NULL, 0, 0, 0);
    int probe_errno = r == -1 ? errno : 0;

    int32_t cpu_id = 0;
    int getcpu = -1;
    /* cpu_id and sched_getcpu() can disagree if the thread migrates between the two reads. */
    for (int i = 0; i < 100; i++) {
        cpu_id = (int32_t)area[1];
        getcpu = sched_getcpu();
        if (cpu_id == getcpu && cpu_id == (int32_t)area[1])
            break;
    }

    printf("rseq_smoke: machine=%s kernel=%s __rseq_offset=%td __rseq_size=%u __rseq_flags=%u "
           "AT_RSEQ_FEATURE_SIZE=%lu AT_RSEQ_ALIGN=%lu rseq(NULL)=%s cpu_id_start=%u cpu_id=%d "
           "sched_getcpu=%d",
           u.machine, u.release, __rseq_offset, __rseq_size, __rseq_flags, feature_size, align,
           probe_errno == EINVAL ? "EINVAL" : probe_errno == ENOSYS ? "ENOSYS" : strerror(probe_errno),
           area[0], cpu_id, getcpu);
    if (feature_size >= 24)
        printf(" node_id=%u", area[5]);
    if (feature_size >= 28)
        printf(" mm_cid=%u", area[6]);
    printf("\n");

    const char *bad = NULL;
    if (expect_rseq) {
        if (__rseq_size < 20)
            bad = "glibc did not register rseq (__rseq_size < 20)";
        else if (cpu_id < 0)
            bad = "cpu_id < 0 although glibc registered";
        else if (cpu_id != getcpu)
            bad = "cpu_id disagrees with sched_getcpu()";
        else if (probe_errno != EINVAL)
            bad = "rseq(NULL) should fail with EINVAL";
    } else {
        if (__rseq_size != 0)
            bad = "__rseq_size should be 0 without rseq";
        else if (cpu_id != -2)
            bad = "cpu_id should be -2 (registration failed)";
        else if (probe_errno != ENOSYS)
            bad = "rseq should be ENOSYS";
    }
    printf("rseq_smoke: %s%s\n", bad ? "FAIL: " : "OK", bad ? bad : "");
    return bad ? 1 : 0;
}
