#!/usr/bin/env bash
# Runs arm64 builds of rseq_py on real arm64 Linux kernels (qemu-system-aarch64, TCG) and under
# qemu-user, from an x86_64 Debian 12 host. Must run as root (apt-get, mknod, binfmt_misc).
#
#   tests/arch/aarch64.sh setup
#       Installs the host tools, fetches the arm64 kernels, builds the arm64 Debian rootfs and
#       fetches the arm64 Python headers. Idempotent: everything downloaded or built is kept under
#       .cache/aarch64/ (relative to the repository root), so a second run takes seconds.
#       `boot`, `user`, `env` and `smoke` run it first themselves.
#   tests/arch/aarch64.sh env
#       Prints shell exports for cross-compiling an extension:  eval "$(tests/arch/aarch64.sh env)"
#         AARCH64_CC              aarch64-linux-gnu-gcc
#         AARCH64_PY_INCLUDE_DIRS the two arm64 CPython 3.11 include dirs, space separated
#         AARCH64_PY_CFLAGS       the same as -I flags
#         AARCH64_EXT_SUFFIX      .cpython-311-aarch64-linux-gnu.so (what the guest's Python imports)
#         AARCH64_ROOTFS          the arm64 rootfs (its /usr/lib/python3/dist-packages has
#                                 _cffi_backend, pytest, hypothesis)
#         AARCH64_QEMU_USER       qemu-aarch64-static
#   tests/arch/aarch64.sh boot PAYLOAD_DIR [KERNEL...]
#       Boots each KERNEL (default: all of "bookworm trixie", one after the other) with
#       initramfs = rootfs + PAYLOAD_DIR (as /payload) and runs /payload/run.sh in the guest.
#       KERNEL is "bookworm" (Debian 12, 6.1) or "trixie" (Debian 13, 6.12); "6.1"/"6.12" work too.
#       Guest output is printed with a "[<suite>-<version>] " prefix. Exits non-zero if any guest's
#       run.sh failed, or the guest printed no exit marker (crash, hang past the timeout).
#   tests/arch/aarch64.sh user PAYLOAD_DIR [COMMAND...]
#       Runs PAYLOAD_DIR/run_user.sh (or COMMAND) on the host with the arm64 rootfs Python under
#       qemu-aarch64-static. The rseq syscall is ENOSYS there: this exercises the fallback path.
#   tests/arch/aarch64.sh all
#       Cross-builds rseq_py (tests/arch/cross_build.py, with $PYTHON, which needs cffi) into a
#       payload with the test suite, boots every kernel with it (tests/arch/payload/run.sh), then
#       runs it under qemu-user (tests/arch/payload/run_user.sh, the fallback backend).
#   tests/arch/aarch64.sh smoke
#       Builds tests/arch/smoke into a payload, boots every kernel with it, and runs it in user mode.
#   tests/arch/aarch64.sh clean
#       Deletes .cache/aarch64/.
#
# Payload contract (PAYLOAD_DIR is copied, never written to):
#   site/         put on PYTHONPATH (cross-built packages, e.g. site/rseq_py/*.cpython-311-aarch64-linux-gnu.so)
#   tests/        whatever run.sh / run_user.sh use
#   run.sh        guest entry: run with busybox `sh` (POSIX sh, not bash) in /payload; its exit status
#                 becomes the guest's. PATH has python3 (3.11), pytest (python3 -m pytest) and the
#                 busybox applets. Environment: AARCH64_HARNESS=system, HOME=/root, TMPDIR=/tmp.
#   run_user.sh   user-mode entry: run with the host's bash in a copy of PAYLOAD_DIR; `python3` on
#                 PATH is the arm64 one; run arm64 programs with "$AARCH64_QEMU_USER" prog.
#                 Environment: AARCH64_HARNESS=user, AARCH64_ROOTFS, QEMU_LD_PREFIX, PYTHONPATH.
#
# Tunables (environment): AARCH64_BOOT_TIMEOUT (seconds per boot, default 900),
# AARCH64_SMP (default 2), AARCH64_MEM (MiB, default 1024).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=$ROOT/.cache/aarch64

ALL_KERNELS=(bookworm trixie)
# Debian's arm64 rootfs for the guest. The extract variant skips maintainer scripts (no emulation
# needed to build it); busybox provides /init's tools and /bin/sh.
ROOTFS_SUITE=bookworm
ROOTFS_PACKAGES=python3.11-minimal,libpython3.11-stdlib,python3-minimal,python3-pytest,python3-cffi-backend,python3-hypothesis,python3-prometheus-client,busybox-static
# Bump when the way the rootfs is assembled changes, so cached copies get rebuilt.
ROOTFS_RECIPE=1
PY_EXT_SUFFIX=.cpython-311-aarch64-linux-gnu.so

BOOT_TIMEOUT=${AARCH64_BOOT_TIMEOUT:-900}
GUEST_SMP=${AARCH64_SMP:-2}
GUEST_MEM=${AARCH64_MEM:-1024}
MARKER=RSEQ_PY_GUEST_EXIT

log() { printf '[aarch64] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Host tools

APT_UPDATED=0
apt_install_missing() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing host packages: ${missing[*]}"
  if ((!APT_UPDATED)); then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_host_tools() {
  apt_install_missing qemu-system-arm qemu-user-static cpio mmdebstrap \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  # Not for arm64: the host suite's sanitizer and valgrind runs
  # (tests/test_sanitizers.py), which the README's test command runs next.
  apt_install_missing gcc libc6-dev valgrind
}

# ---------------------------------------------------------------------------------------------
# Private apt states for arm64 (one per suite). They reuse the mirror configured for the host
# but keep their own lists and caches, so the host's apt configuration (architectures, sources)
# is never modified and a second suite (trixie) can be used on a bookworm host.

# shellcheck source=/dev/null
host_codename() { . /etc/os-release && printf '%s' "${VERSION_CODENAME:?}"; }

apt_dir() { printf '%s/apt/%s' "$CACHE" "$1"; }

apt_opts() {
  local d
  d=$(apt_dir "$1")
  printf '%s\n' \
    -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$d/sources" \
    -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=$d/preferences" \
    -o "Dir::State=$d/state" -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=/dev/null" \
    -o "Dir::Cache=$d/cache" -o "APT::Architecture=arm64" -o "APT::Architectures=arm64" \
    -o "APT::Sandbox::User=root" -o "Debug::NoLocking=true"
}

apt_arm64() { # SUITE apt-get-args...
  local suite=$1 opts
  shift
  mapfile -t opts < <(apt_opts "$suite")
  apt-get -q "${opts[@]}" "$@"
}

apt_cache_arm64() { # SUITE apt-cache-args...
  local suite=$1 opts
  shift
  mapfile -t opts < <(apt_opts "$suite")
  apt-cache "${opts[@]}" "$@"
}

write_private_sources() { # SUITE OUTDIR
  local suite=$1 out=$2 host
  host=$(host_codename)
  mkdir -p "$out"
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # Same URIs and keys as the host; only the suite names change (bookworm-security ->
    # trixie-security ...), and binary indexes only.
    sed -E -e "/^Suites:/ s/(^|[[:space:]])$host/\\1$suite/g" -e 's/^Types:.*/Types: deb/' \
      -e '/^Architectures:/d' /etc/apt/sources.list.d/debian.sources >"$out/debian.sources"
  elif [[ -f /etc/apt/sources.list ]]; then
    grep -E '^deb[[:space:]]' /etc/apt/sources.list |
      sed -E -e "s/([[:space:]])$host([[:space:]-])/\\1$suite\\2/" -e 's/arch=[^] ]*//' \
        >"$out/debian.list"
  else
    die "no Debian apt sources found on the host"
  fi
}

ensure_apt_state() { # SUITE
  local suite=$1 d
  d=$(apt_dir "$suite")
  # Only consulted when something is missing from the cache; a day-old index may already name
  # .debs that the mirror has dropped, so it is refreshed then.
  if [[ -n $(find "$d/updated" -mmin -1440 2>/dev/null) ]]; then return 0; fi
  log "apt index for $suite/arm64"
  rm -rf "$d"
  mkdir -p "$d/state" "$d/lists/partial" "$d/cache/archives/partial" "$d/preferences"
  write_private_sources "$suite" "$d/sources"
  apt_arm64 "$suite" update -qq
  touch "$d/updated"
}

download_deb() { # SUITE PACKAGE -> prints the .deb path
  local suite=$1 pkg=$2 dir=$CACHE/debs tmp f
  # An empty directory per download: whatever lands in it is this package, whatever its version.
  tmp=$CACHE/debs/partial-$pkg
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (cd "$tmp" && apt_arm64 "$suite" download -qq "$pkg" >/dev/null)
  f=$(find "$tmp" -maxdepth 1 -name '*.deb' -printf '%f\n')
  [[ -n $f && $f != *$'\n'* ]] || die "download of $pkg ($suite/arm64) produced no single .deb"
  mv "$tmp/$f" "$dir/$f"
  rmdir "$tmp"
  printf '%s' "$dir/$f"
}

# ---------------------------------------------------------------------------------------------
# Kernels: the image that linux-image-arm64 depends on in each suite, as a raw arm64 Image.

kernel_name() { # accepts a suite or a version
  case $1 in
    bookworm | 6.1) echo bookworm ;;
    trixie | 6.12) echo trixie ;;
    *) die "unknown kernel '$1' (use: ${ALL_KERNELS[*]})" ;;
  esac
}

kernel_label() { # bookworm -> bookworm-6.1
  local rel
  rel=$(cut -d' ' -f1 "$CACHE/kernels/$1/release")
  printf '%s-%s' "$1" "$(printf '%s' "$rel" | cut -d. -f1-2)"
}

fetch_kernel() { # SUITE
  local suite=$1 out=$CACHE/kernels/$1 dep deb vmlinuz ver
  if [[ -s $out/Image && -s $out/release ]]; then return 0; fi
  ensure_apt_state "$suite"
  dep=$(apt_cache_arm64 "$suite" show --no-all-versions linux-image-arm64 |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\).*/\1/p' | head -n1)
  [[ -n $dep ]] || die "cannot tell which kernel linux-image-arm64 depends on in $suite"
  log "kernel $suite: $dep"
  deb=$(download_deb "$suite" "$dep")
  # awk reads the whole listing: stopping early would kill dpkg-deb with SIGPIPE.
  vmlinuz=$(dpkg-deb --fsys-tarfile "$deb" | tar -t | awk '/^\.\/boot\/vmlinuz-/ && !n++')
  [[ -n $vmlinuz ]] || die "no /boot/vmlinuz in $deb"
  ver=$(dpkg-deb -f "$deb" Version)
  mkdir -p "$out"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "$vmlinuz" >"$out/Image.tmp"
  # qemu's -kernel wants the raw Image; some Debian builds ship it gzip-compressed.
  if [[ $(head -c2 "$out/Image.tmp" | od -An -tx1 | tr -d ' ') == 1f8b ]]; then
    gzip -dc <"$out/Image.tmp" >"$out/Image.raw" && mv "$out/Image.raw" "$out/Image.tmp"
  fi
  mv "$out/Image.tmp" "$out/Image"
  printf '%s %s\n' "${vmlinuz#./boot/vmlinuz-}" "$ver" >"$out/release"
}

# ---------------------------------------------------------------------------------------------
# Rootfs: a Debian arm64 userland with Python, unpacked under .cache (used directly by qemu-user)
# and packed as a cpio archive (the first half of every guest's initramfs).

rootfs_dir() { printf '%s/rootfs' "$CACHE"; }

build_rootfs() {
  local want tar=$CACHE/downloads/rootfs-$ROOTFS_SUITE-arm64.tar r
  r=$(rootfs_dir)
  want="recipe=$ROOTFS_RECIPE suite=$ROOTFS_SUITE packages=$ROOTFS_PACKAGES"
  if [[ -f $CACHE/rootfs.stamp && $(<"$CACHE/rootfs.stamp") == "$want" && -s $CACHE/rootfs.cpio
    && -x $r/usr/bin/python3.11 ]]; then
    return 0
  fi
  rm -f "$CACHE/rootfs.stamp"
  mkdir -p "$CACHE/downloads"
  if [[ ! -s $tar || ! -f $tar.packages || $(<"$tar.packages") != "$ROOTFS_PACKAGES" ]]; then
    ensure_apt_state "$ROOTFS_SUITE"
    log "mmdebstrap $ROOTFS_SUITE/arm64: $ROOTFS_PACKAGES"
    rm -f "$tar" "$tar.packages"
    # mmdebstrap picks the output format from the name, so the temporary name keeps ".tar".
    mmdebstrap --quiet --mode=root --variant=extract --arch=arm64 --include="$ROOTFS_PACKAGES" \
      "$ROOTFS_SUITE" "$CACHE/downloads/partial.tar" \
      "$(apt_dir "$ROOTFS_SUITE")"/sources/debian.*
    mv "$CACHE/downloads/partial.tar" "$tar"
    printf '%s' "$ROOTFS_PACKAGES" >"$tar.packages"
  fi

  log "assembling rootfs"
  rm -rf "$r"
  mkdir -p "$r"
  tar -xpf "$tar" --numeric-owner -C "$r"
  [[ -x $r/usr/bin/python3.11 && -x $r/bin/busybox ]] || die "rootfs lacks python3.11 or busybox"
  rm -rf "$r"/usr/share/{doc,man,info,locale,lintian,bug}
  mkdir -p "$r"/{proc,sys,dev,tmp,run,root,etc}
  chmod 1777 "$r/tmp"
  # The kernel opens /dev/console before /init runs: without the node, /init has no stdout.
  rm -f "$r/dev/console"
  mknod -m 600 "$r/dev/console" c 5 1
  # The extract variant installs no base-passwd; pwd lookups (getpass, pytest's tmp_path) want root.
  [[ -s $r/etc/passwd ]] || printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  [[ -s $r/etc/group ]] || printf 'root:x:0:\n' >"$r/etc/group"

  # Without precompiled bytecode every boot spends ~18 s compiling the stdlib under emulation.
  # The arm64 interpreter itself writes it (under qemu-user), so the magic number is right by
  # construction; -s/-p make the recorded paths the guest's.
  log "precompiling Python bytecode (qemu-user)"
  qemu-aarch64-static -L "$r" "$r/usr/bin/python3.11" -m compileall -q -j 2 -s "$r" -p / \
    "$r/usr/lib/python3.11" "$r/usr/lib/python3/dist-packages" >/dev/null ||
    log "compileall reported errors (files it could not compile are compiled at import time)"

  log "packing rootfs cpio"
  # Kept uncompressed: the guest (emulated) unpacks it faster than it could gunzip it.
  (cd "$r" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc -R 0:0 --quiet) >"$CACHE/rootfs.cpio.tmp"
  mv "$CACHE/rootfs.cpio.tmp" "$CACHE/rootfs.cpio"
  printf '%s' "$want" >"$CACHE/rootfs.stamp"
}

# ---------------------------------------------------------------------------------------------
# arm64 CPython headers, for cross-compiling the extension.

pydev_dir() { printf '%s/pydev' "$CACHE"; }

fetch_python_headers() {
  local d deb
  d=$(pydev_dir)
  if [[ -f $d/usr/include/python3.11/Python.h && -f $d/usr/include/aarch64-linux-gnu/python3.11/pyconfig.h ]]; then
    return 0
  fi
  ensure_apt_state "$ROOTFS_SUITE"
  log "arm64 Python headers"
  deb=$(download_deb "$ROOTFS_SUITE" libpython3.11-dev)
  rm -rf "$d"
  mkdir -p "$d"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$d" ./usr/include
}

print_env() {
  local d
  d=$(pydev_dir)
  local inc="$d/usr/include/python3.11 $d/usr/include/aarch64-linux-gnu/python3.11"
  printf 'export AARCH64_CC=%q\n' aarch64-linux-gnu-gcc
  printf 'export AARCH64_PY_INCLUDE_DIRS=%q\n' "$inc"
  # pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>: usr/include must be searched too.
  printf 'export AARCH64_PY_CFLAGS=%q\n' "-I${inc// / -I} -I$d/usr/include"
  printf 'export AARCH64_EXT_SUFFIX=%q\n' "$PY_EXT_SUFFIX"
  printf 'export AARCH64_ROOTFS=%q\n' "$(rootfs_dir)"
  printf 'export AARCH64_QEMU_USER=%q\n' qemu-aarch64-static
}

# ---------------------------------------------------------------------------------------------

setup() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  mkdir -p "$CACHE"
  # Two runs at once would race on the same cache files.
  exec 9>"$CACHE/.lock"
  flock 9
  ensure_host_tools
  local k
  for k in "${ALL_KERNELS[@]}"; do fetch_kernel "$k"; done
  build_rootfs
  fetch_python_headers
  flock -u 9
  exec 9>&-
}

setup_report() {
  local k
  for k in "${ALL_KERNELS[@]}"; do
    log "kernel $(kernel_label "$k"): $CACHE/kernels/$k/Image ($(<"$CACHE/kernels/$k/release"))"
  done
  log "rootfs: $(rootfs_dir) ($(du -sh "$CACHE/rootfs.cpio" | cut -f1) cpio)"
  log "python headers: $(pydev_dir)/usr/include/{python3.11,aarch64-linux-gnu/python3.11}"
}

# Reads a stream, stores it (carriage returns removed) in FILE and echoes it with a prefix.
prefix_lines() { # LABEL FILE
  local line
  : >"$2"
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$2"
    printf '[%s] %s\n' "$1" "$line"
  done
}

new_workdir() {
  mkdir -p "$CACHE/runs"
  mktemp -d "$CACHE/runs/$1.XXXXXX"
}

boot() { # PAYLOAD_DIR [KERNEL...]
  local payload=${1:?usage: boot PAYLOAD_DIR [KERNEL...]}
  shift
  [[ -f $payload/run.sh ]] || die "$payload/run.sh not found"
  local kernels=() k
  (($#)) || set -- "${ALL_KERNELS[@]}"
  for k in "$@"; do kernels+=("$(kernel_name "$k")"); done

  setup
  local work
  work=$(new_workdir boot)
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" EXIT

  mkdir -p "$work/stage/payload"
  cp -a "$payload/." "$work/stage/payload/"
  install -m 755 "$HERE/guest_init.sh" "$work/stage/init"
  # The kernel unpacks concatenated cpio archives in order into one rootfs: rootfs first
  # (cached), then /init and /payload.
  (cd "$work/stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null -o -H newc -R 0:0 --quiet) >"$work/payload.cpio"
  cat "$CACHE/rootfs.cpio" "$work/payload.cpio" >"$work/initrd.cpio"

  local failed=() summary=() label t0 t1 rc code why secs
  for k in "${kernels[@]}"; do
    label=$(kernel_label "$k")
    log "booting $label (timeout ${BOOT_TIMEOUT}s)"
    t0=$(date +%s.%N)
    set +e
    # qemu exits 0 whatever the guest did; the marker line carries the guest's status.
    timeout --kill-after=10 "$BOOT_TIMEOUT" qemu-system-aarch64 \
      -M virt -cpu cortex-a57 -smp "$GUEST_SMP" -m "$GUEST_MEM" \
      -nographic -no-reboot -net none \
      -kernel "$CACHE/kernels/$k/Image" -initrd "$work/initrd.cpio" \
      -append "console=ttyAMA0 panic=-1 quiet" </dev/null 2>&1 |
      prefix_lines "$label" "$work/$k.log"
    rc=${PIPESTATUS[0]}
    set -e
    t1=$(date +%s.%N)
    code=$(grep -aoE "$MARKER=[0-9]+" "$work/$k.log" | tail -n1 | cut -d= -f2 || true)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    if [[ -z $code ]]; then
      [[ $rc == 124 || $rc == 137 ]] && why="timed out after ${BOOT_TIMEOUT}s" || why="qemu exit $rc"
      summary+=("$label: no $MARKER marker ($why), ${secs}s")
      failed+=("$label")
    elif [[ $code != 0 ]]; then
      summary+=("$label: guest exit $code, ${secs}s")
      failed+=("$label")
    else
      summary+=("$label: ok, ${secs}s")
    fi
  done
  local s
  for s in "${summary[@]}"; do log "boot $s"; done
  ((${#failed[@]} == 0)) || { log "FAILED on: ${failed[*]}"; return 1; }
}

# qemu-user runs only the first arm64 program directly; registering the binfmt handler lets that
# program exec further arm64 programs (subprocess tests). Best effort: without it, only nested
# exec fails.
ensure_binfmt() {
  local conf=/usr/lib/binfmt.d/qemu-aarch64.conf dir=/proc/sys/fs/binfmt_misc
  [[ -e $dir/qemu-aarch64 ]] && return 0
  [[ -f $conf ]] || return 0
  if [[ ! -e $dir/register ]]; then
    mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || {
      log "note: binfmt_misc unavailable; arm64 programs cannot exec other arm64 programs"
      return 0
    }
  fi
  [[ -e $dir/qemu-aarch64 ]] || grep -v '^#' "$conf" >"$dir/register" 2>/dev/null ||
    log "note: could not register qemu-aarch64 with binfmt_misc"
}

user() { # PAYLOAD_DIR [COMMAND...]
  local payload=${1:?usage: user PAYLOAD_DIR [COMMAND...]}
  shift
  (($#)) || [[ -f $payload/run_user.sh ]] || die "$payload/run_user.sh not found"
  setup
  ensure_binfmt
  local work r
  r=$(rootfs_dir)
  work=$(new_workdir user)
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  mkdir -p "$work/bin" "$work/payload"
  cp -a "$payload/." "$work/payload/"
  local p
  for p in python3 python3.11 python; do
    printf '#!/bin/sh\nexec qemu-aarch64-static -L %q %q "$@"\n' "$r" "$r/usr/bin/python3.11" >"$work/bin/$p"
    chmod 755 "$work/bin/$p"
  done
  log "qemu-user: $(if (($#)); then echo "$*"; else echo run_user.sh; fi)"
  local t0 rc
  t0=$(date +%s.%N)
  set +e
  (
    cd "$work/payload"
    export PATH="$work/bin:$PATH" QEMU_LD_PREFIX="$r" AARCH64_ROOTFS="$r" \
      AARCH64_QEMU_USER=qemu-aarch64-static AARCH64_HARNESS=user PYTHONPATH="$work/payload/site"
    if (($#)); then "$@"; else bash ./run_user.sh; fi
  ) 2>&1 </dev/null | prefix_lines qemu-user "$work/user.log"
  rc=${PIPESTATUS[0]}
  set -e
  log "user: exit $rc, $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
  return "$rc"
}

smoke() {
  setup
  local p=$CACHE/runs/smoke-payload
  rm -rf "$p"
  mkdir -p "$p/site" "$p/tests"
  aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -static -o "$p/rseq_smoke" "$HERE/smoke/rseq_smoke.c"
  cp "$HERE/smoke/run.sh" "$HERE/smoke/run_user.sh" "$p/"
  cp "$HERE/smoke/test_guest.py" "$p/tests/"
  # Separate processes: each keeps `set -e` (a function called under `||` would lose it).
  local rc=0
  bash "$HERE/aarch64.sh" boot "$p" || rc=1
  bash "$HERE/aarch64.sh" user "$p" || rc=1
  return "$rc"
}

all() {
  setup
  eval "$(print_env)"
  local p=$CACHE/runs/payload
  "${PYTHON:-python3}" "$HERE/cross_build.py" "$p"
  local rc=0
  bash "$HERE/aarch64.sh" boot "$p" || rc=1
  bash "$HERE/aarch64.sh" user "$p" || rc=1
  return "$rc"
}
main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    setup) setup && setup_report && print_env ;;
    env) setup >&2 && print_env ;;
    boot) boot "$@" ;;
    user) user "$@" ;;
    smoke) smoke ;;
    all) all ;;
    clean) rm -rf "$CACHE" ;;
    *)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
      exit 2
      ;;
  esac
}

main "$@"
