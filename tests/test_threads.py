"""Python threads: cffi releases the GIL around every call, so the C adds of
different threads really run in parallel on different CPUs."""

from __future__ import annotations

import threading

import rseq_py
from support import oversubscribed_threads, scaled


def run_threads(n: int, target, *args) -> None:
    threads = [threading.Thread(target=target, args=(i, *args)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_python_threads_add_exactly():
    c = rseq_py.PerCpuCounter(size=4)
    n, ops = oversubscribed_threads(), scaled(20_000)

    def work(i: int) -> None:
        for k in range(ops):
            c.add(i + 1, index=k % 4)
            c.inc(3)
            c.sub(1, index=3)

    run_threads(n, work)
    per_index = [sum(i + 1 for i in range(n)) * (ops // 4 + (1 if j < ops % 4 else 0)) for j in range(4)]
    assert c.values() == per_index
    assert sum(sum(c.per_cpu(j)) for j in range(4)) == sum(per_index)


def test_readers_see_monotonic_bounded_sums_while_threads_add():
    c = rseq_py.PerCpuCounter()
    n, ops = oversubscribed_threads(), scaled(20_000)
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(c.value())

    r = threading.Thread(target=reader)
    r.start()
    try:
        run_threads(n, lambda i: [c.inc() for _ in range(ops)])
    finally:
        stop.set()
        r.join()
    total = n * ops
    assert c.value() == total
    assert len(seen) > 1
    # Only increments happen, and every slot read is a whole 64-bit value:
    # successive sums never go down and never pass the final total.
    assert all(a <= b for a, b in zip(seen, seen[1:]))
    assert seen[-1] <= total


def test_stress_driver_from_python_threads_at_once():
    """Two C stress runs serialize (they share the inject globals), while
    Python threads keep adding to the same counter meanwhile."""
    from rseq_py.stress import counter_stress

    c = rseq_py.PerCpuCounter(2)
    results = []
    run_threads(2, lambda i: results.append(
        counter_stress("rseq_inject", threads=4, ops_per_thread=scaled(50_000), inject_loops=50, counter=c)))
    ops = scaled(10_000)
    run_threads(4, lambda i: [c.add(2, index=1) for _ in range(ops)])
    assert sum(c.values()) == sum(r.expected for r in results) + 4 * ops * 2
