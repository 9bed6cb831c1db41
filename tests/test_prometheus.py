"""rseq_py.prometheus: prometheus_client counters in a shared per-CPU segment.

Forked workers (some using the inherited object, some constructing their own
as a worker of a pre-forking server would) count into one family while new
label sets appear in several processes at once; the scrape must show every
increment exactly once and every label set once.  The exposition must match
prometheus_client's own Counter for the same increments; a process killed
holding the label table's lock or in the middle of appending to it must
block and corrupt nothing.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import signal
import threading
from collections import Counter as Multiset

import pytest

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import rseq_py
from rseq_py import prometheus as rp
from support import run_python, scaled

_seq = itertools.count()


@pytest.fixture
def seg():
    """A fresh segment name, removed afterwards."""
    name = f"prom-test-{os.getpid()}-{next(_seq)}"
    rp.unlink(name)
    yield name
    rp.unlink(name)


def scrape(registry) -> dict:
    """{(sample name, sorted label items): value} of a registry's exposition text."""
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"sample {key} exposed twice"
            out[key] = s.value
    return out


def table_lines(segment: str) -> list:
    with open(rp._table_path(segment), "rb") as f:
        return f.read().splitlines()


def run_children(n: int, body) -> None:
    """Fork ``n`` children that each run ``body(k)`` after all have started; all must exit 0."""
    r, w = os.pipe()
    pids = []
    for k in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.close(w)
                os.read(r, 1)  # the start gun: every child is forked by then
                body(k)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(r)
    os.write(w, b"x" * n)
    os.close(w)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def plan(k: int, ops: int) -> list:
    """Worker k's increments: (method, code, amount), label sets shared across workers."""
    rnd = random.Random(k)
    return [(rnd.choice(["GET", "POST", "PUT"]), str(rnd.choice([200, 404, 500, 200 + k])),
             rnd.randint(0, 3)) for _ in range(ops)]


def test_forked_workers_count_exactly_and_new_label_sets_race(seg):
    workers = 2 * len(os.sched_getaffinity(0)) + 2
    ops = scaled(20_000)
    registry = CollectorRegistry()
    c = rp.Counter("http_requests_total", "Requests.", ["method", "code"], registry=registry,
                   segment=seg)
    plain = rp.Counter("jobs", "Jobs.", registry=registry, segment=seg + ".plain")

    def body(k: int) -> None:
        # Odd workers construct their own, like workers importing the app after the fork.
        mine = c if k % 2 == 0 else rp.Counter("http_requests_total", "Requests.",
                                               ["method", "code"], registry=None, segment=seg)
        for method, code, amount in plan(k, ops):
            mine.labels(method, code).inc(amount)
            plain.inc()

    try:
        run_children(workers, body)
        want = Multiset()
        for k in range(workers):
            for method, code, amount in plan(k, ops):
                want[(method, code)] += amount
        got = scrape(registry)
        assert got.pop(("jobs_total", ())) == workers * ops
        assert got == {("http_requests_total", (("code", code), ("method", method))): float(v)
                       for (method, code), v in want.items()}
        # Every label set once in the shared table, however many processes raced to add it.
        lines = table_lines(seg)[1:]
        assert len(lines) == len(set(lines)) == len(want)
    finally:
        plain.unlink()


def test_python_threads_count_exactly(seg):
    n, ops = 4 * len(os.sched_getaffinity(0)), scaled(20_000)
    registry = CollectorRegistry()
    c = rp.Counter("t", "T.", ["worker"], registry=registry, segment=seg)

    def work(k: int) -> None:
        for i in range(ops):
            c.labels(str(k % 3)).inc()
            c.labels(worker=str(i % 2 + 10)).inc(2)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = scrape(registry)
    want = {("t_total", (("worker", str(k)),)): float(ops * sum(1 for j in range(n) if j % 3 == k))
            for k in range(3)}
    want.update({("t_total", (("worker", str(w)),)): float(n * ops) for w in (10, 11)})
    assert got == want


def test_exposition_matches_prometheus_client(seg):
    """Same increments, same text, but for prometheus_client's _created samples."""
    theirs_reg, ours_reg = CollectorRegistry(), CollectorRegistry()
    kw = dict(namespace="app", subsystem="http", unit="bytes")
    theirs = prometheus_client.Counter("sent_total", "Bytes \"sent\"\nback.", ["peer", "path"],
                                       registry=theirs_reg, **kw)
    ours = rp.Counter("sent_total", "Bytes \"sent\"\nback.", ["peer", "path"], registry=ours_reg,
                      segment=seg, **kw)
    rnd = random.Random(7)
    for _ in range(2000):
        labels = (rnd.choice(["a", "b\u00e9", 'q"x', "new\nline", "back\\slash"]),
                  rnd.choice(["/", "/x"]))
        amount = rnd.randint(0, 1000)
        theirs.labels(*labels).inc(amount)
        ours.labels(*labels).inc(amount)
    text = [ln for ln in generate_latest(theirs_reg).decode().splitlines()
            if "_created" not in ln]
    assert generate_latest(ours_reg).decode().splitlines() == text
    assert len(text) == 2 + 10


def test_default_registry_and_no_labels(seg):
    c = rp.Counter("rseq_py_test_default_registry", "D.", segment=seg)
    try:
        c.inc()
        c.inc(41)
        assert prometheus_client.REGISTRY.get_sample_value(
            "rseq_py_test_default_registry_total") == 42.0
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            rp.Counter("rseq_py_test_default_registry", "D.", segment=seg)
    finally:
        prometheus_client.REGISTRY.unregister(c)


def test_another_program_attaches_by_segment(seg):
    registry = CollectorRegistry()
    c = rp.Counter("jobs", "Jobs.", ["queue"], registry=registry, segment=seg)
    c.labels("low").inc(5)
    out = run_python(f"""
        import json
        from rseq_py.prometheus import Counter
        c = Counter("jobs", "Jobs.", ["queue"], registry=None, segment={seg!r})
        c.labels("high").inc(7)
        c.labels("low").inc(1)
        print(json.dumps([[s.labels, s.value] for s in next(c.collect()).samples]))
    """)
    assert out == [[{"queue": "low"}, 6.0], [{"queue": "high"}, 7.0]]
    assert scrape(registry) == {("jobs_total", (("queue", "low"),)): 6.0,
                                ("jobs_total", (("queue", "high"),)): 7.0}


def test_resolution_counts_fractions(seg):
    registry = CollectorRegistry()
    c = rp.Counter("busy_seconds", "S.", registry=registry, segment=seg, resolution=1e-6)
    for _ in range(4):
        c.inc(0.25)
    c.inc(3)
    c.inc(1e-7)  # below the resolution: rounds to nothing
    assert registry.get_sample_value("busy_seconds_total") == pytest.approx(4.0, abs=1e-12)
    whole = rp.Counter("whole", "W.", registry=None, segment=seg + ".w")
    try:
        whole.inc(2.0)
        with pytest.raises(ValueError, match=r"amount 0\.5 is fractional .* resolution=1e-6"):
            whole.inc(0.5)
        assert next(whole.collect()).samples[0].value == 2.0
    finally:
        whole.unlink()


def test_count_exceptions(seg):
    registry = CollectorRegistry()
    c = rp.Counter("errors", "E.", ["kind"], registry=registry, segment=seg)
    plain = rp.Counter("failures", "F.", registry=registry, segment=seg + ".f")
    try:
        @c.labels("value").count_exceptions(ValueError)
        def f(x):
            if x:
                raise ValueError(x)
            return "ok"

        assert f(0) == "ok"
        for _ in range(3):
            with pytest.raises(ValueError):
                f(1)
        with pytest.raises(KeyError):
            with c.labels("value").count_exceptions(ValueError):
                raise KeyError("not counted")
        with pytest.raises(RuntimeError):
            with plain.count_exceptions():
                raise RuntimeError("counted")
        assert scrape(registry) == {("errors_total", (("kind", "value"),)): 3.0,
                                    ("failures_total", ()): 1.0}
    finally:
        plain.unlink()


def test_a_process_killed_holding_the_lock_blocks_nobody(seg):
    c = rp.Counter("k", "K.", ["x"], registry=None, segment=seg)
    c.labels("before").inc()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        fd = os.open(rp._table_path(seg), os.O_RDWR | os.O_APPEND)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b'["half wri')  # dies in the middle of an append, holding the lock
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert table_lines(seg)[-1] == b'["half wri'
    # The kernel dropped its lock; the torn line is not a label set.
    assert [s.labels for s in next(c.collect()).samples] == [{"x": "before"}]
    fresh = rp.Counter("k", "K.", ["x"], registry=None, segment=seg)
    fresh.labels("after").inc(2)  # takes the lock and cuts the torn tail off
    assert table_lines(seg)[1:] == [b'["before"]', b'["after"]']
    assert [(s.labels, s.value) for s in next(c.collect()).samples] == \
        [({"x": "before"}, 1.0), ({"x": "after"}, 2.0)]
    c.labels("after").inc()  # the old object finds the new set by reading the table
    assert next(fresh.collect()).samples[1].value == 3.0


def test_sigkilled_workers_lose_nothing_committed(seg):
    """Workers SIGKILLed while adding label sets and counting: the table stays a set, counts are
    those reported committed (plus at most the one in flight), and the survivors go on."""
    c = rp.Counter("w", "W.", ["n"], registry=None, segment=seg)
    workers = 6
    pipes, pids = [], []
    for k in range(workers):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            for i in itertools.count():
                c.labels(str((k * 7 + i) % 40)).inc()
                os.write(w, b"x")
        os.close(w)
        pipes.append(r)
        pids.append(pid)
    import time
    time.sleep(0.5 if rseq_py.info().arch == "x86_64" else 3)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    reported = 0
    for pid, r in zip(pids, pipes):
        os.waitpid(pid, 0)
        while True:
            b = os.read(r, 1 << 16)
            if not b:
                break
            reported += len(b)
        os.close(r)
    samples = next(c.collect()).samples
    total = sum(s.value for s in samples)
    # each worker may have committed one inc it did not get to report
    assert reported <= total <= reported + workers
    lines = table_lines(seg)[1:]
    assert len(lines) == len(set(lines)) == len(samples) <= 40
    c.labels("survivor").inc()
    assert next(c.collect()).samples[-1].labels == {"n": "survivor"}


def test_unlink_starts_afresh(seg):
    c = rp.Counter("u", "U.", ["a"], registry=None, segment=seg)
    c.labels("1").inc(5)
    again = rp.Counter("u", "U.", ["a"], registry=None, segment=seg)
    assert next(again.collect()).samples[0].value == 5.0  # attached: the counts persist
    c.unlink()
    assert not os.path.exists(rp._table_path(seg))
    fresh = rp.Counter("u", "U.", ["a"], registry=None, segment=seg)
    assert next(fresh.collect()).samples == []
    c.labels("1").inc()  # the unlinked family still counts in its own mapping
    assert next(c.collect()).samples[0].value == 6.0
    rp.unlink(seg)
    rp.unlink(seg)  # missing files are fine


def test_max_series_is_enforced_and_nothing_lost(seg):
    c = rp.Counter("m", "M.", ["a"], registry=None, segment=seg, max_series=3)
    for v in "xyz":
        c.labels(v).inc()
    with pytest.raises(ValueError, match=r"already holds max_series=3 label sets, so \('w',\) "
                                         r"cannot be added"):
        c.labels("w")
    c.labels("x").inc()
    assert [(s.labels["a"], s.value) for s in next(c.collect()).samples] == \
        [("x", 2.0), ("y", 1.0), ("z", 1.0)]
    assert len(table_lines(seg)) == 4


BAD_ARGS = [
    (dict(name=1), TypeError, "name must be a str, not int"),
    (dict(documentation=None), TypeError, "documentation must be a str, not NoneType"),
    (dict(name=""), ValueError, "metric name must not be empty"),
    (dict(name="bad-name"), ValueError, "invalid metric name 'bad-name'"),
    (dict(name="9lives"), ValueError, "invalid metric name '9lives'"),
    (dict(labelnames="ab"), TypeError, "labelnames must be a sequence of str, not a str"),
    (dict(labelnames=[1]), TypeError, "label names must be str, not int"),
    (dict(labelnames=["a-b"]), ValueError, "invalid label name 'a-b'"),
    (dict(labelnames=["__x"]), ValueError, "invalid label name '__x'"),
    (dict(labelnames=["a", "a"]), ValueError, r"duplicate label names in \('a', 'a'\)"),
    (dict(max_series=0), ValueError, "max_series must be between 1 and 1048576, got 0"),
    (dict(max_series=2**20 + 1), ValueError, "max_series must be between 1 and 1048576"),
    (dict(max_series=1.0), TypeError, "max_series must be an int, not float"),
    (dict(resolution=0), ValueError, "resolution must be a positive finite number, got 0"),
    (dict(resolution=float("nan")), ValueError, "resolution must be a positive finite number"),
    (dict(resolution="1"), TypeError, "resolution must be an int or float, not str"),
    (dict(resolution=True), TypeError, "resolution must be an int or float, not bool"),
    (dict(segment="../etc"), ValueError, "invalid segment name '../etc'"),
    (dict(segment=5), TypeError, "segment name must be a str, not int"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD_ARGS)
def test_bad_construction(seg, kw, exc, msg):
    args = dict(name="ok", documentation="D.", labelnames=(), registry=None, segment=seg)
    args.update(kw)
    with pytest.raises(exc, match=msg):
        rp.Counter(**args)
    assert not os.path.exists(rp._table_path(seg))


BAD_AMOUNTS = [
    (-1, ValueError, "non-negative amounts, got -1"),
    (-0.5, ValueError, "non-negative amounts, got -0.5"),
    (float("nan"), ValueError, "amount must be finite, got nan"),
    (float("inf"), ValueError, "amount must be finite, got inf"),
    ("1", TypeError, "amount must be an int or float, not str"),
    (True, TypeError, "amount must be an int or float, not bool"),
    (None, TypeError, "amount must be an int or float, not NoneType"),
    (2**63, OverflowError, "amount 9223372036854775808 is 9223372036854775808 counts of resolution 1, more than an int64 holds"),
    (1e19, OverflowError, "amount 1e[+]19 is 10000000000000000000 counts of resolution 1"),
]


@pytest.mark.parametrize("amount,exc,msg", BAD_AMOUNTS)
def test_bad_amounts_change_nothing(seg, amount, exc, msg):
    c = rp.Counter("a", "A.", ["x"], registry=None, segment=seg)
    plain = rp.Counter("b", "B.", registry=None, segment=seg + ".b")
    try:
        c.labels("1").inc(3)
        plain.inc(3)
        with pytest.raises(exc, match=msg):
            c.labels("1").inc(amount)
        with pytest.raises(exc, match=msg):
            plain.inc(amount)
        assert next(c.collect()).samples[0].value == 3.0
        assert next(plain.collect()).samples[0].value == 3.0
    finally:
        plain.unlink()


def test_bad_label_use(seg):
    c = rp.Counter("l", "L.", ["a", "b"], registry=None, segment=seg)
    plain = rp.Counter("p", "P.", registry=None, segment=seg + ".p")
    try:
        with pytest.raises(ValueError, match="counter metric 'l' is missing label values"):
            c.inc()
        with pytest.raises(ValueError, match="'l' is missing label values"):
            c.count_exceptions()
        with pytest.raises(ValueError, match="no label names were set when constructing counter 'p'"):
            plain.labels("x")
        with pytest.raises(ValueError, match=r"incorrect label count: 1 values for label names \['a', 'b'\]"):
            c.labels("x")
        with pytest.raises(ValueError, match=r"incorrect label names: \['a', 'c'\], expected \['a', 'b'\]"):
            c.labels(a="1", c="2")
        with pytest.raises(ValueError, match="can't pass both"):
            c.labels("1", b="2")
        assert c.labels(1, 2) is c.labels(a="1", b="2")  # values are str()'d, series cached
        assert len(table_lines(seg)) == 2
    finally:
        plain.unlink()


@pytest.mark.parametrize("kw,what", [
    (dict(labelnames=["b"]), r"labelnames=\['a'\], not \['b'\]"),
    (dict(max_series=10), "max_series=1024, not 10"),
    (dict(resolution=0.5), "resolution=1, not 0.5"),
    (dict(name="other"), "name='c', not 'other'"),
])
def test_attach_with_other_geometry_is_refused(seg, kw, what):
    rp.Counter("c", "C.", ["a"], registry=None, segment=seg).labels("x").inc()
    args = dict(name="c", documentation="C.", labelnames=["a"], registry=None, segment=seg)
    args.update(kw)
    with pytest.raises(ValueError, match=f"segment '{seg}' was created with {what}: pass another "
                                         f"segment= or remove it"):
        rp.Counter(**args)
    assert next(rp.Counter("c", "C.", ["a"], registry=None, segment=seg).collect()
                ).samples[0].value == 1.0


def test_foreign_or_corrupt_files_are_refused(seg):
    path = rp._table_path(seg)
    with open(path, "w") as f:
        f.write('{"kind": "something else"}\n')
    with pytest.raises(rseq_py.SegmentError, match="is not the label table of an rseq_py prometheus"):
        rp.Counter("c", "C.", registry=None, segment=seg)
    with open(path, "w") as f:
        f.write('{"kind": "rseq_py.prometheus.Counter", "version": 99}\n')
    with pytest.raises(rseq_py.SegmentError, match="has label table version 99, this rseq_py reads 1"):
        rp.Counter("c", "C.", registry=None, segment=seg)
    rp.unlink(seg)
    c = rp.Counter("c", "C.", ["a"], registry=None, segment=seg)
    with open(path, "a") as f:
        f.write("[1, 2]\n")
    with pytest.raises(rseq_py.SegmentError, match=r"label table .* is corrupt .*line 2\): unlink it"):
        c.labels("new")
    rp.unlink(seg)
    c = rp.Counter("c", "C.", ["a"], registry=None, segment=seg)
    os.unlink(rseq_py._segment.path_of(seg))
    with pytest.raises(rseq_py.SegmentError, match="has a label table but no counter"):
        rp.Counter("c", "C.", ["a"], registry=None, segment=seg)
    rp.unlink(seg)
    rseq_py.PerCpuFreelist.create(seg, capacity=4).close()  # a freelist where the counter goes
    with open(path, "w") as f:
        f.write('{"kind": "rseq_py.prometheus.Counter", "version": 1, "name": "c", '
                '"labelnames": [], "max_series": 1024, "resolution": 1}\n')
    with pytest.raises(rseq_py.SegmentError, match="it holds a PerCpuFreelist, not a PerCpuCounter"):
        rp.Counter("c", "C.", registry=None, segment=seg)


def test_a_creator_that_died_before_the_header_is_redone(seg):
    """An empty or header-less table means its creator died mid-construction: start over."""
    stale = rseq_py.PerCpuCounter.create(seg, size=1024)
    stale.add(99)
    with open(rp._table_path(seg), "w") as f:
        f.write('{"kind": "rseq_py.prom')
    c = rp.Counter("c", "C.", registry=None, segment=seg)
    assert next(c.collect()).samples[0].value == 0.0
    c.inc()
    assert stale.value() == 99  # the old segment is unlinked, not reused
    stale.close()
