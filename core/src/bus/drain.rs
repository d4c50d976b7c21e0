//! Draining a subscription: it takes no new message (in a queue group, the other members
//! get them), yields the ones it has already received, and then ends. A stopping router
//! drains its request subscriptions so that it leaves the queue group without dropping a
//! request.
//!
//! Every bus message passes through here, so the cost while no drain is asked for is one
//! atomic load per message; only an idle subscription waits on the drain signal.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::Notify;

use super::BusMessage;

/// Asks one subscription to drain. Clones ask the same subscription.
#[derive(Clone, Default)]
pub struct Drainer {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    requested: AtomicBool,
    wake: Notify,
}

impl Drainer {
    /// Starts draining; later calls do nothing more.
    pub fn drain(&self) {
        self.shared.requested.store(true, Ordering::Release);
        // Stored as a permit if the subscription is not waiting right now.
        self.shared.wake.notify_one();
    }

    fn requested(&self) -> bool {
        self.shared.requested.load(Ordering::Acquire)
    }
}

/// Where a drainable subscription takes its messages from.
pub(super) trait Source: Send + 'static {
    /// The next message; `None` once the source has ended.
    fn next(&mut self) -> impl Future<Output = Option<BusMessage>> + Send;

    /// Stops new messages from arriving: those already received still come out of
    /// [`next`](Self::next), which then ends.
    fn stop(&mut self) -> impl Future<Output = ()> + Send;
}

/// The messages of `source`, stopped once when `drainer` asks.
pub(super) fn stream(source: impl Source, drainer: Drainer) -> BoxStream<'static, BusMessage> {
    futures_util::stream::unfold(
        (source, drainer, false),
        |(mut source, drainer, mut stopped)| async move {
            loop {
                if !stopped && drainer.requested() {
                    source.stop().await;
                    stopped = true;
                }
                tokio::select! {
                    // Messages first: while they flow, the drain signal is never polled.
                    biased;
                    message = source.next() => {
                        return message.map(|m| (m, (source, drainer, stopped)));
                    }
                    () = drainer.shared.wake.notified(), if !stopped => {}
                }
            }
        },
    )
    .boxed()
}
