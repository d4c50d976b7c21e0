//! Stock Socket.IO clients on each transport, through a load balancer without sticky
//! sessions, and coming back after a lost connection (connection state recovery).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Balancer, Cluster};
use serde_json::{Value, json};

use super::*;

async fn connected(library: Library, url: &str, options: Value) -> (Agent, Value) {
    let mut agent = Agent::spawn(library, url, "/", options);
    let connect = agent.next("connect", PATIENCE).await.unwrap();
    (agent, connect)
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// `n` acknowledged events from `talker`, numbered from `first`.
async fn emit_numbered(talker: &mut Agent, event: &str, first: u64, n: u64) {
    for i in first..first + n {
        let ack = talker.emit_ack(event, json!([i]), PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
}

/// The numbers carried by the next `n` events `listener` receives.
async fn received_numbers(listener: &mut Agent, n: usize) -> Vec<u64> {
    let mut numbers = Vec::with_capacity(n);
    for _ in 0..n {
        let event = listener.next("event", PATIENCE).await.unwrap();
        numbers.push(event["args"][0].as_u64().unwrap_or(u64::MAX));
    }
    numbers
}

/// Fails if an event arrives within a short while (bounded, not a synchronisation point).
async fn no_event(agent: &mut Agent) {
    let quiet = agent.next("event", Duration::from_millis(300)).await;
    assert!(quiet.is_err(), "unexpected event: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_carries_the_chat_between_gateways() {
    let cluster = cluster(2, 1);
    let (a, b) = (
        url(cluster.gateways[0].addr()),
        url(cluster.gateways[1].addr()),
    );
    let transports = [
        json!({ "transports": ["polling"] }),
        json!({ "transports": ["websocket"] }),
        // The default: polling first, then the upgrade.
        json!({}),
    ];
    for library in [Library::Js, Library::Python] {
        for options in &transports {
            let case = format!("{library:?} {options}");
            let (mut listener, connect) = connected(library, &a, options.clone()).await;
            let (mut talker, _) = connected(library, &b, options.clone()).await;
            if options["transports"] == json!(["polling"]) {
                assert_eq!(connect["transport"], "polling", "{case}");
            }
            if library == Library::Js && options == &json!({}) {
                let upgrade = listener.next("upgrade", PATIENCE).await.unwrap();
                assert_eq!(upgrade["transport"], "websocket", "{case}");
            }
            let ack = talker
                .emit_ack("message", json!(["这是一条消息"]), PATIENCE)
                .await
                .unwrap();
            assert_eq!(ack["ok"], true, "{case}: {ack}");
            let event = listener.next("event", PATIENCE).await.unwrap();
            assert_eq!(event["args"], json!(["这是一条消息"]), "{case}");
            // Binary attachments travel on polling too (base64 in the payload).
            talker.emit("bin", json!([{"$binary": [0, 1, 255]}]));
            let event = listener.next("event", PATIENCE).await.unwrap();
            assert_eq!(event["args"], json!([{"$binary": [0, 1, 255]}]), "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_serves_polling_and_the_upgrade() {
    let node = standalone(&[]);
    let (mut listener, _) = connected(Library::Js, &url(node.addr()), json!({})).await;
    // The session opened on polling, since it upgrades.
    let upgrade = listener.next("upgrade", PATIENCE).await.unwrap();
    assert_eq!(upgrade["transport"], "websocket");
    let (mut talker, _) = connected(
        Library::Python,
        &url(node.addr()),
        json!({"transports": ["polling"]}),
    )
    .await;
    emit_numbered(&mut talker, "n", 1, 20).await;
    assert_eq!(
        received_numbers(&mut listener, 20).await,
        (1..=20).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_works_through_a_round_robin_balancer() {
    let cluster = cluster(2, 1);
    let balancer = Balancer::start(&[cluster.gateways[0].addr(), cluster.gateways[1].addr()]).await;
    let polling = json!({ "transports": ["polling"] });
    let (mut js, _) = connected(Library::Js, &balancer.url(), polling.clone()).await;
    let (mut python, _) = connected(Library::Python, &balancer.url(), polling).await;
    // Every GET and POST of both sessions alternates between the gateways; the one that does
    // not hold a session forwards the request to the one that does.
    emit_numbered(&mut js, "n", 1, 30).await;
    assert_eq!(
        received_numbers(&mut python, 30).await,
        (1..=30).collect::<Vec<_>>()
    );
    emit_numbered(&mut python, "n", 31, 30).await;
    assert_eq!(
        received_numbers(&mut js, 30).await,
        (31..=60).collect::<Vec<_>>()
    );
    // An upgrade that lands on the other gateway is refused, and the client stays on
    // polling; one that lands on the holder succeeds. Either way nothing is lost.
    let (mut default, _) = connected(Library::Js, &balancer.url(), json!({})).await;
    emit_numbered(&mut js, "n", 61, 10).await;
    assert_eq!(
        received_numbers(&mut default, 10).await,
        (61..=70).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_recovers_rooms_and_missed_events_after_a_transport_cut() {
    let cluster = cluster(2, 1);
    let (a, b) = (
        url(cluster.gateways[0].addr()),
        url(cluster.gateways[1].addr()),
    );
    for transports in [json!(["websocket"]), json!(["polling"])] {
        let options = json!({ "transports": transports, "auth": { "recovery": true } });
        let mut listener = Agent::spawn(Library::Js, &a, "/", options).with_offsets();
        let first = listener.next("connect", PATIENCE).await.unwrap();
        assert_eq!(first["recovered"], false);
        let (mut talker, _) = connected(Library::Js, &b, json!({ "transports": transports })).await;
        let joined = listener
            .emit_ack("join", json!(["lobby"]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(joined["ok"], true);
        // One event received live, so the client holds an offset.
        emit_numbered(&mut talker, "n", 1, 1).await;
        let live = listener.next("event", PATIENCE).await.unwrap();
        assert!(live["offset"].is_string(), "{live}");

        listener.cut();
        listener.next("disconnect", PATIENCE).await.unwrap();
        emit_numbered(&mut talker, "n", 2, 10).await;
        for i in 12..17 {
            let ack = talker
                .emit_ack("to", json!(["lobby", "n", i]), PATIENCE)
                .await
                .unwrap();
            assert_eq!(ack["ok"], true, "{ack}");
        }
        listener.reconnect();
        let again = listener.next("connect", PATIENCE).await.unwrap();
        assert_eq!(again["recovered"], true, "{transports}: {again}");
        assert_eq!(again["id"], first["id"], "the socket keeps its id");
        assert_eq!(
            received_numbers(&mut listener, 15).await,
            (2..17).collect::<Vec<_>>(),
            "{transports}"
        );
        // The room was restored, and nothing comes twice.
        let ack = talker
            .emit_ack("to", json!(["lobby", "n", 17]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true);
        assert_eq!(received_numbers(&mut listener, 1).await, [17]);
        no_event(&mut listener).await;
    }
}

/// A socket's record is amended one room at a time, and saved whole again once the
/// amendments outnumber its channels: through both, it comes back in exactly the rooms it
/// was in, with what it missed in them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_in_many_rooms_recovers_exactly_its_rooms() {
    let cluster = cluster(2, 1);
    let (a, b) = (
        url(cluster.gateways[0].addr()),
        url(cluster.gateways[1].addr()),
    );
    let options = json!({ "transports": ["websocket"], "auth": { "recovery": true } });
    let mut listener = Agent::spawn(Library::Js, &a, "/", options).with_offsets();
    listener.next("connect", PATIENCE).await.unwrap();
    let (mut talker, _) = connected(Library::Js, &b, json!({ "transports": ["websocket"] })).await;
    // 10 joins, then churn in one room: 19 amendments, past the record's floor of 16, so
    // the record is saved whole once on the way and amended after.
    let mut requests: Vec<(&str, String)> = (0..10).map(|r| ("join", format!("r{r}"))).collect();
    for _ in 0..4 {
        requests.push(("leave", "r3".into()));
        requests.push(("join", "r3".into()));
    }
    requests.push(("leave", "r3".into()));
    for (request, room) in requests {
        let ack = listener
            .emit_ack(request, json!([room]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{request} {room}: {ack}");
    }
    let to = |room: &str, n: u64| json!([room, "n", n]);
    let ack = talker.emit_ack("to", to("r0", 1), PATIENCE).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(received_numbers(&mut listener, 1).await, [1]);

    listener.cut();
    listener.next("disconnect", PATIENCE).await.unwrap();
    for (room, n) in [("r9", 2), ("r3", 3), ("r7", 4)] {
        let ack = talker.emit_ack("to", to(room, n), PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    listener.reconnect();
    let again = listener.next("connect", PATIENCE).await.unwrap();
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(received_numbers(&mut listener, 2).await, [2, 4]);
    for (room, n) in [("r3", 5), ("r8", 6)] {
        let ack = talker.emit_ack("to", to(room, n), PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    assert_eq!(received_numbers(&mut listener, 1).await, [6]);
    no_event(&mut listener).await;
}

/// A socket with connection state recovery (asked for in `options`, or given to its
/// namespace by the cluster's `env`) listens on gateway A through a balancer; A is killed
/// while a talker on B emits without pause. The socket comes back on B with its id, and
/// gets every acknowledged event once, in order.
async fn a_socket_recovers_after_its_gateway_is_killed_mid_stream(
    env: &[(&str, &str)],
    options: Value,
) {
    let mut cluster = Cluster::start(herald(), 2, 1, env);
    let (a, b) = (cluster.gateways[0].addr(), cluster.gateways[1].addr());
    // The listener reaches gateway A through the balancer, then A dies and the balancer
    // sends its reconnection to B.
    let balancer = Balancer::start(&[a]).await;
    let mut listener = Agent::spawn(Library::Js, &balancer.url(), "/", options).with_offsets();
    let first = listener.next("connect", PATIENCE).await.unwrap();
    assert_eq!(first["recovered"], false, "{first}");
    let (mut talker, _) =
        connected(Library::Js, &url(b), json!({"transports": ["websocket"]})).await;
    emit_numbered(&mut talker, "n", 1, 1).await;
    let live = listener.next("event", PATIENCE).await.unwrap();
    assert!(
        live["offset"].is_string(),
        "recovery gives every event an offset: {live}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let emitting = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut acked = Vec::new();
            for n in 2.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ack = talker.emit_ack("n", json!([n]), PATIENCE).await.unwrap();
                assert_eq!(ack["ok"], true, "{n}: {ack}");
                acked.push(n);
            }
            acked
        }
    });
    let mut received = vec![1];
    // Mid-stream: the listener is receiving when its gateway dies.
    received.extend(received_numbers(&mut listener, 5).await);
    balancer.set_backends(&[b]);
    cluster.gateways[0].kill();
    listener.next("disconnect", PATIENCE).await.unwrap();
    let again = listener.next("connect", PATIENCE).await.unwrap();
    assert_eq!(again["recovered"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
    stop.store(true, Ordering::Relaxed);
    let acked = emitting.await.unwrap();
    let more = 1 + acked.len() - received.len();
    received.extend(received_numbers(&mut listener, more).await);
    // Events sent while the client was away and any sent since arrive once each, in order.
    let expected: Vec<u64> = std::iter::once(1).chain(acked).collect();
    assert_eq!(received, expected);
    no_event(&mut listener).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_asks_for_recovery_recovers_after_its_gateway_is_killed() {
    let mut options = quick_reconnects();
    options["auth"] = json!({ "recovery": true });
    a_socket_recovers_after_its_gateway_is_killed_mid_stream(&[], options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_socket_of_a_recovering_namespace_recovers_after_its_gateway_is_killed() {
    let env = [("HERALD_SOCKETIO__RECOVERY_NAMESPACES", "[\"/\"]")];
    a_socket_recovers_after_its_gateway_is_killed_mid_stream(&env, quick_reconnects()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sockets_over_two_gateways_all_receive_every_event() {
    let cluster = cluster(2, 1);
    let options = json!({ "transports": ["websocket"] });
    let mut crowds = Vec::new();
    for gateway in &cluster.gateways {
        let mut crowd = Agent::spawn_many(&url(gateway.addr()), "/", options.clone(), 100);
        for _ in 0..100 {
            crowd.next("connect", PATIENCE).await.unwrap();
        }
        crowds.push(crowd);
    }
    let (mut talker, _) = connected(Library::Js, &url(cluster.gateways[0].addr()), options).await;
    emit_numbered(&mut talker, "n", 1, 5).await;
    for crowd in &mut crowds {
        let mut seen = vec![Vec::new(); 100];
        for _ in 0..500 {
            let event = crowd.next("event", PATIENCE).await.unwrap();
            let socket = event["socket"].as_u64().unwrap() as usize;
            seen[socket].push(event["args"][0].as_u64().unwrap());
        }
        for numbers in seen {
            assert_eq!(numbers, [1, 2, 3, 4, 5]);
        }
    }
}
