//! Deployment files: those that exist in two places stay the same (the Helm chart cannot
//! read files outside its directory, so it carries copies of the alert rules and
//! dashboards), and the chart keeps Kubernetes' service variables out of Herald's pods.

use std::path::Path;

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_chart_carries_the_same_alert_rules_and_dashboards() {
    let pairs = [
        (
            "deploy/prometheus/alerts.yml",
            "deploy/helm/herald/files/alerts.yml",
        ),
        (
            "deploy/grafana/dashboards/herald-overview.json",
            "deploy/helm/herald/dashboards/herald-overview.json",
        ),
        (
            "deploy/grafana/dashboards/herald-node.json",
            "deploy/helm/herald/dashboards/herald-node.json",
        ),
    ];
    for (original, copy) in pairs {
        assert!(
            read(original) == read(copy),
            "{copy} differs from {original}: copy it (dashboards: python3 deploy/grafana/dashboards.py)"
        );
    }
}

#[test]
fn the_chart_keeps_service_variables_out_of_the_environment() {
    // A release named `herald` has Services `herald-gateway` and `herald-router`, and
    // Kubernetes would give every pod HERALD_GATEWAY_PORT and the like: unknown HERALD_
    // settings, which a node refuses at start.
    for template in ["gateway-deployment.yaml", "router-deployment.yaml"] {
        let text = read(&format!("deploy/helm/herald/templates/{template}"));
        assert!(
            text.contains("enableServiceLinks: false"),
            "{template} lets Kubernetes inject service variables"
        );
    }
}
