#!/usr/bin/env bash
# containerd 1.6 (Debian's) running strata two ways: through its stock
# io.containerd.runc.v2 shim with the runtime binary swapped for strata
# (BinaryName, here through ctr's --runc-binary), the drop-in path; or, with
# STRATA_SHIM=1, through strata's own shim (io.containerd.strata.v2), which runs
# tasks in-process. Run through tests/clients/run.sh.
set -uo pipefail
SUITE=containerd${STRATA_SHIM:+-shim}
. "$(dirname "$0")/lib.sh"
trap 'finish; exit $?' EXIT

NS=strata-test
SHIM_BIN=$ROOT/target/debug/containerd-shim-strata-v2
if [ -n "${STRATA_SHIM:-}" ]; then
  RUNTIME_FLAGS=(--runtime io.containerd.strata.v2)
  STATE_DIR=/run/containerd/strata/$NS
else
  RUNTIME_FLAGS=(--runc-binary "$RUNTIME")
  STATE_DIR=/run/containerd/runc/$NS
fi
SOCK=$T/containerd.sock
CG=/sys/fs/cgroup/$NS

# Every default path containerd and the runc shim use is ours in this namespace.
mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd
cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOF
# containerd finds containerd-shim-strata-v2 on its PATH.
PATH="$(dirname "$SHIM_BIN"):$PATH" start_daemon containerd containerd --config "$T/config.toml"
wait_socket "$SOCK" || exit 1

ctr() { command ctr --address "$SOCK" --namespace "$NS" "$@"; }
# ctr run asks for cpu shares unless told 0, which needs the cpu controller.
run() { ctr run "${RUNTIME_FLAGS[@]}" --cpu-shares 0 "$@"; }

python3 "$ROOT/hack/mkimage.py" "$(rootfs_dir)" "$T/busybox.tar" "$IMAGE_REF"
check "image import" ctr image import "$T/busybox.tar"

check "echo" same "hello" "$(run --rm "$IMAGE_REF" echo1 echo hello)"

exit_code() {
  run --rm "$IMAGE_REF" exit1 sh -c 'exit 3'
  [ $? -eq 3 ]
}
check "exit code" exit_code

check "env and cwd" same "bar /tmp" "$(run --rm --env FOO=bar --cwd /tmp "$IMAGE_REF" env1 sh -c 'echo $FOO $(pwd)')"

mkdir -p "$T/vol"
echo from-host >"$T/vol/in"
bind_rw() {
  same from-host "$(run --rm --mount "type=bind,src=$T/vol,dst=/vol,options=rbind:rw" "$IMAGE_REF" bind1 \
    sh -c 'cat /vol/in; echo from-container > /vol/out')" && same from-container "$(cat "$T/vol/out")"
}
check "bind mount read/write" bind_rw

read_only() {
  local out
  out=$(run --rm --read-only "$IMAGE_REF" ro1 sh -c 'touch /newfile 2>&1; echo rc=$?')
  contains "Read-only file system" "$out" && contains "rc=1" "$out"
}
check "--read-only" read_only

tty() {
  # A terminal on our side too: script(1) gives ctr one. (the terminal echoes a NUL from ctr as ^@
  # and, after a short exec, a resize error around the output, whatever the runtime.)
  same "/dev/pts/0" "$(script -qec "ctr --address $SOCK --namespace $NS run ${RUNTIME_FLAGS[*]} --cpu-shares 0 --rm -t $IMAGE_REF tty1 tty" /dev/null | tr -d '\r' | sed 's/\^@//g' | grep -m1 /dev/)"
}
check "tty" tty

# A detached task, exec into it, ps, pause and resume, metrics.
check "detached run" run -d "$IMAGE_REF" det1 sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
exec_out() { same "inside" "$(ctr task exec --exec-id e1 det1 echo inside)"; }
check "exec output" exec_out
exec_code() {
  ctr task exec --exec-id e2 det1 sh -c 'exit 4'
  [ $? -eq 4 ]
}
check "exec exit code" exec_code
exec_tty() { same "/dev/pts/0" "$(script -qec "ctr --address $SOCK --namespace $NS task exec -t --exec-id e3 det1 tty" /dev/null | tr -d '\r' | sed 's/\^@//g' | grep -m1 /dev/)"; }
check "exec with a tty" exec_tty
ps_lists() { [ "$(ctr task ps det1 | tail -n +2 | wc -l)" -ge 2 ]; }
check "ps" ps_lists
status() { ctr task ls | awk -v id="$1" '$1 == id {print $3}'; }
check "pause" ctr task pause det1
check "paused status" same PAUSED "$(status det1)"
check "resume" ctr task resume det1
check "running status" same RUNNING "$(status det1)"
check "metrics" ctr task metrics det1
stop_term() {
  ctr task kill -s SIGTERM det1 || return 1
  local code
  code=$(ctr task wait det1 2>/dev/null | awk '{print $NF}')
  # ctr task wait prints nothing once the task is gone; the exit status is in delete.
  ctr task delete det1 >/dev/null 2>&1
  ctr container rm det1
}
check "stop with SIGTERM" stop_term

kill_137() {
  run -d "$IMAGE_REF" det2 sleep 1000 || return 1
  ctr task kill -s SIGKILL det2 || return 1
  local out
  out=$(ctr task delete det2 2>&1)
  ctr container rm det2
  contains "137" "$out"
}
check "SIGKILL gives 137" kill_137

restart() {
  # The container record keeps the runtime options (the binary); its task is
  # started again once the first one exited and was deleted.
  run -d "$IMAGE_REF" again1 sh -c 'echo again' >/dev/null || return 1
  for _ in $(seq 50); do
    [ "$(status again1)" = STOPPED ] && break
    sleep 0.1
  done
  ctr task delete again1 >/dev/null || return 1
  same again "$(ctr task start again1)" || return 1
  ctr task delete again1 >/dev/null
  ctr container rm again1
}
check "restart an exited container" restart

force_rm() {
  run -d "$IMAGE_REF" det3 sleep 1000 || return 1
  ctr task delete --force det3 && ctr container rm det3
}
check "delete --force a running task" force_rm

memory() {
  local out
  if out=$(run --rm --memory-limit 67108864 "$IMAGE_REF" mem1 sh -c 'cat /sys/fs/cgroup/memory.max' 2>&1); then
    same 67108864 "$out"
  else
    # No memory controller here: the runtime's reason must reach ctr.
    contains "memory" "$out"
  fi
}
check "--memory-limit applied or refused clearly" memory

cpus() {
  local out
  if out=$(run --rm --cpus 0.5 "$IMAGE_REF" cpu1 cat /sys/fs/cgroup/cpu.max 2>&1); then
    same "50000 100000" "$out"
  else
    contains "cpu" "$out"
  fi
}
check "--cpus applied or refused clearly" cpus

bad_create() {
  local out
  out=$(run --rm "$IMAGE_REF" bad1 /no/such/binary 2>&1) && return 1
  contains "/no/such/binary" "$out"
}
check "a failing create reports its cause" bad_create

if [ -n "${STRATA_SHIM:-}" ]; then
  # 200 short tasks, 8 at a time: every one prints its id, and no shim, mount,
  # cgroup or state directory outlives them.
  stress() {
    local out
    out=$(seq 200 | xargs -P 8 -I{} ctr --address "$SOCK" --namespace "$NS" run --runtime io.containerd.strata.v2 \
      --cpu-shares 0 --rm "$IMAGE_REF" "stress{}" echo "done{}" 2>&1 | sort | uniq -c | awk '$1 != 1 || $2 !~ /^done/' )
    same "" "$out" && same 0 "$(pgrep -f -c "containerd-shim-strata-v2.*-id stress" || true)"
  }
  check "200 tasks, 8 at a time" stress
  idle_rss() {
    run -d "$IMAGE_REF" idle1 sleep 1000 >/dev/null || return 1
    local pid rss
    pid=$(pgrep -f "containerd-shim-strata-v2.*-id idle1" | head -1)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    echo "idle shim RSS: ${rss} KiB" >&2
    ctr task kill -s SIGKILL idle1 && ctr task delete idle1 >/dev/null; ctr container rm idle1
    [ -n "$rss" ]
  }
  check "idle shim memory reported" idle_rss
fi

nothing_left() {
  same "" "$(ctr task ls -q)" && same "" "$(ctr container ls -q)" &&
    same "" "$(ls "$STATE_DIR" 2>/dev/null)" &&
    same "" "$(leftover_cgroups "$CG")" &&
    same "" "$(grep -c "$T/state" /proc/self/mountinfo | grep -v '^0$')"
}
check "nothing left behind" nothing_left
ctr image rm "$IMAGE_REF" >/dev/null 2>&1
stop_daemons
rmdir "$CG" 2>/dev/null || true
