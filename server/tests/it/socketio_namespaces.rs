//! Several namespaces on one Engine.IO connection, as every stock client multiplexes them:
//! each socket has its own subscriptions, rooms, recovery record and personal channel
//! membership, and closing one leaves the others as they were.

use herald_testkit::Cluster;
use herald_testkit::node::http_get;
use herald_testkit::socketio::{Agent, Library};
use serde_json::{Value, json};

use super::*;
use crate::tokens::{self, SECRET, hs256};

const NAMESPACES: [&str; 3] = ["/", "/chat", "/news"];

/// The next event of `agent`, as (socket index, event name, arguments).
async fn next_event(agent: &mut Agent) -> (u64, Value, Value) {
    let event = agent.next("event", PATIENCE).await.unwrap();
    let socket = event["socket"].as_u64().unwrap();
    (socket, event["event"].clone(), event["args"].clone())
}

/// Fails if an event arrives within a short while (bounded, not a synchronisation point).
async fn no_event(agent: &mut Agent) {
    let quiet = agent.next("event", Duration::from_millis(300)).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
}

/// Socket.IO client connections the gateway at `addr` holds now, from its `/metrics`.
fn socketio_connections(addr: std::net::SocketAddr) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("a scrape");
    body.lines()
        .filter(|line| line.starts_with("herald_connections{") && line.contains("socketio"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_three_namespaces_of_one_user() {
    let cluster = Cluster::start(herald(), 2, 1, &[("HERALD_AUTH__HMAC_SECRET", SECRET)]);
    let here = format!("http://{}", cluster.gateways[0].addr());
    let there = format!("http://{}", cluster.gateways[1].addr());
    let options = json!({
        "transports": ["websocket"],
        "auth": { "token": tokens::user("alice", 600), "recovery": true },
    });
    let mut alice = Agent::spawn_multiplexed(&here, &NAMESPACES, options).with_offsets();
    let mut ids = Vec::new();
    for _ in NAMESPACES {
        let connect = alice.next("connect", PATIENCE).await.unwrap();
        ids.push(connect["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one socket per namespace: {ids:?}");
    assert_eq!(socketio_connections(cluster.gateways[0].addr()), 1.0);

    let mut talkers = Vec::new();
    for namespace in NAMESPACES {
        let mut talker = Agent::spawn(Library::Js, &there, namespace, quick_reconnects());
        talker.next("connect", PATIENCE).await.unwrap();
        talkers.push(talker);
    }
    // Each socket gets its own namespace's events, and only those.
    for (i, talker) in talkers.iter_mut().enumerate() {
        let ack = talker
            .emit_ack("message", json!([NAMESPACES[i]]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
        let (socket, event, args) = next_event(&mut alice).await;
        assert_eq!(
            (socket, event, args),
            (i as u64, json!("message"), json!([NAMESPACES[i]]))
        );
    }
    // Rooms belong to a socket: /chat's lobby is not /news's lobby.
    let joined = alice
        .emit_ack_on(1, "join", json!(["lobby"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(joined, json!({"ok": true}));
    for (i, talker) in talkers.iter_mut().enumerate().skip(1) {
        let ack = talker
            .emit_ack("to", json!(["lobby", "greet", i]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    assert_eq!(
        next_event(&mut alice).await,
        (1, json!("greet"), json!([1]))
    );
    no_event(&mut alice).await;

    // What a backend sends to alice's personal channel reaches every socket once.
    let backend_token = hs256(&json!({ "sub": "backend", "channels": ["user:*"] }));
    let (backend, _) = client_with_token(&cluster.ws_url(1), &backend_token).await;
    publish(&backend, "user:#alice", json!({ "notice": 1 })).await;
    let mut reached: Vec<u64> = Vec::new();
    for _ in NAMESPACES {
        let (socket, event, args) = next_event(&mut alice).await;
        assert_eq!((event, args), (json!("message"), json!([{ "notice": 1 }])));
        reached.push(socket);
    }
    reached.sort();
    assert_eq!(reached, [0, 1, 2]);

    // Each socket has its own recovery record: after a lost connection all three come
    // back with what they missed.
    alice.cut();
    for _ in NAMESPACES {
        alice.next("disconnect", PATIENCE).await.unwrap();
    }
    for (i, talker) in talkers.iter_mut().enumerate() {
        let ack = talker
            .emit_ack("message", json!(["missed", i]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    alice.reconnect();
    let mut missed = Vec::new();
    for _ in NAMESPACES {
        let again = alice.next("connect", PATIENCE).await.unwrap();
        assert_eq!(again["recovered"], true, "{again}");
    }
    for _ in NAMESPACES {
        let (socket, _, args) = next_event(&mut alice).await;
        missed.push((socket, args));
    }
    missed.sort_by_key(|(socket, _)| *socket);
    assert_eq!(
        missed,
        (0..3)
            .map(|i| (i, json!(["missed", i])))
            .collect::<Vec<_>>()
    );

    // Leaving /chat leaves the other two sockets, and their personal channel, as they were.
    alice.disconnect_on(1);
    let left = alice.next("disconnect", PATIENCE).await.unwrap();
    assert_eq!(left["socket"], 1, "{left}");
    for (i, talker) in talkers.iter_mut().enumerate() {
        let ack = talker
            .emit_ack("message", json!(["after", i]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    publish(&backend, "user:#alice", json!({ "notice": 2 })).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (socket, _, args) = next_event(&mut alice).await;
        seen.push((socket, args));
    }
    seen.sort_by_key(|(socket, args)| (*socket, args.to_string()));
    assert_eq!(
        seen,
        [
            (0, json!(["after", 0])),
            (0, json!([{ "notice": 2 }])),
            (2, json!(["after", 2])),
            (2, json!([{ "notice": 2 }])),
        ]
    );
    no_event(&mut alice).await;
}

#[tokio::test]
async fn anonymous_sockets_of_one_connection_are_independent_too() {
    let node = standalone(&[]);
    let url = format!("http://{}", node.addr());
    let options = json!({ "transports": ["websocket"] });
    let mut multi = Agent::spawn_multiplexed(&url, &["/a", "/b"], options.clone());
    for _ in 0..2 {
        multi.next("connect", PATIENCE).await.unwrap();
    }
    let mut talker = Agent::spawn(Library::Js, &url, "/b", options);
    talker.next("connect", PATIENCE).await.unwrap();
    multi.disconnect_on(0);
    multi.next("disconnect", PATIENCE).await.unwrap();
    let ack = talker
        .emit_ack("message", json!(["to b"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(
        next_event(&mut multi).await,
        (1, json!("message"), json!(["to b"]))
    );
}
