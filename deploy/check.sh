#!/usr/bin/env bash
# Validates what operators deploy, with the project's own checks (deploy/tools/), which
# deploy/tools/setup.sh installs on first use under ~/.cache/herald-deploy-tools (the Helm
# Go SDK, Kubernetes' JSON schemas and a PromQL parser from PyPI; promtool from Debian's
# prometheus package):
#
#   1. the alert rules pass `promtool check rules` and their unit tests (`promtool test
#      rules`: alerts keep releases apart), docker compose's Prometheus config
#      `promtool check config`, and the compose file parses and names files that exist;
#   2. the Helm chart lints, renders and passes the Kubernetes schemas, with default values
#      and with every values file in deploy/helm/herald/ci/ (all features on, an existing
#      Secret): deploy/tools/chart.py;
#   3. a real cluster's /metrics (two gateways and a router after traffic, scraped by the
#      metrics integration test) passes `promtool check metrics` (parser and linter);
#   4. the dashboards are valid, and every metric they query is in that scrape:
#      deploy/tools/dashboards.py.
#
# A check that cannot run (its tools cannot be installed) fails the script. (No HERALD_
# prefix on these settings: the nodes the metrics test starts inherit the environment and
# refuse settings they do not know.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

log() { printf '\n==> %s\n' "$*"; }

log "tools (deploy/tools/setup.sh)"
tools="$(bash deploy/tools/setup.sh)"
python="$tools/venv/bin/python"
promtool="$tools/bin/promtool"

log "alert rules (promtool check rules; test rules: two releases in one Prometheus)"
"$promtool" check rules deploy/prometheus/alerts.yml
"$promtool" test rules deploy/prometheus/alerts.test.yml

log "Prometheus config of docker compose (promtool check config)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s|/etc/prometheus/alerts.yml|$root/deploy/prometheus/alerts.yml|" \
    deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
"$promtool" check config "$work/prometheus.yml"

log "docker compose file (parses; every mounted file and the build context exist)"
"$python" - deploy/docker-compose.yml <<'PY'
import os, sys, yaml
path = sys.argv[1]
base = os.path.dirname(path)
compose = yaml.safe_load(open(path))
problems = []
for name, service in compose["services"].items():
    if not service.get("image") and not service.get("build"):
        problems.append(f"{name}: neither image nor build")
    build = service.get("build")
    if build and not os.path.isfile(os.path.join(base, build["context"], build["dockerfile"])):
        problems.append(f"{name}: no Dockerfile at {build}")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith(".") and not os.path.exists(os.path.join(base, source)):
            problems.append(f"{name}: {source} does not exist")
for problem in problems:
    print("FAIL", problem)
print(f"{len(compose['services'])} services checked")
sys.exit(1 if problems else 0)
PY

log "Helm chart (default values and deploy/helm/herald/ci/*.yaml)"
"$python" deploy/tools/chart.py deploy/helm/herald

log "a live cluster's /metrics (the metrics integration test scrapes it)"
scrapes="$work/scrapes"
# `--workspace`, as the test script builds: the same features, so nothing is rebuilt.
METRICS_SCRAPE_DIR="$scrapes" cargo nextest run --workspace --locked \
    --no-fail-fast -E 'binary(it) & test(a_scrape_after_traffic_shows_the_counters_moved)'
scraped=("$scrapes"/*.prom)
[ -e "${scraped[0]}" ] || { echo "FAIL: the metrics test wrote no scrape"; exit 1; }
for scrape in "${scraped[@]}"; do
    "$promtool" check metrics <"$scrape"
    echo "$(basename "$scrape"): $(grep -c '^# TYPE' "$scrape") metric families, ok"
done

log "Grafana dashboards against that scrape"
# With the k6 series of the dashboards' load-test row (loadtest/k6/remote-write.prom).
"$python" deploy/tools/dashboards.py deploy/grafana/dashboards "${scraped[@]}" \
    loadtest/k6/remote-write.prom

log "deploy checks: ok"
