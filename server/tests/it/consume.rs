//! The consume stream on a real cluster (NATS, Redis, two routers, two gateways): a
//! backend that is killed again and again while clients publish, and starts each time
//! from the positions it saved, sees every publication, in order per channel; a group of
//! consumers shares the channels.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{
    ChannelPosition, ConsumeEvent, ConsumeRequest, StreamPosition, consume_event,
};
use herald_testkit::{Cluster, NativeClient};
use serde_json::json;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{PATIENCE, client, herald};

const CHANNELS: usize = 100;
const PER_CHANNEL: u64 = 100;

async fn api(addr: SocketAddr) -> HeraldApiClient<Channel> {
    HeraldApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the API")
}

/// What a backend keeps between its lives: where it is in each channel, and what it has
/// stored.
#[derive(Default)]
struct Backend {
    positions: HashMap<String, StreamPosition>,
    /// The newest `time_ms` it processed.
    since_ms: u64,
    /// Every offset stored, by channel.
    stored: HashMap<String, BTreeSet<u64>>,
    lost: Vec<ChannelPosition>,
}

impl Backend {
    fn request(&self, pattern: &str) -> ConsumeRequest {
        ConsumeRequest {
            pattern: pattern.into(),
            positions: self
                .positions
                .iter()
                .map(|(channel, position)| ChannelPosition {
                    channel: channel.clone(),
                    position: Some(position.clone()),
                })
                .collect(),
            since_ms: self.since_ms,
            ..Default::default()
        }
    }

    /// Processes one event of a life that started from the saved positions: each
    /// channel's publications must follow on from there with no gap.
    fn process(&mut self, event: ConsumeEvent) {
        match event.event.expect("an event") {
            consume_event::Event::Publication(p) => {
                let publication = p.publication.expect("a publication");
                let before = self.positions.get(&p.channel).map_or(0, |at| at.offset);
                assert_eq!(
                    publication.offset,
                    before + 1,
                    "{}: offset {} after {before}",
                    p.channel,
                    publication.offset
                );
                self.stored
                    .entry(p.channel.clone())
                    .or_default()
                    .insert(publication.offset);
                self.since_ms = self.since_ms.max(publication.time_ms);
                let position = StreamPosition {
                    offset: publication.offset,
                    epoch: p.epoch,
                };
                self.positions.insert(p.channel, position);
            }
            consume_event::Event::Lost(lost) => self.lost.push(lost),
        }
    }

    fn complete(&self) -> bool {
        self.stored.len() == CHANNELS && self.stored.values().all(|s| s.len() as u64 == PER_CHANNEL)
    }
}

async fn next(stream: &mut Streaming<ConsumeEvent>) -> Option<ConsumeEvent> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

/// Publishes `PER_CHANNEL` publications on each of `CHANNELS` channels from `client`'s
/// share (every other publication of each channel), many in flight at once.
async fn publish_share(client: NativeClient, share: u64) {
    for round in (share..PER_CHANNEL).step_by(2) {
        let mut replies = Vec::with_capacity(CHANNELS);
        for channel in 0..CHANNELS {
            let params = json!({ "channel": format!("orders:{channel}"), "data": { "n": round } });
            replies.push(client.start("publish", params).await.expect("sent"));
        }
        for reply in replies {
            let reply = reply.await.expect("answered");
            assert!(reply.get("result").is_some(), "{reply}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_again_and_again_resumes_from_its_positions_and_misses_nothing() {
    let cluster = Cluster::start(herald(), 2, 2, &[]);
    let routers = [cluster.routers[0].api_addr(), cluster.routers[1].api_addr()];
    let mut backend = Backend {
        since_ms: herald_core_now_ms(),
        ..Backend::default()
    };
    let mut stream = api(routers[0])
        .await
        .consume(backend.request("orders:*"))
        .await
        .unwrap()
        .into_inner();
    let publishers = [
        tokio::spawn(publish_share(client(&cluster.ws_url(0)).await, 0)),
        tokio::spawn(publish_share(client(&cluster.ws_url(1)).await, 1)),
    ];

    // Killed every 1,500 events, while the clients publish; each life starts, on the
    // other router, from what the last one saved.
    let total = CHANNELS as u64 * PER_CHANNEL;
    let mut lives = 1;
    let mut processed = 0u64;
    while !backend.complete() {
        let event = next(&mut stream).await.unwrap_or_else(|| {
            let have: usize = backend.stored.values().map(BTreeSet::len).sum();
            panic!("the stream ended with {have} of {total}")
        });
        backend.process(event);
        processed += 1;
        if processed.is_multiple_of(1500) && lives < 6 {
            drop(stream);
            lives += 1;
            let router = routers[lives % 2];
            stream = api(router)
                .await
                .consume(backend.request("orders:*"))
                .await
                .unwrap()
                .into_inner();
        }
    }
    for publisher in publishers {
        publisher.await.expect("published");
    }
    assert!(lives >= 4, "only {lives} lives");
    assert!(backend.lost.is_empty(), "{:?}", backend.lost);
    for (channel, offsets) in &backend.stored {
        let expected: BTreeSet<u64> = (1..=PER_CHANNEL).collect();
        assert_eq!(offsets, &expected, "{channel}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_consumers_shares_the_channels_each_to_one() {
    let cluster = Cluster::start(herald(), 1, 2, &[]);
    let since_ms = herald_core_now_ms();
    let mut streams = Vec::new();
    for partition in 0..2 {
        let request = ConsumeRequest {
            pattern: "team:*".into(),
            partition,
            partitions: 2,
            since_ms,
            ..Default::default()
        };
        let router = cluster.routers[partition as usize].api_addr();
        let stream = api(router).await.consume(request).await.unwrap();
        streams.push(stream.into_inner());
    }
    let publisher = client(&cluster.ws_url(0)).await;
    for n in 0..10 {
        for channel in 0..20 {
            let params = json!({ "channel": format!("team:{channel}"), "data": { "n": n } });
            publisher.ok("publish", params).await.unwrap();
        }
    }
    // Not for the group: another pattern.
    publisher
        .ok("publish", json!({ "channel": "other:1", "data": {} }))
        .await
        .unwrap();
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    let deadline = std::time::Instant::now() + PATIENCE;
    while received < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "{received} of 200 arrived"
        );
        for (member, stream) in streams.iter_mut().enumerate() {
            let Ok(Ok(Some(event))) =
                tokio::time::timeout(std::time::Duration::from_millis(200), stream.message()).await
            else {
                continue;
            };
            let Some(consume_event::Event::Publication(p)) = event.event else {
                panic!("unexpected {event:?}");
            };
            assert!(p.channel.starts_with("team:"), "{}", p.channel);
            let owner = *owners.entry(p.channel.clone()).or_insert(member);
            assert_eq!(owner, member, "{} went to two members", p.channel);
            received += 1;
        }
    }
    assert_eq!(owners.len(), 20);
    let shares: BTreeSet<usize> = owners.values().copied().collect();
    assert_eq!(shares.len(), 2, "each member has some of the channels");
}

fn herald_core_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
