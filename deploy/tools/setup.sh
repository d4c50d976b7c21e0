#!/usr/bin/env bash
# Installs what deploy/check.sh checks with, once, under a cache directory (nothing
# system-wide, no service started), and prints where:
#
#   - a Python venv with helm-python-sdk (the Helm Go SDK: lint and render, no helm
#     binary), kubernetes-validate (Kubernetes' JSON schemas, offline) and promql-parser;
#   - promtool, from the system, else copied out of Debian's `prometheus` package.
#
# Exits non-zero when anything cannot be installed: a check that cannot run is a failure.
set -euo pipefail
dir="${DEPLOY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-deploy-tools}"
mkdir -p "$dir"
cd "$dir"

packages=(
    "helm-python-sdk==0.2.2"
    "kubernetes-validate==1.37.0"
    "promql-parser==0.12.0"
    "pyyaml==6.0.2"
)

log() { printf '[deploy tools] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3-venv"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
if [ ! -x venv/bin/python ]; then
    log "creating a venv in $dir"
    python3 -m venv venv
fi
# The list installed last, so that a changed pin installs again.
wanted="${packages[*]}"
if [ "$(cat venv/installed 2>/dev/null)" != "$wanted" ]; then
    log "installing $wanted"
    venv/bin/pip install --quiet --disable-pip-version-check "${packages[@]}"
    echo "$wanted" >venv/installed
fi
venv/bin/python -c 'import helm_python, kubernetes_validate, promql_parser, yaml'

mkdir -p bin
if [ ! -x bin/promtool ]; then
    if command -v promtool >/dev/null 2>&1; then
        ln -sf "$(command -v promtool)" bin/promtool
    else
        log "copying promtool out of Debian's prometheus package"
        work="$(mktemp -d)"
        # apt's download sandbox runs as another user, which must write here.
        chmod 777 "$work"
        if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
            as_root apt-get update -qq
            (cd "$work" && apt-get download prometheus)
        fi
        dpkg-deb -x "$work"/prometheus_*.deb "$work/extracted"
        cp "$work/extracted/usr/bin/promtool" bin/promtool
        rm -rf "$work"
    fi
fi
bin/promtool --version >/dev/null

echo "$dir"
