//! The sync document scenarios (`--sync`), on two gateways and two routers:
//!
//! - **one document**: `--patchers` native connections patch one document as fast as the
//!   acknowledgements come back (a connection's commands are answered in order, so each
//!   has one patch in flight); patches per second and the time to each acknowledgement;
//! - **many documents**: the same, each patch on one of `--documents` documents in turn;
//! - **fan-out**: one patcher sending `--rate` patches per second on one document
//!   with `--subscribers` subscribers spread over both gateways; deliveries per second and
//!   the latency from the patch's send to each subscriber's receipt.
//!
//! Every subscriber checks that revisions arrive in order, without gaps.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use herald_testkit::{Cluster, NativeClient};
use serde_json::json;

use crate::RunResult;

/// Settings of the nodes: a namespace of documents.
pub const SETTINGS: [(&str, &str); 2] = [
    ("HERALD_LOG__LEVEL", "warn"),
    ("HERALD_CHANNELS__NAMESPACES__DOC__SYNC", "true"),
];

async fn connect(url: &str) -> anyhow::Result<NativeClient> {
    NativeClient::connect(url).await.map_err(anyhow::Error::msg)
}

/// `patchers` connections, alternating gateways, each sending `per_patcher` patches to
/// the documents `doc:<run>-0` … `doc:<run>-<documents - 1>` in turn.
pub async fn patch_rate(
    cluster: &Cluster,
    run: usize,
    documents: usize,
    patchers: usize,
    per_patcher: usize,
) -> anyhow::Result<RunResult> {
    crate::rate::closed_loop(cluster, patchers, per_patcher, "sync_patch", |p, n| {
        let channel = format!("doc:{run}-{}", (p + n) % documents);
        let patch = json!({ format!("p{p}"): n, "t": unix_micros() });
        json!({ "channel": channel, "patch": patch })
    })
    .await
}

/// One patcher at `rate` patches per second on one document, `subscribers` subscribers.
pub async fn fan_out(
    cluster: &Cluster,
    run: usize,
    subscribers: usize,
    patches: usize,
    rate: u64,
) -> anyhow::Result<RunResult> {
    let channel = format!("doc:fan-{run}");
    let mut readers = Vec::with_capacity(subscribers);
    for s in 0..subscribers {
        let client = connect(&cluster.ws_url(s % 2)).await?;
        let state = client
            .ok("sync_subscribe", json!({ "channel": channel }))
            .await
            .map_err(anyhow::Error::msg)?;
        let rev = state["rev"].as_u64().context("rev")?;
        readers.push((client, rev));
    }
    let patcher = connect(&cluster.ws_url(0)).await?;
    let started = Instant::now();
    // Patches are sent at the rate without waiting for their acknowledgements (the
    // connection answers them in order), so the rate holds whatever the round trip.
    let sender = tokio::spawn({
        let channel = channel.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut replies = Vec::with_capacity(patches);
            for n in 0..patches {
                tick.tick().await;
                let patch = json!({ "n": n, "t": unix_micros() });
                let params = json!({ "channel": channel, "patch": patch });
                replies.push(patcher.start("sync_patch", params).await?);
            }
            for reply in replies {
                let reply = reply
                    .await
                    .map_err(|_| "connection closed before a reply")?;
                if reply.get("result").is_none() {
                    return Err(format!("patch refused: {reply}"));
                }
            }
            Ok::<_, String>(())
        }
    });
    let tasks = readers.into_iter().map(|(client, mut rev)| async move {
        let mut histogram = Histogram::<u64>::new(3)?;
        for _ in 0..patches {
            let push = client
                .next_push(Duration::from_secs(30))
                .await
                .map_err(anyhow::Error::msg)?;
            let now = unix_micros();
            let next = push["rev"].as_u64().context("rev")?;
            if next != rev + 1 {
                bail!("revision {next} after {rev}");
            }
            rev = next;
            let sent = push["patch"]["t"].as_u64().context("timestamp")?;
            histogram.record(now.saturating_sub(sent).max(1))?;
        }
        Ok::<_, anyhow::Error>(histogram)
    });
    let histograms = try_join_all(tasks).await?;
    let elapsed = started.elapsed();
    sender.await?.map_err(anyhow::Error::msg)?;
    crate::rate::result(&histograms, subscribers * patches, elapsed)
}
