"""Counters used from a signal handler that interrupted a thread inside its
own section.  Signal delivery is a preemption point: the kernel moves the
interrupted section to its abort handler before the handler runs, so the
handler's add and the restarted section never commit against the same load.
Proven with a single counter slot that both write: any add lost to a stale
commit would show as observed < expected."""

from __future__ import annotations

import os

import pytest

import rseq_py
from rseq_py.stress import counter_stress
from support import allowed_cpus, oversubscribed_threads, scaled, stress_until_aborts


@pytest.mark.parametrize("threads", ["one per CPU, pinned", "oversubscribed"])
def test_handler_adds_land_inside_sections_and_stay_exact(threads, restore_affinity):
    if threads.startswith("one"):
        # One thread on one CPU: nothing preempts it but the signals, so
        # every abort is a signal landing inside the section.
        os.sched_setaffinity(0, {allowed_cpus()[0]})
        n = 1
    else:
        n = oversubscribed_threads()
    c = rseq_py.PerCpuCounter(size=1)  # one slot per CPU: handler and worker collide
    runs = stress_until_aborts(variant="rseq_inject", threads=n, ops_per_thread=scaled(200_000),
                               inject_loops=300, signal_interval_us=20, handler_adds=True,
                               counter=c)
    handler = sum(r.handler_adds for r in runs)
    assert handler > 0, runs
    assert c.value() == sum(r.expected for r in runs)
    if rseq_py.info().backend == "rseq":
        assert runs[-1].aborts > 0, runs
    r = runs[-1]
    print(f"\n[{threads}] handler adds {handler}, signals {r.signals}, aborts {r.aborts}, "
          f"total {c.value()}")


def test_the_check_fails_without_sections(restore_affinity):
    """The negative control: the same collision with the section replaced by
    load/delay/store loses handler adds, so the test above can fail."""
    if rseq_py.info().backend != "rseq":
        # The fallback's handler adds go to the atomic slots, which the
        # control's plain stores never touch: nothing to collide with.
        pytest.skip(f"the control collides with the rseq slots only; backend here: {rseq_py.info().backend}")
    os.sched_setaffinity(0, {allowed_cpus()[0]})
    lost = 0
    for _ in range(20):
        r = counter_stress("unprotected", threads=1, ops_per_thread=scaled(50_000), size=1,
                           inject_loops=300, signal_interval_us=20, handler_adds=True)
        lost += r.expected - r.observed
        if lost > 0:
            break
    assert lost > 0, r


def test_handler_registers_a_fresh_thread_safely():
    """In self-registration mode a signal may arrive before a worker's first
    operation, so the handler registers the thread (mmap, signals blocked:
    async-signal-safe).  Many short workers make that happen often."""
    s0 = rseq_py.stats()
    total = 0
    for _ in range(scaled(20)):
        r = counter_stress("rseq", threads=64, ops_per_thread=50, size=1, signal_interval_us=5,
                           handler_adds=True)
        assert r.exact, r
        total += r.handler_adds
    s1 = rseq_py.stats()
    assert total > 0
    assert s1.self_registration_failures == s0.self_registration_failures
    if rseq_py.info().registered_by == "rseq_py":
        assert s1.self_registrations - s0.self_registrations >= 64 * scaled(20)


def test_a_section_aborted_every_time_falls_back_exactly():
    """A delay inside the section far longer than the gap between signals:
    every attempt aborts (as under a debugger stepping through it).  After 32
    the add takes the atomic slow path: counted as exhausted, still exact."""
    if rseq_py.info().backend != "rseq":
        pytest.skip(f"no sections on the {rseq_py.info().backend} backend")
    # How long a section must be for no attempt to survive depends on how
    # often the machine really delivers the 10 us timer (an emulated guest
    # does it at its tick): lengthen the delay until the adds exhaust.
    ops = max(2, scaled(40))
    for loops in (2_000_000, 8_000_000, 32_000_000, 128_000_000):
        r = counter_stress("rseq_inject", threads=2, ops_per_thread=ops, size=1,
                           inject_loops=loops, signal_interval_us=10)
        assert r.exact, r
        if r.exhausted > 0:
            break
    assert r.exhausted > 0 and r.aborts >= 32 * r.exhausted, r
    print(f"\nexhausted {r.exhausted} of {2 * ops} adds at {loops} delay loops, aborts {r.aborts}")
