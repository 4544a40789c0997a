#!/usr/bin/env bash
# Builds the release `strata` (target/release/strata), statically linked:
# each container operation is a short run of the binary, and a static one
# spends no time in the dynamic loader (loading libc, libm and libgcc_s and
# binding their symbols: about 0.3 ms of every run on a 2-core VM).
# Cargo cannot link statically for the host target without --target, as the
# flag would reach proc-macro crates too; `cargo rustc` gives it to the
# binary alone. Extra arguments go to cargo (-q, say).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo rustc --release -p strata-cli --bin strata "$@" -- -C target-feature=+crt-static
