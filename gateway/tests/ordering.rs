//! The ordering guarantee end to end inside one process: publications that arrive out of
//! order, twice, or not at all still reach a subscriber in offset order, once each.
//!
//! The test stores publications through the real router's history store and then plays
//! the bus itself, delivering only some of them, in the wrong order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, MemoryBus};
use herald_core::config::Config;
use herald_core::subjects::Subjects;
use herald_gateway::Gateway;
use herald_proto::bus::v1::Publication;
use herald_router::RouterService;
use herald_router::history::{Append, Entry, HistoryStore, Limits, MemoryHistory};
use herald_testkit::{NativeClient, wait_for_async};
use prost::Message;
use serde_json::json;

const CHANNEL: &str = "chat:gaps";

struct Node {
    bus: Arc<MemoryBus>,
    store: Arc<MemoryHistory>,
    subjects: Subjects,
    url: String,
}

/// A node whose `chat` channels are delivered with `delivery` ("channel" or "shared").
async fn node(delivery: &str) -> Node {
    let toml = format!("[channels.namespaces.chat]\ndelivery = \"{delivery}\"");
    let mut config = Config::from_toml(&toml).unwrap();
    config.gateway.gap_hold = Duration::from_millis(50);
    let bus = Arc::new(MemoryBus::new());
    let store = Arc::new(MemoryHistory::new());
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let router = RouterService::new(
        bus.clone(),
        store.clone(),
        subjects.clone(),
        config.channels.clone(),
        config.router.clone(),
    );
    tokio::spawn(router.clone().run(std::future::pending()));
    assert!(wait_for_async(Duration::from_secs(10), || router.ready()).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/connection/websocket",
        listener.local_addr().unwrap()
    );
    let gateway = Gateway::new("gw", &config, bus.clone()).unwrap();
    let listeners = herald_gateway::Listeners {
        clients: listener,
        probes: None,
        control: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    tokio::spawn(herald_gateway::serve(
        listeners,
        gateway,
        std::future::pending(),
    ));
    Node {
        bus,
        store,
        subjects,
        url,
    }
}

impl Node {
    /// Stores publications with data `n` for each n, without delivering them.
    async fn store(&self, ns: std::ops::RangeInclusive<u64>) -> Vec<Publication> {
        let entries = ns
            .clone()
            .map(|n| Entry {
                data: Bytes::from(n.to_string()),
                ..Default::default()
            })
            .collect();
        let limits = Limits {
            size: 100,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(600),
            idempotency_ttl: Duration::from_secs(60),
        };
        let appended = self
            .store
            .append(Append {
                channel: CHANNEL.into(),
                entries,
                limits,
            })
            .await
            .unwrap();
        appended
            .into_iter()
            .zip(ns)
            .map(|(a, n)| Publication {
                channel: CHANNEL.into(),
                offset: a.offset,
                epoch: a.epoch,
                data: Bytes::from(n.to_string()),
                ..Default::default()
            })
            .collect()
    }

    /// Delivers one publication on the channel's subject, as a router would.
    async fn deliver(&self, publication: &Publication) {
        self.bus
            .publish(
                self.subjects.delivery(CHANNEL),
                Bytes::from(publication.encode_to_vec()),
            )
            .await
            .unwrap();
    }
}

async fn next_offsets(client: &NativeClient, n: usize) -> Vec<u64> {
    let mut offsets = Vec::new();
    for _ in 0..n {
        let push = client.next_push(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            push["data"], push["offset"],
            "data and offset agree: {push}"
        );
        offsets.push(push["offset"].as_u64().unwrap());
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_filled_from_history_and_duplicates_dropped() {
    gaps_and_duplicates(node("channel").await).await;
}

/// The same through the bucket's subscription, where the channel's feed parks whenever it
/// is idle and wakes up for each publication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_filled_and_duplicates_dropped_on_a_shared_channel_too() {
    gaps_and_duplicates(node("shared").await).await;
}

async fn gaps_and_duplicates(node: Node) {
    let client = NativeClient::connect(&node.url).await.unwrap();
    let start = client
        .ok("subscribe", json!({"channel": CHANNEL}))
        .await
        .unwrap();
    assert_eq!(start["offset"], 0);

    // 1 and 2 are lost on the bus; 3 arrives and waits for them.
    let published = node.store(1..=3).await;
    node.deliver(&published[2]).await;
    assert_eq!(next_offsets(&client, 3).await, [1, 2, 3]);

    // Late copies of delivered publications are dropped.
    node.deliver(&published[0]).await;
    node.deliver(&published[2]).await;

    // 5 overtakes 4: it is held until 4 arrives.
    let published = node.store(4..=6).await;
    node.deliver(&published[1]).await;
    node.deliver(&published[0]).await;
    node.deliver(&published[2]).await;
    assert_eq!(next_offsets(&client, 3).await, [4, 5, 6]);
    assert!(
        client
            .next_event(Duration::from_millis(200))
            .await
            .is_none(),
        "nothing more: no duplicates"
    );
}
