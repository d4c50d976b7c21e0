#!/usr/bin/env bash
# Runs the example backend's test against the herald binary in EXAMPLE_HERALD_BINARY (default:
# the debug build), in a virtualenv of its own with the pinned requirements.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
EXAMPLE_HERALD_BINARY="${EXAMPLE_HERALD_BINARY:-$PWD/../../target/debug/herald}" .venv/bin/python test_example.py
