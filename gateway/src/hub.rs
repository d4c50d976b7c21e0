//! Who is subscribed to what on this gateway, and fan-out to them.
//!
//! One entry per channel with local subscribers. The first subscriber starts the channel's
//! feed (one bus subscription and one task per channel, whatever the number of local
//! subscribers); the last one to leave stops it. A publication is encoded once per
//! protocol and the same bytes are queued to every subscriber of that protocol.
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

use axum::extract::ws::Utf8Bytes;
use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_proto::bus::v1::{Position, Publication};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::feed::{self, FeedConfig};
use crate::metrics::Deliveries;
use crate::native;
use crate::outbound::Outbound;
use crate::socketio;
use crate::socketio::event::Rendered;
use crate::socketio::offsets::Marks;
use herald_core::upstream::Upstream;

const SHARDS: usize = 32;

/// Identifies one client connection on this gateway.
pub type ClientId = u64;

/// How a channel's feed started: its position, or why it could not.
type Readiness = Option<Result<(), Refusal>>;

/// How a subscriber receives publications.
#[derive(Clone)]
pub enum Protocol {
    Native,
    /// A Socket.IO socket with this id, connected to `namespace`. It does not get the
    /// events it emitted itself. With connection state recovery on, its events end with an
    /// offset string made from its `marks`.
    SocketIo {
        sid: Arc<str>,
        namespace: Arc<str>,
        marks: Option<Arc<Marks>>,
    },
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

struct Subscriber {
    outbound: Outbound,
    protocol: Protocol,
    /// Publications up to this offset are skipped: the subscriber has them already.
    after: u64,
}

struct Entry {
    generation: u64,
    subscribers: HashMap<ClientId, Subscriber>,
    /// Subscribe calls waiting for the feed to start; the entry stays while there are any.
    waiting: usize,
    position: Position,
    ready: watch::Sender<Readiness>,
    feed: Option<AbortHandle>,
}

impl Entry {
    fn unused(&self) -> bool {
        self.subscribers.is_empty() && self.waiting == 0
    }
}

type Shard = HashMap<String, Entry>;

pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    generations: AtomicU64,
    upstream: Upstream,
    feed_config: FeedConfig,
    /// Longest wait for a channel's feed to start.
    start_timeout: Duration,
    deliveries: Deliveries,
}

impl Hub {
    pub fn new(upstream: Upstream, feed_config: FeedConfig, start_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            generations: AtomicU64::new(1),
            upstream,
            feed_config,
            start_timeout,
            deliveries: Deliveries::default(),
        })
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(channel) as usize % SHARDS;
        // Every critical section below leaves the map consistent at each step, so a lock
        // poisoned by a panic elsewhere is still safe to use.
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes a connection; returns the channel position it starts after.
    pub async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        client: ClientId,
        outbound: Outbound,
        protocol: Protocol,
        history: bool,
    ) -> Result<Position, Refusal> {
        match self
            .subscribe_from(channel, client, outbound, protocol, history, Start::Now)
            .await?
        {
            Joined::At(position) | Joined::Behind(position) => Ok(position),
        }
    }

    /// Subscribes a connection from `start`.
    pub async fn subscribe_from(
        self: &Arc<Self>,
        channel: &str,
        client: ClientId,
        outbound: Outbound,
        protocol: Protocol,
        history: bool,
        start: Start<'_>,
    ) -> Result<Joined, Refusal> {
        let (generation, mut ready) = {
            let mut shard = self.shard(channel);
            let entry = shard
                .entry(channel.to_string())
                .or_insert_with(|| self.start_feed(channel, history));
            if entry.subscribers.contains_key(&client) {
                return Err(Refusal::new(
                    ErrorCode::AlreadySubscribed,
                    "already subscribed to this channel",
                ));
            }
            entry.waiting += 1;
            (entry.generation, entry.ready.subscribe())
        };
        let mut waiting = Waiting {
            hub: self,
            channel,
            generation,
            done: false,
        };
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
        let mut shard = self.shard(channel);
        let entry = shard
            .get_mut(channel)
            .filter(|e| e.generation == generation)
            .ok_or_else(|| Refusal::new(ErrorCode::Unavailable, "channel feed restarted"))?;
        let mut after = 0;
        if let Start::After(start) = start
            && !start.epoch.is_empty()
            && start.epoch == entry.position.epoch
        {
            if entry.position.offset > start.offset {
                // `waiting` gives the wait up when dropped.
                return Ok(Joined::Behind(entry.position.clone()));
            }
            // The subscriber read history further than this gateway has delivered yet.
            after = start.offset;
        }
        entry.waiting -= 1;
        waiting.done = true;
        let subscriber = Subscriber {
            outbound,
            protocol,
            after,
        };
        entry.subscribers.insert(client, subscriber);
        Ok(Joined::At(entry.position.clone()))
    }

    fn start_feed(self: &Arc<Self>, channel: &str, history: bool) -> Entry {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let task = tokio::spawn(feed::run(
            self.clone(),
            self.upstream.clone(),
            self.feed_config,
            channel.to_string(),
            generation,
            history,
        ));
        Entry {
            generation,
            subscribers: HashMap::new(),
            waiting: 0,
            position: Position::default(),
            ready: watch::Sender::new(None),
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
                    .map(|(channel, entry)| (channel.clone(), entry.subscribers.len() as u32)),
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
    pub fn unsubscribe(&self, channel: &str, client: ClientId) -> bool {
        let mut shard = self.shard(channel);
        let Some(entry) = shard.get_mut(channel) else {
            return false;
        };
        let removed = entry.subscribers.remove(&client).is_some();
        if entry.unused() {
            remove(&mut shard, channel);
        }
        removed
    }

    /// Called by a feed once it receives publications, at `position`.
    pub(crate) fn feed_started(&self, channel: &str, generation: u64, position: Position) {
        let mut shard = self.shard(channel);
        if let Some(entry) = shard
            .get_mut(channel)
            .filter(|e| e.generation == generation)
        {
            entry.position = position;
            entry.ready.send_replace(Some(Ok(())));
        }
    }

    /// Called by a feed that cannot go on: waiting subscribe calls fail with `refusal`,
    /// subscribers are disconnected so they reconnect and resubscribe.
    pub(crate) fn feed_failed(&self, channel: &str, generation: u64, refusal: Refusal) {
        let mut shard = self.shard(channel);
        if shard
            .get(channel)
            .is_some_and(|e| e.generation == generation)
            && let Some(entry) = shard.remove(channel)
        {
            entry.ready.send_replace(Some(Err(refusal)));
            for subscriber in entry.subscribers.values() {
                subscriber
                    .outbound
                    .closer()
                    .close(DisconnectCode::ServerError);
            }
        }
    }

    /// Delivers publications, in order, to the channel's local subscribers.
    ///
    /// Each publication is encoded at most once per protocol, on first need, and the same
    /// bytes are queued to every subscriber of that protocol.
    pub(crate) fn deliver(&self, channel: &str, generation: u64, publications: &[Publication]) {
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
        let (mut native_sent, mut socketio_sent) = (0, 0);
        for publication in publications {
            self.deliveries.arrived(publication.accepted_at_us);
            let position = Position {
                offset: publication.offset,
                epoch: publication.epoch.clone(),
            };
            let mut native = None;
            let mut socketio = Renderings::default();
            for subscriber in entry.subscribers.values() {
                if publication.offset <= subscriber.after && !publication.epoch.is_empty() {
                    continue;
                }
                match &subscriber.protocol {
                    Protocol::Native => {
                        let frame =
                            native.get_or_insert_with(|| native::push::publication(publication));
                        if let Some(frame) = frame {
                            subscriber.outbound.send(frame.clone());
                            native_sent += 1;
                        }
                    }
                    Protocol::SocketIo { sid, marks, .. } if **sid == publication.origin => {
                        // Its own events are not sent back, but the socket is past them.
                        if let Some(marks) = marks {
                            marks.set(channel, &position);
                        }
                    }
                    Protocol::SocketIo {
                        namespace, marks, ..
                    } => {
                        let Some(rendered) = socketio.get(namespace, publication) else {
                            continue;
                        };
                        socketio_sent += 1;
                        match marks {
                            Some(marks) => {
                                let offset = marks.advance(channel, &position);
                                for frame in rendered.frames_with_offset(&offset) {
                                    subscriber.outbound.send(frame);
                                }
                            }
                            None => {
                                for frame in rendered.frames() {
                                    subscriber.outbound.send(frame);
                                }
                            }
                        }
                    }
                }
            }
        }
        self.deliveries.sent(native_sent, socketio_sent);
    }

    /// Delivers a join or leave event to the channel's local subscribers.
    pub(crate) fn announce(&self, channel: &str, generation: u64, event: &Publication) {
        let Some(membership) = &event.membership else {
            return;
        };
        let shard = self.shard(channel);
        let Some(entry) = shard.get(channel).filter(|e| e.generation == generation) else {
            return;
        };
        let mut native = None;
        let mut socketio: Vec<(&str, Utf8Bytes)> = Vec::new();
        for subscriber in entry.subscribers.values() {
            let frame = match &subscriber.protocol {
                Protocol::Native => native
                    .get_or_insert_with(|| native::push::membership(channel, membership))
                    .clone(),
                Protocol::SocketIo { namespace, .. } => {
                    match socketio.iter().find(|(ns, _)| *ns == &**namespace) {
                        Some((_, frame)) => frame.clone(),
                        None => {
                            let frame = socketio::event::membership(channel, namespace, membership);
                            socketio.push((namespace, frame.clone()));
                            frame
                        }
                    }
                }
            };
            subscriber.outbound.send(frame);
        }
    }
}

/// A publication rendered for the Socket.IO namespaces of a channel's subscribers, each
/// once. (Only a personal channel has subscribers in several namespaces.)
#[derive(Default)]
struct Renderings<'a> {
    done: Vec<(&'a str, Option<Rendered>)>,
}

impl<'a> Renderings<'a> {
    fn get(&mut self, namespace: &'a str, publication: &Publication) -> Option<&Rendered> {
        let index = match self.done.iter().position(|(ns, _)| *ns == namespace) {
            Some(index) => index,
            None => {
                let rendered = socketio::event::render(publication, namespace);
                self.done.push((namespace, rendered));
                self.done.len() - 1
            }
        };
        self.done[index].1.as_ref()
    }
}

fn remove(shard: &mut Shard, channel: &str) {
    if let Some(entry) = shard.remove(channel)
        && let Some(feed) = entry.feed
    {
        feed.abort();
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
                remove(&mut shard, self.channel);
            }
        }
    }
}
