//! The memory scenario: how much a gateway holds per client connection. A fresh cluster
//! (one gateway, one router) takes `count` native connections, each subscribed to a
//! channel of its own (as instant-messaging users are to their personal channels); the
//! gateway's resident memory before and after, divided by `count`.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream;
use herald_testkit::{Cluster, NativeClient};
use serde_json::json;

/// Connections opened at once while filling the gateway.
const CONCURRENCY: usize = 64;

/// Bytes of gateway memory per connection, from one fresh cluster.
pub async fn per_connection(herald: &std::path::Path, count: usize) -> anyhow::Result<f64> {
    let settings = [("HERALD_LOG__LEVEL", "warn")];
    let cluster = Cluster::start(herald, 1, 1, &settings);
    let gateway = &cluster.gateways[0];
    let url = gateway.ws_url();
    let before = gateway.rss_bytes().context("gateway RSS")?;
    let clients: Vec<NativeClient> = stream::iter(0..count)
        .map(|i| {
            let url = url.clone();
            async move {
                let client = NativeClient::connect(&url)
                    .await
                    .map_err(anyhow::Error::msg)?;
                let channel = format!("mem:{i}");
                client
                    .ok("subscribe", json!({ "channel": channel }))
                    .await
                    .map_err(anyhow::Error::msg)?;
                Ok::<_, anyhow::Error>(client)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    // Let connection setup's transient buffers go before reading the steady state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gateway.rss_bytes().context("gateway RSS")?;
    drop(clients);
    Ok(after.saturating_sub(before) as f64 / count as f64)
}
