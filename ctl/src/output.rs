//! How `heraldctl` prints what it got: a table for a terminal or JSON, and the gateways a
//! command did not reach.

use anyhow::bail;
use herald_proto::api::v1::NodeFailure;
use serde_json::{Value, json};

use crate::table;

/// Prints `value` as JSON, or as a table of `rows` under `header`.
pub fn show(json_output: bool, value: Value, header: &[&str], rows: Vec<Vec<String>>) {
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        table::print(header, &rows);
    }
}

pub fn failures_json(failures: &[NodeFailure]) -> Value {
    failures
        .iter()
        .map(|f| json!({ "node": f.node, "address": f.address, "error": f.error }))
        .collect()
}

/// Names every gateway a command did not reach, on standard error; an error if any: the
/// command acted on the others, and may be repeated for these.
pub fn not_reached(failures: &[NodeFailure]) -> anyhow::Result<()> {
    for f in failures {
        eprintln!(
            "heraldctl: {} ({}) not reached: {}",
            f.node, f.address, f.error
        );
    }
    if !failures.is_empty() {
        bail!("{} gateway(s) not reached", failures.len());
    }
    Ok(())
}
