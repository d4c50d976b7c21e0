//! Sync documents on a real cluster (NATS, Redis, two routers, two gateways): native and
//! Socket.IO clients patching one document concurrently, catching up after a disconnect
//! through the other gateway, a router killed during a patch storm, and refused patches.
//!
//! Every client keeps a replica the way an application would: it applies what it receives
//! with its own merge-patch code (RFC 7386, written here, not the server's crate) and
//! checks that every patch is the next revision of what it has.

use std::time::Duration;

use herald_testkit::client::Event;
use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Cluster, NativeClient};
use serde_json::{Map, Value, json};

use super::{PATIENCE, herald, tokens};

const SETTINGS: [(&str, &str); 4] = [
    ("HERALD_CHANNELS__NAMESPACES__DOC__SYNC", "true"),
    ("HERALD_CHANNELS__NAMESPACES__SMALL__SYNC", "true"),
    ("HERALD_CHANNELS__NAMESPACES__SMALL__SYNC_HISTORY", "5"),
    (
        "HERALD_CHANNELS__NAMESPACES__SMALL__MAX_DOCUMENT_SIZE",
        "400",
    ),
];

fn cluster() -> Cluster {
    Cluster::start(herald(), 2, 2, &SETTINGS)
}

/// RFC 7386, as a client application would write it.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A client's copy of a document.
#[derive(Debug, Clone, Default, PartialEq)]
struct Replica {
    doc: Value,
    rev: u64,
    epoch: String,
    /// Patches received ahead of their turn, by a client that does not see events in the
    /// order they arrived (python-socketio runs each handler on a thread of its own).
    early: std::collections::BTreeMap<u64, Value>,
}

impl Replica {
    /// Applies a state (a snapshot or the patches missed) or one patch, as the protocol
    /// says: a `doc` replaces, each patch must be the next revision.
    fn apply(&mut self, change: &Value) {
        if let Some(doc) = change.get("doc") {
            self.doc = doc.clone();
            self.rev = change["rev"].as_u64().expect("rev");
            self.epoch = change["epoch"].as_str().expect("epoch").to_string();
            return;
        }
        let patches = match change.get("patches") {
            Some(patches) => patches.as_array().expect("patches").clone(),
            None => vec![change.clone()],
        };
        for patch in patches {
            let rev = patch["rev"].as_u64().expect("rev");
            assert_eq!(
                rev,
                self.rev + 1,
                "a gap or a repeat: {patch} after {}",
                self.rev
            );
            merge(&mut self.doc, &patch["patch"]);
            self.rev = rev;
        }
        self.epoch = change["epoch"].as_str().expect("epoch").to_string();
        assert_eq!(
            change["rev"], self.rev,
            "a state's rev is its last patch's: {change}"
        );
    }

    /// Applies a change that may come ahead of its turn: held until the patches before it
    /// are in.
    fn apply_unordered(&mut self, change: &Value) {
        let rev = change["rev"].as_u64().expect("rev");
        if change.get("patch").is_some() && rev > self.rev + 1 {
            self.early.insert(rev, change.clone());
            return;
        }
        self.apply(change);
        while let Some(next) = self.early.remove(&(self.rev + 1)) {
            self.apply(&next);
        }
    }

    fn since(&self) -> Value {
        json!({ "rev": self.rev, "epoch": self.epoch })
    }
}

/// Subscribes a native client to `channel`; its replica starts from the reply.
async fn native_subscriber(client: &NativeClient, channel: &str, since: Option<&Replica>) -> Value {
    let mut params = json!({ "channel": channel });
    if let Some(replica) = since {
        params["rev"] = replica.since()["rev"].clone();
        params["epoch"] = replica.since()["epoch"].clone();
    }
    client
        .ok("sync_subscribe", params)
        .await
        .expect("sync_subscribe")
}

/// Applies a native client's `sync` pushes until its replica reaches `rev`.
async fn native_catch_up(client: &NativeClient, replica: &mut Replica, rev: u64) {
    while replica.rev < rev {
        let push = client.next_push(PATIENCE).await.expect("a sync push");
        assert_eq!(push["push"], "sync", "{push}");
        replica.apply(&push);
    }
}

/// Applies an agent's `herald:change` events until its replica reaches `rev`.
async fn agent_catch_up(agent: &mut Agent, library: Library, replica: &mut Replica, rev: u64) {
    while replica.rev < rev {
        let change = agent
            .find(PATIENCE, |r| {
                r["type"] == "event" && r["event"] == "herald:change"
            })
            .await
            .expect("a herald:change event");
        apply_event(library, replica, &change["args"][0]);
    }
}

/// Applies a change an agent reported: in the order it came for the JavaScript client,
/// which keeps the wire's order.
fn apply_event(library: Library, replica: &mut Replica, change: &Value) {
    match library {
        Library::Js => replica.apply(change),
        Library::Python => replica.apply_unordered(change),
    }
}

/// The router's document, read through a fresh client.
async fn current(url: &str, channel: &str) -> Replica {
    let reader = NativeClient::connect(url).await.expect("connect");
    let state = reader
        .ok("sync_get", json!({ "channel": channel }))
        .await
        .expect("sync_get");
    let mut replica = Replica::default();
    replica.apply(&state);
    replica
}

/// What one client's patches came to.
#[derive(Debug, Default)]
struct Outcome {
    applied: Vec<u64>,
    /// Keys of conditional patches refused as conflicts.
    conflicts: Vec<String>,
    /// Keys of conditional patches applied.
    conditional: Vec<String>,
}

/// Patch `n` of client `i`: every fifth is conditional on `base_rev`, with a key of its
/// own so that the final document shows whether it was applied.
fn patch_of(i: usize, n: u64) -> (Value, Option<String>) {
    match n % 5 {
        4 => {
            let key = format!("cond-{i}-{n}");
            (json!({ key.clone(): true }), Some(key))
        }
        _ => (
            json!({ format!("c{i}"): n, "last": format!("{i}:{n}") }),
            None,
        ),
    }
}

fn record(outcome: &mut Outcome, reply: &Value, key: Option<String>) {
    if let Some(rev) = reply["rev"].as_u64().filter(|_| reply["ok"] != false) {
        outcome.applied.push(rev);
        outcome.conditional.extend(key);
        return;
    }
    let error = &reply["error"];
    assert_eq!(error["code"], 115, "only conflicts are refused: {reply}");
    assert!(
        error["doc"].is_object(),
        "a conflict carries the document: {reply}"
    );
    outcome
        .conflicts
        .push(key.expect("only conditional patches conflict"));
}

#[tokio::test]
async fn ten_clients_on_two_gateways_converge_on_the_routers_document() {
    let cluster = cluster();
    let channel = "doc:board";
    let mut tasks = Vec::new();
    for i in 0..10 {
        let gateway = &cluster.gateways[i % 2];
        if i % 2 == 0 {
            let url = gateway.ws_url();
            tasks.push(tokio::spawn(async move {
                let client = NativeClient::connect(&url).await.expect("connect");
                let mut replica = Replica::default();
                replica.apply(&native_subscriber(&client, channel, None).await);
                let mut outcome = Outcome::default();
                for n in 0..100 {
                    let (patch, key) = patch_of(i, n);
                    let mut params = json!({ "channel": channel, "patch": patch });
                    if key.is_some() {
                        // Conditional on the newest revision this client has seen.
                        while let Some(Event::Push(push)) = client.next_event(Duration::ZERO).await
                        {
                            replica.apply(&push);
                        }
                        params["base_rev"] = json!(replica.rev);
                    }
                    let reply = client.call("sync_patch", params).await.expect("a reply");
                    let reply = match reply.get("result") {
                        Some(result) => result.clone(),
                        None => json!({ "ok": false, "error": reply["error"] }),
                    };
                    record(&mut outcome, &reply, key);
                }
                (Subscriber::Native(client), replica, outcome)
            }));
        } else {
            let library = if i % 4 == 1 {
                Library::Js
            } else {
                Library::Python
            };
            let url = format!("http://{}", gateway.addr());
            tasks.push(tokio::spawn(async move {
                let options = json!({ "transports": ["websocket"] });
                let mut agent = Agent::spawn(library, &url, "/", options);
                agent.next("connect", PATIENCE).await.expect("connected");
                let mut replica = Replica::default();
                let state = agent
                    .emit_ack("herald:sync", json!([{ "channel": channel }]), PATIENCE)
                    .await
                    .expect("herald:sync acked");
                assert_eq!(state["ok"], true, "{state}");
                replica.apply(&state);
                let mut outcome = Outcome::default();
                for n in 0..100 {
                    let (patch, key) = patch_of(i, n);
                    let mut options = json!({ "channel": channel, "patch": patch });
                    if key.is_some() {
                        while let Ok(change) = agent
                            .find(Duration::ZERO, |r| r["event"] == "herald:change")
                            .await
                        {
                            apply_event(library, &mut replica, &change["args"][0]);
                        }
                        options["base_rev"] = json!(replica.rev);
                    }
                    let reply = agent
                        .emit_ack("herald:patch", json!([options]), PATIENCE)
                        .await
                        .expect("herald:patch acked");
                    record(&mut outcome, &reply, key);
                }
                (Subscriber::SocketIo(agent, library), replica, outcome)
            }));
        }
    }
    let mut finished = Vec::new();
    for task in tasks {
        finished.push(task.await.expect("a client's task"));
    }
    let router = current(&cluster.ws_url(0), channel).await;
    let mut applied: Vec<u64> = finished
        .iter()
        .flat_map(|(_, _, outcome)| outcome.applied.clone())
        .collect();
    applied.sort_unstable();
    let expected: Vec<u64> = (1..=router.rev).collect();
    assert_eq!(
        applied, expected,
        "every revision acknowledged once, none missing"
    );
    let conflicts: usize = finished.iter().map(|(_, _, o)| o.conflicts.len()).sum();
    assert_eq!(
        router.rev as usize + conflicts,
        1000,
        "each patch applied or refused"
    );
    for (i, (subscriber, mut replica, outcome)) in finished.into_iter().enumerate() {
        assert_eq!(
            router.doc[format!("c{i}")],
            json!(98),
            "client {i}'s last plain patch"
        );
        for key in &outcome.conflicts {
            assert!(
                router.doc.get(key).is_none(),
                "a refused patch was applied: {key}"
            );
        }
        for key in &outcome.conditional {
            assert_eq!(router.doc[key], true, "an applied patch is missing: {key}");
        }
        match subscriber {
            Subscriber::Native(client) => {
                native_catch_up(&client, &mut replica, router.rev).await;
            }
            Subscriber::SocketIo(mut agent, library) => {
                agent_catch_up(&mut agent, library, &mut replica, router.rev).await;
            }
        }
        assert_eq!(
            replica.doc, router.doc,
            "client {i} holds the router's document"
        );
        assert_eq!(replica.rev, router.rev, "client {i}");
    }
}

enum Subscriber {
    Native(NativeClient),
    SocketIo(Agent, Library),
}

/// Sends `count` patches through `client`, each acknowledged before the next.
async fn patch_many(client: &NativeClient, channel: &str, from: u64, count: u64) {
    for n in from..from + count {
        let patch = json!({ "n": n, format!("k{}", n % 7): n });
        client
            .ok("sync_patch", json!({ "channel": channel, "patch": patch }))
            .await
            .expect("patched");
    }
}

#[tokio::test]
async fn a_returning_client_gets_the_patches_it_missed_or_a_snapshot() {
    let cluster = cluster();
    let writer = NativeClient::connect(&cluster.ws_url(1))
        .await
        .expect("connect");
    for (channel, snapshot) in [("doc:map", false), ("small:map", true)] {
        // A native client goes away from the first gateway, comes back through the second.
        let away = NativeClient::connect(&cluster.ws_url(0))
            .await
            .expect("connect");
        let mut replica = Replica::default();
        replica.apply(&native_subscriber(&away, channel, None).await);
        patch_many(&writer, channel, 0, 3).await;
        native_catch_up(&away, &mut replica, 3).await;
        drop(away);
        patch_many(&writer, channel, 3, 50).await;
        let back = NativeClient::connect(&cluster.ws_url(1))
            .await
            .expect("connect");
        let state = native_subscriber(&back, channel, Some(&replica)).await;
        assert_eq!(state["snapshot"], snapshot, "{channel}: {state}");
        if !snapshot {
            assert_eq!(state["patches"].as_array().map(Vec::len), Some(50));
        }
        replica.apply(&state);
        assert_eq!(replica, current(&cluster.ws_url(0), channel).await);
        // Live patches follow the state, from the next revision on.
        patch_many(&writer, channel, 53, 2).await;
        native_catch_up(&back, &mut replica, 55).await;
        assert_eq!(replica, current(&cluster.ws_url(0), channel).await);
    }
    // A Socket.IO socket does the same with `herald:sync` and the revision it has.
    let url = format!("http://{}", cluster.gateways[0].addr());
    let options = json!({ "transports": ["websocket"] });
    let mut agent = Agent::spawn(Library::Js, &url, "/", options.clone());
    agent.next("connect", PATIENCE).await.expect("connected");
    let mut replica = Replica::default();
    let state = agent
        .emit_ack(
            "herald:sync",
            json!([{ "channel": "small:list" }]),
            PATIENCE,
        )
        .await
        .expect("acked");
    replica.apply(&state);
    drop(agent);
    patch_many(&writer, "small:list", 0, 50).await;
    let url = format!("http://{}", cluster.gateways[1].addr());
    let mut agent = Agent::spawn(Library::Python, &url, "/", options);
    agent.next("connect", PATIENCE).await.expect("connected");
    let mut since = replica.since();
    since["channel"] = json!("small:list");
    let state = agent
        .emit_ack("herald:sync", json!([since]), PATIENCE)
        .await
        .expect("acked");
    assert_eq!(
        state["snapshot"], true,
        "more than sync_history missed: {state}"
    );
    replica.apply(&state);
    assert_eq!(replica, current(&cluster.ws_url(0), "small:list").await);
}

#[tokio::test]
async fn a_router_killed_in_a_patch_storm_loses_no_acknowledged_patch_and_applies_none_twice() {
    let mut cluster = cluster();
    let channel = "doc:storm";
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = cluster.ws_url(w % 2);
        writers.push(tokio::spawn(async move {
            let client = NativeClient::connect(&url).await.expect("connect");
            let mut retries = 0;
            for n in 0..150 {
                let key = format!("w{w}-{n}");
                let params = json!({
                    "channel": channel, "patch": { key.clone(): n }, "idempotency_key": key,
                });
                // Retried with the same key until acknowledged: applied once however often.
                loop {
                    let reply = client
                        .call("sync_patch", params.clone())
                        .await
                        .expect("reply");
                    if reply.get("result").is_some() {
                        break;
                    }
                    assert_eq!(reply["error"]["temporary"], true, "{reply}");
                    retries += 1;
                }
            }
            retries
        }));
    }
    // Kill a router once the storm is under way.
    let watcher = NativeClient::connect(&cluster.ws_url(0))
        .await
        .expect("connect");
    let mut replica = Replica::default();
    replica.apply(&native_subscriber(&watcher, channel, None).await);
    let under_way = replica.rev + 50;
    native_catch_up(&watcher, &mut replica, under_way).await;
    cluster.routers[0].kill();
    let mut retries = 0;
    for writer in writers {
        retries += writer.await.expect("a writer");
    }
    let router = current(&cluster.ws_url(1), channel).await;
    assert_eq!(
        router.rev, 600,
        "each of the 600 patches applied exactly once ({retries} retries)"
    );
    for w in 0..4 {
        for n in 0..150 {
            assert_eq!(router.doc[format!("w{w}-{n}")], json!(n), "w{w}-{n}");
        }
    }
    native_catch_up(&watcher, &mut replica, 600).await;
    assert_eq!(replica, router);
}

#[tokio::test]
async fn refused_patches_change_nothing() {
    let mut settings = SETTINGS.to_vec();
    settings.push(("HERALD_CHANNELS__NAMESPACES__LOCKED__SYNC", "true"));
    settings.push(("HERALD_CHANNELS__NAMESPACES__LOCKED__PUBLISH", "users"));
    let cluster = Cluster::start(herald(), 1, 1, &settings);
    let client = NativeClient::connect(&cluster.ws_url(0))
        .await
        .expect("connect");
    for channel in ["small:doc", "locked:doc"] {
        let before = current(&cluster.ws_url(0), channel).await;
        let big = "x".repeat(500);
        for (patch, base_rev, code) in [
            (json!([1, 2]), None, 107),
            (json!("text"), None, 107),
            (json!({ "big": big }), None, 112),
            (json!({ "a": 1 }), Some(before.rev + 7), 115),
        ] {
            let mut params = json!({ "channel": channel, "patch": patch });
            if let Some(base) = base_rev {
                params["base_rev"] = json!(base);
            }
            let reply = client.call("sync_patch", params).await.expect("a reply");
            let expected = if channel == "locked:doc" { 103 } else { code };
            assert_eq!(reply["error"]["code"], expected, "{channel}: {reply}");
            assert_eq!(
                current(&cluster.ws_url(0), channel).await,
                before,
                "{channel}"
            );
        }
    }
    // Filling the document up to its limit, then a patch that would pass it.
    let fill = json!({ "channel": "small:doc", "patch": { "fill": "y".repeat(300) } });
    client.ok("sync_patch", fill).await.expect("fits");
    let before = current(&cluster.ws_url(0), "small:doc").await;
    let over = json!({ "channel": "small:doc", "patch": { "more": "z".repeat(150) } });
    let reply = client.call("sync_patch", over).await.expect("a reply");
    assert_eq!(reply["error"]["code"], 112, "{reply}");
    assert_eq!(current(&cluster.ws_url(0), "small:doc").await, before);
    // Plain subscribes and publishes are refused on a document's channel, and sync
    // commands on other channels.
    let subscribe = client
        .call("subscribe", json!({ "channel": "doc:x" }))
        .await
        .expect("reply");
    assert_eq!(subscribe["error"]["code"], 108, "{subscribe}");
    let publish = json!({ "channel": "doc:x", "data": 1 });
    assert_eq!(
        client.call("publish", publish).await.expect("reply")["error"]["code"],
        108
    );
    let plain = json!({ "channel": "chat:x", "patch": {} });
    assert_eq!(
        client.call("sync_patch", plain).await.expect("reply")["error"]["code"],
        108
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_document_takes_its_subscribe_access_and_a_narrower_token_ends_it() {
    // A standalone node: its documents live in memory.
    let node = super::standalone(&[
        ("HERALD_AUTH__HMAC_SECRET", tokens::SECRET),
        ("HERALD_CHANNELS__NAMESPACES__VIP__SYNC", "true"),
        ("HERALD_CHANNELS__NAMESPACES__VIP__SUBSCRIBE", "granted"),
    ]);
    let url = node.ws_url();
    let granted = |grants: Value| {
        tokens::hs256(&json!({ "sub": "alice", "exp": tokens::now() + 600, "channels": grants }))
    };
    let (alice, _) = super::client_with_token(&url, &granted(json!(["vip:*"]))).await;
    let mut replica = Replica::default();
    replica.apply(&native_subscriber(&alice, "vip:plan", None).await);
    patch_many(&alice, "vip:plan", 0, 2).await;
    native_catch_up(&alice, &mut replica, 2).await;

    // Without the grant, neither the document nor its patches (as history) can be read.
    let (bob, _) = super::client_with_token(&url, &tokens::user("bob", 600)).await;
    for (method, params) in [
        ("sync_subscribe", json!({ "channel": "vip:plan" })),
        ("sync_get", json!({ "channel": "vip:plan" })),
        ("history", json!({ "channel": "vip:plan" })),
    ] {
        let error = super::refused(&bob, method, params).await;
        assert_eq!(error["code"], 103, "{method}: {error}");
    }

    // A base revision of another epoch is a conflict, whatever its number.
    let patch = json!({ "channel": "vip:plan", "patch": { "x": 1 }, "base_rev": 2,
                        "base_epoch": "0ther" });
    let error = super::refused(&alice, "sync_patch", patch).await;
    assert_eq!(error["code"], 115, "{error}");
    assert_eq!(error["epoch"], json!(replica.epoch), "{error}");

    // A refresh with a token that no longer grants the document ends the subscription.
    alice
        .ok("refresh", json!({ "token": granted(json!([])) }))
        .await
        .expect("refreshed");
    let push = alice.next_push(PATIENCE).await.expect("a push");
    assert_eq!(
        push,
        json!({ "push": "unsubscribe", "channel": "vip:plan" })
    );
}
