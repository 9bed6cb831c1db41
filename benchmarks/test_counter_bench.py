"""PerCpuCounter against what a Python user would reach for instead, measured in the same run.

Groups (compare.py prints each as a ratio table against the entry marked ``reference``):

* ``counter-inc-1thread``: one thread, 1000 ops per timed call; beside the
  standard library, the two third-party counters a user would reach for:
  atomicshm's lock-free ``fetch_add`` on shared memory (one atomic instruction
  behind a plain C-API call) and prometheus_client's ``Counter``, plain and
  in its multiprocess mode (the usual reason a Python service counts at all).
* ``counter-inc-threads-N``: N Python threads, each doing ``PY_OPS`` ops per round.
* ``c-level-threads-N``: N pthreads in C with the GIL released (``rseq_py.stress.counter_bench``).

Every entry records ``extra_info["ops"]``, the ops one timed call performs,
so medians convert to ns per op; and checks the count it produced, so
``--benchmark-disable`` still proves each contender counted right.
"""

from __future__ import annotations

import itertools
import multiprocessing
import statistics
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter

import rseq_py
from rseq_py.stress import BENCH_MODES, counter_bench

from benchutil import (Calls, Gang, needs_atomicshm, prometheus_multiprocess, prometheus_total,
                       shm_u64, thread_counts)

BATCH = 1000  # ops per timed call: the harness's own per-call cost would swamp a single op
PY_OPS = 5000  # ops per thread per round in the Python-threads groups
C_OPS = 300_000  # ops per thread per call of counter_bench: a few ms per call on 2 cores
THREADS = thread_counts()


def _mark(benchmark, impl: str, ops: int, reference: bool = False) -> None:
    benchmark.extra_info.update(impl=impl, ops=ops, reference=reference)


# --- counter-inc-1thread -------------------------------------------------------------
# Each contender is written the cheapest way a user would: the method or lock
# bound to a local and the op inlined in the loop, so baselines are not
# handicapped by extra calls that ours does not pay.

one_thread = pytest.mark.benchmark(group="counter-inc-1thread")


@one_thread
def test_1thread_rseq_inc_per1000(benchmark):
    """Ours: ``counter.inc()`` x1000 (a C-API method calling the rseq section)."""
    c = rseq_py.PerCpuCounter()
    inc = c.inc

    def batch():
        for _ in itertools.repeat(None, BATCH):
            inc()

    calls = Calls(batch)
    _mark(benchmark, "PerCpuCounter.inc()", BATCH, reference=True)
    benchmark(calls)
    assert c.value() == calls.n * BATCH


@one_thread
def test_1thread_rseq_add_index_per1000(benchmark):
    """Ours: ``counter.add(5, index=1)`` x1000: the general path, delta and index checked."""
    c = rseq_py.PerCpuCounter(size=2)
    add = c.add

    def batch():
        for _ in itertools.repeat(None, BATCH):
            add(5, index=1)

    calls = Calls(batch)
    _mark(benchmark, "PerCpuCounter.add(5, index=1)", BATCH)
    benchmark(calls)
    assert c.value(1) == 5 * calls.n * BATCH and c.value(0) == 0


@one_thread
def test_1thread_cffi_binding_add_per1000(benchmark):
    """Before the C-API fast path: the same add through the cffi binding
    (``lib.rseq_py_counter_add``, as ``inc`` was called before), x1000."""
    from rseq_py._native import lib

    c = rseq_py.PerCpuCounter()
    add, ptr = lib.rseq_py_counter_add, c._c

    def batch():
        for _ in itertools.repeat(None, BATCH):
            add(ptr, 0, 1)

    calls = Calls(batch)
    _mark(benchmark, "cffi binding: lib.rseq_py_counter_add", BATCH)
    benchmark(calls)
    assert c.value() == calls.n * BATCH


@one_thread
def test_1thread_threading_lock_per1000(benchmark):
    """Baseline: ``with lock: cell[0] += 1`` x1000 (threading.Lock, the usual thread-safe counter)."""
    lock = threading.Lock()
    cell = [0]

    def batch():
        for _ in itertools.repeat(None, BATCH):
            with lock:
                cell[0] += 1

    calls = Calls(batch)
    _mark(benchmark, "threading.Lock + int", BATCH)
    benchmark(calls)
    assert cell[0] == calls.n * BATCH


@one_thread
def test_1thread_itertools_count_per1000(benchmark):
    """Baseline: ``next(itertools.count())`` x1000: atomic only because of the GIL, unreadable without bumping."""
    c = itertools.count()

    def batch():
        for _ in itertools.repeat(None, BATCH):
            next(c)

    calls = Calls(batch)
    _mark(benchmark, "next(itertools.count())", BATCH)
    benchmark(calls)
    assert next(c) == calls.n * BATCH


@one_thread
def test_1thread_mp_value_lock_per1000(benchmark):
    """Baseline: ``multiprocessing.Value('q')`` with ``get_lock()`` and ``+= 1``, x1000 (the cross-process choice)."""
    v = multiprocessing.Value("q", 0)
    lock = v.get_lock()

    def batch():
        for _ in itertools.repeat(None, BATCH):
            with lock:
                v.value += 1

    calls = Calls(batch)
    _mark(benchmark, "mp.Value('q') + get_lock()", BATCH)
    benchmark(calls)
    assert v.value == calls.n * BATCH


@one_thread
@needs_atomicshm
def test_1thread_atomicshm_fetch_add_per1000(benchmark):
    """Baseline: atomicshm ``AtomicU64.fetch_add(1)`` x1000 on one u64 of a SharedMemory block.

    One atomic add per op behind a plain C-API method: the cheapest exact
    shared counter without per-CPU slots.  The cell form skips the offset
    argument of ``AtomicView.fetch_add_u64(0, 1)``, a few ns cheaper.
    """
    with shm_u64() as (_, cell):
        add = cell.fetch_add

        def batch():
            for _ in itertools.repeat(None, BATCH):
                add(1)

        calls = Calls(batch)
        _mark(benchmark, "atomicshm AtomicU64.fetch_add(1)", BATCH)
        benchmark(calls)
        assert cell.load() == calls.n * BATCH


@one_thread
def test_1thread_prometheus_counter_per1000(benchmark):
    """Baseline: prometheus_client ``Counter.inc()`` x1000, default mode: a float under a threading.Lock, per process."""
    registry = CollectorRegistry()
    inc = Counter("bench_inc", "benchmark counter", registry=registry).inc

    def batch():
        for _ in itertools.repeat(None, BATCH):
            inc()

    calls = Calls(batch)
    _mark(benchmark, "prometheus Counter.inc()", BATCH)
    benchmark(calls)
    assert registry.get_sample_value("bench_inc_total") == calls.n * BATCH


@one_thread
def test_1thread_prometheus_multiprocess_per1000(benchmark):
    """Baseline: prometheus_client ``Counter.inc()`` x1000 in multiprocess mode: lock, pid check, write to an mmap file.

    The count is read back the way a scrape reads it, from the file.
    """
    with prometheus_multiprocess() as d:
        inc = Counter("bench_inc", "benchmark counter", registry=None).inc

        def batch():
            for _ in itertools.repeat(None, BATCH):
                inc()

        calls = Calls(batch)
        _mark(benchmark, "prometheus Counter.inc() multiprocess", BATCH)
        benchmark(calls)
        assert prometheus_total(d, "bench_inc") == calls.n * BATCH


@one_thread
def test_1thread_local_int_floor_per1000(benchmark):
    """Floor, not a contender: ``n += 1`` on a local int x1000, i.e. the loop's own cost."""

    def batch():
        n = 0
        for _ in itertools.repeat(None, BATCH):
            n += 1
        assert n == BATCH

    calls = Calls(batch)
    _mark(benchmark, "local int += 1 (floor, not shared)", BATCH)
    benchmark(calls)
    assert calls.n >= 1


# --- counter-inc-threads-N -----------------------------------------------------------
# N threads hammer one counter.  Ours releases and retakes the GIL around
# every op (the cffi call does); the lock baselines hold it throughout.  Under
# the GIL no contender's ops run in parallel, so this shows what contention and
# GIL hand-offs cost per op, not scaling (the c-level groups show that).


def _threads_bench(benchmark, n: int, impl: str, work, reference: bool = False) -> int:
    """Time rounds of ``n`` threads running ``work``; return every round run, warmup included."""
    _mark(benchmark, impl, n * PY_OPS, reference)
    benchmark.extra_info["threads"] = n
    with Gang(n, work) as gang:
        calls = Calls(gang.round)
        benchmark.pedantic(calls, rounds=10, warmup_rounds=1)
    return calls.n


def _py_inc(kind: str):
    """A fresh (work, read) pair for ``kind``: ``work`` does PY_OPS ops, ``read`` returns the total."""
    if kind == "rseq":
        c = rseq_py.PerCpuCounter()

        def work():
            inc = c.inc
            for _ in itertools.repeat(None, PY_OPS):
                inc()

        return work, c.value
    if kind == "lock":
        lock, cell = threading.Lock(), [0]

        def work():
            for _ in itertools.repeat(None, PY_OPS):
                with lock:
                    cell[0] += 1

        return work, lambda: cell[0]
    v = multiprocessing.Value("q", 0)
    vlock = v.get_lock()

    def work():
        for _ in itertools.repeat(None, PY_OPS):
            with vlock:
                v.value += 1

    return work, lambda: v.value


PY_IMPLS = {
    "rseq": "PerCpuCounter.inc()",
    "lock": "threading.Lock + int",
    "mp_value": "mp.Value('q') + get_lock()",
}


@pytest.mark.parametrize("kind", list(PY_IMPLS))
@pytest.mark.parametrize("n", THREADS)
def test_threads(benchmark, n, kind):
    """N Python threads x PY_OPS increments of one shared counter, per round: ours vs the two lock baselines."""
    benchmark.group = f"counter-inc-threads-{n}"
    work, read = _py_inc(kind)
    rounds = _threads_bench(benchmark, n, PY_IMPLS[kind], work, reference=kind == "rseq")
    assert read() == rounds * n * PY_OPS


# --- c-level-threads-N ---------------------------------------------------------------
# The C core with no interpreter in the loop: what the counter costs once the
# binding is out of the way, beside the per-CPU atomic, shared atomic and mutex
# a C programmer would use.


@pytest.mark.parametrize("mode", list(BENCH_MODES))
@pytest.mark.parametrize("n", THREADS)
def test_c_level(benchmark, n, mode):
    """counter_bench(mode, n, C_OPS): one call per round; the C side's own clock goes in extra_info."""
    benchmark.group = f"c-level-threads-{n}"
    _mark(benchmark, mode, n * C_OPS, reference=mode == "rseq")
    results = []

    def once():
        results.append(counter_bench(mode, n, C_OPS))

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    for r in results:
        assert (r.mode, r.threads) == (mode, n)
        assert r.ns_per_op > 0 and r.total_mops == pytest.approx(n * 1e3 / r.ns_per_op)
    benchmark.extra_info.update(
        threads=n,
        ns_per_op_per_thread=statistics.median(r.ns_per_op for r in results),
        total_mops=statistics.median(r.total_mops for r in results),
    )
