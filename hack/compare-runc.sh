#!/usr/bin/env bash
# Runs the end-to-end suite against Debian's runc, to validate the suite's checks,
# in a private mount namespace with a pure cgroup v2 view (so runc never touches the
# host's v1 hierarchies). Checks that runc 1.1.5 cannot pass say why and skip.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh --peers
cargo build --workspace
exec unshare -m --propagation private sh -c \
  'mount -t cgroup2 cgroup2 /sys/fs/cgroup && STRATA_TEST_RUNTIME=/usr/sbin/runc cargo test -p strata-tests -- "$@"' sh "$@"
