"""Shared fixtures: the tests exercise the installed package, never the source tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import rseq_py

# The arm64 harness (tests/arch) runs its own payloads inside a guest.
collect_ignore = ["arch"]

SOURCE_TREE = Path(__file__).resolve().parent.parent / "rseq_py"

# The source tree has no compiled extension: importing from it would fail
# anyway, but say plainly what went wrong.
assert Path(rseq_py.__file__).resolve().parent != SOURCE_TREE, (
    "tests imported rseq_py from the source tree; install it (pip install '.[test]') "
    "and run pytest from the venv's bin/pytest so the checkout is not on sys.path"
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    i = rseq_py.info()
    return [
        f"rseq_py {rseq_py.__version__} from {Path(rseq_py.__file__).parent}",
        f"rseq_py backend={i.backend} registered_by={i.registered_by} arch={i.arch} "
        f"feature_size={i.feature_size} cpu_slots={i.cpu_slots}",
        f"rseq_py reason: {i.reason}",
    ]


@pytest.fixture
def restore_affinity():
    before = os.sched_getaffinity(0)
    yield
    os.sched_setaffinity(0, before)
