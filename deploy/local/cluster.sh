#!/usr/bin/env bash
# A complete local Herald cluster on loopback: its own NATS and Redis on non-default
# ports, two routers and two gateways (127.0.0.1:3001 and :3002).
#
#   deploy/local/cluster.sh up     build, start everything, wait until ready, print URLs
#   deploy/local/cluster.sh down   stop exactly what `up` started
#   deploy/local/cluster.sh status show what is running
#
# Ports can be changed with NATS_PORT, REDIS_PORT, GATEWAY_PORTS ("3001 3002") and
# ROUTER_PORTS ("3101 3102", health probes) and API_PORTS ("3201 3202", the routers' gRPC
# server API). Logs and the pid file live in deploy/local/run/. LOCAL_CLUSTER_BINARY runs a
# binary already built instead of building the release one (the test script uses its debug
# build); it has no HERALD_ prefix, since the nodes read every HERALD_ variable as a setting.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
run="$here/run"
pids="$run/cluster.pids"

NATS_PORT="${NATS_PORT:-14222}"
REDIS_PORT="${REDIS_PORT:-16379}"
GATEWAY_PORTS="${GATEWAY_PORTS:-3001 3002}"
ROUTER_PORTS="${ROUTER_PORTS:-3101 3102}"
API_PORTS="${API_PORTS:-3201 3202}"
HERALD="${LOCAL_CLUSTER_BINARY:-$root/target/release/herald}"

find_bin() {
    command -v "$1" 2>/dev/null && return
    for dir in /usr/sbin /usr/bin /usr/local/bin; do
        [ -x "$dir/$1" ] && { echo "$dir/$1"; return; }
    done
    echo "error: $1 not found (install it, e.g. apt-get install $1)" >&2
    exit 1
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# start NAME COMMAND...: runs it in the background, logging to run/NAME.log.
start() {
    local name="$1"; shift
    "$@" >"$run/$name.log" 2>&1 &
    echo "$! $name" >>"$pids"
}

wait_tcp() {
    local port="$1" name="$2"
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: $name did not listen on port $port; see $run/$name.log" >&2
    return 1
}

wait_ready() {
    local port="$1" name="$2"
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3 &&
            head -c 12 <&3 | grep -q ' 200') 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "error: $name on port $port not ready; see $run/$name.log" >&2
    return 1
}

up() {
    if [ -f "$pids" ]; then
        while read -r pid name; do
            if alive "$pid"; then
                echo "already running ($name, pid $pid); run '$0 down' first" >&2
                exit 1
            fi
        done <"$pids"
        rm -f "$pids"
    fi
    mkdir -p "$run"
    local nats redis
    nats="$(find_bin nats-server)"
    redis="$(find_bin redis-server)"
    if [ -z "${LOCAL_CLUSTER_BINARY:-}" ]; then
        echo "building herald (release)..."
        (cd "$root" && cargo build --release --quiet --bin herald)
    fi
    : >"$pids"
    trap 'echo "start failed; stopping what was started" >&2; down' ERR

    start nats "$nats" -a 127.0.0.1 -p "$NATS_PORT"
    start redis "$redis" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    wait_tcp "$NATS_PORT" nats
    wait_tcp "$REDIS_PORT" redis
    local nats_url="nats://127.0.0.1:$NATS_PORT" redis_url="redis://127.0.0.1:$REDIS_PORT"
    local i=0
    local api_ports=($API_PORTS)
    for port in $ROUTER_PORTS; do
        i=$((i + 1))
        start "router-$i" "$HERALD" router --listen "127.0.0.1:$port" --nats "$nats_url" \
            --redis "$redis_url" --node-id "router-$i" \
            --api-listen "127.0.0.1:${api_ports[$((i - 1))]}"
    done
    i=0
    for port in $GATEWAY_PORTS; do
        i=$((i + 1))
        start "gateway-$i" "$HERALD" gateway --listen "127.0.0.1:$port" --nats "$nats_url" \
            --node-id "gateway-$i"
    done
    i=0
    for port in $ROUTER_PORTS; do i=$((i + 1)); wait_ready "$port" "router-$i"; done
    i=0
    for port in $GATEWAY_PORTS; do i=$((i + 1)); wait_ready "$port" "gateway-$i"; done
    trap - ERR

    echo "Herald local cluster is up."
    echo "  NATS:     $nats_url"
    echo "  Redis:    $redis_url"
    for port in $GATEWAY_PORTS; do
        echo "  gateway:  http://127.0.0.1:$port  (native WebSocket: ws://127.0.0.1:$port/connection/websocket)"
    done
    for port in $ROUTER_PORTS; do
        echo "  router:   http://127.0.0.1:$port/readyz"
    done
    for port in $API_PORTS; do
        echo "  API:      grpc://127.0.0.1:$port  (gRPC server API, docs/server-api.md)"
    done
    echo "  logs:     $run/*.log"
    echo "Stop it with: $0 down"
}

down() {
    [ -f "$pids" ] || { echo "nothing to stop (no $pids)"; return 0; }
    # Nodes first, servers last: reverse start order.
    tac "$pids" | while read -r pid name; do
        if alive "$pid"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && kill -9 "$pid" 2>/dev/null || true
            echo "stopped $name (pid $pid)"
        fi
    done
    rm -f "$pids"
}

status() {
    [ -f "$pids" ] || { echo "not running"; return 0; }
    while read -r pid name; do
        if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done <"$pids"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
