//! Closed-loop request rates, and the results every scenario reports.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::future::try_join_all;
use hdrhistogram::Histogram;
use herald_testkit::{Cluster, NativeClient};

use crate::RunResult;

/// `clients` connections, alternating gateways, each sending `per_client` commands
/// `method` (connection `c`'s `n`th with `params(c, n)`) one after another, as fast as the
/// replies come back: commands per second, and the time to each reply.
pub async fn closed_loop(
    cluster: &Cluster,
    clients: usize,
    per_client: usize,
    method: &str,
    params: impl Fn(usize, usize) -> serde_json::Value + Sync,
) -> anyhow::Result<RunResult> {
    let mut connections = Vec::with_capacity(clients);
    for c in 0..clients {
        let url = cluster.ws_url(c % 2);
        let client = NativeClient::connect(&url)
            .await
            .map_err(anyhow::Error::msg)?;
        connections.push(client);
    }
    let started = Instant::now();
    let params = &params;
    let tasks = connections
        .into_iter()
        .enumerate()
        .map(|(c, client)| async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            for n in 0..per_client {
                let params = params(c, n);
                let sent = Instant::now();
                let reply = client
                    .call(method, params)
                    .await
                    .map_err(anyhow::Error::msg)?;
                if reply.get("result").is_none() {
                    bail!("{method} refused: {reply}");
                }
                histogram.record((sent.elapsed().as_micros() as u64).max(1))?;
            }
            Ok::<_, anyhow::Error>(histogram)
        });
    let histograms = try_join_all(tasks).await?;
    result(&histograms, clients * per_client, started.elapsed())
}

/// `count` events in `elapsed`, with the latencies of every histogram together.
pub fn result(
    histograms: &[Histogram<u64>],
    count: usize,
    elapsed: Duration,
) -> anyhow::Result<RunResult> {
    let mut all = Histogram::<u64>::new(3)?;
    for histogram in histograms {
        all.add(histogram)?;
    }
    Ok(RunResult {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        max_us: all.max(),
    })
}
