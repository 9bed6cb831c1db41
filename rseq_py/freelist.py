"""Per-CPU freelists of int64 handles: push and pop with no lock on the fast path."""

from __future__ import annotations

from typing import Iterable, List, Optional

from ._checks import INT64_MAX, INT64_MIN, as_int, as_int64
from ._native import ffi, lib

__all__ = ["FreelistFull", "PerCpuFreelist"]

_pop_value = lib.rseq_py_freelist_pop_value
_was_empty = lib.rseq_py_freelist_was_empty
_push = lib.rseq_py_freelist_push


class FreelistFull(Exception):
    """A push found the freelist already holding ``capacity`` handles.

    Attributes:
        pushed: how many handles of the call were pushed before it stopped
            (0 for ``push``; for ``push_many``, the first ``pushed`` items of
            the iterable went in, none of the others did).
    """

    def __init__(self, message: str, pushed: int = 0) -> None:
        super().__init__(message)
        self.pushed = pushed


class PerCpuFreelist:
    """A bag of int64 handles (buffer slots, object ids, ...) split into per-CPU stacks.

    ``push`` and ``pop`` work on the stack of the CPU the thread runs on, in
    one rseq critical section that reads and commits in one go (so no ABA,
    no lock, no atomic instruction).  Behind the stacks, a pool takes the
    overflow of CPUs that only push and refills CPUs that only pop, in
    batches; when a CPU's stack and the pool are empty, ``pop`` steals from
    other CPUs' stacks after fencing them (``membarrier``).  On the fallback
    backend the stacks are guarded by per-CPU spinlocks instead, with the
    same guarantees.

    Guarantees (any number of threads, preemptions, migrations, signals):

    * Every handle pushed is popped or drained exactly once: never lost,
      never duplicated.
    * ``pop()`` returns ``None`` only if the freelist held no handle at some
      instant during the call (proved by two identical scans of every stack
      and the pool, each of which records its pushes).
    * ``capacity`` is exact: a push raises :class:`FreelistFull` only when the
      freelist held ``capacity`` handles (the push changes nothing then).
    * Handles are arbitrary signed 64-bit ints; order is unspecified
      (roughly LIFO per CPU, which keeps recently freed handles cache-hot).

    Args:
        capacity: most handles it can hold, 1 to 2**32.
        per_cpu: room of each CPU's stack (default 256, at most ``capacity``);
            larger means fewer trips to the pool.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is out of range.
    """

    __slots__ = ("_fl", "_capacity", "__weakref__")

    MAX_CAPACITY = lib.RSEQ_PY_FREELIST_MAX

    def __init__(self, capacity: int, *, per_cpu: Optional[int] = None) -> None:
        capacity = as_int(capacity, "capacity")
        if not 1 <= capacity <= self.MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {self.MAX_CAPACITY}, got {capacity}")
        pc = 0
        if per_cpu is not None:
            pc = as_int(per_cpu, "per_cpu")
            if not 1 <= pc <= lib.RSEQ_PY_FREELIST_PER_CPU_MAX:
                raise ValueError(
                    f"per_cpu must be between 1 and {lib.RSEQ_PY_FREELIST_PER_CPU_MAX}, got {pc}")
        fl = lib.rseq_py_freelist_new(capacity, pc)
        if fl == ffi.NULL:
            raise MemoryError(f"cannot allocate a PerCpuFreelist of capacity {capacity}")
        self._fl = ffi.gc(fl, lib.rseq_py_freelist_free)
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        """Most handles the freelist can hold."""
        return self._capacity

    @property
    def per_cpu(self) -> int:
        """Room of each CPU's stack."""
        return int(lib.rseq_py_freelist_per_cpu(self._fl))

    def __len__(self) -> int:
        """Handles held: exact when nothing runs concurrently; while other
        threads push and pop, a value between the lowest and highest count
        the freelist had during the call, give or take their batches in
        flight."""
        return int(lib.rseq_py_freelist_len(self._fl))

    def push(self, handle: int) -> None:
        """Give ``handle`` back.

        Raises:
            TypeError: not an int.  OverflowError: outside int64.
            FreelistFull: it already holds ``capacity`` handles (nothing changed).
        """
        if type(handle) is not int or not INT64_MIN <= handle <= INT64_MAX:
            handle = as_int64(handle, "handle")
        if _push(self._fl, handle) != 0:
            raise FreelistFull(
                f"freelist full: it holds its capacity of {self._capacity} handles; "
                f"pop some or create it with a larger capacity")

    def pop(self) -> Optional[int]:
        """Take a handle, or ``None`` if the freelist held none at some instant during the call."""
        h = _pop_value(self._fl)
        if h == INT64_MIN and _was_empty():
            return None
        return h

    def push_many(self, handles: Iterable[int]) -> None:
        """Push every handle of an iterable, in batches of one section each where possible.

        All handles are validated before any is pushed.

        Raises:
            TypeError, OverflowError: as :meth:`push` (nothing pushed).
            FreelistFull: the freelist filled up; ``exc.pushed`` says how many
                of the leading handles went in (the rest did not).
        """
        values = [as_int64(h, "handle") for h in handles]
        if not values:
            return
        buf = ffi.new("int64_t[]", values)
        pushed = int(lib.rseq_py_freelist_push_many(self._fl, buf, len(values)))
        if pushed != len(values):
            raise FreelistFull(
                f"freelist full after {pushed} of {len(values)} handles: it holds its capacity "
                f"of {self._capacity}; the first {pushed} were pushed, the rest were not",
                pushed=pushed)

    def pop_many(self, n: int) -> List[int]:
        """Take up to ``n`` handles; fewer only if it ran empty (as for :meth:`pop`)."""
        n = as_int(n, "n")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        n = min(n, self._capacity)
        if n == 0:
            return []
        buf = ffi.new("int64_t[]", n)
        got = int(lib.rseq_py_freelist_pop_many(self._fl, buf, n))
        return list(buf[0:got])

    def drain(self) -> List[int]:
        """Take every handle, each exactly once, leaving the freelist empty.

        Handles pushed concurrently with the drain may or may not be in it
        (those that are not remain in the freelist).
        """
        buf = ffi.new("int64_t[]", self._capacity)
        got = int(lib.rseq_py_freelist_drain(self._fl, buf))
        return list(buf[0:got])

    def __repr__(self) -> str:
        return f"PerCpuFreelist(capacity={self._capacity}, len={len(self)})"

    def __reduce__(self) -> object:
        raise TypeError(
            "a PerCpuFreelist lives in this process's private memory and cannot be pickled"
        )
