//! Native subscribe recovery: `subscribe {recover, offset, epoch}` delivers exactly the
//! missed publications, in order, or says plainly that it cannot; and a subscriber whose
//! gateway is SIGKILLed while others publish loses no acknowledged publication.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_testkit::client::Event;
use herald_testkit::{Cluster, NativeClient};
use serde_json::{Value, json};

use crate::{
    PATIENCE, client, herald, publications, publish, publish_until, standalone, subscribe,
};

fn offsets(pushes: &[Value]) -> Vec<u64> {
    pushes
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

async fn resubscribe(client: &NativeClient, channel: &str, offset: u64, epoch: &Value) -> Value {
    let params = json!({ "channel": channel, "recover": true, "offset": offset, "epoch": epoch });
    client.ok("subscribe", params).await.expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_subscriber_gets_exactly_what_it_missed_or_is_told_it_cannot() {
    let node = standalone(&[
        ("HERALD_CHANNELS__NAMESPACES__SHORT__HISTORY_SIZE", "3"),
        ("HERALD_CHANNELS__NAMESPACES__FRESH__RECOVERY", "false"),
    ]);
    let url = node.ws_url();
    let publisher = client(&url).await;
    let subscriber = client(&url).await;

    let channel = "chat:recover";
    let start = subscribe(&subscriber, channel).await;
    let epoch = start["epoch"].clone();
    for n in 0..2 {
        publish(&publisher, channel, json!(n)).await;
    }
    let pushes = publications(&subscriber, channel, 2).await;
    let seen = offsets(&pushes);
    // The channel had no stream when it was subscribed to (epoch ""); its first
    // publication started one. A client that kept the subscribe result's epoch and
    // counted offsets recovers in it all the same.
    assert_eq!(epoch, "");
    let stream_epoch = pushes[0]["epoch"].clone();
    subscriber
        .ok("unsubscribe", json!({ "channel": channel }))
        .await
        .unwrap();
    for n in 2..7 {
        publish(&publisher, channel, json!(n)).await;
    }
    let result = resubscribe(&subscriber, channel, seen[1], &epoch).await;
    assert_eq!(result["recovered"], true, "{result}");
    assert_eq!(result["epoch"], stream_epoch, "{result}");
    let missed = publications(&subscriber, channel, 5).await;
    let expected: Vec<u64> = (seen[1] + 1..=seen[1] + 5).collect();
    assert_eq!(offsets(&missed), expected);
    assert_eq!(missed[0]["data"], 2);
    assert_eq!(result["offset"], expected[4], "{result}");
    // Live publications follow, nothing twice.
    publish(&publisher, channel, json!("live")).await;
    let live = publications(&subscriber, channel, 1).await;
    assert_eq!(offsets(&live), [expected[4] + 1]);

    // Cannot recover: another epoch, history trimmed past the offset, or recovery off.
    // The client is subscribed from now on and told so.
    let cases = [
        ("chat:other-epoch", 0, true),
        ("short:trimmed", 5, false),
        ("fresh:x", 1, false),
    ];
    for (channel, published_while_away, wrong_epoch) in cases {
        let start = subscribe(&subscriber, channel).await;
        subscriber
            .ok("unsubscribe", json!({ "channel": channel }))
            .await
            .unwrap();
        for n in 0..published_while_away {
            publish(&publisher, channel, json!(n)).await;
        }
        let epoch = match wrong_epoch {
            true => json!("not-the-epoch"),
            false => start["epoch"].clone(),
        };
        let offset = start["offset"].as_u64().unwrap();
        let result = resubscribe(&subscriber, channel, offset, &epoch).await;
        assert_eq!(result["recovered"], false, "{channel}: {result}");
        publish(&publisher, channel, json!("live")).await;
        let next = publications(&subscriber, channel, 1).await;
        assert_eq!(next[0]["data"], "live", "{channel}: nothing missed is sent");
    }
}

/// Reads publication pushes until the connection drops; their offsets, in order.
async fn read_until_closed(client: &NativeClient) -> Vec<u64> {
    let mut offsets = Vec::new();
    loop {
        match client.next_event(PATIENCE).await {
            Some(Event::Push(push)) if push["push"] == "publication" => {
                offsets.push(push["offset"].as_u64().unwrap());
            }
            Some(Event::Closed(_)) => return offsets,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("the connection of a killed gateway did not drop"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_publication_is_lost_when_a_subscribers_gateway_is_killed() {
    const KILL_AFTER: usize = 50;
    let mut cluster = Cluster::start(herald(), 2, 1, &[]);
    let (mut victim, mut survivor) = (0, 1);
    for round in 0..5 {
        let channel = format!("chat:kill-{round}");
        let subscriber = client(&cluster.ws_url(victim)).await;
        let start = subscribe(&subscriber, &channel).await;
        let publisher = client(&cluster.ws_url(survivor)).await;
        // The publisher goes on through the kill and the subscriber's return.
        let stop = Arc::new(AtomicBool::new(false));
        let publishing = tokio::spawn(publish_until(
            publisher,
            channel.clone(),
            Duration::ZERO,
            stop.clone(),
        ));

        let mut received = offsets(&publications(&subscriber, &channel, KILL_AFTER).await);
        cluster.gateways[victim].kill();
        received.extend(read_until_closed(&subscriber).await);

        let last = received.last().copied().expect("some publications arrived");
        let returning = client(&cluster.ws_url(survivor)).await;
        let result = resubscribe(&returning, &channel, last, &start["epoch"]).await;
        assert_eq!(result["recovered"], true, "round {round}: {result}");
        received.extend(offsets(&publications(&returning, &channel, 1).await));
        stop.store(true, Ordering::Relaxed);
        let acked = publishing.await.expect("the publisher finished");
        let first = start["offset"].as_u64().unwrap() + 1;
        assert_eq!(
            acked,
            (first..first + acked.len() as u64).collect::<Vec<_>>()
        );
        let rest = acked.len().saturating_sub(received.len());
        received.extend(offsets(&publications(&returning, &channel, rest).await));
        assert_eq!(
            received, acked,
            "round {round}: lost, duplicated or reordered"
        );

        cluster.add_gateway();
        (victim, survivor) = (survivor, cluster.gateways.len() - 1);
    }
}
