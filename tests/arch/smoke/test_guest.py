"""Checks that the arm64 Python environment the harness provides is complete."""
import os
import platform
import subprocess
import sys
import threading

from hypothesis import given, settings, strategies as st


def test_machine_is_aarch64():
    assert platform.machine() == "aarch64"


def test_cffi_backend_imports():
    import _cffi_backend

    ffi = _cffi_backend.FFI()
    assert ffi.sizeof("long") == 8


def test_threads_run():
    out = []
    threads = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == [0, 1, 2, 3]


def test_fork_child_exits_cleanly():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 7


def test_subprocess_runs_this_python():
    out = subprocess.run([sys.executable, "-c", "import platform; print(platform.machine())"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "aarch64"


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int64_roundtrip(x):
    assert int.from_bytes(x.to_bytes(8, "little", signed=True), "little", signed=True) == x
