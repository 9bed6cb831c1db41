"""The command line (``python -m rseq_py info|bench``), run in subprocesses of
this interpreter from a temporary directory, so the installed package is the
one that runs.  Nothing here asserts speed: only that every cell was measured
and reported, with positive numbers, and that bad input is refused."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import rseq_py
from rseq_py._bench_cli import OPERATIONS, default_threads

SCALE = float(os.environ.get("RSEQ_PY_TEST_SCALE", "1"))
# Emulated machines (the arm64 guests) get less work per cell than --quick's.
SCALED_OPS = [] if SCALE >= 1 else ["--ops", str(max(1000, int(100_000 * SCALE)))]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT_HINT = "pip install 'rseq_py[plot]'"


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rseq_py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def has_matplotlib() -> bool:
    r = subprocess.run([sys.executable, "-c", "import matplotlib.backends.backend_agg"],
                       capture_output=True)
    return r.returncode == 0


def test_info(tmp_path):
    r = cli("info", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"rseq_py {rseq_py.__version__}" in r.stdout
    assert "backend" in r.stdout and rseq_py.info().backend in r.stdout


def test_info_json(tmp_path):
    r = cli("info", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["backend"] == rseq_py.info().backend
    assert data == json.loads(json.dumps(dataclasses.asdict(rseq_py.info())))


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "rseq-py"
    if not script.exists():
        pytest.skip("no rseq-py console script next to this interpreter")
    r = subprocess.run([str(script), "info", "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == rseq_py.info().backend


@pytest.mark.parametrize("cmd, options", [
    ([], ["info", "demo", "bench"]),
    (["info"], ["--json"]),
    (["demo"], []),
    (["bench"], ["--threads", "--repeat", "--ops", "--quick", "--json", "--plot", "median",
                 PLOT_HINT]),
])
def test_help(tmp_path, cmd, options):
    r = cli(*cmd, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())   # argparse wraps lines
    for opt in options:
        assert opt in text


def test_default_threads():
    assert default_threads(1) == [1, 2]
    assert default_threads(2) == [1, 2, 4]
    assert default_threads(6) == [1, 2, 4, 6, 8, 12]
    assert default_threads(64) == [1, 2, 4, 8, 16, 32, 64, 128]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    r = cli("bench", "--quick", "--threads", "1,2", "--json", "out.json", *SCALED_OPS, cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads((d / "out.json").read_text())


def test_bench_table(quick_run):
    r, _ = quick_run
    out = r.stdout
    i = rseq_py.info()
    ncpu = len(os.sched_getaffinity(0))
    assert f"{ncpu} CPUs usable" in out
    assert f"backend={i.backend}" in out
    assert f"kernel {platform.release()}" in out
    assert f"arch {platform.machine()}" in out
    assert "median of 3 runs" in out
    for op in OPERATIONS:
        section = out.split(f"== {op.title} ==", 1)[1].split("\n== ", 1)[0]
        lines = section.splitlines()
        for mode in op.modes:
            # A row: "[threads] mode ns/op Mops/s scaling spread%"
            rows = [ln for ln in lines if ln.endswith("%")
                    and mode in ln.split()[:2] and len(ln.split()) in (5, 6)]
            assert len(rows) == 2, (mode, section)      # one per thread count
            for row in rows:
                numbers = [float(x) for x in row.split()[-4:-1]]   # ns/op, Mops/s, scaling
                assert all(x > 0 for x in numbers), row
        ratios = [ln for ln in lines if "rseq / best baseline (" in ln]
        assert len(ratios) == 2, section
        for ln in ratios:
            best = ln.split("(", 1)[1].split(")", 1)[0]
            assert best in op.modes and best != "rseq"
            assert float(ln.rsplit("=", 1)[1].strip().rstrip("x")) > 0
        assert "rseq scaling" in section and "N=2:" in section


def test_bench_json(quick_run):
    _, data = quick_run
    i = rseq_py.info()
    host = data["host"]
    assert host["backend"] == i.backend
    assert host["cpus"] == len(os.sched_getaffinity(0))
    assert host["kernel"] == platform.release()
    assert host["machine"] == platform.machine()
    assert host["info"]["backend"] == i.backend
    assert data["config"]["threads"] == [1, 2]
    assert data["config"]["repeat"] == 3
    assert data["config"]["statistic"] == "median"
    expected = {(op.id, mode, t) for op in OPERATIONS for mode in op.modes for t in (1, 2)}
    got = [(c["op"], c["mode"], c["threads"]) for c in data["results"]]
    assert sorted(got) == sorted(expected)
    batches = {op.id: op.batch for op in OPERATIONS}
    for c in data["results"]:
        assert c["batch"] == batches[c["op"]]
        assert c["ops_per_thread"] >= 1
        for key in ("ns_per_op", "total_mops"):
            samples = c[f"{key}_samples"]
            assert len(samples) == 3
            assert all(x > 0 for x in samples), c
            assert c[key] == pytest.approx(statistics.median(samples))
    summary = {(s["op"], s["threads"]): s for s in data["summary"]}
    assert set(summary) == {(op.id, t) for op in OPERATIONS for t in (1, 2)}
    for s in summary.values():
        assert s["rseq_over_best_baseline"] > 0
        assert s["rseq_scaling"] > 0
        assert s["best_baseline"] != "rseq"


def test_bench_plot(tmp_path):
    r = cli("bench", "--quick", "--threads", "1", "--plot", "out.png", *SCALED_OPS, cwd=tmp_path)
    if has_matplotlib():
        assert r.returncode == 0, r.stdout + r.stderr
        assert (tmp_path / "out.png").read_bytes()[:8] == PNG_MAGIC
        assert "wrote out.png" in r.stdout
    else:
        assert r.returncode == 2
        assert PLOT_HINT in r.stderr
        assert not (tmp_path / "out.png").exists()


def test_bench_plot_without_matplotlib(tmp_path):
    """With matplotlib unimportable, --plot is refused before any benchmark runs."""
    fake = tmp_path / "shadow" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib hidden by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake.parent), env.get("PYTHONPATH")]))
    r = cli("bench", "--quick", "--threads", "1", "--plot", "out.png", "--json", "out.json",
            cwd=tmp_path, env=env)
    assert r.returncode == 2
    assert PLOT_HINT in r.stderr
    assert r.stdout == ""
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "between 1 and"),
    (["--threads", "x"], "'x'"),
    (["--threads", "1,,2"], "comma-separated"),
    (["--threads", "5000"], "between 1 and"),
    (["--repeat", "0"], "repeat must be between 1 and"),
    (["--repeat", "1.5"], "'1.5'"),
    (["--ops", "-3"], "ops must be between 1 and"),
    (["--bogus"], "unrecognized arguments"),
    (["--json", "no/such/dir/out.json"], "does not exist"),
])
def test_bench_bad_arguments(tmp_path, args, message):
    r = cli("bench", "--quick", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert "error:" in r.stderr and message in r.stderr, r.stderr
    assert r.stdout == ""   # refused before any benchmark ran


def test_unknown_command(tmp_path):
    r = cli("frobnicate", cwd=tmp_path)
    assert r.returncode == 2
    assert "invalid choice" in r.stderr
