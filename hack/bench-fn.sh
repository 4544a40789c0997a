#!/usr/bin/env bash
# Load test of strata-fn with the example echo function (bundles/echo): N
# requests (default 10000), C at a time (default 8), over keep-alive
# connections, for three ways of serving an event:
#   warm pool  - strata-fn with containers created ahead (max_warm = C),
#                again with --fresh-network-namespaces (none reused)
#   no pool    - strata-fn creating each container on the request path
#   runc run   - a naive baseline: one `runc run` per request
# plus latency at concurrency 1 (warm, cold, runc run), from request received
# to the function's process running (server side) and to the answer (client
# side), and the warm pool again with IDLE (default 10000) keep-alive
# connections held open, with the server's threads and memory beside; then
# asynchronous events on one node (accepted into its local log) and on a
# cluster of three nodes sharing one nats-server (accepted into JetStream):
# accepts per second, accept latency (the JetStream round trip), and events
# completed per second until the queue is empty.
# Runs in a private mount namespace with a pure cgroup v2 view and /run as a
# tmpfs, as on a usual host. Prints Markdown tables.
# The four throughput rows run in ROUNDS rounds (default 3), interleaved, in a
# new order each round, N / ROUNDS requests each (NAIVE_N / ROUNDS for runc);
# the table gives medians and ranges, and the ratios are taken per round.
# Usage: hack/bench-fn.sh [N] [C] [NAIVE_N] [IDLE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
c=${2:-8}
naive_n=${3:-2000}
idle=${4:-10000}
rounds=${5:-3}
[ "$rounds" -ge 1 ] 2>/dev/null || { echo "ROUNDS must be a number of at least 1, not \"$rounds\"" >&2; exit 2; }
command -v runc >/dev/null || hack/setup.sh --peers
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs
cargo build --release -q -p strata-fn
exec unshare -m --propagation private bash -c '
set -euo pipefail
n=$1 c=$2 naive_n=$3 idle=$4 rounds=$5
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/strata-fn && mount -t tmpfs tmpfs /run/strata-fn
T=$(mktemp -d)
pid=
others=
cleanup() {
  [ -z "$pid" ] || { kill "$pid"; wait "$pid" || true; }
  for p in $others; do kill "$p" 2>/dev/null && wait "$p" || true; done
  umount -l /run/strata-fn; rm -rf "$T"
}
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
# One round of one throughput mode; its JSON is appended to $T/rounds-MODE.
throughput() {
  case $1 in
    warm) serve "$c"; load $((n / rounds)) "$c" ;;
    fresh) serve "$c" --fresh-network-namespaces; load $((n / rounds)) "$c" ;;
    cold) serve 0; load $((n / rounds)) "$c" ;;
    naive) serve 0 --naive-runtime /usr/sbin/runc; load $((naive_n / rounds)) "$c" ;;
  esac >>"$T/rounds-$1"
}
modes=(warm fresh cold naive)
for r in $(seq 0 $((rounds - 1))); do
  for k in 0 1 2 3; do throughput "${modes[$(((k + r) % 4))]}"; done
done
python3 - "$T" <<"EOPY"
import json, statistics, sys
t = sys.argv[1]
rounds = {m: [json.loads(l) for l in open("%s/rounds-%s" % (t, m))] for m in ("warm", "fresh", "cold", "naive")}
names = {"warm": "warm pool", "fresh": "warm pool, no namespace reused", "cold": "no pool", "naive": "runc run per request"}
print("| mode | rounds x requests | concurrency | invocations/s | min-max | p50 ms | p99 ms | failed | warm starts |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
med = lambda rs, k: statistics.median(r[k] for r in rs)
for m, rs in rounds.items():
    ps = [r["per_second"] for r in rs]
    print("| %s | %d x %d | %d | %.0f | %.0f-%.0f | %.2f | %.2f | %d | %d |" % (names[m], len(rs), rs[0]["requests"], rs[0]["concurrency"], statistics.median(ps), min(ps), max(ps), med(rs, "p50_ms"), med(rs, "p99_ms"), sum(r["failed"] for r in rs), sum(r["warm"] for r in rs)))
ratio = lambda a, b: [x["per_second"] / y["per_second"] for x, y in zip(rounds[a], rounds[b])]
print()
w = ratio("warm", "naive")
print("target: warm pool >= 10x runc run per request in invocations/s: %.1fx (rounds %.1f-%.1f)" % (statistics.median(w), min(w), max(w)))
f = ratio("warm", "fresh")
print("network namespaces reused / a new one each: %.2fx (rounds %.2f-%.2f)" % (statistics.median(f), min(f), max(f)))
# The median warm round, for the idle connections table.
ws = sorted(rounds["warm"], key=lambda r: r["per_second"])
open("%s/warm.json" % t, "w").write(json.dumps(ws[len(ws) // 2]))
EOPY
warm=$(cat "$T/warm.json")
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
  [ "$mode" != warm ] || warm1=$r
  python3 -c "
import json, sys
r = json.loads(sys.argv[2])
f = lambda v: \"n/a\" if v is None else \"%.2f\" % v
print(\"| %s | %d | %s | %s | %.2f | %.2f |\" % (sys.argv[1], r[\"requests\"], f(r[\"p50_to_running_ms\"]), f(r[\"p99_to_running_ms\"]), r[\"p50_ms\"], r[\"p99_ms\"]))
" "$mode (warm starts: $(echo "$r" | python3 -c "import json,sys; print(json.load(sys.stdin)[\"warm\"])"))" "$r"
done

python3 -c "
import json, sys
r = json.loads(sys.argv[1])
print()
print(\"target: warm at concurrency 1, p50 <= 2 ms and p99 <= 10 ms to the answer: %.2f ms, %.2f ms (the answers that started warm alone: %.2f ms, %.2f ms)\" % (r[\"p50_ms\"], r[\"p99_ms\"], r[\"p50_warm_ms\"], r[\"p99_warm_ms\"]))
" "$warm1"

# Idle keep-alive connections: each has made one request and stays open.
serve "$c"
threads() { sed -n "s/^Threads:[[:space:]]*//p" "/proc/$pid/status"; }
rss() { sed -n "s/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$pid/status"; }
t0=$(threads) r0=$(rss)
python3 - "$idle" 127.0.0.1 18099 >"$T/hold.out" <<"EOPY" &
import resource, socket, sys, time
n, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
for _ in range(n):
    s = socket.create_connection((host, port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    conns.append(s)
for s in conns:
    if not s.recv(4096).startswith(b"HTTP/1.1 200"):
        sys.exit("an idle connection was refused")
print("ready", flush=True)
time.sleep(120)
EOPY
holder=$!
for _ in $(seq 600); do grep -q ready "$T/hold.out" 2>/dev/null && break; kill -0 $holder 2>/dev/null || break; sleep 0.1; done
grep -q ready "$T/hold.out" || { echo "could not hold $idle connections open" >&2; exit 1; }
t1=$(threads) r1=$(rss)
held=$(load "$n" "$c")
kill $holder; wait $holder 2>/dev/null || true
echo
echo "| $idle idle keep-alive connections | server threads | server RSS MiB | invocations/s (C=$c) | p50 ms | p99 ms | failed |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
python3 -c "
import json, sys
w, h = json.loads(sys.argv[1]), json.loads(sys.argv[2])
t0, t1, r0, r1 = (int(a) for a in sys.argv[3:7])
print(\"| none | %d | %.1f | %.0f | %.2f | %.2f | %d |\" % (t0, r0 / 1024, w[\"per_second\"], w[\"p50_ms\"], w[\"p99_ms\"], w[\"failed\"]))
print(\"| open | %d | %.1f | %.0f | %.2f | %.2f | %d |\" % (t1, r1 / 1024, h[\"per_second\"], h[\"p50_ms\"], h[\"p99_ms\"], h[\"failed\"]))
print()
print(\"with them open: %.2fx the throughput, %.1f KiB of server memory per connection\" % (h[\"per_second\"] / w[\"per_second\"], (r1 - r0) / max(1, int(sys.argv[7]))))
" "$warm" "$held" "$t0" "$t1" "$r0" "$r1" "$idle"

# metric URL NAME: the value of a gauge from /metrics.
metric() { python3 -c "
import sys, urllib.request
for l in urllib.request.urlopen(sys.argv[1] + \"/metrics\").read().decode().splitlines():
    if l.startswith(sys.argv[2] + \" \"): print(int(float(l.split()[1])))
" "$1" "$2"; }
# drained URL...: waits until no node runs or queues an event (local or cluster).
drained() {
  while :; do
    local busy=0
    for u in "$@"; do
      for m in strata_fn_running strata_fn_async_queued strata_fn_cluster_queued; do
        [ "$(metric "$u" $m)" = 0 ] || busy=1
      done
    done
    [ $busy = 0 ] && return
    sleep 0.05
  done
}
async_row() {
  python3 -c "
import json, sys
rs = [json.loads(a) for a in sys.argv[4:]]
n = sum(r[\"requests\"] for r in rs)
acc = max(r[\"seconds\"] for r in rs)
p50 = sorted(r[\"p50_ms\"] for r in rs)[len(rs) // 2]
p99 = max(r[\"p99_ms\"] for r in rs)
failed = sum(r[\"failed\"] for r in rs)
print(\"| %s | %d | %s | %.0f | %.2f | %.2f | %.0f | %d |\" % (sys.argv[1], n, sys.argv[2], n / acc, p50, p99, n / float(sys.argv[3]), failed))
" "$@"
}
echo
echo "| asynchronous events | events | callers | accepts/s | accept p50 ms | accept p99 ms | completed events/s | failed |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
serve "$c"
s0=$(date +%s.%N)
single=$("$B" load "http://127.0.0.1:18099/functions/echo/invoke?async=true" -n "$n" -c "$c" --expect 202)
drained http://127.0.0.1:18099
async_row "one node (local log)" "$c" "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$s0" "$(date +%s.%N)")" "$single"
kill "$pid"; wait "$pid" || true; pid=
if command -v nats-server >/dev/null; then
  nats-server -js -a 127.0.0.1 -p 14299 -sd "$T/js" >"$T/nats.log" 2>&1 &
  others="$!"
  for _ in $(seq 100); do python3 -c "import socket; socket.create_connection((\"127.0.0.1\", 14299))" 2>/dev/null && break; sleep 0.05; done
  N="--nats nats://127.0.0.1:14299"
  urls=
  for i in 1 2 3; do
    "$B" --state "$T/node$i" $N serve --listen 127.0.0.1:1812$i --cgroup-parent strata-fn-bench-$i 2>"$T/node$i.log" &
    others="$others $!"
    urls="$urls http://127.0.0.1:1812$i"
  done
  for i in 1 2 3; do for _ in $(seq 100); do grep -q serving "$T/node$i.log" 2>/dev/null && break; sleep 0.05; done; done
  "$B" $N deploy "$(fn_dir "$c")" >/dev/null
  for u in $urls; do
    for _ in $(seq 100); do "$B" load "$u/functions/echo/invoke" -n 1 -c 1 >/dev/null 2>&1 && break; sleep 0.1; done
  done
  sleep 1
  per=$(( (c + 2) / 3 ))
  s0=$(date +%s.%N)
  outs=()
  loads=
  for u in $urls; do
    "$B" load "$u/functions/echo/invoke?async=true" -n $(( n / 3 )) -c "$per" --expect 202 >"$T/out-${u##*:}" &
    loads="$loads $!"
  done
  wait $loads || true
  for u in $urls; do outs+=("$(cat "$T/out-${u##*:}")"); done
  drained $urls
  async_row "3 nodes, one nats-server (JetStream)" "3 x $per" "$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$s0" "$(date +%s.%N)")" "${outs[@]}"
else
  echo "| 3 nodes, one nats-server | skipped: no nats-server (hack/setup.sh --tests installs it) | | | | | | |"
fi
' bash "$n" "$c" "$naive_n" "$idle" "$rounds"
