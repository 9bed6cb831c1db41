"""Shared per-CPU counters: lifecycle, header validation, other processes,
and SIGKILL at random instants with exact accounting."""

from __future__ import annotations

import os
import pickle
import random
import select
import signal
import struct
import time
import uuid

import pytest

from rseq_py import PerCpuCounter, SegmentError
from support import scaled

SHM = "/dev/shm/rseq_py."


@pytest.fixture
def name():
    n = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield n
    try:
        os.unlink(SHM + n)
    except FileNotFoundError:
        pass


# ---- lifecycle -------------------------------------------------------------


def test_create_attach_close_unlink(name):
    c = PerCpuCounter.create(name, size=8)
    assert c.name == name and len(c) == 8 and os.path.exists(SHM + name)
    c.inc()
    with PerCpuCounter.attach(name) as c2:
        c2.add(3, index=7)
        assert c2.values() == [1, 0, 0, 0, 0, 0, 0, 3]
    assert c2.closed and repr(c2) == f"PerCpuCounter(name={name!r}, size=8, closed)"
    assert c.values() == [1, 0, 0, 0, 0, 0, 0, 3]
    c.unlink()
    assert not os.path.exists(SHM + name)
    c.inc()  # the mapping outlives the name
    assert c.value() == 2
    with pytest.raises(FileNotFoundError, match="no shared segment named"):
        PerCpuCounter.attach(name)
    with pytest.raises(FileNotFoundError):
        c.unlink()
    c.close()
    c.close()  # idempotent


def test_closed_counter_raises_value_error(name):
    c = PerCpuCounter.create(name)
    c.close()
    for call in (c.inc, lambda: c.add(1), lambda: c.sub(1), c.value, c.values, c.per_cpu,
                 c.reset, lambda: c.__enter__()):
        with pytest.raises(ValueError, match=f"PerCpuCounter '{name}' is closed"):
            call()


def test_create_refuses_an_existing_name(name):
    PerCpuCounter.create(name)
    with pytest.raises(FileExistsError, match="already exists"):
        PerCpuCounter.create(name, size=2)


@pytest.mark.parametrize("bad, exc, msg", [
    ("", ValueError, "invalid segment name ''"),
    ("a/b", ValueError, "invalid segment name"),
    ("-x", ValueError, "not starting with"),
    ("x" * 201, ValueError, "1-200"),
    (7, TypeError, "segment name must be a str, not int"),
    (None, TypeError, "not NoneType"),
])
def test_bad_names(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        PerCpuCounter.create(bad)
    with pytest.raises(exc, match=msg):
        PerCpuCounter.attach(bad)


def test_pickles_as_its_name_and_private_ones_refuse(name):
    c = PerCpuCounter.create(name, size=2)
    c2 = pickle.loads(pickle.dumps(c))
    c2.inc(1)
    assert c.value(1) == 1 and c2.name == name
    with pytest.raises(TypeError, match="use PerCpuCounter.create"):
        pickle.dumps(PerCpuCounter())


# ---- header validation --------------------------------------------------------

# struct rseq_py_segment_header offsets
MAGIC, VERSION, KIND, ARCH, WORD, SLOTS, READY, TOTAL = 0, 8, 12, 16, 20, 24, 28, 32


def patched(name: str, offset: int, fmt: str, value: int) -> None:
    with open(SHM + name, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


@pytest.mark.parametrize("offset, fmt, value, msg", [
    (MAGIC, "<Q", 0x1234, "not an rseq_py segment"),
    (VERSION, "<I", 99, "layout version 99, this rseq_py reads version 1"),
    (KIND, "<I", 2, "it holds a PerCpuFreelist, not a PerCpuCounter"),
    (ARCH, "<I", 7, "made for other"),
    (WORD, "<I", 4, "word size 4"),
    (SLOTS, "<I", 4097, "made for 4097 CPU slots"),
    (READY, "<I", 0, "incomplete: its creator has not finished"),
    (TOTAL, "<Q", 1 << 40, "truncated"),
])
def test_attach_validates_every_header_field(name, offset, fmt, value, msg):
    c = PerCpuCounter.create(name, size=3)
    c.add(5)
    patched(name, offset, fmt, value)
    with pytest.raises(SegmentError, match=msg):
        PerCpuCounter.attach(name)
    assert c.value() == 5  # the mapped view is unharmed


def test_attach_refuses_truncated_and_grown_files(name):
    c = PerCpuCounter.create(name, size=3)
    size = os.path.getsize(SHM + name)
    os.truncate(SHM + name, size + 4096)
    with pytest.raises(SegmentError, match="its header says"):
        PerCpuCounter.attach(name)
    os.truncate(SHM + name, 100)
    with pytest.raises(SegmentError, match="truncated: 100 bytes"):
        PerCpuCounter.attach(name)
    del c


def test_attach_refuses_foreign_files(name):
    with open(SHM + name, "wb") as f:
        f.write(os.urandom(4096))
    with pytest.raises(SegmentError, match="not an rseq_py segment"):
        PerCpuCounter.attach(name)
    with open(SHM + name, "wb"):
        pass
    with pytest.raises(SegmentError, match="truncated: 0 bytes"):
        PerCpuCounter.attach(name)


# ---- other processes ----------------------------------------------------------------


def _pool_work(args):
    c, n = args
    for _ in range(n):
        c.inc()
    c.add(n, index=1)
    return os.getpid()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_pool_counts_exactly(name, method):
    import multiprocessing

    c = PerCpuCounter.create(name, size=2)
    n = scaled(20_000)
    with multiprocessing.get_context(method).Pool(4) as pool:
        pids = pool.map(_pool_work, [(c, n)] * 8)
    assert c.values() == [8 * n, 8 * n]
    assert len(set(pids)) >= 1
    assert os.path.exists(SHM + name)  # no child unlinked it


def test_children_leave_no_resource_tracker_warnings(name, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "pool_script.py"
    script.write_text(
        "import json, multiprocessing, os\n"
        "import rseq_py\n"
        "def work(c):\n"
        "    c.inc()\n"
        "    return c.value()\n"
        "if __name__ == '__main__':\n"
        f"    c = rseq_py.PerCpuCounter.create({name!r})\n"
        "    with multiprocessing.get_context('spawn').Pool(2) as p:\n"
        "        p.map(work, [c] * 4)\n"
        f"    print(json.dumps(dict(v=c.value(), exists=os.path.exists({SHM + name!r}))))\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '{"v": 4, "exists": true}'
    assert "resource_tracker" not in proc.stderr and "leaked" not in proc.stderr, proc.stderr
    assert os.path.exists(SHM + name)  # still there after every process exited


def test_mixed_backends_share_one_counter_exactly(name):
    """A fallback process (atomic slots) and an rseq process (section slots)
    add to the same segment at once: neither undoes the other."""
    c = PerCpuCounter.create(name)
    code = f"""
        import json, rseq_py
        from rseq_py.stress import counter_stress
        c = rseq_py.PerCpuCounter.attach({name!r})
        r = counter_stress("rseq_inject", threads=8, ops_per_thread={scaled(50_000)},
                           inject_loops=50, signal_interval_us=50, counter=c)
        print(json.dumps(dict(expected=r.expected, backend=rseq_py.info().backend)))
        """
    import subprocess
    import sys
    import textwrap

    procs = []
    for env in ({}, {"RSEQ_PY_BACKEND": "fallback"}):
        e = dict(os.environ)
        e.pop("RSEQ_PY_BACKEND", None)
        e.update(env)
        procs.append(subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=e,
                                      cwd="/", stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    import json

    results = [json.loads(o.splitlines()[-1]) for o in outs]
    assert results[1]["backend"] == "fallback"
    assert c.value() == sum(r["expected"] for r in results)


# ---- SIGKILL at random instants ----------------------------------------------------------


def _worker(c: PerCpuCounter, index: int, batch: int, w: int) -> None:  # pragma: no cover
    """Count into slot `index` forever, reporting each committed batch."""
    while True:
        for _ in range(batch):
            c.inc(index)
        os.write(w, struct.pack("<q", batch))


def test_sigkill_leaves_exact_accounting(name):
    workers, batch, rounds = 4, 50, scaled(100)
    c = PerCpuCounter.create(name, size=workers * rounds + workers)
    reported: dict[int, int] = {}
    live: dict[int, tuple[int, int]] = {}  # pid -> (index, read end)
    killed: set[int] = set()
    next_index = 0
    rng = random.Random(1234)

    def spawn() -> None:
        nonlocal next_index
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            try:
                _worker(c, next_index, batch, w)
            finally:
                os._exit(1)
        os.close(w)
        live[pid] = (next_index, r)
        reported[next_index] = 0
        next_index += 1

    def drain(fd: int, index: int) -> None:
        while select.select([fd], [], [], 0)[0]:
            data = os.read(fd, 8 * 1024)
            if not data:
                return
            assert len(data) % 8 == 0  # an 8-byte write to a pipe is atomic
            reported[index] += sum(v for (v,) in struct.iter_unpack("<q", data))

    for _ in range(workers):
        spawn()
    for _ in range(rounds):
        time.sleep(rng.uniform(0.0005, 0.01))
        pid = rng.choice(list(live))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        index, fd = live.pop(pid)
        drain(fd, index)
        os.close(fd)
        killed.add(index)
        spawn()
    for pid, (index, fd) in list(live.items()):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        drain(fd, index)
        os.close(fd)
        killed.add(index)
    values = c.values()
    for index, rep in reported.items():
        # Every reported batch is in; at most the one batch in flight
        # when the process died is partly in; nothing else.
        assert rep <= values[index] <= rep + batch, (index, rep, values[index])
    assert sum(values) >= sum(reported.values()) > 0
    assert all(v == 0 for v in values[next_index:])
