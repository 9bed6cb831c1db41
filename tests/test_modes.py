"""The registration matrix: the correctness suite again, in a fresh process
per registration mode, with info() checked to be truthful in each."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import ARM64_HARNESS, IN_CI
from test_info import kernel_has_rseq

HERE = Path(__file__).resolve().parent
NO_RSEQ = HERE / "no_rseq.py"
SUITE = ["test_info.py", "test_counter.py", "test_bad_input.py", "test_stress.py", "test_freelist.py",
         "test_shared_counter.py", "test_shared_freelist.py",
         "test_threads.py", "test_fork.py", "test_registrations.py", "test_kernel_aborts.py",
         "test_signals.py", "test_stateful.py"]

# Each mode: the environment of its process, and optionally a launcher (the
# command that runs Python in it, instead of plain sys.executable).
MODES = {
    # glibc does not register: rseq_py registers each thread itself.
    "self-registration": {"env": {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}},
    # rseq never used: per-CPU slots with atomic adds.
    "forced-fallback": {"env": {"RSEQ_PY_BACKEND": "fallback"}},
    # A seccomp filter answers rseq with ENOSYS, as a kernel without rseq
    # would (tests/no_rseq.py, inherited by every child process): glibc's
    # registration fails too, so rseq_py must find the fallback by itself.
    "seccomp-enosys": {"env": {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"},
                       "launcher": [sys.executable, str(NO_RSEQ)]},
}


def expected(mode: str) -> tuple[str, str | None]:
    if mode in ("forced-fallback", "seccomp-enosys"):
        return "fallback", None
    return ("rseq", "rseq_py") if kernel_has_rseq() else ("fallback", None)


def mode_env(mode: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RSEQ_PY_BACKEND", None)
    env.pop("GLIBC_TUNABLES", None)
    env.update(MODES[mode]["env"])
    return env


def launcher(mode: str) -> list[str]:
    """The start of the command line that runs Python in this mode."""
    return MODES[mode].get("launcher", [sys.executable])


def check_launcher(mode: str) -> None:
    """A launcher that cannot work here (no seccomp filters in this kernel or
    sandbox) skips its mode, except in CI where it must work."""
    if "launcher" not in MODES[mode]:
        return
    proc = subprocess.run([*launcher(mode), "-c", "pass"], env=mode_env(mode), cwd="/",
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        msg = f"{mode}: the launcher does not work here: {proc.stderr.strip()[-500:]}"
        # qemu-user (the arm64 harness's user mode) emulates no seccomp filters.
        if IN_CI and ARM64_HARNESS != "user":
            pytest.fail(msg)
        pytest.skip(msg)


def run_in_mode(mode: str, code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter in this mode (cwd outside the
    source tree) and return the JSON object it prints on its last line."""
    proc = subprocess.run([*launcher(mode), "-c", textwrap.dedent(code)], env=mode_env(mode),
                          cwd="/", capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_info_in_mode(mode):
    check_launcher(mode)
    out = run_in_mode(
        mode,
        """
        import json, rseq_py
        i = rseq_py.info()
        print(json.dumps(dict(backend=i.backend, by=i.registered_by, reason=i.reason,
                              glibc_rseq_size=i.glibc_rseq_size)))
        """,
    )
    assert (out["backend"], out["by"]) == expected(mode), out["reason"]
    if mode == "seccomp-enosys":
        # The reason names the failure: ENOSYS (by name or by its message).
        assert "ENOSYS" in out["reason"] or os.strerror(errno.ENOSYS) in out["reason"], out
        assert "does not implement rseq" in out["reason"], out
        # glibc's own registration at startup failed under the filter too.
        assert out["glibc_rseq_size"] in (0, -1), out


@pytest.mark.parametrize("mode", sorted(MODES))
def test_suite_in_mode(mode):
    check_launcher(mode)
    proc = subprocess.run(
        [*launcher(mode), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         *[str(HERE / f) for f in SUITE]],
        env=mode_env(mode), cwd="/", capture_output=True, text=True, timeout=900,
    )
    tail = "\n".join(proc.stdout.splitlines()[-15:])
    assert proc.returncode == 0, f"{mode} suite failed:\n{tail}\n{proc.stderr[-2000:]}"
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= 50, tail
    # (not a bare "failed": "7 xfailed" is fine)
    assert not re.search(r"\b\d+ (failed|errors?)\b", proc.stdout.splitlines()[-1]), tail
    print(f"\n[{mode}] {proc.stdout.splitlines()[-1]}")
