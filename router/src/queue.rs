//! Serving one kind of request from the router queue group: many at once, each answered
//! on its reply subject, with a flag that tells readiness checks the subscription is live,
//! and a stop that answers every request received before leaving the group.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use herald_core::bus::{Bus, BusError, BusMessage, Drainer};
use herald_core::subjects::ROUTER_QUEUE;

/// A service's seat in the router queue group.
pub(crate) struct Seat {
    /// Requests served at once.
    concurrency: usize,
    /// Set while the subscription is live on the bus.
    serving: AtomicBool,
}

impl Seat {
    pub(crate) fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            serving: AtomicBool::new(false),
        }
    }

    pub(crate) fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Joins the queue group on `subject` and runs `handle` on every request until
    /// `shutdown` completes, then answers the requests it has received and leaves.
    pub(crate) async fn serve<F, Fut>(
        &self,
        bus: &Arc<dyn Bus>,
        subject: String,
        shutdown: impl Future<Output = ()>,
        handle: F,
    ) -> Result<(), BusError>
    where
        F: Fn(BusMessage) -> Fut,
        Fut: Future<Output = ()>,
    {
        let requests = bus
            .queue_subscribe(subject.clone(), ROUTER_QUEUE.into())
            .await?;
        bus.flush().await?;
        self.serving.store(true, Ordering::Release);
        let drainers = [requests.drainer()];
        let handling = Handling {
            bus: bus.as_ref(),
            concurrency: self.concurrency,
            serving: &self.serving,
            drainers: &drainers,
        };
        if !handling.run(requests, shutdown, handle).await {
            tracing::warn!(subject, "request subscription ended");
        }
        Ok(())
    }
}

/// How long a stopping router may take to answer the requests it has received.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Serving requests many at once, and stopping without dropping any.
pub(crate) struct Handling<'a> {
    /// Where the replies go.
    pub(crate) bus: &'a dyn Bus,
    pub(crate) concurrency: usize,
    /// Cleared as soon as the router stops taking requests, for readiness checks.
    pub(crate) serving: &'a AtomicBool,
    /// Of the subscriptions `requests` comes from.
    pub(crate) drainers: &'a [Drainer],
}

impl Handling<'_> {
    /// Runs `handle` on `requests` until `shutdown`, then drains: the subscriptions take no
    /// new request (the queue group's other members get them), and those already received
    /// are answered, within [`STOP_TIMEOUT`]. Returns whether it stopped for `shutdown`
    /// (rather than the subscriptions ending on their own).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        requests: impl Stream<Item = T>,
        shutdown: impl Future<Output = ()>,
        handle: F,
    ) -> bool
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = ()>,
    {
        let served = requests.for_each_concurrent(self.concurrency, handle);
        tokio::pin!(served);
        let stopped = tokio::select! {
            () = &mut served => false,
            () = shutdown => true,
        };
        self.serving.store(false, Ordering::Release);
        if stopped {
            for drainer in self.drainers {
                drainer.drain();
            }
            if tokio::time::timeout(STOP_TIMEOUT, served).await.is_err() {
                tracing::warn!("requests still unanswered when the router stopped");
            }
            // The last replies may still sit in the client's buffer; the process must not
            // exit before the server has them.
            if let Err(e) = self.bus.flush().await {
                tracing::warn!(error = %e, "last replies may be lost");
            }
        }
        stopped
    }
}

/// Sends `payload` to a request's reply subject, if it has one.
pub(crate) async fn reply(bus: &dyn Bus, to: Option<String>, payload: Vec<u8>) {
    if let Some(to) = to
        && let Err(e) = bus.publish(to, Bytes::from(payload)).await
    {
        tracing::warn!(error = %e, "cannot reply to a gateway");
    }
}
