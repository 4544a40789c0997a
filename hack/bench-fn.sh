#!/usr/bin/env bash
# Load test of strata-fn with the example echo function (bundles/echo): N
# requests (default 10000), C at a time (default 8), over keep-alive
# connections, for three ways of serving an event:
#   warm pool  - strata-fn with containers created ahead (max_warm = C)
#   no pool    - strata-fn creating each container on the request path
#   runc run   - a naive baseline: one `runc run` per request
# plus latency at concurrency 1 (warm, cold, runc run), from request received
# to the function's process running (server side) and to the answer (client
# side).
# Runs in a private mount namespace with a pure cgroup v2 view and /run as a
# tmpfs, as on a usual host. Prints Markdown tables.
# Usage: hack/bench-fn.sh [N] [C] [NAIVE_N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
c=${2:-8}
naive_n=${3:-2000}
command -v runc >/dev/null || hack/setup.sh --peers
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs
cargo build --release -q -p strata-fn
exec unshare -m --propagation private bash -c '
set -euo pipefail
n=$1 c=$2 naive_n=$3
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/strata-fn && mount -t tmpfs tmpfs /run/strata-fn
T=$(mktemp -d)
pid=
cleanup() { [ -z "$pid" ] || { kill "$pid"; wait "$pid" || true; }; umount -l /run/strata-fn; rm -rf "$T"; }
trap cleanup EXIT
B=$PWD/target/release/strata-fn
fn_dir() {
  mkdir -p "$T/fn-$1"
  cat >"$T/fn-$1/function.toml" <<EOT
name = "echo"
rootfs = "$PWD/bundles/hello/rootfs"
command = ["/bin/cat"]
max_concurrency = 64
queue = 4096
[pool]
max_warm = $1
EOT
  echo "$T/fn-$1"
}
# serve WARM [EXTRA...]: a fresh server with the echo function deployed.
serve() {
  local warm=$1
  shift
  [ -z "$pid" ] || { kill "$pid"; wait "$pid" || true; }
  rm -rf "$T/state"
  "$B" --state "$T/state" deploy "$(fn_dir "$warm")" >/dev/null
  "$B" --state "$T/state" serve --listen 127.0.0.1:18099 --cgroup-parent strata-fn-bench "$@" 2>"$T/serve.log" &
  pid=$!
  for _ in $(seq 100); do grep -q serving "$T/serve.log" 2>/dev/null && break; sleep 0.05; done
  # One call makes the function active, so its pool fills.
  "$B" load http://127.0.0.1:18099/functions/echo/invoke -n 1 -c 1 >/dev/null
  sleep 1
}
load() { "$B" load http://127.0.0.1:18099/functions/echo/invoke -n "$1" -c "$2" --data hello; }
row() {
  python3 -c "
import json, sys
r = json.loads(sys.argv[2])
print(\"| %s | %d | %d | %.0f | %.2f | %.2f | %d | %d |\" % (sys.argv[1], r[\"requests\"], r[\"concurrency\"], r[\"per_second\"], r[\"p50_ms\"], r[\"p99_ms\"], r[\"failed\"], r[\"warm\"]))
" "$1" "$2"
}
echo "| mode | requests | concurrency | invocations/s | p50 ms | p99 ms | failed | warm starts |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
serve "$c"; warm=$(load "$n" "$c"); row "warm pool" "$warm"
serve 0; cold=$(load "$n" "$c"); row "no pool" "$cold"
serve 0 --naive-runtime /usr/sbin/runc; naive=$(load "$naive_n" "$c"); row "runc run per request" "$naive"
python3 -c "
import json, sys
w, n = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print()
print(\"warm pool / runc run per request: %.1fx the throughput\" % (w[\"per_second\"] / n[\"per_second\"]))
" "$warm" "$naive"
echo
echo "| concurrency 1 | requests | p50 to running ms | p99 to running ms | p50 to answer ms | p99 to answer ms |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in warm cold "runc run"; do
  case $mode in
    warm) serve 4 ;;
    cold) serve 0 ;;
    *) serve 0 --naive-runtime /usr/sbin/runc ;;
  esac
  r=$(load $([ "$mode" = "runc run" ] && echo 200 || echo 1000) 1)
  python3 -c "
import json, sys
r = json.loads(sys.argv[2])
f = lambda v: \"n/a\" if v is None else \"%.2f\" % v
print(\"| %s | %d | %s | %s | %.2f | %.2f |\" % (sys.argv[1], r[\"requests\"], f(r[\"p50_to_running_ms\"]), f(r[\"p99_to_running_ms\"]), r[\"p50_ms\"], r[\"p99_ms\"]))
" "$mode (warm starts: $(echo "$r" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"warm\"])"))" "$r"
done
' bash "$n" "$c" "$naive_n"
