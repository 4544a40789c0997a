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
TASK_RPC=$ROOT/target/debug/examples/task-rpc
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
. "$ROOT/hack/lib/containerd.sh"
private_containerd_config "$T" "$SOCK"
# containerd finds containerd-shim-strata-v2 on its PATH, and the same shim
# as containerd-shim-strata-vm-v2 (the runtime io.containerd.strata-vm.v2).
mkdir -p "$T/bin" && ln -sf "$SHIM_BIN" "$T/bin/containerd-shim-strata-vm-v2"
SHIM_PATH="$(dirname "$SHIM_BIN"):$T/bin"
PATH="$SHIM_PATH:$PATH" start_daemon containerd containerd --config "$T/config.toml"
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

# ctr's task gets a network namespace of its own with only lo, which must be up.
check "loopback is up (listen and connect on 127.0.0.1)" same hi "$(run --rm "$IMAGE_REF" lo1 sh -c "$LOOPBACK_TALK")"

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

# A task in a microVM (the annotation strata reads), through either shim:
# containerd's own state, stdio, exit codes, exec and signals as for a
# container, and no QEMU left once the task is deleted.
VM_KERNEL=${STRATA_VM_KERNEL:-/var/cache/strata/vm/vmlinux}
if [ -e "$VM_KERNEL" ] && command -v qemu-system-x86_64 >/dev/null; then
  vm_run() {
    local out code host
    host=$(cat /proc/sys/kernel/random/boot_id)
    out=$(run --rm --annotation run.strata.isolation=vm "$IMAGE_REF" vm1 sh -c 'cat /proc/sys/kernel/random/boot_id; exit 5')
    code=$?
    same 5 "$code" && [ -n "$out" ] && [ "$out" != "$host" ]
  }
  check "a task in a VM: its own kernel, stdout and exit code" vm_run
  vm_exec() {
    run -d --annotation run.strata.isolation=vm "$IMAGE_REF" vm2 sh -c 'trap "exit 0" TERM; while :; do sleep 0.2; done' >/dev/null || return 1
    same RUNNING "$(status vm2)" || return 1
    same in-vm "$(ctr task exec --exec-id v1 vm2 echo in-vm)" || return 1
    ctr task exec --exec-id v2 vm2 sh -c 'exit 4'
    same 4 "$?" || return 1
    ctr task kill -s SIGTERM vm2 || return 1
    for _ in $(seq 100); do [ "$(status vm2)" = STOPPED ] && break; sleep 0.1; done
    same STOPPED "$(status vm2)" || return 1
    ctr task delete vm2 >/dev/null && ctr container rm vm2 || return 1
    same 0 "$(pgrep -f -c "qemu-system.*/$NS/vm[12]/" || true)"
  }
  check "exec, SIGTERM and delete of a task in a VM" vm_exec
  vm_bind() {
    local out
    mkdir -p "$T/vmvol" && echo from-host >"$T/vmvol/in"
    out=$(run --rm --annotation run.strata.isolation=vm --mount "type=bind,src=$T/vmvol,dst=/vol,options=rbind:rw" \
      "$IMAGE_REF" vm4 sh -c 'cat /vol/in; echo from-guest >/vol/out' 2>&1)
    same from-host "$out" && same from-guest "$(cat "$T/vmvol/out" 2>&1)"
  }
  check "a bind mount reaches a task in a VM, both ways" vm_bind
  vm_refused() {
    local out
    out=$(run --rm --annotation run.strata.isolation=vm --mount "type=bind,src=/dev/null,dst=/dn,options=rbind:ro" \
      "$IMAGE_REF" vm3 true 2>&1) && return 1
    contains "/dev/null onto /dn" "$out" && same 0 "$(pgrep -f -c "qemu-system.*/$NS/vm3/" || true)"
  }
  check "a VM task that cannot be made says why, naming the mount" vm_refused
  vm_tty() {
    same "/dev/pts/0" "$(script -qec "ctr --address $SOCK --namespace $NS run ${RUNTIME_FLAGS[*]} --cpu-shares 0 --rm -t --annotation run.strata.isolation=vm $IMAGE_REF vmt1 tty" /dev/null | tr -d '\r' | sed 's/\^@//g' | grep -m1 /dev/)" || return 1
    run -d --annotation run.strata.isolation=vm "$IMAGE_REF" vmt2 sh -c 'trap "exit 0" TERM; while :; do sleep 0.2; done' >/dev/null || return 1
    same "/dev/pts/0" "$(script -qec "ctr --address $SOCK --namespace $NS task exec -t --exec-id t1 vmt2 tty" /dev/null | tr -d '\r' | sed 's/\^@//g' | grep -m1 /dev/)" || return 1
    ctr task kill -s SIGKILL vmt2 && ctr task delete vmt2 >/dev/null; ctr container rm vmt2
  }
  check "a terminal in a VM task, and in an exec" vm_tty
  if [ -n "${STRATA_SHIM:-}" ]; then
    # The runtime io.containerd.strata-vm.v2 (strata's shim under the name
    # containerd-shim-strata-vm-v2) puts every task in a VM, no annotation.
    vm_runtime() {
      local out host
      host=$(cat /proc/sys/kernel/random/boot_id)
      out=$(ctr run --runtime io.containerd.strata-vm.v2 --cpu-shares 0 --rm "$IMAGE_REF" vm6 sh -c 'cat /proc/sys/kernel/random/boot_id; exit 6')
      same 6 "$?" && [ -n "$out" ] && [ "$out" != "$host" ] || return 1
      same 0 "$(pgrep -f -c "qemu-system.*/vm6/" || true)"
    }
    check "the strata-vm runtime puts a task in a VM without an annotation" vm_runtime
  fi
else
  check "tasks in VMs" sh -c 'echo "no guest kernel or QEMU (hack/vm-assets.sh prepares both)"; exit 77'
fi

if [ -n "${STRATA_SHIM:-}" ]; then
  kill_containerd() {
    local cpid=${DAEMONS[0]}
    kill -KILL "$cpid"; wait "$cpid" 2>/dev/null
    DAEMONS=("${DAEMONS[@]:1}")
  }
  start_containerd() {
    rm -f "$SOCK" "$SOCK.ttrpc"
    PATH="$SHIM_PATH:$PATH" start_daemon containerd containerd --config "$T/config.toml"
    # (containerd goes first in DAEMONS, as kill_containerd expects.)
    DAEMONS=("${DAEMONS[@]: -1}" "${DAEMONS[@]:0:${#DAEMONS[@]}-1}")
    wait_socket "$SOCK"
  }

  # containerd restarted while a task exits: the shim keeps the exit status
  # until containerd has read it.
  exit_across_restart() {
    run -d "$IMAGE_REF" restart1 sh -c 'sleep 1; exit 7' >/dev/null || return 1
    kill_containerd
    sleep 2
    start_containerd || return 1
    for _ in $(seq 50); do ctr task ls 2>/dev/null | grep -q '^restart1 .*STOPPED' && break; sleep 0.1; done
    same STOPPED "$(ctr task ls | awk '$1 == "restart1" {print $3}')" || return 1
    # What the reconnected containerd reads from the shim.
    same "STOPPED 7" "$("$TASK_RPC" "$(cat "$T/state/io.containerd.runtime.v2.task/$NS/restart1/address")" state restart1)" || return 1
    ctr task delete restart1 >/dev/null 2>&1
    ctr container rm restart1
  }
  check "an exit status outlives a containerd restart" exit_across_restart

  # The task exits while containerd is down, then the shim dies: containerd
  # learns the exit from `SHIM delete`, run in the bundle as containerd runs
  # it, which must report the task's own status (7), not a SIGKILL's.
  exit_after_dead_shim() {
    local bundle="$T/state/io.containerd.runtime.v2.task/$NS/dead7" shim status
    run -d "$IMAGE_REF" dead7 sh -c 'sleep 1; exit 7' >/dev/null || return 1
    shim=$(pgrep -f "containerd-shim-strata-v2 .*-id dead7( |$)" | head -1)
    kill_containerd
    sleep 2
    kill -KILL "$shim"
    # The DeleteResponse (protobuf): field 2 is the exit status.
    status=$(cd "$bundle" && TTRPC_ADDRESS="$SOCK.ttrpc" GRPC_ADDRESS="$SOCK" NAMESPACE="$NS" "$SHIM_BIN" -namespace "$NS" -address "$SOCK" -publish-binary "$(command -v containerd)" \
      -id dead7 -bundle "$bundle" delete | python3 -c '
import sys
b, i, fields = sys.stdin.buffer.read(), 0, {}
def varint():
    global i
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7f) << s; s += 7
        if c < 0x80: return v
while i < len(b):
    key = varint()
    if key & 7 == 0: fields[key >> 3] = varint()
    elif key & 7 == 2: n = varint(); i += n
    else: break
print(fields.get(2, 0))')
    start_containerd || return 1
    ctr task delete dead7 >/dev/null 2>&1
    ctr container rm dead7
    same 7 "$status"
  }
  check "an exit status outlives a shim killed before containerd read it" exit_after_dead_shim

  # `start` forks the daemon and answers only once it serves: a daemon that
  # cannot come up (here, no containerd to send events to) fails `start` with
  # its reason, and leaves no socket and no process.
  start_fails_cleanly() {
    local dir=$T/badstart out rc sock
    # (A file for the log fifo containerd would have made.)
    mkdir -p "$dir" && : >"$dir/log"
    out=$(cd "$dir" && TTRPC_ADDRESS="$T/none.ttrpc" "$SHIM_BIN" -namespace "$NS" -address "$T/none" -id badstart start 2>&1)
    rc=$?
    rm -rf "$dir"
    sock=/run/containerd/s/$(printf '%s' "$T/none/$NS/badstart" | sha256sum | cut -d' ' -f1)
    [ "$rc" -ne 0 ] || return 1
    grep -qF "connect to $T/none.ttrpc" <<<"$out" || { echo "$out" >&2; return 1; }
    [ ! -e "$sock" ] && same 0 "$(pgrep -f -c "containerd-shim-strata-v2 .*-id badstart( |$)" || true)"
  }
  check "a shim that cannot come up fails start with the reason, leaving nothing" start_fails_cleanly

  # containerd takes a `start` that did not exit 0 as failed, whatever it
  # printed, and never calls the address. A `start` killed after its daemon
  # serves but before it answered (here: blocked writing to a full pipe) must
  # take the daemon with it, or that daemon would wait for a call forever.
  start_killed_leaves_no_daemon() {
    local dir=$T/killedstart sock left
    mkdir -p "$dir" && : >"$dir/log"
    sock=/run/containerd/s/$(printf '%s' "$SOCK/$NS/killedstart" | sha256sum | cut -d' ' -f1)
    (cd "$dir" && TTRPC_ADDRESS="$SOCK.ttrpc" python3 -c '
import os, subprocess, sys, time
r, w = os.pipe()
os.set_blocking(w, False)
try:
    while True: os.write(w, b"x" * 4096)
except BlockingIOError:
    pass
os.set_blocking(w, True)
p = subprocess.Popen(sys.argv[1:], stdout=w)
# The bundle gets its address file just before `start` writes to stdout.
for _ in range(500):
    if os.path.exists("address"): break
    time.sleep(0.01)
else:
    p.kill(); sys.exit("start never wrote the address file")
time.sleep(0.2)
p.kill(); p.wait()
' "$SHIM_BIN" -namespace "$NS" -address "$SOCK" -id killedstart start) || { rm -rf "$dir"; return 1; }
    for _ in $(seq 50); do
      left=$(pgrep -f -c "containerd-shim-strata-v2 .*-id killedstart( |$)" || true)
      [ "$left" = 0 ] && [ ! -e "$sock" ] && break
      sleep 0.1
    done
    local ok=0
    same 0 "$left" && [ ! -e "$sock" ] || ok=1
    pkill -9 -f "containerd-shim-strata-v2 .*-id killedstart( |$)"
    rm -rf "$dir" "$sock"
    return $ok
  }
  check "a start killed before it answers leaves no daemon" start_killed_leaves_no_daemon

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

  # containerd 2.x asks `-info` for the runtime's name, version and features.
  info() {
    local out
    out=$("$SHIM_BIN" -info | tr -c '[:print:]' ' ')
    contains "io.containerd.strata.v2" "$out" && contains "runtime-spec/1/features/Features" "$out" &&
      contains '"ociVersionMax":"1.3.0"' "$out"
  }
  check "-info reports name and features" info

  # The events of a task that exits at once, of an exec, and of pause/resume,
  # in the order the protocol demands, as a client sees them.
  events_in_order() {
    ctr events >"$T/events" 2>&1 &
    local watcher=$! out
    sleep 0.3
    run --rm "$IMAGE_REF" ev1 true
    run -d "$IMAGE_REF" ev2 sleep 1000 >/dev/null && ctr task exec --exec-id x1 ev2 true &&
      ctr task pause ev2 && ctr task resume ev2 && ctr task kill -s SIGKILL ev2 && sleep 0.3 &&
      ctr task delete ev2 >/dev/null && ctr container rm ev2
    sleep 0.3
    kill "$watcher"
    out=$(grep '"container_id":"ev1"' "$T/events" | grep -o ' /tasks/[a-z-]*' | tr -d ' ' | tr '\n' ' ')
    same "/tasks/create /tasks/start /tasks/exit /tasks/delete " "$out" || return 1
    out=$(grep '"container_id":"ev2"' "$T/events" | grep -o ' /tasks/[a-z-]*' | tr -d ' ' | tr '\n' ' ')
    same "/tasks/create /tasks/start /tasks/exec-added /tasks/exec-started /tasks/exit /tasks/paused /tasks/resumed /tasks/exit /tasks/delete " "$out"
  }
  check "events in protocol order" events_in_order

  # An exec into a task whose init has exited is refused with the reason.
  exec_after_exit() {
    local out
    run -d "$IMAGE_REF" gone1 true >/dev/null && sleep 0.5
    out=$(ctr task exec --exec-id x1 gone1 echo hi 2>&1) && return 1
    ctr task delete gone1 >/dev/null; ctr container rm gone1
    contains "not running" "$out"
  }
  check "exec after the init exited is refused" exec_after_exit

  # Containers of one group share one shim, which leaves with the last of them.
  shared_shim() {
    run -d --annotation io.containerd.strata.v2.group=pod1 "$IMAGE_REF" grp1 sleep 1000 >/dev/null &&
      run -d --annotation io.containerd.strata.v2.group=pod1 "$IMAGE_REF" grp2 sleep 1000 >/dev/null || return 1
    local shims
    shims=$(pgrep -c -f "containerd-shim-strata-v2 .*-id grp[12] ")
    ctr task kill -s SIGKILL grp1; ctr task kill -s SIGKILL grp2; sleep 0.3
    ctr task delete grp1 >/dev/null; ctr task delete grp2 >/dev/null; ctr container rm grp1 grp2
    sleep 0.3
    same 1 "$shims" && same 0 "$(pgrep -c -f "containerd-shim-strata-v2 .*-id grp[12] " || true)"
  }
  check "one shim per group" shared_shim

  # Update (no ctr command for it: a direct RPC) reaches the cgroup; only the
  # hugetlb controller exists here. Checkpoint is refused as unimplemented.
  update_and_checkpoint() {
    run -d "$IMAGE_REF" upd1 sleep 1000 >/dev/null || return 1
    local addr rc=0 out
    addr=$(cat "$T/state/io.containerd.runtime.v2.task/$NS/upd1/address")
    if grep -qw hugetlb /sys/fs/cgroup/cgroup.controllers && [ -d /sys/kernel/mm/hugepages/hugepages-2048kB ]; then
      # The controller was not needed at create; the update enables it.
      "$TASK_RPC" "$addr" update upd1 '{"hugepageLimits":[{"pageSize":"2MB","limit":8388608}]}' &&
        same 8388608 "$(cat "$CG/upd1/hugetlb.2MB.max")" || rc=1
    else
      echo "skipped the update: no hugetlb controller or no 2MB pages here"
    fi
    out=$("$TASK_RPC" "$addr" update upd1 '{"memory":' 2>&1) && rc=1
    contains "resources" "$out" || rc=1
    out=$(ctr task checkpoint upd1 2>&1) && rc=1
    contains "not supported" "$out" || rc=1
    ctr task kill -s SIGKILL upd1; sleep 0.3; ctr task delete upd1 >/dev/null; ctr container rm upd1
    return $rc
  }
  check "update reaches the cgroup; checkpoint is unimplemented" update_and_checkpoint

  # A process of a host-pid-namespace container orphaned by its parent is
  # handed to the shim (the subreaper), which reaps it when it exits.
  orphans_reaped() {
    ctr run "${RUNTIME_FLAGS[@]}" --cpu-shares 0 -d --with-ns pid:/proc/$$/ns/pid "$IMAGE_REF" orph1 \
      sh -c 'sh -c "sleep 0.5 &"; exec sleep 1000' >/dev/null || return 1
    local shim zombies
    shim=$(pgrep -f "containerd-shim-strata-v2 .*-id orph1 " | head -1)
    sleep 4
    zombies=$(ps -o stat=,pid=,comm= --ppid "$shim" | awk '$1 ~ /^Z/')
    ctr task kill -s SIGKILL orph1; sleep 0.3; ctr task delete orph1 >/dev/null; ctr container rm orph1
    same "" "$zombies"
  }
  check "orphans handed to the shim are reaped" orphans_reaped

  # A task killed by the OOM killer gives a /tasks/oom event.
  oom_event() {
    if ! grep -qw memory "$CG/cgroup.subtree_control" 2>/dev/null && ! grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
      echo "no memory controller in this cgroup v2, so no OOM can be provoked" >&2
      return 77
    fi
    ctr events >"$T/oom-events" 2>&1 &
    local watcher=$!
    sleep 0.3
    run --rm --memory-limit 16777216 "$IMAGE_REF" oom1 tail /dev/zero >/dev/null 2>&1
    sleep 0.3
    kill "$watcher"
    grep '"container_id":"oom1"' "$T/oom-events" | grep -q ' /tasks/oom'
  }
  check "an OOM kill gives /tasks/oom" oom_event

  # containerd cleans up after a shim that was SIGKILLed: it runs the shim's
  # delete, which ends the container and leaves no state, mount or process.
  killed_shim() {
    run -d "$IMAGE_REF" dead1 sleep 1000 >/dev/null || return 1
    local shim init
    shim=$(pgrep -f "containerd-shim-strata-v2 .*-id dead1 " | head -1)
    init=$(ctr task ls | awk '$1 == "dead1" {print $2}')
    kill -9 "$shim"
    for _ in $(seq 50); do kill -0 "$init" 2>/dev/null || break; sleep 0.1; done
    ctr task delete dead1 >/dev/null 2>&1; ctr container rm dead1
    ! kill -0 "$init" 2>/dev/null && same "" "$(ls "$STATE_DIR" 2>/dev/null)" &&
      same 0 "$(grep -c "/dead1/rootfs" /proc/self/mountinfo)"
  }
  check "a SIGKILLed shim is cleaned up" killed_shim

  # The shim SIGKILLed at a seeded random moment of create and start, exec,
  # delete, or a whole run: containerd's cleanup must leave no task, container,
  # cgroup, rootfs mount or state each time. STRATA_SHIM_CHAOS rounds (default
  # 12), from STRATA_SHIM_CHAOS_SEED.
  shim_chaos() {
    local i id op delay bg left=0 kills=0
    RANDOM=${STRATA_SHIM_CHAOS_SEED:-1}
    for i in $(seq "${STRATA_SHIM_CHAOS:-12}"); do
      id=chaos$i op=$((RANDOM % 4)) delay=$((RANDOM % 200))
      case $op in
        0) run -d "$IMAGE_REF" "$id" sleep 1000 >/dev/null 2>&1 & ;;
        1) run -d "$IMAGE_REF" "$id" sleep 1000 >/dev/null 2>&1
           ctr task exec --exec-id "e$i" "$id" sleep 1000 >/dev/null 2>&1 & ;;
        2) run -d "$IMAGE_REF" "$id" sleep 1000 >/dev/null 2>&1
           { ctr task kill -s KILL "$id"; sleep 0.05; ctr task delete "$id"; } >/dev/null 2>&1 & ;;
        *) run --rm "$IMAGE_REF" "$id" true >/dev/null 2>&1 & ;;
      esac
      bg=$!
      sleep "0.$(printf %03d "$delay")"
      pkill -9 -f "containerd-shim-strata-v2 .*-id $id( |$)" && kills=$((kills + 1))
      # (only that job: containerd itself is a job of this shell too)
      wait "$bg"
      ctr task delete -f "$id" >/dev/null 2>&1
      ctr container rm "$id" >/dev/null 2>&1
      local what=()
      ctr task ls -q | grep -qx "$id" && what+=(task)
      ctr container ls -q | grep -qx "$id" && what+=(container)
      [ -e "$CG/$id" ] && what+=("cgroup($(cat "$CG/$id/cgroup.procs" 2>/dev/null | wc -l) procs)")
      grep -q "/$id/rootfs" /proc/self/mountinfo && what+=("rootfs mount")
      [ -n "$(ls "$STATE_DIR" 2>/dev/null)" ] && what+=("state: $(ls "$STATE_DIR" | tr '\n' ' ')")
      # (A shim told to shut down takes a moment to exit.)
      local n gone=
      for n in $(seq 20); do
        pgrep -f "containerd-shim-strata-v2 .*-id $id( |$)" >/dev/null || { gone=1; break; }
        sleep 0.05
      done
      [ -n "$gone" ] || what+=("shim process")
      if [ ${#what[@]} -gt 0 ]; then
        echo "round $i (op $op, ${delay} ms): left ${what[*]}"
        left=$((left + 1))
        # Clean up, so the next round starts from nothing.
        echo 1 > "$CG/$id/cgroup.kill" 2>/dev/null; sleep 0.1; rmdir "$CG/$id" 2>/dev/null
        pkill -9 -f "containerd-shim-strata-v2 .*-id $id( |$)"
        umount -l "$(awk -v i="/$id/rootfs" '$5 ~ i {print $5}' /proc/self/mountinfo | head -1)" 2>/dev/null
      fi
    done
    echo "shim chaos: ${STRATA_SHIM_CHAOS:-12} rounds, $kills shims killed, $left rounds left something"
    [ "$left" = 0 ]
  }
  check "SIGKILL of the shim at random moments leaves nothing" shim_chaos
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
