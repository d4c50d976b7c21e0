//! Serving one kind of request from the router queue group: many at once, each answered
//! on its reply subject, with a flag that tells readiness checks the subscription is live.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, BusMessage};
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
    /// `shutdown` completes, then waits for the requests in hand.
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
        // On shutdown, take no new request but finish those in hand: an append whose reply
        // is lost would leave its publisher waiting for a timeout.
        let stopping = async {
            shutdown.await;
            self.serving.store(false, Ordering::Release);
        };
        requests
            .take_until(stopping)
            .for_each_concurrent(self.concurrency, handle)
            .await;
        if self.serving.swap(false, Ordering::AcqRel) {
            tracing::warn!(subject, "request subscription ended");
        }
        Ok(())
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
