//! Bad input gets its documented error, or a close with a reason for protocol violations,
//! and never harms the node or other connections.

use std::time::Duration;

use herald_testkit::client::Closed;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::*;

const SMALL_FRAMES: [(&str, &str); 2] = [
    ("HERALD_GATEWAY__MAX_FRAME_SIZE", "4096"),
    ("HERALD_CHANNELS__DEFAULT__MAX_MESSAGE_SIZE", "1024"),
];

/// A bystander that must keep working whatever the others do.
async fn bystander(node: &HeraldProcess) -> (NativeClient, NativeClient) {
    let listener = client(&node.ws_url()).await;
    subscribe(&listener, "calm").await;
    let talker = client(&node.ws_url()).await;
    (listener, talker)
}

async fn bystander_still_served(
    node: &HeraldProcess,
    listener: &NativeClient,
    talker: &NativeClient,
) {
    let ack = publish(talker, "calm", json!("still here")).await;
    let push = &publications(listener, "calm", 1).await[0];
    assert_eq!(push["offset"], ack["offset"]);
    assert_eq!(
        herald_testkit::node::http_status(node.addr(), "/healthz"),
        Some(200)
    );
}

async fn expect_close(client: &NativeClient, code: u16) {
    let closed = client.closed(PATIENCE).await.unwrap();
    let Some(Closed { code: got, reason }) = closed else {
        panic!("closed without a close frame");
    };
    assert_eq!(got, code, "reason: {reason}");
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn malformed_commands_get_errors_and_the_connection_stays() {
    let node = standalone(&SMALL_FRAMES);
    let (listener, talker) = bystander(&node).await;

    let fresh = NativeClient::open(&node.ws_url()).await.unwrap();
    let error = refused(&fresh, "publish", json!({"channel": "calm", "data": 1})).await;
    assert_eq!(error["code"], 110, "publish before connect");
    assert_eq!(error["temporary"], false);
    fresh.ok("connect", json!({})).await.unwrap();
    assert_eq!(refused(&fresh, "connect", json!({})).await["code"], 114);

    assert_eq!(refused(&fresh, "teleport", json!({})).await["code"], 104);
    assert_eq!(refused(&fresh, "subscribe", json!({})).await["code"], 107);
    assert_eq!(
        refused(&fresh, "publish", json!({"channel": "c"})).await["code"],
        107
    );
    assert_eq!(
        refused(&fresh, "history", json!({"channel": "c", "limit": "x"})).await["code"],
        107
    );
    assert_eq!(
        refused(&fresh, "history", json!({"channel": "c", "limit": 5000})).await["code"],
        107
    );
    for bad in [json!(""), json!("a\u{0007}b"), json!("x".repeat(300))] {
        let error = refused(&fresh, "subscribe", json!({ "channel": bad })).await;
        assert_eq!(error["code"], 102, "{bad}");
        assert!(error["message"].as_str().unwrap().contains("channel name"));
    }
    let big = "x".repeat(2000);
    let error = refused(&fresh, "publish", json!({"channel": "c", "data": big})).await;
    assert_eq!(error["code"], 112);
    subscribe(&fresh, "dup").await;
    assert_eq!(
        refused(&fresh, "subscribe", json!({"channel": "dup"})).await["code"],
        105
    );
    // After all of that, the connection still works.
    fresh.ok("ping", json!({})).await.unwrap();
    bystander_still_served(&node, &listener, &talker).await;
}

#[tokio::test]
async fn protocol_violations_close_with_a_reason() {
    let node = standalone(&SMALL_FRAMES);
    let (listener, talker) = bystander(&node).await;

    let cases: Vec<(Message, u16)> = vec![
        (Message::text("this is not json"), 3501),
        (Message::text(r#"{"method":"ping"}"#), 3501),
        (Message::text("{\"id\":1,"), 3501),
        (
            Message::binary(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]),
            3501,
        ),
        (
            Message::text(format!(
                r#"{{"id":1,"method":"ping","pad":"{}"}}"#,
                "x".repeat(5000)
            )),
            3502,
        ),
    ];
    for (frame, code) in cases {
        let victim = client(&node.ws_url()).await;
        victim.send(frame).await.unwrap();
        expect_close(&victim, code).await;
    }
    bystander_still_served(&node, &listener, &talker).await;
}

#[tokio::test]
async fn a_client_that_never_connects_is_closed_after_the_deadline() {
    let node = standalone(&[("HERALD_GATEWAY__CONNECT_TIMEOUT", "300ms")]);
    let idle = NativeClient::open(&node.ws_url()).await.unwrap();
    expect_close(&idle, 3503).await;
    // One that connected in time stays open past the deadline.
    let active = client(&node.ws_url()).await;
    assert!(
        active
            .next_event(Duration::from_millis(600))
            .await
            .is_none()
    );
    active.ok("ping", json!({})).await.unwrap();
}
