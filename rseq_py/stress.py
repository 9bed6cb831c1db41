"""The C stress driver and the C-level threaded benchmark, reachable from Python.

Both run real pthreads with the GIL released for the whole run, so what
they measure and prove is the C core, not the interpreter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._backend import from_struct
from ._checks import as_int
from ._native import ffi, lib
from .counter import PerCpuCounter
from .freelist import PerCpuFreelist

__all__ = ["StressResult", "FreelistStressResult", "counter_stress", "freelist_stress",
           "counter_bench", "freelist_bench", "VARIANTS", "BENCH_MODES",
           "FREELIST_BENCH_MODES"]

VARIANTS = {
    "rseq": lib.RSEQ_PY_VARIANT_RSEQ,
    "rseq_inject": lib.RSEQ_PY_VARIANT_RSEQ_INJECT,
    "atomic": lib.RSEQ_PY_VARIANT_ATOMIC,
    "unprotected": lib.RSEQ_PY_VARIANT_UNPROTECTED,
}

FREELIST_BENCH_MODES = {
    "rseq": lib.RSEQ_PY_FL_BENCH_RSEQ,
    "percpu_lock": lib.RSEQ_PY_FL_BENCH_PERCPU_LOCK,
    "mutex": lib.RSEQ_PY_FL_BENCH_MUTEX,
}

BENCH_MODES = {
    "rseq": lib.RSEQ_PY_BENCH_RSEQ,
    "percpu_atomic": lib.RSEQ_PY_BENCH_PERCPU_ATOMIC,
    "shared_atomic": lib.RSEQ_PY_BENCH_SHARED_ATOMIC,
    "mutex": lib.RSEQ_PY_BENCH_MUTEX,
}


@dataclass(frozen=True)
class StressResult:
    """Outcome of one stress run.

    ``expected`` is what the workers say they added, ``observed`` what the
    counter gained; they are equal unless updates were lost.  ``aborts`` is
    counted by the injection variant's abort handler only.
    """

    variant: str
    threads: int
    expected: int
    observed: int
    aborts: int
    signals: int
    escapes: int
    exhausted: int
    handler_adds: int
    elapsed_s: float

    @property
    def exact(self) -> bool:
        return self.expected == self.observed


def counter_stress(
    variant: str = "rseq_inject",
    threads: int = 0,
    ops_per_thread: int = 100_000,
    size: int = 3,
    inject_loops: int = 0,
    signal_interval_us: int = 0,
    counter: PerCpuCounter | None = None,
    handler_adds: bool = False,
) -> StressResult:
    """Run ``threads`` pthreads adding to a per-CPU counter and check the total.

    Args:
        variant: ``rseq`` (the shipped section), ``rseq_inject`` (same section
            with a delay loop between its load and its commit, and an abort
            counter), ``atomic`` (the fallback path), or ``unprotected``
            (load/delay/store with no section: a control that loses updates).
        threads: worker count; 0 means 4 x the CPUs this process may use.
        ops_per_thread: adds per worker.
        size: counters in the fresh counter used (ignored with ``counter``).
        inject_loops: delay loop iterations inside the section.
        signal_interval_us: when > 0, a signaller thread sends every live
            worker a signal about this often.
        counter: count into this counter instead of a fresh one.
        handler_adds: the signal handler adds 1 to counter 0 as well, on
            whatever thread it interrupted (often mid-section); those adds
            are part of ``expected`` and counted in ``handler_adds``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    threads = as_int(threads, "threads") or 4 * len(os.sched_getaffinity(0))
    if not 1 <= threads <= 4096:
        raise ValueError(f"threads must be between 1 and 4096, got {threads}")
    ops_per_thread = as_int(ops_per_thread, "ops_per_thread")
    inject_loops = as_int(inject_loops, "inject_loops")
    signal_interval_us = as_int(signal_interval_us, "signal_interval_us")
    for name, v in (("ops_per_thread", ops_per_thread), ("inject_loops", inject_loops),
                    ("signal_interval_us", signal_interval_us)):
        if not 0 <= v < 1 << 32:
            raise ValueError(f"{name} must be between 0 and 2**32-1, got {v}")
    if counter is not None and not isinstance(counter, PerCpuCounter):
        raise TypeError(f"counter must be a PerCpuCounter, not {type(counter).__name__}")
    c = counter if counter is not None else PerCpuCounter(size)
    raw = c._live()
    cfg = ffi.new("struct rseq_py_stress_config *")
    cfg.threads = threads
    cfg.ops_per_thread = ops_per_thread
    cfg.variant = VARIANTS[variant]
    cfg.inject_loops = inject_loops
    cfg.signal_interval_us = signal_interval_us
    if not isinstance(handler_adds, bool):
        raise TypeError(f"handler_adds must be a bool, not {type(handler_adds).__name__}")
    cfg.handler_adds = handler_adds
    res = ffi.new("struct rseq_py_stress_result *")
    err = lib.rseq_py_counter_stress(raw, cfg, res)
    if err:
        raise OSError(err, f"stress run failed: {os.strerror(err)}")
    return from_struct(StressResult, res, variant=variant, threads=threads,
                       elapsed_s=res.elapsed_ns / 1e9)


@dataclass(frozen=True)
class FreelistStressResult:
    """Outcome of one freelist stress run: every handle accounted for.

    ``duplicates`` counts handles popped while another worker held them, or
    found twice at the end; ``missing`` handles absent at the end;
    ``unexpected`` values that were never pushed; ``full_pushes`` pushes
    refused although the freelist had room.  All four must be 0.
    """

    variant: str
    threads: int
    handles: int
    pops: int
    pushes: int
    empty_pops: int
    duplicates: int
    missing: int
    unexpected: int
    full_pushes: int
    aborts: int
    signals: int
    escapes: int
    exhausted: int
    elapsed_s: float

    @property
    def exact(self) -> bool:
        return (self.duplicates, self.missing, self.unexpected, self.full_pushes) == (0, 0, 0, 0)


def freelist_stress(
    variant: str = "rseq_inject",
    threads: int = 0,
    ops_per_thread: int = 20_000,
    handles: int = 1000,
    capacity: int | None = None,
    per_cpu: int | None = None,
    max_batch: int = 16,
    max_held: int = 64,
    inject_loops: int = 0,
    signal_interval_us: int = 0,
    freelist: PerCpuFreelist | None = None,
) -> FreelistStressResult:
    """Run ``threads`` pthreads popping, holding and pushing back handles.

    The freelist starts with handles ``0..handles-1``; each worker pops
    (single or batches up to ``max_batch``), holds up to ``max_held``, and
    pushes them back (single or batches).  Afterwards every handle must be
    in the freelist exactly once.  ``variant``: ``rseq``, ``rseq_inject``
    (injected delay before each commit, aborts counted) or ``atomic`` (the
    owner path only: per-CPU stop words as locks).

    With ``freelist`` (e.g. a shared one other processes churn too), the
    caller fills it with ``0..handles-1`` beforehand and checks it afterwards:
    the run neither fills nor drains it, and ``missing`` stays 0.
    """
    if variant not in ("rseq", "rseq_inject", "atomic"):
        raise ValueError(f"variant must be 'rseq', 'rseq_inject' or 'atomic', got {variant!r}")
    threads = as_int(threads, "threads") or 4 * len(os.sched_getaffinity(0))
    if not 1 <= threads <= 4096:
        raise ValueError(f"threads must be between 1 and 4096, got {threads}")
    handles = as_int(handles, "handles")
    capacity = handles if capacity is None else as_int(capacity, "capacity")
    max_batch, max_held = as_int(max_batch, "max_batch"), as_int(max_held, "max_held")
    if not 1 <= max_batch <= max_held <= 1 << 16:
        raise ValueError(f"need 1 <= max_batch <= max_held <= 65536, got {max_batch}, {max_held}")
    if freelist is not None:
        if not isinstance(freelist, PerCpuFreelist):
            raise TypeError(f"freelist must be a PerCpuFreelist, not {type(freelist).__name__}")
        freelist._live()
        capacity = freelist.capacity
    if not 0 <= handles <= capacity:
        raise ValueError(f"need 0 <= handles <= capacity, got {handles}, {capacity}")
    fl = freelist if freelist is not None else PerCpuFreelist(capacity, per_cpu=per_cpu)
    cfg = ffi.new("struct rseq_py_fl_stress_config *")
    cfg.external = freelist is not None
    cfg.threads = threads
    ops_per_thread = as_int(ops_per_thread, "ops_per_thread")
    inject_loops = as_int(inject_loops, "inject_loops")
    signal_interval_us = as_int(signal_interval_us, "signal_interval_us")
    for name, v in (("ops_per_thread", ops_per_thread), ("inject_loops", inject_loops),
                    ("signal_interval_us", signal_interval_us)):
        if not 0 <= v < 1 << 32:
            raise ValueError(f"{name} must be between 0 and 2**32-1, got {v}")
    cfg.ops_per_thread = ops_per_thread
    cfg.variant = VARIANTS[variant]
    cfg.inject_loops = inject_loops
    cfg.signal_interval_us = signal_interval_us
    cfg.handles = handles
    cfg.max_batch = max_batch
    cfg.max_held = max_held
    res = ffi.new("struct rseq_py_fl_stress_result *")
    err = lib.rseq_py_freelist_stress(fl._live(), cfg, res)
    if err:
        raise OSError(err, f"freelist stress run failed: {os.strerror(err)}")
    return from_struct(FreelistStressResult, res, variant=variant, threads=threads,
                       handles=handles, elapsed_s=res.elapsed_ns / 1e9)


@dataclass(frozen=True)
class BenchResult:
    """One C-level benchmark run: ns per op per thread, total Mops/s."""

    mode: str
    threads: int
    ns_per_op: float
    total_mops: float


def counter_bench(mode: str, threads: int = 1, ops_per_thread: int = 2_000_000) -> BenchResult:
    """Time ``threads`` pthreads each doing ``ops_per_thread`` increments in ``mode``.

    Modes: ``rseq`` (this library's counter), ``percpu_atomic`` (per-CPU
    slots with ``lock add`` indexed by ``sched_getcpu``), ``shared_atomic``
    (one word, ``lock add``), ``mutex`` (one word under a pthread mutex).
    """
    if mode not in BENCH_MODES:
        raise ValueError(f"mode must be one of {sorted(BENCH_MODES)}, got {mode!r}")
    threads = as_int(threads, "threads")
    ops_per_thread = as_int(ops_per_thread, "ops_per_thread")
    if not 1 <= threads <= 4096:
        raise ValueError(f"threads must be between 1 and 4096, got {threads}")
    if not 1 <= ops_per_thread < 1 << 40:
        raise ValueError(f"ops_per_thread must be between 1 and 2**40-1, got {ops_per_thread}")
    ns = ffi.new("double *")
    mops = ffi.new("double *")
    err = lib.rseq_py_counter_bench(BENCH_MODES[mode], threads, ops_per_thread, ns, mops)
    if err:
        raise OSError(err, f"benchmark failed: {os.strerror(err)}")
    return BenchResult(mode=mode, threads=threads, ns_per_op=ns[0], total_mops=mops[0])


def freelist_bench(mode: str, threads: int = 1, ops_per_thread: int = 1_000_000,
                   batch: int = 1) -> BenchResult:
    """Time ``threads`` pthreads each doing ``ops_per_thread`` pop+push pairs
    (``batch`` handles at a time) on one freelist.

    Modes: ``rseq`` (this library), ``percpu_lock`` (the same freelist on its
    fallback path: per-CPU spinlocks), ``mutex`` (one array stack under a
    pthread mutex).  ``ns_per_op`` is per handle moved (a pop and a push)
    per thread; ``total_mops`` counts handle pairs of all threads.
    """
    if mode not in FREELIST_BENCH_MODES:
        raise ValueError(f"mode must be one of {sorted(FREELIST_BENCH_MODES)}, got {mode!r}")
    threads = as_int(threads, "threads")
    ops_per_thread = as_int(ops_per_thread, "ops_per_thread")
    batch = as_int(batch, "batch")
    if not 1 <= threads <= 4096:
        raise ValueError(f"threads must be between 1 and 4096, got {threads}")
    if not 1 <= ops_per_thread < 1 << 40:
        raise ValueError(f"ops_per_thread must be between 1 and 2**40-1, got {ops_per_thread}")
    if not 1 <= batch <= 256:
        raise ValueError(f"batch must be between 1 and 256, got {batch}")
    ns = ffi.new("double *")
    mops = ffi.new("double *")
    err = lib.rseq_py_freelist_bench(FREELIST_BENCH_MODES[mode], threads, ops_per_thread, batch,
                                     ns, mops)
    if err:
        raise OSError(err, f"benchmark failed: {os.strerror(err)}")
    return BenchResult(mode=mode, threads=threads, ns_per_op=ns[0], total_mops=mops[0])
