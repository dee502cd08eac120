#!/usr/bin/env bash
# Coverage-guided fuzzing of the policy parser, validator and compiler (fuzz/: cargo fuzz,
# libFuzzer, the nightly toolchain). Runs each target for a bounded time and fails on any
# crash; the crashing input is left under target/fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                           # every target, 60 s in all
#   MICROSEG_FUZZ_SECONDS=3600 scripts/fuzz.sh  # longer
#   scripts/fuzz.sh policy                    # only the named targets
#
# What a run finds stays in target/fuzz/corpus/<target> (the next run starts from it); the
# seeds kept in the repository are fuzz/corpus/<target>. Reproduce a crash with
#   cargo +nightly fuzz run --fuzz-dir fuzz --target-dir target/fuzz -s none -a TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "fuzz: $*" >&2; }

cargo_fuzz_version=0.13.2
if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
  log "installing cargo-fuzz $cargo_fuzz_version (about 1 minute)"
  cargo install "cargo-fuzz@$cargo_fuzz_version" --locked
fi

total=${MICROSEG_FUZZ_SECONDS:-60}
if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
per=$((total / ${#targets[@]}))
((per >= 1)) || per=1

# No sanitizer: the parser and compiler hold no unsafe code, and without ASan every
# second fuzzes about twice the inputs. Debug assertions stay on (overflow checks).
flags=(--fuzz-dir fuzz --target-dir target/fuzz -s none -a)
if (($#)); then
  for t in "${targets[@]}"; do cargo +nightly fuzz build "${flags[@]}" "$t"; done
else
  cargo +nightly fuzz build "${flags[@]}"
fi

for t in "${targets[@]}"; do
  corpus=target/fuzz/corpus/$t
  artifacts=target/fuzz/artifacts/$t
  mkdir -p "$corpus" "$artifacts"
  out=$(mktemp)
  set +e
  # New inputs go to the first directory (under target/); the repository's seeds are read only.
  cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" "fuzz/corpus/$t" -- \
    -max_total_time="$per" -dict=fuzz/policy.dict -artifact_prefix="$artifacts/" \
    -timeout=10 -rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 >"$out" 2>&1
  status=$?
  set -e
  if ((status != 0)); then
    # The panic's message (or libFuzzer's report of a timeout or an out-of-memory) and
    # where the input went.
    grep -m1 -A2 'panicked' "$out" >&2 || tail -n 30 "$out" >&2
    grep 'Test unit written' "$out" >&2 || true
    rm -f "$out"
    log "$t: FAILED (exit $status); input in $artifacts/"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out")
  cov=$(grep -o 'cov: [0-9]*' "$out" | tail -n 1)
  rm -f "$out"
  echo "fuzz: $t: ${runs:-?} inputs in ${per}s (${rate:-?}/s), $cov, $(ls "$corpus" | wc -l) in corpus, 0 crashes"
done
