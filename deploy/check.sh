#!/usr/bin/env bash
# Validates what operators deploy, with the workplace's validators (check-helm.sh,
# check-metrics.sh, check-dashboards.sh, promtool):
#
#   1. the alert rules pass `promtool check rules` and their unit tests (`promtool test
#      rules`: alerts keep releases apart), docker compose's Prometheus config
#      `promtool check config`, and the compose file parses and names files that exist;
#   2. the Helm chart lints, renders and passes the Kubernetes schemas, with default values
#      and with every values file in deploy/helm/herald/ci/ (all features on, an existing
#      Secret);
#   3. a real cluster's /metrics (two gateways and a router after traffic, scraped by the
#      metrics integration test) passes promtool's parser and linter;
#   4. the dashboards are valid, and every metric they query is in that scrape.
#
#   deploy/check.sh            the validators in $VALIDATORS, else ../shared/tools
#
# Without the validators it says so and exits 0 (they are not part of a user's machine);
# set REQUIRE_VALIDATORS=1 to make that an error. (No HERALD_ prefix on these: the nodes the
# metrics test starts inherit the environment and refuse settings they do not know.)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
tools="${VALIDATORS:-$root/../shared/tools}"

if [ ! -x "$tools/check-helm.sh" ]; then
    echo "deploy checks skipped: no validators at $tools (set VALIDATORS)"
    [ "${REQUIRE_VALIDATORS:-0}" = 1 ] && exit 1
    exit 0
fi

log() { printf '\n==> %s\n' "$*"; }

"$tools/setup.sh" >/dev/null
promtool="${HERALD_TOOLS_STATE:-$HOME/.cache/herald-tools}/.bin/promtool"

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
python3 - deploy/docker-compose.yml <<'PY'
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
"$tools/check-helm.sh" deploy/helm/herald

log "a live cluster's /metrics (the metrics integration test scrapes it)"
scrapes="$work/scrapes"
# `--workspace`, as the test script builds: the same features, so nothing is rebuilt.
env -u HERALD_TOOLS_STATE METRICS_SCRAPE_DIR="$scrapes" cargo nextest run --workspace --locked \
    --no-fail-fast -E 'binary(it) & test(a_scrape_after_traffic_shows_the_counters_moved)'
for scrape in "$scrapes"/*.prom; do
    echo "--- $(basename "$scrape")"
    "$tools/check-metrics.sh" "$scrape" | tail -1
done

log "Grafana dashboards against that scrape"
# With the k6 series of the dashboards' load-test row (loadtest/k6/remote-write.prom).
cat "$scrapes"/*.prom loadtest/k6/remote-write.prom >"$scrapes/all.prom.txt"
"$tools/check-dashboards.sh" deploy/grafana "$scrapes/all.prom.txt"

log "deploy checks: ok"
