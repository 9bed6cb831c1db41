"""Cross-build rseq_py for arm64 into a payload for tests/arch/aarch64.sh.

    eval "$(tests/arch/aarch64.sh env)"
    python tests/arch/cross_build.py PAYLOAD_DIR

The extension is built from the same sources, cdef and flags as the
setuptools build (rseq_py/_build.py), with the cross compiler and the arm64
CPython headers; the payload gets the package, the test suite and the guest
entry scripts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def main(payload: Path) -> None:
    os.chdir(ROOT)  # _build's source paths are relative to the checkout
    sys.path.insert(0, str(ROOT / "rseq_py"))
    import _build  # the builder module alone, not the (host) package

    arch = "aarch64"
    if os.path.exists(payload):
        shutil.rmtree(payload)
    pkg = payload / "site" / "rseq_py"
    gen = payload / "build"
    pkg.mkdir(parents=True)
    gen.mkdir()
    shutil.copytree(ROOT / "rseq_py", pkg, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))

    ffi = _build.make_builder(arch)
    c_file = gen / "_native.c"
    ffi.emit_c_code(str(c_file))
    macros = [f"-D{k}={v}" for k, v in _build.define_macros(arch)]
    cmd = [
        os.environ.get("AARCH64_CC", "aarch64-linux-gnu-gcc"),
        "-shared", "-fPIC", "-Werror", *_build.COMPILE_ARGS, *macros,
        "-Icsrc", *os.environ["AARCH64_PY_CFLAGS"].split(),
        str(c_file), *_build.sources(arch),
        "-o", str(pkg / ("_native" + os.environ.get("AARCH64_EXT_SUFFIX", ".cpython-311-aarch64-linux-gnu.so"))),
        *_build.LINK_ARGS, *[f"-l{lib}" for lib in _build.LIBRARIES],
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    suffix = os.environ.get("AARCH64_EXT_SUFFIX", ".cpython-311-aarch64-linux-gnu.so")
    cmd = [
        os.environ.get("AARCH64_CC", "aarch64-linux-gnu-gcc"),
        "-shared", "-fPIC", "-Werror", *_build.FAST_COMPILE_ARGS,
        *os.environ["AARCH64_PY_CFLAGS"].split(), *_build.FAST_SOURCES,
        "-o", str(pkg / ("_fast" + suffix)),
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)

    tests = payload / "tests"
    tests.mkdir()
    for f in (ROOT / "tests").glob("*.py"):
        shutil.copy(f, tests)
    for f in ("run.sh", "run_user.sh"):
        shutil.copy(HERE / "payload" / f, payload / f)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
