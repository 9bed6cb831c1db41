"""Shared freelists: lifecycle, validation, many processes at once, and
SIGKILL at random instants: no duplicate ever, only handles a killed worker
held are lost, and no survivor blocks."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import select
import signal
import struct
import time
import uuid

import pytest

from rseq_py import PerCpuCounter, PerCpuFreelist, SegmentError
from support import allowed_cpus, scaled

SHM = "/dev/shm/rseq_py."


@pytest.fixture
def name():
    n = f"test-fl-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    try:
        os.unlink(SHM + n)
    except FileNotFoundError:
        pass


def test_lifecycle_and_pickling(name):
    fl = PerCpuFreelist.create(name, capacity=100, per_cpu=8)
    fl.push_many(range(50))
    with PerCpuFreelist.attach(name) as other:
        assert len(other) == 50 and other.capacity == 100 and other.per_cpu == 8
        assert other.robust == fl.robust
        h = other.pop()
    assert other.closed and repr(other) == f"PerCpuFreelist(name={name!r}, capacity=100, closed)"
    with pytest.raises(ValueError, match="is closed"):
        other.push(1)
    copy = pickle.loads(pickle.dumps(fl))
    copy.push(h)
    assert sorted(fl.drain()) == list(range(50))
    with pytest.raises(FileExistsError):
        PerCpuFreelist.create(name, capacity=5)
    fl.unlink()
    with pytest.raises(FileNotFoundError):
        PerCpuFreelist.attach(name)


def test_kinds_do_not_mix(name, tmp_path):
    PerCpuFreelist.create(name, capacity=10)
    with pytest.raises(SegmentError, match="it holds a PerCpuFreelist, not a PerCpuCounter"):
        PerCpuCounter.attach(name)
    os.unlink(SHM + name)
    PerCpuCounter.create(name)
    with pytest.raises(SegmentError, match="it holds a PerCpuCounter, not a PerCpuFreelist"):
        PerCpuFreelist.attach(name)


def test_freelist_geometry_is_validated(name):
    PerCpuFreelist.create(name, capacity=64, per_cpu=8)
    with open(SHM + name, "r+b") as f:
        f.seek(40)  # geometry[0]: capacity
        f.write(struct.pack("<Q", 1 << 20))
    with pytest.raises(SegmentError, match="freelist geometry"):
        PerCpuFreelist.attach(name)


def _churn(args):
    fl, seed, rounds = args
    rng = random.Random(seed)
    for _ in range(rounds):
        hs = fl.pop_many(rng.randint(1, 8))
        if hs:
            fl.push_many(hs)
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_share_one_freelist_exactly(name, method):
    fl = PerCpuFreelist.create(name, capacity=400, per_cpu=8)
    fl.push_many(range(300))
    with multiprocessing.get_context(method).Pool(4) as pool:
        pool.map(_churn, [(fl, i, scaled(3000)) for i in range(8)])
    assert sorted(fl.drain()) == list(range(300))


def test_producer_process_and_consumer_process_on_different_cpus(name):
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    n = scaled(20_000)
    fl = PerCpuFreelist.create(name, capacity=n, per_cpu=16)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: the producer
        code = 1
        try:
            os.sched_setaffinity(0, {cpus[0]})
            for start in range(0, n, 50):
                fl.push_many(range(start, min(start + 50, n)))
            code = 0
        finally:
            os._exit(code)
    os.sched_setaffinity(0, {cpus[1]})
    got = []
    deadline = time.monotonic() + 300
    try:
        while len(got) < n and time.monotonic() < deadline:
            got += fl.pop_many(64)
    finally:
        os.sched_setaffinity(0, set(cpus))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(got) == list(range(n))  # stolen across processes, each exactly once


def _kill_worker(fl: PerCpuFreelist, seed: int, w: int) -> None:  # pragma: no cover
    """Pop, report what it holds, report what it gives back, push: forever."""
    rng = random.Random(seed)
    while True:
        hs = fl.pop_many(rng.randint(1, 6))
        if hs:
            os.write(w, struct.pack(f"<q{len(hs)}q", len(hs), *hs))     # now holding these
            os.write(w, struct.pack(f"<q{len(hs)}q", -len(hs), *hs))    # about to push them
            fl.push_many(hs)


def test_sigkill_loses_only_what_the_killed_held(name):
    handles, batch, workers, kills = 3000, 6, 4, scaled(60)
    # Room for credits a killed process may have held in hand.
    fl = PerCpuFreelist.create(name, capacity=handles + kills * 64, per_cpu=8)
    if not fl.robust:
        pytest.skip("no robust mutexes here (qemu-user): a kill inside the pool lock would block")
    fl.push_many(range(handles))
    rng = random.Random(99)
    live: dict[int, tuple[int, bytearray]] = {}
    maybe_lost: set[int] = set()
    killed = 0

    def spawn(seed: int) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            try:
                _kill_worker(fl, seed, w)
            finally:
                os._exit(1)
        os.close(w)
        live[pid] = (r, bytearray())

    def held_by(buf: bytearray) -> set[int]:
        """Handles whose pop was reported and whose push was not (or only begun)."""
        held: set[int] = set()
        giving: set[int] = set()
        words = [v for (v,) in struct.iter_unpack("<q", bytes(buf[: len(buf) // 8 * 8]))]
        i = 0
        while i < len(words):
            n = words[i]
            hs = words[i + 1: i + 1 + abs(n)]
            i += 1 + abs(n)
            if n > 0:
                giving.clear()
                held.update(hs)
            else:
                giving = set(hs)
                held.difference_update(hs)
        return held | giving

    for s in range(workers):
        spawn(s)
    def pump(seconds: float) -> None:
        """Keep reading every worker's reports, so none blocks on a full pipe."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            fds = {r: buf for r, buf in live.values()}
            for r in select.select(list(fds), [], [], left)[0]:
                fds[r] += os.read(r, 1 << 16)

    for k in range(kills):
        pump(rng.uniform(0.001, 0.02))
        pid = rng.choice(list(live))
        r, buf = live.pop(pid)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(r, 1 << 16):
            buf += chunk
        os.close(r)
        maybe_lost |= held_by(buf)
        killed += 1
        spawn(1000 + k)
        # This process keeps working beside them: nothing is left blocked
        # (a stop word or the pool lock of a dead process is taken over).
        fl.push_many(fl.pop_many(3))
    # Every survivor is still making progress after all those deaths.
    # (Waiting up to 30 s: a worker forked just now may take a while to get
    # going on an emulated machine; a blocked one never reports again.)
    before = {pid: len(buf) for pid, (_, buf) in live.items()}
    deadline = time.monotonic() + 30
    stuck = list(live)
    while stuck and time.monotonic() < deadline:
        pump(0.25)
        stuck = [pid for pid, (_, buf) in live.items() if len(buf) == before[pid]]
    assert not stuck, f"workers {stuck} made no progress in 30 s: blocked"
    for pid, (r, buf) in live.items():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        while chunk := os.read(r, 1 << 16):
            buf += chunk
        os.close(r)
        maybe_lost |= held_by(buf)
        killed += 1
    rest = fl.drain()
    assert len(rest) == len(set(rest)), "a handle is in the freelist twice"
    assert set(rest) <= set(range(handles))
    lost = set(range(handles)) - set(rest)
    # Every worker was killed in the end.  Each may also have died holding a
    # batch it had popped but not yet reported: at most `batch` more.
    unexplained = lost - maybe_lost
    print(f"\n{killed} kills: {len(lost)} handles lost, {len(maybe_lost)} held by the killed, "
          f"{len(unexplained)} in flight, {len(rest)} drained")
    assert len(unexplained) <= killed * batch, (len(lost), len(unexplained), killed)
    assert len(rest) >= handles - len(maybe_lost) - killed * batch


CRASH_POINTS = {
    "owning-stack": 1,
    "spill-journaled": 2,
    "spill-stack-committed": 3,
    "refill-journaled": 4,
    "refill-stack-committed": 5,
}


@pytest.mark.parametrize("point", sorted(CRASH_POINTS))
def test_a_process_dying_mid_move_loses_and_duplicates_nothing(name, point, restore_affinity):
    """The dying process held the stack's stop word and the pool's robust
    mutex in the middle of a journaled move: the next process takes the
    stack over, repairs the move, and every handle is still there once."""
    from rseq_py._native import lib

    cpu = allowed_cpus()[0]
    os.sched_setaffinity(0, {cpu})
    fl = PerCpuFreelist.create(name, capacity=1000, per_cpu=16)
    if point != "owning-stack" and not fl.robust:
        pytest.skip("no robust mutexes here (qemu-user): the pool lock of a dead process stays held")
    fl.push_many(range(500))  # this CPU's stack holds some, the pool the rest
    out = fl.pop_many(20) if point.startswith("refill") else []  # leave the stack room
    kept = sorted(set(range(500)) - set(out))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        lib.rseq_py_freelist_test_crash(fl._c, CRASH_POINTS[point])
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the crash point was not reached"
    h = fl.pop()  # takes the dead process's stack over (and repairs the pool)
    assert h is not None
    fl.push(h)
    assert sorted(fl.drain()) == kept


def test_rseq_and_fallback_processes_share_one_freelist(name):
    """A fallback process (stop words as locks) and rseq processes (sections)
    churn one freelist at once: the fallback one fences too, so no handle is
    lost or duplicated."""
    import subprocess
    import sys
    import textwrap

    fl = PerCpuFreelist.create(name, capacity=600, per_cpu=8)
    fl.push_many(range(500))
    # Sections with an injected delay (rseq processes) and owner-path edits
    # (the fallback process) meet on the same CPUs for as long as possible.
    code = textwrap.dedent(f"""
        import rseq_py
        from rseq_py.stress import freelist_stress
        fl = rseq_py.PerCpuFreelist.attach({name!r})
        rseq = rseq_py.info().backend == "rseq"
        r = freelist_stress("rseq_inject" if rseq else "atomic", threads=4,
                            ops_per_thread={scaled(20_000)}, handles=500, max_batch=8,
                            max_held=16, inject_loops=300, signal_interval_us=100, freelist=fl)
        assert r.duplicates == 0 and r.unexpected == 0 and r.full_pushes == 0, r
        print(rseq_py.info().backend)
        """)
    procs = []
    for backend in ("auto", "fallback", "auto"):
        env = dict(os.environ, RSEQ_PY_BACKEND=backend)
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd="/",
                                      stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[1] == "fallback"
    assert sorted(fl.drain()) == list(range(500))
