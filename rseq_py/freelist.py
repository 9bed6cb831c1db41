"""Per-CPU freelists of int64 handles: push and pop with no lock on the fast path."""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Iterable, List, Optional

from . import _fast, _segment
from ._checks import INT64_MAX, INT64_MIN, as_int, as_int64
from ._native import ffi, lib

if TYPE_CHECKING:
    from ._native import CData

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


class PerCpuFreelist(_segment.Shareable, _fast.FreelistCore):
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

    **Shared between processes**: :meth:`create` / :meth:`attach` / pickling,
    with the same lifecycle as a shared :class:`PerCpuCounter`.  The stacks
    are indexed by CPU, so sections protect them across processes too.
    What membarrier cannot reach (another process's sections), an affinity
    fence does: before editing another CPU's stack, the slow path runs on
    that CPU for a moment, so any section in flight there was preempted
    and will abort.  A process killed at any instant loses at most the
    handles it held (popped, or in the middle of its own pop or push); the
    pool's mutex is robust and the moves between a stack and the pool are
    journaled, so the next process repairs a move the dead one left half
    done, and a stack whose owner died is taken over.  Nothing is ever
    duplicated.

    Args:
        capacity: most handles it can hold, 1 to 2**32.
        per_cpu: room of each CPU's stack (default 256, at most ``capacity``);
            larger means fewer trips to the pool.

    Raises:
        TypeError: an argument is not an int.
        ValueError: an argument is out of range.
    """

    __slots__ = ("_capacity", "__weakref__")
    _KIND_NAME = "PerCpuFreelist"

    MAX_CAPACITY = lib.RSEQ_PY_FREELIST_MAX

    def __init__(self, capacity: int, *, per_cpu: Optional[int] = None) -> None:
        capacity, pc = self._check(capacity, per_cpu)
        fl = lib.rseq_py_freelist_new(capacity, pc)
        if fl == ffi.NULL:
            raise MemoryError(f"cannot allocate a PerCpuFreelist of capacity {capacity}")
        self._init_private(ffi.gc(fl, lib.rseq_py_freelist_free))

    @classmethod
    def _check(cls, capacity: object, per_cpu: object) -> "tuple[int, int]":
        capacity = as_int(capacity, "capacity")
        if not 1 <= capacity <= cls.MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {cls.MAX_CAPACITY}, got {capacity}")
        pc = 0
        if per_cpu is not None:
            pc = as_int(per_cpu, "per_cpu")
            if not 1 <= pc <= lib.RSEQ_PY_FREELIST_PER_CPU_MAX:
                raise ValueError(
                    f"per_cpu must be between 1 and {lib.RSEQ_PY_FREELIST_PER_CPU_MAX}, got {pc}")
        return capacity, pc

    def _adopt(self, fl: CData) -> None:
        self._capacity = int(lib.rseq_py_freelist_capacity(fl))

    @classmethod
    def create(cls, name: str, capacity: int, *, per_cpu: Optional[int] = None) -> "PerCpuFreelist":
        """Create a freelist in a new shared segment called ``name``.

        Raises:
            FileExistsError: the name is taken (attach to it, or unlink it).
            TypeError, ValueError: bad ``name``, ``capacity`` or ``per_cpu``.
        """
        capacity, pc = cls._check(capacity, per_cpu)
        _segment.path_of(name)
        return cls._create_shared(
            name, lib.rseq_py_freelist_shared_size(capacity, pc),
            lambda buf, nbytes: lib.rseq_py_freelist_create_at(buf, nbytes, capacity, pc),
            lib.rseq_py_freelist_free)

    @classmethod
    def attach(cls, name: str) -> "PerCpuFreelist":
        """Attach to the shared freelist ``name`` (created by any process).

        Raises:
            FileNotFoundError: no segment has that name.
            SegmentError: the segment is not a usable freelist (the message
                says why: foreign, truncated, incomplete, a counter, ...).
        """
        fl = cls._attach_shared(name, lib.RSEQ_PY_KIND_FREELIST,
                                lib.rseq_py_freelist_attach_at, lib.rseq_py_freelist_free)
        fl._check_control()
        return fl

    def _check_control(self) -> None:
        """The segment's control block and stacks must satisfy the
        freelist's invariants (capacity and per_cpu as the checked header
        says, pool and credits within capacity, ...), or it was overwritten
        and using it would write past its stacks, its pool or this process's
        buffers."""
        why = ffi.new("char[]", 256)
        if lib.rseq_py_freelist_check(self._live(), why, 256) != 0:
            name = self._name
            self.close()
            raise _segment.SegmentError(
                f"cannot attach PerCpuFreelist {name!r}: corrupted: {ffi.string(why).decode()}")

    @property
    def capacity(self) -> int:
        """Most handles the freelist can hold."""
        return self._capacity

    @property
    def robust(self) -> bool:
        """Whether the death of a process holding the pool's lock is recovered from.

        True wherever robust mutexes exist (any Linux kernel).  False only for
        a shared freelist created where they do not (qemu-user): there a
        process killed inside a pool operation blocks the others' slow paths.
        """
        return bool(lib.rseq_py_freelist_robust(self._live()))

    @property
    def per_cpu(self) -> int:
        """Room of each CPU's stack."""
        return int(lib.rseq_py_freelist_per_cpu(self._live()))

    def __len__(self) -> int:
        """Handles held: exact when nothing runs concurrently; while other
        threads push and pop, a value between the lowest and highest count
        the freelist had during the call, give or take their batches in
        flight."""
        return int(lib.rseq_py_freelist_len(self._live()))

    # The slow paths of the C base's push/pop: every call it cannot finish
    # in one section (or that is not plainly valid) comes here unchanged.

    def _push_slow(self, handle: int) -> None:
        """Give ``handle`` back.

        Raises:
            TypeError: not an int.  OverflowError: outside int64.
            FreelistFull: it already holds ``capacity`` handles (nothing changed).
        """
        if type(handle) is not int or not INT64_MIN <= handle <= INT64_MAX:
            handle = as_int64(handle, "handle")
        c = self._live()
        if _push(c, handle) != 0:
            raise FreelistFull(
                f"freelist full: it holds its capacity of {self._capacity} handles; "
                f"pop some or create it with a larger capacity")

    def _pop_slow(self) -> Optional[int]:
        """Take a handle, or ``None`` if the freelist held none at some instant during the call."""
        c = self._live()
        h = _pop_value(c)
        if h == INT64_MIN and _was_empty():
            return None
        return h

    def push_many(self, handles: Iterable[int]) -> None:
        """Push every handle of an iterable, in batches of one section each where possible.

        The handles are read and validated before any is pushed: if an item
        is not an int64, or the iterable itself raises, the exception
        propagates and nothing was pushed.  At most ``capacity + 1`` items
        are read (no more could ever fit), so an endless or huge iterable
        pushes what fits and raises :class:`FreelistFull` instead of
        exhausting memory; items past that are neither read nor checked.

        Raises:
            TypeError, OverflowError: as :meth:`push` (nothing pushed).
            FreelistFull: the freelist filled up; ``exc.pushed`` says how many
                of the leading handles went in (the rest did not).
        """
        c = self._live()
        values = [as_int64(h, "handle") for h in islice(handles, self._capacity + 1)]
        if not values:
            return
        buf = ffi.new("int64_t[]", values)
        pushed = int(lib.rseq_py_freelist_push_many(c, buf, len(values)))
        if pushed != len(values):
            of = (f"of {len(values)} handles" if len(values) <= self._capacity else
                  f"handles of an iterable longer than the capacity (its first {len(values)} "
                  f"were read)")
            raise FreelistFull(
                f"freelist full after {pushed} {of}: it holds its capacity "
                f"of {self._capacity}; the first {pushed} were pushed, the rest were not",
                pushed=pushed)

    def pop_many(self, n: int) -> List[int]:
        """Take up to ``n`` handles; fewer only if it ran empty (as for :meth:`pop`)."""
        c = self._live()
        n = as_int(n, "n")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        n = min(n, self._capacity)
        if n == 0:
            return []
        buf = ffi.new("int64_t[]", n)
        got = int(lib.rseq_py_freelist_pop_many(c, buf, n))
        return list(buf[0:got])

    def drain(self) -> List[int]:
        """Take every handle, each exactly once, leaving the freelist empty.

        Handles pushed concurrently with the drain may or may not be in it
        (those that are not remain in the freelist).
        """
        c = self._live()
        buf = ffi.new("int64_t[]", self._capacity)
        got = int(lib.rseq_py_freelist_drain(c, buf))
        return list(buf[0:got])

    def __repr__(self) -> str:
        where = "" if self._name is None else f"name={self._name!r}, "
        if self._c is None:
            return f"PerCpuFreelist({where}capacity={self._capacity}, closed)"
        return f"PerCpuFreelist({where}capacity={self._capacity}, len={len(self)})"
