#!/usr/bin/env bash
# Runs Herald's whole test suite on a fresh machine.
#
# Installs what the tests need and is missing (nats-server, redis-server, Node.js and
# Python's venv from the distribution's packages; the pinned socket.io-client from npm and
# python-socketio from PyPI; cargo-nextest), then checks formatting and lints, and runs
# every test. Tests start their own nats-server and redis-server processes on free ports; nothing
# needs to be running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
have nats-server || missing+=(nats-server)
have redis-server || missing+=(redis-server)
# The Redis topology tests (Sentinel, Cluster) set up and inspect servers with redis-cli.
have redis-cli || missing+=(redis-tools)
have node || missing+=(nodejs)
have npm || missing+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    # The packages start system services on the default ports; the tests do not use them.
fi

log "Socket.IO test clients (npm ci in clients/js, pip in clients/python/.venv)"
npm ci --prefix clients/js --no-audit --no-fund --loglevel=error
if [ ! -x clients/python/.venv/bin/python ]; then
    python3 -m venv clients/python/.venv
fi
clients/python/.venv/bin/pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "tests"
cargo nextest run --workspace --locked "$@"

# With the binary the tests just built: a release build of its own would cost CI as much
# as the tests.
log "example backend (examples/chat-backend)"
EXAMPLE_HERALD_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/debug/herald" bash examples/chat-backend/test.sh

log "k6 scripts: a short run of each against a standalone node (loadtest/k6/smoke.sh)"
bash loadtest/k6/smoke.sh "${CARGO_TARGET_DIR:-$PWD/target}/debug/herald"

log "local cluster script"
LOCAL_CLUSTER_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/debug/herald" bash deploy/local/smoke.sh

log "deploy checks (Helm chart, dashboards, alert rules, /metrics)"
bash deploy/check.sh
