#!/bin/bash
# Where an established packet's time goes (docs/PERFORMANCE.md section 13): builds the
# data-plane bench at HEAD ("base") and once per variant patch, then runs them alternating
# (base, v1, base, v2, ...) for ROUNDS rounds, each run measuring the established ACK and the
# LRU lookup reference in the same process.
#
#   scripts/ab/breakdown.sh build OUT [VARIANT...]   # OUT/base/bench, OUT/VARIANT/bench
#   sudo ROUNDS=3 scripts/ab/breakdown.sh run OUT [VARIANT...] > results.tsv
#
# jiffies-clock (the clock read as jiffies, a price only) is not in the default list.
# Output of run: variant, round, scenario's rule count, established ns, LRU reference ns,
# 1-minute load before the run.
set -eu
cmd=$1 OUT=$(realpath -m "$2"); shift 2
REPO=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
VARIANTS=${*:-no-stat-counters no-session-counter-writes no-rule-counters no-tcp-advance const-time min-parse established-lookup-only}
BENCH_ARGS=${BENCH_ARGS:---quick --rules 1000}
case $cmd in
build)
  # A worktree of HEAD (uncommitted changes are not included); WT= names an existing one.
  if [ -z "${WT:-}" ]; then
    WT=$(mktemp -d)
    trap 'git -C "$REPO" worktree remove --force "$WT"' EXIT
    git -C "$REPO" worktree add -q --detach "$WT" HEAD
  fi
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/variants}
  build() {
    (cd "$WT" && cargo build --release -q -p microseg-dataplane --example bench)
    mkdir -p "$OUT/$1" && cp "$CARGO_TARGET_DIR/release/examples/bench" "$OUT/$1/"
  }
  build base
  for v in $VARIANTS; do
    git -C "$WT" apply "$REPO/scripts/ab/variants/$v.patch"
    build "$v"
    git -C "$WT" checkout -q .
  done
  ;;
run)
  # Each scenario's summary line "established / LRU lookup reference, SCENARIO: E / L ns".
  one() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    "$OUT/$1/bench" $BENCH_ARGS | grep '^established / LRU lookup reference, ' |
      sed -E "s#^[^,]*, ([0-9]+) [^:]*: ([0-9.]+) / ([0-9.]+) ns.*#$1\t$2\t\1\t\2\t\3\t$load#"
  }
  for r in $(seq 1 "${ROUNDS:-3}"); do
    for v in $VARIANTS; do
      one base "$r"
      one "$v" "$r"
    done
  done
  ;;
*) echo "usage: $0 build|run OUT [VARIANT...]" >&2; exit 2 ;;
esac
