//! `herald:history`, and who sent each publication: a Socket.IO chat screen loads its last
//! messages with their senders, pages back, then listens; every publication carries its
//! publisher as the server saw it, on every protocol, whatever the payload claims.

use herald_testkit::Cluster;
use herald_testkit::socketio::{Agent, Library};
use serde_json::{Value, json};

use super::*;
use crate::tokens::{self, SECRET, hs256};

fn options(token: &str) -> Value {
    json!({ "transports": ["websocket"], "auth": { "token": token } })
}

async fn connected(url: &str, namespace: &str, options: Value) -> (Agent, String) {
    let mut agent = Agent::spawn(Library::Js, url, namespace, options);
    let connect = agent.next("connect", PATIENCE).await.unwrap();
    (agent, connect["id"].as_str().unwrap().to_string())
}

async fn history(agent: &mut Agent, options: Value) -> Value {
    agent
        .emit_ack("herald:history", json!([options]), PATIENCE)
        .await
        .unwrap()
}

/// The first argument of each event of a history ack.
fn texts(ack: &Value) -> Vec<Value> {
    let events = ack["events"].as_array().cloned().unwrap_or_default();
    events.iter().map(|e| e["args"][0].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_screen_loads_the_last_messages_then_listens() {
    let cluster = Cluster::start(herald(), 2, 1, &[("HERALD_AUTH__HMAC_SECRET", SECRET)]);
    let (here, there) = (
        format!("http://{}", cluster.gateways[0].addr()),
        format!("http://{}", cluster.gateways[1].addr()),
    );
    let alice_token = hs256(&json!({ "sub": "alice", "info": { "name": "Alice" } }));
    let (mut alice, alice_sid) = connected(&there, "/chat", options(&alice_token)).await;
    for i in 1..=60 {
        let ack = alice
            .emit_ack("message", json!([format!("m{i}")]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    // A payload cannot claim another sender: `from` is the server's.
    let ack = alice
        .emit_ack(
            "message",
            json!([{ "from": { "user": "mallory" } }]),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");

    let (mut bob, _) = connected(&here, "/chat", options(&tokens::user("bob", 600))).await;
    let last = history(&mut bob, json!({ "limit": 50 })).await;
    assert_eq!(last["ok"], true, "{last}");
    let expected: Vec<Value> = (12..=60)
        .map(|i| json!(format!("m{i}")))
        .chain([json!({ "from": { "user": "mallory" } })])
        .collect();
    assert_eq!(texts(&last), expected);
    let events = last["events"].as_array().unwrap();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["event"], "message", "{event}");
        assert_eq!(event["offset"], 12 + i as u64, "in order: {event}");
        assert!(
            event["time"]
                .as_u64()
                .is_some_and(|t| t > 1_600_000_000_000)
        );
        assert_eq!(
            event["from"],
            json!({ "client": alice_sid, "user": "alice", "info": { "name": "Alice" } }),
            "{event}"
        );
    }
    assert_eq!(last["offset"], 61);
    assert!(last["epoch"].as_str().is_some_and(|e| !e.is_empty()));

    // Paging back from the oldest one shown, newest first.
    let older = history(
        &mut bob,
        json!({ "since": 12, "limit": 5, "reverse": true }),
    )
    .await;
    let expected: Vec<Value> = (7..=11).rev().map(|i| json!(format!("m{i}"))).collect();
    assert_eq!(texts(&older), expected);
    // And forward from an offset.
    let newer = history(&mut bob, json!({ "since": 58, "limit": 2 })).await;
    assert_eq!(texts(&newer), [json!("m59"), json!("m60")]);

    // Then it listens.
    alice
        .emit_ack("message", json!(["live"]), PATIENCE)
        .await
        .unwrap();
    let event = bob.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["live"]));

    // A room's history, with a binary event, its buffer back in place.
    let photo = json!({ "$binary": [1, 2, 3] });
    for args in [
        json!(["lobby", "message", "hello room"]),
        json!(["lobby", "photo", photo, "cat"]),
    ] {
        let ack = alice.emit_ack("to", args, PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let room = history(&mut bob, json!({ "room": "lobby" })).await;
    let events = room["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{room}");
    assert_eq!(
        (events[0]["event"].clone(), events[0]["args"].clone()),
        (json!("message"), json!(["hello room"]))
    );
    assert_eq!(
        (events[1]["event"].clone(), events[1]["args"].clone()),
        (json!("photo"), json!([photo, "cat"]))
    );

    // Native subscribers and the native history see the same sender.
    let native = client(&cluster.ws_url(0)).await;
    subscribe(&native, "/chat").await;
    alice
        .emit_ack("message", json!(["to native"]), PATIENCE)
        .await
        .unwrap();
    let push = &publications(&native, "/chat", 1).await[0];
    assert_eq!(push["from"]["client"], alice_sid, "{push}");
    assert_eq!(push["from"]["user"], "alice", "{push}");
    let page = native
        .ok("history", json!({ "channel": "/chat", "limit": 1 }))
        .await
        .unwrap();
    let item = &page["publications"][0];
    assert_eq!(
        item["data"],
        json!({ "event": "message", "args": ["to native"] })
    );
    assert_eq!(item["from"]["user"], "alice", "{item}");
    assert!(item["time"].as_u64().is_some(), "{item}");
}

#[tokio::test]
async fn history_obeys_the_channel_rules() {
    let config = r#"
        [auth]
        hmac_secret = "s3cret"
        [channels.namespaces."/vault"]
        read_history = "users"
        [channels.namespaces."/typing"]
        history_size = 0
    "#;
    let node = standalone_with_config(config, &[]);
    let url = format!("http://{}", node.addr());
    let anonymous = json!({ "transports": ["websocket"] });
    let (stranger, _) = connected(&url, "/vault", anonymous.clone()).await;
    let (member, _) = connected(&url, "/vault", options(&tokens::user("bob", 600))).await;
    let (typist, _) = connected(&url, "/typing", anonymous).await;
    let mut agents = [stranger, typist, member];
    for (agent, request, code) in [
        (0, json!({}), 103),
        (1, json!({}), 108),
        (2, json!({ "limit": 1001 }), 107),
        (2, json!({ "room": "" }), 107),
        (2, json!({ "page": 2 }), 107),
    ] {
        let ack = history(&mut agents[agent], request.clone()).await;
        assert_eq!(ack["ok"], false, "{request}: {ack}");
        assert_eq!(ack["error"]["code"], code, "{request}: {ack}");
    }
    let ack = history(&mut agents[2], json!(null)).await;
    assert_eq!(
        (ack["ok"].clone(), ack["events"].clone()),
        (json!(true), json!([]))
    );
}

#[tokio::test]
async fn a_namespace_can_have_every_event_end_with_its_sender() {
    let node = standalone(&[
        ("HERALD_AUTH__HMAC_SECRET", SECRET),
        ("HERALD_SOCKETIO__SENDER_NAMESPACES", "[\"/signed\"]"),
    ]);
    let url = format!("http://{}", node.addr());
    let alice = options(&hs256(
        &json!({ "sub": "alice", "info": { "name": "Alice" } }),
    ));
    let (mut talker, sid) = connected(&url, "/signed", alice.clone()).await;
    let (mut listener, _) = connected(&url, "/signed", options(&tokens::user("bob", 60))).await;
    let (mut plain_talker, _) = connected(&url, "/", alice).await;
    let (mut plain, _) = connected(&url, "/", json!({ "transports": ["websocket"] })).await;

    talker
        .emit_ack("message", json!(["hi", 2]), PATIENCE)
        .await
        .unwrap();
    let event = listener.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        event["args"],
        json!(["hi", 2, { "client": sid, "user": "alice", "info": { "name": "Alice" } }])
    );
    // Other namespaces keep exactly the emitted arguments.
    plain_talker
        .emit_ack("message", json!(["hi", 2]), PATIENCE)
        .await
        .unwrap();
    let event = plain.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["hi", 2]));
}
