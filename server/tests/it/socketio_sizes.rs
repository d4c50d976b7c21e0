//! Payload sizes Socket.IO users expect: events up to `socketio.max_payload` (1,000,000
//! bytes, the reference server's `maxHttpBufferSize`), binary attachments counted by their
//! raw size and carried raw across gateways; larger events refused with 112, and so is
//! what the NATS server's `max_payload` cannot carry.

use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Cluster, Server};
use serde_json::{Value, json};

use super::*;

fn websocket_only() -> Value {
    json!({ "transports": ["websocket"] })
}

async fn connected(library: Library, addr: std::net::SocketAddr) -> Agent {
    let mut agent = Agent::spawn(library, &format!("http://{addr}"), "/", websocket_only());
    agent.next("connect", PATIENCE).await.unwrap();
    agent
}

/// `n` bytes of a pattern no compression or off-by-one would keep.
fn bytes(n: usize) -> Value {
    json!({ "$binary": (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_text_and_binary_events_cross_gateways_intact() {
    let cluster = cluster(2, 1);
    let mut js = connected(Library::Js, cluster.gateways[0].addr()).await;
    let mut python = connected(Library::Python, cluster.gateways[0].addr()).await;
    let mut talker = connected(Library::Js, cluster.gateways[1].addr()).await;

    // 900,000 bytes of UTF-8 text in one event.
    let text = "字".repeat(300_000);
    let ack = talker
        .emit_ack("message", json!([text]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    for listener in [&mut js, &mut python] {
        let event = listener.next("event", PATIENCE).await.unwrap();
        assert!(
            event["args"] == json!([text]),
            "the 900 KB text arrived altered"
        );
    }
    // A 512 KiB photo with its caption.
    let photo = json!([bytes(512 * 1024), "a photo"]);
    let ack = talker
        .emit_ack("photo", photo.clone(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    for listener in [&mut js, &mut python] {
        let event = listener.next("event", PATIENCE).await.unwrap();
        assert_eq!(event["event"], "photo");
        assert!(
            event["args"] == photo,
            "the 512 KiB attachment arrived altered"
        );
    }

    // History pages are cut to fit a NATS message (1 MiB): the text first, then the rest
    // from where the page ended.
    let first = js
        .emit_ack("herald:history", json!([{ "limit": 10 }]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(first["truncated"], true, "two events do not fit in 1 MiB");
    assert_eq!(first["events"].as_array().map(Vec::len), Some(1));
    assert!(first["events"][0]["args"] == json!([text]));
    let since = first["events"][0]["offset"].clone();
    let rest = js
        .emit_ack(
            "herald:history",
            json!([{ "limit": 10, "since": since }]),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(
        rest["events"].as_array().map(Vec::len),
        Some(1),
        "{}",
        rest["offset"]
    );
    assert!(
        rest["events"][0]["args"] == photo,
        "the photo comes back from history"
    );
    assert!(rest.get("truncated").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_payload_is_refused_with_112() {
    let node = standalone(&[]);
    let mut talker = connected(Library::Js, node.addr()).await;
    let mut listener = connected(Library::Js, node.addr()).await;

    // Each attachment fits in one Engine.IO message; together they are over 1,000,000
    // bytes, counted raw. The Socket.IO layer refuses the event and keeps the connection.
    let ack = talker
        .emit_ack("photos", json!([bytes(600_000), bytes(600_000)]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], 112, "{ack}");
    let message = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("socketio.max_payload (1000000 bytes)"),
        "{message}"
    );
    let ack = talker
        .emit_ack("message", json!(["still here"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = listener.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        event["args"],
        json!(["still here"]),
        "nothing of the refused event"
    );

    // One Engine.IO message over the limit ends the connection, as with the reference
    // server; the client reconnects by itself.
    talker.emit("message", json!(["x".repeat(1_100_000)]));
    talker.next("disconnect", PATIENCE).await.unwrap();
    talker.next("connect", PATIENCE).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_nats_cannot_carry_is_refused_naming_its_limit() {
    let nats = Server::nats_with_config("max_payload: 262144\n");
    let env = [("HERALD_CHANNELS__DEFAULT__MAX_MESSAGE_SIZE", "1000000")];
    let cluster = Cluster::start_on(nats, herald(), 1, 1, &env);
    let mut talker = connected(Library::Js, cluster.gateways[0].addr()).await;
    let mut listener = connected(Library::Js, cluster.gateways[0].addr()).await;

    let ack = talker
        .emit_ack("message", json!(["x".repeat(300_000)]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 112, "{ack}");
    let message = ack["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("NATS max_payload, 262144 bytes"),
        "{message}"
    );
    let fits = "y".repeat(200_000);
    let ack = talker
        .emit_ack("message", json!([fits]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = listener.next("event", PATIENCE).await.unwrap();
    assert!(event["args"] == json!([fits]));

    // A native publish within the channel's max_message_size, but not within NATS's.
    let native = client(&cluster.ws_url(0)).await;
    let error = refused(
        &native,
        "publish",
        json!({ "channel": "news", "data": "z".repeat(300_000) }),
    )
    .await;
    assert_eq!(error["code"], 112, "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("NATS max_payload")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_recovers_events_larger_together_than_a_nats_message() {
    let cluster = cluster(2, 1);
    let url = format!("http://{}", cluster.gateways[0].addr());
    let options = json!({ "transports": ["websocket"], "auth": { "recovery": true } });
    let mut listener = Agent::spawn(Library::Js, &url, "/", options).with_offsets();
    let first = listener.next("connect", PATIENCE).await.unwrap();
    let mut talker = connected(Library::Js, cluster.gateways[1].addr()).await;
    talker.emit_ack("n", json!([0]), PATIENCE).await.unwrap();
    listener.next("event", PATIENCE).await.unwrap();

    listener.cut();
    listener.next("disconnect", PATIENCE).await.unwrap();
    // 1.8 MB missed: the replay takes several pages of history.
    for i in 1..=3 {
        let ack = talker
            .emit_ack("photo", json!([i, bytes(600_000)]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    listener.reconnect();
    let again = listener.next("connect", PATIENCE).await.unwrap();
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    for i in 1..=3 {
        let event = listener.next("event", PATIENCE).await.unwrap();
        assert_eq!(event["args"][0], i);
        assert!(
            event["args"][1] == bytes(600_000),
            "photo {i} arrived altered"
        );
    }
}
