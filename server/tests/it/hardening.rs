//! What an anonymous client, a user with a token or an open port could do to a node before
//! the hardening of docs/security.md, each attack replayed on real processes: it fails
//! now, and the neighbours of the attacker are unaffected.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{NativeClient, wait_for};
use serde_json::{Value, json};

use crate::tokens::{self, hs256, now};
use crate::{
    PATIENCE, client, client_with_token, herald, publications, publish, refused, standalone,
    standalone_with_config, subscribe,
};

/// Runs `herald` with `args` and `env`, and waits for it to exit on its own: its status and
/// standard error. Kills it, failing the test, if it is still running after [`PATIENCE`].
fn exits_at_start(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(herald())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for herald") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    (status, stderr)
}

/// A node taking the test tokens, whose `vip` namespace is for granted tokens only, with
/// `more` config.
fn vip_node(more: &str) -> herald_testkit::HeraldProcess {
    let config = format!(
        r#"
        [auth]
        hmac_secret = "{}"
        [channels.namespaces.vip]
        subscribe = "granted"
        publish = "granted"
        {more}
        "#,
        tokens::SECRET
    );
    standalone_with_config(&config, &[])
}

#[test]
fn the_server_api_is_never_served_to_other_machines_without_a_key() {
    let open = ["--listen", "127.0.0.1:0", "--api-listen", "0.0.0.0:0"];
    let (status, stderr) = exits_at_start(&open, &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("api.key") && stderr.contains("HERALD_API__KEY"),
        "{stderr}"
    );
    let router = [
        "router",
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "0.0.0.0:0",
    ];
    let (status, stderr) = exits_at_start(&router, &[]);
    assert!(!status.success());
    assert!(stderr.contains("api.key"), "{stderr}");
    // With a key, or on loopback, the node serves.
    let keyed = herald_testkit::HeraldProcess::spawn_with_env(
        "keyed",
        herald(),
        &open,
        &[("HERALD_API__KEY", "k")],
    );
    assert!(keyed.api_addr().ip().is_unspecified());
}

#[tokio::test]
async fn a_native_publication_cannot_forge_a_socketio_event_with_a_reserved_name() {
    let node = standalone(&[]);
    let url = format!("http://{}", node.addr());
    let options = json!({ "transports": ["websocket"] });
    let mut socket = Agent::spawn(Library::Js, &url, "/", options);
    socket.next("connect", PATIENCE).await.unwrap();
    let native = client(&node.ws_url()).await;
    for name in [
        "herald:disconnect",
        "disconnect",
        "connect",
        "herald:unsubscribe",
    ] {
        let data = json!({ "event": name, "args": [{ "code": 3504 }] });
        let error = refused(&native, "publish", json!({ "channel": "/", "data": data })).await;
        assert_eq!(error["code"], 107, "{name}: {error}");
    }
    // Other events still reach the socket, which is still connected.
    let data = json!({ "event": "chat", "args": ["hi"] });
    publish(&native, "/", data).await;
    let event = socket.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (&event["event"], &event["args"]),
        (&json!("chat"), &json!(["hi"]))
    );
}

#[tokio::test]
async fn a_connection_has_a_limit_on_subscriptions_namespaces_and_rooms() {
    let node = standalone(&[
        ("HERALD_GATEWAY__MAX_SUBSCRIPTIONS", "3"),
        ("HERALD_SOCKETIO__MAX_NAMESPACES", "2"),
        ("HERALD_SOCKETIO__MAX_ROOMS", "2"),
    ]);
    let greedy = client(&node.ws_url()).await;
    for n in 0..3 {
        subscribe(&greedy, &format!("c{n}")).await;
    }
    let error = refused(&greedy, "subscribe", json!({ "channel": "c3" })).await;
    assert_eq!(error["code"], 106, "{error}");
    assert!(error["message"].as_str().unwrap().contains('3'), "{error}");
    // Its subscriptions work, and after an unsubscribe there is room for one more.
    let other = client(&node.ws_url()).await;
    publish(&other, "c0", json!(1)).await;
    assert_eq!(publications(&greedy, "c0", 1).await[0]["data"], 1);
    greedy
        .ok("unsubscribe", json!({ "channel": "c0" }))
        .await
        .unwrap();
    subscribe(&greedy, "c3").await;

    let url = format!("http://{}", node.addr());
    let options = json!({ "transports": ["websocket"] });
    let mut sockets = Agent::spawn_multiplexed(&url, &["/a", "/b", "/c"], options.clone());
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let report = sockets
            .find(PATIENCE, |r| {
                r["type"] == "connect" || r["type"] == "connect_error"
            })
            .await
            .unwrap();
        outcomes.push(report);
    }
    let refusals: Vec<&Value> = outcomes
        .iter()
        .filter(|r| r["type"] == "connect_error")
        .collect();
    assert_eq!(refusals.len(), 1, "{outcomes:?}");
    assert_eq!(refusals[0]["data"]["code"], 106, "{outcomes:?}");

    let mut socket = Agent::spawn(Library::Js, &url, "/", options);
    socket.next("connect", PATIENCE).await.unwrap();
    for room in ["r1", "r2", "r1"] {
        let ack = socket
            .emit_ack("join", json!([room]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{room}: {ack}");
    }
    let ack = socket
        .emit_ack("join", json!(["r3"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 106, "{ack}");
    let ack = socket
        .emit_ack("leave", json!(["r1"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = socket
        .emit_ack("join", json!(["r3"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
}

/// Recovering from an offset the client chooses is a history read: a client that may
/// subscribe but not read history gets nothing from before it subscribed.
#[tokio::test]
async fn recovery_needs_the_history_permission() {
    let config = r#"
        [channels.namespaces.secret]
        read_history = "none"
    "#;
    let node = standalone_with_config(config, &[]);
    let publisher = client(&node.ws_url()).await;
    let mut epochs = Vec::new();
    for channel in ["secret:plans", "open:plans"] {
        for n in 1..=3 {
            let result = publish(&publisher, channel, json!(n)).await;
            epochs.push(result["epoch"].as_str().unwrap().to_string());
        }
    }
    let snoop = client(&node.ws_url()).await;
    let recover = |channel: &str, epoch: &str| json!({ "channel": channel, "recover": true, "offset": 0, "epoch": epoch });
    let result = snoop
        .ok("subscribe", recover("secret:plans", &epochs[0]))
        .await
        .unwrap();
    assert_eq!(result["recovered"], false, "{result}");
    // The neighbour that may read history recovers as before.
    let result = snoop
        .ok("subscribe", recover("open:plans", &epochs[3]))
        .await
        .unwrap();
    assert_eq!(result["recovered"], true, "{result}");
    let replayed = publications(&snoop, "open:plans", 3).await;
    assert_eq!(replayed[2]["data"], 3);
    // Nothing of the secret channel's past came before those.
    publish(&publisher, "secret:plans", json!(4)).await;
    assert_eq!(publications(&snoop, "secret:plans", 1).await[0]["data"], 4);
}

#[tokio::test]
async fn a_refresh_ends_the_subscriptions_the_new_token_does_not_allow() {
    let node = vip_node(
        r#"
        [channels.namespaces."/club"]
        subscribe = "granted"
        "#,
    );
    let grant =
        |channels: Value| hs256(&json!({ "sub": "eve", "exp": now() + 600, "channels": channels }));
    let (eve, _) = client_with_token(&node.ws_url(), &grant(json!(["vip:*"]))).await;
    subscribe(&eve, "vip:news").await;
    subscribe(&eve, "chat").await;
    eve.ok("refresh", json!({ "token": grant(json!([])) }))
        .await
        .unwrap();
    let push = eve.next_push(PATIENCE).await.unwrap();
    assert_eq!(
        (&push["push"], &push["channel"]),
        (&json!("unsubscribe"), &json!("vip:news"))
    );
    let (boss, _) = client_with_token(&node.ws_url(), &grant(json!(["vip:*"]))).await;
    publish(&boss, "vip:news", json!("secret")).await;
    publish(&boss, "chat", json!("hello")).await;
    let next = publications(&eve, "chat", 1).await;
    assert_eq!(
        next[0]["data"], "hello",
        "vip:news came after the refresh: {next:?}"
    );

    // Socket.IO: the room the token no longer grants ends with herald:unsubscribe.
    let url = format!("http://{}", node.addr());
    let options = json!({
        "transports": ["websocket"],
        "auth": { "token": grant(json!(["/club", "/club:*"])) },
    });
    let mut socket = Agent::spawn(Library::Js, &url, "/club", options);
    socket.next("connect", PATIENCE).await.unwrap();
    let ack = socket
        .emit_ack("join", json!(["gold"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let ack = socket
        .emit_ack("herald:refresh", json!([grant(json!(["/club"]))]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = socket
        .find(PATIENCE, |r| {
            r["type"] == "event" && r["event"] == "herald:unsubscribe"
        })
        .await
        .unwrap();
    assert_eq!(
        event["args"][0],
        json!({ "channel": "/club:gold", "room": "gold" })
    );
}

#[tokio::test]
async fn a_token_that_never_expires_in_practice_is_served_without_a_panic() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)]);
    let forever = hs256(&json!({ "sub": "alice", "exp": u64::MAX }));
    let (alice, result) = client_with_token(&node.ws_url(), &forever).await;
    assert!(result["expires_in"].as_u64().unwrap() > 1 << 60, "{result}");
    subscribe(&alice, "chat").await;
    let bob = client(&node.ws_url()).await;
    publish(&bob, "chat", json!("still here")).await;
    assert_eq!(
        publications(&alice, "chat", 1).await[0]["data"],
        "still here"
    );
    let refreshed = alice
        .ok("refresh", json!({ "token": forever }))
        .await
        .unwrap();
    assert!(refreshed["expires_in"].as_u64().is_some(), "{refreshed}");
}

#[tokio::test]
async fn a_user_limited_channel_keeps_its_namespace_access_level() {
    let node = vip_node("");
    let (eve, _) = client_with_token(&node.ws_url(), &tokens::user("eve", 600)).await;
    for (method, params) in [
        ("subscribe", json!({ "channel": "vip:news#eve" })),
        ("publish", json!({ "channel": "vip:x#eve", "data": 1 })),
        ("subscribe", json!({ "channel": "vip:news" })),
    ] {
        let error = refused(&eve, method, params.clone()).await;
        assert_eq!(error["code"], 103, "{params}: {error}");
    }
    // A direct message in a namespace open to all is still hers.
    subscribe(&eve, "dm:#bob,eve").await;
}

#[tokio::test]
async fn a_socketio_token_that_is_given_is_never_taken_for_none() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)]);
    let url = format!("http://{}", node.addr());
    for auth in [
        json!({ "token": 123 }),
        json!({ "token": "" }),
        json!({ "token": "garbage", "pid": 1 }),
        json!({ "token": { "sub": "admin" } }),
    ] {
        let options = json!({ "transports": ["websocket"], "auth": auth });
        let mut socket = Agent::spawn(Library::Js, &url, "/", options);
        let error = socket.next("connect_error", PATIENCE).await.unwrap();
        assert_eq!(error["data"]["code"], 101, "{auth}: {error}");
    }
    // No token at all, or null, is an anonymous client, as anonymous access allows.
    for auth in [json!({}), json!({ "token": null })] {
        let options = json!({ "transports": ["websocket"], "auth": auth });
        let mut socket = Agent::spawn(Library::Js, &url, "/", options);
        socket.next("connect", PATIENCE).await.unwrap();
    }
    // The same on the native protocol: an empty token is refused.
    let native = NativeClient::open(&node.ws_url()).await.unwrap();
    let error = refused(&native, "connect", json!({ "token": "" })).await;
    assert_eq!(error["code"], 101, "{error}");
}

#[tokio::test]
async fn probes_and_metrics_can_leave_the_client_port() {
    let node = standalone(&[("HERALD_GATEWAY__METRICS_LISTEN", "127.0.0.1:0")]);
    let probes = node.probes_addr();
    assert_ne!(probes, node.addr());
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            herald_testkit::node::http_status(probes, path),
            Some(200),
            "{path}"
        );
        assert_eq!(
            herald_testkit::node::http_status(node.addr(), path),
            Some(404),
            "{path}"
        );
    }
    // Clients are served as before.
    client(&node.ws_url()).await;
}

/// Whether `key` is in the cluster's Redis.
fn redis_exists(url: &str, key: &str) -> bool {
    let output = Command::new("redis-cli")
        .args(["-u", url, "EXISTS", key])
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).trim() == "1"
}

/// Keys in the cluster's Redis, asked with `redis-cli` (installed with `redis-server`).
fn redis_keys(url: &str) -> u64 {
    let output = Command::new("redis-cli")
        .args(["-u", url, "DBSIZE"])
        .output()
        .expect("run redis-cli");
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("redis-cli said {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_channels_that_never_existed_leaves_nothing_behind() {
    let cluster = crate::cluster(1, 1);
    let reader = client(&cluster.ws_url(0)).await;
    publish(&reader, "real", json!(1)).await;
    // The channel activity index (one key for all channels) is written shortly after.
    let url = cluster.redis.url();
    let indexed = wait_for(PATIENCE, || redis_exists(&url, "herald:active"));
    assert!(indexed, "the activity index was not written");
    let before = redis_keys(&cluster.redis.url());
    for n in 0..300 {
        let channel = format!("nobody:{n}");
        let page = reader
            .ok("history", json!({ "channel": channel, "limit": 10 }))
            .await
            .unwrap();
        assert_eq!(
            (&page["offset"], &page["epoch"]),
            (&json!(0), &json!("")),
            "{page}"
        );
        if n % 10 == 0 {
            let result = subscribe(&reader, &channel).await;
            assert_eq!(result["epoch"], "", "{result}");
            reader
                .ok("unsubscribe", json!({ "channel": channel }))
                .await
                .unwrap();
        }
    }
    assert_eq!(redis_keys(&cluster.redis.url()), before);
    // A channel subscribed before its first publication gets it, and recovers from the
    // empty epoch what was published while it was away.
    let late = client(&cluster.ws_url(0)).await;
    let result = subscribe(&late, "fresh").await;
    assert_eq!(
        (&result["offset"], &result["epoch"]),
        (&json!(0), &json!(""))
    );
    publish(&reader, "fresh", json!("first")).await;
    assert_eq!(publications(&late, "fresh", 1).await[0]["data"], "first");
    let away = client(&cluster.ws_url(0)).await;
    subscribe(&away, "fresher").await;
    drop(away);
    publish(&reader, "fresher", json!("missed")).await;
    let back = client(&cluster.ws_url(0)).await;
    let params = json!({ "channel": "fresher", "recover": true, "offset": 0, "epoch": "" });
    let result = back.ok("subscribe", params).await.unwrap();
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(publications(&back, "fresher", 1).await[0]["data"], "missed");
}
