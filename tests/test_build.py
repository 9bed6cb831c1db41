"""The build: a machine without critical sections gets the fallback only, and says so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import run_python

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout() -> Path:
    if not (ROOT / "setup.py").exists() or shutil.which("cc") is None:
        pytest.skip("needs the source checkout and a C compiler (not in the arm64 guests)")
    return ROOT


def test_machine_without_sections_builds_the_fallback_only(checkout, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(checkout / name, src / name)
    for name in ("csrc", "asm", "rseq_py"):
        shutil.copytree(checkout / name, src / name,
                        ignore=shutil.ignore_patterns("*.so", "__pycache__", "_native.c"))
    env = {"RSEQ_PY_TARGET_ARCH": "riscv64", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                          cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = run_python(
        f"""
        import json, sys
        sys.path.insert(0, {str(src)!r})
        import rseq_py
        from rseq_py.stress import counter_stress
        i = rseq_py.info()
        r = counter_stress("atomic", threads=8, ops_per_thread=20_000, signal_interval_us=50)
        c = rseq_py.PerCpuCounter(2); c.add(3, index=1)
        print(json.dumps(dict(backend=i.backend, by=i.registered_by, reason=i.reason,
                              file=rseq_py.__file__, exact=r.exact, values=c.values())))
        """
    )
    assert out["file"].startswith(str(src))
    assert (out["backend"], out["by"]) == ("fallback", None)
    assert "no rseq critical sections for this architecture" in out["reason"]
    assert out["exact"] and out["values"] == [0, 3]
    with pytest.raises(AssertionError, match="rseq cannot be used"):
        run_python(f"import sys; sys.path.insert(0, {str(src)!r}); import rseq_py",
                   env={"RSEQ_PY_BACKEND": "rseq"})
