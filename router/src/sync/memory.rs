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
        let key = commit
            .patch
            .idempotency_key
            .clone()
            .map(|key| (channel.to_string(), key));
        if let Some(key) = &key
            && let Some((position, expires)) = state.document_keys.get(key)
            && *expires > now
        {
            let position = position.clone();
            let current = snapshot_of(state.live(channel, now));
            let patch = (current.position.epoch == position.epoch)
                .then(|| kept_patch(&state, channel, position.offset, now))
                .flatten();
            return Ok(Committed::Duplicate { position, patch });
        }
        let current = snapshot_of(state.live(channel, now));
        let other_epoch = commit
            .base_epoch
            .as_ref()
            .is_some_and(|epoch| *epoch != current.position.epoch);
        if commit
            .base_rev
            .is_some_and(|base| base != current.position.offset || other_epoch)
        {
            return Ok(Committed::Conflict(current));
        }
        if current.position != commit.expected {
            return Ok(Committed::Stale(current));
        }
        let retention = commit.retention;
        let limits = Limits {
            size: retention.patches,
            ttl: retention.ttl,
            meta_ttl: retention.ttl,
            idempotency_ttl: retention.idempotency_ttl,
        };
        let patch = Entry {
            idempotency_key: None,
            ..commit.patch
        };
        let appended = state.append_one(channel, patch, limits, now);
        state.stream(channel, now, retention.ttl).document = Some(commit.doc);
        let position = Position {
            offset: appended.offset,
            epoch: appended.epoch,
        };
        if let Some(key) = key {
            let expires = now + retention.idempotency_ttl;
            state.document_keys.insert(key, (position.clone(), expires));
        }
        Ok(Committed::Applied(position))
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
