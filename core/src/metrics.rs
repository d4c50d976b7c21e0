//! Prometheus metrics: every family Herald exports, with its help text and buckets, and the
//! exporter that renders them at each node's `/metrics`.
//!
//! Names follow Prometheus conventions: a `herald_` prefix, the unit in the name, `_total`
//! on counters. Labels take only a few values each (protocol, transport, code, operation,
//! result), never a channel, user or client name, so that the series count does not grow
//! with traffic. `docs/operations.md` lists every family.
//!
//! Nodes record through the `metrics` facade; without an installed exporter (unit tests,
//! embedding) recording costs next to nothing and goes nowhere.

use std::sync::OnceLock;
use std::time::Duration;

use crate::bus::{BusError, Operation};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use thiserror::Error;

/// Client connections held now; labels `protocol` and `transport`.
pub const CONNECTIONS: &str = "herald_connections";
/// Client connections opened; label `protocol`.
pub const CONNECTIONS_OPENED: &str = "herald_connections_opened_total";
/// Connection attempts turned away; label `reason` (`full`, `draining`, `origin`).
pub const CONNECTIONS_REFUSED: &str = "herald_connections_refused_total";
/// Connections ended; labels `protocol` and `code` (the close code the server sent, or
/// `client` when the client left).
pub const DISCONNECTS: &str = "herald_disconnects_total";
/// Subscriptions of clients held now.
pub const SUBSCRIPTIONS: &str = "herald_subscriptions";
/// Channels with at least one local subscriber now.
pub const CHANNELS: &str = "herald_channels";
/// Publications clients sent; label `protocol`.
pub const MESSAGES_RECEIVED: &str = "herald_messages_received_total";
/// Publications written to clients' queues; label `protocol`.
pub const MESSAGES_SENT: &str = "herald_messages_sent_total";
/// From a client's publish reaching the gateway to its acknowledgement.
pub const PUBLISH_DURATION: &str = "herald_publish_duration_seconds";
/// From a router accepting a publication to a gateway receiving it for its clients.
pub const DELIVERY_LATENCY: &str = "herald_delivery_latency_seconds";
/// Answers to client commands and acknowledged events; labels `protocol` and `code` (`0`
/// for success, `app` for a backend's own codes, else the error code).
pub const REPLIES: &str = "herald_replies_total";
/// Returning subscriptions; labels `protocol` and `result` (`recovered`, `lost`).
pub const RECOVERIES: &str = "herald_recoveries_total";
/// 1 while the node drains its clients before exiting.
pub const DRAINING: &str = "herald_draining";
/// 1 while the node's NATS connection is up.
pub const NATS_CONNECTED: &str = "herald_nats_connected";
/// Connections made to NATS, the first one included.
pub const NATS_CONNECTS: &str = "herald_nats_connects_total";
/// NATS connections lost.
pub const NATS_DISCONNECTS: &str = "herald_nats_disconnects_total";
/// Errors the NATS client reported; label `kind`.
pub const NATS_ERRORS: &str = "herald_nats_errors_total";
/// Requests to routers over NATS that failed; label `kind` (`timeout`, `no_responders`,
/// `not_connected`, `other`).
pub const BUS_REQUEST_ERRORS: &str = "herald_bus_request_errors_total";
/// Duration of one Redis operation of a router; label `operation`.
pub const REDIS_DURATION: &str = "herald_redis_operation_duration_seconds";
/// Redis operations that failed; label `operation`.
pub const REDIS_ERRORS: &str = "herald_redis_errors_total";
/// 1 when the router's last Redis ping succeeded.
pub const REDIS_UP: &str = "herald_redis_up";
/// Publications routers accepted, stored and published.
pub const PUBLICATIONS: &str = "herald_publications_total";
/// Clients listed by a presence query.
pub const PRESENCE_SIZE: &str = "herald_presence_size";
/// Presence entries a router added (joins) and removed (leaves and expiries); label
/// `change` (`join`, `leave`).
pub const PRESENCE_CHANGES: &str = "herald_presence_changes_total";
/// Sync document patches a router handled; label `result` (`applied`, `duplicate`,
/// `conflict`, `refused`).
pub const SYNC_PATCHES: &str = "herald_sync_patches_total";
/// Sync document snapshots a router sent; label `reason` (`initial`: the reader had
/// nothing, `fallback`: the patches it missed were no longer kept).
pub const SYNC_SNAPSHOTS: &str = "herald_sync_snapshots_total";
/// Compare-and-set retries of sync patches, when another router patched the same
/// document first.
pub const SYNC_RETRIES: &str = "herald_sync_retries_total";
/// Calls of routers to gateways' control services; label `outcome` (`ok`, `unavailable`:
/// no connection, `timeout`: no answer within `control.timeout`, `refused`: the gateway
/// said no, such as to another control key).
pub const CONTROL_CALLS: &str = "herald_control_calls_total";
/// Calls of hooks to the app's backend; labels `hook` (`connect`, `refresh`, `subscribe`,
/// `publish`, `rpc`), `namespace` (the `hooks.namespaces` entry, `default`, or
/// `connection` for connect, refresh and rpc) and `result` (`ok`, `refused`: the backend
/// said no, `failed`: unreachable, an error, no answer in time, or too many in flight).
pub const HOOK_CALLS: &str = "herald_hook_calls_total";
/// Duration of hook calls, failed ones included; labels `hook` and `namespace`.
pub const HOOK_DURATION: &str = "herald_hook_duration_seconds";
/// Always 1; labels `version` and `mode`.
pub const BUILD_INFO: &str = "herald_build_info";

/// Buckets of latencies, from 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Buckets of presence sizes.
const SIZE_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the exporter could not be installed.
#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot install the metrics exporter: {0}")]
    Build(#[from] BuildError),
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(std::io::Error),
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide exporter and describes every family; `mode` is what the
/// node runs as (`standalone`, `gateway`, `router`). Later calls do nothing.
pub fn install(mode: &'static str) -> Result<(), MetricsError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(PRESENCE_SIZE.into()), SIZE_BUCKETS)?
        .install_recorder()?;
    // Histogram samples wait in buckets until upkeep folds them in; without it they pile
    // up between scrapes, or for ever on a node that nobody scrapes.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .map_err(MetricsError::Upkeep)?;
    let _ = HANDLE.set(handle);
    describe();
    initialize();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "mode" => mode).set(1.0);
    Ok(())
}

/// The exposition in Prometheus' text format; empty without an installed exporter.
pub fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// The families every node has, at zero from the start, so that dashboards and alerts see
/// a series before the first event.
fn initialize() {
    counter!(NATS_CONNECTS).absolute(0);
    counter!(NATS_DISCONNECTS).absolute(0);
    for kind in ["slow_consumer", "server", "client"] {
        counter!(NATS_ERRORS, "kind" => kind).absolute(0);
    }
    let errors = [
        BusError::NotConnected,
        BusError::Timeout,
        BusError::NoResponders,
        BusError::TooLarge { size: 0, limit: 0 },
    ];
    let failures = Operation::ALL.map(|operation| BusError::failed(operation, ""));
    for error in errors.into_iter().chain(failures) {
        counter!(BUS_REQUEST_ERRORS, "kind" => error.kind()).absolute(0);
    }
}

fn describe() {
    describe_gauge!(CONNECTIONS, "Client connections held now.");
    describe_counter!(CONNECTIONS_OPENED, "Client connections opened.");
    describe_counter!(CONNECTIONS_REFUSED, "Connection attempts turned away.");
    describe_counter!(DISCONNECTS, "Client connections ended, by close code.");
    describe_gauge!(SUBSCRIPTIONS, "Channel subscriptions of clients held now.");
    describe_gauge!(CHANNELS, "Channels with at least one local subscriber.");
    describe_counter!(MESSAGES_RECEIVED, "Publications clients sent.");
    describe_counter!(MESSAGES_SENT, "Publications queued to clients.");
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time from a client's publish to its acknowledgement."
    );
    describe_histogram!(
        DELIVERY_LATENCY,
        Unit::Seconds,
        "Time from a router accepting a publication to a gateway receiving it."
    );
    describe_counter!(REPLIES, "Replies to client commands, by code (0: success).");
    describe_counter!(RECOVERIES, "Returning subscriptions, recovered or lost.");
    describe_gauge!(DRAINING, "1 while the node drains its clients.");
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up.");
    describe_counter!(NATS_CONNECTS, "Connections made to NATS.");
    describe_counter!(NATS_DISCONNECTS, "NATS connections lost.");
    describe_counter!(NATS_ERRORS, "Errors reported by the NATS client.");
    describe_counter!(BUS_REQUEST_ERRORS, "Requests to routers that failed.");
    describe_histogram!(
        REDIS_DURATION,
        Unit::Seconds,
        "Duration of Redis operations."
    );
    describe_counter!(REDIS_ERRORS, "Redis operations that failed.");
    describe_gauge!(REDIS_UP, "1 when the last Redis ping succeeded.");
    describe_counter!(PUBLICATIONS, "Publications accepted, stored and published.");
    describe_counter!(
        CONTROL_CALLS,
        "Calls of routers to gateways' control services, by outcome."
    );
    describe_counter!(
        HOOK_CALLS,
        "Calls of hooks to the app's backend, by result."
    );
    describe_histogram!(
        HOOK_DURATION,
        Unit::Seconds,
        "Duration of calls of hooks to the app's backend."
    );
    describe_histogram!(PRESENCE_SIZE, "Clients listed by a presence query.");
    describe_counter!(PRESENCE_CHANGES, "Presence entries added and removed.");
    describe_counter!(SYNC_PATCHES, "Sync document patches, by result.");
    describe_counter!(SYNC_SNAPSHOTS, "Sync document snapshots sent, by reason.");
    describe_counter!(
        SYNC_RETRIES,
        "Sync patches computed again after a concurrent patch."
    );
    describe_gauge!(BUILD_INFO, "Version and mode of the node; always 1.");
}
