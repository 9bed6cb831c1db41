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
from typing import Tuple

from ._native import ffi, lib

SHM_DIR = "/dev/shm"
PREFIX = "rseq_py."
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")


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


def create(name: str, size: int) -> Tuple[mmap.mmap, object]:
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


def attach(name: str, kind: int, kind_name: str) -> Tuple[mmap.mmap, object]:
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
