//! [`DocumentStore`] on Redis: the document in a string key beside its channel's stream
//! and meta hash (all three hash-tagged to the channel), each operation one Lua script.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::bus::v1::Position;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::{Commit, Committed, DocumentStore, Snapshot};
use crate::history::redis::{millis, store_error};
use crate::history::{RedisHistory, StoreError, new_epoch};
use crate::keys::Keys;
use crate::metrics::{Operation, SYNC_COMMIT, SYNC_DELETE, SYNC_SNAPSHOT};

/// Sync documents in the Redis of a [`RedisHistory`], on its connection.
pub struct RedisDocuments {
    connection: ConnectionManager,
    keys: Keys,
    commit: Script,
    snapshot: Script,
    delete: Script,
}

impl RedisDocuments {
    /// The document of `channel` (its position alone unless `doc`), kept `ttl` longer.
    async fn read(&self, channel: &str, ttl: Duration, doc: bool) -> Result<Snapshot, StoreError> {
        let op = Operation::start(SYNC_SNAPSHOT);
        let reply: Vec<Value> = self
            .snapshot
            .key(self.keys.history(channel))
            .key(self.keys.meta(channel))
            .key(self.keys.document(channel))
            .arg(millis(ttl))
            .arg(if doc { "1" } else { "0" })
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        match reply.as_slice() {
            [epoch, rev, doc] => snapshot(epoch, rev, doc),
            _ => None,
        }
        .ok_or_else(|| malformed("snapshot"))
    }

    pub fn new(history: &RedisHistory) -> Self {
        Self {
            connection: history.connection(),
            keys: history.keys().clone(),
            commit: Script::new(include_str!("commit.lua")),
            snapshot: Script::new(include_str!("snapshot.lua")),
            delete: Script::new(include_str!("delete.lua")),
        }
    }
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("unreadable reply of the sync {what} script"))
}

fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref(value).ok()
}

fn bytes(value: &Value) -> Option<Bytes> {
    redis::from_redis_value_ref::<Vec<u8>>(value)
        .ok()
        .map(Bytes::from)
}

fn position(epoch: &Value, rev: &Value) -> Option<Position> {
    Some(Position {
        offset: redis::from_redis_value_ref(rev).ok()?,
        epoch: text(epoch)?,
    })
}

/// `{epoch, rev, doc}` as the scripts return a document.
fn snapshot(epoch: &Value, rev: &Value, doc: &Value) -> Option<Snapshot> {
    Some(Snapshot {
        position: position(epoch, rev)?,
        doc: bytes(doc)?,
    })
}

/// `{'applied', epoch, first rev}`.
fn applied(reply: &[Value]) -> Option<Committed> {
    let [_, epoch, rev] = reply else { return None };
    position(epoch, rev).map(Committed::Applied)
}

/// `{'stale', epoch, rev, doc}`.
fn stale(reply: &[Value]) -> Option<Committed> {
    let [_, epoch, rev, doc] = reply else {
        return None;
    };
    snapshot(epoch, rev, doc).map(Committed::Stale)
}

/// `{'duplicate', i (from 1), epoch, rev, patch or ''}`.
fn duplicate(reply: &[Value]) -> Option<Committed> {
    let [_, index, epoch, rev, patch] = reply else {
        return None;
    };
    let index: usize = redis::from_redis_value_ref(index).ok()?;
    let found = snapshot(epoch, rev, patch)?;
    Some(Committed::Duplicate {
        index: index.checked_sub(1)?,
        position: found.position,
        patch: Some(found.doc).filter(|patch| !patch.is_empty()),
    })
}

#[async_trait]
impl DocumentStore for RedisDocuments {
    async fn snapshot(&self, channel: &str, ttl: Duration) -> Result<Snapshot, StoreError> {
        self.read(channel, ttl, true).await
    }

    async fn keep(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError> {
        Ok(self.read(channel, ttl, false).await?.position)
    }

    async fn commit(&self, commit: Commit) -> Result<Committed, StoreError> {
        let op = Operation::start(SYNC_COMMIT);
        let channel = &commit.channel;
        let retention = commit.retention;
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .key(self.keys.history(channel))
            .key(self.keys.meta(channel))
            .key(self.keys.document(channel))
            .arg(&commit.expected.epoch)
            .arg(commit.expected.offset)
            .arg(commit.doc.as_ref())
            .arg(retention.patches)
            .arg(millis(retention.ttl))
            .arg(new_epoch())
            .arg(millis(retention.idempotency_ttl));
        for entry in &commit.patches {
            let key = entry.idempotency_key.as_deref();
            let publisher = entry.publisher.clone().unwrap_or_default();
            // Every patch gets a key slot, so that patch i's record is always KEYS[3 + i].
            invocation
                .key(self.keys.idempotency(channel, key.unwrap_or("")))
                .arg(entry.data.as_ref())
                .arg(if key.is_some() { "1" } else { "0" })
                .arg(&publisher.client)
                .arg(&publisher.user)
                .arg(publisher.info.as_ref())
                .arg(entry.accepted_at_us);
        }
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        let outcome = match reply.first().and_then(text).as_deref() {
            Some("applied") => applied(&reply),
            Some("stale") => stale(&reply),
            Some("duplicate") => duplicate(&reply),
            _ => None,
        };
        outcome.ok_or_else(|| malformed("commit"))
    }

    async fn delete(&self, channel: &str, ttl: Duration) -> Result<Position, StoreError> {
        let op = Operation::start(SYNC_DELETE);
        let epoch: String = self
            .delete
            .key(self.keys.history(channel))
            .key(self.keys.meta(channel))
            .key(self.keys.document(channel))
            .arg(new_epoch())
            .arg(millis(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        Ok(Position { offset: 0, epoch })
    }
}
