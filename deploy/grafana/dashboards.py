#!/usr/bin/env python3
"""Writes Herald's Grafana dashboards from the panel lists below.

    python3 deploy/grafana/dashboards.py

Writes deploy/grafana/dashboards/*.json and the Helm chart's copies in
deploy/helm/herald/dashboards/. Edit the panels here rather than the JSON, so that both
dashboards keep one style and the chart never drifts from the files.
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUTS = [HERE / "dashboards", HERE.parent / "helm" / "herald" / "dashboards"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"


# Every Herald series a dashboard reads is limited to the chosen namespace and release,
# so that several releases can share one Prometheus. Without those labels (docker
# compose), "All" matches the empty value.
SCOPE = 'namespace=~"$namespace", release=~"$release"'
HERALD_SERIES = re.compile(r"\b(herald_[a-z0-9_]+)(\{([^}]*)\})?")


def scoped(expr):
    """`expr` with the namespace and release selector in every `herald_*` selector."""
    def scope(match):
        labels = match.group(3)
        return f"{match.group(1)}{{{SCOPE}{', ' + labels if labels else ''}}}"
    return HERALD_SERIES.sub(scope, expr)


def target(expr, legend, ref):
    return {"datasource": DATASOURCE, "expr": scoped(expr), "legendFormat": legend, "refId": ref}


def variable(name, label, query):
    """A query variable over the values of a label, "All" by default."""
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": name}, "definition": query,
        "refresh": 2, "sort": 1, "hide": 0, "includeAll": True, "multi": True,
        "allValue": ".*", "current": {"text": "All", "value": "$__all"},
    }


# Which release, in which namespace: the labels the chart's ServiceMonitor sets.
RELEASES = [
    variable("namespace", "Namespace", "label_values(herald_build_info, namespace)"),
    variable("release", "Release",
             'label_values(herald_build_info{namespace=~"$namespace"}, release)'),
]


def panel(title, targets, unit="short", kind="timeseries", width=12, height=8, description=""):
    """One panel; `targets` is a list of (expr, legend)."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"w": width, "h": height},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)],
    }


def stat(title, expr, unit="short", description=""):
    return panel(title, [(expr, "")], unit, "stat", width=4, height=4, description=description)


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"w": 24, "h": 1}}


def quantiles(metric, selector, by=""):
    """p50, p95 and p99 of a histogram."""
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({group}) "
         f"(rate({metric}_bucket{selector}{RATE})))", f"p{int(q * 100)}{suffix}")
        for q in (0.5, 0.95, 0.99)
    ]


def layout(panels):
    """Places panels left to right, wrapping at Grafana's 24 columns; a row starts a line."""
    x = y = line_height = 0
    for i, p in enumerate(panels):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if p["type"] == "row" or x + w > 24:
            x, y, line_height = 0, y + line_height, 0
        p["gridPos"].update({"x": x, "y": y})
        p["id"] = i + 1
        if p["type"] == "row":
            y += h
        else:
            x += w
            line_height = max(line_height, h)
    return panels


def dashboard(uid, title, description, panels, variables):
    datasource = {
        "name": "datasource", "label": "Data source", "type": "datasource",
        "query": "prometheus", "current": {}, "hide": 0, "refresh": 1,
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["herald"],
        "timezone": "",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource, *RELEASES, *variables]},
        "annotations": {"list": []},
        "panels": layout(panels),
    }


def overview():
    s = ""
    panels = [
        row("Clients"),
        stat("Connections", "sum(herald_connections)"),
        stat("Gateways", 'count(herald_build_info{mode="gateway"})'),
        stat("Routers", 'count(herald_build_info{mode="router"})'),
        stat("Publications in", f"sum(rate(herald_messages_received_total{RATE}))", "reqps"),
        stat("Deliveries out", f"sum(rate(herald_messages_sent_total{RATE}))", "reqps"),
        stat("Draining nodes", "sum(herald_draining)"),
        panel("Connections by protocol and transport",
              [("sum by (protocol, transport) (herald_connections)", "{{protocol}} {{transport}}")]),
        panel("Connections opened and refused", [
            (f"sum by (protocol) (rate(herald_connections_opened_total{RATE}))", "opened {{protocol}}"),
            (f"sum by (reason) (rate(herald_connections_refused_total{RATE}))", "refused: {{reason}}"),
        ], "ops"),
        panel("Disconnects by close code",
              [(f"sum by (code) (rate(herald_disconnects_total{RATE}))", "{{code}}")], "ops",
              description="3000 drain or shutdown, 3004 slow consumer, 3006 token expired, "
                          "client: the client left."),
        panel("Subscriptions and channels", [
            ("sum(herald_subscriptions)", "subscriptions"),
            ("sum(herald_channels)", "channels (summed over gateways)"),
        ]),
        row("Messages"),
        panel("Publications in and deliveries out", [
            (f"sum by (protocol) (rate(herald_messages_received_total{RATE}))", "in {{protocol}}"),
            (f"sum by (protocol) (rate(herald_messages_sent_total{RATE}))", "out {{protocol}}"),
            (f"sum(rate(herald_publications_total{RATE}))", "stored by routers"),
        ], "ops"),
        panel("Publish latency (to acknowledgement)",
              quantiles("herald_publish_duration_seconds", s), "s"),
        panel("Delivery latency (router to gateway)",
              quantiles("herald_delivery_latency_seconds", s), "s"),
        panel("Refusals by code",
              [(f'sum by (code) (rate(herald_replies_total{{code!="0"}}{RATE}))', "{{code}}")], "ops",
              description="docs/protocol.md lists the codes; 100 and 111 are server-side."),
        panel("Recoveries", [
            (f"sum by (result) (rate(herald_recoveries_total{RATE}))", "{{result}}"),
        ], "ops"),
        panel("Slow consumers cut off",
              [(f'sum(rate(herald_disconnects_total{{code="3004"}}{RATE}))', "slow consumers")], "ops"),
        panel("Sync documents", [
            (f"sum by (result) (rate(herald_sync_patches_total{RATE}))", "patches {{result}}"),
            (f"sum by (reason) (rate(herald_sync_snapshots_total{RATE}))", "snapshots: {{reason}}"),
            (f"sum(rate(herald_sync_retries_total{RATE}))", "compare-and-set retries"),
        ], "ops", description="Patches by result (docs/sync.md), snapshots sent (fallback: "
                              "the missed patches were no longer kept), and retries when two "
                              "routers patched one document at once."),
        row("Backend hooks"),
        panel("Hook calls", [
            (f"sum by (hook, result) (rate(herald_hook_calls_total{RATE}))", "{{hook}} {{result}}"),
        ], "ops", description="Calls of gateways to the app's backend (docs/backend.md): ok, "
                              "refused by the backend, or failed (unreachable, an error, no "
                              "answer within the timeout, max_in_flight reached)."),
        panel("Hook latency p99", [
            (f"histogram_quantile(0.99, sum by (le, hook, namespace) "
             f"(rate(herald_hook_duration_seconds_bucket{RATE})))", "{{hook}} {{namespace}}"),
        ], "s", description="How long clients wait for the backend, per hook and namespace "
                            "entry; a hook's timeout caps it."),
        row("NATS and Redis"),
        panel("NATS connection", [
            ("sum(herald_nats_connected)", "nodes connected"),
            (f"sum(increase(herald_nats_disconnects_total{RATE}))", "disconnects"),
            (f"sum by (kind) (increase(herald_nats_errors_total{RATE}))", "errors: {{kind}}"),
        ]),
        panel("Requests to routers failing",
              [(f"sum by (kind) (rate(herald_bus_request_errors_total{RATE}))", "{{kind}}")], "ops"),
        panel("Redis operation p99",
              [(f"histogram_quantile(0.99, sum by (le, operation) "
                f"(rate(herald_redis_operation_duration_seconds_bucket{RATE})))", "{{operation}}")], "s"),
        panel("Redis errors and reachability", [
            (f"sum by (operation) (rate(herald_redis_errors_total{RATE}))", "errors: {{operation}}"),
            ("min(herald_redis_up)", "up (lowest router)"),
        ]),
        panel("Presence", [
            (f"sum by (change) (rate(herald_presence_changes_total{RATE}))", "{{change}}s"),
            (f"histogram_quantile(0.95, sum by (le) (rate(herald_presence_size_bucket{RATE})))",
             "p95 clients per presence query"),
        ]),
        *load_test(),
    ]
    return dashboard("herald-overview", "Herald / Cluster overview",
                     "Clients, messages, latency and backends of a whole Herald cluster.",
                     panels, [])


def load_test():
    """k6's own series, beside Herald's for the same minutes: what the scripts of loadtest/k6
    send with `-o experimental-prometheus-rw` (trends as p50/p99/max gauges, in seconds)."""
    sent = ("Filled while a k6 script of loadtest/k6 runs with -o experimental-prometheus-rw "
            "into this Prometheus (loadtest/k6/README.md); empty otherwise. ")
    return [
        row("Load test (k6)"),
        panel("k6: delivery latency", [
            ("max by (scenario, protocol) (k6_herald_delivery_latency_p50)", "p50 {{scenario}} {{protocol}}"),
            ("max by (scenario, protocol) (k6_herald_delivery_latency_p99)", "p99 {{scenario}} {{protocol}}"),
        ], "s", description=sent + "From the send time carried in each payload to its receipt, "
                                   "as k6's receivers saw it: compare with the delivery latency above."),
        panel("k6: deliveries, losses, reorders, refusals", [
            (f"sum by (scenario) (rate(k6_herald_delivered_total{RATE}))", "delivered {{scenario}}"),
            (f"sum by (scenario) (rate(k6_herald_lost_total{RATE}))", "lost {{scenario}}"),
            (f"sum by (scenario) (rate(k6_herald_reordered_total{RATE}))", "reordered {{scenario}}"),
            (f"sum by (scenario) (rate(k6_herald_refused_total{RATE}))", "refused {{scenario}}"),
        ], "ops", description=sent + "Anything but deliveries should stay at zero."),
        panel("k6: virtual users and WebSocket sessions", [
            ("sum(k6_vus)", "virtual users"),
            (f"sum(rate(k6_ws_sessions_total{RATE}))", "sessions opened per second"),
        ], description=sent),
        panel("k6: connection time", [
            ("max by (scenario, protocol) (k6_herald_connect_time_p99)", "p99 {{scenario}} {{protocol}}"),
            ("max by (scenario) (k6_ws_connecting_p99)", "p99 TCP and WebSocket handshake {{scenario}}"),
        ], "s", description=sent + "Until the protocol's own handshake is answered (connect, or "
                                   "the Socket.IO namespace's CONNECT)."),
    ]


def node():
    s = '{instance="$instance"}'
    only = 'instance="$instance"'
    nodes = f"label_values(herald_build_info{{{SCOPE}}}, instance)"
    instance = {
        "name": "instance", "label": "Node", "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": nodes, "refId": "instance"},
        "definition": nodes,
        "refresh": 2, "sort": 1, "current": {}, "hide": 0, "includeAll": False, "multi": False,
    }
    panels = [
        row("Node"),
        stat("Mode and version", f"herald_build_info{s}",
             description="The legend of the series names mode and version."),
        stat("Connections", f"sum(herald_connections{s})"),
        stat("Subscriptions", f"sum(herald_subscriptions{s})"),
        stat("Channels", f"sum(herald_channels{s})"),
        stat("NATS connected", f"herald_nats_connected{s}"),
        stat("Draining", f"herald_draining{s}"),
        panel("Connections by protocol and transport",
              [(f"sum by (protocol, transport) (herald_connections{s})", "{{protocol}} {{transport}}")]),
        panel("Disconnects by close code",
              [(f"sum by (code) (rate(herald_disconnects_total{s}{RATE}))", "{{code}}")], "ops"),
        row("Messages"),
        panel("Publications in and deliveries out", [
            (f"sum by (protocol) (rate(herald_messages_received_total{s}{RATE}))", "in {{protocol}}"),
            (f"sum by (protocol) (rate(herald_messages_sent_total{s}{RATE}))", "out {{protocol}}"),
            (f"sum(rate(herald_publications_total{s}{RATE}))", "stored (router)"),
        ], "ops"),
        panel("Replies by code",
              [(f"sum by (code) (rate(herald_replies_total{s}{RATE}))", "{{code}}")], "ops"),
        panel("Publish latency", quantiles("herald_publish_duration_seconds", s), "s"),
        panel("Delivery latency", quantiles("herald_delivery_latency_seconds", s), "s"),
        panel("Recoveries",
              [(f"sum by (protocol, result) (rate(herald_recoveries_total{s}{RATE}))",
                "{{protocol}} {{result}}")], "ops"),
        panel("Connections opened and refused", [
            (f"sum by (protocol) (rate(herald_connections_opened_total{s}{RATE}))", "opened {{protocol}}"),
            (f"sum by (reason) (rate(herald_connections_refused_total{s}{RATE}))", "refused: {{reason}}"),
        ], "ops"),
        row("NATS and Redis"),
        panel("NATS events", [
            (f"increase(herald_nats_connects_total{s}{RATE})", "connects"),
            (f"increase(herald_nats_disconnects_total{s}{RATE})", "disconnects"),
            (f"sum by (kind) (increase(herald_nats_errors_total{s}{RATE}))", "errors: {{kind}}"),
            (f"sum by (kind) (rate(herald_bus_request_errors_total{s}{RATE}))", "router requests failing: {{kind}}"),
        ]),
        panel("Redis operation latency (router)",
              quantiles("herald_redis_operation_duration_seconds", s, "operation"), "s"),
        panel("Redis errors and reachability (router)", [
            (f"sum by (operation) (rate(herald_redis_errors_total{{{only}}}{RATE}))", "errors: {{operation}}"),
            (f"herald_redis_up{s}", "up"),
        ]),
        panel("Presence (router)", [
            (f"sum by (change) (rate(herald_presence_changes_total{s}{RATE}))", "{{change}}s"),
            (f"histogram_quantile(0.95, sum by (le) (rate(herald_presence_size_bucket{s}{RATE})))",
             "p95 clients per query"),
        ]),
    ]
    return dashboard("herald-node", "Herald / Node",
                     "One gateway or router: its clients, messages, latency and backends.",
                     panels, [instance])


def main():
    for name, board in [("herald-overview.json", overview()), ("herald-node.json", node())]:
        text = json.dumps(board, indent=2) + "\n"
        for out in OUTPUTS:
            out.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)


if __name__ == "__main__":
    main()
