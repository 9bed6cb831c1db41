#!/bin/sh
# Guest side of the smoke payload: glibc registered rseq, and the rootfs Python and pytest work.
fail=0
step() {
    t0=$(cut -d' ' -f1 /proc/uptime)
    "$@" || fail=1
    echo "step took $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }')s: $*"
}
step ./rseq_smoke
step python3 -c 'import platform, sys, _cffi_backend, hypothesis, pytest; print("python", sys.version.split()[0], platform.machine(), "_cffi_backend", _cffi_backend.__version__, "hypothesis", hypothesis.__version__)'
step python3 -c 'import ctypes; libc = ctypes.CDLL(None); print("python glibc: __rseq_size=%d __rseq_offset=%d" % (ctypes.c_uint.in_dll(libc, "__rseq_size").value, ctypes.c_ssize_t.in_dll(libc, "__rseq_offset").value))'
step python3 -m pytest --version
step python3 -m pytest -q -p no:cacheprovider tests
exit $fail
