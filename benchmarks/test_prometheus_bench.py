"""rseq_py.prometheus.Counter against prometheus_client's own Counter, measured in the same run.

Groups (compare.py prints each as a ratio table against the entry marked ``reference``):

* ``prometheus-inc-1thread``: one thread, 1000 ``inc()`` per timed call, on a
  counter without labels and on a cached labelled child
  (``c.labels("GET", "200")`` looked up once, as a hot path would).  Beside
  ours: prometheus_client in its default mode (a float under a
  ``threading.Lock``, private to the process, so it cannot serve a
  pre-forking server) and in its multiprocess mode (a lock, a pid check and a
  write into this process's own mmap file, merged on scrape).
* ``prometheus-procs-N``: N forked processes each doing K ``inc()`` of one
  labelled series per round: ours counting into one shared segment, against
  multiprocess mode with its file per process.  Scrape totals are checked
  after each benchmark, so ``--benchmark-disable`` still proves both exact.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os

import pytest
from prometheus_client import CollectorRegistry, Counter

from rseq_py import prometheus as rp

from benchutil import Calls, ProcGang, prometheus_multiprocess, prometheus_total, thread_counts

BATCH = 1000
K = 40_000  # incs per process per round
ROUNDS = 15
PROCS = thread_counts()


@contextlib.contextmanager
def ours(name: str, labelnames=()):
    segment = f"bench-prom-{os.getpid()}-{name}"
    rp.unlink(segment)
    registry = CollectorRegistry()
    try:
        yield rp.Counter(name, "benchmark counter", labelnames, registry=registry,
                         segment=segment), registry
    finally:
        rp.unlink(segment)


def _loop(inc, n: int = BATCH):
    """``inc()`` n times, looked up once, as a hot path would."""
    def batch():
        for _ in itertools.repeat(None, n):
            inc()

    return batch


def _run(benchmark, impl: str, inc, reference: bool = False) -> int:
    benchmark.extra_info.update(impl=impl, ops=BATCH, reference=reference)
    calls = Calls(_loop(inc))
    benchmark(calls)
    return calls.n * BATCH


one_thread = pytest.mark.benchmark(group="prometheus-inc-1thread")


@one_thread
def test_1thread_ours_inc(benchmark):
    """Ours, no labels: ``Counter.inc()`` x1000, one rseq section per inc into the shared segment."""
    with ours("bench_plain") as (c, registry):
        n = _run(benchmark, "rseq_py.prometheus Counter.inc()", c.inc, reference=True)
        assert registry.get_sample_value("bench_plain_total") == n


@one_thread
def test_1thread_ours_labelled_child_inc(benchmark):
    """Ours, a cached labelled child: ``child.inc()`` x1000."""
    with ours("bench_lab", ["method", "code"]) as (c, registry):
        n = _run(benchmark, "rseq_py.prometheus labels(..).inc()", c.labels("GET", "200").inc)
        assert registry.get_sample_value("bench_lab_total", {"method": "GET", "code": "200"}) == n


@one_thread
def test_1thread_prometheus_default_inc(benchmark):
    """Baseline: prometheus_client ``Counter.inc()`` in default mode (one process only)."""
    registry = CollectorRegistry()
    c = Counter("bench_default", "benchmark counter", registry=registry)
    n = _run(benchmark, "prometheus_client Counter.inc() (single process)", c.inc)
    assert registry.get_sample_value("bench_default_total") == n


@one_thread
def test_1thread_prometheus_multiprocess_child_inc(benchmark):
    """Baseline: prometheus_client cached labelled child ``inc()`` in multiprocess mode."""
    with prometheus_multiprocess() as d:
        c = Counter("bench_mp", "benchmark counter", ["method", "code"], registry=None)
        n = _run(benchmark, "prometheus_client multiprocess labels(..).inc()",
                 c.labels("GET", "200").inc)
        assert prometheus_total(d, "bench_mp") == n


@pytest.mark.parametrize("kind", ["ours", "prom_mp"])
@pytest.mark.parametrize("n", PROCS)
def test_procs(benchmark, n, kind):
    """N forked workers x K labelled incs per round, then one scrape: ours vs multiprocess mode."""
    benchmark.group = f"prometheus-procs-{n}"
    impl = {"ours": "rseq_py.prometheus, one shared segment",
            "prom_mp": "prometheus_client multiprocess, a file per process"}[kind]
    benchmark.extra_info.update(impl=impl, ops=n * K, reference=kind == "ours", processes=n)
    with contextlib.ExitStack() as stack:
        if kind == "ours":
            c, registry = stack.enter_context(ours("bench_procs", ["method"]))
            # Constructed again in each worker, after the fork, as a pre-forking server's worker would.
            make_work = lambda: _loop(rp.Counter(  # noqa: E731
                "bench_procs", "benchmark counter", ["method"], registry=None,
                segment=c.segment).labels("GET").inc, K)

            def total() -> float:
                return registry.get_sample_value("bench_procs_total", {"method": "GET"}) or 0.0
        else:
            d = stack.enter_context(prometheus_multiprocess())
            make_work = lambda: _loop(Counter(  # noqa: E731
                "bench_procs", "benchmark counter", ["method"], registry=None).labels("GET").inc, K)

            def total() -> float:
                assert len(glob.glob(os.path.join(d, "counter_*.db"))) == n
                return prometheus_total(d, "bench_procs")
        with ProcGang(n, make_work) as gang:
            calls = Calls(gang.round)
            benchmark.pedantic(calls, rounds=ROUNDS, warmup_rounds=1)
        assert total() == calls.n * n * K
