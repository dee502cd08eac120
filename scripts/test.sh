#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite: formatting, lints,
# unit tests, kernel tests through BPF_PROG_TEST_RUN, and end-to-end tests with real
# traffic between network namespaces. Needs root (BPF, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# aya-build reports the nested eBPF build through cargo warnings: keep the log readable.
quiet() { "$@" 2> >(grep -v '^warning: microseg-dataplane@' >&2); }

cargo fmt --all -- --check
quiet cargo clippy --workspace --all-targets -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
quiet cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

# A bounded fuzzing run of the policy parser (fuzz/, its own target directory under
# target/): 12 s a target, 60-90 s with the build. MICROSEG_FUZZ_SECONDS=N for longer.
set +e
MICROSEG_FUZZ_SECONDS=${MICROSEG_FUZZ_SECONDS:-36} scripts/fuzz.sh
fuzz_status=$?
set -e
((status != 0)) || status=$fuzz_status
exit "$status"
