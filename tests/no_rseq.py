"""Run a program in a process where the rseq system call fails with ENOSYS.

    python tests/no_rseq.py -m pytest tests/test_info.py      # this Python, these arguments
    python tests/no_rseq.py script.py args...
    python tests/no_rseq.py --exec PROGRAM args...            # any program

A seccomp filter (classic BPF, installed with prctl: no libseccomp needed)
answers rseq with ENOSYS, as a kernel without rseq would, and allows every
other system call.  The filter is installed here and then this process
exec()s the command, so it holds from the command's first instruction:
glibc's own registration at startup fails too (so __rseq_size is 0), and
every child process and thread inherits it.  Pair it with
GLIBC_TUNABLES=glibc.pthread.rseq=0 to make sure nothing registered before.

Importable too: ``install()`` applies the filter to the calling process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys

# <linux/prctl.h>, <linux/seccomp.h>, <linux/filter.h>, <linux/audit.h>
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x05 | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
BPF_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K
SECCOMP_DATA_NR = 0  # offsetof(struct seccomp_data, nr)
SECCOMP_DATA_ARCH = 4  # offsetof(struct seccomp_data, arch)

AUDIT_ARCH_64BIT_LE = 0x80000000 | 0x40000000
# machine: (AUDIT_ARCH_*, __NR_rseq)
ARCHES = {
    "x86_64": (AUDIT_ARCH_64BIT_LE | 62, 334),  # AUDIT_ARCH_X86_64 = EM_X86_64
    "aarch64": (AUDIT_ARCH_64BIT_LE | 183, 293),  # AUDIT_ARCH_AARCH64 = EM_AARCH64
}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class sock_filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class sock_fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(sock_filter))]


def machine() -> str:
    m = platform.machine().lower()
    return ALIASES.get(m, m)


def program(audit_arch: int, nr: int) -> list[tuple[int, int, int, int]]:
    """rseq of this architecture -> ENOSYS; anything else (other syscalls,
    other ABIs such as i386 compat) -> allowed."""
    return [
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH),       # 0: A = arch
        (BPF_JEQ_K, 0, 3, audit_arch),                 # 1: not ours -> 5
        (BPF_LD_W_ABS, 0, 0, SECCOMP_DATA_NR),         # 2: A = nr
        (BPF_JEQ_K, 0, 1, nr),                         # 3: not rseq -> 5
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),  # 4
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),          # 5
    ]


def rseq_errno() -> int:
    """errno of rseq(NULL, 0, 0, 0): EINVAL where the kernel has rseq,
    ENOSYS where it has not (or this filter is installed)."""
    libc = ctypes.CDLL(None, use_errno=True)
    nr = ARCHES[machine()][1]
    libc.syscall.restype = ctypes.c_long
    if libc.syscall(ctypes.c_long(nr), None, ctypes.c_uint32(0), ctypes.c_int(0),
                    ctypes.c_uint32(0)) == 0:
        return 0
    return ctypes.get_errno()


def install() -> None:
    """Apply the filter to this process (and everything it starts)."""
    arch = machine()
    if arch not in ARCHES:
        raise SystemExit(f"no_rseq: no rseq syscall number known for {arch!r}")
    insns = program(*ARCHES[arch])
    filt = (sock_filter * len(insns))(*[sock_filter(*i) for i in insns])
    prog = sock_fprog(len(insns), filt)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    # Unprivileged processes may install a filter only with no_new_privs.
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise SystemExit(f"no_rseq: prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(e)}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        e = ctypes.get_errno()
        raise SystemExit(f"no_rseq: prctl(PR_SET_SECCOMP): {os.strerror(e)} "
                         "(a kernel without CONFIG_SECCOMP_FILTER?)")
    got = rseq_errno()
    if got != errno.ENOSYS:
        raise SystemExit(f"no_rseq: the filter is installed but rseq gives errno {got}, not ENOSYS")


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        raise SystemExit(2)
    if argv[0] == "--exec":
        if len(argv) < 2:
            raise SystemExit("no_rseq: --exec needs a program")
        cmd = argv[1:]
    else:
        cmd = [sys.executable, *argv]
    install()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        raise SystemExit(f"no_rseq: cannot run {cmd[0]!r}: {e}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
