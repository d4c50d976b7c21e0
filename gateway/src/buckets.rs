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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures_util::StreamExt;
use herald_core::bus::{BusError, Subscription};
use herald_core::metrics::NATS_ERRORS;
use herald_core::subjects::bucket_of;
use herald_core::upstream::Upstream;
use herald_proto::bus::v1::Publication;
use prost::Message;
use tokio::sync::OnceCell;
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

/// The channels of one bucket held here, and the subscription that feeds them.
#[derive(Default)]
struct Bucket {
    /// Each channel's feed queue, with the generation of the feed that owns it: a feed
    /// that restarts may add its route before the old one is gone, or after.
    routes: Mutex<HashMap<String, (u64, mailbox::Sender<Publication>)>>,
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
        channel: &str,
        generation: u64,
    ) -> Result<Route, BusError> {
        let id = bucket_of(channel);
        let (sender, queue) = mailbox::mailbox();
        let bucket = {
            let mut buckets = lock(&self.buckets);
            let bucket = buckets.entry(id).or_default().clone();
            let mut routes = lock(&bucket.routes);
            let newer = routes
                .get(channel)
                .is_some_and(|(owner, _)| *owner > generation);
            if !newer {
                routes.insert(channel.to_string(), (generation, sender));
            }
            drop(routes);
            bucket
        };
        // From here on, dropping the route takes it out again, on failure too.
        let route = Route {
            buckets: self.clone(),
            bucket,
            id,
            generation,
            channel: channel.into(),
            queue,
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
        let subscription = self.upstream.bus().subscribe(subject).await?;
        let reader = read(subscription, bucket, Arc::downgrade(self));
        Ok(tokio::spawn(reader).abort_handle())
    }

    /// Takes `route` out; the bucket goes when its last route does.
    fn remove(&self, route: &Route) {
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
    fn ended(&self, bucket: &Arc<Bucket>) {
        let mut buckets = lock(&self.buckets);
        buckets.retain(|_, held| !Arc::ptr_eq(held, bucket));
        let routes = std::mem::take(&mut *lock(&bucket.routes));
        drop(buckets);
        // The senders go outside the locks; each feed then reads the end of its queue.
        drop(routes);
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

/// Hands each publication of a bucket's subscription to its channel's feed, if the channel
/// is held here.
async fn read(mut subscription: Subscription, bucket: Weak<Bucket>, buckets: Weak<Buckets>) {
    while let Some(message) = subscription.next().await {
        let Some(bucket) = bucket.upgrade() else {
            return;
        };
        let sender = match ChannelOf::decode(message.payload.clone()) {
            Ok(ChannelOf { channel }) => match lock(&bucket.routes).get(&channel) {
                Some((_, sender)) => sender.clone(),
                None => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, "undecodable publication on a shared subscription");
                continue;
            }
        };
        let publication = match Publication::decode(message.payload) {
            Ok(publication) => publication,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable publication on a shared subscription");
                continue;
            }
        };
        if sender.try_send(publication, ROUTE_LIMIT) == Err(Refused::Full) {
            metrics::counter!(NATS_ERRORS, "kind" => "slow_consumer").increment(1);
        }
    }
    // The bus ended the subscription (the node is stopping, or the bus failed for good).
    if let (Some(bucket), Some(buckets)) = (bucket.upgrade(), buckets.upgrade()) {
        buckets.ended(&bucket);
    }
}

/// One channel's share of its bucket's subscription. Dropping it stops taking the
/// channel's publications.
pub struct Route {
    buckets: Arc<Buckets>,
    bucket: Arc<Bucket>,
    id: u32,
    generation: u64,
    channel: Box<str>,
    queue: mailbox::Receiver<Publication>,
}

impl Route {
    /// The channel's next publication; `None` once the bucket's subscription has ended.
    pub async fn next(&mut self) -> Option<Publication> {
        self.queue.recv().await
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

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

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
        let bus = Arc::new(MemoryBus::new());
        let upstream = Upstream::new(bus.clone(), subjects.clone(), PATIENCE);
        let buckets = Buckets::new(upstream);
        let (first, same, other) = channels();
        let mut a = buckets.route(&first, 1).await.unwrap();
        let mut b = buckets.route(&same, 2).await.unwrap();
        assert_eq!(buckets.subscriptions(), 1);
        let mut c = buckets.route(&other, 3).await.unwrap();
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

    #[tokio::test]
    async fn the_newest_feed_of_a_channel_keeps_its_route_whichever_came_first() {
        let bus = Arc::new(MemoryBus::new());
        let subjects = Subjects::new("t");
        let buckets = Buckets::new(Upstream::new(bus.clone(), subjects.clone(), PATIENCE));
        // The old feed's route made first, then the new one's.
        let old = buckets.route("user:#a", 1).await.unwrap();
        let mut new = buckets.route("user:#a", 2).await.unwrap();
        drop(old);
        assert_eq!(buckets.subscriptions(), 1);
        let subject = subjects.delivery("user:#a");
        bus.publish(subject.clone(), publication("user:#a", 1))
            .await
            .unwrap();
        assert_eq!(next(&mut new).await.offset, 1);
        // The old feed's route made last: it gets nothing, the new one keeps its own.
        let mut late = buckets.route("user:#a", 1).await.unwrap();
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
