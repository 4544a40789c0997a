# Shared by the client suites (sourced): a private scratch directory, checks that
# count passes and failures, daemons stopped by PID on any exit, and a final
# look for anything left behind. The suites run in a private mount namespace
# with a pure cgroup v2 view (tests/clients/run.sh sets that up), so every
# default path a client writes (/run/containerd, /var/lib/...) is a tmpfs of ours.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The runtime under test: strata by default, STRATA_TEST_RUNTIME=/usr/sbin/runc
# to validate the checks themselves.
RUNTIME=${STRATA_TEST_RUNTIME:-$ROOT/target/debug/strata}
SUITE=${SUITE:-clients}
T=$(mktemp -d "/tmp/strata-$SUITE.XXXXXX")
IMAGE_REF=docker.io/library/busybox:strata
DAEMONS=()
PASSED=0
SKIPPED=0
FAILED=()

log() { printf '%s: %s\n' "$SUITE" "$*" >&2; }

# Run inside a container: a server on 127.0.0.1 and a client talking to it;
# prints what the server received.
# (Waits, rather than sleeps, for the listener and for what it received: on a
# loaded machine either can take over a second. The listener's stdin stays
# open: busybox nc quits at EOF on stdin, which could come before the data.)
LOOPBACK_TALK='(sleep 10 | nc -l -p 7070 > /tmp/got &); for i in $(seq 50); do echo hi | nc 127.0.0.1 7070 2>/dev/null && break; sleep 0.1; done; for i in $(seq 30); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got'

# Records one check: NAME, then a command that must succeed (or exit 77, with
# the reason as its last line, where this machine cannot run it).
check() {
  local name=$1
  shift
  local rc=0
  "$@" >"$T/check.out" 2>&1 || rc=$?
  if [ $rc = 77 ]; then
    # The check cannot run on this machine; its last line says why.
    SKIPPED=$((SKIPPED + 1))
    printf '  skip  %s: %s\n' "$name" "$(tail -1 "$T/check.out")" >&2
  elif [ $rc = 0 ]; then
    PASSED=$((PASSED + 1))
    printf '  ok    %s\n' "$name" >&2
    # A part of the check that could not run says so.
    grep '^skipped' "$T/check.out" | sed 's/^/        /' >&2 || true
  else
    FAILED+=("$name")
    printf '  FAIL  %s\n' "$name" >&2
    sed 's/^/        | /' "$T/check.out" | head -20 >&2
  fi
}

# Succeeds when "$2" (what a command printed) equals "$1" (trailing CRs dropped).
same() {
  local want=$1 got
  got=$(printf '%s' "$2" | tr -d '\r')
  [ "$got" = "$want" ] || { printf 'want: %q\ngot:  %q\n' "$want" "$got"; return 1; }
}

# Succeeds when "$2" contains "$1".
contains() {
  case "$2" in *"$1"*) return 0 ;; esac
  printf 'want text containing %q\ngot: %s\n' "$1" "$2"
  return 1
}

# Starts a daemon in the background, logging to $T/NAME.log; remembers its PID.
start_daemon() {
  local name=$1
  shift
  "$@" >"$T/$name.log" 2>&1 &
  DAEMONS+=("$!")
  log "started $name (pid $!)"
}

# Waits up to 30 s for a socket to appear.
wait_socket() {
  for _ in $(seq 300); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  log "no socket at $1"
  return 1
}

# Stops every daemon we started (TERM, then KILL) and everything they left.
stop_daemons() {
  local pid
  for pid in "${DAEMONS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${DAEMONS[@]}"; do
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  DAEMONS=()
}

# Mounts below $T (and tmpfs overlays we made), deepest first.
unmount_ours() {
  local m
  for m in $(awk -v t="$T" '$5 ~ "^"t || $5 ~ "^/run/containerd" || $5 ~ "^/var/lib/(containerd|docker|containers)" || $5 ~ "^/run/(docker|containers|libpod)" {print $5}' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

# Processes whose command line mentions our scratch directory.
leftover_processes() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    { tr '\0' ' ' <"$p/cmdline" | grep -q "$T" && echo "${p#/proc/} $(tr '\0' ' ' <"$p/cmdline")"; } 2>/dev/null
  done
  return 0
}

# Cgroups under $1 (a directory of the pure v2 view) that hold a container.
leftover_cgroups() {
  [ -d "$1" ] || return 0
  find "$1" -mindepth 1 -type d 2>/dev/null
}

finish() {
  stop_daemons
  local procs
  procs=$(leftover_processes)
  if [ -n "$procs" ]; then
    FAILED+=("no process left behind")
    log "left behind: $procs"
    echo "$procs" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
  fi
  unmount_ours
  rm -rf "$T"
  echo "$SUITE: ${PASSED} passed, ${#FAILED[@]} failed, ${SKIPPED} skipped" >&2
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf '  failed: %s\n' "${FAILED[@]}" >&2
    return 1
  fi
}

# The checks podman and Docker share. $1 names the client's shell function;
# the suite defines `run` (its run with the flags this machine needs), IMG, and
# TTY_RUN / TTY_EXEC, the same commands as one string for script(1).
engine_checks() {
  local cli=$1
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
  tty() { same /dev/pts/0 "$(script -qec "$TTY_RUN --rm -t $IMG tty" /dev/null | tr -d '\r' | grep -m1 /dev/)"; }
  check "tty" tty
  # --network none: a network namespace with only lo, which must be up.
  check "loopback is up (listen and connect on 127.0.0.1)" same hi "$(run --rm "$IMG" sh -c "$LOOPBACK_TALK")"

  check "detached run" run -d --name det1 "$IMG" sh -c 'trap "exit 0" TERM; sleep 1000 & wait'
  check "exec output" same inside "$($cli exec det1 echo inside)"
  exec_code() {
    $cli exec det1 sh -c 'exit 4'
    [ $? -eq 4 ]
  }
  check "exec exit code" exec_code
  exec_tty() { same /dev/pts/0 "$(script -qec "$TTY_EXEC -t det1 tty" /dev/null | tr -d '\r' | grep -m1 /dev/)"; }
  check "exec with a tty" exec_tty
  top_lists() { contains "sleep 1000" "$($cli top det1)"; }
  check "top" top_lists
  state() { $cli inspect -f '{{.State.Status}}' "$1"; }
  if [ -n "${NO_CGROUP:-}" ]; then
    # (A suite whose containers have no cgroup says why, and these are skipped.)
    no_cgroup() { echo "$NO_CGROUP"; return 77; }
    check "pause" no_cgroup
  else
    check "pause" $cli pause det1
    check "paused state" same paused "$(state det1)"
    check "unpause" $cli unpause det1
    check "running state" same running "$(state det1)"
  fi
  stop_term() { $cli stop -t 10 det1 >/dev/null && same 0 "$($cli inspect -f '{{.State.ExitCode}}' det1)"; }
  check "stop with SIGTERM" stop_term
  restart() { $cli start det1 >/dev/null && same running "$(state det1)"; }
  check "restart a stopped container" restart
  check "rm -f a running container" $cli rm -f det1

  kill_137() {
    run -d --name det2 "$IMG" sleep 1000 >/dev/null || return 1
    $cli kill det2 >/dev/null || return 1
    same 137 "$($cli wait det2)" && $cli rm det2 >/dev/null
  }
  check "kill gives 137" kill_137

  resource() {
    local flag=$1 file=$2 want=$3 out
    if out=$(run --rm "$flag" "$IMG" cat "/sys/fs/cgroup/$file" 2>&1); then
      same "$want" "$out"
    else
      # The controller is missing here: the runtime's reason must reach the client.
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

  # A microVM asked for by the annotation alone, which the engine passes on
  # in config.json (or, where the engine has no way to pass one, VM_FLAGS:
  # a runtime registered as strata-vm): the engine's own state, stdio, exit
  # code, exec and stop as for a container, and no QEMU left.
  [ -n "${VM_FLAGS+set}" ] || VM_FLAGS=(--annotation run.strata.isolation=vm)
  local kernel=${STRATA_VM_KERNEL:-/var/cache/strata/vm/vmlinux}
  if [ "$(basename "$RUNTIME")" != strata ]; then
    check "a container in a VM" sh -c 'echo "only strata has a VM backend"; exit 77'
  elif [ "$(id -u)" != 0 ] || [ -n "${NO_CGROUP:-}" ]; then
    check "a container in a VM" sh -c 'echo "VMs are made by a root engine here"; exit 77'
  elif ! [ -e "$kernel" ] || ! command -v qemu-system-x86_64 >/dev/null; then
    check "a container in a VM" sh -c 'echo "no guest kernel or QEMU (hack/vm-assets.sh prepares both)"; exit 77'
  else
    vm_run() {
      local out code host
      host=$(cat /proc/sys/kernel/random/boot_id)
      out=$(run --rm "${VM_FLAGS[@]}" "$IMG" sh -c 'cat /proc/sys/kernel/random/boot_id; exit 5')
      code=$?
      same 5 "$code" && [ -n "$out" ] && [ "$out" != "$host" ]
    }
    check "a container in a VM: its own kernel, stdout and exit code" vm_run
    vm_life() {
      run -d --name vm1 "${VM_FLAGS[@]}" "$IMG" sh -c 'trap "exit 0" TERM; while :; do sleep 0.2; done' >/dev/null ||
        return 1
      same running "$(state vm1)" || return 1
      same in-vm "$($cli exec vm1 echo in-vm)" || return 1
      $cli exec vm1 sh -c 'exit 4'
      same 4 "$?" || return 1
      $cli stop -t 20 vm1 >/dev/null || return 1
      same 0 "$($cli inspect -f '{{.State.ExitCode}}' vm1)" || return 1
      $cli rm vm1 >/dev/null || return 1
      same 0 "$(pgrep -c qemu-system || true)"
    }
    check "exec and stop of a container in a VM" vm_life
  fi
}

# The busybox rootfs of the repository's hello bundle.
rootfs_dir() { echo "$ROOT/bundles/hello/rootfs"; }
