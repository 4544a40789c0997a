#!/usr/bin/env bash
# podman 4.3 (Debian's) with conmon and `--runtime strata`, private storage and
# run roots, the cgroupfs manager, no networking. Run through tests/clients/run.sh.
set -uo pipefail
SUITE=podman
. "$(dirname "$0")/lib.sh"
trap 'finish; exit $?' EXIT

# podman's system-wide defaults, made ours in this mount namespace.
for d in /var/lib/containers /run/containers /run/libpod /var/tmp; do
  # (Not over a checkout or scratch directory that lives there.)
  case "$ROOT/ $T/" in "$d"/*|*" $d"/*) continue ;; esac
  mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
mkdir -p "$T/tmp" && export TMPDIR=$T/tmp
CG=/sys/fs/cgroup/libpod_parent
# podman makes a probe cgroup next to it; ours to remove unless it was there.
PROBE=/sys/fs/cgroup/podman_probe
[ -d "$PROBE" ] && PROBE=
podman() {
  command podman --root "$T/storage" --runroot "$T/runroot" --tmpdir "$T/tmp" --cgroup-manager cgroupfs \
    --events-backend file --storage-driver vfs --runtime "$RUNTIME" "$@"
}
# podman asks for rlimits above this machine's hard limits and for a pids limit
# (which needs the pids controller) unless told otherwise.
LIMITS=(--network none --pids-limit 0 --ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
run() { podman run "${LIMITS[@]}" "$@"; }
IMG=localhost/busybox:strata

tar -C "$(rootfs_dir)" -cf "$T/rootfs.tar" .
check "image import" podman import -q "$T/rootfs.tar" "$IMG"

TTY_RUN=$(printf '%q ' podman --root "$T/storage" --runroot "$T/runroot" --tmpdir "$T/tmp" --cgroup-manager cgroupfs \
  --events-backend file --storage-driver vfs --runtime "$RUNTIME" run "${LIMITS[@]}")
TTY_EXEC=$(printf '%q ' podman --root "$T/storage" --runroot "$T/runroot" --tmpdir "$T/tmp" --cgroup-manager cgroupfs \
  --events-backend file --storage-driver vfs --runtime "$RUNTIME" exec)
engine_checks podman

nothing_left() {
  same "" "$(podman ps -aq)" &&
    same "" "$(find "$T/runroot" -name state.json 2>/dev/null)" &&
    same "" "$(leftover_cgroups "$CG" | grep -v 'conmon$' || true)" &&
    same "" "$(grep "$T/storage" /proc/self/mountinfo | grep -v ' shm\b' || true)"
}
check "nothing left behind" nothing_left
podman rmi -f "$IMG" >/dev/null 2>&1
stop_daemons
rmdir "$CG"/* "$CG" $PROBE 2>/dev/null || true
