//! Shared delivery: the channels a gateway takes from the bus through their bucket's
//! subscription (`delivery = "shared"`; personal channels by default) instead of one of
//! their own.
//!
//! A bus subscription costs about 7 KiB in the NATS client and 1 KiB in the server,
//! whatever it carries, and a gateway whose users each have a personal channel would hold
//! one per user. Every channel's delivery subject names one of
//! [`DELIVERY_BUCKETS`](herald_core::subjects::DELIVERY_BUCKETS) buckets, so a gateway can
//! subscribe to a bucket instead, once for all the shared channels it holds in it, and hand
//! each publication to its channel's feed through a queue that is empty while the channel
//! is idle. What it pays instead is bandwidth: it also receives the publications of the
//! bucket's channels that it does not hold, and drops them.
//!
//! A bucket's subscription is made for its first channel here and dropped with its last.
//!
//! An idle shared channel costs no task either: its feed parks ([`Route::park`]) in the
//! bucket, in place of its queue, and the bucket's reader resumes it in a task of its own
//! with the channel's next publication, after a reconnection of the bus (to catch up), or
//! when the subscription ends (to report it). Personal channels are mostly idle, and a
//! gateway holds one per signed-in user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures_util::StreamExt;
use herald_core::bus::{BusError, Subscription};
use herald_core::metrics::NATS_ERRORS;
use herald_core::subjects::bucket_of;
use herald_core::upstream::Upstream;
use herald_proto::bus::v1::Publication;
use prost::Message;
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;

use crate::mailbox::{self, Refused};

/// Publications one channel's feed may have waiting before more are dropped, as the NATS
/// client drops them for a slow subscription of its own (its default capacity). A feed
/// with history fills the gap from there; one without loses them.
const ROUTE_LIMIT: usize = 64 * 1024;

/// The shared subscriptions of one gateway, by bucket.
pub struct Buckets {
    upstream: Upstream,
    buckets: Mutex<HashMap<u32, Arc<Bucket>>>,
}

/// What a channel's feed needs to take its publications through its bucket: the buckets,
/// and the feed's generation (see [`Buckets::route`]).
pub struct Share {
    pub buckets: Arc<Buckets>,
    pub generation: u64,
}

/// A shared channel's feed while it waits, without a task, for something to do.
pub trait Parked: Send + 'static {
    /// Whether it has something to do before its next publication (catching up after a
    /// reconnection of the bus): then it does not park.
    fn pending(&self) -> bool;

    /// Runs the feed again, in a task of its own, taking its publications from `route`.
    fn resume(self: Box<Self>, route: Route);
}

/// Where a channel's publications go.
enum Slot {
    /// Its running feed's queue.
    Queue(mailbox::Sender<Publication>),
    /// Its parked feed, which the next publication resumes.
    Parked(Box<dyn Parked>),
}

impl Slot {
    /// Takes a parked feed out, leaving a new queue in its place (holding `first`, if
    /// given); the feed goes with the queue's receiving end. `None` for a running feed.
    fn unpark(
        &mut self,
        first: Option<Publication>,
    ) -> Option<(Box<dyn Parked>, mailbox::Receiver<Publication>)> {
        let Slot::Parked(_) = self else {
            return None;
        };
        let (sender, queue) = mailbox::mailbox();
        if let Some(publication) = first {
            // A new queue, its receiver alive: it cannot refuse.
            let _ = sender.send(publication);
        }
        match std::mem::replace(self, Slot::Queue(sender)) {
            Slot::Parked(feed) => Some((feed, queue)),
            Slot::Queue(_) => None,
        }
    }
}

/// A parked feed to resume, outside the bucket's lock, on a new route of its channel.
struct Wake {
    feed: Box<dyn Parked>,
    channel: Arc<str>,
    generation: u64,
    queue: mailbox::Receiver<Publication>,
}

/// The channels of one bucket held here, and the subscription that feeds them.
#[derive(Default)]
struct Bucket {
    /// Each channel's slot, with the generation of the feed that owns it: a feed that
    /// restarts may add its route before the old one is gone, or after.
    routes: Mutex<HashMap<Arc<str>, (u64, Slot)>>,
    /// The task that reads the bucket's subscription, once it is subscribed.
    reader: OnceCell<AbortHandle>,
}

impl Drop for Bucket {
    fn drop(&mut self) {
        // The last route is gone: the subscription goes with its reader.
        if let Some(reader) = self.reader.get() {
            reader.abort();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves the maps consistent at each step.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Buckets {
    pub fn new(upstream: Upstream) -> Arc<Self> {
        Arc::new(Self {
            upstream,
            buckets: Mutex::default(),
        })
    }

    /// Starts taking `channel`'s publications for the feed of `generation`. Once this
    /// returns, the bucket's subscription is on the bus (sent before anything the caller
    /// sends next on it), so nothing published after a request the caller makes next
    /// passes it by. The newest feed of a channel has its publications: a route asked for
    /// by an older one (a feed the hub has already replaced) gets none, its queue closed.
    pub async fn route(
        self: &Arc<Self>,
        channel: &Arc<str>,
        generation: u64,
    ) -> Result<Route, BusError> {
        let id = bucket_of(channel);
        let (sender, queue) = mailbox::mailbox();
        let (bucket, replaced) = {
            let mut buckets = lock(&self.buckets);
            let bucket = buckets.entry(id).or_default().clone();
            let mut routes = lock(&bucket.routes);
            let newer = routes
                .get(channel)
                .is_some_and(|(owner, _)| *owner > generation);
            let replaced = match newer {
                false => routes.insert(channel.clone(), (generation, Slot::Queue(sender))),
                true => None,
            };
            drop(routes);
            (bucket, replaced)
        };
        // An older feed's slot (perhaps its parked state) goes outside the locks.
        drop(replaced);
        // From here on, dropping the route takes it out again, on failure too.
        let route = Route {
            buckets: self.clone(),
            bucket,
            id,
            generation,
            channel: channel.clone(),
            queue,
            parked: false,
        };
        route
            .bucket
            .reader
            .get_or_try_init(|| self.subscribe(id, Arc::downgrade(&route.bucket)))
            .await?;
        Ok(route)
    }

    async fn subscribe(
        self: &Arc<Self>,
        id: u32,
        bucket: Weak<Bucket>,
    ) -> Result<AbortHandle, BusError> {
        let subject = self.upstream.subjects().bucket(id);
        let mut connections = self.upstream.bus().connections();
        connections.mark_unchanged();
        let subscription = self.upstream.bus().subscribe(subject).await?;
        let reader = Reader {
            buckets: Arc::downgrade(self),
            bucket,
            id,
        };
        Ok(tokio::spawn(reader.run(subscription, connections)).abort_handle())
    }

    /// Takes out the route of `channel`'s feed of `generation`, running or parked: the
    /// hub no longer wants the feed. A running feed then finds its queue closed.
    pub fn forget(&self, channel: &str, generation: u64) {
        let id = bucket_of(channel);
        let mut buckets = lock(&self.buckets);
        let Some(bucket) = buckets.get(&id).cloned() else {
            return;
        };
        let mut routes = lock(&bucket.routes);
        let owned = routes
            .get(channel)
            .is_some_and(|(owner, _)| *owner == generation);
        let removed = owned.then(|| routes.remove(channel));
        if routes.is_empty() {
            buckets.remove(&id);
        }
        drop(routes);
        drop(buckets);
        // A parked feed's state goes outside the bucket's locks.
        drop(removed);
    }

    /// A route of `bucket` for a feed that wakes up.
    fn wake(self: &Arc<Self>, bucket: &Arc<Bucket>, id: u32, wake: Wake) {
        let route = Route {
            buckets: self.clone(),
            bucket: bucket.clone(),
            id,
            generation: wake.generation,
            channel: wake.channel,
            queue: wake.queue,
            parked: false,
        };
        wake.feed.resume(route);
    }

    /// Takes `route` out; the bucket goes when its last route does.
    fn remove(&self, route: &Route) {
        if route.parked {
            // Its slot holds its parked feed now, which is no longer this route's.
            return;
        }
        let mut buckets = lock(&self.buckets);
        let mut routes = lock(&route.bucket.routes);
        if routes
            .get(route.channel.as_ref())
            .is_some_and(|(owner, _)| *owner == route.generation)
        {
            routes.remove(route.channel.as_ref());
        }
        if routes.is_empty()
            && buckets
                .get(&route.id)
                .is_some_and(|bucket| Arc::ptr_eq(bucket, &route.bucket))
        {
            buckets.remove(&route.id);
        }
    }

    /// How many bucket subscriptions this gateway holds.
    #[cfg(test)]
    fn subscriptions(&self) -> usize {
        lock(&self.buckets).len()
    }

    /// Takes a bucket whose subscription ended out of use: its channels' feeds end (their
    /// subscribers are told to subscribe again), and the next channel subscribes afresh.
    fn ended(self: &Arc<Self>, bucket: &Arc<Bucket>, id: u32) {
        let mut buckets = lock(&self.buckets);
        buckets.retain(|_, held| !Arc::ptr_eq(held, bucket));
        let routes = std::mem::take(&mut *lock(&bucket.routes));
        drop(buckets);
        // Outside the locks, each running feed reads the end of its queue, and each parked
        // one wakes up on a queue that is already closed, to the same end.
        for (channel, (generation, slot)) in routes {
            if let Slot::Parked(feed) = slot {
                let (_, queue) = mailbox::mailbox();
                let wake = Wake {
                    feed,
                    channel,
                    generation,
                    queue,
                };
                self.wake(bucket, id, wake);
            }
        }
    }
}

/// A publication's channel alone (`Publication.channel`, field 1): a gateway receives the
/// publications of its buckets' channels that it does not hold, and drops them without
/// decoding the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct ChannelOf {
    #[prost(string, tag = "1")]
    channel: String,
}

/// Reads a bucket's subscription.
struct Reader {
    buckets: Weak<Buckets>,
    bucket: Weak<Bucket>,
    id: u32,
}

impl Reader {
    /// Hands each publication of the subscription to its channel's feed, if the channel is
    /// held here, and wakes the parked feeds when the bus reconnects (publications sent
    /// during the outage never arrive; each feed catches up from history).
    async fn run(self, mut subscription: Subscription, mut connections: watch::Receiver<u64>) {
        let mut watching = true;
        loop {
            let message = tokio::select! {
                message = subscription.next() => match message {
                    Some(message) => message,
                    None => break,
                },
                changed = connections.changed(), if watching => {
                    match changed {
                        Ok(()) => self.wake_parked(),
                        Err(_) => watching = false,
                    }
                    continue;
                }
            };
            if !self.hand_over(message.payload) {
                return;
            }
        }
        // The bus ended the subscription (the node is stopping, or the bus failed for good).
        if let (Some(bucket), Some(buckets)) = (self.bucket.upgrade(), self.buckets.upgrade()) {
            buckets.ended(&bucket, self.id);
        }
    }

    /// Hands one publication to its channel's feed, waking it if parked; returns whether
    /// the bucket is still held.
    fn hand_over(&self, payload: bytes::Bytes) -> bool {
        let Some(bucket) = self.bucket.upgrade() else {
            return false;
        };
        let channel = match ChannelOf::decode(payload.clone()) {
            Ok(ChannelOf { channel }) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable publication on a shared subscription");
                return true;
            }
        };
        if !lock(&bucket.routes).contains_key(channel.as_str()) {
            return true;
        }
        let publication = match Publication::decode(payload) {
            Ok(publication) => publication,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable publication on a shared subscription");
                return true;
            }
        };
        // Queued under the bucket's lock, so that a feed parking under it never leaves a
        // publication behind in the queue it gives up.
        let mut routes = lock(&bucket.routes);
        let Some((generation, slot)) = routes.get_mut(channel.as_str()) else {
            return true;
        };
        let generation = *generation;
        if let Slot::Queue(sender) = slot {
            if sender.try_send(publication, ROUTE_LIMIT) == Err(Refused::Full) {
                metrics::counter!(NATS_ERRORS, "kind" => "slow_consumer").increment(1);
            }
            return true;
        }
        let Some((feed, queue)) = slot.unpark(Some(publication)) else {
            return true;
        };
        drop(routes);
        if let Some(buckets) = self.buckets.upgrade() {
            let wake = Wake {
                feed,
                channel: channel.into(),
                generation,
                queue,
            };
            buckets.wake(&bucket, self.id, wake);
        }
        true
    }

    /// Wakes every parked feed of the bucket that has something to do (a feed with history
    /// catches up), each on an empty queue.
    fn wake_parked(&self) {
        let (Some(bucket), Some(buckets)) = (self.bucket.upgrade(), self.buckets.upgrade()) else {
            return;
        };
        let mut wakes = Vec::new();
        for (channel, (generation, slot)) in lock(&bucket.routes).iter_mut() {
            if !matches!(slot, Slot::Parked(feed) if feed.pending()) {
                continue;
            }
            if let Some((feed, queue)) = slot.unpark(None) {
                let (channel, generation) = (channel.clone(), *generation);
                wakes.push(Wake {
                    feed,
                    channel,
                    generation,
                    queue,
                });
            }
        }
        for wake in wakes {
            buckets.wake(&bucket, self.id, wake);
        }
    }
}

/// One channel's share of its bucket's subscription. Dropping it stops taking the
/// channel's publications.
pub struct Route {
    buckets: Arc<Buckets>,
    bucket: Arc<Bucket>,
    id: u32,
    generation: u64,
    channel: Arc<str>,
    queue: mailbox::Receiver<Publication>,
    /// Set once its feed parked in its place.
    parked: bool,
}

impl Route {
    /// The channel's next publication; `None` once the bucket's subscription has ended.
    pub async fn next(&mut self) -> Option<Publication> {
        self.queue.recv().await
    }

    /// Whether the feed may park: no publication waits in the queue now, and more can
    /// come (a closed queue is the end the feed must read and report).
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && !self.queue.is_closed()
    }

    /// Parks `feed` in the bucket in place of this route, if it is still the channel's
    /// route, no publication waits and the feed has nothing pending; otherwise the feed
    /// goes on at once in a task of its own (to the end of its queue, if the route is no
    /// longer the channel's: the hub let the channel go, or the subscription ended).
    pub fn park(mut self, feed: Box<dyn Parked>) {
        let mut routes = lock(&self.bucket.routes);
        let current = routes
            .get_mut(self.channel.as_ref())
            .filter(|(owner, slot)| *owner == self.generation && matches!(slot, Slot::Queue(_)));
        let Some((_, slot)) = current else {
            drop(routes);
            // Nothing can be sent to it any more, though its sender may not be dropped
            // yet: closed now, so that the feed reads its end instead of parking again.
            self.queue.close();
            return feed.resume(self);
        };
        // Checked under the lock that publications are queued under.
        if !self.is_idle() || feed.pending() {
            drop(routes);
            return feed.resume(self);
        }
        *slot = Slot::Parked(feed);
        drop(routes);
        self.parked = true;
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        self.buckets.remove(self);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use herald_core::bus::{Bus, MemoryBus};
    use herald_core::subjects::Subjects;
    use tokio::sync::mpsc::error::TryRecvError;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn name(channel: &str) -> Arc<str> {
        channel.into()
    }

    /// Shared subscriptions on an in-process bus.
    fn setup(subjects: &Subjects) -> (Arc<MemoryBus>, Arc<Buckets>) {
        let bus = Arc::new(MemoryBus::new());
        let upstream = Upstream::new(bus.clone(), subjects.clone(), PATIENCE);
        (bus, Buckets::new(upstream))
    }

    fn publication(channel: &str, offset: u64) -> Bytes {
        let publication = Publication {
            channel: channel.into(),
            offset,
            ..Default::default()
        };
        Bytes::from(publication.encode_to_vec())
    }

    /// Two channels of the same bucket, and one of another.
    fn channels() -> (String, String, String) {
        let first = "user:#0".to_string();
        let mut names = (1..).map(|n| format!("user:#{n}"));
        let same = names
            .find(|name| bucket_of(name) == bucket_of(&first))
            .expect("another name in the bucket");
        let other = names
            .find(|name| bucket_of(name) != bucket_of(&first))
            .expect("a name in another bucket");
        (first, same, other)
    }

    async fn next(route: &mut Route) -> Publication {
        tokio::time::timeout(PATIENCE, route.next())
            .await
            .expect("a publication in time")
            .expect("the subscription goes on")
    }

    #[test]
    fn a_publications_channel_is_read_alone() {
        let publication = Publication {
            channel: "user:#alice".into(),
            offset: 7,
            epoch: "e".into(),
            data: Bytes::from_static(b"{}"),
            ..Default::default()
        };
        let payload = Bytes::from(publication.encode_to_vec());
        let read = ChannelOf::decode(payload).unwrap();
        assert_eq!(read.channel, "user:#alice");
    }

    #[tokio::test]
    async fn a_bucket_is_subscribed_once_and_each_channel_gets_its_own() {
        let subjects = Subjects::new("t");
        let (bus, buckets) = setup(&subjects);
        let (first, same, other) = channels();
        let mut a = buckets.route(&name(&first), 1).await.unwrap();
        let mut b = buckets.route(&name(&same), 2).await.unwrap();
        assert_eq!(buckets.subscriptions(), 1);
        let mut c = buckets.route(&name(&other), 3).await.unwrap();
        assert_eq!(buckets.subscriptions(), 2);

        for (channel, offset) in [(&same, 1), (&first, 2), (&other, 3), (&first, 4)] {
            let subject = subjects.delivery(channel);
            bus.publish(subject, publication(channel, offset))
                .await
                .unwrap();
        }
        assert_eq!(next(&mut a).await.offset, 2);
        assert_eq!(next(&mut a).await.offset, 4);
        assert_eq!(next(&mut b).await.offset, 1);
        assert_eq!(next(&mut c).await.offset, 3);
        assert!(a.queue.try_recv().is_none() && b.queue.try_recv().is_none());

        // The bucket's subscription stays while one of its channels does.
        drop(a);
        assert_eq!(buckets.subscriptions(), 2);
        let subject = subjects.delivery(&same);
        bus.publish(subject, publication(&same, 5)).await.unwrap();
        assert_eq!(next(&mut b).await.offset, 5);
        drop((b, c));
        assert_eq!(buckets.subscriptions(), 0);
    }

    /// A parked feed that hands the route it is resumed on to the test; `pending` says
    /// whether it has work of its own.
    struct TestFeed {
        resumed: tokio::sync::mpsc::UnboundedSender<Route>,
        pending: bool,
    }

    impl Parked for TestFeed {
        fn pending(&self) -> bool {
            self.pending
        }

        fn resume(self: Box<Self>, route: Route) {
            let _ = self.resumed.send(route);
        }
    }

    fn test_feed(pending: bool) -> (Box<TestFeed>, tokio::sync::mpsc::UnboundedReceiver<Route>) {
        let (resumed, routes) = tokio::sync::mpsc::unbounded_channel();
        (Box::new(TestFeed { resumed, pending }), routes)
    }

    async fn resumed(routes: &mut tokio::sync::mpsc::UnboundedReceiver<Route>) -> Route {
        tokio::time::timeout(PATIENCE, routes.recv())
            .await
            .expect("resumed in time")
            .expect("a route")
    }

    #[tokio::test]
    async fn a_parked_feed_wakes_up_with_its_channels_next_publication_and_parks_again() {
        let subjects = Subjects::new("t");
        let (bus, buckets) = setup(&subjects);
        let (first, same, _) = channels();
        let route = buckets.route(&name(&first), 1).await.unwrap();
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        assert!(routes.try_recv().is_err(), "an idle feed parks");
        assert_eq!(buckets.subscriptions(), 1, "a parked feed keeps its bucket");

        // Another channel's publication leaves it parked; its own wakes it up, with it.
        for (channel, offset) in [(&same, 1), (&first, 2)] {
            let subject = subjects.delivery(channel);
            bus.publish(subject, publication(channel, offset))
                .await
                .unwrap();
        }
        let mut route = resumed(&mut routes).await;
        assert_eq!(next(&mut route).await.offset, 2);

        // Parked again, it wakes up again, on a new route.
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        let subject = subjects.delivery(&first);
        bus.publish(subject, publication(&first, 3)).await.unwrap();
        let mut route = resumed(&mut routes).await;
        assert_eq!(next(&mut route).await.offset, 3);
        drop(route);
        assert_eq!(buckets.subscriptions(), 0, "the last route took its bucket");
    }

    #[tokio::test]
    async fn a_feed_with_something_to_do_goes_on_instead_of_parking() {
        let subjects = Subjects::new("t");
        let (bus, buckets) = setup(&subjects);
        // A publication waits in the queue.
        let route = buckets.route(&name("user:#a"), 1).await.unwrap();
        let subject = subjects.delivery("user:#a");
        bus.publish(subject, publication("user:#a", 1))
            .await
            .unwrap();
        let queued = async {
            while route.is_idle() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(PATIENCE, queued).await.unwrap();
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        let mut route = routes.try_recv().expect("it goes on at once");
        assert_eq!(next(&mut route).await.offset, 1);
        // Work of its own (a reconnection to catch up from).
        let (feed, mut routes) = test_feed(true);
        route.park(feed);
        assert!(routes.try_recv().is_ok(), "it goes on at once");
    }

    #[tokio::test]
    async fn when_the_subscription_ends_parked_feeds_wake_up_to_the_end_of_their_queue() {
        let (_, buckets) = setup(&Subjects::new("t"));
        let route = buckets.route(&name("user:#a"), 1).await.unwrap();
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        let id = bucket_of("user:#a");
        let bucket = lock(&buckets.buckets).get(&id).cloned().unwrap();
        buckets.ended(&bucket, id);
        let mut route = resumed(&mut routes).await;
        assert!(!route.is_idle(), "a closed queue is not idle");
        assert!(route.next().await.is_none(), "the feed reads the end");
        // Asked to park on it, the feed goes on instead, to read that end and report it.
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        assert!(routes.try_recv().is_ok(), "it goes on at once");
    }

    #[tokio::test]
    async fn a_parked_feed_the_hub_forgets_goes_with_its_bucket() {
        let (_, buckets) = setup(&Subjects::new("t"));
        let route = buckets.route(&name("user:#a"), 1).await.unwrap();
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        // An older generation's forget leaves it.
        buckets.forget("user:#a", 0);
        assert_eq!(buckets.subscriptions(), 1);
        buckets.forget("user:#a", 1);
        assert_eq!(buckets.subscriptions(), 0);
        assert!(
            routes
                .try_recv()
                .is_err_and(|e| e == TryRecvError::Disconnected),
            "the parked feed is gone, never resumed"
        );
        // A running feed the hub forgets finds its queue closed: it reads the end.
        let mut route = buckets.route(&name("user:#a"), 2).await.unwrap();
        buckets.forget("user:#a", 2);
        assert!(!route.is_idle(), "a closed queue is not idle");
        assert!(route.next().await.is_none());
        let (feed, mut routes) = test_feed(false);
        route.park(feed);
        assert!(
            routes.try_recv().is_ok(),
            "it goes on, to its end, instead of parking"
        );
    }

    #[tokio::test]
    async fn the_newest_feed_of_a_channel_keeps_its_route_whichever_came_first() {
        let subjects = Subjects::new("t");
        let (bus, buckets) = setup(&subjects);
        // The old feed's route made first, then the new one's.
        let old = buckets.route(&name("user:#a"), 1).await.unwrap();
        let mut new = buckets.route(&name("user:#a"), 2).await.unwrap();
        drop(old);
        assert_eq!(buckets.subscriptions(), 1);
        let subject = subjects.delivery("user:#a");
        bus.publish(subject.clone(), publication("user:#a", 1))
            .await
            .unwrap();
        assert_eq!(next(&mut new).await.offset, 1);
        // The old feed's route made last: it gets nothing, the new one keeps its own.
        let mut late = buckets.route(&name("user:#a"), 1).await.unwrap();
        assert!(
            late.next().await.is_none(),
            "an older feed's route is closed"
        );
        drop(late);
        bus.publish(subject, publication("user:#a", 2))
            .await
            .unwrap();
        assert_eq!(next(&mut new).await.offset, 2);
    }
}
