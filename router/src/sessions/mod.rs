//! Socket.IO sessions kept for connection state recovery.
//!
//! When a Socket.IO socket connects, its gateway saves a record of it here (namespace, sid,
//! channels with the positions it joined at) under the socket's private id, and amends it
//! one channel at a time as rooms are joined and left. The record outlives the gateway: a client that lost
//! its connection, even because its gateway was killed, comes back to any gateway, which
//! takes the record (once) and resumes the socket. Records expire `recovery_window` after
//! their holder stopped refreshing them.

mod memory;
mod redis;
mod service;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use memory::MemorySessions;
pub use redis::RedisSessions;
pub use service::SessionService;

use crate::history::StoreError;

/// A record as saved, and the amendments made to it since, in order: each the channel and
/// its new mark, or `None` for a channel the socket left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub record: Bytes,
    pub amendments: Vec<(String, Option<Bytes>)>,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates or replaces the record of `pid`, held by `holder`, for `ttl`.
    async fn save(
        &self,
        pid: &str,
        holder: &str,
        record: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Returns the record of `pid` with its amendments, and deletes it.
    async fn take(&self, pid: &str) -> Result<Option<Stored>, StoreError>;

    /// Amends the record, if `holder` holds it: the mark of `channel` becomes `mark` (an
    /// encoded `Mark`), or goes with `None`; the record is kept for `ttl` from now.
    async fn amend(
        &self,
        pid: &str,
        holder: &str,
        channel: &str,
        mark: Option<Bytes>,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Keeps the record for `ttl` from now, if `holder` still holds it.
    async fn touch(&self, pid: &str, holder: &str, ttl: Duration) -> Result<(), StoreError>;

    /// Deletes the record, if `holder` still holds it.
    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError>;
}
