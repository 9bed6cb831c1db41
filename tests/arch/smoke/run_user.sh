#!/bin/sh
# qemu-user side of the smoke payload: rseq is ENOSYS there, Python and pytest still work.
fail=0
"$AARCH64_QEMU_USER" ./rseq_smoke --expect-none || fail=1
python3 -c 'import platform, sys, _cffi_backend; print("python", sys.version.split()[0], platform.machine(), "_cffi_backend", _cffi_backend.__version__)' || fail=1
python3 -c 'import ctypes; libc = ctypes.CDLL(None); print("python glibc: __rseq_size=%d __rseq_offset=%d" % (ctypes.c_uint.in_dll(libc, "__rseq_size").value, ctypes.c_ssize_t.in_dll(libc, "__rseq_offset").value))' || fail=1
python3 -m pytest --version || fail=1
python3 -m pytest -q -p no:cacheprovider tests || fail=1
exit $fail
