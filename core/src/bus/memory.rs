//! [`Bus`] inside one process, for standalone mode and unit tests.
//!
//! Subjects match exactly, or by a trailing `>` as in NATS (`herald.ch.>`: every subject
//! that starts with `herald.ch.`), which only the consume stream uses. Like NATS, a
//! subscriber that falls
//! behind loses messages instead of growing a queue without bound: its channel holds
//! [`SUBSCRIBER_BUFFER`] messages, and gateways fill any resulting gap from history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::{Bus, BusError, BusMessage, Operation, Subscription, drain};

/// Messages buffered per subscriber before new ones are dropped.
pub const SUBSCRIBER_BUFFER: usize = 16 * 1024;

struct Subscriber {
    id: u64,
    queue: Option<String>,
    tx: mpsc::Sender<BusMessage>,
}

#[derive(Default)]
struct Registry {
    by_subject: HashMap<String, Vec<Subscriber>>,
    /// The subjects in `by_subject` that end with `>`, each with how many subscribers.
    wildcards: HashMap<String, usize>,
}

/// What a subject ending with `>` matches: every subject with the part before it as a
/// prefix (and something after it).
fn wildcard_prefix(subject: &str) -> Option<&str> {
    subject
        .strip_suffix('>')
        .filter(|prefix| prefix.ends_with('.'))
}

struct Shared {
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    connections: watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            registry: Mutex::default(),
            next_id: AtomicU64::new(0),
            connections: watch::Sender::new(1),
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the map inconsistent (every mutation
        // is a single insert or retain), so a poisoned lock is still usable.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-process bus. Clones share the same subjects.
#[derive(Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

/// Removes its subscriber from the registry when the subscription is dropped.
struct Unsubscribe {
    shared: Arc<Shared>,
    subject: String,
    id: u64,
}

impl Unsubscribe {
    /// Takes the subscriber out of the registry: its channel closes once every message
    /// already sent to it has been received. Doing it twice does nothing.
    fn remove(&self) {
        let mut registry = self.shared.registry();
        let Some(subs) = registry.by_subject.get_mut(&self.subject) else {
            return;
        };
        let before = subs.len();
        subs.retain(|s| s.id != self.id);
        let removed = before - subs.len();
        if subs.is_empty() {
            registry.by_subject.remove(&self.subject);
        }
        if removed > 0
            && let Some(count) = registry.wildcards.get_mut(&self.subject)
        {
            *count -= removed;
            if *count == 0 {
                registry.wildcards.remove(&self.subject);
            }
        }
    }
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A subscriber's channel as a drainable source.
struct MemorySource {
    rx: mpsc::Receiver<BusMessage>,
    guard: Unsubscribe,
}

impl drain::Source for MemorySource {
    async fn next(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }

    async fn stop(&mut self) {
        // Closes the channel behind what was already sent to it.
        self.guard.remove();
    }
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&self, subject: String, queue: Option<String>) -> Subscription {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut registry = self.shared.registry();
        if wildcard_prefix(&subject).is_some() {
            *registry.wildcards.entry(subject.clone()).or_default() += 1;
        }
        registry
            .by_subject
            .entry(subject.clone())
            .or_default()
            .push(Subscriber { id, queue, tx });
        drop(registry);
        let guard = Unsubscribe {
            shared: self.shared.clone(),
            subject,
            id,
        };
        Subscription::new(MemorySource { rx, guard })
    }

    /// Delivers to every plain subscriber and to one member of each queue group; returns
    /// how many received it.
    fn deliver(&self, subject: &str, message: BusMessage) -> usize {
        let registry = self.shared.registry();
        let matching = registry.wildcards.keys().filter(|pattern| {
            wildcard_prefix(pattern)
                .is_some_and(|prefix| subject.len() > prefix.len() && subject.starts_with(prefix))
        });
        let mut delivered = 0;
        for pattern in matching {
            if let Some(subs) = registry.by_subject.get(pattern) {
                delivered += Self::deliver_to(subs, &message, 0);
            }
        }
        let Some(subs) = registry.by_subject.get(subject) else {
            return delivered;
        };
        // Rotate the starting point so queue members share the load.
        let start = self.shared.next_id.fetch_add(1, Ordering::Relaxed) as usize;
        delivered + Self::deliver_to(subs, &message, start)
    }

    /// Delivers to every plain subscriber of `subs` and one member of each queue group,
    /// starting at `start`.
    fn deliver_to(subs: &[Subscriber], message: &BusMessage, start: usize) -> usize {
        let mut delivered = 0;
        let mut groups_served: Vec<&str> = Vec::new();
        for i in 0..subs.len() {
            let sub = &subs[(start + i) % subs.len()];
            if let Some(queue) = sub.queue.as_deref() {
                if groups_served.contains(&queue) {
                    continue;
                }
                if sub.tx.try_send(message.clone()).is_ok() {
                    groups_served.push(queue);
                    delivered += 1;
                }
            } else if sub.tx.try_send(message.clone()).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

/// The largest message the in-process bus carries: NATS' default `max_payload`, so that
/// standalone Herald sizes publications and history pages as a cluster does.
pub const MEMORY_MAX_PAYLOAD: usize = 1024 * 1024;

fn fits(payload: &Bytes) -> Result<(), BusError> {
    match payload.len() {
        size if size > MEMORY_MAX_PAYLOAD => Err(BusError::TooLarge {
            size,
            limit: MEMORY_MAX_PAYLOAD,
        }),
        _ => Ok(()),
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        fits(&payload)?;
        self.deliver(
            &subject,
            BusMessage {
                payload,
                reply: None,
            },
        );
        Ok(())
    }

    async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        fits(&payload)?;
        let inbox = format!(
            "_INBOX.{}",
            self.shared.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let mut replies = self.add(inbox.clone(), None);
        let message = BusMessage {
            payload,
            reply: Some(inbox),
        };
        if self.deliver(&subject, message) == 0 {
            return Err(BusError::NoResponders);
        }
        match tokio::time::timeout(timeout, replies.next()).await {
            Ok(Some(reply)) => Ok(reply.payload),
            Ok(None) => Err(BusError::failed(
                Operation::Request,
                "reply subscription closed",
            )),
            Err(_) => Err(BusError::Timeout),
        }
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        Ok(self.add(subject, None))
    }

    async fn queue_subscribe(
        &self,
        subject: String,
        queue: String,
    ) -> Result<Subscription, BusError> {
        Ok(self.add(subject, Some(queue)))
    }

    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn max_payload(&self) -> usize {
        MEMORY_MAX_PAYLOAD
    }

    fn connections(&self) -> watch::Receiver<u64> {
        // The in-process bus never disconnects.
        self.shared.connections.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trailing_wildcard_matches_every_subject_below_it() {
        let bus = MemoryBus::new();
        let mut all = bus.subscribe("h.ch.>".into()).await.unwrap();
        let mut one = bus.subscribe("h.ch.a".into()).await.unwrap();
        for subject in ["h.ch.a", "h.ch.b:1", "h.other", "h.ch."] {
            bus.publish(subject.into(), Bytes::from(subject))
                .await
                .unwrap();
        }
        assert_eq!(all.next().await.unwrap().payload, "h.ch.a");
        assert_eq!(all.next().await.unwrap().payload, "h.ch.b:1");
        assert_eq!(one.next().await.unwrap().payload, "h.ch.a");
        drop(all);
        // Its registration went with it.
        assert!(bus.shared.registry().wildcards.is_empty());
    }

    #[tokio::test]
    async fn plain_subscribers_all_receive_and_queue_members_share() {
        let bus = MemoryBus::new();
        let mut a = bus.subscribe("s".into()).await.unwrap();
        let mut q1 = bus.queue_subscribe("s".into(), "g".into()).await.unwrap();
        let mut q2 = bus.queue_subscribe("s".into(), "g".into()).await.unwrap();
        for i in 0..10u8 {
            bus.publish("s".into(), Bytes::from(vec![i])).await.unwrap();
        }
        for i in 0..10u8 {
            assert_eq!(a.next().await.unwrap().payload[0], i);
        }
        let mut group = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), q1.next()).await {
            group += 1;
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), q2.next()).await {
            group += 1;
        }
        assert_eq!(group, 10, "each message goes to exactly one queue member");
    }

    #[tokio::test]
    async fn request_reply_and_no_responders() {
        let bus = MemoryBus::new();
        assert_eq!(
            bus.request("r".into(), Bytes::new(), Duration::from_secs(1))
                .await,
            Err(BusError::NoResponders)
        );
        let mut server = bus.queue_subscribe("r".into(), "g".into()).await.unwrap();
        let responder = bus.clone();
        tokio::spawn(async move {
            while let Some(m) = server.next().await {
                let mut answer = m.payload.to_vec();
                answer.reverse();
                responder
                    .publish(m.reply.unwrap(), Bytes::from(answer))
                    .await
                    .unwrap();
            }
        });
        let reply = bus
            .request(
                "r".into(),
                Bytes::from_static(b"ab"),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(&reply[..], b"ba");
    }

    #[tokio::test]
    async fn a_drained_subscription_yields_what_it_received_then_ends() {
        let bus = MemoryBus::new();
        let mut sub = bus.queue_subscribe("s".into(), "g".into()).await.unwrap();
        for i in 0..3u8 {
            bus.publish("s".into(), Bytes::from(vec![i])).await.unwrap();
        }
        sub.drainer().drain();
        let mut other = bus.queue_subscribe("s".into(), "g".into()).await.unwrap();
        let received: Vec<u8> = (&mut sub).map(|m| m.payload[0]).collect().await;
        assert_eq!(received, [0, 1, 2]);
        // Later messages go to the rest of the queue group.
        bus.publish("s".into(), Bytes::from(vec![3])).await.unwrap();
        assert_eq!(other.next().await.unwrap().payload[0], 3);
        assert!(sub.next().await.is_none());
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = MemoryBus::new();
        let sub = bus.subscribe("s".into()).await.unwrap();
        drop(sub);
        assert!(bus.shared.registry().by_subject.is_empty());
    }
}
