#!/usr/bin/env bash
# Benchmarks strata against runc, crun and the kernel floor, side by side and
# interleaved, in a private mount namespace with a pure cgroup v2 view and the
# runtimes' state on a tmpfs (as /run is on a usual host).
# Usage: hack/bench.sh [--rounds N] [--batch N] [--out FILE.json] [--scale N,N,...] [--scale-ops N] [--settle S]
# Prints a Markdown table (medians, min-max, ratios) and writes raw numbers as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh --peers
hack/build-release.sh
work=$(mktemp -d /tmp/strata-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
hack/mkrootfs.sh "$work/bundle/rootfs" >/dev/null
# An unprivileged user for the rootless rows, removed afterwards.
bench_user=strata-bench
userdel -r "$bench_user" >/dev/null 2>&1 || true
useradd --create-home --shell /bin/sh "$bench_user"
trap 'rm -rf "$work"; pkill -KILL -u "$bench_user" 2>/dev/null || true; sleep 0.5; userdel -f -r "$bench_user" >/dev/null 2>&1 || true' EXIT
export STRATA_BENCH_USER="$(id -u "$bench_user"):$(id -g "$bench_user")"
mkdir -p "$work/run"
unshare -m --propagation private sh -c \
  'mount -t cgroup2 cgroup2 /sys/fs/cgroup && mount -t tmpfs -o mode=0711 tmpfs "$0/run" &&
   exec python3 hack/bench.py --work "$0" "$@"' "$work" "$@"
# Tasks through containerd: strata's shim against the runc shim (set
# STRATA_BENCH_SHIM=0 to leave it out).
[ "${STRATA_BENCH_SHIM:-1}" = 0 ] || hack/bench-shim.sh
# Functions: strata-fn's load test (set STRATA_BENCH_FN=0 to leave it out).
[ "${STRATA_BENCH_FN:-1}" = 0 ] || hack/bench-fn.sh
# The VM backend (set STRATA_BENCH_VM=0 to leave it out).
[ "${STRATA_BENCH_VM:-1}" = 0 ] || hack/bench-vm.sh
