//! Who is subscribed to what on this gateway, and fan-out to them.
//!
//! One entry per channel with local subscribers. The first subscriber starts the channel's
//! feed (one task per channel, whatever the number of local subscribers, with a bus
//! subscription of its own or a share of its bucket's, as the channel's `delivery` rule
//! says); the last one to leave stops it. A subscriber is one native connection or
//! one Socket.IO socket (a connection has one socket per namespace), known to the hub only
//! as a [`Subscriber`]: the hub knows no protocol. A publication is encoded once per
//! [`Format`] and the same bytes are queued to every subscriber of that format.
//!
//! A subscriber is added under the same lock that delivery takes, together with reading
//! the channel's position, so it receives exactly the publications after the position its
//! subscribe reply reports.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_core::config::ChannelsConfig;
use herald_core::rules::Delivery;
use herald_proto::bus::v1::{Position, Publication};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::buckets::{Buckets, Share};
use crate::feed::{self, FeedConfig, Listener};
use crate::metrics::Deliveries;
use crate::outbound::{Encoded, Outbound};
use crate::render::Format;
use crate::small_map::SmallMap;
use herald_core::upstream::Upstream;

const SHARDS: usize = 32;

/// Identifies one client connection on this gateway.
pub type ClientId = u64;

/// Identifies one subscriber on this gateway: a native connection, or a Socket.IO socket.
/// Drawn from the same sequence as [`ClientId`]s, so a native connection uses its own.
pub type SubscriberId = u64;

/// How a channel's feed started: its position, or why it could not.
type Readiness = Option<Result<(), Refusal>>;

/// One local subscriber as the hub sees it: the format it takes, and where its frames go.
pub trait Subscriber: Send + Sync {
    fn format(&self) -> &Format;

    fn outbound(&self) -> &Outbound;

    /// Queues a publication of `channel`, encoded in [`Self::format`]; returns whether
    /// anything was queued. By default the encoding goes out as it is.
    fn publication(&self, channel: &str, publication: &Publication, encoded: &Encoded) -> bool {
        let _ = (channel, publication);
        self.outbound().send_encoded(encoded)
    }
}

/// A subscriber that takes every publication as it is encoded (a native connection).
pub struct Plain {
    format: Format,
    outbound: Outbound,
}

impl Plain {
    pub fn new(format: Format, outbound: Outbound) -> Arc<Self> {
        Arc::new(Self { format, outbound })
    }
}

impl Subscriber for Plain {
    fn format(&self) -> &Format {
        &self.format
    }

    fn outbound(&self) -> &Outbound {
        &self.outbound
    }
}

/// Where a new subscriber starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// With the next publication.
    Now,
    /// Right after this position: a subscriber that already has everything up to it (from
    /// history) and must get nothing twice and nothing less.
    After(&'a Position),
}

/// How a subscribe call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// Subscribed; publications after this position follow.
    At(Position),
    /// Not subscribed: the channel is already at this position, past the one asked to
    /// start after. The caller fetches what lies between from history and asks again.
    Behind(Position),
}

struct Subscribed {
    subscriber: Arc<dyn Subscriber>,
    /// Publications up to this offset are skipped: the subscriber has them already.
    after: u64,
}

struct Entry {
    generation: u64,
    subscribers: SmallMap<Subscribed>,
    /// Subscribe calls waiting for the feed to start; the entry stays while there are any.
    waiting: usize,
    position: Position,
    /// While the feed starts, what those who subscribe meanwhile wait on; dropped once
    /// it has started, since a channel lives long and this is some 450 bytes.
    ready: Option<watch::Sender<Readiness>>,
    feed: Option<AbortHandle>,
}

impl Entry {
    fn unused(&self) -> bool {
        self.subscribers.is_empty() && self.waiting == 0
    }
}

/// A channel's name is held once, shared by the hub's key, its feed and its bucket's route.
type Shard = HashMap<Arc<str>, Entry>;

pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    generations: AtomicU64,
    upstream: Upstream,
    feed_config: FeedConfig,
    /// Longest wait for a channel's feed to start.
    start_timeout: Duration,
    deliveries: Deliveries,
    /// Which channels are delivered through their bucket's subscription.
    channels: ChannelsConfig,
    buckets: Arc<Buckets>,
}

impl Hub {
    pub fn new(
        upstream: Upstream,
        channels: ChannelsConfig,
        feed_config: FeedConfig,
        start_timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            generations: AtomicU64::new(1),
            buckets: Buckets::new(upstream.clone()),
            upstream,
            feed_config,
            start_timeout,
            deliveries: Deliveries::default(),
            channels,
        })
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(channel) as usize % SHARDS;
        // Every critical section below leaves the map consistent at each step, so a lock
        // poisoned by a panic elsewhere is still safe to use.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes `subscriber`, known as `id`; returns the channel position it starts
    /// after.
    pub async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        id: SubscriberId,
        subscriber: Arc<dyn Subscriber>,
        history: bool,
    ) -> Result<Position, Refusal> {
        match self
            .subscribe_from(channel, id, subscriber, history, Start::Now)
            .await?
        {
            Joined::At(position) | Joined::Behind(position) => Ok(position),
        }
    }

    /// Subscribes `subscriber`, known as `id`, from `start`.
    pub async fn subscribe_from(
        self: &Arc<Self>,
        channel: &str,
        id: SubscriberId,
        subscriber: Arc<dyn Subscriber>,
        history: bool,
        start: Start<'_>,
    ) -> Result<Joined, Refusal> {
        let (generation, starting) = {
            let mut shard = self.shard(channel);
            let name: Arc<str> = channel.into();
            let entry = shard
                .entry(name.clone())
                .or_insert_with(|| self.start_feed(name, history));
            if entry.subscribers.contains(id) {
                return Err(Refusal::new(
                    ErrorCode::AlreadySubscribed,
                    "already subscribed to this channel",
                ));
            }
            entry.waiting += 1;
            (
                entry.generation,
                entry.ready.as_ref().map(watch::Sender::subscribe),
            )
        };
        let mut waiting = Waiting {
            hub: self,
            channel,
            generation,
            done: false,
        };
        if let Some(mut ready) = starting {
            let started = tokio::time::timeout(self.start_timeout, ready.wait_for(Option::is_some))
                .await
                .map_err(|_| {
                    Refusal::new(
                        ErrorCode::Unavailable,
                        "timed out starting the channel feed",
                    )
                })?
                .map_err(|_| Refusal::new(ErrorCode::Unavailable, "channel feed stopped"))?
                .clone();
            if let Some(Err(refusal)) = started {
                return Err(refusal);
            }
        }
        let mut shard = self.shard(channel);
        let entry = shard
            .get_mut(channel)
            .filter(|e| e.generation == generation)
            .ok_or_else(|| Refusal::new(ErrorCode::Unavailable, "channel feed restarted"))?;
        let mut after = 0;
        // A start in the empty epoch was taken before the channel had a stream: its
        // offsets are those of the epoch the channel has now, if it has one yet.
        if let Start::After(start) = start
            && history
            && (start.epoch == entry.position.epoch || start.epoch.is_empty())
        {
            if entry.position.offset > start.offset {
                // `waiting` gives the wait up when dropped.
                return Ok(Joined::Behind(entry.position.clone()));
            }
            if !entry.position.epoch.is_empty() {
                // The subscriber read history further than this gateway has delivered yet.
                after = start.offset;
            }
        }
        entry.waiting -= 1;
        waiting.done = true;
        entry
            .subscribers
            .insert(id, Subscribed { subscriber, after });
        Ok(Joined::At(entry.position.clone()))
    }

    fn start_feed(self: &Arc<Self>, channel: Arc<str>, history: bool) -> Entry {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let shared =
            (self.channels.rules_for(&channel).delivery == Delivery::Shared).then(|| Share {
                buckets: self.buckets.clone(),
                generation,
            });
        let listener = ChannelFeed {
            hub: self.clone(),
            channel,
            generation,
        };
        let task = tokio::spawn(feed::run(
            listener,
            self.upstream.clone(),
            self.feed_config,
            history,
            shared,
        ));
        Entry {
            generation,
            subscribers: SmallMap::default(),
            waiting: 0,
            position: Position::default(),
            ready: Some(watch::Sender::new(None)),
            feed: Some(task.abort_handle()),
        }
    }

    /// The channels with local subscribers for which `wanted` holds, with their numbers of
    /// subscribers.
    pub fn channel_counts(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, u32)> {
        let mut counts = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            counts.extend(
                shard
                    .iter()
                    .filter(|(channel, entry)| !entry.subscribers.is_empty() && wanted(channel))
                    .map(|(channel, entry)| (channel.to_string(), entry.subscribers.len() as u32)),
            );
        }
        counts
    }

    /// How many subscriptions this gateway holds, and on how many channels.
    pub fn totals(&self) -> (u64, u64) {
        let (mut subscriptions, mut channels) = (0, 0);
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            channels += shard.len() as u64;
            subscriptions += shard
                .values()
                .map(|e| e.subscribers.len() as u64)
                .sum::<u64>();
        }
        (subscriptions, channels)
    }

    /// Removes a subscriber; returns whether it was subscribed.
    pub fn unsubscribe(&self, channel: &str, id: SubscriberId) -> bool {
        let mut shard = self.shard(channel);
        let Some(entry) = shard.get_mut(channel) else {
            return false;
        };
        let removed = entry.subscribers.remove(id).is_some();
        if entry.unused() {
            self.remove(&mut shard, channel);
        }
        removed
    }

    /// Called by a feed once it receives publications, at `position`; returns whether the
    /// channel still wants it.
    fn feed_started(&self, channel: &str, generation: u64, position: Position) -> bool {
        let mut shard = self.shard(channel);
        let Some(entry) = shard
            .get_mut(channel)
            .filter(|e| e.generation == generation)
        else {
            return false;
        };
        entry.position = position;
        if let Some(ready) = entry.ready.take() {
            ready.send_replace(Some(Ok(())));
        }
        if self.channels.rules_for(channel).delivery == Delivery::Shared {
            // From here on its route stops a shared feed (`Buckets::forget`), which parks
            // without a task when idle: a handle would keep its first task's memory.
            entry.feed = None;
        }
        true
    }

    /// Called by a feed that cannot go on: waiting subscribe calls fail with `refusal`,
    /// subscribers are disconnected so they reconnect and resubscribe.
    fn feed_failed(&self, channel: &str, generation: u64, refusal: Refusal) {
        let mut shard = self.shard(channel);
        if shard
            .get(channel)
            .is_some_and(|e| e.generation == generation)
            && let Some(entry) = shard.remove(channel)
        {
            if let Some(ready) = &entry.ready {
                ready.send_replace(Some(Err(refusal)));
            }
            for subscribed in entry.subscribers.values() {
                let closer = subscribed.subscriber.outbound().closer();
                closer.close(DisconnectCode::ServerError);
            }
        }
    }

    /// Delivers publications, in order, to the channel's local subscribers.
    ///
    /// Each publication is encoded at most once per format, on first need, and the same
    /// bytes are queued to every subscriber of that format.
    fn deliver(&self, channel: &str, generation: u64, publications: &[Publication]) {
        let Some(last) = publications.last() else {
            return;
        };
        let mut shard = self.shard(channel);
        let Some(entry) = shard
            .get_mut(channel)
            .filter(|e| e.generation == generation)
        else {
            return;
        };
        entry.position = Position {
            offset: last.offset,
            epoch: last.epoch.clone(),
        };
        for publication in publications {
            self.deliveries.arrived(publication.accepted_at_us);
            let mut encodings = Encodings::default();
            for subscribed in entry.subscribers.values() {
                if publication.offset <= subscribed.after
                    && subscribed.after > 0
                    && !publication.epoch.is_empty()
                {
                    continue;
                }
                let subscriber = &subscribed.subscriber;
                let (encoded, sent) =
                    encodings.get(subscriber.format(), |f| f.publication(publication));
                if let Some(encoded) = encoded
                    && subscriber.publication(channel, publication, encoded)
                {
                    *sent += 1;
                }
            }
            for (format, _, sent) in encodings.done {
                self.deliveries.sent(format, sent);
            }
        }
    }

    /// Delivers a join or leave event to the channel's local subscribers.
    fn announce(&self, channel: &str, generation: u64, event: &Publication) {
        let Some(membership) = &event.membership else {
            return;
        };
        let shard = self.shard(channel);
        let Some(entry) = shard.get(channel).filter(|e| e.generation == generation) else {
            return;
        };
        let mut encodings = Encodings::default();
        for subscribed in entry.subscribers.values() {
            let subscriber = &subscribed.subscriber;
            let encode = |f: &Format| Some(f.membership(channel, membership));
            if let (Some(encoded), _) = encodings.get(subscriber.format(), encode) {
                subscriber.outbound().send_encoded(encoded);
            }
        }
    }
}

/// What one channel's feed reports to the hub: the generation tells a feed of a channel
/// that was left and joined again from the current one.
struct ChannelFeed {
    hub: Arc<Hub>,
    channel: Arc<str>,
    generation: u64,
}

impl Listener for ChannelFeed {
    fn channel(&self) -> &Arc<str> {
        &self.channel
    }

    fn started(&self, position: Position) -> bool {
        self.hub
            .feed_started(&self.channel, self.generation, position)
    }

    fn failed(&self, refusal: Refusal) {
        self.hub
            .feed_failed(&self.channel, self.generation, refusal);
    }

    fn deliver(&self, publications: &[Publication]) {
        self.hub
            .deliver(&self.channel, self.generation, publications);
    }

    fn announce(&self, event: &Publication) {
        self.hub.announce(&self.channel, self.generation, event);
    }

    fn wanted(&self) -> bool {
        let shard = self.hub.shard(&self.channel);
        let entry = shard.get(&*self.channel);
        entry.is_some_and(|e| e.generation == self.generation)
    }
}

/// One message encoded in the formats of a channel's subscribers, each once, with how
/// many subscribers of each format it was queued to. A channel's subscribers take few
/// formats (one per protocol, and per Socket.IO namespace on a personal channel), so a
/// list beats a map.
#[derive(Default)]
struct Encodings<'a> {
    done: Vec<(&'a Format, Option<Encoded>, u64)>,
}

impl<'a> Encodings<'a> {
    /// The message in `format`, made by `encode` the first time it is asked for, and the
    /// count of subscribers it went to in that format.
    fn get(
        &mut self,
        format: &'a Format,
        encode: impl FnOnce(&Format) -> Option<Encoded>,
    ) -> (Option<&Encoded>, &mut u64) {
        let index = match self.done.iter().position(|(f, _, _)| *f == format) {
            Some(index) => index,
            None => {
                self.done.push((format, encode(format), 0));
                self.done.len() - 1
            }
        };
        let (_, encoded, sent) = &mut self.done[index];
        (encoded.as_ref(), sent)
    }
}

impl Hub {
    /// Takes the channel out and stops its feed: its task if it runs, its route in its
    /// bucket if it is shared (where it may be parked, without a task).
    fn remove(&self, shard: &mut Shard, channel: &str) {
        let Some(entry) = shard.remove(channel) else {
            return;
        };
        if let Some(feed) = entry.feed {
            feed.abort();
        }
        if self.channels.rules_for(channel).delivery == Delivery::Shared {
            self.buckets.forget(channel, entry.generation);
        }
    }
}

/// Gives up a subscribe call's wait when the call is dropped or fails, so a channel nobody
/// ended up joining does not keep its feed.
struct Waiting<'a> {
    hub: &'a Hub,
    channel: &'a str,
    generation: u64,
    /// Set once the call joined; then there is nothing to give up. (It is set while the
    /// shard lock is held, and the guard of that lock is dropped before this one.)
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shard = self.hub.shard(self.channel);
        if let Some(entry) = shard
            .get_mut(self.channel)
            .filter(|e| e.generation == self.generation)
        {
            entry.waiting -= 1;
            if entry.unused() {
                self.hub.remove(&mut shard, self.channel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use herald_core::config::Config;
    use herald_proto::bus::v1::PublishRequest;
    use serde_json::Value;

    use super::*;
    use crate::outbound::{self, Bounds, Frame, Frames};
    use crate::testing::{self, PATIENCE};

    fn subscriber() -> (Arc<dyn Subscriber>, Frames) {
        let bounds = Bounds {
            frames: 64,
            bytes: 1 << 20,
        };
        let (outbound, frames) = outbound::channel(bounds);
        (Plain::new(Format::Native, outbound), frames)
    }

    async fn next(frames: &mut Frames) -> Value {
        match tokio::time::timeout(PATIENCE, frames.recv()).await {
            Ok(Some(Frame::Text(text))) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("expected a publication, got {other:?}"),
        }
    }

    async fn publish(upstream: &Upstream, channel: &str, n: u32) -> Position {
        let request = PublishRequest {
            channel: channel.into(),
            data: n.to_string().into(),
            ..Default::default()
        };
        let mut outcomes = upstream.publish(vec![request]).await.expect("published");
        outcomes.pop().expect("one outcome").expect("accepted")
    }

    #[tokio::test]
    async fn every_subscriber_gets_each_publication_and_the_last_to_leave_stops_the_feed() {
        let ctx = testing::context(&Config::default()).await;
        let hub = &ctx.hub;
        let (one, mut one_frames) = subscriber();
        let (two, mut two_frames) = subscriber();
        let at = hub
            .subscribe("room", 1, one, true)
            .await
            .expect("one joins");
        assert_eq!(at.offset, 0);
        hub.subscribe("room", 2, two.clone(), true)
            .await
            .expect("two joins");
        let again = hub.subscribe("room", 2, two, true).await;
        assert_eq!(again.unwrap_err().code, ErrorCode::AlreadySubscribed);
        assert_eq!(hub.totals(), (2, 1));
        for n in 1..=3 {
            publish(&ctx.upstream, "room", n).await;
        }
        for frames in [&mut one_frames, &mut two_frames] {
            for n in 1..=3u64 {
                let push = next(frames).await;
                assert_eq!(push["offset"], n, "{push}");
                assert_eq!(push["data"], n, "{push}");
            }
        }
        assert!(hub.unsubscribe("room", 1));
        assert!(!hub.unsubscribe("room", 1));
        assert_eq!(hub.totals(), (1, 1));
        assert!(hub.unsubscribe("room", 2));
        assert_eq!(hub.totals(), (0, 0), "no subscriber, no feed");
    }

    #[tokio::test]
    async fn a_start_behind_the_channel_is_told_where_the_channel_is() {
        let ctx = testing::context(&Config::default()).await;
        let hub = &ctx.hub;
        let (watcher, mut watcher_frames) = subscriber();
        hub.subscribe("news", 1, watcher, true)
            .await
            .expect("joins");
        let first = publish(&ctx.upstream, "news", 1).await;
        let second = publish(&ctx.upstream, "news", 2).await;
        // Once the watcher has the second publication, the channel is at it here.
        next(&mut watcher_frames).await;
        assert_eq!(next(&mut watcher_frames).await["offset"], 2);
        let (late, mut late_frames) = subscriber();
        let joined = hub
            .subscribe_from("news", 2, late.clone(), true, Start::After(&first))
            .await
            .expect("an answer");
        assert_eq!(joined, Joined::Behind(second.clone()));
        let joined = hub
            .subscribe_from("news", 2, late, true, Start::After(&second))
            .await
            .expect("joins");
        assert_eq!(joined, Joined::At(second));
        publish(&ctx.upstream, "news", 3).await;
        assert_eq!(next(&mut late_frames).await["offset"], 3);
    }
}

#[cfg(test)]
mod footprint {
    use std::time::Duration;

    use herald_core::config::Config;

    use super::ChannelFeed;
    use crate::feed::{self, FeedConfig};
    use crate::testing;

    /// A channel's feed lives as long as the channel has subscribers here, mostly idle, and
    /// users each have a personal channel: its task must hold the loop's state only, with
    /// its rare work boxed and its gap timer allocated only while a gap is open (issue 17:
    /// an idle connection's memory).
    #[tokio::test]
    async fn an_idle_channels_feed_stays_small() {
        let ctx = testing::context(&Config::default()).await;
        let listener = ChannelFeed {
            hub: ctx.hub.clone(),
            channel: "user:#alice".into(),
            generation: 1,
        };
        let config = FeedConfig {
            gap_hold: Duration::from_secs(1),
        };
        let shared = Some(crate::buckets::Share {
            buckets: ctx.hub.buckets.clone(),
            generation: 1,
        });
        let feed = feed::run(listener, ctx.upstream.clone(), config, true, shared);
        let size = std::mem::size_of_val(&feed);
        assert!(size <= 576, "a channel's feed task holds {size} bytes");
    }
}
