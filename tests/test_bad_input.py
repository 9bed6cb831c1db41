"""Every bad input raises a clear Python exception before any C runs."""

from __future__ import annotations

import pytest

import rseq_py

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@pytest.fixture
def c():
    return rseq_py.PerCpuCounter(size=4)


BAD_CALLS = [
    # (call, exception, message fragment)
    (lambda c: rseq_py.PerCpuCounter(size=0), ValueError, "size must be between 1 and 1048576, got 0"),
    (lambda c: rseq_py.PerCpuCounter(size=-3), ValueError, "got -3"),
    (lambda c: rseq_py.PerCpuCounter(size=1 << 20 | 1), ValueError, "size must be between"),
    (lambda c: rseq_py.PerCpuCounter(size=2.0), TypeError, "size must be an int, not float"),
    (lambda c: rseq_py.PerCpuCounter(size="4"), TypeError, "size must be an int, not str"),
    (lambda c: rseq_py.PerCpuCounter(size=None), TypeError, "not NoneType"),
    (lambda c: c.add(1.5), TypeError, "delta must be an int, not float"),
    (lambda c: c.add("1"), TypeError, "delta must be an int, not str"),
    (lambda c: c.add(None), TypeError, "delta must be an int"),
    (lambda c: c.add(INT64_MAX + 1), OverflowError, "delta=9223372036854775808 does not fit"),
    (lambda c: c.add(INT64_MIN - 1), OverflowError, "does not fit in a signed 64-bit"),
    (lambda c: c.add(1 << 200), OverflowError, "does not fit"),
    (lambda c: c.add(1, index=4), IndexError, "index 4 out of range: this object has 4 (valid: 0..3)"),
    (lambda c: c.add(1, index=-1), IndexError, "index -1 out of range"),
    (lambda c: c.add(1, index=1.0), TypeError, "index must be an int, not float"),
    (lambda c: c.add(1, index=1 << 70), IndexError, "out of range"),
    (lambda c: c.inc(4), IndexError, "index 4 out of range"),
    (lambda c: c.inc("0"), TypeError, "index must be an int, not str"),
    (lambda c: c.sub(1.0), TypeError, "delta must be an int"),
    (lambda c: c.sub(INT64_MIN), OverflowError, "-delta=9223372036854775808 does not fit"),
    (lambda c: c.sub(1, index=9), IndexError, "index 9 out of range"),
    (lambda c: c.value(4), IndexError, "index 4 out of range"),
    (lambda c: c.value(None), TypeError, "index must be an int, not NoneType"),
    (lambda c: c.per_cpu(-1), IndexError, "out of range"),
    (lambda c: c.per_cpu([0]), TypeError, "not list"),
    (lambda c: c.reset(4), IndexError, "index 4 out of range"),
    (lambda c: c.reset("all"), TypeError, "index must be an int, not str"),
]


@pytest.mark.parametrize("call, exc, msg", BAD_CALLS, ids=[f"bad{i}" for i in range(len(BAD_CALLS))])
def test_bad_call_raises_and_changes_nothing(c, call, exc, msg):
    c.add(5, index=1)
    with pytest.raises(exc) as info:
        call(c)
    assert msg in str(info.value)
    assert c.values() == [0, 5, 0, 0]


def test_sub_accepts_the_other_extreme(c):
    c.sub(INT64_MAX + 1)  # -delta == INT64_MIN fits
    assert c.value() == INT64_MIN


def test_stress_driver_rejects_bad_parameters():
    from rseq_py.stress import counter_bench, counter_stress

    with pytest.raises(ValueError, match="variant must be one of"):
        counter_stress("nope")
    with pytest.raises(ValueError, match="threads must be between 1 and 4096"):
        counter_stress("rseq", threads=5000)
    with pytest.raises(ValueError, match="ops_per_thread must be between"):
        counter_stress("rseq", ops_per_thread=-1)
    with pytest.raises(TypeError, match="inject_loops must be an int"):
        counter_stress("rseq", inject_loops=0.5)
    with pytest.raises(ValueError, match="mode must be one of"):
        counter_bench("spinlock")
    with pytest.raises(ValueError, match="ops_per_thread must be between"):
        counter_bench("rseq", ops_per_thread=0)
