//! Hooks to an app's backend on a real cluster (NATS, Redis, two routers, two gateways as
//! processes), with a real backend serving `HeraldBackend` over gRPC and the same calls
//! over HTTP ([`TestBackend`]): each hook allows, refuses with the backend's code and
//! message on both protocols, changes what it may change, and fails by its policy; a slow
//! namespace holds up no other.

use herald_testkit::backend::SLOW;
use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Cluster, NativeClient, TestBackend};
use serde_json::{Value, json};
use tokio::sync::oneshot::error::TryRecvError;

use herald_testkit::wait::wait_for_async;

use super::tokens::{self, SECRET};
use super::{PATIENCE, herald};

/// A backend that is not there: nothing listens on port 1.
const NOBODY: &str = "grpc://127.0.0.1:1";

/// The cluster's hooks: gRPC by default, HTTP for namespace `lax` (which lets requests
/// through when the backend fails) and for rpc; namespace `slowpoke` with room for two
/// calls at once; namespaces `dead` and `deadlax` with a backend that is not there.
fn settings(backend: &TestBackend) -> Vec<(String, String)> {
    let grpc = backend.grpc_url.as_str();
    let http = backend.http_url.as_str();
    [
        ("HERALD_AUTH__ANONYMOUS", "false"),
        ("HERALD_AUTH__HMAC_SECRET", SECRET),
        ("HERALD_HOOKS__CONNECT__URL", grpc),
        ("HERALD_HOOKS__REFRESH__URL", grpc),
        ("HERALD_HOOKS__RPC__URL", http),
        ("HERALD_HOOKS__RPC__TIMEOUT", "1s"),
        ("HERALD_HOOKS__DEFAULT__PUBLISH__URL", grpc),
        ("HERALD_HOOKS__DEFAULT__SUBSCRIBE__URL", grpc),
        ("HERALD_HOOKS__NAMESPACES__LAX__PUBLISH__URL", http),
        (
            "HERALD_HOOKS__NAMESPACES__LAX__PUBLISH__ON_FAILURE",
            "allow",
        ),
        ("HERALD_HOOKS__NAMESPACES__LAX__PUBLISH__TIMEOUT", "300ms"),
        ("HERALD_HOOKS__NAMESPACES__LAX__SUBSCRIBE__URL", http),
        (
            "HERALD_HOOKS__NAMESPACES__LAX__SUBSCRIBE__ON_FAILURE",
            "allow",
        ),
        ("HERALD_HOOKS__NAMESPACES__LAX__SUBSCRIBE__TIMEOUT", "300ms"),
        ("HERALD_HOOKS__NAMESPACES__SLOWPOKE__SUBSCRIBE__URL", grpc),
        (
            "HERALD_HOOKS__NAMESPACES__SLOWPOKE__SUBSCRIBE__MAX_IN_FLIGHT",
            "2",
        ),
        (
            "HERALD_HOOKS__NAMESPACES__SLOWPOKE__SUBSCRIBE__TIMEOUT",
            "10s",
        ),
        ("HERALD_HOOKS__NAMESPACES__DEAD__SUBSCRIBE__URL", NOBODY),
        ("HERALD_HOOKS__NAMESPACES__DEADLAX__SUBSCRIBE__URL", NOBODY),
        (
            "HERALD_HOOKS__NAMESPACES__DEADLAX__SUBSCRIBE__ON_FAILURE",
            "allow",
        ),
        ("HERALD_CHANNELS__NAMESPACES__VIP__PRESENCE", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn cluster(backend: &TestBackend) -> Cluster {
    let settings = settings(backend);
    let env: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Cluster::start(herald(), 2, 2, &env)
}

/// A native client the connect hook admitted as `user`.
async fn native(url: &str, user: &str) -> NativeClient {
    let client = NativeClient::open(url).await.expect("open");
    let reply = client
        .call("connect", json!({ "data": { "session": user } }))
        .await
        .expect("connect");
    assert_eq!(reply["result"]["user"], user, "{reply}");
    client
}

fn socketio(url: &str, user: &str) -> Agent {
    let options = json!({ "transports": ["websocket"], "auth": { "session": user } });
    Agent::spawn(Library::Js, url, "/", options)
}

fn error_code(reply: &Value) -> u64 {
    reply["error"]["code"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_hook_admits_from_a_session_and_refuses_with_the_backends_answer() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let url = cluster.ws_url(0);

    // From a cookie of the upgrade request, as a browser sends it.
    let cookie = [("cookie", "theme=dark; session=alice")];
    let alice = NativeClient::open_with_headers(&url, &cookie)
        .await
        .unwrap();
    let reply = alice.call("connect", json!({})).await.unwrap();
    assert_eq!(reply["result"]["user"], "alice", "{reply}");
    let asked = backend.calls.of("connect");
    assert_eq!(asked[0]["headers"]["cookie"], "theme=dark; session=alice");
    assert_eq!(asked[0]["client"]["transport"], "native");
    // Its grants are the backend's.
    alice
        .ok("subscribe", json!({ "channel": "granted:1" }))
        .await
        .unwrap();

    let banned = NativeClient::open(&url).await.unwrap();
    let reply = banned
        .call("connect", json!({ "data": { "session": "banned" } }))
        .await
        .unwrap();
    assert_eq!(reply["error"]["code"], 1001, "{reply}");
    assert_eq!(reply["error"]["message"], "banned", "{reply}");
    let nobody = NativeClient::open(&url).await.unwrap();
    let reply = nobody.call("connect", json!({})).await.unwrap();
    assert_eq!(reply["error"]["code"], 101, "{reply}");

    // A token still admits as it did, without asking the backend.
    let before = backend.calls.of("connect").len();
    let token = tokens::user("carol", 600);
    let carol = NativeClient::open(&url).await.unwrap();
    let reply = carol
        .call("connect", json!({ "token": token }))
        .await
        .unwrap();
    assert_eq!(reply["result"]["user"], "carol", "{reply}");
    assert_eq!(backend.calls.of("connect").len(), before);

    // Socket.IO: the CONNECT auth is the data; a refusal is a CONNECT_ERROR.
    let sio = format!("http://{}", cluster.gateways[1].addr());
    let mut bob = socketio(&sio, "bob");
    bob.next("connect", PATIENCE).await.unwrap();
    let mut refused = socketio(&sio, "banned");
    let error = refused.next("connect_error", PATIENCE).await.unwrap();
    assert_eq!(error["message"], "banned", "{error}");
    assert_eq!(error["data"]["code"], 1001, "{error}");
    let asked = backend.calls.of("connect");
    let bobs = asked
        .iter()
        .find(|r| r["data"]["session"] == "bob")
        .expect("bob's connect");
    assert_eq!(bobs["client"]["transport"], "socketio");
    assert_eq!(bobs["client"]["namespace"], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_and_publish_hooks_refuse_and_change_on_both_protocols() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let (url0, url1) = (cluster.ws_url(0), cluster.ws_url(1));
    let alice = native(&url0, "alice").await;
    let bob = native(&url1, "bob").await;

    // Subscribe: refused with the backend's code, allowed, allowed with presence info.
    let refused = bob
        .call("subscribe", json!({ "channel": "chat:forbidden" }))
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 1002, "{refused}");
    assert_eq!(refused["error"]["message"], "not a member", "{refused}");
    bob.ok("subscribe", json!({ "channel": "chat:1" }))
        .await
        .unwrap();
    bob.ok("subscribe", json!({ "channel": "vip:lounge" }))
        .await
        .unwrap();
    // Gateways report joins to the routers in batches: presence shows bob shortly after.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let presence = loop {
        let presence = alice
            .ok("presence", json!({ "channel": "vip:lounge" }))
            .await
            .unwrap();
        let empty = presence["presence"]
            .as_object()
            .is_none_or(|p| p.is_empty());
        if !empty || tokio::time::Instant::now() > deadline {
            break presence;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let clients: Vec<&Value> = presence["presence"].as_object().unwrap().values().collect();
    assert_eq!(clients.len(), 1, "{presence}");
    assert_eq!(clients[0]["user"], "bob", "{presence}");
    assert_eq!(clients[0]["info"], json!({ "vip": true }), "{presence}");

    // Publish: refused with the backend's code; changed for subscribers and history; the
    // hook saw who published.
    let refused = alice
        .call(
            "publish",
            json!({ "channel": "chat:1", "data": { "text": "a badword" } }),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 1003, "{refused}");
    assert_eq!(refused["error"]["message"], "watch your language");
    alice
        .ok(
            "publish",
            json!({ "channel": "chat:1", "data": { "text": "please stamp" } }),
        )
        .await
        .unwrap();
    let push = bob.next_push(PATIENCE).await.unwrap();
    assert_eq!(push["data"], json!({ "text": "please STAMPED" }), "{push}");
    let history = bob
        .ok("history", json!({ "channel": "chat:1" }))
        .await
        .unwrap();
    let texts: Vec<&Value> = history["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["data"])
        .collect();
    assert_eq!(texts, [&json!({ "text": "please STAMPED" })], "{history}");
    let seen = backend.calls.of("publish");
    let stamped = seen
        .iter()
        .find(|r| r["data"]["text"] == "please stamp")
        .expect("the hook saw the publish");
    assert_eq!(stamped["client"]["user"], "alice");
    assert_eq!(stamped["client"]["info"], json!({ "name": "alice" }));
    assert_eq!(stamped["channel"], "chat:1");

    // Kept out of history: delivered, without an offset, and not in history.
    let reply = alice
        .ok(
            "publish",
            json!({ "channel": "chat:1", "data": { "text": "ephemeral" } }),
        )
        .await
        .unwrap();
    assert!(reply.get("offset").is_none(), "{reply}");
    let push = bob.next_push(PATIENCE).await.unwrap();
    assert_eq!(push["data"], json!({ "text": "ephemeral" }), "{push}");
    let history = bob
        .ok("history", json!({ "channel": "chat:1" }))
        .await
        .unwrap();
    assert_eq!(history["publications"].as_array().unwrap().len(), 1);

    // Socket.IO, on the other gateway: join refused, events refused and changed.
    let sio = format!("http://{}", cluster.gateways[1].addr());
    let mut dave = socketio(&sio, "dave");
    let mut erin = socketio(&format!("http://{}", cluster.gateways[0].addr()), "erin");
    dave.next("connect", PATIENCE).await.unwrap();
    erin.next("connect", PATIENCE).await.unwrap();
    let ack = dave
        .emit_ack("join", json!(["forbidden"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], 1002, "{ack}");
    let ack = dave
        .emit_ack("message", json!(["a badword"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 1003, "{ack}");
    assert_eq!(ack["error"]["message"], "watch your language", "{ack}");
    let ack = dave
        .emit_ack("message", json!(["stamp", { "n": 1 }]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = erin
        .find(PATIENCE, |r| r["event"] == "message")
        .await
        .unwrap();
    assert_eq!(event["args"], json!(["STAMPED", { "n": 1 }]), "{event}");
    let seen = backend.calls.of("publish");
    let daves = seen
        .iter()
        .find(|r| r["client"]["user"] == "dave" && r["data"]["args"][0] == "stamp")
        .expect("the hook saw dave's event");
    assert_eq!(daves["data"]["event"], "message");
    assert_eq!(daves["client"]["transport"], "socketio");
    // The namespace connects went through the subscribe hook too.
    let subscribes = backend.calls.of("subscribe");
    assert!(
        subscribes
            .iter()
            .any(|r| r["channel"] == "/" && r["client"]["user"] == "dave"),
        "{subscribes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_refuses_or_lets_through_by_its_policy() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let alice = native(&cluster.ws_url(0), "alice").await;

    // The default publish hook refuses when the backend does not answer in time: 111.
    let refused = alice
        .call(
            "publish",
            json!({ "channel": "chat:1", "data": { "text": "slow" } }),
        )
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 111, "{refused}");
    assert_eq!(refused["error"]["temporary"], true, "{refused}");

    // Namespace `lax` lets it through, unchanged, to subscribers and history.
    alice
        .ok("subscribe", json!({ "channel": "lax:slow" }))
        .await
        .unwrap();
    let reply = alice
        .ok(
            "publish",
            json!({ "channel": "lax:slow", "data": { "text": "slow stamp" } }),
        )
        .await
        .unwrap();
    assert_eq!(reply["offset"], 1, "{reply}");
    let push = alice.next_push(PATIENCE).await.unwrap();
    assert_eq!(push["data"], json!({ "text": "slow stamp" }), "{push}");

    // An unreachable backend is a failure too.
    let refused = alice
        .call("subscribe", json!({ "channel": "dead:1" }))
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 111, "{refused}");
    alice
        .ok("subscribe", json!({ "channel": "deadlax:1" }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_namespace_holds_up_no_other() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let url = cluster.ws_url(0);
    let mut slow = Vec::new();
    for i in 0..2 {
        let client = native(&url, &format!("slow{i}")).await;
        let channel = format!("slowpoke:slow-{i}");
        let reply = client
            .start("subscribe", json!({ "channel": channel }))
            .await
            .unwrap();
        slow.push((client, reply));
    }
    // Both of slowpoke's calls are under way once the backend has seen them.
    let slowpokes = || {
        let calls = backend.calls.of("subscribe");
        let of_slowpoke = |r: &&Value| {
            r["channel"]
                .as_str()
                .is_some_and(|c| c.starts_with("slowpoke:"))
        };
        calls.iter().filter(of_slowpoke).count()
    };
    let seen = wait_for_async(PATIENCE, || async { slowpokes() == 2 }).await;
    assert!(seen, "both slow calls reached the backend");

    // A third of slowpoke's is turned away at once, while the two wait...
    let third = native(&url, "third").await;
    let refused = third
        .call("subscribe", json!({ "channel": "slowpoke:3" }))
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 111, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_in_flight"),
        "{refused}"
    );
    // ...and another namespace's clients are answered meanwhile.
    let other = native(&url, "other").await;
    other
        .ok("subscribe", json!({ "channel": "chat:busy" }))
        .await
        .unwrap();
    other
        .ok(
            "publish",
            json!({ "channel": "chat:busy", "data": { "text": "hi" } }),
        )
        .await
        .unwrap();
    for (_, reply) in &mut slow {
        assert!(
            matches!(reply.try_recv(), Err(TryRecvError::Empty)),
            "slowpoke's calls were still under way when the others were answered"
        );
    }
    // The slow ones are answered in the end (the backend takes SLOW; the timeout is 10 s).
    for (_client, reply) in slow {
        let reply = tokio::time::timeout(SLOW + PATIENCE, reply)
            .await
            .expect("answered in time")
            .expect("answered");
        assert!(reply.get("result").is_some(), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_reaches_the_backend_and_its_answer_or_error_the_client() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let alice = native(&cluster.ws_url(1), "alice").await;
    let reply = alice
        .ok(
            "rpc",
            json!({ "method": "echo", "data": { "room": "lobby" } }),
        )
        .await
        .unwrap();
    assert_eq!(
        reply["data"],
        json!({ "echo": { "room": "lobby" }, "user": "alice" })
    );
    let refused = alice
        .call("rpc", json!({ "method": "fail" }))
        .await
        .unwrap();
    assert_eq!(error_code(&refused), 1004, "{refused}");
    assert_eq!(refused["error"]["message"], "no such conversation");
    let timed_out = alice
        .call("rpc", json!({ "method": "slow" }))
        .await
        .unwrap();
    assert_eq!(error_code(&timed_out), 111, "{timed_out}");

    let sio = format!("http://{}", cluster.gateways[0].addr());
    for library in [Library::Js, Library::Python] {
        let options = json!({ "transports": ["websocket"], "auth": { "session": "bob" } });
        let mut bob = Agent::spawn(library, &sio, "/", options);
        bob.next("connect", PATIENCE).await.unwrap();
        let ack = bob
            .emit_ack("herald:rpc", json!(["echo", [1, "两"]]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(
            ack,
            json!({ "ok": true, "data": { "echo": [1, "两"], "user": "bob" } })
        );
        let ack = bob
            .emit_ack("herald:rpc", json!(["fail"]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], false, "{ack}");
        assert_eq!(ack["error"]["code"], 1004, "{ack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_of_the_connect_hook_is_refreshed_before_it_ends() {
    let backend = TestBackend::start().await;
    let cluster = cluster(&backend);
    let client = NativeClient::open(&cluster.ws_url(0)).await.unwrap();
    // Refreshed 10 s before its end: at once.
    let reply = client
        .call(
            "connect",
            json!({ "data": { "session": "frank", "ttl": 10 } }),
        )
        .await
        .unwrap();
    assert!(
        reply["result"]["expires_in"].as_u64().unwrap() <= 15,
        "{reply}"
    );
    let refreshed = || async { !backend.calls.of("refresh").is_empty() };
    assert!(
        wait_for_async(PATIENCE, refreshed).await,
        "the refresh hook is called"
    );
    let asked = &backend.calls.of("refresh")[0];
    assert_eq!(asked["client"]["user"], "frank");
    // Past the first admission's end (10 s and the 5 s of leeway) it is not closed.
    let past_the_end = std::time::Duration::from_secs(17);
    assert!(client.closed(past_the_end).await.is_err());
    client.ok("ping", json!({})).await.unwrap();
}
