//! The publish requests of all of a gateway's connections to the routers, as a group
//! commit: at most [`GatewayConfig::publish_in_flight`] requests are on their way at once,
//! and the connections' batches that wait for one of them to come back travel together
//! in the next, up to what one request carries.
//!
//! A request costs the same whatever its size: a NATS round trip, a router's work, and a
//! Lua call in Redis and a NATS publication per channel it touches. Many connections that
//! each publish a little (a chat) would otherwise send as many small requests; gathered,
//! they pay these costs once per group. A connection still has one batch on its way at
//! a time and gets its own outcomes, in order, so nothing about ordering changes; when a
//! request is free, a batch leaves at once and waits for nobody.
//!
//! The cap must not turn one slow channel into a stall of the whole gateway (a Redis
//! failover holding every request that touches the channel): a batch that has waited
//! [`OVERFLOW_AFTER`] for a free request goes out anyway, with those behind it, beyond
//! the cap, as every batch did before there was one.
//!
//! [`GatewayConfig::publish_in_flight`]: herald_core::config::GatewayConfig::publish_in_flight

use std::sync::Arc;
use std::time::Duration;

use herald_core::codes::{ErrorCode, Refusal};
use herald_core::publish;
use herald_core::upstream::Upstream;
use herald_proto::bus::v1::{Position, PublishRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

/// How long a batch waits for a free request before it goes out beyond the cap. Far
/// longer than a request takes under load (a few milliseconds), so it does not undo the
/// gathering; short enough that a stuck request holds the others back only this long.
pub const OVERFLOW_AFTER: Duration = Duration::from_millis(50);

/// Most publishes in one request (four times what one connection's batch holds at most):
/// a router handles a request's channels together, and its reply comes when the slowest
/// is stored.
const GROUP_LIMIT: usize = 1024;

/// Each publish's outcome, in order, or why the whole batch failed.
pub type Outcomes = Result<Vec<Result<Position, Refusal>>, Refusal>;

/// One connection's batch, waiting for a request.
struct Submission {
    requests: Vec<PublishRequest>,
    bytes: usize,
    outcomes: oneshot::Sender<Outcomes>,
    queued: Instant,
}

/// Where connections hand their batches; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    submissions: mpsc::UnboundedSender<Submission>,
}

impl Publisher {
    /// Starts the dispatcher, which ends when every clone of the publisher is gone.
    pub fn start(upstream: Upstream, in_flight: usize) -> Self {
        let (submissions, waiting) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(dispatch(upstream, slots, waiting));
        Self { submissions }
    }

    /// Sends `requests` (of `bytes`, as [`publish::batch_bytes`] counts them) to a router,
    /// alone or with other connections' batches; the future gives their outcomes in order.
    /// They are queued when this is called, not when the future is first polled.
    pub fn publish(
        &self,
        requests: Vec<PublishRequest>,
        bytes: usize,
    ) -> impl Future<Output = Outcomes> + Send + 'static {
        let (outcomes, answer) = oneshot::channel();
        let submission = Submission {
            requests,
            bytes,
            outcomes,
            queued: Instant::now(),
        };
        let queued = self.submissions.send(submission).is_ok();
        async move {
            if !queued {
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        }
    }
}

fn stopped() -> Refusal {
    Refusal::new(ErrorCode::Unavailable, "the gateway is stopping")
}

/// Waits for a batch and a free request (or [`OVERFLOW_AFTER`]), then sends everything
/// that waits, up to one request's limits, in it.
async fn dispatch(
    upstream: Upstream,
    slots: Arc<Semaphore>,
    mut waiting: mpsc::UnboundedReceiver<Submission>,
) {
    let mut carried: Option<Submission> = None;
    loop {
        let first = match carried.take() {
            Some(submission) => submission,
            None => match waiting.recv().await {
                Some(submission) => submission,
                None => return,
            },
        };
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => Some(slot),
                Err(_) => return,
            },
            () = sleep_until(first.queued + OVERFLOW_AFTER) => None,
        };
        let limit = publish::batch_limit(&upstream);
        let (mut bytes, mut count) = (first.bytes, first.requests.len());
        let mut group = vec![first];
        while let Ok(next) = waiting.try_recv() {
            if bytes + next.bytes > limit || count + next.requests.len() > GROUP_LIMIT {
                carried = Some(next);
                break;
            }
            bytes += next.bytes;
            count += next.requests.len();
            group.push(next);
        }
        tokio::spawn(send(upstream.clone(), group, slot));
    }
}

/// Sends one group as one request and hands each batch its outcomes; `slot` is the
/// request's place under the cap (none when it went out beyond it).
async fn send(upstream: Upstream, group: Vec<Submission>, slot: Option<OwnedSemaphorePermit>) {
    let mut sizes = Vec::with_capacity(group.len());
    let mut answers = Vec::with_capacity(group.len());
    let mut requests = Vec::new();
    for submission in group {
        sizes.push(submission.requests.len());
        answers.push(submission.outcomes);
        requests.extend(submission.requests);
    }
    let published = upstream.publish(requests).await;
    drop(slot);
    match published {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (size, answer) in sizes.into_iter().zip(answers) {
                // A connection that went away meanwhile has nobody to answer.
                let _ = answer.send(Ok(outcomes.by_ref().take(size).collect()));
            }
        }
        Err(refusal) => {
            for answer in answers {
                let _ = answer.send(Err(refusal.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use herald_core::bus::{Bus, MemoryBus};
    use herald_core::subjects::{ROUTER_QUEUE, Subjects};
    use herald_proto::bus::v1::{PublishBatch, PublishBatchReply, PublishReply, publish_reply};
    use prost::Message;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn request(channel: &str) -> PublishRequest {
        PublishRequest {
            channel: channel.into(),
            data: Bytes::from_static(b"{}"),
            ..Default::default()
        }
    }

    /// A router that answers each publish with its place in the requests it received
    /// (offset 1 for the first), holds the first request until `release`, and reports each
    /// request's number of publishes.
    async fn router(
        bus: Arc<MemoryBus>,
        subjects: &Subjects,
        release: oneshot::Receiver<()>,
    ) -> mpsc::UnboundedReceiver<usize> {
        let (sizes, seen) = mpsc::unbounded_channel();
        let subject = subjects.publish_requests();
        let mut requests = bus
            .queue_subscribe(subject, ROUTER_QUEUE.into())
            .await
            .unwrap();
        tokio::spawn(async move {
            let mut release = Some(release);
            let offsets = Arc::new(std::sync::atomic::AtomicU64::new(0));
            while let Some(message) = requests.next().await {
                let batch = PublishBatch::decode(message.payload).unwrap();
                let _ = sizes.send(batch.requests.len());
                let (bus, offsets, held) = (bus.clone(), offsets.clone(), release.take());
                // Each request answered on its own, so a held one holds only itself.
                tokio::spawn(async move {
                    if let Some(held) = held {
                        let _ = held.await;
                    }
                    let count = batch.requests.len() as u64;
                    let first = offsets.fetch_add(count, std::sync::atomic::Ordering::SeqCst);
                    let replies = (first + 1..=first + count)
                        .map(|offset| {
                            let position = Position {
                                offset,
                                epoch: "e".into(),
                            };
                            PublishReply {
                                result: Some(publish_reply::Result::Position(position)),
                            }
                        })
                        .collect();
                    let reply = PublishBatchReply { replies }.encode_to_vec();
                    bus.publish(message.reply.unwrap(), reply.into())
                        .await
                        .unwrap();
                });
            }
        });
        seen
    }

    /// A publisher of one request in flight in front of [`router`], whose first request
    /// waits for the returned sender (to send or drop).
    async fn held() -> (
        Publisher,
        mpsc::UnboundedReceiver<usize>,
        oneshot::Sender<()>,
    ) {
        let bus = Arc::new(MemoryBus::new());
        let subjects = Subjects::new("t");
        let (release, held) = oneshot::channel();
        let sizes = router(bus.clone(), &subjects, held).await;
        let publisher = Publisher::start(Upstream::new(bus, subjects, PATIENCE), 1);
        (publisher, sizes, release)
    }

    /// The size of the next request the router receives.
    async fn next_size(sizes: &mut mpsc::UnboundedReceiver<usize>) -> Option<usize> {
        tokio::time::timeout(PATIENCE, sizes.recv())
            .await
            .expect("a request within the patience")
    }

    #[tokio::test]
    async fn batches_that_wait_for_a_request_travel_together_and_get_their_own_outcomes() {
        let (publisher, mut sizes, release) = held().await;

        // The first batch takes the one request; the router holds it.
        let first = tokio::spawn(publisher.publish(vec![request("a")], 1));
        let size = next_size(&mut sizes).await;
        assert_eq!(size, Some(1));
        // These wait for it, and then go as one request, each with its own outcomes.
        let waiting: Vec<_> = (0..10)
            .map(|i| {
                let requests = (0..3).map(|_| request(&format!("c{i}"))).collect();
                tokio::spawn(publisher.publish(requests, 3))
            })
            .collect();
        let _ = release.send(());
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.len(), 1);
        let size = next_size(&mut sizes).await;
        assert_eq!(size, Some(30), "the waiting batches went together");
        // The router numbers a request's publishes in order: each batch has its own
        // three, in its place in the group.
        let mut start = None;
        for (i, batch) in waiting.into_iter().enumerate() {
            let offsets: Vec<u64> = batch
                .await
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|outcome| outcome.unwrap().offset)
                .collect();
            let base = *start.get_or_insert(offsets[0]) + 3 * i as u64;
            assert_eq!(offsets, vec![base, base + 1, base + 2], "batch {i}");
        }
    }

    #[tokio::test]
    async fn a_batch_that_waits_too_long_goes_beyond_the_cap() {
        let (publisher, mut sizes, _release) = held().await;

        // The first request is held for ever; the next batch still reaches the router,
        // beside it, and gets its outcome.
        let _stuck = tokio::spawn(publisher.publish(vec![request("slow")], 1));
        let size = next_size(&mut sizes).await;
        assert_eq!(size, Some(1));
        let other = publisher.publish(vec![request("a"), request("b")], 2);
        let size = next_size(&mut sizes).await;
        assert_eq!(size, Some(2));
        let outcomes = tokio::time::timeout(PATIENCE, other)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcomes.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_request_fails_every_batch_in_it() {
        // No router at all: the request finds no responders.
        let bus = Arc::new(MemoryBus::new());
        let upstream = Upstream::new(bus, Subjects::new("t"), PATIENCE);
        let publisher = Publisher::start(upstream, 1);
        let batches: Vec<_> = (0..5)
            .map(|_| publisher.publish(vec![request("c")], 1))
            .collect();
        for outcome in futures_util::future::join_all(batches).await {
            let refusal = outcome.unwrap_err();
            assert_eq!(refusal.code, ErrorCode::Unavailable, "{refusal:?}");
        }
    }
}
