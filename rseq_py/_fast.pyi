"""Stub of ``rseq_py._fast`` (csrc/capi/fast.c), the C bases of PerCpuCounter and
PerCpuFreelist.

A method here takes any call its Python subclass's ``_<name>_slow`` takes:
what the C code does not handle itself it passes on unchanged, so these
signatures are the public ones.  tests/test_typing.py checks this file
against the built module.
"""

from typing import Optional

class Core:
    """A C descriptor bound to a Python object."""

    def _bind(self, address: int, n: int, keep: object, /) -> None: ...
    def _unbind(self) -> None: ...

class CounterCore(Core):
    def inc(self, index: int = 0) -> None: ...
    def add(self, delta: int, index: int = 0) -> None: ...
    def sub(self, delta: int, index: int = 0) -> None: ...
    def value(self, index: int = 0) -> int: ...

class FreelistCore(Core):
    def push(self, handle: int) -> None: ...
    def pop(self) -> Optional[int]: ...

def link(
    counter_add: int, counter_value: int, freelist_try_push: int, freelist_try_pop: int, /
) -> None: ...
