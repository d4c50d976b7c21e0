//! [`HistoryStore`] on Redis: one stream per channel, written by a Lua script.
//!
//! Offsets are stream ids (`<offset>-0`), so "after offset N" is a plain `XRANGE`. All
//! requests share one multiplexed connection, so concurrent appends are pipelined rather
//! than sent one at a time; the connection manager reconnects after Redis restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::bus::v1::{Attachments, ClientInfo, Position, Publication};
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use super::{
    ACTIVITY_FLUSH, Append, Appended, HistoryStore, Page, Query, StoreError, cut, new_epoch, now_ms,
};
use crate::keys::Keys;
use crate::metrics::{HISTORY_APPEND, HISTORY_READ, Operation, PING};

/// What a publication's encoding adds to its field values, at most, besides its channel
/// name; the read script counts it per entry.
const ENTRY_OVERHEAD: usize = 64;

/// History in Redis.
pub struct RedisHistory {
    connection: ConnectionManager,
    keys: Keys,
    append: Script,
    read: Script,
    /// Channel activity of the appends since the last flush: channel -> when its history
    /// expires (Unix ms).
    activity: Arc<Mutex<HashMap<String, u64>>>,
}

/// Writes the channel activity gathered by appends every [`ACTIVITY_FLUSH`], in one
/// round trip, and drops the records of histories that expired; ends with the store.
async fn flush_activity(
    activity: Weak<Mutex<HashMap<String, u64>>>,
    mut connection: ConnectionManager,
    key: String,
) {
    let mut tick = tokio::time::interval(ACTIVITY_FLUSH);
    loop {
        tick.tick().await;
        let Some(activity) = activity.upgrade() else {
            return;
        };
        let pending = std::mem::take(&mut *activity.lock().unwrap_or_else(|e| e.into_inner()));
        drop(activity);
        if pending.is_empty() {
            continue;
        }
        let mut add = redis::cmd("ZADD");
        add.arg(&key);
        for (channel, expires) in &pending {
            add.arg(*expires).arg(channel);
        }
        let mut trim = redis::cmd("ZREMRANGEBYSCORE");
        trim.arg(&key).arg("-inf").arg(format!("({}", now_ms()));
        let written: Result<(u64, u64), _> = redis::pipe()
            .add_command(add)
            .add_command(trim)
            .query_async(&mut connection)
            .await;
        if let Err(e) = written {
            // A consumer finds these channels through the live feed, or the next append.
            tracing::warn!(channels = pending.len(), error = %e, "channel activity not recorded");
        }
    }
}

/// A reply that does not read as what Herald's scripts return.
fn unreadable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed(e.to_string())
}

/// A Redis error by what it means for the caller.
pub(crate) fn store_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return StoreError::Unavailable(e.to_string());
    }
    match e.kind() {
        redis::ErrorKind::UnexpectedReturnType | redis::ErrorKind::Parse => {
            StoreError::Malformed(e.to_string())
        }
        _ => StoreError::Refused(e.to_string()),
    }
}

/// A Redis expiry in milliseconds; at least 1, since 0 would delete the key.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl RedisHistory {
    /// Connects to `url`. Fails if Redis cannot be reached now; later outages are survived
    /// by reconnecting.
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(store_error)?;
        let keys = Keys::new(key_prefix);
        let activity = Arc::default();
        let flusher = flush_activity(
            Arc::downgrade(&activity),
            connection.clone(),
            keys.activity(),
        );
        tokio::spawn(flusher);
        Ok(Self {
            connection,
            keys,
            append: Script::new(include_str!("append.lua")),
            read: Script::new(include_str!("read.lua")),
            activity,
        })
    }
}

impl RedisHistory {
    /// The shared connection, for the router's other Redis stores.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// The keys it uses, for the stores that live beside it.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// Turns one XRANGE entry (`[id, [field, value, …]]`) into a publication.
fn parse_entry(channel: &str, epoch: &str, entry: &Value) -> Option<Publication> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let id: String = redis::from_redis_value_ref(id).ok()?;
    let offset = id.split('-').next()?.parse().ok()?;
    let mut publication = Publication {
        channel: channel.to_string(),
        offset,
        epoch: epoch.to_string(),
        ..Default::default()
    };
    let mut publisher = ClientInfo::default();
    for pair in fields.chunks_exact(2) {
        let Value::BulkString(value) = &pair[1] else {
            continue;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match redis::from_redis_value_ref::<String>(&pair[0])
            .ok()?
            .as_str()
        {
            "d" => publication.data = Bytes::copy_from_slice(value),
            "o" => publisher.client = text(),
            "u" => publisher.user = text(),
            "i" => publisher.info = Bytes::copy_from_slice(value),
            "a" => publication.attachments = Attachments::decode(value.as_slice()).ok()?.parts,
            "t" => {
                publication.accepted_at_us = std::str::from_utf8(value).ok()?.parse().ok()?;
            }
            _ => {}
        }
    }
    publication.origin = publisher.client.clone();
    publication.publisher = (!publisher.client.is_empty()).then_some(publisher);
    Some(publication)
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn append(&self, append: Append) -> Result<Vec<Appended>, StoreError> {
        let op = Operation::start(HISTORY_APPEND);
        let limits = append.limits;
        let channel = &append.channel;
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.keys.history(channel))
            .key(self.keys.meta(channel))
            .arg(limits.size)
            .arg(millis(limits.ttl))
            .arg(millis(limits.meta_ttl.max(limits.ttl)))
            .arg(new_epoch())
            .arg(millis(limits.idempotency_ttl));
        for entry in &append.entries {
            let key = entry.idempotency_key.as_deref();
            let publisher = entry.publisher.clone().unwrap_or_default();
            let attachments = match entry.attachments.is_empty() {
                true => Vec::new(),
                false => Attachments {
                    parts: entry.attachments.clone(),
                }
                .encode_to_vec(),
            };
            // Every entry gets a key slot, so that entry i's record is always KEYS[2 + i].
            invocation
                .key(self.keys.idempotency(channel, key.unwrap_or("")))
                .arg(entry.data.as_ref())
                .arg(&publisher.client)
                .arg(&publisher.user)
                .arg(publisher.info.as_ref())
                .arg(attachments.as_slice())
                .arg(if key.is_some() { "1" } else { "0" })
                .arg(entry.accepted_at_us);
        }
        let reply: Vec<Value> = invocation
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        // Not the script's: the index is one key for every channel, which a script of one
        // channel's keys must not touch (Redis Cluster slots); and written in batches.
        let expires = now_ms() + millis(limits.ttl);
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), expires);
        let malformed = || StoreError::Malformed(format!("append reply for {channel}"));
        let (epoch, results) = reply.split_first().ok_or_else(malformed)?;
        let epoch: String = redis::from_redis_value_ref(epoch).map_err(unreadable)?;
        if results.len() != 2 * append.entries.len() {
            return Err(malformed());
        }
        results
            .chunks_exact(2)
            .map(|pair| {
                let offset: u64 = redis::from_redis_value_ref(&pair[0]).map_err(unreadable)?;
                let duplicate: u8 = redis::from_redis_value_ref(&pair[1]).map_err(unreadable)?;
                Ok(Appended {
                    offset,
                    epoch: epoch.clone(),
                    duplicate: duplicate == 1,
                })
            })
            .collect()
    }

    async fn read(&self, channel: &str, query: Query) -> Result<Page, StoreError> {
        let op = Operation::start(HISTORY_READ);
        let mode = match (query.since, query.reverse) {
            (None, _) => "latest",
            (Some(_), false) => "after",
            (Some(_), true) => "before",
        };
        let (epoch, top, entries, truncated): (String, u64, Vec<Value>, u8) = self
            .read
            .key(self.keys.history(channel))
            .key(self.keys.meta(channel))
            .arg(mode)
            .arg(query.since.unwrap_or(0))
            .arg(query.limit)
            .arg(if query.reverse { "1" } else { "0" })
            .arg(query.max_bytes)
            .arg(ENTRY_OVERHEAD + channel.len())
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        let mut publications = entries
            .iter()
            .map(|entry| {
                parse_entry(channel, &epoch, entry)
                    .ok_or_else(|| StoreError::Malformed(format!("a history entry in {channel}")))
            })
            .collect::<Result<_, _>>()?;
        // The script counts field values; the exact size of the encoding decides.
        let cut = cut(&mut publications, query.max_bytes);
        Ok(Page {
            publications,
            position: Position { offset: top, epoch },
            truncated: truncated == 1 || cut,
        })
    }

    async fn active_since(&self, since_ms: u64) -> Result<Vec<String>, StoreError> {
        let op = Operation::start(HISTORY_READ);
        let (_, channels): (u64, Vec<String>) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(self.keys.activity())
            .arg("-inf")
            .arg(format!("({}", now_ms()))
            .cmd("ZRANGEBYSCORE")
            .arg(self.keys.activity())
            .arg(since_ms)
            .arg("+inf")
            .query_async(&mut self.connection.clone())
            .await
            .map_err(|e| op.failed(store_error(e)))?;
        Ok(channels)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let op = Operation::start(PING);
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection.clone())
            .await
            .map(|_| ())
            .map_err(|e| op.failed(store_error(e)))
    }
}
