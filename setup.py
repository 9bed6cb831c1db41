"""Build: a cffi extension made of csrc/*.c and asm/<arch>/*.S.

distutils' compiler only knows C-family suffixes; gcc and clang assemble a
``.S`` file (running the C preprocessor first) when given it like a C file,
so teaching build_ext the suffix is all it takes.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class build_ext_with_asm(build_ext):
    def build_extensions(self) -> None:
        if ".S" not in self.compiler.src_extensions:
            self.compiler.src_extensions.append(".S")
        super().build_extensions()


setup(
    cffi_modules=["rseq_py/_build.py:ffibuilder"],
    cmdclass={"build_ext": build_ext_with_asm},
)
