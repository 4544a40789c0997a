#!/usr/bin/env bash
# Runs the real-client suites (containerd, podman, docker) against strata, or
# against the runtime STRATA_TEST_RUNTIME names (runc, to validate the checks).
# Installs the clients from Debian when missing. Every suite runs in a private
# mount namespace with a pure cgroup v2 view, with private state for every daemon.
# Usage: tests/clients/run.sh [SUITE...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(containerd podman docker)
need=()
for s in "${suites[@]}"; do
  case $s in
    containerd) command -v containerd >/dev/null || need+=(containerd) ;;
    podman) command -v podman >/dev/null || need+=(podman) ;;
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
[ -x "${STRATA_TEST_RUNTIME:-target/debug/strata}" ] || cargo build
[ -d bundles/hello/rootfs/bin ] || hack/mkrootfs.sh bundles/hello/rootfs

rc=0
for s in "${suites[@]}"; do
  unshare -m --propagation private sh -c \
    'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec bash tests/clients/'"$s"'.sh' || rc=1
done
exit $rc
