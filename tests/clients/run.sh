#!/usr/bin/env bash
# Runs the real-client suites against strata: containerd with its stock runc
# shim (BinaryName=strata), containerd with strata's own shim (containerd-shim),
# podman and docker; or against the runtime STRATA_TEST_RUNTIME names (runc, to
# validate the checks; the containerd-shim suite is strata's alone).
# Installs the clients from Debian when missing. Every suite runs in a private
# mount namespace with a pure cgroup v2 view, with private state for every daemon.
# Usage: tests/clients/run.sh [SUITE...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(containerd containerd-shim podman podman-rootless docker)
need=()
for s in "${suites[@]}"; do
  case $s in
    containerd | containerd-shim) command -v containerd >/dev/null || need+=(containerd) ;;
    podman) command -v podman >/dev/null || need+=(podman) ;;
    podman-rootless)
      command -v podman >/dev/null || need+=(podman)
      command -v slirp4netns >/dev/null || need+=(slirp4netns)
      [ -x /usr/bin/newuidmap ] || need+=(uidmap)
      ;;
    docker) command -v dockerd >/dev/null || need+=(docker.io) ;;
    *) echo "unknown suite $s" >&2; exit 2 ;;
  esac
done
command -v script >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "clients: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -x "${STRATA_TEST_RUNTIME:-target/debug/strata}" ] && [ -x target/debug/containerd-shim-strata-v2 ] || cargo build
# The shim suite sends RPCs ctr has no command for through this client.
[ -x target/debug/examples/task-rpc ] || cargo build -p strata-shim --example task-rpc
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs

rc=0
for s in "${suites[@]}"; do
  script=$s shim=
  if [ "$s" = containerd-shim ]; then
    if [ -n "${STRATA_TEST_RUNTIME:-}" ]; then
      echo "skipped: containerd-shim: strata's own shim has no runc counterpart" >&2
      continue
    fi
    script=containerd shim=1
  fi
  # containerd's suites run as pid 1 of a pid namespace of their own: the
  # processes a killed shim orphans are reaped there (this machine's own pid 1
  # does not reap, and a zombie keeps its container's pid namespace from ending).
  pidns=()
  [ "$script" = containerd ] && pidns=(--pid --fork --mount-proc)
  STRATA_SHIM=$shim unshare -m --propagation private "${pidns[@]}" sh -c \
    'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec bash tests/clients/'"$script"'.sh' || rc=1
done
exit $rc
