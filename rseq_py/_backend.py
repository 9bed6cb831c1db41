"""Backend selection and introspection: the one place Python meets registration.

The backend is decided once per process, at import, from ``RSEQ_PY_BACKEND``:

- unset or ``auto``: rseq when the kernel and libc allow it, else the fallback;
- ``fallback``: never use rseq (per-CPU slots updated with atomic adds);
- ``rseq``: rseq or ``ImportError`` with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Optional, Type, TypeVar

from ._native import ffi, lib

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from ._native import CData

T = TypeVar("T", bound="DataclassInstance")


def from_struct(cls: Type[T], raw: CData, **given: object) -> T:
    """A dataclass from the same-named fields of a C struct, plus ``given``."""
    names = [f.name for f in fields(cls) if f.name not in given]
    return cls(**{n: getattr(raw, n) for n in names}, **given)


_REQUESTS = {
    "": lib.RSEQ_PY_REQUEST_AUTO,
    "auto": lib.RSEQ_PY_REQUEST_AUTO,
    "fallback": lib.RSEQ_PY_REQUEST_FALLBACK,
    "rseq": lib.RSEQ_PY_REQUEST_RSEQ,
}


def _init() -> None:
    requested = os.environ.get("RSEQ_PY_BACKEND", "").strip().lower()
    if requested not in _REQUESTS:
        raise ImportError(
            f"RSEQ_PY_BACKEND={requested!r} is not one of 'auto', 'rseq', 'fallback'"
        )
    if lib.rseq_py_init(_REQUESTS[requested]) != 0:
        raise ImportError(f"RSEQ_PY_BACKEND=rseq but rseq cannot be used: {info().reason}")


@dataclass(frozen=True)
class Info:
    """What the process runs on.  Decided once, at import.

    Attributes:
        backend: ``"rseq"`` (critical sections) or ``"fallback"`` (atomics).
        registered_by: ``"glibc"``, ``"rseq_py"`` (we register each thread's
            area ourselves) or ``None`` on the fallback backend.
        arch: the machine the extension was built for.
        feature_size: bytes of the rseq area the kernel fills (0 on fallback).
        kernel_feature_size: ``getauxval(AT_RSEQ_FEATURE_SIZE)``; 0 before Linux 6.3.
        area_size: bytes registered per thread (glibc's ``__rseq_size`` or ours).
        has_node_id: the kernel fills ``node_id`` (Linux 6.3+).
        has_mm_cid: the kernel fills ``mm_cid`` (Linux 6.3+).
        cpu_slots: per-CPU slots each structure has (possible CPUs).
        signature: the abort-handler signature registered with the kernel.
        glibc_rseq_size: glibc's ``__rseq_size``; -1 when the libc has none.
        glibc_rseq_offset: glibc's ``__rseq_offset``.
        reason: why this backend, in words.
    """

    backend: str
    registered_by: Optional[str]
    arch: str
    feature_size: int
    kernel_feature_size: int
    area_size: int
    has_node_id: bool
    has_mm_cid: bool
    cpu_slots: int
    signature: int
    glibc_rseq_size: int
    glibc_rseq_offset: int
    reason: str


_REGISTRARS = {
    lib.RSEQ_PY_REGISTRAR_NONE: None,
    lib.RSEQ_PY_REGISTRAR_GLIBC: "glibc",
    lib.RSEQ_PY_REGISTRAR_SELF: "rseq_py",
}


def info() -> Info:
    """Report the backend, who registered rseq, and what the kernel fills."""
    raw = ffi.new("struct rseq_py_info *")
    lib.rseq_py_get_info(raw)
    return Info(
        backend="rseq" if raw.backend == lib.RSEQ_PY_BACKEND_RSEQ else "fallback",
        registered_by=_REGISTRARS[raw.registrar],
        arch=ffi.string(raw.arch).decode(),
        feature_size=raw.feature_size,
        kernel_feature_size=raw.kernel_feature_size,
        area_size=raw.area_size,
        has_node_id=bool(raw.has_node_id),
        has_mm_cid=bool(raw.has_mm_cid),
        cpu_slots=raw.cpu_slots,
        signature=raw.signature,
        glibc_rseq_size=raw.glibc_rseq_size,
        glibc_rseq_offset=raw.glibc_rseq_offset,
        reason=ffi.string(raw.reason).decode(),
    )


@dataclass(frozen=True)
class Stats:
    """Process-wide slow-path and registration counts (diagnostics).

    Attributes:
        escapes: sections not entered because the thread had no usable area.
        exhausted: sections that aborted on every attempt.
        slow_path_adds: adds that went to the atomic slots instead.
        self_registrations: threads rseq_py registered itself, ever.
        self_unregistrations: of those, unregistered at thread exit.
        self_registration_failures: threads whose registration failed.
        self_registrations_live: registered now (registrations - unregistrations).
        owner_takeovers: freelist stacks taken over from an owner that was gone
            (a killed process of a shared segment, or a thread that fork() did
            not copy into this process).
        moves_recovered: freelist pool moves such an owner left half done,
            finished or undone.
    """

    escapes: int
    exhausted: int
    slow_path_adds: int
    self_registrations: int
    self_unregistrations: int
    self_registration_failures: int
    self_registrations_live: int
    owner_takeovers: int
    moves_recovered: int


def stats() -> Stats:
    """Snapshot the process-wide counts kept on the slow paths."""
    raw = ffi.new("struct rseq_py_stats *")
    lib.rseq_py_get_stats(raw)
    return from_struct(Stats, raw)


def current_cpu() -> int:
    """The CPU the calling thread runs on now (it may move right after).

    Read from the thread's rseq area when rseq is in use (no system call),
    else ``sched_getcpu()``.
    """
    return int(lib.rseq_py_current_cpu())


def current_mm_cid() -> Optional[int]:
    """The thread's memory-map concurrency id, or ``None`` if the kernel does not fill it.

    mm_cid is a small per-process index (< number of threads and of CPUs)
    that the kernel keeps unique among the process's running threads
    (Linux 6.3+, rseq backend only).  It is per process: never use it to
    index memory shared with other processes.
    """
    cid = lib.rseq_py_current_mm_cid()
    return None if cid < 0 else int(cid)


def current_numa_node() -> int:
    """The NUMA node of the CPU the thread runs on.

    From the rseq area when the kernel fills ``node_id`` (Linux 6.3+),
    otherwise from the ``getcpu(2)`` system call.
    """
    return int(lib.rseq_py_current_numa_node())


_init()
