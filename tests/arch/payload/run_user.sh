#!/bin/sh
# qemu-user side: rseq is ENOSYS under qemu-user, so the fallback backend must
# be reported (with its reason) and every result must still be exact.
export RSEQ_PY_TEST_SCALE=${RSEQ_PY_TEST_SCALE:-0.05}
fail=0
python3 -m rseq_py info || fail=1
python3 -c '
import rseq_py
i = rseq_py.info()
assert i.backend == "fallback" and i.registered_by is None, i
assert "ENOSYS" in i.reason or "not implement" in i.reason, i.reason
print("qemu-user: fallback reported:", i.reason)
' || fail=1
python3 -m pytest -q -p no:cacheprovider -rs tests || fail=1
exit $fail
