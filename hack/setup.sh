#!/usr/bin/env bash
# Installs what building and testing Strata needs, from Debian, when missing.
# Usage: hack/setup.sh [--peers]   (--peers also installs runc and crun for comparisons)
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(gcc)
if [ ! -x /bin/busybox ] || [[ "$(ldd /bin/busybox 2>&1 || true)" != *"not a dynamic"* ]]; then
  need+=(busybox-static)
fi
# seccomp filters are compiled with libseccomp, linked statically (.cargo/config.toml).
[ -f "/usr/lib/$(uname -m)-linux-gnu/libseccomp.a" ] || need+=(libseccomp-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ "${1:-}" = "--peers" ]; then
  command -v runc >/dev/null || need+=(runc)
  command -v crun >/dev/null || need+=(crun)
  command -v hyperfine >/dev/null || need+=(hyperfine)
  [ -x /usr/bin/time ] || need+=(time)
fi
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
