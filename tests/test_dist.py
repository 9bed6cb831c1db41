"""Distribution: ``python -m build`` on a copy of the checkout's tracked files
makes an sdist that carries every source and a wheel, built from that sdist,
that carries the package, its two compiled modules, the public header and
the typing files, and nothing else; the installed package is such a wheel.

Needs the git checkout, ``build`` (test extra) and a C compiler; none of
them is in the arm64 guests, which carry only the test files.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from support import ARM64_HARNESS

ROOT = Path(__file__).resolve().parent.parent

# Tracked files that belong to the repository, not to a source distribution.
NOT_IN_SDIST = {".gitignore", ".ci/run"}
GENERATED_SUFFIXES = (".so", ".o", ".pyc")


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout (the arm64 guests carry only tests/*.py)")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f]


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    files = tracked_files()
    pytest.importorskip("build", reason="the test extra installs build")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the wheel with")
    src = tmp_path_factory.mktemp("checkout")
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    # Without isolation: the test extra provides setuptools, wheel and cffi,
    # so no index is needed.  sdist first, then the wheel from the sdist.
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(src)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = out.glob("rseq_py-*.tar.gz")
    (wheel,) = out.glob("rseq_py-*.whl")
    return sdist, wheel, files


def sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as t:
        members = [m for m in t.getmembers() if m.isfile()]
    # rseq_py-0.1.0/csrc/counter.c -> csrc/counter.c
    return {str(PurePosixPath(*PurePosixPath(m.name).parts[1:])) for m in members}


def test_sdist_carries_every_source_and_nothing_built(dists):
    sdist, _, files = dists
    names = sdist_names(sdist)
    missing = sorted(set(files) - NOT_IN_SDIST - names)
    assert not missing, f"tracked files missing from the sdist: {missing}"
    for must in ("csrc/rseq_py.h", "csrc/capi/fast.c", "asm/CONTRACT.md", "asm/rseq_abi.h",
                 "asm/x86_64/percpu_counter.S", "asm/aarch64/freelist.S", "rseq_py/_build.py",
                 "rseq_py/py.typed", "rseq_py/_native.pyi", "setup.py", "LICENSE"):
        assert must in names
    built = sorted(n for n in names if n.endswith(GENERATED_SUFFIXES) or "__pycache__" in n
                   or n == "rseq_py/_native.c")
    assert not built, f"generated files in the sdist: {built}"


def test_wheel_carries_the_package_only(dists):
    _, wheel, files = dists
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name).decode()
    payload = {n for n in names if ".dist-info/" not in n}
    py = {f for f in files if f.startswith("rseq_py/")}
    compiled = {n for n in payload if n.endswith(".so")}
    assert {PurePosixPath(n).name.split(".")[0] for n in compiled} == {"_native", "_fast"}
    assert all(n.startswith("rseq_py/") for n in compiled)
    assert payload == py | compiled | {"rseq_py/include/rseq_py.h"}, (
        sorted(payload ^ (py | compiled | {"rseq_py/include/rseq_py.h"})))
    assert "rseq_py/py.typed" in payload and "rseq_py/_fast.pyi" in payload
    assert "License-Expression: MIT" in meta
    for extra in ("test", "plot", "prometheus"):
        assert f"Provides-Extra: {extra}" in meta
    assert "Requires-Dist: cffi" in meta


def test_installed_package_is_a_wheel_with_the_header_and_typing_files():
    try:
        dist = importlib.metadata.distribution("rseq_py")
    except importlib.metadata.PackageNotFoundError:
        if ARM64_HARNESS:  # the guests put a cross-built tree on PYTHONPATH
            pytest.skip("the arm64 payload is a cross-built tree, not an installed distribution")
        raise
    installed = {str(f) for f in dist.files or []}
    for must in ("rseq_py/py.typed", "rseq_py/_native.pyi", "rseq_py/_fast.pyi",
                 "rseq_py/include/rseq_py.h", "rseq_py/prometheus.py"):
        assert must in installed, f"{must} not installed"
    assert not any(f.startswith(("csrc/", "asm/", "tests/")) for f in installed)
    wheel_file = dist.read_text("WHEEL") or ""
    assert "Root-Is-Purelib: false" in wheel_file  # a platform wheel: it holds compiled code
