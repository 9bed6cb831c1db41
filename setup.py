"""Build: a cffi extension made of csrc/*.c and asm/<arch>/*.S, and the
CPython C-API fast path (csrc/capi/fast.c), which calls into the first.

distutils' compiler only knows C-family suffixes; gcc and clang assemble a
``.S`` file (running the C preprocessor first) when given it like a C file,
so teaching build_ext the suffix is all it takes.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "rseq_py"))
import _build  # noqa: E402  (the builder module alone: the package needs its extensions)


class build_ext_with_asm(build_ext):
    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


setup(
    cffi_modules=["rseq_py/_build.py:ffibuilder"],
    ext_modules=[
        Extension("rseq_py._fast", _build.FAST_SOURCES, extra_compile_args=_build.FAST_COMPILE_ARGS),
    ],
    cmdclass={"build_ext": build_ext_with_asm},
)
