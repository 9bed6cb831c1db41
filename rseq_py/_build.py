"""cffi builder (API mode, out of line) for ``rseq_py._native``.

The cdef is the binding section of the public header ``csrc/rseq_py.h``, so
the C declarations exist once.  The critical sections come from
``asm/<arch>/*.S``; on an architecture without them the extension is built
with the fallback backend only (``RSEQ_PY_NO_ASM``), and ``info()`` says so.

``RSEQ_PY_TARGET_ARCH`` overrides the detected machine (cross builds).
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


COMPILE_ARGS = ["-std=gnu11", "-O2", "-Wall", "-fvisibility=hidden"]
# The CPython C-API fast path (rseq_py._fast): one file, no link to the core
# (it calls _native's functions through addresses handed over at import).
FAST_SOURCES = ["csrc/capi/fast.c"]
FAST_COMPILE_ARGS = ["-O2", "-Wall", "-fvisibility=hidden"]
LINK_ARGS = ["-Wl,-z,noexecstack"]
LIBRARIES = ["dl", "pthread"]


def target_arch() -> str:
    machine = os.environ.get("RSEQ_PY_TARGET_ARCH") or platform.machine()
    machine = machine.lower()
    return ARCH_ALIASES.get(machine, machine)


def _rel(path: Path) -> str:
    # setuptools wants sources relative to the directory it runs in.
    try:
        return os.path.relpath(path, os.getcwd())
    except ValueError:
        return str(path)


def sources(arch: str) -> list[str]:
    """C and assembly sources of the extension for ``arch``."""
    files = sorted((ROOT / "csrc").glob("*.c"))
    files += sorted((ROOT / "asm" / arch).glob("*.S"))
    return [_rel(f) for f in files]


def has_asm(arch: str) -> bool:
    return any((ROOT / "asm" / arch).glob("*.S"))


def define_macros(arch: str) -> list[tuple[str, str]]:
    return [] if has_asm(arch) else [("RSEQ_PY_NO_ASM", "1")]


def cdef() -> str:
    """The binding section of csrc/rseq_py.h, as cffi's cdef."""
    header = (ROOT / "csrc" / "rseq_py.h").read_text()
    start = header.index("/* ---- backend")
    end = header.index("/* end of binding */")
    return re.sub(r"/\*.*?\*/", "", header[start:end], flags=re.S)


def make_builder(arch: str | None = None) -> FFI:
    arch = arch or target_arch()
    ffi = FFI()
    ffi.cdef(cdef())
    macros = define_macros(arch)
    ffi.set_source(
        "rseq_py._native",
        '#include "rseq_py.h"',
        sources=sources(arch),
        include_dirs=[_rel(ROOT / "csrc")],
        define_macros=macros,
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
        libraries=LIBRARIES,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
