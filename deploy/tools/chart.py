"""Checks the Helm chart as a cluster would take it, for its default values and each
values file in its ci/ directory:

1. `helm lint` (the Helm Go SDK through helm-python-sdk): errors fail;
2. the values against values.schema.json, then the render (release `herald-ci`,
   namespace `default`, as an install): a template error fails;
3. every object rendered is YAML with an apiVersion, kind and name, none twice;
4. every core object against the Kubernetes JSON schemas of each version in
   KUBE_VERSIONS, strictly (an unknown field fails). The Prometheus operator's objects
   (ServiceMonitor, PrometheusRule) have no schema there: their required fields are
   checked by hand.

Usage: chart.py CHART_DIR. Exits 1 when anything fails.
"""

import glob
import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBE_VERSIONS = ["1.29.0", "1.33.0"]
RELEASE = "herald-ci"

failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def lint(chart_dir, values, label):
    try:
        report = helm.lint(chart_dir, values, strict=False, kube_version=f"v{KUBE_VERSIONS[-1]}")
    except helm.HelmError as error:
        fail(f"[{label}] lint could not run: {error}")
        return
    errors = [m for m in report.get("messages", []) if m.get("severity") == 3]
    for message in errors:
        fail(f"[{label}] lint: {message.get('path')}: {message.get('error')}")
    for error in report.get("errors") or []:
        if error not in {m.get("error") for m in errors}:
            fail(f"[{label}] lint: {error}")


def render(chart_dir, values, label):
    try:
        chart = helm.Chart.load(chart_dir)
        chart.validate_schema(values)
        rendered = chart.render(values, name=RELEASE, namespace="default", is_install=True)
    except helm.HelmError as error:
        fail(f"[{label}] {error}")
        return []
    objects = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt") or os.path.basename(path).startswith("_"):
            continue
        try:
            docs = [d for d in yaml.safe_load_all(rendered[path]) if d is not None]
        except yaml.YAMLError as error:
            fail(f"[{label}] {path} is not YAML: {error}")
            continue
        objects.extend((path, doc) for doc in docs)
    return objects


def monitoring(path, obj, label):
    """The fields the Prometheus operator needs of the objects the chart makes."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "ServiceMonitor":
        endpoints = spec.get("endpoints") or []
        if not endpoints or not all("port" in e for e in endpoints):
            fail(f"[{label}] {path}: a ServiceMonitor needs endpoints with a port")
        if not (spec.get("selector") or {}).get("matchLabels"):
            fail(f"[{label}] {path}: a ServiceMonitor needs selector.matchLabels")
    elif obj["kind"] == "PrometheusRule":
        groups = spec.get("groups") or []
        rules = [r for g in groups for r in g.get("rules") or []]
        if not rules or not all("expr" in r and ("alert" in r or "record" in r) for r in rules):
            fail(f"[{label}] {path}: a PrometheusRule needs groups of rules with expr and alert")
    else:
        fail(f"[{label}] {path}: no check for {obj['apiVersion']} {obj['kind']}")


def validate(objects, label):
    seen = set()
    for path, obj in objects:
        kind = obj.get("kind")
        name = (obj.get("metadata") or {}).get("name")
        if not obj.get("apiVersion") or not kind or not name:
            fail(f"[{label}] {path}: an object without apiVersion, kind or name")
            continue
        if (kind, name) in seen:
            fail(f"[{label}] {path}: {kind}/{name} twice")
        seen.add((kind, name))
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            monitoring(path, obj, label)
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                fail(f"[{label}] {path}: {kind}/{name} on Kubernetes {version}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                fail(f"[{label}] {path}: Kubernetes {version} has no {obj['apiVersion']} {kind}")
    print(f"  {len(objects)} objects: {', '.join(sorted({k for k, _ in seen}))}")


def main():
    chart_dir = os.path.abspath(sys.argv[1])
    scenarios = [("default values", None)]
    for path in sorted(glob.glob(os.path.join(chart_dir, "ci", "*.yaml"))):
        with open(path) as file:
            scenarios.append((os.path.relpath(path, chart_dir), yaml.safe_load(file)))
    for label, values in scenarios:
        print(f"{label}:")
        lint(chart_dir, values, label)
        validate(render(chart_dir, values, label), label)
    if failures:
        print(f"chart: {len(failures)} failure(s)")
        sys.exit(1)
    print(f"chart: ok, {len(scenarios)} scenario(s), Kubernetes {' and '.join(KUBE_VERSIONS)}")


if __name__ == "__main__":
    main()
