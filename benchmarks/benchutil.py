"""Helpers shared by the benchmarks: thread counts, reusable gangs of worker threads or processes, call counting,
and setup for the third-party baselines (atomicshm, prometheus_client)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import tempfile
import threading
import traceback
from multiprocessing.shared_memory import SharedMemory
from typing import Callable, Iterator, List, Optional, Tuple

import pytest
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector

# atomicshm ships for x86_64 only (so does the test extra's pin): elsewhere its
# entries skip and the rest of the suite runs.  On x86_64 a missing atomicshm
# is a broken install and fails the import.
if platform.machine() == "x86_64":
    import atomicshm
else:
    atomicshm = None
needs_atomicshm = pytest.mark.skipif(
    atomicshm is None, reason=f"atomicshm is built for x86_64 only, not {platform.machine()}")

# The CPUs this process may actually run on, which can be fewer than os.cpu_count().
CPUS = len(os.sched_getaffinity(0))


def thread_counts() -> List[int]:
    """1, 2, 4, ... up to the CPU count, the CPU count itself, and 2x it (oversubscribed).

    Powers of two keep the list short on big machines; 2x CPUs is where
    preemption inside a critical section becomes routine.
    """
    counts = {CPUS, 2 * CPUS}
    n = 1
    while n <= CPUS:
        counts.add(n)
        n *= 2
    return sorted(counts)


class Calls:
    """Wraps a function and counts its calls, however many rounds or iterations the harness chose."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn
        self.n = 0

    def __call__(self) -> None:
        self.n += 1
        self.fn()


class Gang:
    """``n`` threads started once, each running ``work()`` once per :meth:`round`.

    Starting threads costs far more than a batch of counter ops, so the
    threads live across rounds and a round is only: release them, wait for all.
    """

    TIMEOUT_S = 120.0

    def __init__(self, n: int, work: Callable[[], None]) -> None:
        self._work = work
        self._start = threading.Barrier(n + 1, timeout=self.TIMEOUT_S)
        self._done = threading.Barrier(n + 1, timeout=self.TIMEOUT_S)
        self._stop = False
        self._error: Optional[BaseException] = None
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(n)]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            self._start.wait()
            if self._stop:
                return
            try:
                self._work()
            except BaseException as e:  # reach the barrier anyway, or the main thread hangs
                self._error = e
            self._done.wait()

    def round(self) -> None:
        self._start.wait()
        self._done.wait()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "Gang":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._start.wait()
        for t in self._threads:
            t.join(self.TIMEOUT_S)


class ProcGang:
    """``n`` forked processes started once, each running its ``work()`` once per :meth:`round`.

    Each child calls ``make_work()`` once, after the fork, and runs what it
    returns every round, so per-process setup (attaching to a segment) stays
    out of the timing like the fork itself.  A round is one byte down each
    child's pipe and one reply back; a child's exception comes back as its
    traceback and is raised here, and a child that dies fails the round
    instead of hanging it.
    """

    TIMEOUT_S = 120.0

    def __init__(self, n: int, make_work: Callable[[], Callable[[], None]]) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conns = []
        self._procs = []
        for _ in range(n):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=self._loop, args=(child, make_work), daemon=True)
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)

    @staticmethod
    def _loop(conn, make_work: Callable[[], Callable[[], None]]) -> None:
        err: Optional[str] = None
        try:
            work = make_work()
        except BaseException:  # report it on the first round rather than die silently
            err = traceback.format_exc()
        while conn.recv():
            if err is None:
                try:
                    work()
                except BaseException:
                    err = traceback.format_exc()
            conn.send(err)

    def round(self) -> None:
        for c in self._conns:
            c.send(True)
        errors = []
        for c, p in zip(self._conns, self._procs):
            if not c.poll(self.TIMEOUT_S):
                raise TimeoutError(f"worker process {p.pid} took over {self.TIMEOUT_S} s on one round")
            try:
                err = c.recv()
            except EOFError:
                p.join(self.TIMEOUT_S)
                raise RuntimeError(f"worker process {p.pid} died, exit code {p.exitcode}") from None
            if err is not None:
                errors.append(err)
        if errors:
            raise RuntimeError("worker process failed:\n" + errors[0])

    def __enter__(self) -> "ProcGang":
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self._conns:
            try:
                c.send(False)
            except OSError:  # that child is already gone
                pass
        for p in self._procs:
            p.join(self.TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join()
        for c in self._conns:
            c.close()


@contextlib.contextmanager
def shm_u64() -> Iterator[Tuple[str, "atomicshm.AtomicU64"]]:
    """A zeroed 8-byte SharedMemory block and an atomicshm cell on its one u64; yields ``(name, cell)``.

    The view is closed before the block, which refuses to close while a view
    still holds its buffer.
    """
    shm = SharedMemory(create=True, size=8)
    try:
        view = atomicshm.AtomicView(shm.buf)
        try:
            yield shm.name, view.cell_u64(0)
        finally:
            view.close()
    finally:
        shm.close()
        shm.unlink()


@contextlib.contextmanager
def prometheus_multiprocess() -> Iterator[str]:
    """Put prometheus_client in multiprocess mode for the metrics created inside; yields the metrics directory.

    prometheus_client picks its value class once, when first imported, from
    ``PROMETHEUS_MULTIPROC_DIR``.  Setting the variable and the class here, as
    its own tests do, and undoing both after, keeps every other metric in the
    session plain.  Processes forked inside inherit the mode, and each writes
    its own ``counter_<pid>.db`` there, as under a pre-forking server.
    """
    with tempfile.TemporaryDirectory(prefix="bench-prom-") as d, pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROMETHEUS_MULTIPROC_DIR", d)
        cls = values.MultiProcessValue()
        mp.setattr(values, "ValueClass", cls)
        try:
            yield d
        finally:
            cls.close_all_files()


def prometheus_total(path: str, name: str) -> float:
    """The value of counter ``name`` summed over every process's file in ``path``, as a scrape would see it."""
    return sum(s.value for m in MultiProcessCollector(None, path=path).collect()
               for s in m.samples if s.name == name + "_total")
