//! The deployment files that exist in two places stay the same: the Helm chart cannot read
//! files outside its directory, so it carries copies of the alert rules and dashboards.

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
