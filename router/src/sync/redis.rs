//! [`DocumentStore`] on Redis: the document in a string key beside its channel's stream
//! and meta hash (all three hash-tagged to the channel), each operation one Lua script.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::types::Value;
use herald_proto::bus::v1::Position;

use super::{Commit, Committed, DocumentStore, Snapshot};
use crate::history::{StoreError, new_epoch};
use crate::metrics::{Operation, SYNC_COMMIT, SYNC_DELETE, SYNC_SNAPSHOT};
use crate::redis::{Redis, Script, millis};

/// Sync documents in Redis, beside the history.
pub struct RedisDocuments {
    redis: Redis,
    commit: Script,
    snapshot: Script,
    delete: Script,
}

impl RedisDocuments {
    /// The document of `channel` (its position alone unless `doc`), kept `ttl` longer.
    async fn read(&self, channel: &str, ttl: Duration, doc: bool) -> Result<Snapshot, StoreError> {
        let op = Operation::start(SYNC_SNAPSHOT);
        let keys = self.redis.keys();
        let reply: Vec<Value> = self
            .snapshot
            .call()
            .key(keys.history(channel))
            .key(keys.meta(channel))
            .key(keys.document(channel))
            .arg(millis(ttl))
            .arg(if doc { "1" } else { "0" })
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        match reply.as_slice() {
            [epoch, rev, doc] => snapshot(epoch, rev, doc),
            _ => None,
        }
        .ok_or_else(|| malformed("snapshot"))
    }

    /// Documents in `redis` (shared with the other stores: one pipelined client).
    pub fn new(redis: &Redis) -> Self {
        Self {
            redis: redis.clone(),
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
    value.as_string()
}

fn bytes(value: &Value) -> Option<Bytes> {
    value.as_bytes().map(Bytes::copy_from_slice)
}

fn position(epoch: &Value, rev: &Value) -> Option<Position> {
    Some(Position {
        offset: rev.as_u64()?,
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
    let index = usize::try_from(index.as_u64()?).ok()?;
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
        let keys = self.redis.keys();
        let mut call = self.commit.call();
        call.key(keys.history(channel))
            .key(keys.meta(channel))
            .key(keys.document(channel))
            .arg(&commit.expected.epoch)
            .arg(commit.expected.offset)
            .arg(commit.doc.clone())
            .arg(retention.patches)
            .arg(millis(retention.ttl))
            .arg(new_epoch())
            .arg(millis(retention.idempotency_ttl));
        for entry in &commit.patches {
            let key = entry.idempotency_key.as_deref();
            let publisher = entry.publisher.clone().unwrap_or_default();
            // Every patch gets a key slot, so that patch i's record is always KEYS[3 + i].
            call.key(keys.idempotency(channel, key.unwrap_or("")))
                .arg(entry.data.clone())
                .arg(if key.is_some() { "1" } else { "0" })
                .arg(publisher.client)
                .arg(publisher.user)
                .arg(publisher.info)
                .arg(entry.accepted_at_us);
        }
        // A document's revisions are publications: acknowledged as they are.
        let reply: Vec<Value> = call
            .run_replicated(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
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
        let keys = self.redis.keys();
        let epoch: String = self
            .delete
            .call()
            .key(keys.history(channel))
            .key(keys.meta(channel))
            .key(keys.document(channel))
            .arg(new_epoch())
            .arg(millis(ttl))
            .run_replicated(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        Ok(Position { offset: 0, epoch })
    }
}
