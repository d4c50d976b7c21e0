//! Channel history: the ordered, bounded log of a channel's publications.
//!
//! A store assigns each publication the channel's next offset, appends it, trims the log to
//! the channel's size, and remembers idempotency keys, all in one atomic step. Each channel's
//! log has an epoch: a random name for one life of the stream. When the stream is lost
//! (expired, or the store's data is gone) the next use starts a new epoch at offset 1, and
//! clients can tell that their old offsets mean nothing there.

pub(crate) mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::{ClientInfo, Position, Publication};
use prost::Message;
use thiserror::Error;

pub use memory::MemoryHistory;
pub use redis::RedisHistory;

/// Why a store (history, Socket.IO sessions, presence) could not do what was asked.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StoreError {
    /// The store did not answer: unreachable, timed out, the connection lost. Temporary.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error: it refused the command (out of memory, a replica
    /// that is read-only, a script that failed). Often temporary, as a failover ends it.
    #[error("store refused the command: {0}")]
    Refused(String),
    /// What the store answered is not what Herald wrote there.
    #[error("malformed store data: {0}")]
    Malformed(String),
}

impl StoreError {
    /// A short name for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Refused(_) => "refused",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// What a client is told: a store that cannot serve now is temporary (retry), data that
/// makes no sense is an internal error.
impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let code = match error {
            StoreError::Unavailable(_) | StoreError::Refused(_) => ErrorCode::Unavailable,
            StoreError::Malformed(_) => ErrorCode::Internal,
        };
        Refusal::new(code, error.to_string())
    }
}

/// Publications to append to one channel, in order.
#[derive(Debug, Clone)]
pub struct Append {
    pub channel: String,
    pub entries: Vec<Entry>,
    pub limits: Limits,
}

/// One publication to append.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub data: Bytes,
    /// Binary attachments, raw.
    pub attachments: Vec<Bytes>,
    /// Who published it; `None` for the server API.
    pub publisher: Option<ClientInfo>,
    pub idempotency_key: Option<String>,
    pub accepted_at_us: u64,
}

/// How much history a channel keeps, and how long its metadata lives.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub size: u32,
    pub ttl: Duration,
    /// Lifetime of the offset counter and epoch after the last publication; at least `ttl`.
    pub meta_ttl: Duration,
    pub idempotency_ttl: Duration,
}

/// Where one entry landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub offset: u64,
    pub epoch: String,
    /// The idempotency key had been seen: nothing was stored, `offset` is the first one's.
    pub duplicate: bool,
}

/// Which publications to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Without it: the newest `limit`. With it: those after it (or before it if `reverse`).
    pub since: Option<u64>,
    pub limit: u32,
    /// Newest first.
    pub reverse: bool,
    /// A page holds the first publications of the selection (in its order) up to this
    /// many bytes, and always at least one.
    pub max_bytes: usize,
}

/// A page of history plus the stream's current position.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub publications: Vec<Publication>,
    pub position: Position,
    /// The selection was cut short at `max_bytes`: the rest follows the last publication.
    pub truncated: bool,
}

/// Bytes a publication takes in a page: its encoding, and what the list adds.
pub fn page_bytes(publication: &Publication) -> usize {
    publication.encoded_len() + 8
}

/// Keeps the first publications that fit in `max_bytes` (at least one); returns whether
/// any had to go.
pub fn cut(publications: &mut Vec<Publication>, max_bytes: usize) -> bool {
    let mut total = 0;
    let fitting = publications
        .iter()
        .position(|p| {
            total += page_bytes(p);
            total > max_bytes
        })
        .map_or(publications.len(), |first_over| first_over.max(1));
    let cut = fitting < publications.len();
    publications.truncate(fitting);
    cut
}

#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends the entries in order, atomically; returns where each one landed, in order.
    async fn append(&self, append: Append) -> Result<Vec<Appended>, StoreError>;

    /// Reads a page (see [`Query`]). Creates nothing: a channel without a stream has the
    /// empty epoch and offset 0, and its first publication starts an epoch at offset 1.
    async fn read(&self, channel: &str, query: Query) -> Result<Page, StoreError>;

    /// At least the channels that got a publication at or after `since_ms` (Unix ms),
    /// among those whose history still holds something; a few more (whose history lives
    /// past `since_ms`) may come too. Each append records its channel with the moment its
    /// history expires, and the record goes with it, so the index is no larger than the
    /// history. (A record may land up to [`ACTIVITY_FLUSH`] after its append.)
    async fn active_since(&self, since_ms: u64) -> Result<Vec<String>, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How often a store writes the channel activity of its appends, together.
pub const ACTIVITY_FLUSH: Duration = Duration::from_millis(100);

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    herald_core::time::unix_micros() / 1000
}

/// A fresh epoch name.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}
