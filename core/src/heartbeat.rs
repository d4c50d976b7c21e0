//! Node heartbeats: every node tells the cluster, every `node.heartbeat`, that it is alive
//! and how busy it is. Routers keep what they hear for the server API (`Info`), and count
//! on it to know how many gateways should answer a control command.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::bus::v1::NodeStatus;
use prost::Message;

use crate::bus::Bus;
use crate::subjects::Subjects;

/// Sends `status()` on the nodes subject every `interval`, until `stop` completes.
pub async fn run(
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    interval: Duration,
    status: impl Fn() -> NodeStatus,
    stop: impl Future<Output = ()>,
) {
    let subject = subjects.nodes();
    let mut beat = tokio::time::interval(interval);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            () = &mut stop => return,
        }
        let payload = Bytes::from(status().encode_to_vec());
        if let Err(e) = bus.publish(subject.clone(), payload).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}
