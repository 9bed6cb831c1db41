"""A shared PerCpuCounter against the cross-process counters a Python user has, N processes on one counter.

Group ``shared-counter-procs-N`` (compare.py prints it as a ratio table
against ours): N forked processes, each doing ``K`` increments of one counter
they all share, per round.  The processes are forked once per benchmark and
released each round, so neither fork nor attach is timed.

* ours: ``PerCpuCounter.create(name)``; each process attaches by name and calls ``inc()``.
* ``multiprocessing.Value('q')`` with ``get_lock()`` and ``+= 1``: the correct standard-library choice.
* ``multiprocessing.RawValue('q')`` ``+= 1`` with no lock: cheaper, but racy.  Its lost
  counts go in ``extra_info["lost"]`` rather than failing the run.
* atomicshm ``AtomicU64.fetch_add(1)`` on one u64 of a SharedMemory block each
  process attaches by name: exact and lock-free, but every op from every
  process lands on the same cache line.
* prometheus_client ``Counter.inc()`` in multiprocess mode: each process keeps
  its own value in its own mmap file, summed only when scraped
  (``MultiProcessCollector``), so nothing is shared while counting; what it
  pays is a lock and a file write per op.
* floor, not a contender: each process ``inc()`` on a private PerCpuCounter of its own.
  Same code as ours with nothing shared, so it shows how far N processes scale on
  this machine at all; ours against it is what sharing costs.

Unlike the thread groups, the processes have a GIL each, so here the
counters really run in parallel: the question is whether total throughput
grows with N (per-CPU slots) or collapses (one lock, one cache line).  Every
entry records ``extra_info["ops"]``, all processes' ops in one round, so
medians convert to ns per op and Mops/s in total; every entry but RawValue
checks that not a single count was lost (prometheus through the scraped
total), so ``--benchmark-disable`` still proves them exact.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import multiprocessing
import os
from multiprocessing.shared_memory import SharedMemory

import pytest
from prometheus_client import Counter

import rseq_py

from benchutil import (Calls, ProcGang, atomicshm, needs_atomicshm, prometheus_multiprocess,
                       prometheus_total, shm_u64, thread_counts)

K = 40_000  # ops per process per round: long enough that a round dwarfs the pipe hand-offs
ROUNDS = 15  # rounds are short; this keeps the slowest entry (mp.Value at 2x CPUs) to a few seconds
PROCS = thread_counts()

# The floor runs right after ours: this kind of VM has spells of seconds where
# two busy cores each run slower, and neighbours in time are likelier to share one.
IMPLS = {
    "rseq": "shared PerCpuCounter.inc()",
    "private": "private PerCpuCounter each (floor, not shared)",
    "mp_value": "mp.Value('q') + get_lock()",
    "raw_value": "mp.RawValue('q') += 1 (racy)",
    "atomicshm": "atomicshm fetch_add(1), one shared u64",
    "prom_mp": "prometheus Counter.inc() multiprocess",
}
KINDS = [pytest.param(k, marks=needs_atomicshm) if k == "atomicshm" else k for k in IMPLS]


def _inc_loop(inc):
    def work():
        for _ in itertools.repeat(None, K):
            inc()

    return work


def _bench(benchmark, n: int, kind: str, make_work) -> int:
    """Time rounds of ``n`` processes running ``make_work()``'s loop; return every round run, warmup included."""
    benchmark.extra_info.update(impl=IMPLS[kind], ops=n * K, reference=kind == "rseq",
                                processes=n, ops_per_process=K)
    with ProcGang(n, make_work) as gang:
        calls = Calls(gang.round)
        benchmark.pedantic(calls, rounds=ROUNDS, warmup_rounds=1)
    return calls.n


@contextlib.contextmanager
def _counter(kind: str, n: int):
    """Yield ``(make_work, read)`` for ``kind``: ``make_work()`` runs in each child, ``read()`` totals in the parent.

    Each contender is written the cheapest way a user would: the method or
    lock looked up once per process and the op inlined in the loop.
    """
    if kind == "rseq":
        name = f"bench-shared-{os.getpid()}-{n}"
        c = rseq_py.PerCpuCounter.create(name)
        try:
            # Attach rather than use the inherited mapping: it is how unrelated processes share one.
            yield (lambda: _inc_loop(rseq_py.PerCpuCounter.attach(name).inc)), c.value
        finally:
            c.unlink()
            c.close()
        return
    if kind == "private":
        yield _private_checked, None
        return
    if kind == "atomicshm":
        with shm_u64() as (name, cell):

            def make_atomic():
                shm = SharedMemory(name=name)
                add = atomicshm.AtomicView(shm.buf).cell_u64(0).fetch_add

                # The default argument keeps the block open: collected, it would try to close under the view.
                def work(_shm=shm):
                    for _ in itertools.repeat(None, K):
                        add(1)

                return work

            yield make_atomic, cell.load
        return
    if kind == "prom_mp":
        with prometheus_multiprocess() as d:

            def read():
                # One file per process, or the mode was not in force in the children.
                assert len(glob.glob(os.path.join(d, "counter_*.db"))) == n
                return prometheus_total(d, "bench_shared")

            # Created in the child, after the fork, as a worker of a pre-forking server would.
            yield lambda: _inc_loop(Counter("bench_shared", "benchmark counter", registry=None).inc), read
        return
    ctx = multiprocessing.get_context("fork")
    if kind == "mp_value":
        v = ctx.Value("q", 0)

        def make_locked():
            lock = v.get_lock()

            def work():
                for _ in itertools.repeat(None, K):
                    with lock:
                        v.value += 1

            return work

        yield make_locked, lambda: v.value
        return
    raw = ctx.RawValue("q", 0)

    def make_racy():
        def work():
            for _ in itertools.repeat(None, K):
                raw.value += 1

        return work

    yield make_racy, lambda: raw.value


def _private_checked():
    c = rseq_py.PerCpuCounter()
    loop = _inc_loop(c.inc)
    done = [0]

    def work():
        # The counts live in the child, so the child checks them; a failure comes back with the round.
        loop()
        done[0] += K
        assert c.value() == done[0]

    return work


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", PROCS)
def test_procs(benchmark, n, kind):
    """N processes x K increments of one counter per round: ours vs mp.Value + lock, racy RawValue, atomicshm,
    prometheus multiprocess, floor."""
    benchmark.group = f"shared-counter-procs-{n}"
    with _counter(kind, n) as (make_work, read):
        rounds = _bench(benchmark, n, kind, make_work)
        expected = rounds * n * K
        if kind == "raw_value":
            got = read()
            # A lost read-modify-write can only drop counts, never add them.
            assert 0 < got <= expected
            benchmark.extra_info.update(lost=expected - got, lost_fraction=(expected - got) / expected)
        elif read is not None:
            assert read() == expected
