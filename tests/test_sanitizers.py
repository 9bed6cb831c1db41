"""The C core under AddressSanitizer + UndefinedBehaviorSanitizer and under
valgrind, and the fallback a process without rseq must find by itself.

tests/sanitize/stress_main.c drives the C stress drivers (counters and
freelists, oversubscribed threads, injected delays, signal storms, shared
segments, a fork) through the public header.  It is built here, separately
from the shipped extension, straight from csrc/*.c and asm/<machine>/*.S:

* with ``-fsanitize=address,undefined`` and every report fatal, in both
  registration modes (glibc registers; rseq_py registers and unregisters
  each thread itself), and once more under a seccomp filter that makes rseq
  ENOSYS (tests/no_rseq.py), so the fallback paths run sanitized too;
* without sanitizers, under valgrind's memcheck, where rseq is ENOSYS: the
  program must report the fallback backend and still be exact.

A short Python workload under valgrind checks that memcheck finds nothing
in rseq_py's own ``_native`` extension (CPython's own reports are ignored).

Missing gcc or valgrind skips here, and fails in CI (CI=true).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import IN_CI
from test_info import glibc_rseq_size, kernel_has_rseq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVER = HERE / "sanitize" / "stress_main.c"
NO_RSEQ = HERE / "no_rseq.py"
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]
ENOSYS_TEXT = os.strerror(errno.ENOSYS)  # "Function not implemented"

# Any report ends the program with a distinctive status.
ASAN_OPTIONS = ("halt_on_error=1:abort_on_error=0:exitcode=86:detect_stack_use_after_return=1:"
                "check_initialization_order=1:strict_string_checks=1:print_summary=1")
UBSAN_OPTIONS = "halt_on_error=1:print_stacktrace=1:exitcode=87"
REPORT_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                  "SUMMARY: UndefinedBehaviorSanitizer", "WARNING: ThreadSanitizer")

# Workloads: the sanitized runs take a few seconds each on 2 CPUs; valgrind
# runs every thread on one core, slowly, so its run is small.
ASAN_SCALE = 2.0
VALGRIND_SCALE = 0.05


if not DRIVER.exists() or not (ROOT / "csrc").is_dir():
    # The arm64 payloads carry the tests, not the C sources.
    pytest.skip("needs the source checkout (csrc/, tests/sanitize/)", allow_module_level=True)


def missing(msg: str, packages: str) -> None:
    if IN_CI:
        pytest.fail(f"{msg}: CI must provide it (apt-get install {packages})")
    pytest.skip(msg)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        missing(f"{tool} is not installed", tool)
    return path


def machine() -> str:
    m = platform.machine().lower()
    return ARCH_ALIASES.get(m, m)


def build(out: Path, sanitize: bool) -> Path:
    """stress_main linked with the C core and this machine's sections (each
    source compiled on its own, in parallel, then linked)."""
    gcc = need("gcc")
    asm = sorted((ROOT / "asm" / machine()).glob("*.S"))
    flags = ["-std=gnu11", "-g", "-O1", "-Wall", "-pthread", *(SANITIZE if sanitize else []),
             *([] if asm else ["-DRSEQ_PY_NO_ASM"]), "-I", str(ROOT / "csrc")]
    sources = [DRIVER, *sorted((ROOT / "csrc").glob("*.c")), *asm]
    objdir = out.parent / f"{out.name}.o"
    objdir.mkdir(exist_ok=True)

    def compile_one(i_src):
        i, src = i_src
        obj = objdir / f"{i:02d}_{src.stem}.o"
        cmd = [gcc, *flags, "-c", str(src), "-o", str(obj)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"build failed:\n{' '.join(cmd)}\n{proc.stderr}"
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        objs = list(pool.map(compile_one, enumerate(sources)))
    cmd = [gcc, *flags, *map(str, objs), "-o", str(out), "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and sanitize and re.search(r"cannot find .*(asan|ubsan)", proc.stderr):
        missing(f"gcc has no sanitizer runtime: {proc.stderr.strip()[-300:]}",
                "libasan8 libubsan1")
    assert proc.returncode == 0, f"link failed:\n{' '.join(cmd)}\n{proc.stderr}"
    return out


@pytest.fixture(scope="module")
def asan_driver(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("asan") / "stress_main_asan", sanitize=True)


@pytest.fixture(scope="module")
def plain_driver(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("plain") / "stress_main", sanitize=False)


@pytest.fixture(scope="module")
def detect_leaks(tmp_path_factory) -> int:
    """1 if LeakSanitizer works here.  LSan stops the world with ptrace; where
    that is forbidden (some containers, seccomp profiles without ptrace,
    YAMA ptrace_scope=3) it dies with a fatal error instead of checking, so
    leaks (only leaks) are off there.  A known leak must be reported to
    count as working."""
    d = tmp_path_factory.mktemp("lsan")
    src = d / "leak.c"
    src.write_text("#include <stdlib.h>\nvoid *volatile p;\n"
                   "int main(void) { p = malloc(10); p = 0; return 0; }\n")
    exe = d / "leak"
    subprocess.run([need("gcc"), "-fsanitize=address", "-g", str(src), "-o", str(exe)],
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.run([str(exe)], env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"),
                          capture_output=True, text=True, timeout=120)
    if "detected memory leaks" in proc.stderr:
        return 1
    print(f"\nLeakSanitizer does not work here (leak checks off): {proc.stderr.strip()[-300:]}")
    return 0


# ---- the driver's output -----------------------------------------------------------------


def parse(stdout: str) -> dict:
    """INFO / RUN / STATS lines of stress_main as dicts of their key=value fields."""
    out: dict = {"info": None, "runs": [], "stats": None, "ok": False}
    for line in stdout.splitlines():
        if line.startswith("INFO "):
            head, _, reason = line.partition(" reason=")
            out["info"] = dict(kv.split("=", 1) for kv in head.split()[1:])
            out["info"]["reason"] = reason
        elif line.startswith("RUN "):
            words = line.split()
            run = {"kind": words[1], "label": words[2]}
            for kv in words[3:]:
                k, _, v = kv.partition("=")
                run[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
            out["runs"].append(run)
        elif line.startswith("STATS "):
            out["stats"] = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
        elif line == "ALL OK":
            out["ok"] = True
    return out


def check_exact(res: dict, backend: str) -> dict:
    """Every run exact; inject runs on the rseq backend saw aborts.
    Returns totals for the summary."""
    runs = res["runs"]
    assert runs, "no runs"
    last_inject: dict = {}
    for r in runs:
        if "expected" in r:
            assert r["observed"] == r["expected"], r
        if r["kind"] == "freelist" and "pops" in r:
            assert (r["duplicates"], r["missing"], r["unexpected"], r["full_pushes"]) == (0, 0, 0, 0), r
            assert r["pops"] == r["pushes"], r
        if r["label"] == "shared-drain":
            assert (r["duplicates"], r["missing"], r["unexpected"]) == (0, 0, 0), r
        if r.get("error", 0):
            pytest.fail(f"driver error {r['error']}: {r}")
        if r.get("variant") == "rseq_inject":
            key = (r["kind"], r["label"], r.get("handles"))
            last_inject[key] = r
        elif "aborts" in r:
            assert r["aborts"] == 0, r
    if backend == "rseq":
        for key, r in last_inject.items():
            assert r["aborts"] > 0, f"no kernel abort in the inject runs of {key}: {r}"
    else:
        assert all(r["aborts"] == 0 for r in last_inject.values())
    return {
        "runs": len(runs),
        "aborts": sum(r.get("aborts", 0) for r in runs),
        "inject_aborts": [r["aborts"] for r in last_inject.values()],
        "signals": sum(r.get("signals", 0) for r in runs),
    }


def run_driver(cmd: list[str], env: dict[str, str], timeout: float = 300) -> tuple[dict, float, str]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    both = proc.stdout + proc.stderr
    for marker in REPORT_MARKERS:
        assert marker not in both, f"sanitizer report ({marker}):\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, (f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n"
                                  f"{proc.stderr[-6000:]}")
    res = parse(proc.stdout)
    assert res["ok"] and res["info"] and res["stats"], proc.stdout[-4000:]
    return res, wall, proc.stderr


def sigq() -> str:
    """The user's queued realtime signals against RLIMIT_SIGPENDING: when
    some process lets them pile up (blocked, never taken), every
    pthread_kill of a realtime signal fails with EAGAIN, here too."""
    with open("/proc/self/status") as f:
        line = next((ln.strip() for ln in f if ln.startswith("SigQ:")), "SigQ: ?")
    return f"{line} (queued/limit)"


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("GLIBC_TUNABLES", "RSEQ_PY_BACKEND", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LD_PRELOAD"):
        env.pop(k, None)
    env.update(extra)
    return env


def sanitizer_env(detect_leaks: int, **extra: str) -> dict[str, str]:
    return base_env(ASAN_OPTIONS=f"{ASAN_OPTIONS}:detect_leaks={detect_leaks}",
                    UBSAN_OPTIONS=UBSAN_OPTIONS, **extra)


# ---- AddressSanitizer + UndefinedBehaviorSanitizer ------------------------------------------

REGISTRATION_MODES = {
    "glibc": {},
    # rseq_py registers each thread and unregisters it at thread exit.
    "self-registration": {"GLIBC_TUNABLES": "glibc.pthread.rseq=0"},
}


def has_asm() -> bool:
    return any((ROOT / "asm" / machine()).glob("*.S"))


def expected_backend(mode: str) -> tuple[str, str]:
    if not has_asm() or not kernel_has_rseq():
        return "fallback", "none"
    if mode == "glibc" and glibc_rseq_size() != -1:  # this glibc registers threads
        return "rseq", "glibc"
    return "rseq", "rseq_py"


@pytest.mark.parametrize("mode", sorted(REGISTRATION_MODES))
def test_stress_under_asan_and_ubsan(asan_driver, detect_leaks, mode):
    res, wall, _ = run_driver([str(asan_driver), "--scale", str(ASAN_SCALE)],
                              sanitizer_env(detect_leaks, **REGISTRATION_MODES[mode]))
    info = res["info"]
    backend, registrar = expected_backend(mode)
    assert (info["backend"], info["registrar"]) == (backend, registrar), info
    totals = check_exact(res, backend)
    stats = res["stats"]
    if registrar == "rseq_py":
        # Every worker thread registered, and unregistered as it exited
        # (only the main thread's registration is left).
        assert stats["self_registrations"] > 4 * len(os.sched_getaffinity(0)), stats
        assert stats["live"] == 1 and stats["self_registration_failures"] == 0, stats
    else:
        assert stats["self_registrations"] == 0, stats
    assert totals["signals"] > 0, f"no signal landed: {totals}; {sigq()}"
    print(f"\n[asan+ubsan {mode}] backend={backend} registrar={registrar} leaks={detect_leaks} "
          f"runs={totals['runs']} aborts={totals['aborts']} inject_aborts={totals['inject_aborts']} "
          f"signals={totals['signals']} self_registrations={stats['self_registrations']} "
          f"wall={wall:.1f}s")


def test_fallback_under_seccomp_and_asan(asan_driver, detect_leaks):
    """rseq is ENOSYS (a seccomp filter): the sanitized driver finds the
    fallback by itself, says why, and every total is still exact."""
    cmd = [sys.executable, str(NO_RSEQ), "--exec", str(asan_driver), "--scale", "1"]
    res, wall, stderr = run_driver(cmd, sanitizer_env(detect_leaks,
                                                      GLIBC_TUNABLES="glibc.pthread.rseq=0"))
    if "no_rseq:" in stderr:
        pytest.skip(stderr.strip())
    info = res["info"]
    assert (info["backend"], info["registrar"]) == ("fallback", "none"), info
    if has_asm():  # (a build without sections says that instead)
        assert ENOSYS_TEXT in info["reason"] and "does not implement rseq" in info["reason"], info
    totals = check_exact(res, "fallback")
    print(f"\n[asan+ubsan seccomp] reason={info['reason']!r} runs={totals['runs']} "
          f"signals={totals['signals']} wall={wall:.1f}s")


# ---- valgrind --------------------------------------------------------------------------------

VALGRIND = ["--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--num-callers=40"]


def test_stress_under_valgrind(plain_driver):
    """valgrind does not implement rseq (ENOSYS): the fallback backend, with
    its reason, and exact totals; memcheck finds no error and no definite
    leak (forked children included)."""
    valgrind = need("valgrind")
    res, wall, stderr = run_driver([valgrind, *VALGRIND, str(plain_driver),
                                    "--scale", str(VALGRIND_SCALE)], base_env(), timeout=600)
    info = res["info"]
    assert (info["backend"], info["registrar"]) == ("fallback", "none"), info
    if has_asm():
        assert "does not implement rseq" in info["reason"] and ENOSYS_TEXT in info["reason"], info
    summaries = re.findall(r"ERROR SUMMARY: (\d+) errors", stderr)
    assert summaries and all(n == "0" for n in summaries), stderr[-4000:]
    totals = check_exact(res, "fallback")
    print(f"\n[valgrind] reason={info['reason']!r} runs={totals['runs']} "
          f"signals={totals['signals']} processes={len(summaries)} wall={wall:.1f}s")


PY_WORKLOAD = """
    import gc, json, os, threading
    import rseq_py

    info = rseq_py.info()
    assert info.backend == "fallback", info

    c = rseq_py.PerCpuCounter(size=2)
    def add():
        for _ in range(200):
            c.inc()
            c.add(3, index=1)
    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    values = c.values()
    assert values == [800, 2400], values
    assert sum(c.per_cpu(1)) == 2400
    assert c.reset(0) == 800 and c.value(0) == 0

    fl = rseq_py.PerCpuFreelist(capacity=64, per_cpu=4)
    fl.push_many(range(64))
    got = fl.pop_many(10) + [fl.pop() for _ in range(3)]
    assert len(set(got)) == 13 and None not in got, got
    fl.push_many(got[:5])
    for h in got[5:]:
        fl.push(h)
    def churn():
        for _ in range(50):
            h = fl.pop()
            if h is not None:
                fl.push(h)
    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    drained = sorted(fl.drain())
    assert drained == list(range(64)), drained
    assert fl.pop() is None

    name = f"rseq_py_valgrind_{os.getpid()}"
    shared = rseq_py.PerCpuCounter.create(name, size=1)
    other = rseq_py.PerCpuCounter.attach(name)
    other.add(5)
    shared.add(2)
    assert shared.value() == 7
    other.close()
    shared.unlink()
    shared.close()

    out = dict(backend=info.backend, reason=info.reason, values=values, drained=len(drained),
               cpu=rseq_py.current_cpu())
    del c, fl, shared, other
    gc.collect()
    print(json.dumps(out))
"""

# cffi's backend allocates the module definition and the ffi object when
# _native is imported (_cffi_init / PyInit__native, generated glue) and
# never frees them: leaks of the cffi runtime, not of rseq_py's code.
CFFI_INIT_FRAMES = {"_cffi_init", "PyInit__native"}


def native_errors(xml_path: Path) -> tuple[list[str], int]:
    """memcheck errors with a frame in rseq_py's _native extension, as text,
    and the number of all errors (CPython's included)."""
    root = ET.parse(xml_path).getroot()
    ours, total = [], 0
    for err in root.iter("error"):
        total += 1
        kind = err.findtext("kind") or "?"
        frames = [(f.findtext("fn") or "?", f.findtext("obj") or "", f.findtext("file") or "",
                   f.findtext("line") or "") for f in err.find("stack").iter("frame")]
        native = [f for f in frames if "_native" in Path(f[1]).name]
        if not native:
            continue
        if kind.startswith("Leak_") and {f[0] for f in native} <= CFFI_INIT_FRAMES:
            continue
        what = err.findtext("what") or err.findtext("xwhat/text") or ""
        stack = "\n".join(f"    {fn} ({Path(obj).name} {file}:{line})"
                          for fn, obj, file, line in frames[:15])
        ours.append(f"{kind}: {what}\n{stack}")
    return ours, total


def test_python_under_valgrind(tmp_path):
    """The installed package in this venv's Python under memcheck: the
    fallback backend, exact results, and no error in rseq_py's extension."""
    valgrind = need("valgrind")
    script = tmp_path / "workload.py"
    script.write_text(textwrap.dedent(PY_WORKLOAD))
    xml = tmp_path / "memcheck.xml"
    cmd = [valgrind, "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
           "--errors-for-leak-kinds=definite", "--num-callers=40", "--xml=yes",
           f"--xml-file={xml}", sys.executable, str(script)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=base_env(PYTHONMALLOC="malloc"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend"] == "fallback", out
    assert ENOSYS_TEXT in out["reason"] or not has_asm(), out
    assert (out["values"], out["drained"]) == ([800, 2400], 64), out
    ours, total = native_errors(xml)
    assert not ours, "memcheck errors in rseq_py's _native:\n" + "\n".join(ours)
    print(f"\n[valgrind python] backend={out['backend']} errors in _native=0 "
          f"(all memcheck errors, CPython's included: {total}) wall={wall:.1f}s")
