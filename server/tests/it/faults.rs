//! Faults: NATS or Redis goes away while clients publish. Publishes are refused with a
//! retryable error, never dropped silently, and service resumes by itself.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use herald_testkit::{NatsCluster, Server, cluster};

use super::*;

/// Publishes until the predicate holds for a reply; every reply must be a success or a
/// temporary error. Returns the offsets acknowledged on the way and the reply that matched.
pub(crate) async fn publish_until(
    client: &NativeClient,
    channel: &str,
    acked: &mut BTreeSet<u64>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    let mut n = 0;
    loop {
        n += 1;
        let reply = client
            .call("publish", json!({"channel": channel, "data": {"n": n}}))
            .await
            .expect("every publish gets a reply");
        if let Some(offset) = reply["result"]["offset"].as_u64() {
            acked.insert(offset);
        } else {
            let error = &reply["error"];
            assert_eq!(error["code"], 111, "{reply}");
            assert_eq!(error["temporary"], true, "{reply}");
        }
        if done(&reply) {
            return reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

pub(crate) fn is_error(reply: &Value) -> bool {
    reply.get("error").is_some()
}

pub(crate) fn is_ok(reply: &Value) -> bool {
    reply.get("result").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_refuses_publishes_and_service_resumes() {
    let cluster = cluster(2, 1);
    let channel = "chat:outage";
    let publisher = client(&cluster.ws_url(0)).await;
    let subscriber = client(&cluster.ws_url(1)).await;
    subscribe(&subscriber, channel).await;
    nats_outage(cluster, &publisher, &subscriber, channel).await;
}

/// The same on a shared channel (a personal channel: both clients are devices of its
/// user), whose feed waits parked in its bucket, without a task, between publications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_on_a_shared_channel_is_caught_up_as_well() {
    let secret = [("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)];
    let cluster = Cluster::start(herald(), 2, 1, &secret);
    let token = tokens::user("alice", 600);
    let (publisher, _) = client_with_token(&cluster.ws_url(0), &token).await;
    let (subscriber, _) = client_with_token(&cluster.ws_url(1), &token).await;
    nats_outage(cluster, &publisher, &subscriber, "user:#alice").await;
}

/// Publishes on `channel` before, during and after a NATS outage; the subscriber must get
/// every acknowledged publication, in order.
async fn nats_outage(
    mut cluster: Cluster,
    publisher: &NativeClient,
    subscriber: &NativeClient,
    channel: &str,
) {
    let mut acked = BTreeSet::new();
    publish_until(publisher, channel, &mut acked, is_ok).await;

    cluster.nats.stop();
    let refusal = publish_until(publisher, channel, &mut acked, is_error).await;
    assert!(refusal["error"]["message"].as_str().unwrap().len() > 3);
    cluster.nats.restart();
    publish_until(publisher, channel, &mut acked, is_ok).await;

    // Every acknowledged publication reaches the subscriber, the ones around the outage
    // included (missed deliveries are caught up from history), in order.
    every_acknowledged_arrives(subscriber, channel, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_publishes_and_service_resumes() {
    let mut cluster = cluster(1, 1);
    let channel = "chat:redis";
    let publisher = client(&cluster.ws_url(0)).await;
    let subscriber = client(&cluster.ws_url(0)).await;
    subscribe(&subscriber, channel).await;
    let mut acked = BTreeSet::new();
    publish_until(&publisher, channel, &mut acked, is_ok).await;
    publications(&subscriber, channel, 1).await;

    cluster.redis.stop();
    publish_until(&publisher, channel, &mut acked, is_error).await;
    cluster.redis.restart();
    // Redis kept nothing, so the channel starts over in a new epoch.
    let resumed = publish_until(&publisher, channel, &mut acked, is_ok).await;
    assert_eq!(resumed["result"]["offset"], 1);
    let push = &publications(&subscriber, channel, 1).await[0];
    assert_eq!(push["offset"], 1);
    assert_eq!(push["epoch"], resumed["result"]["epoch"]);
}

/// A NATS cluster of three loses the server a gateway is connected to, SIGKILLed while a
/// client publishes: the nodes move to the other servers by themselves, the clients stay
/// connected, and every acknowledged publication reaches the subscriber, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_of_a_cluster_killed_mid_traffic_loses_no_acknowledged_publication() {
    let mut nats = NatsCluster::start(3);
    let redis = Server::redis();
    let (urls, redis_url) = (nats.urls(), redis.url());
    let binary = std::path::Path::new(herald());
    let _router = cluster::router(binary, "router-1", &urls, Some(&redis_url), &[]);
    let gateways =
        ["gateway-1", "gateway-2"].map(|name| cluster::gateway(binary, name, &urls, &[]));
    let channel = "chat:nats-cluster";
    let publisher = client(&gateways[0].ws_url()).await;
    let subscriber = client(&gateways[1].ws_url()).await;
    subscribe(&subscriber, channel).await;

    let mut acked = BTreeSet::new();
    for _ in 0..50 {
        let result = publish(&publisher, channel, json!("before")).await;
        acked.insert(result["offset"].as_u64().expect("an offset"));
    }
    let victim = nats.serving("gateway-1").expect("gateway-1 is connected");
    nats.nodes[victim].stop();
    // Until the publisher's gateway has moved over, publishes may be refused (111); then
    // they are acknowledged again.
    let target = acked.len() + 100;
    let (killed, mut refused) = (tokio::time::Instant::now(), 0);
    let deadline = killed + PATIENCE * 2;
    while acked.len() < target {
        let reply = publisher
            .call("publish", json!({"channel": channel, "data": "during"}))
            .await
            .expect("the client stays connected and every publish gets a reply");
        match reply["result"]["offset"].as_u64() {
            Some(offset) => {
                acked.insert(offset);
            }
            None => {
                assert_eq!(reply["error"]["code"], 111, "{reply}");
                refused += 1;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishes did not resume"
        );
    }
    // For docs/operations.md (`--no-capture`).
    println!(
        "NATS server killed: {refused} publishes refused; 100 acknowledged in {:?}",
        killed.elapsed()
    );
    let moved = nats.serving("gateway-1");
    assert!(
        moved.is_some() && moved != Some(victim),
        "gateway-1 moved: {moved:?}"
    );
    every_acknowledged_arrives(&subscriber, channel, &acked).await;
}
