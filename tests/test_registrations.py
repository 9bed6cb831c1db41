"""Thread lifecycle: in self-registration mode every thread's area is
registered on its first operation and unregistered when it exits."""

from __future__ import annotations

import threading
import time

import rseq_py
from support import scaled
from rseq_py.stress import counter_stress


def settle(pred, timeout: float = 10.0) -> bool:
    """Python's join() returns before the OS thread has run its TLS
    destructors; give them a moment."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def quiet() -> None:
    """Threads of earlier tests may still be in their exit path: wait until
    only this (main) thread's registration is live."""
    if rseq_py.info().registered_by == "rseq_py":
        assert settle(lambda: rseq_py.stats().self_registrations_live == 1), rseq_py.stats()


def test_short_lived_threads_do_not_leak_registrations():
    c = rseq_py.PerCpuCounter(size=2)
    quiet()
    s0 = rseq_py.stats()
    batches, per_batch = scaled(40), 50
    for _ in range(batches):
        threads = [threading.Thread(target=lambda: (c.inc(), c.add(2, index=1))) for _ in range(per_batch)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    n = batches * per_batch
    assert c.values() == [n, 2 * n]
    if rseq_py.info().registered_by == "rseq_py":
        assert settle(lambda: rseq_py.stats().self_registrations_live == s0.self_registrations_live), (
            s0, rseq_py.stats())
        s1 = rseq_py.stats()
        assert s1.self_registrations - s0.self_registrations >= n
        assert s1.self_unregistrations - s0.self_unregistrations >= n
        assert s1.self_registration_failures == s0.self_registration_failures
    else:
        # glibc (or nobody) registers threads: we never register one.
        assert rseq_py.stats().self_registrations == 0


def test_stress_workers_unregister_on_exit():
    quiet()
    s0 = rseq_py.stats()
    r = counter_stress("rseq_inject", threads=64, ops_per_thread=scaled(5_000), inject_loops=50)
    assert r.observed == r.expected
    s1 = rseq_py.stats()
    assert s1.self_registrations_live == s0.self_registrations_live
    if rseq_py.info().registered_by == "rseq_py":
        assert s1.self_registrations - s0.self_registrations == 64
    assert s1.escapes == s0.escapes  # every worker's sections were entered
