#!/usr/bin/env bash
# Installs what building and testing Strata needs, from Debian, when missing.
# Usage: hack/setup.sh [--peers] [--tests]
#   --peers    also runc, crun and hyperfine, for comparisons
#   --tests    also what the test suites need: protoc (the CRI client's
#              bindings), systemd and dbus (tests/systemd and tests/cri boot a
#              private systemd; the host's init is untouched), containerd and
#              the CNI plugins, uidmap (newuidmap for tests/rootless), curl
#              (an outside HTTP/2 client for strata-fn's TLS test), nats-server
#              (JetStream, for strata-fn's cluster test)
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(gcc)
if [ ! -x /bin/busybox ] || [[ "$(ldd /bin/busybox 2>&1 || true)" != *"not a dynamic"* ]]; then
  need+=(busybox-static)
fi
# seccomp filters are compiled with libseccomp, linked statically (.cargo/config.toml).
[ -f "/usr/lib/$(uname -m)-linux-gnu/libseccomp.a" ] || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
for arg in "$@"; do
  case $arg in
  --peers)
    command -v runc >/dev/null || need+=(runc)
    command -v crun >/dev/null || need+=(crun)
    command -v hyperfine >/dev/null || need+=(hyperfine)
    [ -x /usr/bin/time ] || need+=(time)
    ;;
  --tests)
    [ -x /lib/systemd/systemd ] || need+=(systemd)
    [ -x /usr/bin/dbus-daemon ] || need+=(dbus)
    command -v containerd >/dev/null || need+=(containerd)
    [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
    command -v protoc >/dev/null || need+=(protobuf-compiler)
    [ -x /usr/bin/newuidmap ] || need+=(uidmap)
    command -v curl >/dev/null || need+=(curl)
    command -v nats-server >/dev/null || need+=(nats-server)
    ;;
  *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "setup: cargo (Rust) is required" >&2
  exit 1
fi
