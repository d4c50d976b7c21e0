//! Graceful stops: a gateway told to stop (SIGTERM) turns not ready, refuses new clients,
//! and sends its clients away over the drain period; they come back on the other gateway
//! and recover, and no acknowledged publication is lost. A router told to stop answers
//! every request it has taken, and the other router takes the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use herald_testkit::client::Event;
use herald_testkit::node::{http_get, http_status};
use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Balancer, Cluster, NativeClient, wait_for};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{PATIENCE, client, herald, publish_until, quick_reconnects, subscribe};

const SUBSCRIBERS: usize = 100;
/// Long enough that the test sees the gateway draining, short enough to keep it quick.
const DRAIN_PERIOD: &str = "5s";
/// Pace of the publisher: enough publications to cross the whole drain, few enough that
/// 100 subscribers reading each one stay cheap on 2 cores.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// What one subscriber saw: every offset received, in order, on both gateways.
struct Seen {
    offsets: Vec<u64>,
    recovered: Value,
}

/// Follows one subscriber of the draining gateway: reads until it is sent away (checking
/// the disconnect push and close code), comes back on `other` with recovery, then reads
/// until it has everything up to the final offset the test announces.
async fn follow(
    subscriber: NativeClient,
    other: String,
    channel: String,
    start: Value,
    left: Arc<AtomicUsize>,
    mut last_acked: watch::Receiver<Option<u64>>,
) -> Seen {
    let mut offsets = Vec::new();
    let mut farewell = None;
    loop {
        match subscriber.next_event(PATIENCE).await {
            Some(Event::Push(push)) if push["push"] == "publication" => {
                offsets.push(push["offset"].as_u64().unwrap());
            }
            Some(Event::Push(push)) if push["push"] == "disconnect" => farewell = Some(push),
            Some(Event::Closed(close)) => {
                let close = close.expect("a close frame");
                assert_eq!(close.code, 3000, "{close:?}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let farewell = farewell.expect("a disconnect push before the close");
    assert_eq!(farewell["code"], 3000, "{farewell}");
    assert_eq!(farewell["reconnect"], true, "{farewell}");
    left.fetch_add(1, Ordering::Relaxed);

    let returning = client(&other).await;
    let from = offsets
        .last()
        .copied()
        .unwrap_or(start["offset"].as_u64().unwrap());
    let params =
        json!({ "channel": channel, "recover": true, "offset": from, "epoch": start["epoch"] });
    let recovered = returning.ok("subscribe", params).await.expect("subscribe");
    loop {
        let done = *last_acked.borrow_and_update();
        if done.is_some_and(|last| offsets.last().is_some_and(|&o| o >= last)) {
            break;
        }
        tokio::select! {
            event = returning.next_event(PATIENCE) => match event {
                Some(Event::Push(push)) if push["push"] == "publication" => {
                    offsets.push(push["offset"].as_u64().unwrap());
                }
                other => panic!("unexpected {other:?} after coming back"),
            },
            changed = last_acked.changed() => changed.expect("the test announces the end"),
        }
    }
    Seen { offsets, recovered }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_moves_its_subscribers_to_the_other_one_losing_nothing() {
    let env = [("HERALD_GATEWAY__DRAIN_PERIOD", DRAIN_PERIOD)];
    let mut cluster = Cluster::start(herald(), 2, 1, &env);
    let (draining, other) = (cluster.gateways[0].addr(), cluster.gateways[1].ws_url());
    let channel = "chat:drain".to_string();

    let left = Arc::new(AtomicUsize::new(0));
    let (announce, last_acked) = watch::channel(None);
    let mut followers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let subscriber = client(&cluster.gateways[0].ws_url()).await;
        let start = subscribe(&subscriber, &channel).await;
        followers.push(tokio::spawn(follow(
            subscriber,
            other.clone(),
            channel.clone(),
            start,
            left.clone(),
            last_acked.clone(),
        )));
    }
    let publisher = client(&other).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = tokio::spawn(publish_until(
        publisher,
        channel.clone(),
        PUBLISH_EVERY,
        stop.clone(),
    ));

    cluster.gateways[0].terminate();
    // While it drains, the gateway is alive but not ready, and takes no new client.
    assert!(
        wait_for(PATIENCE, || http_status(draining, "/readyz") == Some(503)),
        "the draining gateway still says it is ready"
    );
    let still_connected = SUBSCRIBERS - left.load(Ordering::Relaxed);
    assert!(
        still_connected > 0,
        "the drain was over before the probe saw it"
    );
    assert_eq!(http_status(draining, "/healthz"), Some(200));
    let (_, exposition) = http_get(draining, "/metrics").expect("metrics while draining");
    assert!(exposition.contains("herald_draining 1"), "{exposition}");
    let refused = NativeClient::open(&cluster.gateways[0].ws_url()).await;
    assert!(refused.is_err(), "a draining gateway took a new client");

    assert!(
        wait_for(PATIENCE, || left.load(Ordering::Relaxed) == SUBSCRIBERS),
        "{} of {SUBSCRIBERS} subscribers were sent away",
        left.load(Ordering::Relaxed)
    );
    let status = cluster.gateways[0].wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");

    stop.store(true, Ordering::Relaxed);
    let acked = publishing.await.expect("the publisher finished");
    let last = *acked.last().expect("publications were acknowledged");
    announce.send_replace(Some(last));
    for follower in followers {
        let seen = follower.await.expect("a subscriber finished");
        assert_eq!(seen.recovered["recovered"], true, "{}", seen.recovered);
        // Everything acknowledged since the subscriber joined, exactly once, in order.
        let first = seen.offsets.first().copied().unwrap_or(last);
        let expected: Vec<u64> = acked.iter().copied().filter(|&o| o >= first).collect();
        assert_eq!(seen.offsets, expected, "lost, duplicated or reordered");
        assert_eq!(first, acked[0], "publications before the drain were missed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_clients_of_a_draining_gateway_reconnect_elsewhere_and_recover() {
    const SOCKETS: usize = 20;
    let env = [("HERALD_GATEWAY__DRAIN_PERIOD", "3s")];
    let mut cluster = Cluster::start(herald(), 2, 1, &env);
    let (a, b) = (cluster.gateways[0].addr(), cluster.gateways[1].addr());
    // The balancer stands for the Kubernetes Service: it sends new connections to ready
    // gateways only.
    let balancer = Balancer::start(&[a]).await;
    let mut options = quick_reconnects();
    options["auth"] = json!({ "recovery": true });
    let mut crowd = Agent::spawn_many(&balancer.url(), "/", options, SOCKETS).with_offsets();
    let mut ids = Vec::new();
    for _ in 0..SOCKETS {
        let connected = crowd.next("connect", PATIENCE).await.unwrap();
        ids.push(connected["id"].clone());
    }
    let talker_options = json!({ "transports": ["websocket"] });
    let url = format!("http://{b}");
    let mut talker = Agent::spawn(Library::Js, &url, "/", talker_options);
    talker.next("connect", PATIENCE).await.unwrap();
    let ack = talker.emit_ack("n", json!([0]), PATIENCE).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");

    cluster.gateways[0].terminate();
    assert!(wait_for(PATIENCE, || http_status(a, "/readyz") != Some(200)));
    balancer.set_backends(&[b]);
    // Events sent while the sockets move.
    for n in 1..=20 {
        let ack = talker.emit_ack("n", json!([n]), PATIENCE).await.unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }
    let mut returned = 0;
    while returned < SOCKETS {
        let report = crowd.next("connect", PATIENCE).await.unwrap();
        assert_eq!(report["recovered"], true, "{report}");
        assert!(
            ids.contains(&report["id"]),
            "the socket keeps its id: {report}"
        );
        returned += 1;
    }
    let status = cluster.gateways[0].wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let ack = talker.emit_ack("n", json!([21]), PATIENCE).await.unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    // Every socket gets every event once, in order, across the move.
    let mut numbers = vec![Vec::new(); SOCKETS];
    while numbers.iter().any(|n| n.len() < 22) {
        let event = crowd.next("event", PATIENCE).await.unwrap();
        let socket = event["socket"].as_u64().unwrap() as usize;
        numbers[socket].push(event["args"][0].as_u64().unwrap());
    }
    for (socket, seen) in numbers.iter().enumerate() {
        assert_eq!(*seen, (0..=21).collect::<Vec<u64>>(), "socket {socket}");
    }
}

/// Publications stored by the router whose HTTP listener is at `addr`.
fn stored_by(addr: std::net::SocketAddr) -> f64 {
    let (_, exposition) = http_get(addr, "/metrics").unwrap_or_default();
    exposition
        .lines()
        .find_map(|line| line.strip_prefix("herald_publications_total "))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_router_answers_every_request_it_took_and_the_other_takes_the_rest() {
    let mut cluster = Cluster::start(herald(), 1, 2, &[]);
    let (stopping, staying) = (cluster.routers[0].addr(), cluster.routers[1].addr());
    let publisher = client(&cluster.ws_url(0)).await;
    let channel = "chat:router-stop".to_string();
    let stop = Arc::new(AtomicBool::new(false));
    // Back to back, so that the stopping router is in the middle of a request.
    let publishing = tokio::spawn(publish_until(
        publisher,
        channel,
        Duration::ZERO,
        stop.clone(),
    ));
    assert!(
        wait_for(PATIENCE, || stored_by(stopping) >= 50.0),
        "both routers take publications"
    );
    cluster.routers[0].terminate();
    let status = cluster.routers[0].wait_exit(PATIENCE);
    assert!(status.is_some_and(|s| s.success()), "exit: {status:?}");
    let before = stored_by(staying);
    assert!(
        wait_for(PATIENCE, || stored_by(staying) >= before + 200.0),
        "the other router takes every publication"
    );
    stop.store(true, Ordering::Relaxed);
    // No publish was refused or timed out (the publisher fails the test on any), and the
    // offsets the two routers gave follow each other.
    let acked = publishing.await.expect("the publisher finished");
    let first = acked[0];
    assert_eq!(
        acked,
        (first..first + acked.len() as u64).collect::<Vec<_>>()
    );
}
