//! Serving one kind of request from the router queue group: many at once, each answered
//! on its reply subject, with a flag that tells readiness checks the subscription is live.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, BusMessage};
use herald_core::subjects::ROUTER_QUEUE;

/// Joins the queue group on `subject` and runs `handle` on every request, up to
/// `concurrency` at once, until `shutdown` completes. `serving` is set while the
/// subscription is live.
pub(crate) async fn serve<F, Fut>(
    bus: &Arc<dyn Bus>,
    subject: String,
    concurrency: usize,
    serving: &AtomicBool,
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
    serving.store(true, Ordering::Release);
    let served = requests.for_each_concurrent(concurrency, handle);
    tokio::select! {
        () = served => tracing::warn!(subject, "request subscription ended"),
        () = shutdown => {}
    }
    serving.store(false, Ordering::Release);
    Ok(())
}

/// Sends `payload` to a request's reply subject, if it has one.
pub(crate) async fn reply(bus: &dyn Bus, to: Option<String>, payload: Vec<u8>) {
    if let Some(to) = to
        && let Err(e) = bus.publish(to, Bytes::from(payload)).await
    {
        tracing::warn!(error = %e, "cannot reply to a gateway");
    }
}
