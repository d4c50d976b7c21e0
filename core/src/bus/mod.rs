//! The cluster bus: how nodes exchange messages.
//!
//! Gateways and routers talk only through this trait. [`NatsBus`] is the cluster
//! implementation; [`MemoryBus`] connects the gateway and router of one standalone process
//! with the same semantics (subjects, queue groups, request/reply), so both modes run the
//! same code.

mod drain;
mod memory;
mod nats;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use thiserror::Error;
use tokio::sync::watch;

pub use drain::Drainer;
pub use memory::{MEMORY_MAX_PAYLOAD, MemoryBus};
pub use nats::NatsBus;

/// Why a bus operation failed. All of them are temporary from a client's point of view.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BusError {
    #[error("the message bus is not connected")]
    NotConnected,
    #[error("no router answered in time")]
    Timeout,
    #[error("no router is running")]
    NoResponders,
    #[error("a message of {size} bytes exceeds the bus's max_payload of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The bus client failed at `operation`, for a reason only its message tells.
    #[error("message bus: {operation} failed: {message}")]
    Failed {
        operation: Operation,
        message: String,
    },
}

/// What the bus was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Connect,
    Publish,
    Subscribe,
    Request,
    /// A round trip to the server, which confirms what was sent before it.
    RoundTrip,
}

impl Operation {
    pub const ALL: [Self; 5] = [
        Self::Connect,
        Self::Publish,
        Self::Subscribe,
        Self::Request,
        Self::RoundTrip,
    ];

    /// A short name for metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Request => "request",
            Self::RoundTrip => "round_trip",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl BusError {
    /// The bus client failed at `operation`.
    pub fn failed(operation: Operation, error: impl std::fmt::Display) -> Self {
        Self::Failed {
            operation,
            message: error.to_string(),
        }
    }

    /// A short name for metrics labels: the error, or the operation that failed.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Timeout => "timeout",
            Self::NoResponders => "no_responders",
            Self::TooLarge { .. } => "too_large",
            Self::Failed { operation, .. } => operation.label(),
        }
    }
}

/// One message received from a subscription.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub payload: Bytes,
    /// Where to send the answer, for requests.
    pub reply: Option<String>,
}

/// A stream of messages on one subject. Dropping it unsubscribes at once; draining it
/// (see [`drainer`](Self::drainer)) lets it end gracefully.
pub struct Subscription {
    inner: BoxStream<'static, BusMessage>,
    drainer: Drainer,
}

impl Subscription {
    fn new(source: impl drain::Source) -> Self {
        let drainer = Drainer::default();
        // Fused: a subscription that ended stays ended, however often it is polled.
        let inner = drain::stream(source, drainer.clone()).fuse().boxed();
        Self { inner, drainer }
    }

    /// A handle that drains the subscription while something else consumes it: no new
    /// message reaches it (in a queue group, the others get them), the ones it has already
    /// received still come out, and then the stream ends.
    pub fn drainer(&self) -> Drainer {
        self.drainer.clone()
    }
}

impl Stream for Subscription {
    type Item = BusMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BusMessage>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends `payload` to every subscriber of `subject` (one per queue group).
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError>;

    /// Sends a request to one subscriber of `subject` and waits for its reply.
    async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError>;

    /// Receives every message published on `subject`.
    async fn subscribe(&self, subject: String) -> Result<Subscription, BusError>;

    /// Receives a share of the messages on `subject`: each goes to one member of `queue`.
    async fn queue_subscribe(
        &self,
        subject: String,
        queue: String,
    ) -> Result<Subscription, BusError>;

    /// Returns once the server has processed everything sent before, subscriptions included:
    /// from then on, every message published on a subscribed subject reaches us.
    async fn flush(&self) -> Result<(), BusError>;

    /// Whether the bus can carry messages right now. Publishes are refused while it cannot,
    /// rather than buffered with an unknown fate.
    fn is_connected(&self) -> bool;

    /// The largest payload one message may carry, in bytes: what the NATS server
    /// announced (`max_payload`), or [`MEMORY_MAX_PAYLOAD`] in process. Larger messages
    /// are refused; publications are sized to fit.
    fn max_payload(&self) -> usize;

    /// Counts the connections the bus has made. It changes after every reconnection, when
    /// messages sent during the outage may have been lost: gateways then catch up from
    /// history.
    fn connections(&self) -> watch::Receiver<u64>;
}
