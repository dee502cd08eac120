#!/usr/bin/env bash
# Installs what building and testing microseg needs, when it is missing:
# Debian packages, the nightly toolchain with rust-src (for the eBPF target), bpf-linker,
# and a bpffs at /sys/fs/bpf. Safe to run again: it only installs what is absent.
set -euo pipefail

log() { echo "setup: $*" >&2; }

# postgresql: the controller tests start their own throw-away server from its binaries.
# clickhouse-server: likewise for the flow store's tests (microseg-flowstore).
# prometheus (with promtool) and chromium: the metrics and web UI end-to-end tests.
# gcc: the linker Rust uses, and the C parts of ring and mimalloc; g++: libFuzzer (scripts/fuzz.sh).
packages=(gcc g++ bpftool iproute2 iperf3 socat iputils-ping util-linux protobuf-compiler postgresql clickhouse-server prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to nightly (needed for -Z build-std=core on bpfel-unknown-none)"
  rustup component add rust-src --toolchain nightly
fi
# 0.10.0 loads the nightly toolchain's own LLVM: no system LLVM needed.
if ! command -v bpf-linker >/dev/null 2>&1; then
  log "installing bpf-linker 0.10.0 (about 2 minutes)"
  cargo install bpf-linker@0.10.0 --locked
fi

if ! mountpoint -q /sys/fs/bpf; then
  log "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
