#!/usr/bin/env bash
# podman 4.3 (Debian's) with conmon and `--runtime strata`, private storage and
# run roots, the cgroupfs manager, no networking. Run through tests/clients/run.sh.
set -uo pipefail
SUITE=podman
. "$(dirname "$0")/lib.sh"
trap 'finish; exit $?' EXIT

# podman's system-wide defaults, made ours in this mount namespace.
for d in /var/lib/containers /run/containers /run/libpod /var/tmp; do
  mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
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

check "echo" same hello "$(run --rm "$IMG" echo hello)"
exit_code() {
  run --rm "$IMG" sh -c 'exit 3'
  [ $? -eq 3 ]
}
check "exit code" exit_code
check "env and cwd" same "bar /tmp" "$(run --rm -e FOO=bar -w /tmp "$IMG" sh -c 'echo $FOO $(pwd)')"

mkdir -p "$T/vol"
echo from-host >"$T/vol/in"
bind_rw() {
  same from-host "$(run --rm -v "$T/vol:/vol" "$IMG" sh -c 'cat /vol/in; echo from-container > /vol/out')" &&
    same from-container "$(cat "$T/vol/out")"
}
check "bind mount read/write" bind_rw
read_only() {
  local out
  out=$(run --rm --read-only "$IMG" sh -c 'touch /newfile 2>&1; echo rc=$?')
  contains "Read-only file system" "$out" && contains "rc=1" "$out"
}
check "--read-only" read_only
tty() {
  local p
  p=$(printf '%q ' podman --root "$T/storage" --runroot "$T/runroot" --tmpdir "$T/tmp" --cgroup-manager cgroupfs \
    --events-backend file --storage-driver vfs --runtime "$RUNTIME" run "${LIMITS[@]}" --rm -t "$IMG" tty)
  same /dev/pts/0 "$(script -qec "$p" /dev/null | tr -d '\r' | grep -m1 /dev/)"
}
check "tty" tty

check "detached run" run -d --name det1 "$IMG" sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
check "exec output" same inside "$(podman exec det1 echo inside)"
exec_code() {
  podman exec det1 sh -c 'exit 4'
  [ $? -eq 4 ]
}
check "exec exit code" exec_code
top_lists() { contains "sleep 1000" "$(podman top det1)"; }
check "top" top_lists
state() { podman inspect -f '{{.State.Status}}' "$1"; }
check "pause" podman pause det1
check "paused state" same paused "$(state det1)"
check "resume" podman unpause det1
check "running state" same running "$(state det1)"
stop_term() { podman stop -t 10 det1 >/dev/null && same 0 "$(podman inspect -f '{{.State.ExitCode}}' det1)"; }
check "stop with SIGTERM" stop_term
restart() { podman start det1 >/dev/null && same running "$(state det1)"; }
check "restart a stopped container" restart
check "rm -f a running container" podman rm -f det1

kill_137() {
  run -d --name det2 "$IMG" sleep 1000 >/dev/null || return 1
  podman kill det2 >/dev/null || return 1
  same 137 "$(podman wait det2)" && podman rm det2 >/dev/null
}
check "kill gives 137" kill_137

resource() {
  local flag=$1 file=$2 want=$3 out
  if out=$(run --rm "$flag" "$IMG" cat "/sys/fs/cgroup/$file" 2>&1); then
    same "$want" "$out"
  else
    # The controller is missing here: the runtime's reason must reach podman.
    echo "refused: $out" >&2
    contains "${file%%.*}" "$(echo "$out" | tr "[:upper:]" "[:lower:]")"
  fi
}
check "--memory applied or refused clearly" resource --memory=64m memory.max 67108864
check "--pids-limit applied or refused clearly" resource --pids-limit=50 pids.max 50
check "--cpus applied or refused clearly" resource --cpus=0.5 cpu.max "50000 100000"

bad_create() {
  local out
  out=$(run --rm "$IMG" /no/such/binary 2>&1) && return 1
  contains "/no/such/binary" "$out"
}
check "a failing create reports its cause" bad_create

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
