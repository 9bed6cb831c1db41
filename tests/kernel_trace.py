"""Count the kernel's own rseq aborts (the rseq:rseq_ip_fixup tracepoint).

Uses a private tracefs instance, so the global trace buffer and anything
else tracing on the machine are left alone.  Needs root and tracefs.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TRACEFS = Path("/sys/kernel/tracing")
FIXUP = re.compile(
    r"rseq_ip_fixup: regs_ip=0x([0-9a-f]+) start_ip=0x([0-9a-f]+) "
    r"post_commit_offset=(\d+) abort_ip=0x([0-9a-f]+)"
)


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "reading kernel tracepoints needs root"
    if not (TRACEFS / "events").is_dir():
        os.system(f"mount -t tracefs nodev {TRACEFS} 2>/dev/null")
    if not (TRACEFS / "events" / "rseq" / "rseq_ip_fixup").is_dir():
        return "this kernel has no tracefs or no rseq tracepoints"
    return None


@dataclass
class Fixups:
    """rseq_ip_fixup events whose abort handler lies in [lo, hi)."""

    lo: int
    hi: int
    events: list[tuple[int, int, int, int]] = field(default_factory=list)

    trace: Path | None = None

    def in_range(self) -> list[tuple[int, int, int, int]]:
        return [e for e in self.events if self.lo <= e[3] < self.hi]

    def count_in_range(self) -> int:
        """Read the live trace (while tracing) and count our events so far."""
        assert self.trace is not None
        return sum(1 for line in self.trace.read_text().splitlines()
                   if (m := FIXUP.search(line)) and self.lo <= int(m.group(4), 16) < self.hi)


def mapping_of(path_fragment: str) -> tuple[int, int]:
    """Address range of this process's executable mappings of a file."""
    lo, hi = None, None
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and path_fragment in parts[5] and "x" in parts[1]:
                a, b = (int(x, 16) for x in parts[0].split("-"))
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
    assert lo is not None and hi is not None, f"{path_fragment} is not mapped"
    return lo, hi


@contextmanager
def rseq_fixups(lo: int, hi: int) -> Iterator[Fixups]:
    inst = TRACEFS / "instances" / f"rseq_py_test_{os.getpid()}"
    inst.mkdir()
    out = Fixups(lo, hi, trace=inst / "trace")
    try:
        (inst / "tracing_on").write_text("0")
        (inst / "buffer_size_kb").write_text("8192")
        (inst / "events" / "rseq" / "rseq_ip_fixup" / "enable").write_text("1")
        (inst / "tracing_on").write_text("1")
        yield out
        (inst / "tracing_on").write_text("0")
        for line in (inst / "trace").read_text().splitlines():
            m = FIXUP.search(line)
            if m:
                regs, start, post, abort = (int(m.group(i), 16 if i != 3 else 10) for i in (1, 2, 3, 4))
                out.events.append((regs, start, post, abort))
        out.trace = None
    finally:
        (inst / "tracing_on").write_text("0")
        inst.rmdir()
