//! Integration tests of whole nodes, with real `nats-server` and `redis-server` for the
//! cluster, and real WebSocket and Socket.IO clients. Nodes are real processes of the
//! `herald` binary where the process is the point (kills, signals, drains, metrics, the
//! exit status), and run in the test process through the `herald` library otherwise
//! ([`inprocess`]).

mod auth;
mod bad_input;
mod channels;
mod cluster;
mod consume;
mod control_plane;
mod deploy;
mod drain;
mod faults;
mod hardening;
mod hooks;
mod inprocess;
mod metrics;
mod presence;
mod recovery;
mod redis_topologies;
mod server_api;
mod slow_consumer;
mod socketio;
mod socketio_arguments;
mod socketio_conformance;
mod socketio_history;
mod socketio_namespaces;
mod socketio_polling;
mod socketio_sizes;
mod socketio_transports;
mod socketio_wire;
mod standalone;
mod sync;
mod tokens;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_testkit::client::Closed;
use herald_testkit::{Cluster, HeraldProcess, NativeClient};
use serde_json::{Value, json};

/// Generous bound for anything that should happen quickly, on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn herald() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

pub fn standalone(env: &[(&str, &str)]) -> HeraldProcess {
    let args = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"];
    HeraldProcess::spawn_with_env("standalone", herald(), &args, env)
}

/// A standalone node with the config file `toml` (written to a fresh file) and `env`.
pub fn standalone_with_config(toml: &str, env: &[(&str, &str)]) -> HeraldProcess {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = format!(
        "{}/herald-{}-{n}.toml",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    std::fs::write(&path, toml).expect("write a config file");
    let args = [
        "--config",
        path.as_str(),
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
    ];
    HeraldProcess::spawn_with_env("standalone", herald(), &args, env)
}

/// A native client that sends `connect` with `token`, expecting success; returns the
/// client and the connect result.
pub async fn client_with_token(url: &str, token: &str) -> (NativeClient, Value) {
    let client = NativeClient::open(url).await.expect("open");
    let result = client
        .ok("connect", json!({ "token": token }))
        .await
        .expect("connect");
    (client, result)
}

pub fn cluster(gateways: usize, routers: usize) -> Cluster {
    Cluster::start(herald(), gateways, routers, &[])
}

pub async fn client(url: &str) -> NativeClient {
    NativeClient::connect(url).await.expect("connect")
}

pub async fn subscribe(client: &NativeClient, channel: &str) -> Value {
    client
        .ok("subscribe", json!({ "channel": channel }))
        .await
        .expect("subscribe")
}

pub async fn publish(client: &NativeClient, channel: &str, data: Value) -> Value {
    client
        .ok("publish", json!({ "channel": channel, "data": data }))
        .await
        .expect("publish")
}

/// Collects `n` publication pushes of `channel`, failing on anything else.
pub async fn publications(client: &NativeClient, channel: &str, n: usize) -> Vec<Value> {
    let mut received = Vec::with_capacity(n);
    while received.len() < n {
        let push = client
            .next_push(PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("after {} publications: {e}", received.len()));
        assert_eq!(push["push"], "publication", "{push}");
        assert_eq!(push["channel"], channel, "{push}");
        received.push(push);
    }
    received
}

/// Reads `channel`'s publications on `subscriber` up to the newest of `acked` and checks
/// that every acknowledged offset arrived, in order. A publication answered with 111 may
/// arrive too: its append can have landed while its reply was lost.
pub async fn every_acknowledged_arrives(
    subscriber: &NativeClient,
    channel: &str,
    acked: &std::collections::BTreeSet<u64>,
) {
    let Some(&last) = acked.last() else { return };
    let mut received = Vec::new();
    while received.last().is_none_or(|offset| *offset < last) {
        let push = publications(subscriber, channel, 1).await.remove(0);
        received.push(push["offset"].as_u64().expect("an offset"));
    }
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "in order: {received:?}"
    );
    let missing: Vec<&u64> = acked.iter().filter(|o| !received.contains(o)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged and never delivered: {missing:?}"
    );
}

/// The error object of a refused command, failing if it succeeded.
pub async fn refused(client: &NativeClient, method: &str, params: Value) -> Value {
    let reply = client.call(method, params).await.expect("a reply");
    reply
        .get("error")
        .cloned()
        .unwrap_or_else(|| panic!("{method} should be refused: {reply}"))
}

/// Publishes until `stop`, one publication every `every`, each acknowledged before the
/// next; returns the acknowledged offsets. Any refusal fails the test.
async fn publish_until(
    publisher: NativeClient,
    channel: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let mut acked = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let reply = publisher
            .call("publish", json!({ "channel": channel, "data": n }))
            .await
            .expect("a reply");
        let offset = reply["result"]["offset"].as_u64();
        acked.push(offset.unwrap_or_else(|| panic!("publish {n} refused: {reply}")));
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
    }
    acked
}

/// Socket.IO client options: WebSocket only, reconnecting within half a second.
pub fn quick_reconnects() -> Value {
    json!({
        "transports": ["websocket"],
        "reconnectionDelay": 200,
        "reconnectionDelayMax": 500,
    })
}

/// The close frame the server ends `client`'s connection with, within [`PATIENCE`].
pub async fn close_frame(client: &NativeClient) -> Closed {
    client
        .closed(PATIENCE)
        .await
        .unwrap()
        .expect("a close frame")
}
