"""``python -m rseq_py bench``: the C-level threaded benchmarks as a table,
with optional JSON output and a scaling chart.

Every measurement is one call of :func:`rseq_py.stress.counter_bench` or
:func:`rseq_py.stress.freelist_bench`: real pthreads running C loops with
the GIL released, timed by the C side.  Each (operation, mode, threads) cell
runs ``--repeat`` times, interleaved with the other cells of its operation so
that a burst of noise on the host does not land on one cell only; the table
shows the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import (TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Type,
                    TypedDict)

if TYPE_CHECKING:
    # matplotlib is an optional extra ('plot'): where it is missing these names
    # are Any, and where it is installed the ignores are unused.
    from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found, unused-ignore]
        FigureCanvasAgg)
    from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]

    from rseq_py.stress import BenchResult

__all__ = ["add_parser", "run", "default_threads", "OPERATIONS"]

DEFAULT_OPS = 4_000_000   # counter increments per thread per run
QUICK_OPS = 100_000
MAX_THREADS = 4096        # the C drivers' limit
MAX_OPS = 1 << 40
FREELIST_DIVISOR = 4      # a freelist run moves ops / 4 handles per thread


@dataclasses.dataclass(frozen=True)
class Operation:
    id: str
    title: str
    modes: Sequence[str]
    batch: Optional[int]   # None for counters

    def ops_per_thread(self, ops: int) -> int:
        """The ``ops_per_thread`` argument of the C driver for ``--ops ops``."""
        if self.batch is None:
            return ops
        return max(1, ops // FREELIST_DIVISOR // self.batch)

    def unit(self, ops: int) -> str:
        n = self.ops_per_thread(ops)
        if self.batch is None:
            return f"{n:,} increments per thread per run"
        if self.batch == 1:
            return f"{n:,} pop+push pairs per thread per run"
        return (f"{n:,} pop_many+push_many of {self.batch} per thread per run "
                f"({n * self.batch:,} handles); ns/op is per handle")


OPERATIONS = (
    Operation("counter_add", "counter: add 1 to counter 0",
              ("rseq", "percpu_atomic", "shared_atomic", "mutex"), None),
    Operation("freelist_batch1", "freelist: pop + push, batch 1",
              ("rseq", "percpu_lock", "mutex"), 1),
    Operation("freelist_batch32", "freelist: pop_many + push_many, batch 32",
              ("rseq", "percpu_lock", "mutex"), 32),
)

MODE_NOTES = {
    "rseq": "this library (critical sections; the atomic path on the fallback backend)",
    "percpu_atomic": "per-CPU slots, atomic add, CPU from sched_getcpu()",
    "shared_atomic": "one shared word, atomic add",
    "mutex": "one pthread mutex around the data",
    "percpu_lock": "the same freelist on its fallback path: per-CPU spinlocks",
}


# ---- arguments -------------------------------------------------------------

def _positive_int(text: str, what: str, limit: int) -> int:
    try:
        v = int(text.strip(), 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a positive integer, got {text!r}") from None
    if not 1 <= v <= limit:
        raise argparse.ArgumentTypeError(f"{what} must be between 1 and {limit:,}, got {v}")
    return v


def _thread_list(text: str) -> List[int]:
    parts = text.split(",")
    if not text.strip() or any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of thread counts such as 1,2,8, got {text!r}")
    return sorted({_positive_int(p, "thread count", MAX_THREADS) for p in parts})


def _repeat(text: str) -> int:
    return _positive_int(text, "repeat", 1000)


def _ops(text: str) -> int:
    return _positive_int(text, "ops", MAX_OPS - 1)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(ncpu: int) -> List[int]:
    """1, 2, 4, ... up to 2 x ncpu, plus ncpu and 2 x ncpu."""
    top = min(2 * ncpu, MAX_THREADS)
    out = {min(ncpu, MAX_THREADS), top}
    p = 1
    while p <= top:
        out.add(p)
        p *= 2
    return sorted(out)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    ncpu = usable_cpus()
    p = sub.add_parser(
        "bench",
        help="C-level threaded benchmarks: rseq against atomics, spinlocks and mutexes",
        description=(
            "Run the C-level threaded benchmarks (pthreads, GIL released, timed in C) and "
            "print one table per operation: for every thread count and mode, ns per op per "
            "thread, total Mops/s of all threads, the scaling (total Mops/s at N threads / "
            "(N x the 1-thread Mops/s); 1.00 = linear) and the ratio of rseq's throughput to "
            "the best baseline at that thread count. Operations: counter add (modes rseq, "
            "percpu_atomic, shared_atomic, mutex) and freelist pop+push with batch 1 and "
            "batch 32 (modes rseq, percpu_lock, mutex). Every cell is run --repeat times; "
            "the table reports the median. The default run takes well under a minute on "
            "2 CPUs."),
        epilog=(
            "Modes: " + "; ".join(f"{k}: {v}" for k, v in MODE_NOTES.items()) + ". "
            "Exit status: 0 done, 1 a benchmark failed, 2 bad arguments (or --plot "
            "without matplotlib)."),
    )
    p.add_argument(
        "--threads", type=_thread_list, metavar="N[,N...]",
        help=("comma-separated thread counts, e.g. 1,2,8 (each 1 to 4096). Default: 1, 2, 4, "
              "... powers of two up to 2x the CPUs this process may use, plus that CPU count "
              f"and twice it (here: {','.join(map(str, default_threads(ncpu)))})"))
    p.add_argument(
        "--repeat", type=_repeat, default=3, metavar="N",
        help="runs per cell; the table shows the median, the JSON every sample (default 3)")
    p.add_argument(
        "--ops", type=_ops, metavar="N",
        help=(f"work per run: N counter increments per thread; freelist runs move "
              f"N/{FREELIST_DIVISOR} handles per thread (batch 32: N/{FREELIST_DIVISOR * 32} "
              f"batches). Default {DEFAULT_OPS:,}, or {QUICK_OPS:,} with --quick"))
    p.add_argument(
        "--quick", action="store_true",
        help=f"a few seconds' run with little work per cell (--ops {QUICK_OPS:,} unless given): "
             "checks that everything works, numbers are rough")
    p.add_argument(
        "--json", metavar="FILE",
        help="also write every measurement (all samples and medians) and the host to FILE as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png",
        help="also draw total Mops/s against threads, one line per mode and one panel per "
             "operation, to FILE.png (needs matplotlib: pip install 'rseq_py[plot]')")
    return p


# ---- host ------------------------------------------------------------------

class Host(TypedDict):
    """What the JSON's "host" holds, and what the table and the chart say of it."""

    cpus: int
    cpus_online: Optional[int]
    backend: str
    registered_by: Optional[str]
    arch: str
    machine: str
    kernel: str
    python: str
    rseq_py: str
    info: Dict[str, object]
    loadavg_at_start: Optional[List[float]]


def host_info() -> Host:
    import rseq_py

    i = rseq_py.info()
    return {
        "cpus": usable_cpus(),
        "cpus_online": os.cpu_count(),
        "backend": i.backend,
        "registered_by": i.registered_by,
        "arch": i.arch,
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rseq_py": rseq_py.__version__,
        "info": dataclasses.asdict(i),
        "loadavg_at_start": _loadavg(),
    }


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def host_lines(host: Host) -> List[str]:
    lines = [
        f"host: {host['cpus']} CPUs usable by this process ({host['cpus_online']} online), "
        f"kernel {host['kernel']}, arch {host['machine']}",
        f"rseq_py {host['rseq_py']}: backend={host['backend']} "
        f"(registered_by={host['registered_by']}), Python {host['python']}",
    ]
    if host["loadavg_at_start"] is not None:
        lines.append("load average at start: " + " ".join(map(str, host["loadavg_at_start"]))
                     + " (other work on the CPUs skews the multi-thread numbers)")
    if host["backend"] != "rseq":
        lines.append("note: backend is not rseq, so mode 'rseq' measures this library's "
                     "fallback path (per-CPU atomics / per-CPU locks)")
    return lines


# ---- measuring -------------------------------------------------------------

@dataclasses.dataclass
class Cell:
    op: str
    mode: str
    threads: int
    batch: Optional[int]
    ops_per_thread: int
    ns_per_op_samples: List[float] = dataclasses.field(default_factory=list)
    total_mops_samples: List[float] = dataclasses.field(default_factory=list)

    @property
    def ns_per_op(self) -> float:
        return statistics.median(self.ns_per_op_samples)

    @property
    def total_mops(self) -> float:
        return statistics.median(self.total_mops_samples)

    def as_json(self) -> Dict[str, Any]:
        return {
            "op": self.op, "mode": self.mode, "threads": self.threads, "batch": self.batch,
            "ops_per_thread": self.ops_per_thread,
            "ns_per_op": self.ns_per_op, "ns_per_op_samples": list(self.ns_per_op_samples),
            "total_mops": self.total_mops, "total_mops_samples": list(self.total_mops_samples),
        }


Cells = Dict[Tuple[str, int], Cell]   # by (mode, threads)


def _runner(op: Operation) -> Callable[[str, int, int], BenchResult]:
    from rseq_py.stress import counter_bench, freelist_bench

    batch = op.batch
    if batch is None:
        return counter_bench
    return lambda mode, threads, n: freelist_bench(mode, threads, n, batch)


def measure(op: Operation, threads: Sequence[int], repeat: int, ops: int,
            progress: Callable[[str], None]) -> Cells:
    bench = _runner(op)
    n = op.ops_per_thread(ops)
    cells = {(m, t): Cell(op.id, m, t, op.batch, n) for t in threads for m in op.modes}
    for mode in op.modes:     # warm-up: first-touch, thread registration, lazy init
        bench(mode, 1, max(1, min(n, 10_000)))
    # Repeats outermost: noise that lasts a few hundred ms spreads over cells.
    for r in range(repeat):
        progress(f"{op.id}: run {r + 1}/{repeat}")
        for t in threads:
            for mode in op.modes:
                res = bench(mode, t, n)
                cell = cells[(mode, t)]
                cell.ns_per_op_samples.append(res.ns_per_op)
                cell.total_mops_samples.append(res.total_mops)
    return cells


class Summary(TypedDict):
    """One entry of the JSON's "summary": rseq against the best baseline at one thread count."""

    op: str
    threads: int
    rseq_total_mops: float
    best_baseline: str
    best_baseline_total_mops: float
    rseq_over_best_baseline: Optional[float]
    rseq_scaling: Optional[float]


def summarize(op: Operation, cells: Cells, threads: Sequence[int]) -> List[Summary]:
    """Per thread count: rseq / best baseline and rseq's scaling."""
    out: List[Summary] = []
    one = cells.get(("rseq", 1))
    for t in threads:
        rseq = cells[("rseq", t)].total_mops
        best = max((m for m in op.modes if m != "rseq"), key=lambda m: cells[(m, t)].total_mops)
        best_mops = cells[(best, t)].total_mops
        out.append({
            "op": op.id, "threads": t, "rseq_total_mops": rseq,
            "best_baseline": best, "best_baseline_total_mops": best_mops,
            "rseq_over_best_baseline": rseq / best_mops if best_mops > 0 else None,
            "rseq_scaling": rseq / (t * one.total_mops) if one and one.total_mops > 0 else None,
        })
    return out


# ---- output ----------------------------------------------------------------

def _fmt_ratio(x: Optional[float], suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:.2f}{suffix}"


def table(op: Operation, cells: Cells, threads: Sequence[int], repeat: int,
          ops: int, summary: List[Summary]) -> str:
    w = max(len(m) for m in op.modes) + 2
    out = [f"== {op.title} ==",
           f"   {op.unit(ops)}; median of {repeat} run{'s' if repeat != 1 else ''} per cell",
           f"   {'threads':>7}  {'mode':<{w}}{'ns/op/thread':>13}{'total Mops/s':>14}"
           f"{'scaling':>9}{'spread':>8}"]
    by_t = {s["threads"]: s for s in summary}
    for t in threads:
        for k, mode in enumerate(op.modes):
            c = cells[(mode, t)]
            one = cells.get((mode, 1))
            scale = c.total_mops / (t * one.total_mops) if one and one.total_mops > 0 else None
            samples = c.total_mops_samples
            spread = ((max(samples) - min(samples)) / c.total_mops * 100 if c.total_mops > 0
                      else 0.0)
            out.append(f"   {t if k == 0 else '':>7}  {mode:<{w}}{c.ns_per_op:13.2f}"
                       f"{c.total_mops:14.2f}{_fmt_ratio(scale):>9}{spread:7.0f}%")
        s = by_t[t]
        out.append(f"   {'':>7}  -> rseq / best baseline ({s['best_baseline']}) = "
                   f"{_fmt_ratio(s['rseq_over_best_baseline'], 'x')}")
    if 1 in threads:
        out.append("   rseq scaling, total Mops/s at N threads / (N x 1-thread), 1.00 = linear: "
                   + ", ".join(f"N={s['threads']}: {_fmt_ratio(s['rseq_scaling'])}" for s in summary))
    else:
        out.append("   scaling: n/a (1 thread was not measured)")
    return "\n".join(out)


LEGEND = ("ns/op/thread: wall time of the run / ops per thread; total Mops/s: ops of all "
          "threads per second; scaling: total Mops/s at N / (N x that mode's 1-thread "
          "Mops/s), at most CPUs/N once N > CPUs; spread: (max - min) / median of the runs' Mops/s")


def write_json(path: str, doc: Dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


MODE_STYLE = {
    "rseq": ("tab:red", "o", 2.5),
    "percpu_atomic": ("tab:blue", "s", 1.5),
    "percpu_lock": ("tab:blue", "s", 1.5),
    "shared_atomic": ("tab:green", "^", 1.5),
    "mutex": ("tab:gray", "v", 1.5),
}


def plot(path: str, ops_done: List[Tuple[Operation, Cells]], threads: Sequence[int],
         host: Host, repeat: int, canvas_cls: Type[FigureCanvasAgg],
         figure_cls: Type[Figure]) -> None:
    figsize, dpi = (5.2 * len(ops_done), 5.4), 110
    try:
        fig = figure_cls(layout="constrained", figsize=figsize, dpi=dpi)
    except TypeError:   # matplotlib < 3.5
        fig = figure_cls(constrained_layout=True, figsize=figsize, dpi=dpi)
    canvas_cls(fig)
    axes = fig.subplots(1, len(ops_done), squeeze=False)[0]
    for ax, (op, cells) in zip(axes, ops_done):
        for mode in op.modes:
            color, marker, lw = MODE_STYLE.get(mode, (None, "o", 1.5))
            ys = [cells[(mode, t)].total_mops for t in threads]
            lo = [y - min(cells[(mode, t)].total_mops_samples) for y, t in zip(ys, threads)]
            hi = [max(cells[(mode, t)].total_mops_samples) - y for y, t in zip(ys, threads)]
            ax.errorbar(threads, ys, yerr=[lo, hi], label=mode, color=color, marker=marker,
                        linewidth=lw, markersize=5, capsize=3)
        if 1 in threads:
            one = cells[("rseq", 1)].total_mops
            ideal = [one * min(t, host["cpus"]) for t in threads]
            ax.plot(threads, ideal, color="tab:red", linestyle=":", linewidth=1, alpha=0.6,
                    label="rseq linear (1-thread x min(N, CPUs))")
        if len(threads) > 1:
            try:
                ax.set_xscale("log", base=2)
            except TypeError:   # matplotlib < 3.3
                ax.set_xscale("log", basex=2)
        ax.set_xticks(list(threads))
        ax.set_xticklabels([str(t) for t in threads])
        ax.minorticks_off()
        cpus_shown = threads[0] <= host["cpus"] <= threads[-1]
        if cpus_shown:
            ax.axvline(host["cpus"], color="black", linewidth=0.8, linestyle="--", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.set_title(op.title, fontsize=10)
        ax.set_xlabel(f"threads (dashed line: {host['cpus']} CPUs)" if cpus_shown else "threads")
        ax.set_ylabel("total Mops/s, all threads" + (" (handles)" if op.batch else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
    stat = "1 run per point" if repeat == 1 else f"median of {repeat} runs, bars min-max"
    fig.suptitle(f"rseq_py C-level benchmarks: {stat} | "
                 f"{host['cpus']} CPUs, backend={host['backend']}, kernel {host['kernel']}, "
                 f"{host['machine']}", fontsize=10)
    fig.savefig(path)


def _load_matplotlib() -> Optional[Tuple[Type[FigureCanvasAgg], Type[Figure]]]:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found, unused-ignore]
            FigureCanvasAgg)
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return FigureCanvasAgg, Figure


def _check_writable(parser: argparse.ArgumentParser, opt: str, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        parser.error(f"{opt} {path}: is a directory")
    if not os.path.isdir(d):
        parser.error(f"{opt} {path}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        parser.error(f"{opt} {path}: directory {d} is not writable")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # Everything that can fail cheaply fails before the first benchmark.
    mpl = None
    if args.plot is not None:
        mpl = _load_matplotlib()
        if mpl is None:
            parser.error("--plot needs matplotlib, which is not installed: "
                         "pip install 'rseq_py[plot]'")
        _check_writable(parser, "--plot", args.plot)
    if args.json is not None:
        _check_writable(parser, "--json", args.json)

    host = host_info()
    threads = args.threads or default_threads(host["cpus"])
    ops = args.ops or (QUICK_OPS if args.quick else DEFAULT_OPS)
    repeat = args.repeat
    tty = sys.stderr.isatty()

    def progress(msg: str) -> None:
        if tty:
            sys.stderr.write(f"\r\033[K{msg}")
            sys.stderr.flush()

    print("rseq_py bench: C-level pthread benchmarks, GIL released, timed in C")
    for line in host_lines(host):
        print(line)
    print(f"threads: {','.join(map(str, threads))}; each cell: median of {repeat} "
          f"run{'s' if repeat != 1 else ''}; --ops {ops:,}{' (--quick)' if args.quick else ''}")
    print(LEGEND)
    sys.stdout.flush()

    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    done: List[Tuple[Operation, Cells]] = []
    results: List[Dict[str, Any]] = []
    summaries: List[Summary] = []
    for op in OPERATIONS:
        try:
            cells = measure(op, threads, repeat, ops, progress)
        except OSError as e:   # the C driver failed (threads, memory, a lost handle)
            progress("")
            print(f"python -m rseq_py bench: error: {op.id}: {e}", file=sys.stderr)
            return 1
        progress("")
        summary = summarize(op, cells, threads)
        print()
        print(table(op, cells, threads, repeat, ops, summary))
        sys.stdout.flush()
        done.append((op, cells))
        results.extend(c.as_json() for c in cells.values())
        summaries.extend(summary)
    wall = time.perf_counter() - t0
    print(f"\ntotal benchmark time {wall:.1f} s")

    if args.json is not None:
        write_json(args.json, {
            "format": "rseq_py.bench/1",
            "started_utc": started,
            "wall_s": wall,
            "host": host,
            "config": {
                "threads": list(threads), "repeat": repeat, "ops": ops, "quick": args.quick,
                "statistic": "median",
                "operations": {op.id: {"title": op.title, "modes": list(op.modes),
                                       "batch": op.batch, "ops_per_thread": op.ops_per_thread(ops)}
                               for op in OPERATIONS},
            },
            "results": results,
            "summary": summaries,
        })
        print(f"wrote {args.json}")
    if mpl is not None:
        plot(args.plot, done, threads, host, repeat, *mpl)
        print(f"wrote {args.plot}")
    return 0
