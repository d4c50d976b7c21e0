//! Presence: which clients are subscribed to which channels, cluster-wide.
//!
//! Gateways report joins and leaves as they happen, and every subscriber they still hold
//! in periodic heartbeats. Each entry lives `presence.ttl` from its last report, so the
//! clients of a gateway that died vanish within that time without anyone telling. Entries
//! are stored by channel: in Redis for a cluster, in memory for standalone mode.

mod memory;
mod redis;
mod service;

use std::time::Duration;

use async_trait::async_trait;
use herald_proto::bus::v1::ClientInfo;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;
pub use service::PresenceService;

use crate::history::StoreError;

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds `client` to `channel`, or refreshes it, for `ttl` from now; returns whether it
    /// was not present before (a join others may be told about).
    async fn add(
        &self,
        channel: &str,
        client: &ClientInfo,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Removes `client` from `channel`; returns whether it was present.
    async fn remove(&self, channel: &str, client: &str) -> Result<bool, StoreError>;

    /// The clients present on `channel`, without expired ones.
    async fn list(&self, channel: &str) -> Result<Vec<ClientInfo>, StoreError>;
}
