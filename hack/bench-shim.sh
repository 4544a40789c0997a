#!/usr/bin/env bash
# Tasks through containerd, side by side and interleaved: strata's own shim,
# the stock runc shim with runc, and the stock runc shim with BinaryName=strata.
# `ctr run --rm` of /bin/true, sequentially, in a private containerd with a pure
# cgroup v2 view. Prints ms per task, tasks per second, the floor no shim can
# go below (containerd and ctr without a task), and idle shim memory for strata
# and the runc shim.
# Usage: hack/bench-shim.sh [TASKS_PER_ROUND] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}
rounds=${2:-3}
for tool in containerd bc; do
  command -v $tool >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool >/dev/null; }
done
command -v runc >/dev/null || hack/setup.sh --peers
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs
cargo build --release -q -p strata-shim
hack/build-release.sh -q
exec unshare -m --propagation private bash -c '
set -euo pipefail
n=$1; rounds=$2
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
T=$(mktemp -d)
. hack/lib/containerd.sh
private_containerd_config "$T" "$T/sock"
PATH=$PWD/target/release:$PATH containerd --config "$T/config.toml" >"$T/log" 2>&1 &
daemon=$!
trap "kill $daemon; wait $daemon 2>/dev/null; umount -l /run/containerd; rm -rf $T; rmdir /sys/fs/cgroup/bench 2>/dev/null || true" EXIT
for _ in $(seq 100); do [ -S "$T/sock" ] && break; sleep 0.1; done
ctr() { command ctr --address "$T/sock" --namespace bench "$@"; }
python3 hack/mkimage.py bundles/hello/rootfs "$T/img.tar" docker.io/library/busybox:strata
ctr image import "$T/img.tar" >/dev/null
declare -A flags=(
  [strata-shim]="--runtime io.containerd.strata.v2"
  [runc-shim+runc]="--runtime io.containerd.runc.v2 --runc-binary /usr/sbin/runc"
  [runc-shim+strata]="--runtime io.containerd.runc.v2 --runc-binary $PWD/target/release/strata"
)
names=(strata-shim runc-shim+runc runc-shim+strata)
declare -A total
floor=0
for r in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    start=$(date +%s%N)
    for i in $(seq "$n"); do ctr run ${flags[$name]} --cpu-shares 0 --rm docker.io/library/busybox:strata "b$r$i" true; done
    total[$name]=$(( ${total[$name]:-0} + $(date +%s%N) - start ))
  done
  # What no shim can save: containerd creating and removing the container
  # (snapshot, metadata) for one ctr process. Measured as create + rm minus
  # the cost of one extra ctr process.
  start=$(date +%s%N)
  for i in $(seq "$n"); do ctr c create docker.io/library/busybox:strata "f$r$i" true; ctr c rm "f$r$i" >/dev/null; done
  mid=$(date +%s%N)
  for i in $(seq "$n"); do ctr version >/dev/null; done
  floor=$(( floor + 2 * mid - start - $(date +%s%N) ))
done
echo
echo "| shim | ms per task | tasks/s | strata-shim / this (tasks/s) | ms per task above the floor |"
echo "| --- | --- | --- | --- | --- |"
base=$(( total[strata-shim] ))
floor_ms=$(echo "scale=2; $floor / 1000000 / ($n * $rounds)" | bc)
for name in "${names[@]}"; do
  ms=$(echo "scale=2; ${total[$name]} / 1000000 / ($n * $rounds)" | bc)
  tps=$(echo "scale=1; 1000 / $ms" | bc)
  ratio=$(echo "scale=2; ${total[$name]} / $base" | bc)
  echo "| $name | $ms | $tps | $ratio | $(echo "scale=2; $ms - $floor_ms" | bc) |"
done
echo "| (floor: ctr + containerd without a task) | $floor_ms | | | |"
echo
echo "target: strata-shim >= 3x the runc shim with runc in tasks/s: $(echo "scale=2; ${total[runc-shim+runc]} / $base" | bc)x"
# Resident memory of one idle shim holding one sleeping task: RSS, and its
# anonymous part (heap and stacks), which is what each further shim adds: the
# file pages (binary, libc) are shared by every shim on the host.
idle_line=
idle() {
  local name=$1 pattern=$2
  shift 2
  ctr run -d "$@" --cpu-shares 0 docker.io/library/busybox:strata "idle-$name" sleep 1000 >/dev/null
  sleep 0.5
  local pid
  pid=$(pgrep -f "^[^ ]*$pattern .*-id idle-$name( |\$)" | head -1)
  echo "| $name | $(awk "/^VmRSS/ {print \$2}" /proc/$pid/status) | $(awk "/^RssAnon/ {print \$2}" /proc/$pid/status) | $(ls /proc/$pid/task | wc -l) |"
  [ "$name" != strata ] || idle_line="target: idle strata shim with one task <= 4096 KiB RSS and <= 1024 KiB anonymous: $(awk "/^VmRSS/ {print \$2}" /proc/$pid/status) KiB, $(awk "/^RssAnon/ {print \$2}" /proc/$pid/status) KiB"
  ctr task kill -s SIGKILL "idle-$name"; sleep 0.3; ctr task delete "idle-$name" >/dev/null; ctr container rm "idle-$name"
}
echo
echo "| idle shim, one task | RSS KiB | anonymous KiB | threads |"
echo "| --- | --- | --- | --- |"
idle strata containerd-shim-strata-v2 --runtime io.containerd.strata.v2
idle runc containerd-shim-runc-v2 --runtime io.containerd.runc.v2 --runc-binary /usr/sbin/runc
echo
echo "$idle_line"
' bash "$n" "$rounds"
