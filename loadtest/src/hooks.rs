//! The backend scenarios (`--hooks`), on two gateways and two routers, with a backend
//! (`herald_testkit::TestBackend`) that answers at once, in this process:
//!
//! - **publish**: `--patchers` native connections publish `--patches` each as fast as the
//!   acknowledgements come back, on a namespace without a hook, one whose publish hook is
//!   called over gRPC, and one over HTTP: what a hook adds to a publish;
//! - **consume**: during the run without a hook, a consume stream from a router takes every
//!   publication; deliveries per second and the time from a publish to its consumption.
//!
//! The order of the namespaces alternates from run to run, so that a machine that warms
//! up or slows down does not favour one.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{ConsumeRequest, consume_event};
use herald_testkit::{Cluster, TestBackend};
use serde_json::json;

use crate::RunResult;

/// Settings of the nodes: publish hooks on `grpc` and `http` over the backend's two
/// transports, none on `plain`.
pub fn settings(backend: &TestBackend) -> Vec<(String, String)> {
    [
        ("HERALD_LOG__LEVEL", "warn"),
        (
            "HERALD_HOOKS__NAMESPACES__GRPC__PUBLISH__URL",
            &backend.grpc_url,
        ),
        (
            "HERALD_HOOKS__NAMESPACES__HTTP__PUBLISH__URL",
            &backend.http_url,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `publishers` connections, alternating gateways, each publishing `per_publisher` times
/// on `<namespace>:<run>-<publisher>`.
pub async fn publish_rate(
    cluster: &Cluster,
    namespace: &str,
    run: usize,
    publishers: usize,
    per_publisher: usize,
) -> anyhow::Result<RunResult> {
    crate::rate::closed_loop(cluster, publishers, per_publisher, "publish", |p, n| {
        let data = json!({ "n": n, "t": unix_micros() });
        json!({ "channel": format!("{namespace}:{run}-{p}"), "data": data })
    })
    .await
}

/// A consume stream of `plain:<run>-*` from router 0, open before the run's publishes:
/// resolves once it has `count` publications, with the time from each publish to it.
pub async fn consume(
    cluster: &Cluster,
    run: usize,
    count: usize,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<(Histogram<u64>, Instant)>>> {
    let address = format!("http://{}", cluster.routers[0].api_addr());
    let mut api = HeraldApiClient::connect(address).await?;
    let request = ConsumeRequest {
        pattern: format!("plain:{run}-*"),
        since_ms: unix_micros() / 1000,
        ..Default::default()
    };
    let mut stream = api.consume(request).await?.into_inner();
    Ok(tokio::spawn(async move {
        let mut histogram = Histogram::<u64>::new(3)?;
        for _ in 0..count {
            let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .context("consume stream stalled")??
                .context("consume stream ended")?;
            let Some(consume_event::Event::Publication(p)) = event.event else {
                bail!("unexpected {event:?}");
            };
            let publication = p.publication.context("publication")?;
            let data: serde_json::Value = serde_json::from_str(&publication.data)?;
            let sent = data["t"].as_u64().context("timestamp")?;
            histogram.record(unix_micros().saturating_sub(sent).max(1))?;
        }
        Ok((histogram, Instant::now()))
    }))
}
