"""info() and current_*() are checked against independent sources: glibc's own
exports, the auxiliary vector, /sys, and the getcpu system call via ctypes."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import threading

import pytest

import rseq_py
from support import allowed_cpus, run_python

libc = ctypes.CDLL(None, use_errno=True)
libc.getauxval.restype = ctypes.c_ulong
libc.getauxval.argtypes = [ctypes.c_ulong]
SYS_RSEQ = {"x86_64": 334, "aarch64": 293}.get(platform.machine())
SYS_GETCPU = {"x86_64": 309, "aarch64": 168}.get(platform.machine())


def glibc_rseq_size() -> int:
    try:
        return ctypes.c_uint.in_dll(libc, "__rseq_size").value
    except ValueError:
        return -1


def kernel_has_rseq() -> bool:
    """rseq(NULL, 0, 0, 0) is EINVAL where the syscall exists, ENOSYS where not."""
    assert SYS_RSEQ is not None
    libc.syscall(SYS_RSEQ, None, 0, 0, 0)
    return ctypes.get_errno() != errno.ENOSYS


def getcpu() -> tuple[int, int]:
    cpu, node = ctypes.c_uint(), ctypes.c_uint()
    assert libc.syscall(SYS_GETCPU, ctypes.byref(cpu), ctypes.byref(node), None) == 0
    return cpu.value, node.value


def possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def expected_backend() -> tuple[str, str | None]:
    if os.environ.get("RSEQ_PY_BACKEND") == "fallback":
        return "fallback", None
    if glibc_rseq_size() > 0:
        return "rseq", "glibc"
    return ("rseq", "rseq_py") if kernel_has_rseq() else ("fallback", None)


def test_info_is_truthful():
    i = rseq_py.info()
    backend, registered_by = expected_backend()
    assert (i.backend, i.registered_by) == (backend, registered_by), i.reason
    assert i.arch == platform.machine()
    assert i.cpu_slots == possible_cpus()
    assert i.glibc_rseq_size == glibc_rseq_size()
    assert i.kernel_feature_size == libc.getauxval(27)  # AT_RSEQ_FEATURE_SIZE
    assert i.reason
    if i.backend == "fallback":
        assert (i.feature_size, i.has_node_id, i.has_mm_cid) == (0, False, False)
        return
    kernel_fills = libc.getauxval(27) or 20
    if i.registered_by == "glibc":
        assert i.glibc_rseq_offset == ctypes.c_ssize_t.in_dll(libc, "__rseq_offset").value
        assert i.area_size == glibc_rseq_size()
        if glibc_rseq_size() in (20, 32):
            assert i.feature_size == min(32, kernel_fills)
        else:
            assert i.feature_size == glibc_rseq_size()
    else:
        assert i.feature_size == kernel_fills
        assert i.area_size >= 32
    assert i.has_node_id == (i.feature_size >= 24)
    assert i.has_mm_cid == (i.feature_size >= 28)
    assert i.signature == {"x86_64": 0x53053053, "aarch64": 0xD428BC00}[i.arch]


def test_current_cpu_follows_affinity(restore_affinity):
    for cpu in allowed_cpus():
        os.sched_setaffinity(0, {cpu})
        for _ in range(100):
            assert rseq_py.current_cpu() == cpu


def test_current_cpu_in_threads(restore_affinity):
    seen: list[int] = []

    def pinned(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # 0 = this thread
        seen.append(rseq_py.current_cpu() == cpu)

    threads = [threading.Thread(target=pinned, args=(c,)) for c in allowed_cpus()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * len(threads)


def test_current_numa_node_matches_getcpu(restore_affinity):
    for cpu in allowed_cpus():
        os.sched_setaffinity(0, {cpu})
        assert rseq_py.current_numa_node() == getcpu()[1]


def test_current_mm_cid():
    cid = rseq_py.current_mm_cid()
    if not rseq_py.info().has_mm_cid:
        assert cid is None
        return
    # The kernel keeps mm_cid below min(threads of the process, CPUs).
    assert cid is not None
    assert 0 <= cid < min(threading.active_count() + 8, possible_cpus())


def test_info_in_forced_fallback():
    out = run_python(
        """
        import json, rseq_py
        i = rseq_py.info()
        print(json.dumps(dict(backend=i.backend, by=i.registered_by, reason=i.reason,
                              cpu=rseq_py.current_cpu(), cid=rseq_py.current_mm_cid())))
        """,
        env={"RSEQ_PY_BACKEND": "fallback"},
    )
    assert out["backend"] == "fallback" and out["by"] is None and out["cid"] is None
    assert "RSEQ_PY_BACKEND=fallback" in out["reason"]
    assert out["cpu"] in allowed_cpus()


def test_bad_backend_request_names_the_variable():
    with pytest.raises(AssertionError, match="RSEQ_PY_BACKEND='bogus' is not one of"):
        run_python("import rseq_py", env={"RSEQ_PY_BACKEND": "bogus"})
