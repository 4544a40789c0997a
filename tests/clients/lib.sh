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
FAILED=()

log() { printf '%s: %s\n' "$SUITE" "$*" >&2; }

# Records one check: NAME, then a command that must succeed.
check() {
  local name=$1
  shift
  if "$@" >"$T/check.out" 2>&1; then
    PASSED=$((PASSED + 1))
    printf '  ok    %s\n' "$name" >&2
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
  echo "$SUITE: ${PASSED} passed, ${#FAILED[@]} failed" >&2
  if [ ${#FAILED[@]} -gt 0 ]; then
    printf '  failed: %s\n' "${FAILED[@]}" >&2
    return 1
  fi
}

# The busybox rootfs of the repository's hello bundle.
rootfs_dir() { echo "$ROOT/bundles/hello/rootfs"; }
