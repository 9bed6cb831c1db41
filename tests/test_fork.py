"""fork(): the child inherits the registration and keeps counting exactly,
from its main thread and from threads it starts, even when the fork came
from a thread while others were in the middle of operations."""

from __future__ import annotations

import json
import os
import threading

import rseq_py
from rseq_py.stress import counter_stress, freelist_stress
from support import allowed_cpus, oversubscribed_threads, scaled, stress_until_aborts


def in_child(fn) -> dict:
    """Run fn() in a forked child; return the JSON it reports."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(fn()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    return json.loads(data)


def test_child_counts_from_main_and_new_threads():
    c = rseq_py.PerCpuCounter(size=2)
    c.add(100)
    before_info = rseq_py.info()

    def child() -> dict:
        for _ in range(1000):
            c.inc()
        threads = [threading.Thread(target=lambda: [c.add(2, index=1) for _ in range(ops)])
                   for _ in range(oversubscribed_threads())]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = stress_until_aborts(variant="rseq_inject", threads=oversubscribed_threads(),
                                ops_per_thread=scaled(50_000), inject_loops=100,
                                signal_interval_us=50)[-1]
        i = rseq_py.info()
        return dict(values=c.values(), cpu=rseq_py.current_cpu(), backend=i.backend,
                    by=i.registered_by, stress=[s.expected, s.observed, s.aborts])

    ops = scaled(5000)
    out = in_child(child)
    assert out["values"] == [1100, 2 * ops * oversubscribed_threads()]
    assert (out["backend"], out["by"]) == (before_info.backend, before_info.registered_by)
    assert out["stress"][0] == out["stress"][1]
    if before_info.backend == "rseq":
        assert out["stress"][2] > 0
    assert c.values() == [100, 0]  # the parent's memory is its own


def test_fork_while_other_threads_are_adding():
    c = rseq_py.PerCpuCounter()
    stop = threading.Event()

    def adder() -> None:
        while not stop.is_set():
            c.inc()

    adders = [threading.Thread(target=adder) for _ in range(3)]
    for t in adders:
        t.start()
    try:
        def child() -> dict:
            start = c.value()  # only this thread exists here: a stable value
            for _ in range(ops):
                c.inc()
            t = threading.Thread(target=lambda: [c.add(5) for _ in range(ops)])
            t.start()
            t.join()
            return dict(gained=c.value() - start)

        ops = scaled(10_000)
        for _ in range(5):
            assert in_child(child)["gained"] == 6 * ops
    finally:
        stop.set()
        for t in adders:
            t.join()


def test_fork_from_a_thread_while_c_workers_are_mid_operation():
    """fork() from a non-main thread while C workers churn a private freelist
    (small stacks: pool moves and owned stop words all the time) and add to a
    counter.  Each child inherits whatever those workers left mid-operation:
    it must not block on a lock or stop word of a thread it does not have,
    must find no handle twice, and loses only handles the workers held."""
    handles, threads, max_held = 2000, 8, 16
    fl = rseq_py.PerCpuFreelist(capacity=handles, per_cpu=8)
    fl.push_many(range(handles))
    c = rseq_py.PerCpuCounter()
    results: dict = {}

    def churn() -> None:
        results["fl"] = freelist_stress("rseq_inject", threads=threads, ops_per_thread=scaled(150_000),
                                        handles=handles, max_batch=8, max_held=max_held,
                                        inject_loops=20, freelist=fl)

    def count() -> None:
        results["c"] = counter_stress("rseq_inject", threads=threads, ops_per_thread=scaled(400_000),
                                      inject_loops=20, counter=c)

    def child() -> dict:
        import signal
        signal.alarm(60)  # a child stuck on an inherited owner fails the test, not the run
        s0 = rseq_py.stats()
        for cpu in allowed_cpus():  # every CPU's stack, even one a worker owned
            os.sched_setaffinity(0, {cpu})
            fl.push_many(fl.pop_many(5))
        start = c.value()
        for _ in range(1000):
            c.inc()
        got = fl.drain()
        s1 = rseq_py.stats()
        return dict(got=got, counted=c.value() - start,
                    takeovers=s1.owner_takeovers - s0.owner_takeovers,
                    recovered=s1.moves_recovered - s0.moves_recovered)

    # Rounds of churn, forking all the while, until some child has met an
    # inherited owner (on a slow emulated machine a round may see none).
    import time
    outs: list[dict] = []
    deadline = time.monotonic() + 180
    while True:
        workers = [threading.Thread(target=churn), threading.Thread(target=count)]
        for t in workers:
            t.start()
        round_outs: list[dict] = []

        def forker() -> None:
            while workers[0].is_alive() or len(round_outs) < 3:
                round_outs.append(in_child(child))

        f = threading.Thread(target=forker)
        f.start()
        f.join()
        for t in workers:
            t.join()
        assert results["fl"].exact and results["c"].exact, results
        for out in round_outs:
            got = out["got"]
            assert len(set(got)) == len(got), "a handle was duplicated across fork"
            assert all(0 <= h < handles for h in got)
            assert len(got) >= handles - threads * max_held, len(got)
            assert out["counted"] == 1000
        outs += round_outs
        if sum(o["takeovers"] for o in outs) > 0 or time.monotonic() > deadline:
            break
    # The inherited owners really were met and taken over (not just luckily absent).
    assert sum(o["takeovers"] for o in outs) > 0, [(o["takeovers"], len(o["got"])) for o in outs]
    print(f"\n{len(outs)} forks: takeovers {[o['takeovers'] for o in outs]}, "
          f"moves recovered {sum(o['recovered'] for o in outs)}, "
          f"handles in the children {min(len(o['got']) for o in outs)}..{max(len(o['got']) for o in outs)}")
    fl.push_many(range(0))  # the parent's freelist still works
    assert sorted(fl.drain()) == list(range(handles))
