"""rseq_py: Linux restartable sequences for Python.

Per-CPU data updated by rseq critical sections (handwritten assembly, one
store to commit, restarted by the kernel on preemption, migration or
signal): no lock and no atomic instruction on the fast path.

    >>> import rseq_py
    >>> rseq_py.info().backend            # 'rseq', or 'fallback' with a reason
    >>> c = rseq_py.PerCpuCounter(size=4)
    >>> c.inc(); c.add(5, index=2); c.value(2)
    >>> fl = rseq_py.PerCpuFreelist(capacity=1000)
    >>> fl.push_many(range(1000)); h = fl.pop(); fl.push(h)
"""

from ._backend import Info, Stats, current_cpu, current_mm_cid, current_numa_node, info, stats
from ._include import c_api, get_include
from ._segment import SegmentError
from .counter import PerCpuCounter
from .freelist import FreelistFull, PerCpuFreelist

__version__ = "0.1.0"

__all__ = [
    "FreelistFull",
    "Info",
    "PerCpuCounter",
    "PerCpuFreelist",
    "SegmentError",
    "Stats",
    "c_api",
    "current_cpu",
    "current_mm_cid",
    "current_numa_node",
    "get_include",
    "info",
    "stats",
]
