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
quiet cargo test --workspace
