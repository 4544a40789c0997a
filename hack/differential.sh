#!/usr/bin/env bash
# Differential testing against runc: CASES seeded random configs (default 40),
# from SEED (default 1), each run under strata and under runc, the reports of a
# probe inside compared (tests/differential/main.rs). In a private mount
# namespace with the pure cgroup v2 view, so runc never touches the host's v1
# hierarchies. Usage: hack/differential.sh [CASES] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh --peers
cargo build -p strata-cli
cargo test -p strata-tests --test differential --no-run
export STRATA_DIFF_CASES=${1:-40} STRATA_DIFF_SEED=${2:-1}
exec unshare -m --propagation private sh -c \
  'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec cargo test -p strata-tests --test differential -- --nocapture'
