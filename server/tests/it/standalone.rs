//! Standalone mode: one node, no NATS or Redis; in the test process, except where the
//! process itself is the point (signals).

use herald_testkit::NativeClient;
use serde_json::json;

use super::*;

#[tokio::test]
async fn two_clients_exchange_publications() {
    let node = inprocess::standalone(&[]).await;
    let alice = client(&node.ws_url()).await;
    let bob = client(&node.ws_url()).await;
    let start = subscribe(&bob, "chat:lobby").await;
    // A channel that never had a publication has no stream yet: offset 0, no epoch.
    assert_eq!((&start["offset"], &start["epoch"]), (&json!(0), &json!("")));
    subscribe(&alice, "chat:lobby").await;

    let ack = publish(&alice, "chat:lobby", json!({"text": "这是一条消息"})).await;
    assert_eq!(ack["offset"], 1);
    assert!(
        ack["epoch"].as_str().is_some_and(|e| !e.is_empty()),
        "{ack}"
    );
    for receiver in [&bob, &alice] {
        let push = &publications(receiver, "chat:lobby", 1).await[0];
        assert_eq!(push["data"], json!({"text": "这是一条消息"}));
        assert_eq!(push["offset"], 1);
        assert_eq!(push["epoch"], ack["epoch"]);
    }

    let ack = publish(&bob, "chat:lobby", json!([1, 2.5, null, {"nested": ["x"]}])).await;
    assert_eq!(ack["offset"], 2);
    let push = &publications(&alice, "chat:lobby", 1).await[0];
    assert_eq!(push["data"], json!([1, 2.5, null, {"nested": ["x"]}]));
}

#[tokio::test]
async fn history_returns_the_newest_or_those_after_an_offset() {
    let node = inprocess::standalone(&[]).await;
    let c = client(&node.ws_url()).await;
    for n in 1..=5 {
        publish(&c, "news", json!({ "n": n })).await;
    }
    let offsets = |result: &serde_json::Value| -> Vec<u64> {
        result["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let last3 = c
        .ok("history", json!({"channel": "news", "limit": 3}))
        .await
        .unwrap();
    assert_eq!(offsets(&last3), [3, 4, 5]);
    assert_eq!(last3["offset"], 5);
    assert_eq!(last3["publications"][0]["data"], json!({"n": 3}));
    let since = c
        .ok("history", json!({"channel": "news", "since": 3}))
        .await
        .unwrap();
    assert_eq!(offsets(&since), [4, 5]);
    let newest_first = c
        .ok(
            "history",
            json!({"channel": "news", "limit": 2, "reverse": true}),
        )
        .await
        .unwrap();
    assert_eq!(offsets(&newest_first), [5, 4]);
}

#[tokio::test]
async fn an_idempotent_retry_is_stored_once() {
    let node = inprocess::standalone(&[]).await;
    let c = client(&node.ws_url()).await;
    let params = json!({"channel": "orders", "data": {"id": 7}, "idempotency_key": "order-7"});
    let first = c.ok("publish", params.clone()).await.unwrap();
    let retry = c.ok("publish", params).await.unwrap();
    assert_eq!(first, retry);
    let history = c.ok("history", json!({"channel": "orders"})).await.unwrap();
    assert_eq!(history["publications"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn channels_without_history_skip_offsets() {
    let settings = [("HERALD_CHANNELS__NAMESPACES__TYPING__HISTORY_SIZE", "0")];
    let node = inprocess::standalone(&settings).await;
    let a = NativeClient::open(&node.ws_url()).await.unwrap();
    let connected = a.ok("connect", json!({})).await.unwrap();
    let a_id = connected["client"].clone();
    let b = client(&node.ws_url()).await;
    assert_eq!(subscribe(&b, "typing:room").await, json!({}));
    assert_eq!(publish(&a, "typing:room", json!("alice")).await, json!({}));
    let push = &publications(&b, "typing:room", 1).await[0];
    let from = json!({"client": a_id});
    assert_eq!(
        push,
        &json!({"push": "publication", "channel": "typing:room", "data": "alice", "from": from})
    );
    let error = refused(&a, "history", json!({"channel": "typing:room"})).await;
    assert_eq!(error["code"], 108);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let node = inprocess::standalone(&[]).await;
    let a = client(&node.ws_url()).await;
    let b = client(&node.ws_url()).await;
    subscribe(&b, "c").await;
    subscribe(&b, "d").await;
    b.ok("unsubscribe", json!({"channel": "c"})).await.unwrap();
    publish(&a, "c", json!(1)).await;
    publish(&a, "d", json!(2)).await;
    publish(&a, "d", json!(3)).await;
    // Only "d" arrives: `publications` fails on a push of any other channel.
    let pushes = publications(&b, "d", 2).await;
    assert_eq!(
        (pushes[0]["data"].clone(), pushes[1]["data"].clone()),
        (json!(2), json!(3))
    );
    let error = refused(&b, "unsubscribe", json!({"channel": "c"})).await;
    assert_eq!(error["code"], 113);
}

#[tokio::test]
async fn sigterm_closes_every_connection_with_shutdown_and_exits_cleanly() {
    let mut node = standalone(&[("HERALD_GATEWAY__DRAIN_PERIOD", "1s")]);
    let a = client(&node.ws_url()).await;
    let b = client(&node.ws_url()).await;
    subscribe(&a, "news").await;
    node.terminate();
    for c in [&a, &b] {
        let push = c.next_push(PATIENCE).await.unwrap();
        assert_eq!(
            push,
            json!({"push": "disconnect", "code": 3000, "reason": "shutdown", "reconnect": true})
        );
        let closed = c.closed(PATIENCE).await.unwrap().unwrap();
        assert_eq!(closed.code, 3000);
    }
    let status = node.wait_exit(PATIENCE).expect("the node exits");
    assert!(status.success(), "{status}");
}
