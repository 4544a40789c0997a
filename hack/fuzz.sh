#!/usr/bin/env bash
# Fuzzes config.json handling (fuzz/fuzz_targets/config.rs: parsing, validation,
# mount options, cgroup plan, device program, seccomp filter, process plan) with
# libFuzzer for SECONDS (default 60), on stable Rust: no nightly, no cargo-fuzz.
# The corpus is seeded from the bundles' configs and the tests/hostile cases, and
# kept in fuzz/corpus/config between runs. Exits non-zero on a crash (a panic, an
# out-of-memory or a timeout), printing the crashing input's path.
# Usage: hack/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
hack/setup.sh
# libfuzzer-sys builds libFuzzer itself, which is C++.
if ! command -v c++ >/dev/null; then
  echo "fuzz: installing g++"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# What `cargo fuzz build -s none` does, which works on stable: SanitizerCoverage
# instrumentation for libFuzzer, debug assertions and overflow checks on. The
# explicit --target keeps these flags off build scripts and proc macros, which are
# not linked with libFuzzer.
target=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
cargo build --manifest-path fuzz/Cargo.toml --release --target "$target" --bin config
unset RUSTFLAGS
bin="fuzz/target/$target/release/config"

corpus=fuzz/corpus/config
artifacts=fuzz/artifacts/config
mkdir -p "$corpus" "$artifacts"
for f in bundles/*/config.json; do
  cp "$f" "$corpus/seed-$(basename "$(dirname "$f")").json"
done
STRATA_FUZZ_SEEDS="$PWD/$corpus" cargo test --quiet -p strata-tests --test e2e hostile::write_fuzz_seeds >/dev/null

# The target makes its bundle under $TMPDIR.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
log="$scratch/fuzz.log"
before=$(find "$artifacts" -type f | sort)
start=$SECONDS
set +e
TMPDIR="$scratch" "$bin" "$corpus" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | tee "$log" |
  sed -e '/^###### Recommended dictionary/,/^###### End of recommended dictionary/d' -e '/^#[0-9]/d' -e '/^INFO:/d' \
    -e '/^WARNING: Failed to find function "__sanitizer/d' -e '/^\tNEW_FUNC/d'
rc=${PIPESTATUS[0]}
set -e
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
echo "fuzz: ${execs:-?} executions in $((SECONDS - start))s, corpus $(find "$corpus" -type f | wc -l) inputs"
if [ "$rc" -ne 0 ]; then
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort))
  echo "fuzz: libFuzzer exited with status $rc" >&2
  grep -A1 -m1 'panicked at' "$log" >&2 || true
  echo "fuzz: crashing input:" >&2
  for f in ${new:-$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //')}; do
    echo "  $f" >&2
  done
  echo "fuzz: reproduce with: $bin $(echo "$new" | head -1)" >&2
  exit 1
fi
