"""Hypothesis state machines: PerCpuCounter and PerCpuFreelist (private and
shared) driven by random sequences of operations, checked step by step
against a plain-Python model.

Between operations the thread is moved to another allowed CPU (pinned with
``os.sched_setaffinity``, or let loose on all of them), so per-CPU slots
diverge and the freelist's spill, refill, pool and steal paths run.  Pinned,
the CPU an operation runs on is known, so the counter model is exact per
CPU, not only in total.  Affinity is restored after every example.

Models:

* counter: one int64 per (counter, CPU) slot; ``add``/``inc``/``sub`` change
  the current CPU's slot modulo 2**64 (two's complement), ``value`` is the
  sum of the slots modulo 2**64, ``reset`` returns that sum and zeroes every
  slot (README: "slots and sums wrap modulo 2^64 like C int64_t").
* freelist: a multiset (collections.Counter) of handles.  ``push`` raises
  FreelistFull exactly when the model holds ``capacity`` handles and changes
  nothing; ``push_many`` pushes the leading ``capacity - len`` handles and
  says so in ``exc.pushed``; ``pop`` returns ``None`` exactly when the model
  is empty; ``pop_many(n)`` returns ``min(n, len)`` handles of the model;
  ``drain`` returns exactly the model's multiset.  ``len()`` equals the
  model's size after every step.

Sizes: ``max_examples`` scaled by ``RSEQ_PY_TEST_SCALE`` (tests/support.py).
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from rseq_py import FreelistFull, PerCpuCounter, PerCpuFreelist
from support import allowed_cpus, scaled

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SHM = "/dev/shm/rseq_py."
CPUS = allowed_cpus()


def wrap(v: int) -> int:
    """``v`` modulo 2**64 as a signed 64-bit int."""
    return (v - INT64_MIN) % (1 << 64) + INT64_MIN


def settings_for(examples: int) -> settings:
    return settings(max_examples=scaled(examples), stateful_step_count=50, deadline=None,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def unique_name(tag: str) -> str:
    return f"test-stateful-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


deltas = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1, 1 << 62, -(1 << 62)]),
    st.integers(INT64_MIN, INT64_MAX),
)
# sub(delta) adds -delta, which must fit int64
sub_deltas = st.one_of(st.integers(-5, 5), st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN + 1]),
                       st.integers(INT64_MIN + 1, INT64_MAX + 1))
handles = st.one_of(
    st.integers(0, 15),  # small: duplicates are common
    st.sampled_from([INT64_MIN, INT64_MAX, -1]),  # INT64_MIN is a handle, not an empty marker
    st.integers(INT64_MIN, INT64_MAX),
)
cpu_choice = st.integers(0, len(CPUS) - 1)
which = st.integers(0, 1)  # which handle of a shared object (private: the same one)


class Affinity:
    """Moves the thread between allowed CPUs and knows where it is pinned."""

    def __init__(self) -> None:
        self.saved = os.sched_getaffinity(0)
        self.cpu: int | None = None
        self.pin(CPUS[0])

    def pin(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})
        self.cpu = cpu

    def unpin(self) -> None:
        os.sched_setaffinity(0, set(CPUS))
        self.cpu = None

    def restore(self) -> None:
        os.sched_setaffinity(0, self.saved)


def release(views: list, name: str | None, aff: Affinity) -> None:
    """Close every view, remove the segment (if any) and restore affinity, whatever fails."""
    try:
        for v in views:
            v.close()
        if name is not None:
            try:
                os.unlink(SHM + name)
            except FileNotFoundError:
                pass
    finally:
        aff.restore()


# ---- (a) PerCpuCounter ---------------------------------------------------------------


class CounterMachine(RuleBasedStateMachine):
    """PerCpuCounter(size=k) against a per-(counter, CPU) model."""

    shared = False

    def __init__(self) -> None:
        super().__init__()
        self.aff = Affinity()
        self.views: list[PerCpuCounter] = []
        self.name: str | None = None

    @initialize(size=st.integers(1, 4))
    def make(self, size: int) -> None:
        if self.shared:
            self.name = unique_name("c")
            self.views = [PerCpuCounter.create(self.name, size=size)]
            self.views.append(PerCpuCounter.attach(self.name))
        else:
            self.views = [PerCpuCounter(size=size)]
        self.size = size
        self.slots = [[0] * self.views[0].cpu_slots for _ in range(size)]

    def view(self, w: int) -> PerCpuCounter:
        return self.views[w % len(self.views)]

    def _added(self, index: int, delta: int) -> None:
        # Always pinned here, so the add went to that CPU's slot.
        row = self.slots[index]
        row[self.aff.cpu] = wrap(row[self.aff.cpu] + delta)

    @rule(data=st.data(), delta=deltas, w=which)
    def add(self, data, delta: int, w: int) -> None:
        index = data.draw(st.integers(0, self.size - 1), label="index")
        self.view(w).add(delta, index)
        self._added(index, delta)

    @rule(data=st.data(), w=which)
    def inc(self, data, w: int) -> None:
        index = data.draw(st.integers(0, self.size - 1), label="index")
        self.view(w).inc(index)
        self._added(index, 1)

    @rule(data=st.data(), delta=sub_deltas, w=which)
    def sub(self, data, delta: int, w: int) -> None:
        index = data.draw(st.integers(0, self.size - 1), label="index")
        self.view(w).sub(delta, index)
        self._added(index, -delta)

    @rule(data=st.data(), w=which)
    def reset_one(self, data, w: int) -> None:
        index = data.draw(st.integers(0, self.size - 1), label="index")
        assert self.view(w).reset(index) == wrap(sum(self.slots[index]))
        self.slots[index] = [0] * len(self.slots[index])

    @rule(w=which)
    def reset_all(self, w: int) -> None:
        assert self.view(w).reset() == [wrap(sum(row)) for row in self.slots]
        self.slots = [[0] * len(row) for row in self.slots]

    @rule(i=cpu_choice)
    def move(self, i: int) -> None:
        self.aff.pin(CPUS[i])

    @precondition(lambda self: self.shared)
    @rule()
    def reattach(self) -> None:
        self.views[1].close()
        self.views[1] = PerCpuCounter.attach(self.name)

    @invariant()
    def matches_model(self) -> None:
        if not self.views:
            return
        want = [wrap(sum(row)) for row in self.slots]
        for v in self.views:
            assert v.values() == want
            for i in range(self.size):
                assert v.value(i) == want[i]
                assert v.per_cpu(i) == self.slots[i]
                assert wrap(sum(v.per_cpu(i))) == v.value(i)

    def teardown(self) -> None:
        release(self.views, self.name, self.aff)


class SharedCounterMachine(CounterMachine):
    """The same, over a shared segment through two handles (one re-attached now and then)."""

    shared = True


def test_counter_state_machine(restore_affinity):
    run_state_machine_as_test(CounterMachine, settings=settings_for(80))


def test_shared_counter_state_machine(restore_affinity):
    run_state_machine_as_test(SharedCounterMachine, settings=settings_for(30))


# ---- (b) and (c) PerCpuFreelist ------------------------------------------------------------


class FreelistMachine(RuleBasedStateMachine):
    """PerCpuFreelist(capacity=c, per_cpu=small) against a multiset."""

    shared = False

    def __init__(self) -> None:
        super().__init__()
        self.aff = Affinity()
        self.views: list[PerCpuFreelist] = []
        self.name: str | None = None
        self.model: Counter[int] = Counter()

    @initialize(capacity=st.integers(1, 40), per_cpu=st.integers(1, 6))
    def make(self, capacity: int, per_cpu: int) -> None:
        if self.shared:
            self.name = unique_name("fl")
            self.views = [PerCpuFreelist.create(self.name, capacity, per_cpu=per_cpu)]
            self.views.append(PerCpuFreelist.attach(self.name))
        else:
            self.views = [PerCpuFreelist(capacity, per_cpu=per_cpu)]
        self.capacity = capacity
        assert self.views[-1].capacity == capacity
        assert self.views[-1].per_cpu == min(per_cpu, capacity)

    def view(self, w: int) -> PerCpuFreelist:
        return self.views[w % len(self.views)]

    @property
    def size(self) -> int:
        return sum(self.model.values())

    def _take(self, got: list[int]) -> None:
        taken = Counter(got)
        assert not taken - self.model, (taken, self.model)  # only handles it holds
        self.model -= taken

    @rule(h=handles, w=which)
    def push(self, h: int, w: int) -> None:
        if self.size < self.capacity:
            self.view(w).push(h)
            self.model[h] += 1
        else:
            with pytest.raises(FreelistFull) as e:
                self.view(w).push(h)
            assert e.value.pushed == 0

    @rule(hs=st.lists(handles, max_size=45), w=which)
    def push_many(self, hs: list[int], w: int) -> None:
        room = self.capacity - self.size
        if len(hs) <= room:
            self.view(w).push_many(hs)
            self.model.update(hs)
        else:
            with pytest.raises(FreelistFull) as e:
                self.view(w).push_many(iter(hs))
            assert e.value.pushed == room
            self.model.update(hs[:room])

    @rule(w=which)
    def pop(self, w: int) -> None:
        h = self.view(w).pop()
        if self.size == 0:
            assert h is None
        else:
            assert h is not None
            self._take([h])

    @rule(n=st.integers(0, 45), w=which)
    def pop_many(self, n: int, w: int) -> None:
        got = self.view(w).pop_many(n)
        assert len(got) == min(n, self.size)
        self._take(got)

    @rule(w=which)
    def drain(self, w: int) -> None:
        assert Counter(self.view(w).drain()) == self.model
        self.model.clear()

    @rule(i=cpu_choice)
    def move(self, i: int) -> None:
        self.aff.pin(CPUS[i])

    @rule()
    def unpin(self) -> None:
        self.aff.unpin()

    @precondition(lambda self: self.shared)
    @rule()
    def reattach(self) -> None:
        self.views[1].close()
        self.views[1] = PerCpuFreelist.attach(self.name)
        assert self.views[1].capacity == self.capacity

    @invariant()
    def length_matches(self) -> None:
        for v in self.views:
            assert len(v) == self.size

    def teardown(self) -> None:
        try:
            if self.views:  # the end of every run: drain gives back exactly the model
                assert Counter(self.views[-1].drain()) == self.model
                assert len(self.views[0]) == 0 and self.views[0].pop() is None
        finally:
            release(self.views, self.name, self.aff)


class SharedFreelistMachine(FreelistMachine):
    """The same over a shared segment, operated through a creator handle and an
    attached one (re-attached now and then)."""

    shared = True


def test_freelist_state_machine(restore_affinity):
    run_state_machine_as_test(FreelistMachine, settings=settings_for(80))


def test_shared_freelist_state_machine(restore_affinity):
    run_state_machine_as_test(SharedFreelistMachine, settings=settings_for(60))
