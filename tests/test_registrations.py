"""Thread lifecycle: in self-registration mode every thread's area is
registered on its first operation and unregistered when it exits."""

from __future__ import annotations

import os
import threading
import time

import rseq_py
from support import ARM64_HARNESS, scaled
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


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_thread_churn_leaks_nothing():
    """10,000 short-lived threads, each counting and moving freelist handles
    a few times.  In self-registration mode every one registers an area and
    unregisters it at exit (an area is a page of its own, unmapped after
    unregistering: a missed unregistration would make the kernel fault on
    the thread's next return to user space, not corrupt memory silently)."""
    c = rseq_py.PerCpuCounter(size=2)
    fl = rseq_py.PerCpuFreelist(capacity=4096, per_cpu=16)
    fl.push_many(range(4096))
    quiet()
    s0 = rseq_py.stats()

    def work() -> None:
        c.inc()
        c.add(3, index=1)
        hs = fl.pop_many(3)
        fl.push_many(hs)
        h = fl.pop()
        fl.push(h)

    def churn(n: int) -> None:
        for _ in range(n // 100):
            threads = [threading.Thread(target=work) for _ in range(100)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

    warm = max(100, scaled(1000)) // 100 * 100
    churn(warm)  # warm up the allocator and Python's thread machinery
    rss0 = rss_bytes()
    n = max(100, scaled(10_000)) // 100 * 100
    churn(n)
    grown = rss_bytes() - rss0
    total = warm + n
    assert c.values() == [total, 3 * total]
    assert sorted(fl.drain()) == list(range(4096))
    # 10,000 leaked areas would be 40 MB (a page each); allow allocator noise.
    # Under qemu-user the RSS is the emulator's, which keeps translated code
    # and state of every thread it ever ran: there it measures qemu, not us.
    if ARM64_HARNESS != "user":
        assert grown < 8 << 20, f"RSS grew {grown >> 10} KiB over {n} threads"
    if rseq_py.info().registered_by == "rseq_py":
        assert settle(lambda: rseq_py.stats().self_registrations_live == s0.self_registrations_live), (
            s0, rseq_py.stats())
        s1 = rseq_py.stats()
        assert s1.self_registrations - s0.self_registrations >= total
        assert s1.self_unregistrations - s1.self_registrations == s0.self_unregistrations - s0.self_registrations
        assert s1.self_registration_failures == s0.self_registration_failures
    print(f"\n{n} threads: RSS grew {grown >> 10} KiB")
