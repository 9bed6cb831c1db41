#!/bin/sh
# Guest side (real arm64 kernel): info(), a C stress run with its abort
# count, then the whole test suite with workloads scaled to emulation speed.
export RSEQ_PY_TEST_SCALE=${RSEQ_PY_TEST_SCALE:-0.05}
fail=0
python3 -m rseq_py info || fail=1
python3 - <<'PY' || fail=1
from rseq_py.stress import counter_stress
for variant, loops in (("rseq", 0), ("rseq_inject", 200)):
    r = counter_stress(variant, threads=8, ops_per_thread=20_000, inject_loops=loops,
                       signal_interval_us=100)
    print(f"STRESS {variant}: threads={r.threads} expected={r.expected} observed={r.observed} "
          f"aborts={r.aborts} signals={r.signals} exact={r.exact}")
    assert r.exact
from rseq_py.stress import freelist_stress
for variant, loops in (("rseq", 0), ("rseq_inject", 200)):
    r = freelist_stress(variant, threads=8, ops_per_thread=5_000, handles=100, per_cpu=8,
                        inject_loops=loops, signal_interval_us=100)
    print(f"FREELIST {variant}: threads={r.threads} pops={r.pops} duplicates={r.duplicates} "
          f"missing={r.missing} aborts={r.aborts} signals={r.signals} exact={r.exact}")
    assert r.exact
PY
python3 -m pytest -q -p no:cacheprovider -rs tests || fail=1
exit $fail
