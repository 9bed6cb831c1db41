"""The registration matrix: the correctness suite again, in a fresh process
per registration mode, with info() checked to be truthful in each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import run_python
from test_info import kernel_has_rseq

HERE = Path(__file__).resolve().parent
SUITE = ["test_info.py", "test_counter.py", "test_bad_input.py", "test_stress.py", "test_freelist.py",
         "test_shared_counter.py", "test_shared_freelist.py",
         "test_threads.py", "test_fork.py", "test_registrations.py", "test_kernel_aborts.py"]

MODES = {
    # glibc does not register: rseq_py registers each thread itself.
    "self-registration": {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"},
    # rseq never used: per-CPU slots with atomic adds.
    "forced-fallback": {"RSEQ_PY_BACKEND": "fallback"},
}


def expected(mode: str) -> tuple[str, str | None]:
    if mode == "forced-fallback":
        return "fallback", None
    return ("rseq", "rseq_py") if kernel_has_rseq() else ("fallback", None)


def mode_env(mode: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RSEQ_PY_BACKEND", None)
    env.pop("GLIBC_TUNABLES", None)
    env.update(MODES[mode])
    return env


@pytest.mark.parametrize("mode", sorted(MODES))
def test_info_in_mode(mode):
    out = run_python(
        """
        import json, rseq_py
        i = rseq_py.info()
        print(json.dumps(dict(backend=i.backend, by=i.registered_by, reason=i.reason)))
        """,
        env=MODES[mode],
    )
    assert (out["backend"], out["by"]) == expected(mode), out["reason"]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_suite_in_mode(mode):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         *[str(HERE / f) for f in SUITE]],
        env=mode_env(mode), cwd="/", capture_output=True, text=True, timeout=900,
    )
    tail = "\n".join(proc.stdout.splitlines()[-15:])
    assert proc.returncode == 0, f"{mode} suite failed:\n{tail}\n{proc.stderr[-2000:]}"
    m = re.search(r"(\d+) passed", proc.stdout)
    assert m and int(m.group(1)) >= 50, tail
    assert "failed" not in proc.stdout.splitlines()[-1], tail
    print(f"\n[{mode}] {proc.stdout.splitlines()[-1]}")
