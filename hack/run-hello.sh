#!/usr/bin/env bash
# The main job: build strata, prepare bundles/hello, run it as a container.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/setup.sh
hack/build-release.sh
hack/mkrootfs.sh bundles/hello/rootfs
exec ./target/release/strata run --bundle bundles/hello "hello-$$"
