#!/usr/bin/env bash
# Long runs of the chaos suite (tests/faults): ROUNDS rounds (default 100) of
# PARALLEL containers each (default 6), killed or stopped at seeded random
# moments, from SEED (default 1). With STRATA_TEST_RUNTIME (runc, say) it runs
# against that runtime, in a pure cgroup v2 view so runc never touches the
# host's v1 hierarchies. Usage: hack/chaos.sh [ROUNDS] [SEED] [PARALLEL]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -p strata-cli
cargo test -p strata-tests --test faults --no-run
export STRATA_FAULTS_ROUNDS=${1:-100} STRATA_FAULTS_SEED=${2:-1} STRATA_FAULTS_PARALLEL=${3:-6}
exec unshare -m --propagation private sh -c \
  'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec cargo test -p strata-tests --test faults -- --nocapture --test-threads 1'
