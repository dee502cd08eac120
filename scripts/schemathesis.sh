#!/usr/bin/env bash
# Fuzzes the controller's REST API from the OpenAPI document it serves, with schemathesis
# (crates/microseg-controller/tests/rest_fuzz.rs runs it). Installs the pinned version
# into a virtualenv under target/ when it is absent, then runs it against a controller.
#
#   scripts/schemathesis.sh URL TOKEN [extra `st run` options]
#
# URL: the controller's base URL (http://127.0.0.1:PORT); TOKEN: its bearer token.
# Environment: ST_MAX_EXAMPLES (per operation, default 50), ST_SEED (default 1),
# ST_REPORTS (report formats, default junit; har lists every request and answer),
# ST_REPORT_DIR (where they go; default target/schemathesis-report).
# Exits non-zero when any check fails; its output is schemathesis' report.
set -euo pipefail
cd "$(dirname "$0")/.."

version=4.32.5
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
st="$venv/bin/st"

if ! "$st" --version 2>/dev/null | grep -qF "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

if [ $# -lt 2 ]; then
    echo "usage: $0 URL TOKEN [st run options]" >&2
    exit 2
fi
url=$1
token=$2
shift 2

# Every check runs (positive_data_acceptance only where the document can hold it):
# scripts/schemathesis.toml says which and why.
report_dir=${ST_REPORT_DIR:-target/schemathesis-report}
exec "$st" --config-file scripts/schemathesis.toml run "$url/v1/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $token" \
    --max-examples "${ST_MAX_EXAMPLES:-50}" \
    --seed "${ST_SEED:-1}" \
    --generation-database none \
    --max-failures 20 \
    --request-timeout 30 \
    --workers 1 \
    --no-color \
    --report "${ST_REPORTS:-junit}" --report-dir "$report_dir" \
    "$@"
