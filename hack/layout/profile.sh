#!/usr/bin/env bash
# Writes the layout profiles of the release binaries: hack/layout/strata.order
# and hack/layout/containerd-shim-strata-v2.order list the functions that the
# usual operations call, in the order of their first call. hack/build-release.sh
# links those functions first (hack/layout/cc), so that the code a `strata`
# run or an idle shim touches sits together: the kernel maps a binary's code
# 64 KiB around each page fault, and scattered code brings in most of the
# binary (docs/performance.md has the numbers).
#
# The operations: the lifecycle of a container that exits and of one that
# sleeps (create, state, start, run, exec, ps, pause, resume, kill, delete,
# list), with and without a cgroup, in a pure cgroup v2 view as
# hack/bench.sh measures; and through a private containerd, a task that exits
# and one that sleeps with an exec in it. hack/layout/cc finds a function whose
# symbol changed with the compiler or a dependency by its name alone. Rerun
# this after large code changes: hack/build-release.sh reports how much of each
# profile it found.
# Needs root, gcc and containerd (hack/setup.sh --tests).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs
W=$(mktemp -d /var/tmp/strata-layout.XXXXXX)
trap 'rm -rf "$W"' EXIT
gcc -O2 -Wall -o "$W/calltrace" hack/layout/calltrace.c

# Unstripped builds of the release code: the traces need their symbols.
for bin in strata:strata-cli containerd-shim-strata-v2:strata-shim; do
  cargo rustc --release -q -p "${bin#*:}" --bin "${bin%%:*}" -- -C target-feature=+crt-static -C strip=none
  cp "target/release/${bin%%:*}" "$W/"
  nm --defined-only "$W/${bin%%:*}" | awk '$2 ~ /^[tTwW]$/ {print $1, $3}' >"$W/${bin%%:*}.syms"
done

python3 - "$W" <<'EOF'
import json, os, sys
w = sys.argv[1]
spec = json.load(open("bundles/hello/config.json"))
spec["root"]["path"] = os.path.abspath("bundles/hello/rootfs")
spec["process"]["args"] = ["sleep", "1000"]
os.makedirs(w + "/sleeper")
json.dump(spec, open(w + "/sleeper/config.json", "w"))
EOF

unshare -m --propagation private bash -s "$W" <<'EOS'
set -euo pipefail
W=$1
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p "$W/traces" "$W/shim-traces" "$W/bin"
# Whatever fails, no container, cgroup or daemon outlives the profile.
daemon=
cleanup() {
  for c in $(ls "$W/state" 2>/dev/null); do "$W/strata" --root "$W/state" delete --force "$c" || true; done
  [ -z "$daemon" ] || { kill "$daemon"; wait "$daemon" 2>/dev/null || true; }
  ! mountpoint -q /run/containerd || umount -l /run/containerd
}
trap cleanup EXIT
n=0
# Traces one `strata` command; the traces sort in the order they were taken.
t() { n=$((n + 1)); "$W/calltrace" "$W/strata.syms" "$W/traces/$(printf %03d $n)" -- "$W/strata" --root "$W/state" "$@"; }
for cg in cgroupfs disabled; do
  t create --cgroup-manager $cg --bundle bundles/hello "x-$cg" >/dev/null
  t state "x-$cg" >/dev/null
  t start "x-$cg" >/dev/null
  sleep 0.2
  t delete "x-$cg"
  t run --cgroup-manager $cg --bundle bundles/hello "r-$cg" >/dev/null
  t run --cgroup-manager $cg --detach --bundle "$W/sleeper" "s-$cg" </dev/null >/dev/null 2>&1
  t exec "s-$cg" true
  t ps "s-$cg" >/dev/null
  [ $cg = disabled ] || { t pause "s-$cg"; t resume "s-$cg"; }
  t list >/dev/null
  t kill "s-$cg" KILL
  sleep 0.2
  t delete "s-$cg"
done

# The shim, through containerd: every run of the shim's binary (start, the
# daemon, delete) goes through calltrace.
cat >"$W/bin/containerd-shim-strata-v2" <<EOT
#!/bin/sh
exec "$W/calltrace" "$W/containerd-shim-strata-v2.syms" "$W/shim-traces/\$(date +%s%N).\$\$" -- "$W/containerd-shim-strata-v2" "\$@"
EOT
chmod +x "$W/bin/containerd-shim-strata-v2"
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
. hack/lib/containerd.sh
private_containerd_config "$W/containerd" "$W/sock"
PATH=$W/bin:$PATH containerd --config "$W/containerd/config.toml" >"$W/containerd.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do [ -S "$W/sock" ] && break; sleep 0.1; done
ctr() { command ctr --address "$W/sock" --namespace layout "$@"; }
python3 hack/mkimage.py bundles/hello/rootfs "$W/img.tar" docker.io/library/busybox:strata
ctr image import "$W/img.tar" >/dev/null
img=docker.io/library/busybox:strata
ctr run --runtime io.containerd.strata.v2 --cpu-shares 0 --rm $img once true
ctr run --runtime io.containerd.strata.v2 --cpu-shares 0 -d $img sleeper sleep 1000 >/dev/null
ctr task exec --exec-id e1 sleeper true
ctr task ps sleeper >/dev/null
ctr task kill -s SIGKILL sleeper
sleep 0.5
ctr task delete sleeper >/dev/null
ctr container rm sleeper
ctr image rm $img >/dev/null
EOS

# A trace is complete once its tracer has renamed it.
for i in $(seq 101); do
  ls "$W"/traces "$W"/shim-traces | grep -q '\.part$' || break
  [ "$i" -le 100 ] || { echo "profile: a traced process did not end" >&2; exit 1; }
  sleep 0.1
done
normalise() { awk '!seen[$0]++'; }
cat "$W"/traces/* | normalise >hack/layout/strata.order
ls "$W"/shim-traces | sort -n | sed "s|^|$W/shim-traces/|" | xargs cat | normalise >hack/layout/containerd-shim-strata-v2.order
wc -l hack/layout/*.order
# target/release holds the unstripped builds: link the laid-out ones again.
hack/build-release.sh -q
cat target/release/*.layout
