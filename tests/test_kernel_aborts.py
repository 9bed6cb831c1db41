"""The kernel's own rseq_ip_fixup tracepoint sees our sections abort, and
each kernel abort is exactly one run of our abort handler."""

from __future__ import annotations

import time

import pytest

import rseq_py
import rseq_py._native
from support import oversubscribed_threads, scaled, stress_until_aborts
from kernel_trace import mapping_of, rseq_fixups, unavailable_reason
from rseq_py.stress import counter_stress

pytestmark = [
    pytest.mark.skipif(rseq_py.info().backend != "rseq", reason="needs the rseq backend"),
]


@pytest.fixture
def native_text():
    why = unavailable_reason()
    if why:
        pytest.skip(why)
    return mapping_of(rseq_py._native.__file__)


def test_kernel_sees_injected_aborts_one_for_one(native_text):
    with rseq_fixups(*native_text) as fixups:
        runs = stress_until_aborts(variant="rseq_inject", threads=oversubscribed_threads(),
                                   ops_per_thread=scaled(40_000), inject_loops=300,
                                   signal_interval_us=50)
    ours = fixups.in_range()
    aborts = sum(r.aborts for r in runs)
    assert aborts > 0, runs
    assert len(ours) == aborts, (len(ours), runs)
    # Each abort interrupted an IP inside the section's [start, post_commit).
    for regs_ip, start_ip, post, abort_ip in ours:
        assert start_ip <= regs_ip < start_ip + post
        assert not start_ip <= abort_ip < start_ip + post


def test_kernel_aborts_the_shipped_section(native_text):
    """The shipped section is a few instructions, so it is hit far more
    rarely than the injected one: keep storming until the kernel has
    restarted it at least once (typically the first run suffices)."""
    deadline = time.monotonic() + 60
    runs = []
    with rseq_fixups(*native_text) as fixups:
        while time.monotonic() < deadline:
            r = counter_stress("rseq", threads=oversubscribed_threads(),
                               ops_per_thread=scaled(1_000_000), signal_interval_us=10)
            runs.append(r)
            assert r.observed == r.expected, r
            if fixups.count_in_range():
                break
    assert len(fixups.in_range()) > 0, runs


def test_kernel_sees_freelist_aborts_one_for_one(native_text):
    from rseq_py.stress import freelist_stress

    with rseq_fixups(*native_text) as fixups:
        runs = stress_until_aborts(driver=freelist_stress, variant="rseq_inject",
                                   threads=oversubscribed_threads(),
                                   ops_per_thread=scaled(30_000), handles=200, per_cpu=16,
                                   inject_loops=300, signal_interval_us=50)
    aborts = sum(r.aborts for r in runs)
    assert aborts > 0, runs
    assert len(fixups.in_range()) == aborts, (len(fixups.in_range()), runs)
