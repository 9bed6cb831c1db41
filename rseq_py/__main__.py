"""Command line: ``python -m rseq_py info [--json]``, ``python -m rseq_py demo`` and
``python -m rseq_py bench [--threads 1,2,8] [--repeat N] [--ops N] [--quick] [--json FILE]
[--plot FILE.png]`` (also installed as ``rseq-py``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from typing import List, Optional

import rseq_py
from rseq_py.stress import counter_bench, counter_stress, freelist_bench, freelist_stress


def cmd_info(as_json: bool) -> None:
    i = rseq_py.info()
    if as_json:
        print(json.dumps(dataclasses.asdict(i), indent=2))
        return
    print(f"rseq_py {rseq_py.__version__}")
    for f in dataclasses.fields(i):
        v = getattr(i, f.name)
        if f.name == "signature":
            v = f"0x{v:08x}"
        print(f"  {f.name:20} {v}")
    print(f"  {'current_cpu':20} {rseq_py.current_cpu()}")
    print(f"  {'current_mm_cid':20} {rseq_py.current_mm_cid()}")
    print(f"  {'current_numa_node':20} {rseq_py.current_numa_node()}")


def cmd_demo() -> None:
    """Show the backend, then count from many threads at once and prove the total."""
    cmd_info(False)
    ncpu = len(os.sched_getaffinity(0))
    nthreads, ops = 4 * ncpu, 50_000
    print(f"\n{nthreads} Python threads x {ops} inc() on {ncpu} CPUs:")
    c = rseq_py.PerCpuCounter()

    def count() -> None:
        for _ in range(ops):
            c.inc()

    threads = [threading.Thread(target=count) for _ in range(nthreads)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    print(f"  value={c.value()} expected={nthreads * ops} exact={c.value() == nthreads * ops} "
          f"({dt / (nthreads * ops) * 1e9:.0f} ns per inc incl. Python)")
    print(f"  per CPU: {c.per_cpu()}")

    print(f"\nC stress: {nthreads} pthreads, delay injected inside each section, signals every 50 us:")
    r = counter_stress("rseq_inject", threads=nthreads, ops_per_thread=100_000, inject_loops=200,
                       signal_interval_us=50)
    print(f"  expected={r.expected} observed={r.observed} exact={r.exact} "
          f"aborts={r.aborts} (sections the kernel restarted) signals={r.signals}")

    print(f"\nFreelist stress: {nthreads} pthreads popping, holding and pushing back 100 handles"
          " (tiny stacks, injected delays, signals):")
    f = freelist_stress("rseq_inject", threads=nthreads, ops_per_thread=50_000, handles=100,
                        per_cpu=8, inject_loops=200, signal_interval_us=50)
    print(f"  pops={f.pops} duplicates={f.duplicates} missing={f.missing} exact={f.exact} "
          f"aborts={f.aborts}")

    print("\nC-level threaded benchmark (ns per op per thread; Mops/s all threads):")
    modes = ["rseq", "percpu_atomic", "shared_atomic", "mutex"]
    counts = sorted({1, ncpu})
    print(f"  {'mode':15}" + "".join(f"{f'{n} thr':>22}" for n in counts))
    for mode in modes:
        cells = []
        for n in counts:
            b = counter_bench(mode, n, 2_000_000)
            cells.append(f"{b.ns_per_op:8.2f} ns {b.total_mops:7.1f} M/s")
        print(f"  {mode:15}" + "".join(f"{cell:>22}" for cell in cells))
    print("\nC-level freelist pop+push pairs (ns per handle per thread; M pairs/s all threads):")
    for mode in ["rseq", "percpu_lock", "mutex"]:
        cells = []
        for n in counts:
            b = freelist_bench(mode, n, 1_000_000)
            cells.append(f"{b.ns_per_op:8.2f} ns {b.total_mops:7.1f} M/s")
        print(f"  {mode:15}" + "".join(f"{cell:>22}" for cell in cells))
    ok = c.value() == nthreads * ops and r.exact and f.exact
    print(f"\nbackend={rseq_py.info().backend}: {'all totals exact' if ok else 'TOTALS WRONG'}")
    if not ok:
        sys.exit(1)


def main(argv: Optional[List[str]] = None) -> int:
    from rseq_py import _bench_cli

    parser = argparse.ArgumentParser(
        prog="python -m rseq_py",
        description="Linux restartable sequences for Python: show what this host runs on "
                    "(info), show rseq at work (demo), measure it against atomics, spinlocks "
                    "and mutexes (bench). Run 'python -m rseq_py COMMAND --help' for a "
                    "command's options.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    p_info = sub.add_parser(
        "info", help="backend, registration and kernel features",
        description="Print rseq_py.info() (backend, who registered the rseq area, the "
                    "kernel's rseq features, CPU slots and the reason for the backend) and "
                    "the CPU, mm_cid and NUMA node this thread runs on.")
    p_info.add_argument("--json", action="store_true",
                        help="print rseq_py.info() as one JSON object instead")
    sub.add_parser(
        "demo", help="threaded count and C stress showing rseq at work",
        description="Show the backend, count from 4 x CPUs Python threads and check the "
                    "total, run the C stress drivers (delays injected inside critical "
                    "sections, signal storms) and check that nothing was lost or "
                    "duplicated, then a short C-level benchmark. Takes no options; exit "
                    "status 1 if any total is wrong.")
    p_bench = _bench_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.cmd == "info":
        cmd_info(args.json)
    elif args.cmd == "demo":
        cmd_demo()
    else:
        try:
            return _bench_cli.run(args, p_bench)
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:   # e.g. piped into head: stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
