//! Serving requests from the router queue group: a [`QueueService`] says how to answer
//! them, and its [`Seat`] serves many at once, each answered on its reply subject, with a
//! flag that tells readiness checks the subscriptions are live, and a stop that answers
//! every request received before leaving the group.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use herald_core::bus::{Bus, BusError, BusMessage, Drainer};
use herald_core::subjects::ROUTER_QUEUE;

/// A service of the router queue group: it answers the requests of its subjects, each on
/// the request's reply subject. Every router service is one, served by a [`Seat`].
pub(crate) trait QueueService: Send + Sync + 'static {
    /// The subjects whose requests it answers.
    fn subjects(&self) -> Vec<String>;

    /// The encoded reply to one request that arrived on `subjects()[subject]`.
    fn answer(&self, subject: usize, request: Bytes) -> impl Future<Output = Vec<u8>> + Send;
}

/// A service's seat in the router queue group.
pub(crate) struct Seat {
    /// Requests served at once.
    concurrency: usize,
    /// Set while the subscriptions are live on the bus.
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

    /// Joins the queue group on every subject of `service` and answers requests until
    /// `shutdown` completes, then answers the requests it has received and leaves. Returns
    /// whether it stopped for `shutdown` (rather than the subscriptions ending).
    pub(crate) async fn serve<S: QueueService>(
        &self,
        service: &S,
        bus: &Arc<dyn Bus>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<bool, BusError> {
        let subjects = service.subjects();
        let mut subscriptions = Vec::with_capacity(subjects.len());
        for subject in &subjects {
            let subscription = bus
                .queue_subscribe(subject.clone(), ROUTER_QUEUE.into())
                .await?;
            subscriptions.push(subscription);
        }
        bus.flush().await?;
        self.serving.store(true, Ordering::Release);
        let drainers: Vec<Drainer> = subscriptions.iter().map(|s| s.drainer()).collect();
        let requests = futures_util::stream::select_all(
            subscriptions
                .into_iter()
                .enumerate()
                .map(|(subject, requests)| requests.map(move |request| (subject, request))),
        );
        let handling = Handling {
            bus: bus.as_ref(),
            concurrency: self.concurrency,
            serving: &self.serving,
            drainers: &drainers,
        };
        let answer = |(subject, request): (usize, BusMessage)| async move {
            let reply = service.answer(subject, request.payload).await;
            send_reply(bus.as_ref(), request.reply, reply).await;
        };
        let stopped = handling.run(requests, shutdown, answer).await;
        if !stopped {
            tracing::warn!(?subjects, "request subscriptions ended");
        }
        Ok(stopped)
    }
}

/// How long a stopping router may take to answer the requests it has received.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Serving requests many at once, and stopping without dropping any.
struct Handling<'a> {
    /// Where the replies go.
    bus: &'a dyn Bus,
    concurrency: usize,
    /// Cleared as soon as the router stops taking requests, for readiness checks.
    serving: &'a AtomicBool,
    /// Of the subscriptions `requests` comes from.
    drainers: &'a [Drainer],
}

impl Handling<'_> {
    /// Runs `handle` on `requests` until `shutdown`, then drains: the subscriptions take no
    /// new request (the queue group's other members get them), and those already received
    /// are answered, within [`STOP_TIMEOUT`]. Returns whether it stopped for `shutdown`
    /// (rather than the subscriptions ending on their own).
    async fn run<T, F, Fut>(
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
async fn send_reply(bus: &dyn Bus, to: Option<String>, payload: Vec<u8>) {
    if let Some(to) = to
        && let Err(e) = bus.publish(to, Bytes::from(payload)).await
    {
        tracing::warn!(error = %e, "cannot reply to a gateway");
    }
}
