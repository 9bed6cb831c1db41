"""Every bad input raises a clear Python exception before any C runs, and
changes nothing.

The catalogue below covers the whole public API: PerCpuCounter and
PerCpuFreelist (private), their shared segments (names, existing and missing
names, kinds, foreign, truncated and corrupted files), closed objects, the
lifecycle after ``unlink``, and the stress drivers.  Each row gives the call,
the exact exception type and a fragment of its message that names the
problem.  After each bad call the object holds exactly what it held before
(values, per-CPU values, length, contents); for the segment rows the file is
byte for byte what it was before the call (the refused call wrote nothing),
and once any deliberate damage is undone the segment attaches again with the
same contents, seen by the original view and by a fresh one.

Semantics decided and asserted here:

* ``bool`` is an ``int`` (``operator.index`` accepts it), so ``True`` is 1
  wherever an int is expected; objects with ``__index__`` are ints too.
* ``push_many(iterable)`` reads the iterable and validates every item before
  pushing any: a bad item anywhere (first, middle, last) or an exception
  raised by the iterable propagates and nothing was pushed.  At most
  ``capacity + 1`` items are read: an endless or longer iterable pushes what
  fits and raises ``FreelistFull`` (``.pushed`` leading items went in, none of
  the others), and items past ``capacity + 1`` are neither read nor checked.
* ``pop_many(n)``: ``n`` must be an int >= 0; a huge ``n`` is not an error (it
  returns at most what the freelist holds, never allocates beyond capacity).
* ``close()`` is a no-op on a private object (it stays usable) and
  idempotent on a shared one; after it every operation raises ``ValueError``
  "<Kind> '<name>' is closed", while ``name``, ``size``/``capacity``,
  ``closed``, ``len()`` of a counter, ``repr`` and ``unlink()`` still work.
* ``unlink()``: views keep working; a second ``unlink`` and ``attach`` raise
  ``FileNotFoundError``; ``create`` of the name again makes a new, independent
  segment.
"""

from __future__ import annotations

import itertools
import os
import pickle
import struct
import uuid
from typing import Callable

import pytest

from rseq_py import FreelistFull, PerCpuCounter, PerCpuFreelist, SegmentError
from rseq_py._native import ffi, lib
from rseq_py.stress import counter_bench, counter_stress, freelist_bench, freelist_stress

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
SHM = "/dev/shm/rseq_py."
C, F = PerCpuCounter, PerCpuFreelist
FL_MAX = PerCpuFreelist.MAX_CAPACITY
PC_MAX = lib.RSEQ_PY_FREELIST_PER_CPU_MAX


def _boom():
    yield 1
    yield 2
    raise RuntimeError("boom from the iterable")


class _Index:
    def __index__(self) -> int:
        return 2


# ---- PerCpuCounter (private) -------------------------------------------------


@pytest.fixture
def c():
    return PerCpuCounter(size=4)


COUNTER_BAD = [
    # (call, exception, message fragment)
    (lambda c: C(size=0), ValueError, "size must be between 1 and 1048576, got 0"),
    (lambda c: C(size=-3), ValueError, "got -3"),
    (lambda c: C(size=1 << 20 | 1), ValueError, "size must be between"),
    (lambda c: C(size=2.0), TypeError, "size must be an int, not float"),
    (lambda c: C(size="4"), TypeError, "size must be an int, not str"),
    (lambda c: C(size=None), TypeError, "not NoneType"),
    (lambda c: C(4, 5), TypeError, "positional argument"),
    (lambda c: c.add(1.5), TypeError, "delta must be an int, not float"),
    (lambda c: c.add("1"), TypeError, "delta must be an int, not str"),
    (lambda c: c.add(None), TypeError, "delta must be an int"),
    (lambda c: c.add(b"\x01"), TypeError, "delta must be an int, not bytes"),
    (lambda c: c.add(INT64_MAX + 1), OverflowError, "delta=9223372036854775808 does not fit"),
    (lambda c: c.add(INT64_MIN - 1), OverflowError, "does not fit in a signed 64-bit"),
    (lambda c: c.add(1 << 200), OverflowError, "does not fit"),
    (lambda c: c.add(1, index=4), IndexError, "index 4 out of range: this object has 4 (valid: 0..3)"),
    (lambda c: c.add(1, index=-1), IndexError, "index -1 out of range"),
    (lambda c: c.add(1, index=1.0), TypeError, "index must be an int, not float"),
    (lambda c: c.add(1, index=1 << 70), IndexError, "out of range"),
    (lambda c: c.add(1, index="0"), TypeError, "index must be an int, not str"),
    (lambda c: c.inc(4), IndexError, "index 4 out of range"),
    (lambda c: c.inc("0"), TypeError, "index must be an int, not str"),
    (lambda c: c.sub(1.0), TypeError, "delta must be an int"),
    (lambda c: c.sub("1"), TypeError, "delta must be an int, not str"),
    (lambda c: c.sub(INT64_MIN), OverflowError, "-delta=9223372036854775808 does not fit"),
    (lambda c: c.sub(INT64_MIN - 1), OverflowError, "-delta=9223372036854775809 does not fit"),
    (lambda c: c.sub(1, index=9), IndexError, "index 9 out of range"),
    (lambda c: c.value(4), IndexError, "index 4 out of range"),
    (lambda c: c.value(-1), IndexError, "index -1 out of range"),
    (lambda c: c.value(None), TypeError, "index must be an int, not NoneType"),
    (lambda c: c.per_cpu(-1), IndexError, "out of range"),
    (lambda c: c.per_cpu(4), IndexError, "index 4 out of range"),
    (lambda c: c.per_cpu([0]), TypeError, "not list"),
    (lambda c: c.reset(4), IndexError, "index 4 out of range"),
    (lambda c: c.reset(-1), IndexError, "index -1 out of range"),
    (lambda c: c.reset("all"), TypeError, "index must be an int, not str"),
    (lambda c: pickle.dumps(c), TypeError, "use PerCpuCounter.create(name) to share"),
    (lambda c: c.unlink(), TypeError, "a private PerCpuCounter has no shared segment to unlink"),
]


@pytest.mark.parametrize("call, exc, msg", COUNTER_BAD,
                         ids=[f"counter{i}" for i in range(len(COUNTER_BAD))])
def test_counter_bad_call_raises_and_changes_nothing(c, call, exc, msg):
    c.add(5, index=1)
    c.add(-7, index=3)
    before = (c.values(), [c.per_cpu(i) for i in range(4)])
    with pytest.raises(exc) as info:
        call(c)
    assert type(info.value) is exc
    assert msg in str(info.value)
    assert (c.values(), [c.per_cpu(i) for i in range(4)]) == before
    assert c.values() == [0, 5, 0, -7]


def test_sub_accepts_the_other_extreme(c):
    c.sub(INT64_MAX + 1)  # -delta == INT64_MIN fits
    assert c.value() == INT64_MIN


def test_bool_and_index_objects_are_ints(c):
    assert C(size=True).size == 1
    c.add(True, index=True)
    c.inc(_Index())
    c.add(_Index(), index=_Index())
    assert c.values() == [0, 1, 3, 0]
    assert c.reset(True) == 1


def test_private_close_is_a_no_op(c):
    c.inc()
    c.close()
    c.close()
    assert not c.closed
    c.inc()
    assert c.value() == 2 and c.cpu_slots >= 1


# ---- PerCpuFreelist (private) -------------------------------------------------


@pytest.fixture
def fl():
    fl = PerCpuFreelist(capacity=10, per_cpu=4)
    fl.push_many([10, 11])
    return fl


FREELIST_BAD = [
    (lambda fl: F(0), ValueError, f"capacity must be between 1 and {FL_MAX}, got 0"),
    (lambda fl: F(-1), ValueError, "got -1"),
    (lambda fl: F(FL_MAX + 1), ValueError, f"capacity must be between 1 and {FL_MAX}, got"),
    (lambda fl: F(1 << 100), ValueError, "capacity must be between"),
    (lambda fl: F(10.0), TypeError, "capacity must be an int, not float"),
    (lambda fl: F("10"), TypeError, "capacity must be an int, not str"),
    (lambda fl: F(None), TypeError, "capacity must be an int, not NoneType"),
    (lambda fl: F(), TypeError, "missing 1 required positional argument: 'capacity'"),
    (lambda fl: F(10, 4), TypeError, "positional argument"),  # per_cpu is keyword-only
    (lambda fl: F(10, per_cpu=0), ValueError, f"per_cpu must be between 1 and {PC_MAX}, got 0"),
    (lambda fl: F(10, per_cpu=-1), ValueError, "per_cpu must be between 1 and"),
    (lambda fl: F(10, per_cpu=PC_MAX + 1), ValueError, f"got {PC_MAX + 1}"),
    (lambda fl: F(10, per_cpu=2.0), TypeError, "per_cpu must be an int, not float"),
    (lambda fl: F(10, per_cpu="4"), TypeError, "per_cpu must be an int, not str"),
    (lambda fl: fl.push(1.5), TypeError, "handle must be an int, not float"),
    (lambda fl: fl.push("1"), TypeError, "handle must be an int, not str"),
    (lambda fl: fl.push(None), TypeError, "handle must be an int, not NoneType"),
    (lambda fl: fl.push(b"1"), TypeError, "handle must be an int, not bytes"),
    (lambda fl: fl.push(INT64_MAX + 1), OverflowError, "handle=9223372036854775808 does not fit"),
    (lambda fl: fl.push(INT64_MIN - 1), OverflowError, "does not fit in a signed 64-bit"),
    (lambda fl: fl.push(1 << 200), OverflowError, "does not fit"),
    (lambda fl: fl.push(), TypeError, "missing 1 required positional argument: 'handle'"),
    (lambda fl: fl.push_many(5), TypeError, "'int' object is not iterable"),
    (lambda fl: fl.push_many(None), TypeError, "'NoneType' object is not iterable"),
    (lambda fl: fl.push_many(["1"]), TypeError, "handle must be an int, not str"),
    (lambda fl: fl.push_many([1, "2", 3]), TypeError, "handle must be an int, not str"),
    (lambda fl: fl.push_many([1, 2, None]), TypeError, "handle must be an int, not NoneType"),
    (lambda fl: fl.push_many([1, 2.5, 3]), TypeError, "handle must be an int, not float"),
    (lambda fl: fl.push_many([1, 1 << 64, 3]), OverflowError, "handle=18446744073709551616 does not"),
    (lambda fl: fl.push_many((h for h in [1, INT64_MIN - 1])), OverflowError, "does not fit"),
    (lambda fl: fl.push_many("123"), TypeError, "handle must be an int, not str"),
    (lambda fl: fl.push_many(_boom()), RuntimeError, "boom from the iterable"),
    (lambda fl: fl.pop_many(-1), ValueError, "n must be >= 0, got -1"),
    (lambda fl: fl.pop_many(-(1 << 100)), ValueError, "n must be >= 0, got -1267650600228229401496703205376"),
    (lambda fl: fl.pop_many(2.0), TypeError, "n must be an int, not float"),
    (lambda fl: fl.pop_many("3"), TypeError, "n must be an int, not str"),
    (lambda fl: fl.pop_many(None), TypeError, "n must be an int, not NoneType"),
    (lambda fl: fl.pop(1), TypeError, "takes 1 positional argument"),
    (lambda fl: fl.drain(1), TypeError, "takes 1 positional argument"),
    (lambda fl: pickle.dumps(fl), TypeError, "private memory and cannot be pickled"),
    (lambda fl: fl.unlink(), TypeError, "a private PerCpuFreelist has no shared segment to unlink"),
]


@pytest.mark.parametrize("call, exc, msg", FREELIST_BAD,
                         ids=[f"freelist{i}" for i in range(len(FREELIST_BAD))])
def test_freelist_bad_call_raises_and_changes_nothing(fl, call, exc, msg):
    with pytest.raises(exc) as info:
        call(fl)
    assert type(info.value) is exc
    assert msg in str(info.value)
    assert len(fl) == 2
    assert sorted(fl.drain()) == [10, 11]


def test_push_many_with_a_bad_item_anywhere_pushes_nothing(fl):
    items = list(range(100, 107))
    for at in range(len(items)):
        bad = items[:at] + ["x"] + items[at:]
        with pytest.raises(TypeError, match="handle must be an int, not str"):
            fl.push_many(bad)
        assert len(fl) == 2
    it = iter([1, 2, "x", 3, 4])
    with pytest.raises(TypeError):
        fl.push_many(it)
    assert list(it) == [3, 4]  # read up to the bad item, which stopped it
    assert sorted(fl.drain()) == [10, 11]


def test_bool_and_index_objects_are_handles():
    fl = F(True, per_cpu=True)
    assert (fl.capacity, fl.per_cpu) == (1, 1)
    fl = F(_Index())
    fl.push(False)
    fl.push_many([_Index()])
    assert sorted(fl.pop_many(True) + fl.pop_many(_Index())) == [0, 2]


def test_huge_pop_many_is_not_an_error(fl):
    assert sorted(fl.pop_many(1 << 100)) == [10, 11]
    assert fl.pop_many(1 << 100) == [] and fl.pop() is None


def test_private_freelist_close_is_a_no_op(fl):
    fl.close()
    fl.close()
    fl.push(12)
    assert not fl.closed and sorted(fl.drain()) == [10, 11, 12]


# ---- PerCpuFreelist: full --------------------------------------------------------


def test_push_on_full_raises_and_loses_nothing(restore_affinity):
    cpus = sorted(os.sched_getaffinity(0))
    fl = F(12, per_cpu=2)
    os.sched_setaffinity(0, {cpus[0]})
    fl.push_many(range(12))
    for cpu in (cpus[0], cpus[-1]):  # exact capacity from every CPU
        os.sched_setaffinity(0, {cpu})
        with pytest.raises(FreelistFull, match="holds its capacity of 12 handles") as e:
            fl.push(99)
        assert e.value.pushed == 0 and len(fl) == 12
        with pytest.raises(FreelistFull, match="after 0 of 1 handles") as e:
            fl.push_many([99])
        assert e.value.pushed == 0 and len(fl) == 12
    fl.push_many([])  # nothing to push is never full
    assert sorted(fl.drain()) == list(range(12))


def test_push_many_beyond_capacity_pushes_the_leading_ones():
    fl = F(10, per_cpu=4)
    fl.push_many([100, 101, 102])
    with pytest.raises(FreelistFull, match="after 7 of 9 handles") as e:
        fl.push_many(range(9))
    assert e.value.pushed == 7
    assert sorted(fl.drain()) == [0, 1, 2, 3, 4, 5, 6, 100, 101, 102]


def test_push_many_reads_at_most_capacity_plus_one_items():
    fl = F(10, per_cpu=4)
    fl.push(-1)
    it = itertools.count()
    with pytest.raises(FreelistFull, match="iterable longer than the capacity") as e:
        fl.push_many(it)  # endless: must not hang
    assert e.value.pushed == 9
    assert next(it) == 11  # items 0..10 were read, 0..8 pushed
    assert sorted(fl.drain()) == [-1] + list(range(9))
    # A bad item past capacity + 1 is never read: the call is FreelistFull.
    with pytest.raises(FreelistFull) as e:
        fl.push_many(list(range(11)) + ["never read"])
    assert e.value.pushed == 10
    assert sorted(fl.drain()) == list(range(10))
    with pytest.raises(FreelistFull) as e:
        fl.push_many(range(10 ** 18))  # huge: does not build a list of it
    assert e.value.pushed == 10 and len(fl) == 10


# ---- shared segments ----------------------------------------------------------------

HEADER = {f: ffi.offsetof("struct rseq_py_segment_header", f)
          for f in ("magic", "version", "kind", "arch", "word_size", "cpu_slots", "ready",
                    "total_size", "geometry")}


def _unlink_quietly(n: str) -> None:
    p = SHM + n
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            os.rmdir(p)
        else:
            os.unlink(p)
    except FileNotFoundError:
        pass


@pytest.fixture
def names():
    """Two unique segment names (the segment under test, and another one); removed after."""
    base = f"test-bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    ns = (base, base + "-other")
    yield ns
    for n in ns:
        _unlink_quietly(n)


def _make(kind: str, name: str):
    if kind == "counter":
        obj = C.create(name, size=3)
        obj.add(5, index=1)
        obj.add(-2, index=2)
    else:
        obj = F.create(name, capacity=16, per_cpu=4)
        obj.push_many([1, 2, 3])
    return obj


def _assert_intact(kind: str, name: str, obj) -> None:
    """The original view and a fresh attach see the same, unchanged contents."""
    if kind == "counter":
        assert obj.values() == [0, 5, -2]
        with C.attach(name) as again:
            assert again.values() == [0, 5, -2] and again.size == 3
    else:
        with F.attach(name) as again:
            assert len(again) == 3 and again.capacity == 16 and again.per_cpu == 4
        assert len(obj) == 3
        got = obj.drain()
        assert sorted(got) == [1, 2, 3]
        obj.push_many(got)


def _patch(name: str, field: str, fmt: str, value: int, extra: int = 0) -> None:
    with open(SHM + name, "r+b") as f:
        f.seek(HEADER[field] + extra)
        f.write(struct.pack("=" + fmt, value))


def _write(name: str, data: bytes) -> None:
    with open(SHM + name, "wb") as f:
        f.write(data)


def _other_kind(kind: str):
    return F if kind == "counter" else C


def _kind(kind: str):
    return C if kind == "counter" else F


def _create(kind: str, name: object):
    return C.create(name) if kind == "counter" else F.create(name, capacity=4)


def _attach(kind: str, name: object):
    return _kind(kind).attach(name)


def _control_mismatch(name: str) -> None:
    off = HEADER["geometry"]
    with open(SHM + name, "rb") as f:
        f.seek(off)
        capacity, = struct.unpack("=Q", f.read(8))
    # The control block follows the 128-byte header; its first word is the
    # capacity the C descriptor uses: make it disagree with the header.
    with open(SHM + name, "r+b") as f:
        f.seek(lib.RSEQ_PY_SEGMENT_HEADER)
        f.write(struct.pack("=Q", capacity * 4))


def _control_word(name: str, word: int, value: int) -> None:
    """Overwrite word `word` of the control block (after the header):
    0 capacity, 1 per_cpu, 2 batch, 3 free credits, 4 pool count."""
    with open(SHM + name, "r+b") as f:
        f.seek(lib.RSEQ_PY_SEGMENT_HEADER + 8 * word)
        f.write(struct.pack("=Q", value))


_LAYOUT = f"layout version 99, this rseq_py reads version {lib.RSEQ_PY_SEGMENT_VERSION}"

# (id, kinds, prepare(name, other) or None, call(kind, name, other), exception, message)
SEGMENT_BAD = [
    # names
    ("empty-name", "cf", None, lambda k, n, o: _create(k, ""), ValueError, "invalid segment name ''"),
    ("slash", "cf", None, lambda k, n, o: _create(k, "a/b"), ValueError, "invalid segment name 'a/b'"),
    ("dotdot", "cf", None, lambda k, n, o: _attach(k, "../etc"), ValueError,
     "not starting with '.' or '-'"),
    ("too-long", "cf", None, lambda k, n, o: _create(k, "x" * 201), ValueError, "1-200 letters"),
    ("nul", "cf", None, lambda k, n, o: _create(k, "a\0b"), ValueError,
     "invalid segment name 'a\\x00b'"),
    ("newline", "c", None, lambda k, n, o: _attach(k, "ab\n"), ValueError, "invalid segment name"),
    ("space", "f", None, lambda k, n, o: _create(k, "a b"), ValueError, "invalid segment name 'a b'"),
    ("int-name", "cf", None, lambda k, n, o: _create(k, 7), TypeError,
     "segment name must be a str, not int"),
    ("bytes-name", "cf", None, lambda k, n, o: _attach(k, n.encode()), TypeError,
     "segment name must be a str, not bytes"),
    ("none-name", "cf", None, lambda k, n, o: _attach(k, None), TypeError, "not NoneType"),
    # bad geometry on create: nothing is created
    ("create-bad-size", "c", None, lambda k, n, o: C.create(o, size=0), ValueError,
     "size must be between 1 and"),
    ("create-bad-capacity", "f", None, lambda k, n, o: F.create(o, capacity=0), ValueError,
     "capacity must be between 1 and"),
    ("create-bad-per-cpu", "f", None, lambda k, n, o: F.create(o, 8, per_cpu="2"), TypeError,
     "per_cpu must be an int, not str"),
    # existing and missing names
    ("create-existing", "cf", None, lambda k, n, o: _create(k, n), FileExistsError,
     "already exists"),
    ("create-existing-other-kind", "cf", None,
     lambda k, n, o: C.create(n) if k == "freelist" else F.create(n, 4), FileExistsError,
     "attach() to it, or unlink it first"),
    ("create-over-a-directory", "c", lambda n, o: os.mkdir(SHM + o),
     lambda k, n, o: _create(k, o), FileExistsError, "already exists"),
    ("attach-missing", "cf", None, lambda k, n, o: _attach(k, o), FileNotFoundError,
     "no shared segment named"),
    ("attach-dangling-symlink", "f", lambda n, o: os.symlink("/nonexistent-rseq-py", SHM + o),
     lambda k, n, o: _attach(k, o), FileNotFoundError, "create it first"),
    ("attach-directory", "cf", lambda n, o: os.mkdir(SHM + o),
     lambda k, n, o: _attach(k, o), IsADirectoryError, SHM),
    # wrong kind
    ("wrong-kind", "cf", None, lambda k, n, o: _other_kind(k).attach(n), SegmentError,
     "it holds a Per"),
    # foreign, empty and truncated files
    ("foreign-random", "cf", lambda n, o: _write(o, os.urandom(4096)),
     lambda k, n, o: _attach(k, o), SegmentError, "not an rseq_py segment"),
    ("foreign-text", "f", lambda n, o: _write(o, b"hello\n" * 100),
     lambda k, n, o: _attach(k, o), SegmentError, "no rseq_py magic number"),
    ("foreign-short", "cf", lambda n, o: _write(o, os.urandom(100)),
     lambda k, n, o: _attach(k, o), SegmentError, "truncated: 100 bytes, smaller than the 128-byte"),
    ("foreign-empty", "cf", lambda n, o: _write(o, b""),
     lambda k, n, o: _attach(k, o), SegmentError, "truncated: 0 bytes"),
    ("fifo", "c", lambda n, o: os.mkfifo(SHM + o),
     lambda k, n, o: _attach(k, o), SegmentError, "truncated: 0 bytes"),
    ("truncated-half", "cf", lambda n, o: os.truncate(SHM + n, os.path.getsize(SHM + n) // 2),
     lambda k, n, o: _attach(k, n), SegmentError, "truncated: its header says"),
    ("truncated-to-header", "cf", lambda n, o: os.truncate(SHM + n, 128),
     lambda k, n, o: _attach(k, n), SegmentError, "the file has 128"),
    ("grown", "cf", lambda n, o: os.truncate(SHM + n, os.path.getsize(SHM + n) + 4096),
     lambda k, n, o: _attach(k, n), SegmentError, "its header says"),
    # header fields
    ("bad-magic", "cf", lambda n, o: _patch(n, "magic", "Q", 0x1234),
     lambda k, n, o: _attach(k, n), SegmentError, "not an rseq_py segment"),
    ("bad-version", "cf", lambda n, o: _patch(n, "version", "I", 99),
     lambda k, n, o: _attach(k, n), SegmentError, _LAYOUT),
    ("bad-kind", "cf", lambda n, o: _patch(n, "kind", "I", 77),
     lambda k, n, o: _attach(k, n), SegmentError, "it holds a unknown kind, not a Per"),
    ("bad-arch", "cf", lambda n, o: _patch(n, "arch", "I", 7),
     lambda k, n, o: _attach(k, n), SegmentError, "made for other"),
    ("bad-word-size", "cf", lambda n, o: _patch(n, "word_size", "I", 4),
     lambda k, n, o: _attach(k, n), SegmentError, "word size 4, this process uses 8"),
    ("bad-cpu-slots", "cf", lambda n, o: _patch(n, "cpu_slots", "I", 4097),
     lambda k, n, o: _attach(k, n), SegmentError, "made for 4097 CPU slots"),
    ("not-ready", "cf", lambda n, o: _patch(n, "ready", "I", 0),
     lambda k, n, o: _attach(k, n), SegmentError, "incomplete: its creator has not finished"),
    ("bad-total-size", "cf", lambda n, o: _patch(n, "total_size", "Q", 1 << 40),
     lambda k, n, o: _attach(k, n), SegmentError, "truncated: its header says 1099511627776 bytes"),
    ("bad-geometry-0", "cf", lambda n, o: _patch(n, "geometry", "Q", 1 << 20),
     lambda k, n, o: _attach(k, n), SegmentError, "geometry"),
    ("bad-geometry-1", "cf", lambda n, o: _patch(n, "geometry", "Q", 64, extra=8),
     lambda k, n, o: _attach(k, n), SegmentError, "does not match its"),
    # per_cpu 3 has the same stride and size as 4: only the control block can tell
    ("header-per-cpu-vs-control", "f", lambda n, o: _patch(n, "geometry", "Q", 3, extra=8),
     lambda k, n, o: _attach(k, n), SegmentError,
     "its control block says capacity 16, per_cpu 4; its header says capacity 16, per_cpu 3"),
    ("control-block-mismatch", "f", lambda n, o: _control_mismatch(n),
     lambda k, n, o: _attach(k, n), SegmentError, "corrupted: its control block says capacity 64"),
    # Fields only the C side reads: a zero batch would make pushes spin, huge
    # credits or pool counts would write past the pool and drain's buffer.
    ("control-batch-zero", "f", lambda n, o: _control_word(n, 2, 0),
     lambda k, n, o: _attach(k, n), SegmentError, "corrupted: its batch size 0 is outside 1..per_cpu"),
    ("control-credits-huge", "f", lambda n, o: _control_word(n, 3, 1 << 40),
     lambda k, n, o: _attach(k, n), SegmentError, "free credits are 1099511627776, beyond capacity 16"),
    ("control-pool-huge", "f", lambda n, o: _control_word(n, 4, 1 << 40),
     lambda k, n, o: _attach(k, n), SegmentError, "corrupted: its pool holds 1099511627776"),
    ("control-credits-double", "f", lambda n, o: _control_word(n, 3, 16),
     lambda k, n, o: _attach(k, n), SegmentError, "account for"),
]


def _segment_rows():
    for row in SEGMENT_BAD:
        for k in row[1]:
            kind = "counter" if k == "c" else "freelist"
            yield pytest.param(kind, *row[2:], id=f"{kind}-{row[0]}")


@pytest.mark.parametrize("kind, prepare, call, exc, msg", list(_segment_rows()))
def test_segment_bad_call_raises_and_leaves_it_intact(names, kind, prepare, call, exc, msg):
    name, other = names
    obj = _make(kind, name)
    path = SHM + name
    with open(path, "rb") as f:
        healthy = f.read()
    if prepare is not None:
        prepare(name, other)
    with open(path, "rb") as f:
        before_call = f.read()
    with pytest.raises(exc) as info:
        call(kind, name, other)
    assert type(info.value) is exc
    assert msg in str(info.value)
    with open(path, "rb") as f:
        assert f.read() == before_call  # the failed call wrote nothing
    if prepare is not None and before_call != healthy:  # undo the damage, then check
        with open(path, "r+b") as f:
            f.truncate(len(healthy))
            f.write(healthy)
    _assert_intact(kind, name, obj)
    if prepare is None:  # a refused create or attach leaves no file behind
        assert not os.path.lexists(SHM + other)


# ---- closed shared objects ----------------------------------------------------------

CLOSED_COUNTER = [
    lambda c: c.add(1), lambda c: c.inc(), lambda c: c.sub(1), lambda c: c.value(),
    lambda c: c.values(), lambda c: c.per_cpu(), lambda c: c.reset(), lambda c: c.reset(0),
    lambda c: c.cpu_slots, lambda c: c.__enter__(), lambda c: c.add(2, index=2),
]
CLOSED_FREELIST = [
    lambda f: f.push(1), lambda f: f.pop(), lambda f: f.push_many([1]), lambda f: f.push_many([]),
    lambda f: f.pop_many(1), lambda f: f.pop_many(0), lambda f: f.drain(), lambda f: len(f),
    lambda f: f.per_cpu, lambda f: f.robust, lambda f: f.__enter__(),
]


@pytest.mark.parametrize("kind, call", [("counter", c) for c in CLOSED_COUNTER] +
                         [("freelist", c) for c in CLOSED_FREELIST],
                         ids=[f"counter{i}" for i in range(len(CLOSED_COUNTER))] +
                         [f"freelist{i}" for i in range(len(CLOSED_FREELIST))])
def test_closed_object_raises_value_error(names, kind, call):
    name = names[0]
    obj = _make(kind, name)
    view = _attach(kind, name)
    view.close()
    with pytest.raises(ValueError) as info:
        call(view)
    assert type(info.value) is ValueError
    assert f"Per{'CpuCounter' if kind == 'counter' else 'CpuFreelist'} '{name}' is closed" in str(
        info.value)
    _assert_intact(kind, name, obj)


@pytest.mark.parametrize("kind", ["counter", "freelist"])
def test_what_still_works_on_a_closed_object(names, kind):
    name = names[0]
    obj = _make(kind, name)
    obj.close()
    obj.close()  # idempotent
    assert obj.closed and obj.name == name and "closed" in repr(obj)
    if kind == "counter":
        assert obj.size == 3 and len(obj) == 3
    else:
        assert obj.capacity == 16
    with _attach(kind, name) as again:  # pickling by name still works too
        again2 = pickle.loads(pickle.dumps(obj))
        assert again2.name == name and not again2.closed
        again2.close()
        again.close()
    obj.unlink()  # the name can be removed through a closed view
    assert not os.path.exists(SHM + name)


# ---- use after unlink -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["counter", "freelist"])
def test_use_after_unlink(names, kind):
    name = names[0]
    obj = _make(kind, name)
    obj.unlink()
    with pytest.raises(FileNotFoundError, match=f"no shared segment named '{name}'"):
        obj.unlink()
    with pytest.raises(FileNotFoundError, match="create it first"):
        _attach(kind, name)
    with pytest.raises(FileNotFoundError, match="no shared segment named"):
        pickle.loads(pickle.dumps(obj))
    # The view keeps working on the unlinked memory, untouched by a new segment of that name.
    fresh = _create(kind, name)
    if kind == "counter":
        obj.inc(0)
        assert obj.values() == [1, 5, -2] and fresh.values() == [0]
    else:
        obj.push(4)
        assert len(fresh) == 0 and sorted(obj.drain()) == [1, 2, 3, 4]
    fresh.close()
    obj.close()


# ---- the stress drivers --------------------------------------------------------------

STRESS_BAD = [
    (lambda c, fl: counter_stress("nope", counter=c), ValueError, "variant must be one of"),
    (lambda c, fl: counter_stress(None, counter=c), ValueError, "got None"),
    (lambda c, fl: counter_stress("rseq", threads=5000, counter=c), ValueError,
     "threads must be between 1 and 4096, got 5000"),
    (lambda c, fl: counter_stress("rseq", threads=-1, counter=c), ValueError, "got -1"),
    (lambda c, fl: counter_stress("rseq", threads=1.5, counter=c), TypeError,
     "threads must be an int, not float"),
    (lambda c, fl: counter_stress("rseq", ops_per_thread=-1, counter=c), ValueError,
     "ops_per_thread must be between"),
    (lambda c, fl: counter_stress("rseq", ops_per_thread=1 << 32, counter=c), ValueError,
     "ops_per_thread must be between 0 and 2**32-1"),
    (lambda c, fl: counter_stress("rseq", inject_loops=0.5, counter=c), TypeError,
     "inject_loops must be an int"),
    (lambda c, fl: counter_stress("rseq", signal_interval_us=-5, counter=c), ValueError,
     "signal_interval_us must be between 0 and 2**32-1, got -5"),
    (lambda c, fl: counter_stress("rseq", size=0), ValueError, "size must be between 1 and"),
    (lambda c, fl: counter_bench("spinlock"), ValueError, "mode must be one of"),
    (lambda c, fl: counter_bench("rseq", ops_per_thread=0), ValueError,
     "ops_per_thread must be between"),
    (lambda c, fl: counter_bench("rseq", threads=0), ValueError, "threads must be between 1 and 4096"),
    (lambda c, fl: counter_bench("rseq", threads="2"), TypeError, "threads must be an int, not str"),
    (lambda c, fl: freelist_stress("unprotected", freelist=fl), ValueError,
     "variant must be 'rseq', 'rseq_inject' or 'atomic'"),
    (lambda c, fl: freelist_stress("rseq", threads=5000, freelist=fl), ValueError,
     "threads must be between 1 and 4096"),
    (lambda c, fl: freelist_stress("rseq", max_batch=0, freelist=fl), ValueError,
     "need 1 <= max_batch <= max_held <= 65536, got 0"),
    (lambda c, fl: freelist_stress("rseq", max_batch=8, max_held=4), ValueError,
     "need 1 <= max_batch <= max_held"),
    (lambda c, fl: freelist_stress("rseq", max_held=1 << 17), ValueError, "65536"),
    (lambda c, fl: freelist_stress("rseq", handles=10, freelist=fl), ValueError,
     "need 0 <= handles <= capacity, got 10, 5"),
    (lambda c, fl: freelist_stress("rseq", handles=-1), ValueError, "need 0 <= handles"),
    (lambda c, fl: freelist_stress("rseq", handles=10, capacity=5), ValueError, "got 10, 5"),
    (lambda c, fl: freelist_stress("rseq", capacity="x"), TypeError, "capacity must be an int"),
    (lambda c, fl: freelist_stress("rseq", per_cpu=0, threads=1), ValueError,
     "per_cpu must be between 1 and"),
    (lambda c, fl: freelist_bench("x"), ValueError, "mode must be one of"),
    (lambda c, fl: freelist_bench("rseq", batch=0), ValueError, "batch must be between 1 and 256"),
    (lambda c, fl: freelist_bench("rseq", batch=257), ValueError, "got 257"),
    (lambda c, fl: freelist_bench("rseq", ops_per_thread=1.5), TypeError,
     "ops_per_thread must be an int, not float"),
    (lambda c, fl: freelist_bench("rseq", threads=0), ValueError, "threads must be between"),
]

STRESS_BAD += [
    (lambda c, fl: freelist_stress("rseq", ops_per_thread=-1, freelist=fl, handles=2), ValueError,
     "ops_per_thread must be between"),
    (lambda c, fl: freelist_stress("rseq", inject_loops=-1, freelist=fl, handles=2), ValueError,
     "inject_loops must be between"),
    (lambda c, fl: freelist_stress("rseq", signal_interval_us=1 << 40, freelist=fl, handles=2),
     ValueError, "signal_interval_us must be between"),
    (lambda c, fl: counter_stress("rseq", counter=_closed_counter()), ValueError, "is closed"),
    (lambda c, fl: freelist_stress("rseq", freelist=_closed_freelist(), handles=2), ValueError,
     "is closed"),
    (lambda c, fl: counter_stress("rseq", counter=fl), TypeError,
     "counter must be a PerCpuCounter"),
    (lambda c, fl: freelist_stress("rseq", freelist=c), TypeError,
     "freelist must be a PerCpuFreelist"),
]


def _closed_counter():
    n = f"test-bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    c = C.create(n)
    c.unlink()
    c.close()
    return c


def _closed_freelist():
    n = f"test-bad-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    fl = F.create(n, capacity=5)
    fl.unlink()
    fl.close()
    return fl


def _check_stress_row(call: Callable, exc: type, msg: str) -> None:
    c = C(size=3)
    c.add(4, index=2)
    fl = F(5, per_cpu=2)
    fl.push_many([7, 8])
    with pytest.raises(exc) as info:
        call(c, fl)
    assert type(info.value) is exc
    assert msg in str(info.value)
    assert c.values() == [0, 0, 4] and sorted(fl.drain()) == [7, 8]


@pytest.mark.parametrize("call, exc, msg", STRESS_BAD,
                         ids=[f"stress{i}" for i in range(len(STRESS_BAD))])
def test_stress_driver_rejects_bad_parameters(call, exc, msg):
    _check_stress_row(call, exc, msg)


# ---- the catalogue's size --------------------------------------------------------------


def test_catalogue_covers_the_api():
    """At least 45 distinct bad calls, across every public entry point."""
    segment_rows = sum(len(row[1]) for row in SEGMENT_BAD)
    total = (len(COUNTER_BAD) + len(FREELIST_BAD) + segment_rows + len(CLOSED_COUNTER)
             + len(CLOSED_FREELIST) + len(STRESS_BAD))
    assert total >= 45, total
