//! Cluster mode: NATS, Redis, two gateways and two routers. The servers are real processes,
//! the nodes run in the test process: what is tested here is the cluster's behaviour.

use std::collections::HashMap;

use serde_json::json;

use super::inprocess::Cluster;
use super::*;

/// Sends `count` publishes from a new client on `url`, up to 64 in flight, and waits for
/// every acknowledgement.
async fn publish_pipelined(url: String, channel: &'static str, name: &'static str, count: usize) {
    let publisher = client(&url).await;
    let mut in_flight = std::collections::VecDeque::new();
    for n in 0..count {
        let params = json!({"channel": channel, "data": {"from": name, "n": n}});
        in_flight.push_back(publisher.start("publish", params).await.unwrap());
        if in_flight.len() == 64 {
            let reply = in_flight.pop_front().unwrap().await.unwrap();
            assert!(reply.get("result").is_some(), "{reply}");
        }
    }
    for reply in in_flight {
        let reply = reply.await.unwrap();
        assert!(reply.get("result").is_some(), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_both_gateways_in_order_without_gaps() {
    let history = [("HERALD_CHANNELS__DEFAULT__HISTORY_SIZE", "2000")];
    let cluster = Cluster::start(2, 2, &history).await;
    let channel = "chat:order";
    let on_a = client(&cluster.ws_url(0)).await;
    let on_b = client(&cluster.ws_url(1)).await;
    subscribe(&on_a, channel).await;
    subscribe(&on_b, channel).await;

    // 1,000 publications from a client on gateway A while a client on gateway B publishes
    // 500 more: both routers assign offsets concurrently, and publications can overtake
    // each other on the bus.
    let from_a = tokio::spawn(publish_pipelined(cluster.ws_url(0), channel, "a", 1000));
    let from_b = tokio::spawn(publish_pipelined(cluster.ws_url(1), channel, "b", 500));
    from_a.await.unwrap();
    from_b.await.unwrap();
    const TOTAL: usize = 1500;

    for subscriber in [&on_a, &on_b] {
        let received = publications(subscriber, channel, TOTAL).await;
        let mut next_per_sender: HashMap<String, u64> = HashMap::new();
        for (i, push) in received.iter().enumerate() {
            assert_eq!(push["offset"], i as u64 + 1, "consecutive offsets");
            let sender = push["data"]["from"].as_str().unwrap().to_string();
            let expected = next_per_sender.entry(sender).or_default();
            assert_eq!(push["data"]["n"], *expected, "each sender's order is kept");
            *expected += 1;
        }
        assert_eq!(next_per_sender["a"], 1000);
    }

    // History holds all of them (in two pages: one call returns at most 1,000).
    let mut offsets = Vec::new();
    while offsets.len() < TOTAL {
        let page = on_a
            .ok(
                "history",
                json!({"channel": channel, "since": offsets.len(), "limit": 1000}),
            )
            .await
            .unwrap();
        let publications = page["publications"].as_array().unwrap();
        assert!(!publications.is_empty());
        offsets.extend(publications.iter().map(|p| p["offset"].as_u64().unwrap()));
    }
    let expected: Vec<u64> = (1..=TOTAL as u64).collect();
    assert!(offsets == expected, "history offsets are not 1..={TOTAL}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_with_special_characters_and_without_history_cross_gateways() {
    let settings = [("HERALD_CHANNELS__NAMESPACES__LIVE__HISTORY_SIZE", "0")];
    let cluster = Cluster::start(2, 1, &settings).await;
    let a = client(&cluster.ws_url(0)).await;
    let b = client(&cluster.ws_url(1)).await;
    for channel in ["/chat:lobby", "a.b*c>d e", "live:cursor"] {
        subscribe(&b, channel).await;
        publish(&a, channel, json!({"where": channel})).await;
        let push = &publications(&b, channel, 1).await[0];
        assert_eq!(push["data"]["where"], channel);
    }
    // No history: no offset on the push.
    publish(&a, "live:cursor", json!(2)).await;
    let push = &publications(&b, "live:cursor", 1).await[0];
    assert!(push.get("offset").is_none(), "{push}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_through_another_gateway_is_stored_once() {
    let cluster = Cluster::start(2, 2, &[]).await;
    let a = client(&cluster.ws_url(0)).await;
    let b = client(&cluster.ws_url(1)).await;
    let params = json!({"channel": "orders", "data": {"id": 1}, "idempotency_key": "k-1"});
    let first = a.ok("publish", params.clone()).await.unwrap();
    let retry = b.ok("publish", params).await.unwrap();
    assert_eq!(first, retry);
    let history = a.ok("history", json!({"channel": "orders"})).await.unwrap();
    assert_eq!(history["publications"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_are_answered_in_order_with_per_channel_offsets() {
    let cluster = Cluster::start(2, 2, &[]).await;
    let publisher = client(&cluster.ws_url(0)).await;
    let watcher = client(&cluster.ws_url(1)).await;
    subscribe(&watcher, "p:one").await;
    subscribe(&watcher, "p:two").await;

    // Sent back to back without waiting, so the gateway reads them as one burst.
    let mut commands = Vec::new();
    for n in 0..300 {
        let params = match n % 50 {
            7 => json!({"channel": "", "data": n}),
            13 => json!({"channel": "p:one", "data": "x".repeat(70_000)}),
            21 => json!({"channel": "p:one", "data": n, "idempotency_key": "same"}),
            _ => json!({"channel": if n % 2 == 0 { "p:one" } else { "p:two" }, "data": n}),
        };
        let method = if n % 50 == 30 { "ping" } else { "publish" };
        let params = if method == "ping" { json!({}) } else { params };
        commands.push((
            n,
            method,
            params.clone(),
            publisher.start(method, params).await.unwrap(),
        ));
    }
    let mut next_offset: HashMap<&str, u64> = HashMap::new();
    let mut keyed_offset = None;
    for (n, method, params, reply) in commands {
        let reply = reply.await.unwrap();
        match (method, n % 50) {
            ("ping", _) => assert_eq!(reply["result"], json!({}), "{reply}"),
            (_, 7) => assert_eq!(reply["error"]["code"], 102, "{reply}"),
            (_, 13) => assert_eq!(reply["error"]["code"], 112, "{reply}"),
            (_, 21) => {
                let offset = reply["result"]["offset"].as_u64().unwrap();
                match keyed_offset {
                    None => {
                        keyed_offset = Some(offset);
                        *next_offset.entry("p:one").or_insert(1) += 1;
                    }
                    Some(first) => assert_eq!(offset, first, "a repeated key is stored once"),
                }
            }
            _ => {
                let channel = if params["channel"] == "p:one" {
                    "p:one"
                } else {
                    "p:two"
                };
                let expected = next_offset.entry(channel).or_insert(1);
                assert_eq!(reply["result"]["offset"], *expected, "{n}: {reply}");
                *expected += 1;
            }
        }
    }
    // The watcher sees each channel's publications in order, each once.
    let stored_one = next_offset["p:one"] - 1;
    let stored_two = next_offset["p:two"] - 1;
    let mut seen: HashMap<String, u64> = HashMap::new();
    for _ in 0..stored_one + stored_two {
        let push = watcher.next_push(PATIENCE).await.unwrap();
        let last = seen
            .entry(push["channel"].as_str().unwrap().into())
            .or_default();
        assert_eq!(push["offset"], *last + 1, "{push}");
        *last += 1;
    }
    assert_eq!((seen["p:one"], seen["p:two"]), (stored_one, stored_two));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_nodes_return_once_every_service_has_stopped() {
    let settings = [("HERALD_GATEWAY__DRAIN_PERIOD", "100ms")];
    let mut cluster = Cluster::start(1, 1, &settings).await;
    let a = client(&cluster.ws_url(0)).await;
    subscribe(&a, "chat").await;
    publish(&a, "chat", json!(1)).await;
    let gateway = cluster.gateways.pop().expect("a gateway");
    gateway.stop().await.expect("the gateway drains and stops");
    let closed = close_frame(&a).await;
    assert_eq!(closed.code, 3000, "sent away to reconnect elsewhere");
    let router = cluster.routers.pop().expect("a router");
    router
        .stop()
        .await
        .expect("the router and its services stop");
}

/// Personal channels are delivered through their bucket's subscription (shared delivery):
/// a gateway receives the publications of every channel in the bucket, and each must
/// still reach its own subscribers only, across gateways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_channels_in_one_bucket_reach_their_own_users_only() {
    use herald_core::subjects::bucket_of;

    let secret = [("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)];
    let cluster = Cluster::start(2, 1, &secret).await;
    let bucket = bucket_of("user:#alice");
    let mut others = (0..)
        .map(|n| format!("user{n}"))
        .filter(|user| bucket_of(&format!("user:#{user}")) == bucket);
    let (bob, carol) = (others.next().unwrap(), others.next().unwrap());
    let connect = |gateway: usize, user: &str| {
        let url = cluster.ws_url(gateway);
        let token = tokens::user(user, 600);
        async move { client_with_token(&url, &token).await.0 }
    };
    let alice_a = connect(0, "alice").await;
    let alice_b = connect(1, "alice").await;
    let bob_b = connect(1, &bob).await;
    let carol_a = connect(0, &carol).await;

    let mut sent = Vec::new();
    for n in 0..3 {
        for (client, user) in [(&alice_a, "alice"), (&bob_b, &bob), (&carol_a, &carol)] {
            let channel = format!("user:#{user}");
            publish(client, &channel, json!({ "from": user, "n": n })).await;
            sent.push((user.to_string(), n));
        }
    }
    for (client, user) in [
        (&alice_a, "alice"),
        (&alice_b, "alice"),
        (&bob_b, bob.as_str()),
        (&carol_a, carol.as_str()),
    ] {
        let got = publications(client, &format!("user:#{user}"), 3).await;
        let data: Vec<Value> = got.iter().map(|p| p["data"].clone()).collect();
        let expected: Vec<Value> = (0..3).map(|n| json!({ "from": user, "n": n })).collect();
        assert_eq!(data, expected, "{user}");
    }
    // Whatever else a gateway received from the bucket went to nobody: one more
    // publication each, and it is the next thing each connection gets.
    for (client, user) in [(&alice_a, "alice"), (&bob_b, &bob), (&carol_a, &carol)] {
        publish(client, &format!("user:#{user}"), json!("last")).await;
    }
    for (client, user) in [
        (&alice_b, "alice"),
        (&bob_b, bob.as_str()),
        (&carol_a, carol.as_str()),
    ] {
        let last = publications(client, &format!("user:#{user}"), 1).await;
        assert_eq!(last[0]["data"], "last", "{user}");
    }
}
