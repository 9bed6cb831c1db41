"""Print, per benchmark group, each entry's median ns per op and its ratio to ours.

Usage (from outside the checkout, so the installed package is the one measured)::

    cd /tmp && python /path/to/benchmarks/compare.py bench.json   # read a --benchmark-json file
    cd /tmp && python /path/to/benchmarks/compare.py --run [PYTEST_ARGS...]
        # run the suite with this interpreter's pytest into a temporary JSON file, then print

ns/op is wall time over all the ops of one timed call, all threads together
(median call / ``extra_info["ops"]``); for the c-level groups it comes from
the C side's own clock (median ``total_mops``), which leaves thread creation
out.  ratio = entry ns/op / ours ns/op, so above 1 means slower than ours.
One run's ratios are comparable; absolute numbers across runs are not.
Then, for the -threads-N and -procs-N groups, each entry's total throughput
at every N and its ratio to N x its own one-thread (one-process) rate.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict


def ns_per_op(b: dict) -> float:
    extra = b["extra_info"]
    if "total_mops" in extra:
        return 1e3 / extra["total_mops"]
    return b["stats"]["median"] * 1e9 / extra["ops"]


def group_key(name: str) -> tuple:
    # Numeric thread counts sort as numbers: threads-2 before threads-16.
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name or ""))


def table(data: dict) -> str:
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"]].append(b)
    out = []
    for g in sorted(groups, key=group_key):
        rows = [(b["extra_info"]["impl"], ns_per_op(b), b["extra_info"].get("reference")) for b in groups[g]]
        ref = next((ns for _, ns, r in rows if r), None)
        w = max(36, *(len(impl) + 2 for impl, _, _ in rows))
        out.append(f"\n{g}")
        out.append(f"  {'impl':<{w}} {'ns/op':>10} {'Mops/s':>9} {'x ours':>8}")
        for impl, ns, r in sorted(rows, key=lambda row: row[1]):
            ratio = f"{ns / ref:8.2f}" if ref else "       -"
            out.append(f"  {impl + (' *' if r else ''):<{w}} {ns:10.1f} {1e3 / ns:9.2f} {ratio}")
    out.append("\n* = ours, the reference of its group")
    return "\n".join(out)


def scaling(data: dict) -> str:
    """For groups ending in -threads-N or -procs-N: each entry's total
    throughput at N and its ratio to N x its own throughput at N = 1
    (1.0 = perfect scaling; what a lock collapses to shows here)."""
    series = defaultdict(dict)  # (family, impl) -> {n: Mops/s}
    for b in data["benchmarks"]:
        m = re.fullmatch(r"(.*-(?:threads|procs))-(\d+)", b["group"] or "")
        if m:
            series[(m.group(1), b["extra_info"]["impl"])][int(m.group(2))] = 1e3 / ns_per_op(b)
    out = []
    for family in sorted({f for f, _ in series}):
        impls = sorted(i for f, i in series if f == family)
        ns = sorted({n for (f, _), pts in series.items() if f == family for n in pts})
        out.append(f"\n{family}-N: total Mops/s (ratio to N x the 1-{family.rsplit('-', 1)[1][:-1]} rate)")
        w = max(36, *(len(i) + 2 for i in impls))
        out.append(f"  {'impl':<{w}}" + "".join(f"{'N=' + str(n):>18}" for n in ns))
        for impl in impls:
            pts = series[(family, impl)]
            one = pts.get(1)
            cells = []
            for n in ns:
                if n not in pts:
                    cells.append(f"{'-':>18}")
                elif one:
                    cells.append(f"{pts[n]:9.2f} ({pts[n] / (n * one):4.2f})".rjust(18))
                else:
                    cells.append(f"{pts[n]:9.2f}".rjust(18))
            out.append(f"  {impl:<{w}}" + "".join(cells))
    return "\n".join(out)


def main(argv: list) -> int:
    if argv[:1] == ["--run"]:
        here = os.path.dirname(os.path.abspath(__file__))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bench.json")
            cmd = [sys.executable, "-m", "pytest", here, "-q", f"--benchmark-json={path}", *argv[1:]]
            # cwd outside the checkout: python -m puts cwd on sys.path, which must not shadow the package.
            rc = subprocess.call(cmd, cwd=tmp)
            if rc:
                return rc
            with open(path) as f:
                data = json.load(f)
    elif len(argv) == 1:
        with open(argv[0]) as f:
            data = json.load(f)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(data))
    print(scaling(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
