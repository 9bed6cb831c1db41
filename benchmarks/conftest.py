"""Benchmarks of rseq_py.PerCpuCounter against the counters a Python user would use instead.

Run from outside the checkout, against the installed package::

    cd /tmp && /path/to/venv/bin/pytest /path/to/checkout/benchmarks --benchmark-json=/tmp/bench.json
    /path/to/venv/bin/python /path/to/checkout/benchmarks/compare.py /tmp/bench.json

Every benchmark also checks the count it produced, so ``--benchmark-disable``
turns the suite into a quick smoke test.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import rseq_py
from benchutil import CPUS, thread_counts

# The source tree has no compiled extension; say so instead of failing obscurely.
assert Path(rseq_py.__file__).resolve().parent != Path(__file__).resolve().parent.parent / "rseq_py", (
    "benchmarks imported rseq_py from the source tree; install it and run pytest from outside the checkout"
)


def pytest_report_header(config: object) -> List[str]:
    i = rseq_py.info()
    return [f"rseq_py {rseq_py.__version__} backend={i.backend} registered_by={i.registered_by} "
            f"cpus={CPUS} thread counts={thread_counts()}"]
