#!/bin/busybox sh
# shellcheck shell=dash
# /init of the arm64 test guest. Mounts what the tests rely on, runs /payload/run.sh, reports its
# exit status on the console in a line the host parses (qemu's own exit status says nothing about
# the guest), then powers off so that qemu exits.
bb=/bin/busybox

$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
$bb mkdir -p /dev/shm /dev/pts /tmp /run
# multiprocessing's semaphores and shared memory live in /dev/shm.
$bb mount -t tmpfs -o mode=1777 tmpfs /dev/shm
$bb mount -t tmpfs -o mode=1777 tmpfs /tmp
$bb mount -t tmpfs -o mode=755 tmpfs /run
$bb mount -t devpts devpts /dev/pts 2>/dev/null
# The rootfs has no coreutils or shell of its own: busybox supplies sh and the usual tools.
# Existing files (python3 ...) are left alone.
$bb --install -s 2>/dev/null

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TMPDIR=/tmp TERM=dumb
export PYTHONPATH=/payload/site AARCH64_HARNESS=system

echo "RSEQ_PY_GUEST_KERNEL=$($bb uname -r) cpus=$($bb nproc) uptime=$($bb cut -d' ' -f1 /proc/uptime)s"
cd /payload && $bb sh ./run.sh
code=$?
printf '\nRSEQ_PY_GUEST_EXIT=%s uptime=%ss\n' "$code" "$($bb cut -d' ' -f1 /proc/uptime)"
$bb sync
$bb poweroff -f
# Not reached unless poweroff failed; exiting /init panics the kernel, which (panic=-1,
# qemu -no-reboot) ends qemu as well.
exit "$code"
