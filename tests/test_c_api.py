"""The C API for third-party extensions: rseq_py.get_include(), rseq_py.c_api(),
PerCpuCounter.c_address / PerCpuFreelist.c_address.

A tiny CPython extension (tests/capi_ext/rseq_capi_demo.c) is compiled here
with the system compiler against get_include() and Python's headers only (it
links nothing of rseq_py), imported, and made to count and to push/pop from
its own pthreads, GIL released, on objects created in Python.  Python then
checks exact counts and the exact multiset of handles.

Needs the source checkout (tests/capi_ext/, csrc/) and a C compiler; a
missing compiler skips here, and fails in CI (CI=true).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

import rseq_py
from support import IN_CI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXT_SRC = HERE / "capi_ext" / "rseq_capi_demo.c"
HEADER_SRC = ROOT / "csrc" / "rseq_py.h"
THREADS = 4

if not EXT_SRC.exists() or not HEADER_SRC.exists():
    # The arm64 payloads carry the tests' .py files, not the C sources.
    pytest.skip("needs the source checkout (tests/capi_ext/, csrc/)", allow_module_level=True)


def header_functions() -> set[str]:
    """Names of the functions csrc/rseq_py.h declares."""
    text = re.sub(r"/\*.*?\*/", "", HEADER_SRC.read_text(), flags=re.S)
    return set(re.findall(r"\b(rseq_py_\w+)\s*\(", text))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        if IN_CI:
            pytest.fail("no C compiler: CI must provide one (apt-get install gcc)")
        pytest.skip("no C compiler (gcc/cc) to build the test extension")
    out = tmp_path_factory.mktemp("capi_ext")
    so = out / ("rseq_capi_demo" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread",
           "-I", rseq_py.get_include(), "-I", sysconfig.get_paths()["include"],
           str(EXT_SRC), "-o", str(so)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "Python.h" in proc.stderr and not IN_CI:
        pytest.skip(f"no Python headers for this interpreter: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"
    nm = shutil.which("nm")
    if nm is not None:  # links nothing of rseq_py: no rseq_py symbol is even referenced
        syms = subprocess.run([nm, "-D", str(so)], capture_output=True, text=True,
                              check=True).stdout
        assert "rseq_py_" not in syms, syms
    loader = importlib.machinery.ExtensionFileLoader("rseq_capi_demo", str(so))
    spec = importlib.util.spec_from_file_location("rseq_capi_demo", so, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def test_get_include_has_the_public_header():
    inc = Path(rseq_py.get_include())
    assert inc.is_dir()
    # the installed package's own copy (not the checkout's csrc), identical to it
    assert inc == Path(rseq_py.__file__).resolve().parent / "include"
    assert (inc / "rseq_py.h").read_bytes() == HEADER_SRC.read_bytes()
    assert sorted(p.name for p in inc.iterdir() if p.name != "__pycache__") == ["rseq_py.h"]


def test_c_api_has_every_function_of_the_header():
    api = rseq_py.c_api()
    assert set(api) == header_functions()
    assert all(isinstance(a, int) and a > 0 for a in api.values())
    assert len(set(api.values())) == len(api)
    assert api == rseq_py.c_api()  # stable for the process


def test_c_address_is_the_descriptor_and_refuses_closed_objects():
    c = rseq_py.PerCpuCounter(2)
    fl = rseq_py.PerCpuFreelist(10)
    assert isinstance(c.c_address, int) and c.c_address == c.c_address != 0
    assert isinstance(fl.c_address, int) and fl.c_address != 0
    name = f"capi_test_{os.getpid()}"
    shared = rseq_py.PerCpuCounter.create(name, size=1)
    try:
        assert shared.c_address != 0
        shared.close()
        with pytest.raises(ValueError):
            shared.c_address
    finally:
        shared.unlink()


def test_extension_counts_exactly_from_c_threads(demo):
    c = rseq_py.PerCpuCounter(size=3)
    c.add(7, index=1)
    iters = 50_000
    assert demo.counter_add_threads(c.c_address, 1, 3, THREADS, iters) == 0
    assert demo.counter_add_threads(c.c_address, 2, -1, THREADS, iters) == 0
    assert c.values() == [0, 7 + 3 * THREADS * iters, -THREADS * iters]
    assert demo.counter_value(c.c_address, 1) == c.value(1)
    assert sum(c.per_cpu(1)) == c.value(1)
    assert demo.counter_add_threads(c.c_address, 3, 1, 1, 5) == 5  # index out of range: -1 each
    assert 0 <= demo.current_cpu() < c.cpu_slots


def test_extension_counts_on_a_shared_counter(demo):
    name = f"capi_shared_{os.getpid()}"
    c = rseq_py.PerCpuCounter.create(name, size=1)
    try:
        with rseq_py.PerCpuCounter.attach(name) as view:
            assert demo.counter_add_threads(view.c_address, 0, 1, THREADS, 20_000) == 0
        assert c.value() == THREADS * 20_000
    finally:
        c.unlink()
        c.close()


def test_extension_pushes_and_pops_an_exact_multiset(demo):
    iters = 20_000
    prior = list(range(-1000, 0))
    fl = rseq_py.PerCpuFreelist(capacity=len(prior) + THREADS * iters, per_cpu=64)
    fl.push_many(prior)
    held, empty_pops, full_pushes = demo.freelist_threads(fl.c_address, THREADS, iters, 10**12)
    assert (empty_pops, full_pushes) == (0, 0)
    assert len(held) == THREADS * (iters // 2)
    rest = fl.drain()
    assert len(fl) == 0
    pushed = prior + [10**12 + i for i in range(THREADS * iters)]
    together = Counter(held) + Counter(rest)
    assert max(together.values()) == 1  # no handle twice
    assert together == Counter(pushed)  # none lost, none invented
