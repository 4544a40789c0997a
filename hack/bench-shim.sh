#!/usr/bin/env bash
# Tasks through containerd, side by side and interleaved: strata's own shim,
# the stock runc shim with runc, and the stock runc shim with BinaryName=strata.
# `ctr run --rm` of /bin/true, sequentially, in a private containerd with a pure
# cgroup v2 view. Prints ms per task, tasks per second and the idle shim's RSS.
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
cargo build --release -q
exec unshare -m --propagation private bash -c '
set -euo pipefail
n=$1; rounds=$2
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
T=$(mktemp -d)
cat >"$T/config.toml" <<EOT
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/sock"
[ttrpc]
  address = "$T/sock.ttrpc"
EOT
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
for r in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    start=$(date +%s%N)
    for i in $(seq "$n"); do ctr run ${flags[$name]} --cpu-shares 0 --rm docker.io/library/busybox:strata "b$r$i" true; done
    total[$name]=$(( ${total[$name]:-0} + $(date +%s%N) - start ))
  done
done
echo
echo "| shim | ms per task | tasks/s | strata-shim / this (tasks/s) |"
echo "| --- | --- | --- | --- |"
base=$(( total[strata-shim] ))
for name in "${names[@]}"; do
  ms=$(echo "scale=2; ${total[$name]} / 1000000 / ($n * $rounds)" | bc)
  tps=$(echo "scale=1; 1000 / $ms" | bc)
  ratio=$(echo "scale=2; ${total[$name]} / $base" | bc)
  echo "| $name | $ms | $tps | $ratio |"
done
ctr run -d --runtime io.containerd.strata.v2 --cpu-shares 0 docker.io/library/busybox:strata idle sleep 1000
sleep 0.5
pid=$(pgrep -f "containerd-shim-strata-v2.*-id idle" | head -1)
echo
echo "Idle strata shim (one task): RSS $(awk "/^VmRSS/ {print \$2}" /proc/$pid/status) KiB"
ctr task kill -s SIGKILL idle; sleep 0.3; ctr task delete idle >/dev/null; ctr container rm idle
' bash "$n" "$rounds"
