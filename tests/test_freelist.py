"""PerCpuFreelist: semantics against a model, bad input, and exact conservation
under oversubscribed threads, injected delays and signals."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

import rseq_py
from rseq_py import FreelistFull, PerCpuFreelist
from rseq_py.stress import freelist_stress
from support import allowed_cpus, oversubscribed_threads, scaled, stress_until_aborts

RSEQ = rseq_py.info().backend == "rseq"
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


# ---- semantics -----------------------------------------------------------


def test_readme_example():
    fl = PerCpuFreelist(capacity=100_000)
    fl.push(7)
    assert fl.pop() == 7
    assert fl.pop() is None
    fl.push_many(range(1000))
    hs = fl.pop_many(64)
    assert len(hs) == 64 and len(fl) == 936
    rest = fl.drain()
    assert sorted(hs + rest) == list(range(1000))
    assert len(fl) == 0 and fl.pop() is None and fl.drain() == []


def test_capacity_is_exact_and_full_loses_nothing():
    fl = PerCpuFreelist(capacity=300, per_cpu=16)
    fl.push_many(range(300))
    with pytest.raises(FreelistFull, match="holds its capacity of 300 handles") as e:
        fl.push(300)
    assert e.value.pushed == 0
    assert len(fl) == 300
    h = fl.pop()
    fl.push(-5)  # room for exactly one
    with pytest.raises(FreelistFull):
        fl.push(h)
    assert sorted(fl.drain()) == sorted(set(range(300)) - {h} | {-5})


def test_push_many_partial_says_how_many_went_in():
    fl = PerCpuFreelist(capacity=10, per_cpu=4)
    fl.push_many([100, 101, 102])
    with pytest.raises(FreelistFull, match="after 7 of 9 handles") as e:
        fl.push_many(range(9))
    assert e.value.pushed == 7
    assert sorted(fl.drain()) == [0, 1, 2, 3, 4, 5, 6, 100, 101, 102]


def test_extreme_handles_and_duplicates_are_just_values():
    fl = PerCpuFreelist(capacity=8)
    fl.push_many([INT64_MIN, INT64_MAX, 0, 0, -1])
    assert sorted(fl.drain()) == sorted([INT64_MIN, INT64_MAX, 0, 0, -1])


def test_int64_min_is_a_handle_not_an_empty_marker():
    fl = PerCpuFreelist(capacity=2)
    fl.push(INT64_MIN)
    assert fl.pop() == INT64_MIN
    assert fl.pop() is None


def test_pop_many_stops_at_empty_and_zero_is_allowed():
    fl = PerCpuFreelist(capacity=50, per_cpu=4)
    fl.push_many(range(20))
    assert fl.pop_many(0) == []
    got = fl.pop_many(25)
    assert sorted(got) == list(range(20))
    assert fl.pop_many(5) == []


def test_small_stacks_spill_to_the_pool_and_refill(restore_affinity):
    cpus = allowed_cpus()
    fl = PerCpuFreelist(capacity=1000, per_cpu=8)
    os.sched_setaffinity(0, {cpus[0]})
    fl.push_many(range(1000))  # far more than one stack holds
    os.sched_setaffinity(0, {cpus[-1]})
    got = [fl.pop() for _ in range(1000)]
    assert sorted(got) == list(range(1000))
    assert fl.pop() is None


def test_repr_len_properties_and_pickle():
    fl = PerCpuFreelist(capacity=5, per_cpu=100)
    assert fl.per_cpu == 5 and fl.capacity == 5
    fl.push(1)
    assert repr(fl) == "PerCpuFreelist(capacity=5, len=1)"
    with pytest.raises(TypeError, match="private memory"):
        pickle.dumps(fl)


# ---- bad input -------------------------------------------------------------

BAD = [
    (lambda fl: PerCpuFreelist(0), ValueError, "capacity must be between 1 and 4294967296, got 0"),
    (lambda fl: PerCpuFreelist(-1), ValueError, "got -1"),
    (lambda fl: PerCpuFreelist(1 << 33), ValueError, "capacity must be between"),
    (lambda fl: PerCpuFreelist(10.0), TypeError, "capacity must be an int, not float"),
    (lambda fl: PerCpuFreelist(10, per_cpu=0), ValueError, "per_cpu must be between 1 and"),
    (lambda fl: PerCpuFreelist(10, per_cpu="4"), TypeError, "per_cpu must be an int, not str"),
    (lambda fl: fl.push(1.5), TypeError, "handle must be an int, not float"),
    (lambda fl: fl.push(None), TypeError, "handle must be an int, not NoneType"),
    (lambda fl: fl.push(INT64_MAX + 1), OverflowError, "handle=9223372036854775808 does not fit"),
    (lambda fl: fl.push(INT64_MIN - 1), OverflowError, "does not fit in a signed 64-bit"),
    (lambda fl: fl.push_many([1, 2, "3"]), TypeError, "handle must be an int, not str"),
    (lambda fl: fl.push_many([1, 1 << 64]), OverflowError, "does not fit"),
    (lambda fl: fl.push_many(5), TypeError, "not iterable"),
    (lambda fl: fl.pop_many(-1), ValueError, "n must be >= 0, got -1"),
    (lambda fl: fl.pop_many(2.0), TypeError, "n must be an int, not float"),
]


@pytest.mark.parametrize("call, exc, msg", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_raises_and_changes_nothing(call, exc, msg):
    fl = PerCpuFreelist(capacity=10)
    fl.push_many([10, 11])
    with pytest.raises(exc) as info:
        call(fl)
    assert msg in str(info.value)
    assert sorted(fl.drain()) == [10, 11]


# ---- concurrency: the C stress driver ----------------------------------------

CASES = [
    # variant, handles, per_cpu, max_batch, max_held, inject_loops, signal_us
    ("rseq", 5000, 64, 16, 64, 0, 20),          # plenty: fast paths, no empties
    ("rseq", 100, 8, 8, 32, 0, 20),             # scarce: empties, refills, steals
    ("rseq_inject", 5000, 16, 16, 64, 200, 50),
    ("rseq_inject", 100, 8, 8, 32, 200, 50),
    ("rseq_inject", 64, 4, 4, 8, 100, 20),      # tiny stacks: constant spills
    ("rseq_inject", 1, 1, 1, 1, 100, 20),       # one handle fought over
    ("atomic", 100, 8, 8, 32, 0, 20),           # the fallback path
]


@pytest.mark.parametrize("variant, handles, per_cpu, max_batch, max_held, loops, signal_us", CASES)
def test_freelist_stress_conserves_every_handle(variant, handles, per_cpu, max_batch, max_held,
                                                loops, signal_us):
    kw = dict(variant=variant, threads=oversubscribed_threads(),
              ops_per_thread=scaled(30_000), handles=handles, per_cpu=per_cpu,
              max_batch=max_batch, max_held=max_held, inject_loops=loops,
              signal_interval_us=signal_us)
    if variant == "rseq_inject" and RSEQ:
        runs = stress_until_aborts(driver=freelist_stress, **kw)
        assert runs[-1].aborts > 0, runs
    else:
        runs = [freelist_stress(**kw)]
    for r in runs:
        assert (r.duplicates, r.missing, r.unexpected, r.full_pushes) == (0, 0, 0, 0), r
        assert r.pops == r.pushes, r
        if variant != "rseq_inject" or not RSEQ:
            assert r.aborts == 0
        if handles > r.threads * max_held:
            # Handles were on the freelist at every instant, so no pop may
            # report it empty: the emptiness proof must not be fooled.
            assert r.empty_pops == 0, r


def test_pop_never_reports_empty_while_handles_remain():
    """More handles than threads can hold: a pop that returns nothing would be a lie."""
    r = freelist_stress("rseq", threads=oversubscribed_threads(), ops_per_thread=scaled(50_000),
                        handles=oversubscribed_threads() * 4 + 1, per_cpu=2, max_batch=4,
                        max_held=4, signal_interval_us=20)
    assert r.exact and r.empty_pops == 0, r


# ---- concurrency: Python threads ----------------------------------------------


def test_python_threads_pop_and_push_back_exactly_once():
    fl = PerCpuFreelist(capacity=200, per_cpu=8)
    fl.push_many(range(200))
    held: set[int] = set()
    book = threading.Lock()  # test bookkeeping only, never around the freelist
    dup: list[int] = []

    def work(seed: int) -> None:
        mine: list[int] = []
        for i in range(scaled(5000)):
            if mine and (i + seed) % 3 == 0:
                batch, mine = mine, []
                with book:
                    held.difference_update(batch)
                if len(batch) > 1:
                    fl.push_many(batch)
                else:
                    fl.push(batch[0])
            else:
                got = fl.pop_many(4) if i % 2 else [h for h in [fl.pop()] if h is not None]
                with book:
                    for h in got:
                        if h in held:
                            dup.append(h)
                        held.add(h)
                mine += got
        with book:
            held.difference_update(mine)
        fl.push_many(mine)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(oversubscribed_threads())]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dup == []
    assert sorted(fl.drain()) == list(range(200))


def test_producer_and_consumer_on_different_cpus(restore_affinity):
    """One CPU only pushes, another only pops: the pool and the steal path
    carry every handle across, exactly once."""
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    n = scaled(100_000)
    fl = PerCpuFreelist(capacity=n, per_cpu=32)
    got: list[int] = []

    def producer() -> None:
        os.sched_setaffinity(0, {cpus[0]})
        for start in range(0, n, 100):
            fl.push_many(range(start, min(start + 100, n)))

    def consumer() -> None:
        os.sched_setaffinity(0, {cpus[1]})
        while len(got) < n:
            h = fl.pop()
            if h is not None:
                got.append(h)

    threads = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert sorted(got) == list(range(n))
    assert fl.pop() is None


def test_fork_child_keeps_using_the_freelist():
    from test_fork import in_child

    fl = PerCpuFreelist(capacity=1000)
    fl.push_many(range(500))

    def child() -> dict:
        r = freelist_stress("rseq_inject" if RSEQ else "atomic", threads=oversubscribed_threads(),
                            ops_per_thread=scaled(20_000), handles=100, per_cpu=8,
                            inject_loops=50, signal_interval_us=50)
        taken = fl.pop_many(200)
        fl.push_many(range(1000, 1100))
        return dict(exact=r.exact, left=sorted(fl.drain()), taken=sorted(taken))

    out = in_child(child)
    assert out["exact"]
    assert sorted(out["left"] + out["taken"]) == sorted(list(range(500)) + list(range(1000, 1100)))
    assert sorted(fl.drain()) == list(range(500))  # the parent's copy is its own
