"""Helpers shared by the benchmarks: thread counts, a reusable gang of worker threads, call counting."""

from __future__ import annotations

import os
import threading
from typing import Callable, List, Optional

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
