//! Presence on a real cluster (two gateways, a router, NATS, Redis): who is on a channel,
//! join and leave pushes across gateways, refusals, the Socket.IO equivalents, and the
//! clients of a SIGKILLed gateway leaving presence within the TTL.

use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Cluster, NativeClient, wait_for_async};
use serde_json::{Value, json};

use crate::tokens::{self, SECRET, hs256, now};
use crate::{
    PATIENCE, client, client_with_token, close_frame, herald, refused, standalone, subscribe,
};

const SETTINGS: [(&str, &str); 7] = [
    ("HERALD_AUTH__HMAC_SECRET", SECRET),
    ("HERALD_CHANNELS__NAMESPACES__CHAT__PRESENCE", "true"),
    ("HERALD_CHANNELS__NAMESPACES__CHAT__JOIN_LEAVE", "true"),
    ("HERALD_CHANNELS__NAMESPACES__STAFF__PRESENCE", "true"),
    ("HERALD_CHANNELS__NAMESPACES__STAFF__READ_PRESENCE", "users"),
    ("HERALD_PRESENCE__TTL", "3s"),
    ("HERALD_PRESENCE__HEARTBEAT", "1s"),
];

fn user_with_info(user: &str, name: &str) -> String {
    hs256(&json!({ "sub": user, "exp": now() + 600, "info": { "name": name } }))
}

/// The users on `channel`, sorted, as `presence` shows them.
async fn users(client: &NativeClient, channel: &str) -> Vec<String> {
    let result = client
        .ok("presence", json!({ "channel": channel }))
        .await
        .unwrap();
    let mut users: Vec<String> = result["presence"]
        .as_object()
        .unwrap_or_else(|| panic!("{result}"))
        .values()
        .map(|c| c["user"].as_str().unwrap_or_default().to_string())
        .collect();
    users.sort();
    users
}

/// The next join or leave push, skipping publications.
async fn membership(client: &NativeClient) -> Value {
    loop {
        let push = client.next_push(PATIENCE).await.unwrap();
        if push["push"] == "join" || push["push"] == "leave" {
            return push;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_gateways_with_join_and_leave_pushes() {
    let mut cluster = Cluster::start(herald(), 2, 1, &SETTINGS);
    let channel = "chat:room";
    let (alice, hello) =
        client_with_token(&cluster.ws_url(0), &user_with_info("alice", "Alice")).await;
    subscribe(&alice, channel).await;
    let own = membership(&alice).await;
    assert_eq!(
        (own["push"].as_str(), own["user"].as_str()),
        (Some("join"), Some("alice"))
    );
    assert_eq!(own["client"], hello["client"], "{own}");

    let (bob, _) = client_with_token(&cluster.ws_url(1), &user_with_info("bob", "Bob")).await;
    subscribe(&bob, channel).await;
    let joined = membership(&alice).await;
    assert_eq!(joined["push"], "join", "{joined}");
    assert_eq!(joined["channel"], channel, "{joined}");
    assert_eq!(joined["user"], "bob", "{joined}");
    assert_eq!(joined["info"], json!({ "name": "Bob" }), "{joined}");

    assert_eq!(users(&bob, channel).await, ["alice", "bob"]);
    let listed = alice
        .ok("presence", json!({ "channel": channel }))
        .await
        .unwrap();
    let entry = &listed["presence"][hello["client"].as_str().unwrap()];
    assert_eq!(entry["info"], json!({ "name": "Alice" }), "{listed}");
    let (second_bob, _) = client_with_token(&cluster.ws_url(0), &tokens::user("bob", 600)).await;
    subscribe(&second_bob, channel).await;
    let expected = json!({ "num_clients": 3, "num_users": 2 });
    let counted = wait_for_async(PATIENCE, || async {
        alice
            .ok("presence_stats", json!({ "channel": channel }))
            .await
            .unwrap()
            == expected
    })
    .await;
    assert!(
        counted,
        "presence_stats never counted three clients of two users"
    );

    bob.ok("unsubscribe", json!({ "channel": channel }))
        .await
        .unwrap();
    let mut left = membership(&alice).await;
    while left["push"] == "join" {
        left = membership(&alice).await;
    }
    assert_eq!(
        (left["push"].as_str(), left["user"].as_str()),
        (Some("leave"), Some("bob"))
    );

    // A gateway killed outright tells nobody; its clients leave presence by expiring.
    let (carol, _) = client_with_token(&cluster.ws_url(1), &tokens::user("carol", 600)).await;
    subscribe(&carol, channel).await;
    let seen = wait_for_async(PATIENCE, || async {
        users(&alice, channel).await.contains(&"carol".to_string())
    })
    .await;
    assert!(seen, "carol never showed up in presence");
    cluster.gateways[1].kill();
    let gone = wait_for_async(PATIENCE, || async {
        users(&alice, channel).await == ["alice", "bob"]
    })
    .await;
    assert!(
        gone,
        "the killed gateway's clients stayed in presence: {:?}",
        users(&alice, channel).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_refused_where_it_is_not_kept_or_not_allowed() {
    let node = standalone(&SETTINGS);
    let anonymous = client(&node.ws_url()).await;
    let (alice, _) = client_with_token(&node.ws_url(), &tokens::user("alice", 600)).await;
    let error = refused(&anonymous, "presence", json!({ "channel": "news" })).await;
    assert_eq!(error["code"], 108, "{error}");
    let error = refused(
        &anonymous,
        "presence_stats",
        json!({ "channel": "staff:x" }),
    )
    .await;
    assert_eq!(error["code"], 103, "{error}");
    subscribe(&alice, "staff:x").await;
    let seen = wait_for_async(PATIENCE, || async {
        users(&alice, "staff:x").await == ["alice"]
    })
    .await;
    assert!(seen);
    // No join/leave pushes on a channel that only keeps presence.
    let bob = client(&node.ws_url()).await;
    subscribe(&bob, "staff:x").await;
    alice
        .ok("publish", json!({ "channel": "staff:x", "data": "after" }))
        .await
        .unwrap();
    let next = alice.next_push(PATIENCE).await.unwrap();
    assert_eq!(next["push"], "publication", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_sockets_see_presence_and_joins_through_reserved_events() {
    let node = standalone(&[
        ("HERALD_AUTH__HMAC_SECRET", SECRET),
        ("HERALD_CHANNELS__DEFAULT__PRESENCE", "true"),
        ("HERALD_CHANNELS__DEFAULT__JOIN_LEAVE", "true"),
    ]);
    let url = format!("http://{}", node.addr());
    let options = |user: &str| json!({ "transports": ["websocket"], "auth": { "token": user_with_info(user, user) } });
    let mut alice = Agent::spawn(Library::Js, &url, "/chat", options("alice"));
    let alice_id = alice.next("connect", PATIENCE).await.unwrap()["id"].clone();
    let ack = alice
        .emit_ack("join", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true);
    let mut bob = Agent::spawn(Library::Python, &url, "/chat", options("bob"));
    bob.next("connect", PATIENCE).await.unwrap();
    bob.emit_ack("join", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();

    let joined = alice
        .find(PATIENCE, |r| {
            r["event"] == "herald:join"
                && r["args"][0]["user"] == "bob"
                && r["args"][0]["room"] == "lobby"
        })
        .await
        .unwrap();
    assert_eq!(joined["args"][0]["channel"], "/chat:lobby", "{joined}");
    assert_eq!(
        joined["args"][0]["info"],
        json!({ "name": "bob" }),
        "{joined}"
    );

    let listed = bob
        .emit_ack("herald:presence", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(listed["ok"], true, "{listed}");
    let presence = listed["presence"].as_object().unwrap();
    assert_eq!(presence.len(), 2, "{listed}");
    assert_eq!(
        presence[alice_id.as_str().unwrap()]["user"],
        "alice",
        "{listed}"
    );
    let stats = alice
        .emit_ack("herald:presence_stats", json!([]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({ "ok": true, "num_clients": 2, "num_users": 2 })
    );

    bob.emit_ack("leave", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();
    alice
        .find(PATIENCE, |r| {
            r["event"] == "herald:leave" && r["args"][0]["user"] == "bob"
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_takes_its_clients_out_of_presence_at_once() {
    // A TTL far longer than the test waits: only the gateway's own leaves can do it.
    let mut settings = SETTINGS.to_vec();
    settings.retain(|(key, _)| !key.starts_with("HERALD_PRESENCE"));
    settings.push(("HERALD_PRESENCE__TTL", "10m"));
    settings.push(("HERALD_GATEWAY__DRAIN_PERIOD", "1s"));
    let mut cluster = Cluster::start(herald(), 2, 1, &settings);
    let channel = "chat:drain";
    let (alice, _) = client_with_token(&cluster.ws_url(0), &tokens::user("alice", 600)).await;
    subscribe(&alice, channel).await;
    let (bob, hello) = client_with_token(&cluster.ws_url(1), &tokens::user("bob", 600)).await;
    subscribe(&bob, channel).await;
    let both = wait_for_async(PATIENCE, || async {
        users(&alice, channel).await == ["alice", "bob"]
    })
    .await;
    assert!(both);

    cluster.gateways[1].terminate();
    let closed = close_frame(&bob).await;
    assert_eq!(closed.code, 3000);
    // `membership` fails if the leave does not come within PATIENCE.
    while membership(&alice).await
        != json!({
            "push": "leave", "channel": channel, "client": hello["client"], "user": "bob",
        })
    {}
    assert_eq!(users(&alice, channel).await, ["alice"]);
    cluster.gateways[1]
        .wait_exit(PATIENCE)
        .expect("the gateway exited");
}
