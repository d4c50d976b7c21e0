//! `herald-bench --peers`: Herald side by side with the systems its users would choose
//! instead, in one run, on one machine: a Socket.IO-Node cluster with the Redis adapter,
//! and raw NATS over WebSocket (see [`scenarios`] for what is measured).
//!
//! Each run starts every system afresh in turn, pinned to the server CPU (the load
//! generator runs on the other), and runs every scenario against it; the table at the end
//! gives the medians over runs.

mod scenarios;
pub mod tally;
mod targets;
pub mod wire;

use std::collections::BTreeMap;

use anyhow::bail;

pub use scenarios::{Knobs, Scenario};
pub use targets::Target;

use crate::median;
use scenarios::Outcome;

/// Where the comparison runs: the binary, runs, systems, scenarios and CPUs.
pub struct Setup<'a> {
    pub herald: &'a std::path::Path,
    pub runs: usize,
    pub targets: Vec<Target>,
    pub scenarios: Vec<Scenario>,
    pub knobs: Knobs,
    /// CPUs for the servers and for the load generator; `None` leaves scheduling alone.
    pub cpus: Option<(usize, usize)>,
}

pub async fn run(setup: &Setup<'_>) -> anyhow::Result<()> {
    if let Some((_, generator)) = setup.cpus {
        targets::pin(std::process::id(), generator)?;
    }
    let mut results: BTreeMap<(usize, usize), Vec<Outcome>> = BTreeMap::new();
    for run in 0..setup.runs {
        for (t, target) in setup.targets.iter().enumerate() {
            let mut started = None;
            for (s, scenario) in setup.scenarios.iter().enumerate() {
                // Without history only the saturated fan-out is asked (the 450k/s).
                if matches!(target, Target::Herald { history: false, .. })
                    && *scenario != Scenario::Fan
                {
                    continue;
                }
                // Memory is measured on a fresh system, which is not used again: freed
                // memory stays with a process and would be counted as free next time.
                if scenario.is_idle() {
                    started = None;
                }
                let system = match started.take() {
                    Some(system) => system,
                    None => target.start(setup.herald, setup.cpus)?,
                };
                let tag = format!("{run}{}", scenario.name());
                let outcome =
                    scenarios::run(*scenario, &system, target.dialect(), &setup.knobs, &tag)
                        .await?;
                if !scenario.is_idle() {
                    started = Some(system);
                }
                println!(
                    "{:>26} {:>3} run {}: {}",
                    target.name(),
                    scenario.name(),
                    run + 1,
                    describe(&outcome)
                );
                results.entry((s, t)).or_default().push(outcome);
            }
        }
    }
    if results.is_empty() {
        bail!("nothing to run");
    }
    println!();
    table(setup, &results);
    Ok(())
}

fn describe(outcome: &Outcome) -> String {
    if let (Some(bytes), Some(rate)) = (outcome.per_connection_bytes, outcome.connects_per_second) {
        let kinds: Vec<String> = outcome
            .per_kind_bytes
            .iter()
            .map(|(kind, bytes)| format!("{kind} {:.1}", bytes / 1024.0))
            .collect();
        return format!(
            "{:.1} KiB per connection ({}), {rate:.0} connections/s, {:.0} MiB in all",
            bytes / 1024.0,
            kinds.join(", "),
            outcome.rss_bytes as f64 / 1048576.0
        );
    }
    let latency = &outcome.latency_us;
    format!(
        "{:.0}/s, lost {} of {}, reordered {}, refused {}, cut {}, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, server CPU {:.2} cores, RSS {:.0} MiB",
        outcome.per_second,
        outcome.lost(),
        outcome.expected,
        outcome.reordered,
        outcome.refused,
        outcome.cut,
        latency.value_at_quantile(0.5) as f64 / 1000.0,
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        latency.value_at_quantile(0.999) as f64 / 1000.0,
        outcome.cpu_cores,
        outcome.rss_bytes as f64 / 1048576.0
    )
}

/// One Markdown table: a row per scenario, a column per system, medians over runs.
fn table(setup: &Setup<'_>, results: &BTreeMap<(usize, usize), Vec<Outcome>>) {
    let names: Vec<&str> = setup.targets.iter().map(|t| t.name()).collect();
    println!("medians of {} runs", setup.runs);
    println!("| scenario | {} |", names.join(" | "));
    println!("| --- |{}", " --- |".repeat(names.len()));
    for (s, scenario) in setup.scenarios.iter().enumerate() {
        let cells: Vec<String> = (0..setup.targets.len())
            .map(|t| results.get(&(s, t)).map_or("–".into(), |o| cell(o)))
            .collect();
        let title = scenario.title(&setup.knobs);
        println!("| {title} | {} |", cells.join(" | "));
    }
}

fn cell(outcomes: &[Outcome]) -> String {
    let med = |f: &dyn Fn(&Outcome) -> f64| median(outcomes.iter().map(f).collect());
    if outcomes[0].per_connection_bytes.is_some() {
        return format!(
            "{:.1} KiB, {:.0} conn/s",
            med(&|o| o.per_connection_bytes.unwrap_or(0.0)) / 1024.0,
            med(&|o| o.connects_per_second.unwrap_or(0.0))
        );
    }
    let lost = med(&|o| o.lost() as f64 / o.expected.max(1) as f64 * 100.0);
    format!(
        "{:.0}k/s, lost {}, p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, CPU {:.2}",
        med(&|o| o.per_second) / 1000.0,
        if lost == 0.0 {
            "0".to_string()
        } else {
            format!("{lost:.1} %")
        },
        med(&|o| o.latency_us.value_at_quantile(0.5) as f64) / 1000.0,
        med(&|o| o.latency_us.value_at_quantile(0.99) as f64) / 1000.0,
        med(&|o| o.latency_us.value_at_quantile(0.999) as f64) / 1000.0,
        med(&|o| o.cpu_cores),
    )
}
