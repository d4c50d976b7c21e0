//! The NATS implementation of the bus against a real `nats-server`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, NatsBus, Subscription};
use herald_testkit::{Server, SlowLink};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(server: &Server, name: &str) -> NatsBus {
    connect_to(&server.url(), name).await
}

async fn connect_to(url: &str, name: &str) -> NatsBus {
    let bus = NatsBus::connect(url, name).await.unwrap();
    assert!(bus.wait_connected(WAIT).await, "{name} connects");
    bus
}

/// Joins queue group `g` on subject `work`, live on the server once this returns.
async fn join_work(bus: &NatsBus) -> Subscription {
    let subscription = bus
        .queue_subscribe("work".into(), "g".into())
        .await
        .unwrap();
    bus.flush().await.unwrap();
    subscription
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_flush_a_subscription_sees_every_later_publication() {
    let server = Server::nats();
    let subscriber = connect(&server, "subscriber").await;
    let publisher = connect(&server, "publisher").await;
    // A publication from another connection, sent right after the flush, must never pass
    // the subscription by: this is what "subscribed" means to a client.
    for i in 0..200 {
        let subject = format!("t.{i}");
        let mut subscription = subscriber.subscribe(subject.clone()).await.unwrap();
        subscriber.flush().await.unwrap();
        publisher
            .publish(subject, Bytes::from(vec![1]))
            .await
            .unwrap();
        let received = tokio::time::timeout(WAIT, subscription.next()).await;
        assert!(matches!(received, Ok(Some(_))), "publication {i} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_responders_fail_at_once_and_outages_are_reported() {
    let mut server = Server::nats();
    let bus = connect(&server, "client").await;
    let answer = bus.request("nobody.home".into(), Bytes::new(), WAIT).await;
    assert_eq!(answer, Err(BusError::NoResponders));

    let mut connections = bus.connections();
    connections.mark_unchanged();
    server.stop();
    assert!(
        herald_testkit::wait_for_async(WAIT, || async { !bus.is_connected() }).await,
        "the bus notices the outage"
    );
    assert_eq!(
        bus.publish("x".into(), Bytes::new()).await,
        Err(BusError::NotConnected),
        "publishes are refused, not buffered, while disconnected"
    );
    server.restart();
    tokio::time::timeout(WAIT * 2, connections.changed())
        .await
        .expect("a reconnection is reported")
        .unwrap();
    assert!(bus.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_queue_member_yields_what_it_received_and_the_rest_go_to_the_others() {
    let server = Server::nats();
    let leaving = connect(&server, "leaving").await;
    let staying = connect(&server, "staying").await;
    let publisher = connect(&server, "publisher").await;
    let mut left = join_work(&leaving).await;
    for i in 0..20u8 {
        publisher
            .publish("work".into(), Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut stays = join_work(&staying).await;
    left.drainer().drain();
    // Everything sent while it was the only member comes out of it, then its stream ends.
    let received =
        tokio::time::timeout(WAIT, (&mut left).map(|m| m.payload[0]).collect::<Vec<_>>())
            .await
            .expect("the drained stream ends");
    assert_eq!(received, (0..20).collect::<Vec<u8>>());
    // Once it has ended, every new message reaches the member that stays.
    for i in 20..30u8 {
        publisher
            .publish("work".into(), Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    for i in 20..30u8 {
        let message = tokio::time::timeout(WAIT, stays.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.payload[0], i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_member_drained_while_messages_are_in_flight_loses_none() {
    const SENT: u32 = 2_000;
    let server = Server::nats();
    // What the server sends the leaving member takes 50 ms to arrive: when it drains,
    // messages the server sent before it read the UNSUB are still on their way, and
    // must come out of the drained stream.
    let link = SlowLink::start(server.addr(), Duration::from_millis(50)).await;
    let leaving = connect_to(&format!("nats://{}", link.addr()), "leaving").await;
    let staying = connect(&server, "staying").await;
    let publisher = connect(&server, "publisher").await;
    let mut left = join_work(&leaving).await;
    let mut stays = join_work(&staying).await;
    let publishing = tokio::spawn(async move {
        for i in 0..SENT {
            let payload = Bytes::copy_from_slice(&i.to_be_bytes());
            publisher.publish("work".into(), payload).await.unwrap();
            // Spread over a fifth of a second, longer than the link's latency.
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        publisher.flush().await.unwrap();
    });
    let drainer = left.drainer();
    let leaving_member = tokio::spawn(async move {
        let mut received = Vec::new();
        while let Some(message) = left.next().await {
            received.push(number(&message.payload));
            if received.len() == 50 {
                drainer.drain();
            }
            // Answering, as a router does, keeps its client busy while the drain is on.
            leaving
                .publish("answers".into(), message.payload)
                .await
                .unwrap();
        }
        received
    });
    publishing.await.unwrap();
    let mut received = tokio::time::timeout(WAIT, leaving_member)
        .await
        .expect("the drained stream ends")
        .unwrap();
    while received.len() < SENT as usize {
        match tokio::time::timeout(WAIT, stays.next()).await {
            Ok(Some(message)) => received.push(number(&message.payload)),
            _ => break,
        }
    }
    received.sort_unstable();
    let delivered = received.len();
    received.dedup();
    assert_eq!(delivered, received.len(), "some messages came twice");
    assert_eq!(
        received.len(),
        SENT as usize,
        "{} messages lost",
        SENT as usize - received.len()
    );
}

fn number(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload.try_into().expect("a four-byte payload"))
}
