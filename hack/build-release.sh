#!/usr/bin/env bash
# Builds the release `strata` (target/release/strata) and
# `containerd-shim-strata-v2`, statically linked: each container operation is a
# short run of strata, and containerd runs the shim binary twice per task
# (start, and delete once the daemon is gone). A static binary spends no time
# in the dynamic loader (loading libc, libm and libgcc_s and binding their
# symbols: about 0.3 ms of every run on a 2-core VM), and an idle shim keeps
# about 600 KiB less resident (no libc.so and ld.so pages beside its own).
# Cargo cannot link statically for the host target without --target, as the
# flag would reach proc-macro crates too; `cargo rustc` gives it to the
# binary alone. Extra arguments go to cargo (-q, say).
#
# Each binary is linked with the functions its usual operations call placed
# first, in the order they are first called (hack/layout/BINARY.order, made by
# hack/layout/profile.sh; hack/layout/cc does the linking). The kernel maps
# code 64 KiB around each page that faults, so the code a `strata create` or
# an idle shim touches would otherwise bring in most of the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
for bin in strata:strata-cli containerd-shim-strata-v2:strata-shim; do
  name=${bin%%:*}
  profile=$PWD/hack/layout/$name.order
  layout=(-C "linker=$PWD/hack/layout/cc" -C linker-flavor=gcc
    -C "link-arg=-Wl,--strata-layout=$profile:$(cat "$profile" hack/layout/cc | sha256sum | cut -c1-16)")
  cargo rustc --release -p "${bin#*:}" --bin "$name" "$@" -- -C target-feature=+crt-static "${layout[@]}"
  # What the profile still names: a profile older than large code changes
  # lays out less (hack/layout/profile.sh writes a new one).
  # (Cargo keeps one artifact per set of flags and links the one it used to
  # target/release.)
  rm -f "target/release/$name.layout"
  art=$(find target/release/deps -maxdepth 1 -samefile "target/release/$name" | head -1)
  [ -f "$art.layout" ] || { echo "build-release: $name was linked without its layout (not with lld)" >&2; continue; }
  cp "$art.layout" "target/release/$name.layout"
  read -r found of total _ <"target/release/$name.layout"
  if [ $((found * 10)) -lt $((total * 9)) ]; then
    echo "build-release: only $found of $total functions of hack/layout/$name.order are in $name; run hack/layout/profile.sh" >&2
  fi
done
