#!/usr/bin/env bash
# Docker 20.10 (Debian's dockerd, with the containerd it starts itself) with
# `--add-runtime strata` as the default runtime (and strata-vm for VMs);
# private data and exec roots,
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
# Docker 20.10 passes no annotations: a VM is asked for by a runtime whose
# binary is strata under the name strata-vm.
ln -sf "$RUNTIME" "$T/strata-vm"
VM_FLAGS=(--runtime strata-vm)
start_daemon dockerd dockerd --config-file "$T/daemon.json" --data-root "$T/data" --exec-root "$T/exec" \
  --pidfile "$T/docker.pid" --host "unix://$SOCK" --iptables=false --ip6tables=false --ip-forward=false \
  --ip-masq=false --bridge=none --storage-driver vfs --exec-opt native.cgroupdriver=cgroupfs \
  --add-runtime "strata=$RUNTIME" --add-runtime "strata-vm=$T/strata-vm" --default-runtime strata
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

TTY_RUN="/usr/bin/docker -H unix://$SOCK run --network none"
TTY_EXEC="/usr/bin/docker -H unix://$SOCK exec"
engine_checks docker

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
