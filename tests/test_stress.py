"""The C stress driver: oversubscribed pthreads (GIL released), injected delays
inside the section, a signal storm; exact totals and counted aborts.

One parameterised driver covers every section variant and injection mode,
in whichever registration mode this process runs (see test_modes.py)."""

from __future__ import annotations

import pytest

import rseq_py
from support import oversubscribed_threads, scaled, stress_until_aborts
from rseq_py.stress import counter_stress

RSEQ = rseq_py.info().backend == "rseq"

CASES = [
    # variant, inject_loops, signal_interval_us, ops_per_thread
    ("rseq", 0, 0, 400_000),
    ("rseq", 0, 20, 2_000_000),
    ("rseq_inject", 200, 0, 300_000),
    ("rseq_inject", 200, 50, 300_000),
    ("rseq_inject", 5_000, 20, 20_000),
    ("atomic", 0, 20, 200_000),
]


@pytest.mark.parametrize("variant, loops, signal_us, ops", CASES)
def test_stress_totals_are_exact(variant, loops, signal_us, ops):
    threads = oversubscribed_threads()
    ops = scaled(ops)
    kw = dict(variant=variant, threads=threads, ops_per_thread=ops, size=3,
              inject_loops=loops, signal_interval_us=signal_us)
    if variant == "rseq_inject" and RSEQ:
        runs = stress_until_aborts(**kw)
        r = runs[-1]
    else:
        r = counter_stress(**kw)
    assert r.threads == threads
    assert r.expected == sum((i % 7 + 1) * ops for i in range(threads))
    assert r.observed == r.expected, r
    if signal_us and r.elapsed_s >= 0.1:
        # Long enough for the storm to land (short fallback runs may finish
        # between two rounds of signals).
        assert r.signals > 0, r
    if variant == "rseq_inject" and RSEQ:
        # Preemption and signals really landed inside sections, and every
        # one of those sections was restarted rather than committed twice.
        assert r.aborts > 0, r
    else:
        assert r.aborts == 0, r


def test_unprotected_control_loses_updates():
    """The same load/delay/store without a section loses updates under the
    same load: proof that the stress above really races."""
    for _ in range(3):
        r = counter_stress("unprotected", threads=oversubscribed_threads(), ops_per_thread=scaled(60_000),
                           inject_loops=200, signal_interval_us=50)
        if r.observed < r.expected:
            return
    pytest.fail(f"no update lost without rseq: the stress is not concurrent ({r})")


def test_fallback_paths_in_an_rseq_process_are_exact():
    """Adds that escape to the atomic slots mix with section commits exactly."""
    c = rseq_py.PerCpuCounter(2)
    a = counter_stress("atomic", threads=4, ops_per_thread=scaled(50_000), counter=c)
    b = counter_stress("rseq_inject", threads=oversubscribed_threads(), ops_per_thread=scaled(20_000),
                       inject_loops=100, signal_interval_us=50, counter=c)
    assert c.value(0) + c.value(1) == a.expected + b.expected


def test_reset_concurrent_with_stress_conserves_the_total():
    import threading

    c = rseq_py.PerCpuCounter(3)
    taken: list[int] = []
    done = threading.Event()

    def resetter() -> None:
        while not done.is_set():
            taken.extend(c.reset())

    t = threading.Thread(target=resetter)
    t.start()
    try:
        r = counter_stress("rseq_inject", threads=oversubscribed_threads(), ops_per_thread=scaled(40_000),
                           inject_loops=100, signal_interval_us=50, counter=c)
    finally:
        done.set()
        t.join()
    assert len(taken) > 3
    assert sum(taken) + sum(c.values()) == r.expected
