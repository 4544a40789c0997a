#!/usr/bin/env bash
# The OCI runtime validation suite (opencontainers/runtime-tools, from
# ../shared/conformance/) against strata, or against the runtime named in
# $STRATA_TEST_RUNTIME (e.g. /usr/sbin/runc, to check the expectations).
#
# Usage: tests/conformance/run.sh [--record] [TEST...]
#   --record   rewrite the expectations of the runtime under test from this run
#              (tests/conformance/expected.tsv, and for runc the per-assertion
#              baseline tests/conformance/runc-assertions.tsv)
#
# Every file runs in a private mount namespace where /sys/fs/cgroup is the pure
# cgroup v2 hierarchy, with the runtime's state, the suite's bundles (TMPDIR) and
# its cgroups cleaned up after each file. One line per file, then
# "N passed, N failed, N skipped". Verdicts are checked against expected.tsv:
# an unexpected failure is red (exit 1), an unexpected pass is reported (XPASS)
# so the list can be tightened. Against strata, every assertion runc passes
# (runc-assertions.tsv) must pass too. A file of races.tsv, whose verdict
# depends on how two processes are scheduled, runs again when it fails, up to
# the number of tries named there.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
here=$repo/tests/conformance

record=0
if [ "${1:-}" = "--record" ]; then record=1; shift; fi
only=("$@")
if [ "$record" = 1 ] && [ ${#only[@]} -gt 0 ]; then
  echo "conformance: --record needs the whole suite" >&2; exit 2
fi

if [ "$(id -u)" != 0 ]; then
  echo "conformance: needs root (skipped)"; exit 0
fi

tarball=$(ls "$repo"/../shared/conformance/runtime-tools-*.tar.gz 2>/dev/null | head -1 || true)
if [ -z "$tarball" ]; then
  echo "conformance: skipped: no suite tarball in ../shared/conformance"
  exit 0
fi
command -v go >/dev/null || {
  echo "conformance: installing golang-go"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq golang-go >/dev/null
}

# The suite is built once per tarball, outside the clone.
cache=${STRATA_CONFORMANCE_CACHE:-/var/cache/strata-conformance}
key=$(sha256sum "$tarball" | cut -c1-16)
suite=$cache/$key/runtime-tools
if [ ! -f "$cache/$key/.built" ]; then
  echo "conformance: building the suite in $cache/$key"
  rm -rf "$cache/$key"
  mkdir -p "$cache/$key"
  tar -xzf "$tarball" -C "$cache/$key"
  (
    cd "$suite"
    export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOCACHE=$cache/$key/gocache
    CGO_ENABLED=0 go build -tags "netgo osusergo" -ldflags "-extldflags -static" -o runtimetest ./cmd/runtimetest
    for f in validation/*/*.go; do
      case "$f" in validation/util/*) continue ;; esac
      go build -o "${f%.go}.t" "$f"
    done
  )
  touch "$cache/$key/.built"
fi

runtime=${STRATA_TEST_RUNTIME:-$repo/target/debug/strata}
[ -x "$runtime" ] || { echo "conformance: $runtime is missing: build first" >&2; exit 1; }
rtname=$(basename "$runtime")
case "$rtname" in
  strata) column=2 ;;
  runc) column=3 ;;
  *) column=0 ;;
esac

work=$(mktemp -d /var/tmp/strata-conformance.XXXXXX)
cleanup_all() {
  # STRATA_CONFORMANCE_KEEP=DIR keeps every file's TAP output there.
  if [ -n "${STRATA_CONFORMANCE_KEEP:-}" ]; then mkdir -p "$STRATA_CONFORMANCE_KEEP" && cp "$work"/out/* "$STRATA_CONFORMANCE_KEEP"/ 2>/dev/null; fi
  rm -rf --one-file-system "$work"
}
trap cleanup_all EXIT
mkdir -p "$work/state" "$work/tmp" "$work/out"
# As /tmp: user-namespaced containers of the suite must reach their bundles.
chmod 755 "$work"; chmod 1777 "$work/tmp"
# The suite calls the runtime with no --root: a wrapper gives it one of its own.
cat > "$work/runtime" <<EOF
#!/bin/sh
exec "$runtime" --root "$work/state" "\$@"
EOF
chmod +x "$work/runtime"

# Per file, in a private mount namespace with the pure cgroup v2 view.
cat > "$work/one.sh" <<'EOF'
#!/bin/bash
# one.sh WORK SUITE TEST RUNTIME
work=$1 suite=$2 test=$3 runtime=$4
mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 99
before=$(find /sys/fs/cgroup -mindepth 1 -type d | sort)
cd "$suite"
TMPDIR=$work/tmp RUNTIME=$work/runtime timeout -k 5 180 "./validation/$test/$test.t" > "$work/out/$test.tap" 2>&1
rc=$?
# Whatever the file left: containers, cgroups it made, bundles.
for id in $("$work/runtime" list -q 2>/dev/null); do "$work/runtime" delete -f "$id" >/dev/null 2>&1; done
after=$(find /sys/fs/cgroup -mindepth 1 -type d | sort -r)
for d in $after; do
  grep -qxF "$d" <<<"$before" || rmdir "$d" 2>/dev/null
done
# A bundle may still carry mounts (a container the runtime failed to clean up):
# unmount them before removing anything, and never cross into another filesystem.
grep -F " $work/tmp/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done
rm -rf --one-file-system "$work/tmp"/* "$work/state"/*
exit $rc
EOF
chmod +x "$work/one.sh"

# The verdict of one TAP file: fail on a non-zero exit, a "not ok", or an
# "error" in a diagnostic block that belongs to no assertion (how these tests
# report a failure that ends them; other such blocks are only information).
verdict() { # rc file
  [ "$1" = 0 ] || { echo fail; return; }
  awk '
    /^not ok/ { bad = 1 }
    /^(ok|not ok) / { last = "test"; next }
    /^  ---/ { orphan = (last != "test"); inyaml = 1; next }
    /^  \.\.\./ { inyaml = 0; last = "yaml"; next }
    inyaml { if (orphan && $0 ~ /^    "error":/) bad = 1; next }
    /^TAP version/ { last = "header"; next }
    END { print bad ? "fail" : "pass" }
  ' "$2"
}

# Assertion names of a TAP file with their results ("ok"/"not ok"), SKIPs left out.
assertions() { # file
  sed -n -E 's/^(ok|not ok) [0-9]+ (- )?(.*)$/\1\t\3/p' "$1" | grep -v $'\t# SKIP' | sed -E 's/[0-9a-f]{8}-[0-9a-f-]{27}/ID/g' || true
}

tests=()
if [ ${#only[@]} -gt 0 ]; then
  tests=("${only[@]}")
else
  for f in "$suite"/validation/*/*.t; do tests+=("$(basename "$(dirname "$f")")"); done
fi

expected=$here/expected.tsv
baseline=$here/runc-assertions.tsv
exceptions=$here/assertion-exceptions.tsv
passed=0 failed=0 skipped=0 xpass=0 red=0
declare -A want reason
while IFS=$'\t' read -r name s r why; do
  [[ "$name" =~ ^# || -z "$name" ]] && continue
  case $column in 2) want[$name]=$s ;; 3) want[$name]=$r ;; esac
  reason[$name]=$why
done < "$expected"

# Files whose verdict depends on how two processes are scheduled (races.tsv):
# one of a few tries must pass.
declare -A tries
while IFS=$'\t' read -r name n _; do
  [[ "$name" =~ ^# || -z "$name" ]] && continue
  tries[$name]=$n
done < "$here/races.tsv"

new_expect=()
new_base=()
for t in "${tests[@]}"; do
  try=0
  while :; do
    try=$((try + 1))
    set +e
    unshare -m --propagation private "$work/one.sh" "$work" "$suite" "$t" "$work/runtime"
    rc=$?
    set -e
    v=$(verdict "$rc" "$work/out/$t.tap")
    [ "$v" = fail ] && [ "$try" -lt "${tries[$t]:-1}" ] || break
  done
  w=${want[$t]:-pass}
  line="$v"
  if [ "$try" -gt 1 ]; then line="$v (try $try of ${tries[$t]}: a scheduling race, see races.tsv)"; fi
  if [ "$v" = pass ]; then
    passed=$((passed + 1))
    if [ "$w" = fail ]; then xpass=$((xpass + 1)); line="pass (XPASS: expected to fail: ${reason[$t]:-})"; fi
  elif [ "$w" = fail ]; then
    skipped=$((skipped + 1)); line="skip (fails as expected: ${reason[$t]:-})"
  else
    failed=$((failed + 1)); red=1; line="FAIL (rc=$rc)"
    sed "s/^/    | /" "$work/out/$t.tap" | head -40 || true
  fi
  # Every assertion runc passes must pass here too, but in the reviewed
  # exceptions (assertion-exceptions.tsv).
  if [ "$column" = 2 ] && [ -f "$baseline" ] && ! grep -q "^$t	" "$exceptions"; then
    mine=$(assertions "$work/out/$t.tap" | sort)
    lost=()
    while IFS=$'\t' read -r bt res name; do
      [ "$bt" = "$t" ] && [ "$res" = ok ] || continue
      grep -qxF "ok	$name" <<<"$mine" || lost+=("$name")
    done < "$baseline"
    if [ ${#lost[@]} -gt 0 ]; then
      red=1; failed=$((failed + 1))
      line="$line; FAIL: ${#lost[@]} assertion(s) runc passes fail here, e.g. \"${lost[0]}\""
    fi
  fi
  printf '%-34s %s\n' "$t" "$line"
  new_expect+=("$t	$v")
  if [ "$record" = 1 ] && [ "$column" = 3 ]; then
    while IFS=$'\t' read -r res name; do new_base+=("$t	$res	$name"); done < <(assertions "$work/out/$t.tap")
  fi
done
echo "conformance ($rtname): $passed passed, $failed failed, $skipped skipped (expected failures), $xpass unexpected passes"

if [ "$record" = 1 ]; then
  tmp=$(mktemp)
  {
    grep '^#' "$expected" || true
    for e in "${new_expect[@]}"; do
      name=${e%%	*} v=${e#*	}
      old=$(awk -F'\t' -v n="$name" '$1 == n' "$expected")
      s=$(cut -f2 <<<"$old") r=$(cut -f3 <<<"$old") why=$(cut -f4 <<<"$old")
      case $column in 2) s=$v ;; 3) r=$v ;; esac
      printf '%s\t%s\t%s\t%s\n' "$name" "${s:-pass}" "${r:-pass}" "$why"
    done
  } > "$tmp"
  mv "$tmp" "$expected"
  if [ "$column" = 3 ]; then printf '%s\n' "${new_base[@]}" > "$baseline"; fi
  echo "conformance: recorded $rtname's results"
  exit 0
fi
exit $red
