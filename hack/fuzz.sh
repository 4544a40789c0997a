#!/usr/bin/env bash
# Fuzzes, with libFuzzer for SECONDS in all (default 60), on stable Rust (no
# nightly, no cargo-fuzz):
# - config.json handling (fuzz/fuzz_targets/config.rs: parsing, validation,
#   mount options, cgroup plan, device program, seccomp filter, process plan);
# - strata-fn's outside inputs (fuzz/fuzz_targets/fn_input.rs: HTTP/1.1 and
#   HTTP/2 connections served by its HTTP layer, function.toml).
# Corpora are seeded and kept in fuzz/corpus/TARGET between runs. Exits non-zero
# on a crash (a panic, an out-of-memory or a timeout), printing the crashing
# input's path.
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
cargo build --manifest-path fuzz/Cargo.toml --release --target "$target" --bin config --bin fn_input
unset RUSTFLAGS

# Seeds: the bundles' configs and the tests/hostile cases for config; sample
# requests and function.toml files (first byte: 0 = HTTP, 1 = function.toml)
# for fn_input.
mkdir -p fuzz/corpus/config fuzz/corpus/fn_input
for f in bundles/*/config.json; do
  cp "$f" "fuzz/corpus/config/seed-$(basename "$(dirname "$f")").json"
done
STRATA_FUZZ_SEEDS="$PWD/fuzz/corpus/config" cargo test --quiet -p strata-tests --test e2e hostile::write_fuzz_seeds >/dev/null
printf '\0POST /functions/echo/invoke?async=true HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n' \
  >fuzz/corpus/fn_input/seed-http
# HTTP/2 by prior knowledge: the preface, an empty SETTINGS frame, and a
# HEADERS frame (GET / over http, END_STREAM and END_HEADERS) on stream 1.
printf '\0PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x84\x86' \
  >fuzz/corpus/fn_input/seed-h2
printf '\0POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n' >fuzz/corpus/fn_input/seed-chunked
{ printf '\1'; sed 's|^rootfs = .*|rootfs = "rootfs"|; s|/bin/cat|cat|' bundles/echo/function.toml; } >fuzz/corpus/fn_input/seed-echo
printf '\1name = "f"\nrootfs = "rootfs"\ncommand = ["cat"]\n[limits]\ncpus = 0.5\n[pool]\nmax_warm = 1\n[retry]\nattempts = 2\n[trigger]\ndirectory = "/tmp"\n[env]\nA = "b"\n' \
  >fuzz/corpus/fn_input/seed-full

# fuzz TARGET SECONDS: runs one target; exits non-zero on a crash.
fuzz() {
  local name=$1 secs=$2
  local bin="fuzz/target/$target/release/$name" corpus="fuzz/corpus/$name" artifacts="fuzz/artifacts/$name"
  mkdir -p "$artifacts"
  # The targets make their scratch files under $TMPDIR.
  local scratch
  scratch=$(mktemp -d)
  local log="$scratch/fuzz.log"
  local before
  before=$(find "$artifacts" -type f | sort)
  local start=$SECONDS
  set +e
  TMPDIR="$scratch" "$bin" "$corpus" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 2>&1 | tee "$log" |
    sed -e '/^###### Recommended dictionary/,/^###### End of recommended dictionary/d' -e '/^#[0-9]/d' -e '/^INFO:/d' \
      -e '/^WARNING: Failed to find function "__sanitizer/d' -e '/^\tNEW_FUNC/d'
  local rc=${PIPESTATUS[0]}
  set -e
  local execs
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  echo "fuzz $name: ${execs:-?} executions in $((SECONDS - start))s, corpus $(find "$corpus" -type f | wc -l) inputs"
  if [ "$rc" -ne 0 ]; then
    local new
    new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort))
    echo "fuzz $name: libFuzzer exited with status $rc" >&2
    grep -A1 -m1 'panicked at' "$log" >&2 || true
    echo "fuzz $name: crashing input:" >&2
    for f in ${new:-$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //')}; do
      echo "  $f" >&2
    done
    echo "fuzz $name: reproduce with: $bin $(echo "$new" | head -1)" >&2
    rm -rf "$scratch"
    exit 1
  fi
  rm -rf "$scratch"
}

# Config handling gets two thirds of the time, strata-fn's inputs the rest.
fuzz config $((secs * 2 / 3 > 0 ? secs * 2 / 3 : 1))
fuzz fn_input $((secs / 3 > 0 ? secs / 3 : 1))
