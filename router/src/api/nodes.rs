//! The nodes of the cluster as a router hears their heartbeats: what `Info` lists, and
//! where each gateway's control service is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError};
use herald_proto::bus::v1::NodeStatus;
use prost::Message;
use tokio::time::Instant;

/// Heartbeats a node may miss before it counts as gone.
const MISSED_BEATS: u32 = 3;

pub struct Nodes {
    seen: Mutex<HashMap<String, (NodeStatus, Instant)>>,
    /// How long a node stays listed after its last heartbeat.
    ttl: Duration,
}

impl Nodes {
    pub fn new(heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::default(),
            ttl: heartbeat * MISSED_BEATS,
        })
    }

    fn seen(&self) -> MutexGuard<'_, HashMap<String, (NodeStatus, Instant)>> {
        // Every step leaves the map consistent, so a poisoned lock is still sound.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listens to heartbeats on `subject` until the subscription ends.
    pub async fn listen(
        self: Arc<Self>,
        bus: Arc<dyn Bus>,
        subject: String,
    ) -> Result<(), BusError> {
        let mut heartbeats = bus.subscribe(subject).await?;
        tokio::spawn(async move {
            while let Some(message) = heartbeats.next().await {
                if let Ok(status) = NodeStatus::decode(message.payload) {
                    self.seen()
                        .insert(status.id.clone(), (status, Instant::now()));
                }
            }
        });
        Ok(())
    }

    /// The nodes heard from within the TTL, by id, each with the time since its last
    /// heartbeat. Older ones are forgotten.
    pub fn live(&self) -> Vec<(NodeStatus, Duration)> {
        let now = Instant::now();
        let mut seen = self.seen();
        seen.retain(|_, (_, at)| now.duration_since(*at) <= self.ttl);
        let mut live: Vec<_> = seen
            .values()
            .map(|(status, at)| (status.clone(), now.duration_since(*at)))
            .collect();
        live.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        live
    }
}
