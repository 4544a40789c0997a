#!/usr/bin/env bash
# Runs every test: installs what is missing (hack/setup.sh), builds the busybox
# rootfs, checks formatting and lints, then runs unit and end-to-end tests.
# The end-to-end suite runs real containers and needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/setup.sh --tests
hack/mkrootfs.sh bundles/hello/rootfs
# The VM backend's guest kernels and QEMU, for tests/vm: Debian's stock kernel
# with its modules (fetched once), then the minimal one (built once; it stays
# the default). Both are cached in /var/cache/strata/vm.
hack/vm-assets.sh --stock >/dev/null
hack/vm-assets.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
cargo build -p strata-shim --example task-rpc
cargo test --workspace
# The release binary as hack/run-hello.sh and the benchmarks build it
# (statically linked) passes the end-to-end suite too.
hack/build-release.sh -q
STRATA_TEST_RUNTIME="$PWD/target/release/strata" cargo test -p strata-tests --test e2e
# The OCI runtime validation suite (runtime-tools), checked against the
# expectations in tests/conformance/expected.tsv.
tests/conformance/run.sh
# Differential testing against runc on generated configs (hack/differential.sh
# CASES SEED runs more).
hack/differential.sh "${STRATA_DIFF_CASES:-40}"
# containerd (stock runc shim), podman and Docker driving strata, each with
# private daemons in a private mount namespace.
tests/clients/run.sh
# A bounded fuzzing run of config handling (hack/fuzz.sh SECONDS runs it longer).
hack/fuzz.sh "${STRATA_FUZZ_SECONDS:-60}"
