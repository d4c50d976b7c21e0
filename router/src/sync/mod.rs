//! Sync documents: a JSON object per channel with a revision, patched atomically.
//!
//! A document lives beside its channel's history: its patches *are* the channel's stream
//! (revision = offset, the same epoch), so gateways order, gap-fill and replay patches with
//! the machinery they use for publications. What this module adds is the document itself,
//! kept next to the stream, and the compare-and-set that applies a patch: the router
//! computes the new document and the store commits it only if the document is still at the
//! revision the router started from, together with the patches, in one atomic step.
//!
//! - [`document`]: pure JSON work: parsing and applying a merge patch, within the limits.
//! - [`DocumentStore`]: the store's side, implemented by both history stores (in
//!   [`redis`] with Lua scripts, in [`memory`] under the history's lock).
//! - [`service`]: the router queue group's sync requests: read, patch, delete; `slots`:
//!   the patches of one document on one router waiting for each other.

pub mod document;
mod memory;
mod redis;
pub mod service;
mod slots;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::bus::v1::{Position, SyncCommitted, SyncConflict};

use crate::history::{Entry, StoreError};

pub use memory::MemoryDocuments;
pub use redis::RedisDocuments;
pub use service::SyncService;

/// What a patch gives: its revision, or the conflict that kept it from being applied.
pub type PatchOutcome = Result<SyncCommitted, SyncConflict>;

/// A document as stored: JSON text of an object, at a revision of an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub position: Position,
    pub doc: Bytes,
}

impl Snapshot {
    /// The document of a channel that has none: the empty object, at revision 0 of no epoch.
    pub fn empty() -> Self {
        Self {
            position: Position::default(),
            doc: Bytes::from_static(b"{}"),
        }
    }
}

/// How long a document and its patches are kept, and how many patches.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Patches kept for catch-up.
    pub patches: u32,
    /// Everything is dropped this long after the document was last patched or read.
    pub ttl: Duration,
    pub idempotency_ttl: Duration,
}

/// Patches to commit together, in order.
#[derive(Debug, Clone)]
pub struct Commit {
    pub channel: String,
    /// The position the new document was computed from: committed only if the document is
    /// still there.
    pub expected: Position,
    /// The document after the patches.
    pub doc: Bytes,
    /// The patches, as they are stored and delivered, each with who sent it and its
    /// idempotency key. None: only check that the document is at `expected`.
    pub patches: Vec<Entry>,
    pub retention: Retention,
}

/// What became of a [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Applied: the first patch has this position, the others the revisions after it.
    /// (Without patches: the document is at `expected`, and this is the revision after.)
    Applied(Position),
    /// The idempotency key of patch `index` had been seen: nothing was written. That key's
    /// patch is at `position`, and comes back while it is kept (to deliver it again).
    Duplicate {
        index: usize,
        position: Position,
        patch: Option<Bytes>,
    },
    /// The document moved on since `expected`: nothing was written; compute again from
    /// this one.
    Stale(Snapshot),
}

#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// The document of `channel` (the empty one if it has none); keeps it `ttl` longer.
    async fn snapshot(&self, channel: &str, ttl: Duration) -> Result<Snapshot, StoreError>;

    /// Where the document of `channel` is, without reading it; keeps it `ttl` longer.
    async fn keep(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError>;

    /// Commits patches, atomically with their document: see [`Committed`].
    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError>;

    /// Deletes the document and its patches; the channel starts a new epoch, at revision
    /// 0, which is returned.
    async fn delete(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError>;
}
