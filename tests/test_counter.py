"""PerCpuCounter semantics, single-threaded: every method against a plain model."""

from __future__ import annotations

import os
import pickle

import pytest

import rseq_py
from support import allowed_cpus

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def wrap(v: int) -> int:
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


def test_readme_example():
    c = rseq_py.PerCpuCounter(size=4)
    c.inc()
    c.add(5, index=2)
    c.sub(1, index=2)
    assert c.value(2) == 4 and c.value() == 1 and c.value(1) == 0
    assert c.values() == [1, 0, 4, 0]
    assert sum(c.per_cpu(2)) == 4 and len(c.per_cpu(2)) == rseq_py.info().cpu_slots
    assert c.size == len(c) == 4
    assert repr(c) == "PerCpuCounter(size=4, values=[1, 0, 4, 0])"


def test_default_size_is_one():
    c = rseq_py.PerCpuCounter()
    assert len(c) == 1 and c.values() == [0]


def test_counters_are_independent():
    c = rseq_py.PerCpuCounter(size=100)
    for i in range(100):
        c.add(i * 3 - 7, index=i)
    assert c.values() == [i * 3 - 7 for i in range(100)]


def test_adds_land_on_the_current_cpu(restore_affinity):
    c = rseq_py.PerCpuCounter(size=2)
    cpus = allowed_cpus()
    for n, cpu in enumerate(cpus, start=1):
        os.sched_setaffinity(0, {cpu})
        c.add(n * 10, index=1)
        assert c.per_cpu(1)[cpu] == n * 10
    assert c.value(1) == sum(n * 10 for n in range(1, len(cpus) + 1))
    assert c.value(0) == 0


def test_extremes_and_wrapping():
    c = rseq_py.PerCpuCounter(size=3)
    c.add(INT64_MAX)
    assert c.value() == INT64_MAX
    c.add(1)  # the true total leaves int64: documented to wrap
    assert c.value() == INT64_MIN
    c.add(INT64_MIN, index=1)
    c.sub(INT64_MAX, index=1)  # -2**63 - (2**63 - 1) wraps to 1
    assert c.value(1) == wrap(INT64_MIN - INT64_MAX) == 1
    c.sub(-INT64_MAX, index=2)
    assert c.value(2) == INT64_MAX


def test_slot_wrap_cancels_in_the_sum(restore_affinity):
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to put opposite extremes on different slots")
    c = rseq_py.PerCpuCounter()
    os.sched_setaffinity(0, {cpus[0]})
    c.add(INT64_MAX)
    c.add(INT64_MAX)  # this slot wrapped
    os.sched_setaffinity(0, {cpus[1]})
    c.add(-INT64_MAX)
    c.add(-INT64_MAX)
    assert c.value() == 0


def test_reset_returns_what_it_removed():
    c = rseq_py.PerCpuCounter(size=3)
    c.add(7, index=0)
    c.add(-3, index=2)
    assert c.reset(0) == 7
    assert c.values() == [0, 0, -3]
    c.inc(0)
    assert c.value(0) == 1
    assert c.reset() == [1, 0, -3]
    assert c.values() == [0, 0, 0]
    assert all(v == 0 for v in c.per_cpu(0))
    assert c.reset(1) == 0


def test_bool_and_index_like_ints_are_ints():
    class Idx:
        def __index__(self) -> int:
            return 1

    c = rseq_py.PerCpuCounter(size=2)
    c.add(True, index=Idx())
    c.inc(Idx())
    assert c.values() == [0, 2]


def test_not_picklable_in_process_memory():
    with pytest.raises(TypeError, match="private memory"):
        pickle.dumps(rseq_py.PerCpuCounter())


def test_memory_is_freed_with_the_object():
    import gc
    import weakref

    c = rseq_py.PerCpuCounter(size=1000)
    ref = weakref.ref(c)
    del c
    gc.collect()
    assert ref() is None
