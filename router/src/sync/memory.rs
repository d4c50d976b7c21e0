//! [`DocumentStore`] in process memory, for standalone mode: the document is kept in its
//! channel's stream of the [`MemoryHistory`], so one lock makes each operation atomic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::bus::v1::Position;
use tokio::time::Instant;

use super::{Commit, Committed, DocumentStore, Snapshot};
use crate::history::memory::{State, Stream};
use crate::history::{Entry, Limits, MemoryHistory, StoreError};

/// Sync documents in a [`MemoryHistory`].
pub struct MemoryDocuments {
    history: Arc<MemoryHistory>,
}

impl MemoryDocuments {
    pub fn new(history: Arc<MemoryHistory>) -> Self {
        Self { history }
    }
}

fn snapshot_of(stream: Option<&Stream>) -> Snapshot {
    match stream {
        Some(stream) => Snapshot {
            position: stream.position(),
            doc: stream
                .document
                .clone()
                .unwrap_or_else(|| Snapshot::empty().doc),
        },
        None => Snapshot::empty(),
    }
}

/// The patch of revision `rev` of `channel`, while the log keeps it.
fn kept_patch(state: &State, channel: &str, rev: u64, now: Instant) -> Option<Bytes> {
    let stream = state.live(channel, now)?;
    let patch = stream.log.iter().find(|p| p.offset == rev)?;
    Some(patch.data.clone())
}

#[async_trait]
impl DocumentStore for MemoryDocuments {
    async fn snapshot(&self, channel: &str, ttl: Duration) -> Result<Snapshot, StoreError> {
        let now = Instant::now();
        let mut state = self.history.state()?;
        let Some(stream) = state
            .streams
            .get_mut(channel)
            .filter(|stream| stream.meta_expires > now)
        else {
            return Ok(Snapshot::empty());
        };
        stream.log_expires = now + ttl;
        stream.meta_expires = now + ttl;
        Ok(snapshot_of(Some(stream)))
    }

    async fn keep(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError> {
        Ok(self.snapshot(channel, ttl).await?.position)
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        let now = Instant::now();
        let mut state = self.history.state()?;
        state.count_write(now);
        let channel = commit.channel.as_str();
        let current = snapshot_of(state.live(channel, now));
        for (index, patch) in commit.patches.iter().enumerate() {
            let Some(key) = &patch.idempotency_key else {
                continue;
            };
            if let Some((position, expires)) =
                state.document_keys.get(&(channel.to_string(), key.clone()))
                && *expires > now
            {
                let position = position.clone();
                let patch = (current.position.epoch == position.epoch)
                    .then(|| kept_patch(&state, channel, position.offset, now))
                    .flatten();
                return Ok(Committed::Duplicate {
                    index,
                    position,
                    patch,
                });
            }
        }
        if current.position != commit.expected {
            return Ok(Committed::Stale(current));
        }
        if commit.patches.is_empty() {
            let next = Position {
                offset: current.position.offset + 1,
                epoch: current.position.epoch,
            };
            return Ok(Committed::Applied(next));
        }
        let retention = commit.retention;
        let limits = Limits {
            size: retention.patches,
            ttl: retention.ttl,
            meta_ttl: retention.ttl,
            idempotency_ttl: retention.idempotency_ttl,
        };
        let mut applied = None;
        for patch in commit.patches {
            let key = patch.idempotency_key.clone();
            let unkeyed = Entry {
                idempotency_key: None,
                ..patch
            };
            let appended = state.append_one(channel, unkeyed, limits, now);
            let position = Position {
                offset: appended.offset,
                epoch: appended.epoch,
            };
            if let Some(key) = key {
                let expires = now + retention.idempotency_ttl;
                let record = (position.clone(), expires);
                state
                    .document_keys
                    .insert((channel.to_string(), key), record);
            }
            applied.get_or_insert(position);
        }
        state.stream(channel, now, retention.ttl).document = Some(commit.doc);
        Ok(Committed::Applied(applied.unwrap_or_default()))
    }

    async fn delete(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError> {
        let now = Instant::now();
        let mut state = self.history.state()?;
        let stream = Stream::new(now, ttl);
        let position = stream.position();
        state.streams.insert(channel.to_string(), stream);
        Ok(position)
    }
}
