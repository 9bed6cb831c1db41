"""Per-CPU counters: many writers on many CPUs, no lock, no shared cache line."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Union, overload

from . import _fast, _segment
from ._checks import INT64_MAX, INT64_MIN, as_index, as_int, as_int64
from ._native import ffi, lib

if TYPE_CHECKING:
    from ._native import CData

__all__ = ["PerCpuCounter"]

_add = lib.rseq_py_counter_add


class PerCpuCounter(_segment.Shareable, _fast.CounterCore):
    """A set of ``size`` independent int64 counters, each split into one slot per CPU.

    ``add`` changes only the slot of the CPU the calling thread runs on, in one
    rseq critical section: no lock, no atomic instruction, no cache line shared
    with another CPU.  If the thread is preempted, migrated or signalled inside
    the section, the kernel restarts it, so each ``add`` takes effect exactly
    once.  On the fallback backend (see :func:`rseq_py.info`) the same slots are
    updated with atomic adds instead, with the same guarantees.

    Concurrency guarantees (all methods may be called from any thread at once):

    * **add / inc / sub** are never lost and never applied twice, whatever the
      threads, CPUs, preemptions and signals.  They are methods of the C base
      (rseq_py._fast): a few ns of section or atomic add, with the GIL held
      (nothing there can wait); the other methods run through cffi.
    * **value / values** add up the per-CPU slots one by one (each read is a
      single-copy-atomic 64-bit load).  The result includes every add that
      returned before the call started and none that began after it returned;
      an add running concurrently is either wholly in or wholly out.  It is not
      a snapshot across CPUs or across counters: with concurrent writers the
      sum is approximate in time, never corrupt.
    * **reset** subtracts from each CPU exactly what it read there and returns
      the total: every concurrent add is either in the returned amount or left
      in the counter, never lost and never counted twice.  So
      ``total = sum(reset() results) + value()`` holds exactly at quiescence.
    * **Overflow**: slots and sums wrap modulo 2**64 (two's complement), like C
      ``int64_t`` arithmetic made well defined.  Because a sum modulo 2**64 does
      not care how the parts wrapped, ``value()`` is exact whenever the true
      total lies in ``[-2**63, 2**63 - 1]``; beyond that it wraps.

    **Shared between processes**: :meth:`create` makes a counter in a named
    shared-memory segment that other processes :meth:`attach` to (or receive
    by pickling: a shared counter pickles as its name and re-attaches in the
    other process).  Slots are indexed by CPU, not by process, so the same
    guarantees hold across processes, and a process killed at any instant
    leaves the counter consistent: a section that did not commit changed
    nothing.  The segment lives until :meth:`unlink` (like any POSIX shared
    memory): the creator owns the name and unlinks it when done;
    :meth:`close` only unmaps it from this process.

    Args:
        size: number of independent counters, 1 to 1,048,576.

    Raises:
        TypeError: ``size`` is not an int.
        ValueError: ``size`` is out of range.
    """

    __slots__ = ("_size", "__weakref__")
    _KIND_NAME = "PerCpuCounter"

    MAX_SIZE = lib.RSEQ_PY_COUNTER_MAX

    def __init__(self, size: int = 1) -> None:
        size = self._check_size(size)
        c = lib.rseq_py_counter_new(size)
        if c == ffi.NULL:
            raise MemoryError(f"cannot allocate a PerCpuCounter of size {size}")
        self._init_private(ffi.gc(c, lib.rseq_py_counter_free))

    @classmethod
    def _check_size(cls, size: object) -> int:
        size = as_int(size, "size")
        if not 1 <= size <= cls.MAX_SIZE:
            raise ValueError(f"size must be between 1 and {cls.MAX_SIZE}, got {size}")
        return size

    def _adopt(self, c: CData) -> None:
        self._size = int(lib.rseq_py_counter_size(c))

    def _fast_n(self) -> int:
        return self._size

    @classmethod
    def create(cls, name: str, size: int = 1) -> "PerCpuCounter":
        """Create a counter in a new shared segment called ``name``.

        Raises:
            FileExistsError: the name is taken (attach to it, or unlink it).
            TypeError, ValueError: bad ``name`` or ``size``.
        """
        size = cls._check_size(size)
        _segment.path_of(name)
        return cls._create_shared(
            name, lib.rseq_py_counter_shared_size(size),
            lambda buf, nbytes: lib.rseq_py_counter_create_at(buf, nbytes, size),
            lib.rseq_py_counter_free)

    @classmethod
    def attach(cls, name: str) -> "PerCpuCounter":
        """Attach to the shared counter ``name`` (created by any process).

        Raises:
            FileNotFoundError: no segment has that name.
            SegmentError: the segment is not a usable counter (foreign,
                truncated, incomplete, a freelist, another layout version,
                architecture or CPU count); the message says which.
        """
        return cls._attach_shared(name, lib.RSEQ_PY_KIND_COUNTER, lib.rseq_py_counter_attach_at,
                                  lib.rseq_py_counter_free)

    @property
    def size(self) -> int:
        """Number of independent counters."""
        return self._size

    @property
    def cpu_slots(self) -> int:
        """Number of per-CPU slots each counter has (possible CPUs)."""
        return int(lib.rseq_py_counter_cpu_slots(self._live()))

    def __len__(self) -> int:
        return self._size

    # The slow paths of the C base's add/inc/sub/value: it hands over every
    # call that is not plainly valid (or a closed object), unchanged.

    def _add_slow(self, delta: int, index: int = 0) -> None:
        """Add ``delta`` (a signed 64-bit int) to counter ``index``.

        Raises:
            TypeError: ``delta`` or ``index`` is not an int.
            OverflowError: ``delta`` is outside the signed 64-bit range.
            IndexError: ``index`` is not in ``range(size)``.
        """
        if type(delta) is not int or not INT64_MIN <= delta <= INT64_MAX:
            delta = as_int64(delta, "delta")
        if type(index) is not int or not 0 <= index < self._size:
            index = as_index(index, self._size)
        c = self._live()
        _add(c, index, delta)

    def _inc_slow(self, index: int = 0) -> None:
        """Add 1 to counter ``index``.  Raises like :meth:`add`."""
        if type(index) is not int or not 0 <= index < self._size:
            index = as_index(index, self._size)
        c = self._live()
        _add(c, index, 1)

    def _sub_slow(self, delta: int, index: int = 0) -> None:
        """Subtract ``delta``: the same as ``add(-delta, index)``, so ``-delta`` must fit int64.

        Raises:
            TypeError, IndexError: as :meth:`add`.
            OverflowError: ``-delta`` is outside the signed 64-bit range.
        """
        delta = as_int(delta, "delta")
        self.add(as_int64(-delta, "-delta"), index)

    def _value_slow(self, index: int = 0) -> int:
        """The sum of counter ``index`` over all CPUs (see the class's guarantees)."""
        index = as_index(index, self._size)
        return int(lib.rseq_py_counter_value(self._live(), index))

    def values(self) -> List[int]:
        """Every counter's sum, as a list of ``size`` ints."""
        c = self._live()
        out = ffi.new("int64_t[]", self._size)
        lib.rseq_py_counter_values(c, out)
        return list(out)

    def per_cpu(self, index: int = 0) -> List[int]:
        """Counter ``index`` as held by each CPU: a list of ``cpu_slots`` ints.

        Each entry is what was added on that CPU (minus what ``reset`` took
        from it); entries sum to :meth:`value`.
        """
        index = as_index(index, self._size)
        c = self._live()
        out = ffi.new("int64_t[]", lib.rseq_py_counter_cpu_slots(c))
        lib.rseq_py_counter_per_cpu(c, index, out)
        return list(out)

    @overload
    def reset(self, index: int) -> int: ...

    @overload
    def reset(self, index: None = None) -> List[int]: ...

    def reset(self, index: Optional[int] = None) -> Union[int, List[int]]:
        """Take counter ``index`` back to zero and return what it held.

        With no index, resets every counter and returns the list of amounts.
        Safe against concurrent adders: each concurrent add is either part of
        the returned amount or stays in the counter (never lost, never
        doubled).  Two resets racing on one counter split the amount between
        them (one may return a negative share); their results and the
        remaining value still add up to the exact total.
        """
        c = self._live()
        if index is None:
            return [int(lib.rseq_py_counter_reset(c, i)) for i in range(self._size)]
        index = as_index(index, self._size)
        return int(lib.rseq_py_counter_reset(c, index))

    def __repr__(self) -> str:
        where = "" if self._name is None else f"name={self._name!r}, "
        if self._c is None:
            return f"PerCpuCounter({where}size={self._size}, closed)"
        vals = self.values()
        shown = ", ".join(map(str, vals[:8])) + (", ..." if len(vals) > 8 else "")
        return f"PerCpuCounter({where}size={self._size}, values=[{shown}])"
