#!/usr/bin/env bash
# A small schemathesis run of the integration API against Protocol/openapi.json: a real rapportd
# (release build) over HTTPS on loopback with an admin key; fails on any 5xx, an undocumented
# status or content type, or a body that breaks the document's schema.
# Usage: scripts/api-fuzz.sh [EXAMPLES]   (schemathesis from PyPI: pip install schemathesis)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
bin="${RAPPORT_BIN:-$(swift build -c release --show-bin-path)}"
work="$(mktemp -d)"
server=""
cleanup() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

"$bin/rapportd" --data "$work/data" --port 0 --api 127.0.0.1:0 --api-rate 100000 --rules-interval 0 \
    --log-level warning >"$work/banner" 2>"$work/log" &
server=$!
for _ in $(seq 1 100); do grep -q "integration API at" "$work/banner" 2>/dev/null && break; sleep 0.1; done
port="$(grep -o 'integration API at https://127.0.0.1:[0-9]*' "$work/banner" | grep -o '[0-9]*$')"
key="$("$bin/rapportctl" --data "$work/data" apikey create --tenant dev --name fuzz --role admin --json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')"
# A few records, so reads and writes of existing ones are reached too.
for name in Acme Globex Initech; do
    curl -sS -o /dev/null --cacert "$work/data/tls/ca.pem" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
        -d "{\"fields\": {\"name\": \"$name\", \"owner\": \"dev@example.com\"}}" "https://127.0.0.1:$port/v1/records/account"
done
schemathesis run Protocol/openapi.json --url "https://127.0.0.1:$port" --tls-verify "$work/data/tls/ca.pem" \
    -H "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --max-examples "$examples" --seed 14
kill -0 "$server"  # still serving after all of it
echo "api fuzz: no 5xx, no schema violation, server still up"
