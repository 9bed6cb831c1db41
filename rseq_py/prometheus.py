"""prometheus_client counters backed by a shared per-CPU counter segment.

prometheus_client's multiprocess mode gives every process its own file of
values, written under a lock and merged by a collector on scrape.  A
:class:`Counter` from this module keeps each label set's value in one slot of
a shared :class:`rseq_py.PerCpuCounter` instead: every process of a
pre-forking server (or any process that constructs the same counter) adds to
the same segment with one rseq critical section, no lock and no file per
process, and any of them exposes the exact sums when scraped::

    from prometheus_client import generate_latest
    from rseq_py.prometheus import Counter

    REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "code"])
    # ... fork workers; in each: REQUESTS.labels("GET", "200").inc()
    generate_latest()        # http_requests_total{code="200",method="GET"} 1234.0

Needs prometheus_client (``pip install 'rseq_py[prometheus]'``).

**Storage.**  A counter family lives in two files under ``/dev/shm``, named
after ``segment`` (default ``"prometheus." + the metric's name``): the
shared counter segment ``rseq_py.<segment>`` (one int64 counter per label
set, ``max_series`` of them) and its label table ``rseq_py.<segment>.labels``
(a header line, then one JSON line per label set: line *i* names counter
*i*).  Constructing a Counter creates both, or attaches to them if another
process did (checking that the name, label names, ``max_series`` and
``resolution`` agree).  Processes forked after construction share the
mapping they inherit; others attach by constructing the same Counter.  The
files outlive every process until :meth:`Counter.unlink`, so a restarted
server goes on counting from where it stopped (which Prometheus's
``rate()`` does not mind); unlink them for a fresh start.

**Concurrency.**  ``inc()`` of a known label set is one critical section:
exact under any number of threads and processes, never lost or doubled (the
guarantees of :class:`rseq_py.PerCpuCounter`), and a process killed at any
instant leaves every committed increment counted.  The first use of a new
label set in a process takes an advisory file lock (``flock``) on the label
table to append it; the kernel drops such a lock when its holder dies, so a
killed process cannot block the others, and a line it left half written is
cut off by the next writer.  A scrape reads the label table without the
lock and sums each counter's per-CPU slots: each sample is exact up to the
increments running concurrently, like any counter read while it counts.

**Differences from prometheus_client's Counter.**  Values are int64 counts
of ``resolution`` (default 1: whole numbers); give e.g. ``resolution=1e-6``
to count seconds, and amounts are rounded to the nearest multiple.  Label
sets cannot be removed (``remove``/``clear`` do not exist) and at most
``max_series`` are kept.  No ``_created`` samples are exposed: the family has
no single creation time across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import re
import threading
from types import TracebackType
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Type,
                    TypeVar, Union)

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily
except ImportError as e:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "rseq_py.prometheus needs prometheus_client: pip install 'rseq_py[prometheus]'") from e

from . import _segment
from .counter import PerCpuCounter

__all__ = ["Counter", "unlink"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TABLE_KIND = "rseq_py.prometheus.Counter"
_TABLE_VERSION = 1
_TABLE_SUFFIX = ".labels"
DEFAULT_MAX_SERIES = 1024
_INT64_MAX = 2**63 - 1

# Guards each process's view of the label tables (the file lock guards the
# files).  A fork taken while a thread holds it must not leave the child's
# copy held: the child gets a fresh one.
_lock = threading.Lock()


def _fresh_lock() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock)

F = TypeVar("F", bound=Callable[..., Any])


def _table_path(segment: str) -> str:
    return _segment.path_of(segment + _TABLE_SUFFIX)


def _json_line(obj: object) -> bytes:
    # ensure_ascii: no raw newline can get inside a line
    return (json.dumps(obj, ensure_ascii=True) + "\n").encode()


def unlink(segment: str) -> None:
    """Remove the shared files of the counter family stored as ``segment``.

    Processes that have it open keep counting into their mapping, but new
    constructions start from zero.  Missing files are ignored, so it can
    run before a server starts, to begin afresh.
    """
    for path in (_segment.path_of(segment), _table_path(segment)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class _LabelTable:
    """The label sets of one family: line i of the file (after the header) is counter i.

    Lines are appended whole (one ``write`` of JSON that ``ensure_ascii``
    keeps free of raw newlines) under ``flock``; readers take only lines that
    end in a newline, so a writer killed mid-write hides nothing but its own
    unfinished line, which the next writer truncates."""

    def __init__(self, segment: str, header: Dict[str, Any]) -> None:
        self.path = _table_path(segment)
        self.segment = segment
        self.header = header  # what the first line must say
        self.sets: List[Tuple[str, ...]] = []
        self.index: Dict[Tuple[str, ...], int] = {}
        self.offset = 0  # bytes of the file parsed so far (whole lines)

    def parse(self, data: bytes) -> None:
        """Take the whole lines of ``data`` (the file from ``self.offset``)."""
        end = data.rfind(b"\n") + 1
        lines = data[:end].splitlines()
        if self.offset == 0 and lines:
            self._check_header(lines.pop(0))
        for line in lines:
            try:
                values = json.loads(line)
            except ValueError:
                values = None
            if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                raise _segment.SegmentError(
                    f"label table of prometheus counter segment {self.segment!r} is corrupt "
                    f"({self.path}, line {len(self.sets) + 2}): unlink it")
            self._remember(tuple(values))
        self.offset += end

    def _remember(self, key: Tuple[str, ...]) -> int:
        self.index[key] = len(self.sets)
        self.sets.append(key)
        return self.index[key]

    def _check_header(self, line: bytes) -> None:
        want = self.header
        try:
            got = json.loads(line)
        except ValueError:
            got = None
        if not isinstance(got, dict) or got.get("kind") != _TABLE_KIND:
            raise _segment.SegmentError(
                f"{self.path} is not the label table of an rseq_py prometheus counter")
        if got.get("version") != _TABLE_VERSION:
            raise _segment.SegmentError(
                f"prometheus counter segment {self.segment!r} has label table version "
                f"{got.get('version')!r}, this rseq_py reads {_TABLE_VERSION}: unlink it")
        for key in ("name", "labelnames", "max_series", "resolution"):
            if got.get(key) != want[key]:
                raise ValueError(
                    f"prometheus counter segment {self.segment!r} was created with "
                    f"{key}={got.get(key)!r}, not {want[key]!r}: pass another segment= "
                    f"or remove it with rseq_py.prometheus.unlink({self.segment!r})")

    def write_header(self, fd: int) -> None:
        """Start the table afresh; ``fd`` is open and flock'ed."""
        os.ftruncate(fd, 0)
        os.pwrite(fd, _json_line(self.header), 0)

    def read_new(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size > self.offset:
            self.parse(os.pread(fd, size - self.offset, self.offset))

    def sync(self) -> None:
        """Catch up with lines other processes appended (no lock: whole lines only)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            self.read_new(fd)
        finally:
            os.close(fd)

    def append(self, fd: int, key: Tuple[str, ...]) -> int:
        """Add ``key`` as the next line; ``fd`` is open and flock'ed."""
        size = os.fstat(fd).st_size
        if size > self.offset:  # a writer died inside its write: its line was never used
            os.ftruncate(fd, self.offset)
        line = _json_line(list(key))
        if os.pwrite(fd, line, self.offset) != len(line):  # pragma: no cover - disk full
            os.ftruncate(fd, self.offset)
            raise OSError(f"short write appending to {self.path}")
        self.offset += len(line)
        return self._remember(key)


class _Series:
    """One label set of a :class:`Counter`: what ``Counter.labels(...)`` returns."""

    __slots__ = ("_add", "_index", "_resolution")

    def __init__(self, counter: PerCpuCounter, index: int, resolution: Union[int, float]) -> None:
        self._add = counter.add
        self._index = index
        self._resolution = resolution

    def inc(self, amount: Union[int, float] = 1) -> None:
        """Add ``amount`` (>= 0) to this series; exact across threads and processes.

        Raises:
            TypeError: ``amount`` is not an int or float.
            ValueError: ``amount`` is negative, not finite, or fractional
                while ``resolution`` is 1.
            OverflowError: ``amount / resolution`` does not fit in an int64.
        """
        if amount.__class__ is int and 0 <= amount <= _INT64_MAX and self._resolution == 1:
            self._add(amount, self._index)
        else:
            self._add(_units(amount, self._resolution), self._index)

    def count_exceptions(self, exception: Union[Type[BaseException],
                                                Tuple[Type[BaseException], ...]] = Exception
                         ) -> "_ExceptionCounter":
        """Count exceptions of type ``exception`` raised in a ``with`` block or
        decorated function (re-raised unchanged), like prometheus_client's."""
        return _ExceptionCounter(self, exception)


def _units(amount: object, resolution: Union[int, float]) -> int:
    if amount.__class__ is bool or not isinstance(amount, (int, float)):
        raise TypeError(f"amount must be an int or float, not {type(amount).__name__}")
    if isinstance(amount, float) and not math.isfinite(amount):
        raise ValueError(f"amount must be finite, got {amount!r}")
    if amount < 0:
        raise ValueError(f"Counters can only be incremented by non-negative amounts, got {amount!r}")
    if resolution == 1:
        if isinstance(amount, float) and not amount.is_integer():
            raise ValueError(
                f"amount {amount!r} is fractional but this counter counts whole units "
                "(resolution=1): create it with e.g. resolution=1e-6 to count fractions")
        units = int(amount)
    else:
        units = round(amount / resolution)
    if units > _INT64_MAX:
        raise OverflowError(
            f"amount {amount!r} is {units} counts of resolution {resolution!r}, "
            "more than an int64 holds")
    return units


class _ExceptionCounter:
    __slots__ = ("_series", "_exception")

    def __init__(self, series: _Series,
                 exception: Union[Type[BaseException], Tuple[Type[BaseException], ...]]) -> None:
        self._series = series
        self._exception = exception

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Optional[Type[BaseException]], value: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if isinstance(value, self._exception):
            self._series.inc()  # and the exception propagates

    def __call__(self, f: F) -> F:
        @functools.wraps(f)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self:
                return f(*args, **kwargs)

        return wrapped  # type: ignore[return-value]


class Counter:
    """A Prometheus counter family whose values live in a shared per-CPU counter segment.

    Used like ``prometheus_client.Counter``: ``inc(amount)`` without labels,
    ``labels(*values).inc(amount)`` or ``labels(**values).inc(amount)`` with
    them, ``count_exceptions()``.  It is also the collector: constructed with
    a ``registry`` (default ``prometheus_client.REGISTRY``), it registers
    itself there and every scrape of that registry shows the sums of every
    process that counts into the same segment.

    Concurrency guarantees: see the module documentation.  In short, every
    ``inc`` is applied exactly once across all threads and processes, with
    no lock on the path of a known label set; a scrape reads every label set
    appended so far and each value as a sum of per-CPU slots.

    Args:
        name, documentation, labelnames, namespace, subsystem, unit,
            registry: as for ``prometheus_client.Counter`` (a trailing
            ``_total`` is dropped from the name, and the samples are named
            ``<name>_total``); ``registry=None`` registers nowhere.
        segment: name of the shared files (default ``"prometheus." + name``
            with ``:`` as ``-``).  Processes share a family by using the same
            segment; two applications on one host that use the same metric
            name must give different segments.
        max_series: most label sets the family can hold, 1 to 1,048,576.
        resolution: the value of one count (default 1); amounts are stored
            as ``round(amount / resolution)`` int64 counts.

    Raises:
        TypeError, ValueError: a bad name, label name, segment name,
            ``max_series`` or ``resolution``; or the segment exists with
            other label names, ``max_series`` or ``resolution``.
        SegmentError: the segment's files exist but are not a usable counter family.
    """

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (),
                 namespace: str = "", subsystem: str = "", unit: str = "",
                 registry: Optional[CollectorRegistry] = REGISTRY, *,
                 segment: Optional[str] = None, max_series: int = DEFAULT_MAX_SERIES,
                 resolution: Union[int, float] = 1) -> None:
        for what, v in (("name", name), ("documentation", documentation),
                        ("namespace", namespace), ("subsystem", subsystem), ("unit", unit)):
            if not isinstance(v, str):
                raise TypeError(f"{what} must be a str, not {type(v).__name__}")
        if not name:
            raise ValueError("metric name must not be empty")
        # Built as prometheus_client builds a counter's name (OpenMetrics: no _total).
        full = "_".join(p for p in (namespace, subsystem, name) if p)
        if full.endswith("_total"):
            full = full[:-6]
        if unit and not full.endswith("_" + unit):
            full += "_" + unit
        if not _METRIC_NAME.fullmatch(full):
            raise ValueError(f"invalid metric name {full!r}")
        if isinstance(labelnames, str):
            raise TypeError("labelnames must be a sequence of str, not a str")
        names = tuple(labelnames)
        for ln in names:
            if not isinstance(ln, str):
                raise TypeError(f"label names must be str, not {type(ln).__name__}")
            if not _LABEL_NAME.fullmatch(ln) or ln.startswith("__"):
                raise ValueError(f"invalid label name {ln!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate label names in {names!r}")
        if max_series.__class__ is not int:
            raise TypeError(f"max_series must be an int, not {type(max_series).__name__}")
        if not 1 <= max_series <= PerCpuCounter.MAX_SIZE:
            raise ValueError(
                f"max_series must be between 1 and {PerCpuCounter.MAX_SIZE}, got {max_series}")
        if resolution.__class__ is bool or not isinstance(resolution, (int, float)):
            raise TypeError(f"resolution must be an int or float, not {type(resolution).__name__}")
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution must be a positive finite number, got {resolution!r}")
        if segment is None:
            segment = "prometheus." + full.replace(":", "-")
        _segment.path_of(segment)  # validates the name

        self._name = full
        self._documentation = documentation
        self._unit = unit
        self._labelnames = names
        self._resolution = resolution
        self._segment = segment
        self._table = _LabelTable(segment, {
            "kind": _TABLE_KIND, "version": _TABLE_VERSION, "name": full,
            "labelnames": list(names), "max_series": max_series, "resolution": resolution})
        self._counter = self._open(max_series)
        self._series: Dict[Tuple[str, ...], _Series] = {}
        self._unlabelled = None if names else _Series(self._counter, 0, resolution)
        if self._unlabelled is not None:
            # Skip a call layer on the hot path: inc is the series' own.
            self.inc = self._unlabelled.inc  # type: ignore[method-assign]
        if registry is not None:
            registry.register(self)

    def _open(self, max_series: int) -> PerCpuCounter:
        """Create the family's files, or attach to them, under the label table's lock."""
        fd = os.open(self._table.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if b"\n" not in os.pread(fd, os.fstat(fd).st_size, 0):
                # New, or its creator died before finishing: nobody can have
                # attached (attaching needs the header), so start over.
                with contextlib.suppress(FileNotFoundError):
                    _segment.unlink(self._segment)
                counter = PerCpuCounter.create(self._segment, size=max_series)
                self._table.write_header(fd)
            else:
                counter = None
            with _lock:
                self._table.read_new(fd)
            if counter is None:
                try:
                    counter = PerCpuCounter.attach(self._segment)
                except FileNotFoundError:
                    raise _segment.SegmentError(
                        f"prometheus counter segment {self._segment!r} has a label table but "
                        f"no counter ({_segment.path_of(self._segment)}): remove it with "
                        f"rseq_py.prometheus.unlink({self._segment!r})") from None
                if counter.size != max_series:
                    raise _segment.SegmentError(
                        f"prometheus counter segment {self._segment!r} holds {counter.size} "
                        f"series, its label table says {max_series}: unlink it")
            return counter
        finally:
            os.close(fd)  # drops the flock

    # -- counting --------------------------------------------------------------

    def inc(self, amount: Union[int, float] = 1) -> None:
        """Add ``amount`` (>= 0) to a family without labels (see ``_Series.inc``).

        Raises:
            ValueError: the family has labels (use :meth:`labels`), or a bad amount.
        """
        s = self._unlabelled
        if s is None:
            raise ValueError(f"counter metric {self._name!r} is missing label values")
        s.inc(amount)

    def count_exceptions(self, exception: Union[Type[BaseException],
                                                Tuple[Type[BaseException], ...]] = Exception
                         ) -> _ExceptionCounter:
        """Count exceptions of a family without labels (see ``_Series.count_exceptions``)."""
        s = self._unlabelled
        if s is None:
            raise ValueError(f"counter metric {self._name!r} is missing label values")
        return s.count_exceptions(exception)

    def labels(self, *values: object, **kwvalues: object) -> _Series:
        """The series of one label set, given by position or by name (values become ``str``).

        The first use of a label set anywhere appends it to the shared label
        table (under a file lock); later uses in this process are a dict
        lookup.

        Raises:
            ValueError: the family has no labels, the values do not match
                the label names, or the family already holds ``max_series``
                label sets.
        """
        if not self._labelnames:
            raise ValueError(f"no label names were set when constructing counter {self._name!r}")
        if values and kwvalues:
            raise ValueError("can't pass both *values and **kwvalues")
        if kwvalues:
            if sorted(kwvalues) != sorted(self._labelnames):
                raise ValueError(f"incorrect label names: {sorted(kwvalues)!r}, "
                                 f"expected {list(self._labelnames)!r}")
            values = tuple(kwvalues[n] for n in self._labelnames)
        elif len(values) != len(self._labelnames):
            raise ValueError(f"incorrect label count: {len(values)} values for label names "
                             f"{list(self._labelnames)!r}")
        key = tuple(str(v) for v in values)
        s = self._series.get(key)
        if s is None:
            s = self._series.setdefault(key, _Series(self._counter, self._index_of(key),
                                                     self._resolution))
        return s

    def _index_of(self, key: Tuple[str, ...]) -> int:
        t = self._table
        with _lock:
            i = t.index.get(key)
            if i is not None:
                return i
            fd = os.open(t.path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                t.read_new(fd)
                i = t.index.get(key)
                if i is not None:
                    return i
                if len(t.sets) >= self._counter.size:
                    raise ValueError(
                        f"counter {self._name!r} already holds max_series={self._counter.size} "
                        f"label sets, so {key!r} cannot be added: construct it with a larger "
                        f"max_series (after unlinking segment {self._segment!r})")
                return t.append(fd, key)
            finally:
                os.close(fd)

    # -- collecting ------------------------------------------------------------

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self._name, self._documentation, labels=self._labelnames,
                                   unit=self._unit)

    def describe(self) -> List[CounterMetricFamily]:
        """The family without samples (what a registry checks names against)."""
        return [self._family()]

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The family with one sample per label set, summed over every process and CPU."""
        fam = self._family()
        if self._labelnames:
            with _lock:
                self._table.sync()
                sets = list(self._table.sets)
        else:
            sets = [()]
        values = self._counter.values()
        res = self._resolution
        for i, key in enumerate(sets):
            fam.add_metric(list(key), float(values[i] * res))
        yield fam

    # -- lifecycle -------------------------------------------------------------

    @property
    def segment(self) -> str:
        """Name of the shared files this family lives in."""
        return self._segment

    def unlink(self) -> None:
        """Remove this family's shared files (see :func:`unlink`); this object keeps working."""
        unlink(self._segment)

    def __repr__(self) -> str:
        return (f"rseq_py.prometheus.Counter({self._name!r}, labelnames={self._labelnames!r}, "
                f"segment={self._segment!r})")

