#!/usr/bin/env bash
# Regenerates docs/ui-map.png and docs/ui-flows.png from a real run: the web UI test's
# cluster (a controller and two real agents in network namespaces, web -> db allowed,
# web -> cache and cache -> db denied), then `chromium --screenshot` of the service map
# and the flow table (crates/microseg/tests/ui.rs). Needs root (BPF, namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "screenshots.sh: run as root (network namespaces, eBPF)" >&2; exit 1; }
scripts/setup.sh

MICROSEG_UI_SCREENSHOTS="$PWD/docs" \
    cargo test -p microseg --test ui -- --exact the_map_flows_policies_and_nodes_with_real_agents \
    2> >(grep -v '^warning: microseg-dataplane@' >&2)
ls -l docs/ui-map.png docs/ui-flows.png
