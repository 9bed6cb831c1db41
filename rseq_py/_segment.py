"""Named shared-memory segments: files under /dev/shm mapped with mmap.

A segment outlives the processes that use it until it is unlinked, like any
POSIX shared memory; nothing here registers it with multiprocessing's
resource tracker, so no process unlinks it behind its owner's back and
children that attach get no warnings.  Its first 128 bytes are a header
(csrc/segment.c) that every attach checks before anything else is read.
"""

from __future__ import annotations

import mmap
import os
import re
from typing import TYPE_CHECKING, Callable, Optional, Tuple, Type, TypeVar

from . import _fast
from ._native import ffi, lib

if TYPE_CHECKING:
    from ._native import CData, CharPtr

# The C-API fast path calls _native's functions (one registration state).
_fast.link(*(int(ffi.cast("uintptr_t", ffi.addressof(lib, f))) for f in (
    "rseq_py_counter_add", "rseq_py_counter_value",
    "rseq_py_freelist_try_push", "rseq_py_freelist_try_pop")))

SHM_DIR = "/dev/shm"
PREFIX = "rseq_py."
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")

_S = TypeVar("_S", bound="Shareable")


class SegmentError(ValueError):
    """A named segment exists but cannot be used as asked: foreign, truncated,
    incomplete, of another kind, layout version, architecture or CPU count."""


def path_of(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"segment name must be a str, not {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid segment name {name!r}: use 1-200 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'")
    return os.path.join(SHM_DIR, PREFIX + name)


def create(name: str, size: int) -> Tuple[mmap.mmap, CharPtr]:
    """A new zero-filled segment of ``size`` bytes: (mapping, cffi buffer).

    Raises FileExistsError if the name is taken.
    """
    path = path_of(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FileExistsError(
            f"shared segment {name!r} already exists ({path}): attach() to it, or unlink it "
            "first") from None
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return mm, ffi.from_buffer(mm)


def attach(name: str, kind: int, kind_name: str) -> Tuple[mmap.mmap, CharPtr]:
    """Map an existing segment and check its header for ``kind``."""
    path = path_of(name)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no shared segment named {name!r} ({path}): create it first") from None
    try:
        size = os.fstat(fd).st_size
        if size < lib.RSEQ_PY_SEGMENT_HEADER:
            raise SegmentError(
                f"cannot attach {kind_name} {name!r}: truncated: {size} bytes, smaller than the "
                f"{lib.RSEQ_PY_SEGMENT_HEADER}-byte header")
        mm = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    buf = ffi.from_buffer(mm)
    why = ffi.new("char[]", 256)
    if lib.rseq_py_segment_check(buf, size, kind, why, 256) != 0:
        del buf
        mm.close()
        raise SegmentError(f"cannot attach {kind_name} {name!r}: {ffi.string(why).decode()}")
    return mm, buf


def unlink(name: str) -> None:
    """Remove the name; processes that have it mapped keep using it."""
    path = path_of(name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no shared segment named {name!r} ({path})") from None


class Shareable(_fast.Core):
    """Lifecycle shared by PerCpuCounter and PerCpuFreelist: a private object,
    or a view of a named segment (``name``, ``close``, ``unlink``, ``with``,
    pickling by name).  Subclasses keep their C descriptor in ``_c``; the C
    base (rseq_py._fast) is bound to the same descriptor for the fast
    methods, and unbound on close."""

    __slots__ = ("_c", "_name", "_mm")
    _KIND_NAME = ""

    _c: Optional[CData]  # None once closed
    _name: Optional[str]
    _mm: Optional[mmap.mmap]

    def _init_private(self, c: CData) -> None:
        self._c = c
        self._name = None
        self._mm = None
        self._adopt(c)
        self._bind_fast()

    def _bind_fast(self) -> None:
        c = self._live()
        self._bind(int(ffi.cast("uintptr_t", c)), self._fast_n(), c)

    def _fast_n(self) -> int:
        """The bound the fast path checks indexes against (counters: size)."""
        return 0

    def _adopt(self, c: CData) -> None:
        """Read what the subclass caches from a fresh C descriptor."""
        raise NotImplementedError

    @classmethod
    def _shared(cls: Type[_S], c: CData, free: Callable[[CData], None], name: str,
                mm: mmap.mmap, buf: CData) -> _S:
        if c == ffi.NULL:  # pragma: no cover - only on out of memory
            raise MemoryError(f"cannot map shared {cls._KIND_NAME} {name!r}")
        self = cls.__new__(cls)
        # The descriptor keeps the mapping's buffer alive: the memory cannot
        # be unmapped while any thread still holds the descriptor.
        def release(p: CData, _buf: CData = buf) -> None:
            free(p)

        self._c = ffi.gc(c, release)
        self._name = name
        self._mm = mm
        self._adopt(c)
        self._bind_fast()
        return self

    @classmethod
    def _create_shared(cls: Type[_S], name: str, nbytes: int,
                       create_at: Callable[[CData, int], CData],
                       free: Callable[[CData], None]) -> _S:
        """A new segment laid out by ``create_at(buf, nbytes)``."""
        path_of(name)
        mm, buf = create(name, nbytes)
        c = create_at(buf, nbytes)
        if c == ffi.NULL:  # pragma: no cover - only on out of memory
            unlink(name)
        return cls._shared(c, free, name, mm, buf)

    @classmethod
    def _attach_shared(cls: Type[_S], name: str, kind: int,
                       attach_at: Callable[[CData, int], CData],
                       free: Callable[[CData], None]) -> _S:
        """An existing segment, checked for ``kind``, described by ``attach_at``."""
        mm, buf = attach(name, kind, cls._KIND_NAME)
        return cls._shared(attach_at(buf, len(mm)), free, name, mm, buf)

    @property
    def name(self) -> "str | None":
        """The shared segment's name, or ``None`` for a private object."""
        return self._name

    @property
    def c_address(self) -> int:
        """Address (an int) of the C descriptor, for extensions written in C.

        A ``rseq_py_counter *`` for a :class:`~rseq_py.PerCpuCounter`, a
        ``rseq_py_freelist *`` for a :class:`~rseq_py.PerCpuFreelist`: what
        the functions of ``rseq_py.h`` take (see :func:`rseq_py.c_api` and
        :func:`rseq_py.get_include`).  The pointer is valid while this
        object is alive and not closed: keep a reference for as long as C
        code may use it (e.g. across a call that releases the GIL), and do
        not :meth:`close` a shared one meanwhile (that unmaps the memory).

        Raises:
            ValueError: the object is closed.
        """
        return int(ffi.cast("uintptr_t", self._live()))

    @property
    def closed(self) -> bool:
        return self._c is None

    def close(self) -> None:
        """Unmap this process's view of a shared object (no-op if private or closed).

        Other processes and the name are unaffected.  Using the object
        afterwards raises ``ValueError``.  Call it when no other thread of this
        process is using the object: a thread still inside an operation
        keeps the memory mapped until it returns.
        """
        mm = self._mm
        if self._name is None or self._c is None or mm is None:
            return
        self._unbind()
        self._c = None
        self._mm = None
        try:
            mm.close()
        except BufferError:  # another thread still holds it: unmapped when it lets go
            pass

    def unlink(self) -> None:
        """Remove the shared segment's name; mapped views keep working.

        Raises:
            TypeError: a private object has no name.
            FileNotFoundError: already unlinked.
        """
        if self._name is None:
            raise TypeError(f"a private {self._KIND_NAME} has no shared segment to unlink")
        unlink(self._name)

    def __enter__(self: _S) -> _S:
        self._live()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> CData:
        if self._c is None:
            raise ValueError(f"{self._KIND_NAME} {self._name!r} is closed")
        return self._c

    if TYPE_CHECKING:  # each subclass has its own (pickling needs it)
        @classmethod
        def attach(cls: Type[_S], name: str) -> _S: ...

    def __reduce__(self: _S) -> Tuple[Callable[[str], _S], Tuple[str]]:
        if self._name is None:
            raise TypeError(
                f"a {self._KIND_NAME} lives in this process's private memory and cannot be "
                f"pickled; use {self._KIND_NAME}.create(name) to share one between processes")
        return (type(self).attach, (self._name,))
