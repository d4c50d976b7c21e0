//! Channel rules on a real node: who may subscribe, publish and read history, user-limited
//! and personal channels, publish rates, message sizes, the `Origin` allow-list and the
//! connection limit. Every refusal carries its documented code.

use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{NativeClient, wait_for_async};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::tokens::{self, SECRET, hs256, now};
use crate::{
    PATIENCE, client, client_with_token, inprocess, publications, publish, refused,
    standalone_with_config, subscribe,
};

const RULES: [(&str, &str); 9] = [
    ("HERALD_AUTH__HMAC_SECRET", SECRET),
    ("HERALD_CHANNELS__NAMESPACES__MEMBERS__SUBSCRIBE", "users"),
    ("HERALD_CHANNELS__NAMESPACES__VIP__SUBSCRIBE", "granted"),
    ("HERALD_CHANNELS__NAMESPACES__VIP__PUBLISH", "granted"),
    ("HERALD_CHANNELS__NAMESPACES__FEED__PUBLISH", "none"),
    (
        "HERALD_CHANNELS__NAMESPACES__ARCHIVE__READ_HISTORY",
        "users",
    ),
    ("HERALD_CHANNELS__NAMESPACES__SLOW__PUBLISH_RATE", "0.01"),
    ("HERALD_CHANNELS__NAMESPACES__SLOW__PUBLISH_BURST", "2"),
    ("HERALD_CHANNELS__NAMESPACES__SMALL__MAX_MESSAGE_SIZE", "16"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_admits_whom_it_names_and_refuses_the_rest() {
    let node = inprocess::standalone(&RULES).await;
    let url = node.ws_url();
    let anonymous = client(&url).await;
    let (alice, _) = client_with_token(&url, &tokens::user("alice", 600)).await;
    let granted = hs256(&json!({ "sub": "bob", "exp": now() + 600, "channels": ["vip:*"] }));
    let (bob, _) = client_with_token(&url, &granted).await;

    let denied = |error: serde_json::Value| {
        assert_eq!(error["code"], 103, "{error}");
        assert_eq!(error["temporary"], false, "{error}");
    };
    // subscribe = "users"
    denied(refused(&anonymous, "subscribe", json!({ "channel": "members:x" })).await);
    subscribe(&alice, "members:x").await;
    // subscribe/publish = "granted"
    denied(refused(&alice, "subscribe", json!({ "channel": "vip:x" })).await);
    let vip = json!({ "channel": "vip:x", "data": 1 });
    denied(refused(&alice, "publish", vip.clone()).await);
    subscribe(&bob, "vip:x").await;
    bob.ok("publish", vip).await.unwrap();
    // publish = "none": clients read only.
    subscribe(&anonymous, "feed:x").await;
    denied(refused(&bob, "publish", json!({ "channel": "feed:x", "data": 1 })).await);
    // read_history = "users"
    publish(&alice, "archive:x", json!("kept")).await;
    denied(refused(&anonymous, "history", json!({ "channel": "archive:x" })).await);
    let page = alice
        .ok("history", json!({ "channel": "archive:x" }))
        .await
        .unwrap();
    assert_eq!(page["publications"][0]["data"], "kept", "{page}");
    // Other channels stay open to all.
    subscribe(&anonymous, "news").await;
    publish(&anonymous, "news", json!(1)).await;

    // The rate: a burst of two, then nothing for 100 s.
    let slow = json!({ "channel": "slow:x", "data": 1 });
    alice.ok("publish", slow.clone()).await.unwrap();
    alice.ok("publish", slow.clone()).await.unwrap();
    let error = refused(&alice, "publish", slow.clone()).await;
    assert_eq!(error["code"], 106, "{error}");
    // Budgets are per connection.
    bob.ok("publish", slow).await.unwrap();

    let error = refused(
        &alice,
        "publish",
        json!({ "channel": "small:x", "data": "more than sixteen bytes" }),
    )
    .await;
    assert_eq!(error["code"], 112, "{error}");
    let error = refused(&alice, "subscribe", json!({ "channel": "" })).await;
    assert_eq!(error["code"], 102, "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_reach_only_their_users_and_personal_channels_every_device() {
    let node = inprocess::standalone(&[("HERALD_AUTH__HMAC_SECRET", SECRET)]).await;
    let url = node.ws_url();
    let (alice_phone, connected) = client_with_token(&url, &tokens::user("alice", 600)).await;
    assert_eq!(connected["personal"], "user:#alice");
    let (alice_laptop, _) = client_with_token(&url, &tokens::user("alice", 600)).await;
    let (bob, _) = client_with_token(&url, &tokens::user("bob", 600)).await;
    let (carol, _) = client_with_token(&url, &tokens::user("carol", 600)).await;
    let anonymous = client(&url).await;

    let dm = "dm:#alice,bob";
    subscribe(&alice_phone, dm).await;
    subscribe(&bob, dm).await;
    for outsider in [&carol, &anonymous] {
        let error = refused(outsider, "subscribe", json!({ "channel": dm })).await;
        assert_eq!(error["code"], 103, "{error}");
        let error = refused(outsider, "publish", json!({ "channel": dm, "data": 1 })).await;
        assert_eq!(error["code"], 103, "{error}");
        let error = refused(outsider, "history", json!({ "channel": dm })).await;
        assert_eq!(error["code"], 103, "{error}");
    }
    publish(&bob, dm, json!({ "text": "hi alice" })).await;
    let got = publications(&alice_phone, dm, 1).await;
    assert_eq!(got[0]["data"]["text"], "hi alice");

    // Nobody but alice (or a backend whose token grants it) may use her personal channel.
    let error = refused(&carol, "subscribe", json!({ "channel": "user:#alice" })).await;
    assert_eq!(error["code"], 103, "{error}");
    // Alice's Socket.IO app is one of her devices too.
    let socketio = format!("http://{}", node.addr());
    let options = json!({
        "transports": ["websocket"],
        "auth": { "token": tokens::user("alice", 600) },
    });
    let mut alice_app = Agent::spawn(Library::Js, &socketio, "/chat", options);
    alice_app.next("connect", PATIENCE).await.unwrap();

    let backend_token = hs256(&json!({ "sub": "backend", "channels": ["user:*"] }));
    let (backend, _) = client_with_token(&url, &backend_token).await;
    publish(&backend, "user:#alice", json!({ "notice": "new login" })).await;
    for device in [&alice_phone, &alice_laptop] {
        let got = publications(device, "user:#alice", 1).await;
        assert_eq!(got[0]["data"]["notice"], "new login");
    }
    let got = alice_app.next("event", PATIENCE).await.unwrap();
    assert_eq!(got["event"], "message", "{got}");
    assert_eq!(got["args"][0], json!({ "notice": "new login" }), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_sockets_obey_the_rules_of_their_namespace() {
    let config = r#"
        [auth]
        hmac_secret = "s3cret"
        [channels.namespaces."/members"]
        subscribe = "users"
        [channels.namespaces."/chat"]
        publish = "users"
    "#;
    let node = standalone_with_config(config, &[]);
    let url = format!("http://{}", node.addr());
    let websocket = json!({ "transports": ["websocket"] });

    let mut stranger = Agent::spawn(Library::Js, &url, "/members", websocket.clone());
    let error = stranger.next("connect_error", PATIENCE).await.unwrap();
    assert_eq!(error["data"]["code"], 103, "{error}");
    let with_token = json!({
        "transports": ["websocket"],
        "auth": { "token": tokens::user("alice", 600) },
    });
    let mut member = Agent::spawn(Library::Js, &url, "/members", with_token.clone());
    member.next("connect", PATIENCE).await.unwrap();

    // In /chat anyone listens, only users speak; rooms follow the namespace's rules.
    let mut listener = Agent::spawn(Library::Python, &url, "/chat", websocket);
    listener.next("connect", PATIENCE).await.unwrap();
    let ack = listener
        .emit_ack("message", json!(["hi"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 103, "{ack}");
    let ack = listener
        .emit_ack("join", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let mut speaker = Agent::spawn(Library::Js, &url, "/chat", with_token);
    speaker.next("connect", PATIENCE).await.unwrap();
    let ack = speaker
        .emit_ack("to", json!(["lobby", "message", "hello"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let heard = listener.next("event", PATIENCE).await.unwrap();
    assert_eq!(heard["args"][0], "hello", "{heard}");
}

/// Opens a native WebSocket with an `Origin` header; the HTTP status of a refusal.
async fn open_from(url: &str, origin: Option<&str>) -> Result<(), u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        let value = HeaderValue::from_str(origin).unwrap();
        request.headers_mut().insert("origin", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_are_refused() {
    let node = inprocess::standalone(&[(
        "HERALD_GATEWAY__ALLOWED_ORIGINS",
        "[\"https://app.example.com\"]",
    )])
    .await;
    let native = node.ws_url();
    let socketio = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.addr());
    for url in [&native, &socketio] {
        assert_eq!(
            open_from(url, Some("https://app.example.com")).await,
            Ok(())
        );
        assert_eq!(open_from(url, None).await, Ok(()), "apps send no Origin");
        assert_eq!(open_from(url, Some("https://evil.example")).await, Err(403));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_until_one_leaves() {
    let node = inprocess::standalone(&[("HERALD_GATEWAY__MAX_CONNECTIONS", "2")]).await;
    let url = node.ws_url();
    let first = client(&url).await;
    let _second = client(&url).await;
    assert_eq!(open_from(&url, None).await, Err(503));
    // A Socket.IO client's handshake is refused the same way.
    let socketio = format!("http://{}", node.addr());
    let mut refused = Agent::spawn(Library::Js, &socketio, "/", json!({}));
    let error = refused.next("connect_error", PATIENCE).await.unwrap();
    assert!(error["message"].is_string(), "{error}");
    // The agent (which keeps retrying) goes first, so the place freed next is ours.
    drop(refused);
    drop(first);
    let admitted = wait_for_async(PATIENCE, || async {
        NativeClient::connect(&url).await.is_ok()
    })
    .await;
    assert!(
        admitted,
        "a place freed by a closed connection was not given again"
    );
}
