#!/usr/bin/env bash
# Rootless podman 4.3 (Debian's) with `--runtime strata`, run by an
# unprivileged user the suite makes (with subordinate id ranges), with its own
# vfs storage and no cgroup delegated to it: podman runs the runtime as root of
# its user namespace (kept by its pause process, which is not a leftover). The engine checks of the root suites, where rootless
# podman supports them, and one slirp4netns network. Run through
# tests/clients/run.sh.
set -uo pipefail
SUITE=podman-rootless
. "$(dirname "$0")/lib.sh"
RL_USER=strata-podman-test
drop_user() {
  pkill -KILL -u "$RL_USER" 2>/dev/null || true
  sleep 0.2
  userdel -f -r "$RL_USER" 2>/dev/null || true
}
trap 'rc=0; finish || rc=$?; drop_user; exit $rc' EXIT

drop_user
useradd --create-home --shell /bin/sh "$RL_USER" || exit 1
grep -q "^$RL_USER:" /etc/subuid || usermod --add-subuids 300000-365535 "$RL_USER"
grep -q "^$RL_USER:" /etc/subgid || usermod --add-subgids 300000-365535 "$RL_USER"
RL_UID=$(id -u "$RL_USER")
RL_GID=$(id -g "$RL_USER")
# The user's own scratch, below ours.
chmod 711 "$T"
U=$T/user
mkdir -p "$U/xdg" "$U/tmp" && chown -R "$RL_USER:" "$U" && chmod 700 "$U/xdg"
as_user() {
  setpriv --reuid "$RL_UID" --regid "$RL_GID" --init-groups -- \
    env HOME="/home/$RL_USER" XDG_RUNTIME_DIR="$U/xdg" TMPDIR="$U/tmp" "$@"
}
PODMAN=(podman --root "$U/storage" --runroot "$U/runroot" --tmpdir "$U/tmp" --cgroup-manager cgroupfs
  --events-backend file --storage-driver vfs --runtime "$RUNTIME")
podman() { as_user "${PODMAN[@]}" "$@"; }
LIMITS=(--network none --pids-limit 0)
run() { podman run "${LIMITS[@]}" "$@"; }
IMG=localhost/busybox:strata
TTY_RUN=$(printf '%q ' setpriv --reuid "$RL_UID" --regid "$RL_GID" --init-groups -- env HOME="/home/$RL_USER" \
  XDG_RUNTIME_DIR="$U/xdg" TMPDIR="$U/tmp" "${PODMAN[@]}" run "${LIMITS[@]}")
TTY_EXEC=$(printf '%q ' setpriv --reuid "$RL_UID" --regid "$RL_GID" --init-groups -- env HOME="/home/$RL_USER" \
  XDG_RUNTIME_DIR="$U/xdg" TMPDIR="$U/tmp" "${PODMAN[@]}" exec)
# Without a cgroup delegated to the user there is nothing to freeze.
NO_CGROUP="rootless podman with the cgroupfs manager has no cgroup to freeze (none is delegated to the user)"

tar -C "$(rootfs_dir)" -cf "$U/rootfs.tar" . && chown "$RL_USER:" "$U/rootfs.tar"
check "image import" podman import -q "$U/rootfs.tar" "$IMG"
# The bind mount check writes into this directory as the container's root, the user.
mkdir -p "$T/vol" && chown "$RL_USER:" "$T/vol"
engine_checks podman

slirp() {
  command -v slirp4netns >/dev/null || { echo "slirp4netns is not installed"; return 77; }
  if ! as_user sh -c ': <>/dev/net/tun' 2>/dev/null; then
    echo "/dev/net/tun is not open to users on this host ($(stat -c %A /dev/net/tun 2>/dev/null || echo missing))"
    return 77
  fi
  local out
  out=$(podman run --rm --network slirp4netns "$IMG" sh -c 'cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d " "; cat /etc/resolv.conf')
  contains tap0 "$out" && contains 10.0.2.3 "$out"
}
check "slirp4netns network (tap0, its resolver)" slirp

# The user's processes but its pause process, and but zombies: this machine's
# pid 1 does not reap the exited processes podman's helpers leave to it.
live_user_processes() {
  local pause p
  pause=$(cat $(find "$U" -name pause.pid 2>/dev/null) /dev/null 2>/dev/null | head -1)
  for p in $(pgrep -u "$RL_USER"); do
    [ "$p" = "$pause" ] && continue
    [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" = Z ] && continue
    ps -o pid=,stat=,args= -p "$p" 2>/dev/null
  done
}

nothing_left() {
  same "" "$(podman ps -aq)" &&
    same "" "$(find "$U/runroot" -name state.json 2>/dev/null)" &&
    same "" "$(live_user_processes)"
}
check "nothing left behind" nothing_left
podman rmi -f "$IMG" >/dev/null 2>&1
podman system migrate >/dev/null 2>&1
