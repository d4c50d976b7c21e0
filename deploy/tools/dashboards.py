"""Checks Grafana dashboards against a scrape of real nodes:

1. each dashboard is JSON with a uid and title of its own, and panels with ids;
2. every query (panels' targets, and variables' `label_values(...)`) parses as PromQL,
   with Grafana's own variables put in;
3. every metric a query selects is in the scrape: a dashboard that queries a series no
   node exports shows nothing, and nothing says why.

Usage: dashboards.py DASHBOARD_DIR SCRAPE_FILE... Exits 1 when anything fails.
"""

import glob
import json
import os
import re
import sys

import promql_parser

# What Grafana puts in for its own variables, and for the dashboards' (any value parses).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}
VARIABLE = re.compile(r"\$\{?(\w+)\}?")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.S)

failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def exported(scrapes):
    """Every sample name in the scrapes (histograms as their _bucket, _sum, _count)."""
    names = set()
    for path in scrapes:
        with open(path) as file:
            for line in file:
                if line.strip() and not line.startswith("#"):
                    names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def selected(expr):
    """The metric names `expr` selects."""
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def check_query(where, query, metrics):
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    query = VARIABLE.sub("x", query)
    try:
        names = selected(query)
    except Exception as error:  # the parser raises plain exceptions
        fail(f"{where}: {query!r} is not PromQL: {error}")
        return 0
    for name in names:
        if name not in metrics:
            fail(f"{where}: {name} is in no scrape")
    return 1


def check(path, metrics, uids):
    with open(path) as file:
        try:
            dashboard = json.load(file)
        except json.JSONDecodeError as error:
            fail(f"{path} is not JSON: {error}")
            return
    name = os.path.basename(path)
    for field in ("uid", "title"):
        if not dashboard.get(field):
            fail(f"{name}: no {field}")
    if dashboard.get("uid") in uids:
        fail(f"{name}: uid {dashboard['uid']} is another dashboard's")
    uids.add(dashboard.get("uid"))
    panels = dashboard.get("panels") or []
    panels += [inner for p in panels for inner in p.get("panels") or []]
    queries = 0
    ids = [p.get("id") for p in panels]
    if None in ids or len(set(ids)) != len(ids):
        fail(f"{name}: panels without an id, or with the same one")
    for panel in panels:
        for target in panel.get("targets") or []:
            if target.get("expr"):
                where = f"{name}: panel {panel.get('title')!r}"
                queries += check_query(where, target["expr"], metrics)
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            match = LABEL_VALUES.match(query.strip())
            inner = match.group(1) if match else query
            queries += check_query(f"{name}: variable {variable.get('name')}", inner, metrics)
    print(f"  {name}: {len(panels)} panels, {queries} queries")


def main():
    directory, scrapes = sys.argv[1], sys.argv[2:]
    metrics = exported(scrapes)
    if not metrics:
        fail("the scrapes hold no samples")
    paths = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not paths:
        fail(f"no dashboards in {directory}")
    uids = set()
    for path in paths:
        check(path, metrics, uids)
    if failures:
        print(f"dashboards: {len(failures)} failure(s)")
        sys.exit(1)
    print(f"dashboards: ok, {len(paths)} dashboard(s), against {len(metrics)} series names")


if __name__ == "__main__":
    main()
