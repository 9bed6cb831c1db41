"""Helpers shared by the tests (imported as a plain module)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import rseq_py

# Emulated machines (the arm64 guests) run the same suite with smaller
# workloads; the concurrency (threads per CPU, signals) stays the same.
SCALE = float(os.environ.get("RSEQ_PY_TEST_SCALE", "1"))


# CI=true: a test that cannot run here fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# tests/arch/aarch64.sh: "system" inside an arm64 guest, "user" under qemu-user,
# "" on the host.  The arm64 payloads carry tests/*.py, not the checkout.
ARM64_HARNESS = os.environ.get("AARCH64_HARNESS", "")


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def oversubscribed_threads() -> int:
    """4 x the CPUs this process may run on: guarantees preemption inside sections."""
    return 4 * len(allowed_cpus())


def stress_until_aborts(budget_s: float = 60.0, driver=None, **kw):
    """counter_stress(**kw) (or driver(**kw)) repeated until the kernel has aborted at least one
    section (or the budget runs out); every run must be exact on its own.

    Whether a preemption or signal lands inside a section is a matter of
    time: on a slow (emulated) machine one scaled-down run may see none.
    Returns the list of runs."""
    import time

    from rseq_py.stress import counter_stress

    deadline = time.monotonic() + budget_s
    runs = []
    while True:
        r = (driver or counter_stress)(**kw)
        assert r.exact, r
        runs.append(r)
        if r.aborts > 0 or rseq_py.info().backend != "rseq" or time.monotonic() > deadline:
            return runs


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh interpreter (cwd outside the source tree) and
    return the JSON object it prints on its last line."""
    full_env = dict(os.environ)
    full_env.pop("RSEQ_PY_BACKEND", None)
    full_env.pop("GLIBC_TUNABLES", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
