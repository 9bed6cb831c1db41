"""PerCpuFreelist against the containers a Python user would hand handles around in, measured in the same run.

Groups (compare.py prints each as a ratio table against the entry marked ``reference``):

* ``freelist-pair-1thread``: one thread, 1000 pop+push pairs per timed call.
* ``freelist-batch32-1thread``: one thread, 32 batches of 32 handles popped then pushed back per call.
* ``freelist-pairs-threads-N``: N Python threads, each doing ``PY_PAIRS`` pairs per round on one shared container.
* ``c-level-freelist-threads-N`` and ``c-level-freelist-batch32-threads-N``: N pthreads in C with the
  GIL released (``rseq_py.stress.freelist_bench``), one handle or 32 at a time.

An op is one handle moved: popped and pushed back.  Every entry records
``extra_info["ops"]``, the handles one timed call moves, so medians convert
to ns per handle; and every Python-level entry checks afterwards that its
container holds exactly the handles it started with, so ``--benchmark-disable``
still proves no contender lost or duplicated one.
"""

from __future__ import annotations

import collections
import itertools
import queue
import statistics

import pytest

import rseq_py
from rseq_py.stress import FREELIST_BENCH_MODES, freelist_bench

from benchutil import Calls, Gang, thread_counts

K = 256  # handles each container starts with: more than any thread count, so a pop never finds it empty
PAIRS = 1000  # pairs per timed call: the harness's own per-call cost would swamp a single pair
BATCH = 32  # handles per batch in the batch groups
BATCHES = 32  # batches per timed call in freelist-batch32-1thread
PY_PAIRS = 20_000  # pairs per thread per round: enough that a deque round dwarfs the Gang's barrier hand-offs
C_PAIRS = 200_000  # pairs per thread per call of freelist_bench(batch=1): a few ms per call on 2 cores
C_BATCHES = 20_000  # batches per thread per call of freelist_bench(batch=32): about as long
THREADS = thread_counts()


def _mark(benchmark, impl: str, ops: int, reference: bool = False) -> None:
    benchmark.extra_info.update(impl=impl, ops=ops, reference=reference)


# Each kind: how to build it holding 0..K-1, and its pop and push methods.  The
# baselines are the thread-safe containers of the standard library; queue.Queue
# is the one most code reaches for, SimpleQueue and deque the cheaper ones.
KINDS = {
    "rseq": ("PerCpuFreelist", "pop", "push"),
    # Before the C-API fast path: the cffi binding's calls (what pop/push were).
    "rseq_cffi": ("cffi binding", "rseq_py_freelist_pop_value", "rseq_py_freelist_push"),
    "deque": ("collections.deque", "pop", "append"),
    "simplequeue": ("queue.SimpleQueue", "get", "put"),
    "queue": ("queue.Queue", "get", "put"),
}


def _filled(kind: str):
    if kind in ("rseq", "rseq_cffi"):
        fl = rseq_py.PerCpuFreelist(K)
        fl.push_many(range(K))
        return fl
    if kind == "deque":
        return collections.deque(range(K))
    q = queue.SimpleQueue() if kind == "simplequeue" else queue.Queue()
    for h in range(K):
        q.put(h)
    return q


def _handles(c) -> list:
    """Empty ``c`` and return what it held, sorted."""
    if isinstance(c, rseq_py.PerCpuFreelist):
        return sorted(c.drain())
    if isinstance(c, collections.deque):
        return sorted(c)
    out = []
    while True:
        try:
            out.append(c.get_nowait())
        except queue.Empty:
            return sorted(out)


def _pairs(c, kind: str, n: int):
    """``n`` x ``push(pop())`` on ``c``: the same loop for every kind, only the bound methods differ.

    A pop that came back empty fails the push (None is no handle) or raises
    itself, so the loop cannot silently do less than it claims.
    """
    _, pop_name, push_name = KINDS[kind]
    if kind == "rseq_cffi":
        from rseq_py._native import lib
        ptr, pop_value, push_raw = c._c, lib.rseq_py_freelist_pop_value, lib.rseq_py_freelist_push

        def run_cffi():
            for _ in itertools.repeat(None, n):
                push_raw(ptr, pop_value(ptr))

        return run_cffi
    pop, push = getattr(c, pop_name), getattr(c, push_name)

    def run():
        for _ in itertools.repeat(None, n):
            push(pop())

    return run


# --- freelist-pair-1thread -----------------------------------------------------------
# The allocate-then-free pattern of a handle pool, one handle at a time: ours
# pays two cffi calls per pair, the baselines two C method calls.


@pytest.mark.parametrize("kind", list(KINDS))
def test_1thread_pair_per1000(benchmark, kind):
    """``push(pop())`` x1000 on a container holding K handles: ours vs deque, SimpleQueue, queue.Queue."""
    benchmark.group = "freelist-pair-1thread"
    c = _filled(kind)
    _mark(benchmark, f"{KINDS[kind][0]} {KINDS[kind][2]}({KINDS[kind][1]}())", PAIRS,
          reference=kind == "rseq")
    calls = Calls(_pairs(c, kind, PAIRS))
    benchmark(calls)
    assert calls.n >= 1 and _handles(c) == list(range(K))


# --- freelist-batch32-1thread --------------------------------------------------------
# Grabbing and returning 32 handles at once, where ours crosses into C once per
# batch instead of once per handle.  Each contender in its cheapest idiom.


def _batch_rseq_many(fl):
    pop_many, push_many = fl.pop_many, fl.push_many

    def run():
        for _ in itertools.repeat(None, BATCHES):
            hs = pop_many(BATCH)
            push_many(hs)
            assert len(hs) == BATCH  # a short batch would still conserve handles, so check it here

    return run


def _batch_singles(pop, push):
    def run():
        for _ in itertools.repeat(None, BATCHES):
            hs = [pop() for _ in itertools.repeat(None, BATCH)]
            for h in hs:
                push(h)

    return run


def _batch_deque(d):
    pop, extend = d.pop, d.extend

    def run():
        for _ in itertools.repeat(None, BATCHES):
            extend([pop() for _ in itertools.repeat(None, BATCH)])

    return run


BATCH_IMPLS = {
    "rseq_many": ("rseq", "PerCpuFreelist push_many(pop_many(32))", _batch_rseq_many),
    "rseq_singles": ("rseq", "PerCpuFreelist 32x pop, 32x push", lambda fl: _batch_singles(fl.pop, fl.push)),
    "deque": ("deque", "deque 32x pop + extend", _batch_deque),
    "simplequeue": ("simplequeue", "SimpleQueue 32x get, 32x put", lambda q: _batch_singles(q.get, q.put)),
}


@pytest.mark.parametrize("impl", list(BATCH_IMPLS))
def test_1thread_batch32(benchmark, impl):
    """32 batches of 32 handles popped then pushed back: ours in batches (the reference) and singly vs deque, SimpleQueue."""
    benchmark.group = "freelist-batch32-1thread"
    kind, name, build = BATCH_IMPLS[impl]
    c = _filled(kind)
    _mark(benchmark, name, BATCHES * BATCH, reference=impl == "rseq_many")
    calls = Calls(build(c))
    benchmark(calls)
    assert calls.n >= 1 and _handles(c) == list(range(K))


# --- freelist-pairs-threads-N --------------------------------------------------------
# N threads share one container.  Ours releases and retakes the GIL around
# every call (the cffi call does); deque and SimpleQueue hold it throughout
# and are atomic because of it.  Under the GIL nothing runs in parallel, so
# this shows what contention and GIL hand-offs cost per pair, not scaling
# (the c-level groups show that).

THREAD_KINDS = ["rseq", "deque", "simplequeue"]


@pytest.mark.parametrize("kind", THREAD_KINDS)
@pytest.mark.parametrize("n", THREADS)
def test_threads_pairs(benchmark, n, kind):
    """N Python threads x PY_PAIRS ``push(pop())`` on one shared container, per round: ours vs deque, SimpleQueue."""
    benchmark.group = f"freelist-pairs-threads-{n}"
    c = _filled(kind)
    _mark(benchmark, f"{KINDS[kind][0]} {KINDS[kind][2]}({KINDS[kind][1]}())", n * PY_PAIRS,
          reference=kind == "rseq")
    benchmark.extra_info["threads"] = n
    with Gang(n, _pairs(c, kind, PY_PAIRS)) as gang:
        calls = Calls(gang.round)
        benchmark.pedantic(calls, rounds=10, warmup_rounds=1)
    assert calls.n >= 1 and _handles(c) == list(range(K))


# --- c-level-freelist[-batch32]-threads-N --------------------------------------------
# The C core with no interpreter in the loop: ours beside the same freelist on
# its per-CPU spinlock fallback and beside the plain mutex-guarded stack a C
# programmer would write.  freelist_bench keeps its freelist to itself, so
# only the shape of its result can be checked here.


@pytest.mark.parametrize("mode", list(FREELIST_BENCH_MODES))
@pytest.mark.parametrize("n", THREADS)
@pytest.mark.parametrize("batch", [1, BATCH])
def test_c_level(benchmark, batch, n, mode):
    """freelist_bench(mode, n, ..., batch): one call per round; the C side's own clock goes in extra_info."""
    per_thread = C_PAIRS if batch == 1 else C_BATCHES
    benchmark.group = f"c-level-freelist-threads-{n}" if batch == 1 else f"c-level-freelist-batch{batch}-threads-{n}"
    _mark(benchmark, mode, n * per_thread * batch, reference=mode == "rseq")
    results = []

    def once():
        results.append(freelist_bench(mode, n, per_thread, batch))

    benchmark.pedantic(once, rounds=5, warmup_rounds=1)
    for r in results:
        assert (r.mode, r.threads) == (mode, n)
        assert r.ns_per_op > 0 and r.total_mops == pytest.approx(n * 1e3 / r.ns_per_op)
    benchmark.extra_info.update(
        threads=n,
        batch=batch,
        ns_per_op_per_thread=statistics.median(r.ns_per_op for r in results),
        total_mops=statistics.median(r.total_mops for r in results),
    )
