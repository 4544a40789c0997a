#!/usr/bin/env bash
# Docker 20.10 (Debian's dockerd, with the containerd it starts itself) with
# `--add-runtime strata` as the default runtime; private data and exec roots,
# networking and iptables off. Run through tests/clients/run.sh.
set -uo pipefail
SUITE=docker
. "$(dirname "$0")/lib.sh"
trap 'finish; exit $?' EXIT

for d in /run/docker /run/containerd /var/lib/docker /etc/docker; do
  mkdir -p "$d" && mount -t tmpfs tmpfs "$d"
done
SOCK=$T/docker.sock
echo '{}' >"$T/daemon.json"
start_daemon dockerd dockerd --config-file "$T/daemon.json" --data-root "$T/data" --exec-root "$T/exec" \
  --pidfile "$T/docker.pid" --host "unix://$SOCK" --iptables=false --ip6tables=false --ip-forward=false \
  --ip-masq=false --bridge=none --storage-driver vfs --exec-opt native.cgroupdriver=cgroupfs \
  --add-runtime "strata=$RUNTIME" --default-runtime strata
wait_socket "$SOCK" || exit 1
for _ in $(seq 100); do
  /usr/bin/docker -H "unix://$SOCK" info >/dev/null 2>&1 && break
  sleep 0.2
done
CG=/sys/fs/cgroup/docker

docker() { /usr/bin/docker -H "unix://$SOCK" "$@"; }
run() { docker run --network none "$@"; }
IMG=busybox:strata

tar -C "$(rootfs_dir)" -cf "$T/rootfs.tar" .
check "image import" docker import "$T/rootfs.tar" "$IMG"

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
  same /dev/pts/0 "$(script -qec "/usr/bin/docker -H unix://$SOCK run --network none --rm -t $IMG tty" /dev/null |
    tr -d '\r' | grep -m1 /dev/)"
}
check "tty" tty

check "detached run" run -d --name det1 "$IMG" sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
check "exec output" same inside "$(docker exec det1 echo inside)"
exec_code() {
  docker exec det1 sh -c 'exit 4'
  [ $? -eq 4 ]
}
check "exec exit code" exec_code
exec_tty() {
  same /dev/pts/0 "$(script -qec "/usr/bin/docker -H unix://$SOCK exec -t det1 tty" /dev/null | tr -d '\r' | grep -m1 /dev/)"
}
check "exec with a tty" exec_tty
top_lists() { contains "sleep 1000" "$(docker top det1)"; }
check "top" top_lists
state() { docker inspect -f '{{.State.Status}}' "$1"; }
check "pause" docker pause det1
check "paused state" same paused "$(state det1)"
check "unpause" docker unpause det1
check "running state" same running "$(state det1)"
stop_term() { docker stop -t 10 det1 >/dev/null && same 0 "$(docker inspect -f '{{.State.ExitCode}}' det1)"; }
check "stop with SIGTERM" stop_term
restart() { docker start det1 >/dev/null && same running "$(state det1)"; }
check "restart a stopped container" restart
check "rm -f a running container" docker rm -f det1

kill_137() {
  run -d --name det2 "$IMG" sleep 1000 >/dev/null || return 1
  docker kill det2 >/dev/null || return 1
  same 137 "$(docker wait det2)" && docker rm det2 >/dev/null
}
check "kill gives 137" kill_137

resource() {
  local flag=$1 file=$2 want=$3 out
  if out=$(run --rm "$flag" "$IMG" cat "/sys/fs/cgroup/$file" 2>&1); then
    same "$want" "$out"
  else
    # The controller is missing here: the runtime's reason must reach docker.
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
  same "" "$(docker ps -aq)" &&
    same "" "$(find "$T/exec" -name state.json 2>/dev/null)" &&
    same "" "$(leftover_cgroups "$CG")" &&
    same "" "$(grep "$T/data/" /proc/self/mountinfo || true)"
}
check "nothing left behind" nothing_left
docker rmi -f "$IMG" >/dev/null 2>&1
stop_daemons
rmdir "$CG" 2>/dev/null || true
