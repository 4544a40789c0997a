#!/usr/bin/env bash
# A private systemd for tests of the systemd cgroup driver, on a host whose init
# is not systemd. systemd boots as PID 1 of new pid, mount and cgroup namespaces,
# in a child cgroup of the cgroup v2 root, with private copies of everything it
# writes (tmpfs on /tmp, /run and /var/tmp; overlays on /etc and /var), so the
# host's files, /tmp above all, stay as they are. (The checkout may be anywhere
# but under /run.)
#
#   hack/systemd-rig.sh start DIR [KEEP...]  boot it; DIR holds its pid files;
#                                            each KEEP path (the
#                                            checkout, test scratch dirs) stays
#                                            visible inside
#   hack/systemd-rig.sh exec DIR CMD...      run CMD inside it (in a cgroup of the
#                                            rig, so it can make and enter units)
#   hack/systemd-rig.sh stop DIR             stop it and remove its cgroups
set -euo pipefail

v2=$(awk '$9 == "cgroup2" { print $5 }' /proc/self/mountinfo | tail -1)
[ -n "$v2" ] || { echo "systemd-rig: no cgroup v2 hierarchy is mounted" >&2; exit 1; }

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,14s/^# \{0,1\}//p' "$0" >&2; exit 2; }
shift 2
dir=$(realpath -m "$dir")
name=strata-rig-$(printf '%s' "$dir" | md5sum | cut -c1-12)
cg=$v2/$name

stop() {
  if [ -f "$dir/pid" ]; then
    pid=$(cat "$dir/pid")
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [ -f "$dir/launcher" ]; then
    launcher=$(cat "$dir/launcher")
    for _ in $(seq 200); do kill -0 "$launcher" 2>/dev/null || break; sleep 0.05; done
  fi
  # Whatever is left in its cgroups (clients, units) dies with them.
  for c in "$cg" "$cg-keeper"; do
    [ -d "$c" ] || continue
    echo 1 > "$c/cgroup.kill" 2>/dev/null || true
    for _ in $(seq 100); do
      find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [ -d "$c" ] || break
      sleep 0.05
    done
  done
  rm -f "$dir/pid" "$dir/launcher"
}

case "$cmd" in
start)
  [ -x /lib/systemd/systemd ] || { echo "systemd-rig: /lib/systemd/systemd is missing (apt-get install systemd)" >&2; exit 1; }
  stop
  mkdir -p "$dir" "$cg" "$cg-keeper"
  keep=()
  for k in "$@"; do keep+=("$(realpath "$k")"); done
  # shellcheck disable=SC2016
  inner='
set -e
shift
mount --make-rprivate /
# /run becomes a private tmpfs first: it holds the paths to keep while the
# covers go on, and the upper layers of the overlays (DIR itself may be below a
# directory covered next, a checkout under /var/tmp, say).
mount -t tmpfs -o mode=755 tmpfs /run
i=0
for k in "$@"; do mkdir -p /run/rig/keep/$i; mount --rbind "$k" /run/rig/keep/$i; i=$((i+1)); done
for d in etc var; do
  mkdir -p "/run/rig/$d/upper" "/run/rig/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=/run/rig/$d/upper,workdir=/run/rig/$d/work" "/$d"
done
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $d; done
i=0
for k in "$@"; do mkdir -p "$k"; mount --rbind /run/rig/keep/$i "$k"; i=$((i+1)); done
mount -t proc proc /proc
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The launcher is moved out of this cgroup by the host: controllers can be
# enabled here only once it holds no process but this one.
# (Counted with builtins only: a forked counter would count itself.)
while :; do
  n=0
  while read -r _; do n=$((n+1)); done < /sys/fs/cgroup/cgroup.procs
  [ "$n" = 1 ] && break
  sleep 0.01
done
exec env -i container=strata-rig /lib/systemd/systemd --system --unit=multi-user.target
'
  setsid bash -c 'echo $$ > "$1/cgroup.procs"; shift; exec unshare --pid --fork --mount --cgroup --propagation private bash -c "$@"' \
    rig "$cg" "$inner" rig "$dir" "${keep[@]}" < /dev/null > "$dir/boot.log" 2>&1 &
  launcher=$!
  echo "$launcher" > "$dir/launcher"
  own=$(readlink /proc/self/ns/cgroup)
  for _ in $(seq 500); do
    ns=$(readlink "/proc/$launcher/ns/cgroup" 2>/dev/null) || { cat "$dir/boot.log" >&2; stop; exit 1; }
    [ "$ns" != "$own" ] && break
    sleep 0.01
  done
  echo "$launcher" > "$cg-keeper/cgroup.procs"
  pid=
  for _ in $(seq 500); do
    pid=$(pgrep -P "$launcher" || true)
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = systemd ] && break
    sleep 0.01
  done
  [ -n "$pid" ] || { echo "systemd-rig: systemd did not start" >&2; cat "$dir/boot.log" >&2; stop; exit 1; }
  echo "$pid" > "$dir/pid"
  mkdir -p "$cg/strata-rig-clients"
  state=
  for _ in $(seq 300); do
    state=$(nsenter -t "$pid" -m -p -- systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.1
  done
  case "$state" in
  running | degraded) echo "systemd-rig: systemd (pid $pid) is $state" ;;
  *) echo "systemd-rig: systemd did not come up (state: ${state:-none})" >&2; stop; exit 1 ;;
  esac
  ;;
exec)
  pid=$(cat "$dir/pid")
  echo $$ > "$cg/strata-rig-clients/cgroup.procs"
  exec nsenter -t "$pid" -m -p -C -- "$@"
  ;;
stop) stop ;;
*) echo "systemd-rig: unknown command $cmd" >&2; exit 2 ;;
esac
