#!/usr/bin/env bash
# Checks deploy/local/cluster.sh: `up` brings every node to ready, `down` stops exactly
# what it started. Uses other ports than the defaults, so a running cluster is not touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# LOCAL_CLUSTER_BINARY (a binary already built) is passed on to cluster.sh.
export NATS_PORT=24222 REDIS_PORT=26379 GATEWAY_PORTS="23001 23002" ROUTER_PORTS="23101 23102" API_PORTS="23201 23202"
"$here/cluster.sh" up
pids="$(awk '{print $1}' "$here/run/cluster.pids")"
"$here/cluster.sh" down
for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then
        echo "FAIL: pid $pid still running after down" >&2
        exit 1
    fi
done
[ ! -f "$here/run/cluster.pids" ] || { echo "FAIL: pid file left behind" >&2; exit 1; }
echo "local cluster script: ok"
