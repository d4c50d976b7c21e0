//! Publishing what a connection has already sent, together: both protocols read ahead (at
//! most [`MAX_BURST`] frames or packets), and consecutive publishes on channels with
//! history among them travel to a router as one request of at most
//! [`publish::batch_limit`] bytes, appended in order (the [`Publisher`] may gather it with
//! other connections' batches). Each comes back with its own outcome, in order, so the
//! session answers them as if they had been sent one by one.

use std::time::Instant;

use herald_core::codes::Refusal;
use herald_core::publish;
use herald_core::upstream::Upstream;
use herald_proto::bus::v1::{Position, PublishRequest};

use crate::metrics;
use crate::publisher::Publisher;

/// Most frames (native) or packets (Socket.IO) read ahead and handled together.
pub const MAX_BURST: usize = 256;

/// Consecutive publishes of one connection, each with what its answer needs (`T`: a
/// command id, or an event's namespace and ack id).
pub struct Batch<T> {
    tags: Vec<T>,
    requests: Vec<PublishRequest>,
    bytes: usize,
    limit: usize,
}

impl<T> Batch<T> {
    /// An empty batch, limited to what one request over `upstream` carries.
    pub fn new(upstream: &Upstream) -> Self {
        Self::with_limit(publish::batch_limit(upstream))
    }

    fn with_limit(limit: usize) -> Self {
        Self {
            tags: Vec::new(),
            requests: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Whether `request` may join without the batch going over its limit. An empty batch
    /// takes anything: a publish larger than the limit travels alone.
    pub fn fits(&self, request: &PublishRequest) -> bool {
        self.is_empty() || self.bytes + publish::batch_bytes(request) <= self.limit
    }

    pub fn push(&mut self, tag: T, request: PublishRequest) {
        self.bytes += publish::batch_bytes(&request);
        self.tags.push(tag);
        self.requests.push(request);
    }

    /// Sends the batch to a router (with other connections' batches, if they wait) and
    /// empties it; returns each tag with the outcome of its publish, in the order they were
    /// pushed. `protocol` labels the metrics.
    pub async fn send(
        &mut self,
        publisher: &Publisher,
        protocol: &'static str,
    ) -> Vec<(T, Result<Position, Refusal>)> {
        if self.is_empty() {
            return Vec::new();
        }
        let tags = std::mem::take(&mut self.tags);
        let requests = std::mem::take(&mut self.requests);
        let bytes = std::mem::take(&mut self.bytes);
        let started = Instant::now();
        let published = publisher.publish(requests, bytes).await;
        metrics::published(protocol, started, tags.len());
        match published {
            Ok(outcomes) => tags.into_iter().zip(outcomes).collect(),
            Err(refusal) => tags
                .into_iter()
                .map(|tag| (tag, Err(refusal.clone())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: usize) -> PublishRequest {
        PublishRequest {
            channel: "c".into(),
            data: vec![b'x'; bytes].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_batch_takes_publishes_until_its_limit_and_a_large_one_alone() {
        let one = publish::batch_bytes(&request(100));
        let mut batch = Batch::with_limit(2 * one);
        assert!(
            batch.fits(&request(10 * one)),
            "an empty batch takes anything"
        );
        batch.push(1, request(100));
        assert!(batch.fits(&request(100)));
        batch.push(2, request(100));
        assert!(!batch.fits(&request(1)));
        assert!(!batch.is_empty());
    }
}
