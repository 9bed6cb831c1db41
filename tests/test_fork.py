"""fork(): the child inherits the registration and keeps counting exactly,
from its main thread and from threads it starts."""

from __future__ import annotations

import json
import os
import threading

import rseq_py
from support import oversubscribed_threads, scaled, stress_until_aborts


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
