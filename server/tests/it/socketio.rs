//! Stock Socket.IO clients (npm socket.io-client 4.8) against Herald, over WebSocket.

use std::time::Duration;

use herald_testkit::socketio::{Agent, Library};
use serde_json::{Value, json};

use super::*;

fn websocket_only() -> Value {
    json!({ "transports": ["websocket"] })
}

/// A JavaScript client on `namespace` of the node at `addr`, once it is connected.
async fn connected(addr: std::net::SocketAddr, namespace: &str) -> Agent {
    connected_with(Library::Js, addr, namespace).await
}

async fn connected_with(library: Library, addr: std::net::SocketAddr, namespace: &str) -> Agent {
    let url = format!("http://{addr}");
    let mut agent = Agent::spawn(library, &url, namespace, websocket_only());
    let connect = agent.next("connect", PATIENCE).await.unwrap();
    assert!(
        connect["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{connect}"
    );
    agent
}

/// Fails if an event arrives within a short while (the check is bounded, not a sync point).
async fn no_event(agent: &mut Agent) {
    let quiet = agent.next("event", Duration::from_millis(300)).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_crosses_gateways_to_every_other_socket() {
    let cluster = cluster(2, 1);
    let mut listener = connected(cluster.gateways[0].addr(), "/").await;
    let mut talker = connected(cluster.gateways[1].addr(), "/").await;

    let ack = talker
        .emit_ack("message", json!(["这是一条消息"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["offset"].as_u64().is_some(), "{ack}");
    let event = listener.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["event"], "message");
    assert_eq!(event["args"], json!(["这是一条消息"]));
    // The sender never gets its own event.
    no_event(&mut talker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_clients_talk_across_gateways() {
    let cluster = cluster(2, 1);
    let mut python = connected_with(Library::Python, cluster.gateways[0].addr(), "/chat").await;
    let mut js = connected_with(Library::Js, cluster.gateways[1].addr(), "/chat").await;

    let ack = python
        .emit_ack(
            "message",
            json!(["这是一条消息", {"from": "python"}]),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = js.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["这是一条消息", {"from": "python"}]));

    js.emit("message", json!(["reply", 2]));
    let event = python.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (event["event"].clone(), event["args"].clone()),
        (json!("message"), json!(["reply", 2]))
    );
}

#[tokio::test]
async fn rooms_namespaces_and_native_clients_interoperate() {
    let node = standalone(&[]);
    let mut in_room = connected(node.addr(), "/chat").await;
    let mut outside = connected(node.addr(), "/chat").await;
    let mut root = connected(node.addr(), "/").await;
    let native = client(&node.ws_url()).await;
    subscribe(&native, "/chat:lobby").await;

    assert_eq!(
        in_room
            .emit_ack("join", json!(["lobby"]), PATIENCE)
            .await
            .unwrap(),
        json!({"ok": true})
    );
    let ack = outside
        .emit_ack("to", json!(["lobby", "greet", "hi", {"n": 1}]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = in_room.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (event["event"].clone(), event["args"].clone()),
        (json!("greet"), json!(["hi", {"n": 1}]))
    );
    // A native subscriber of the room's channel sees the event envelope.
    let push = &publications(&native, "/chat:lobby", 1).await[0];
    assert_eq!(
        push["data"],
        json!({"event": "greet", "args": ["hi", {"n": 1}]})
    );
    // And a native publication reaches the room's sockets as a `message` event.
    publish(&native, "/chat:lobby", json!({"text": "from native"})).await;
    let event = in_room.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (event["event"].clone(), event["args"].clone()),
        (json!("message"), json!([{"text": "from native"}]))
    );
    // Neither the room's outsider nor another namespace saw any of it.
    no_event(&mut outside).await;
    no_event(&mut root).await;

    assert_eq!(
        in_room
            .emit_ack("leave", json!(["lobby"]), PATIENCE)
            .await
            .unwrap(),
        json!({"ok": true})
    );
    outside
        .emit_ack("to", json!(["lobby", "greet", 2]), PATIENCE)
        .await
        .unwrap();
    no_event(&mut in_room).await;
}

#[tokio::test]
async fn refused_requests_are_acked_with_an_error() {
    let node = standalone(&[]);
    let mut agent = connected(node.addr(), "/").await;
    for (event, args, code) in [
        ("join", json!([""]), 107),
        ("join", json!([42]), 107),
        ("to", json!(["room"]), 107),
        ("to", json!(["room", "join", 1]), 107),
    ] {
        let ack = agent.emit_ack(event, args.clone(), PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], false, "{event} {args}: {ack}");
        assert_eq!(ack["error"]["code"], code, "{event} {args}: {ack}");
        assert!(
            ack["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The connection is still fine.
    assert_eq!(
        agent
            .emit_ack("message", json!([1]), PATIENCE)
            .await
            .unwrap()["ok"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_senders_events_arrive_in_order() {
    let cluster = cluster(2, 2);
    let mut listener = connected(cluster.gateways[0].addr(), "/chat").await;
    let mut talker = connected(cluster.gateways[1].addr(), "/chat").await;
    for n in 0..100 {
        talker.emit("tick", json!([n]));
    }
    for n in 0..100 {
        let event = listener.next("event", PATIENCE).await.unwrap();
        assert_eq!(event["args"], json!([n]), "{event}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_arrive_intact_in_both_libraries() {
    let cluster = cluster(2, 1);
    let mut js = connected_with(Library::Js, cluster.gateways[0].addr(), "/files").await;
    let mut python = connected_with(Library::Python, cluster.gateways[1].addr(), "/files").await;
    let native = client(&cluster.ws_url(1)).await;
    subscribe(&native, "/files").await;

    let args = json!([{"$binary": [1, 2, 3]}, {"nested": {"$binary": [0, 255]}}, "caption"]);
    let ack = js.emit_ack("upload", args.clone(), PATIENCE).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = python.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (event["event"].clone(), event["args"].clone()),
        (json!("upload"), args)
    );
    // Native subscribers see the placeholders in the data and the attachments, base64,
    // beside it.
    let push = &publications(&native, "/files", 1).await[0];
    assert_eq!(push["attachments"], json!(["AQID", "AP8="]));
    assert_eq!(
        push["data"]["args"][0],
        json!({"_placeholder": true, "num": 0})
    );
    // And a native client publishes a binary event the same way.
    let params = json!({
        "channel": "/files",
        "data": {"event": "upload", "args": [{"_placeholder": true, "num": 0}]},
        "attachments": ["BQY="],
    });
    native.ok("publish", params).await.unwrap();
    for listener in [&mut js, &mut python] {
        let event = listener.next("event", PATIENCE).await.unwrap();
        assert_eq!(event["args"], json!([{"$binary": [5, 6]}]), "{event}");
    }
    // Attachments a Socket.IO client could not put back together are refused.
    let params = json!({
        "channel": "/files",
        "data": {"event": "upload", "args": [{"_placeholder": true, "num": 1}]},
        "attachments": ["BQY="],
    });
    assert_eq!(refused(&native, "publish", params).await["code"], 107);

    let back = json!([{"$binary": [9, 8, 7, 6]}]);
    python
        .emit_ack("download", back.clone(), PATIENCE)
        .await
        .unwrap();
    let event = js.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], back);
}

#[tokio::test]
async fn namespaces_outside_the_allow_list_are_refused() {
    let node = standalone(&[("HERALD_SOCKETIO__NAMESPACES", "[\"/\", \"/chat\"]")]);
    let url = format!("http://{}", node.addr());
    let mut refused = Agent::spawn(Library::Js, &url, "/admin", websocket_only());
    let error = refused.next("connect_error", PATIENCE).await.unwrap();
    // The reference server's words, and nothing else.
    assert_eq!(error["message"], "Invalid namespace", "{error}");
    assert_eq!(error.get("data"), None, "{error}");
    connected(node.addr(), "/chat").await;
}

/// An HS256 token for `sub`, expiring `ttl_secs` from now (negative: already expired).
fn token(secret: &str, sub: &str, ttl_secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({ "sub": sub, "exp": now + ttl_secs });
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_in_the_connect_auth_is_required_when_auth_is_on() {
    let node = standalone(&[
        ("HERALD_AUTH__HMAC_SECRET", "s3cret"),
        ("HERALD_AUTH__ANONYMOUS", "false"),
    ]);
    let url = format!("http://{}", node.addr());
    let with_auth = |auth: Value| json!({ "transports": ["websocket"], "auth": auth });
    for library in [Library::Js, Library::Python] {
        let good = with_auth(json!({ "token": token("s3cret", "alice", 60) }));
        let mut alice = Agent::spawn(library, &url, "/", good);
        alice.next("connect", PATIENCE).await.unwrap();
    }
    for (auth, message, code) in [
        (json!({}), "a token is required", 101),
        (
            json!({ "token": token("s3cret", "alice", -600) }),
            "the token has expired",
            109,
        ),
        (
            json!({ "token": token("guessed", "mallory", 60) }),
            "invalid token: InvalidSignature",
            101,
        ),
    ] {
        let mut refused = Agent::spawn(Library::Js, &url, "/", with_auth(auth));
        let error = refused.next("connect_error", PATIENCE).await.unwrap();
        assert_eq!(error["message"], message, "{error}");
        assert_eq!(error["data"]["code"], code, "{error}");
    }
}

#[tokio::test]
async fn a_direct_message_room_admits_only_its_users() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)]);
    let url = format!("http://{}", node.addr());
    let mut sockets = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let options = json!({
            "transports": ["websocket"],
            "auth": { "token": tokens::user(user, 600) },
        });
        let mut socket = Agent::spawn(Library::Js, &url, "/chat", options);
        socket.next("connect", PATIENCE).await.unwrap();
        sockets.push(socket);
    }
    let [alice, bob, carol] = &mut sockets[..] else {
        unreachable!("three sockets")
    };
    let room = "#alice,bob";
    for member in [&mut *alice, &mut *bob] {
        let ack = member
            .emit_ack("join", json!([room]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack, json!({"ok": true}));
    }
    let ack = carol
        .emit_ack("join", json!([room]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 103, "{ack}");
    let ack = carol
        .emit_ack("to", json!([room, "message", "let me in"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 103, "{ack}");
    let ack = alice
        .emit_ack("to", json!([room, "message", "hi bob"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = bob.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["hi bob"]));
    no_event(carol).await;
}
