//! [`HistoryStore`] on Redis: one stream per channel, written by a Lua script.
//!
//! Offsets are stream ids (`<offset>-0`), so "after offset N" is a plain `XRANGE`. All
//! requests share one multiplexed client ([`Redis`]), so concurrent appends are pipelined
//! rather than sent one at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use fred::interfaces::SortedSetsInterface;
use fred::types::Value;
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use herald_proto::bus::v1::{Attachments, ClientInfo, Position, Publication};
use prost::Message;

use super::{
    ACTIVITY_FLUSH, Append, Appended, HistoryStore, Page, Query, StoreError, cut, new_epoch, now_ms,
};
use crate::metrics::{HISTORY_APPEND, HISTORY_READ, Operation, PING};
use crate::redis::{Redis, Script, millis, store_error};

/// What a publication's encoding adds to its field values, at most, besides its channel
/// name; the read script counts it per entry.
const ENTRY_OVERHEAD: usize = 64;

/// History in Redis.
pub struct RedisHistory {
    redis: Redis,
    append: Script,
    read: Script,
    /// Channel activity of the appends since the last flush: channel -> when its history
    /// expires (Unix ms).
    activity: Arc<Mutex<HashMap<String, u64>>>,
}

/// Writes the channel activity gathered by appends every [`ACTIVITY_FLUSH`], in one
/// round trip, and drops the records of histories that expired; ends with the store.
async fn flush_activity(activity: Weak<Mutex<HashMap<String, u64>>>, redis: Redis) {
    let key = redis.keys().activity();
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
        let members: Vec<(f64, Value)> = pending
            .iter()
            .map(|(channel, expires)| (*expires as f64, Value::from(channel.as_str())))
            .collect();
        let pipeline = redis.client().pipeline();
        let written: Result<(u64, u64), _> = async {
            let () = pipeline
                .zadd(&key, None, None, false, false, members)
                .await?;
            let () = pipeline
                .zremrangebyscore(&key, f64::NEG_INFINITY, before_now())
                .await?;
            pipeline.all().await
        }
        .await;
        if let Err(e) = written {
            // A consumer finds these channels through the live feed, or the next append.
            tracing::warn!(channels = pending.len(), error = %e, "channel activity not recorded");
        }
    }
}

/// The score bound "before now" (exclusive), for dropping expired activity.
fn before_now() -> ZRange {
    ZRange {
        kind: ZRangeKind::Exclusive,
        range: ZRangeBound::Score(now_ms() as f64),
    }
}

impl RedisHistory {
    /// History in `redis`; records channel activity in the background while it lives.
    pub fn new(redis: &Redis) -> Self {
        let activity = Arc::default();
        tokio::spawn(flush_activity(Arc::downgrade(&activity), redis.clone()));
        Self {
            redis: redis.clone(),
            append: Script::new(include_str!("append.lua")),
            read: Script::new(include_str!("read.lua")),
            activity,
        }
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
    let id = std::str::from_utf8(id.as_bytes()?).ok()?;
    let offset = id.split('-').next()?.parse().ok()?;
    let mut publication = Publication {
        channel: channel.to_string(),
        offset,
        epoch: epoch.to_string(),
        ..Default::default()
    };
    let mut publisher = ClientInfo::default();
    for pair in fields.chunks_exact(2) {
        let Some(value) = pair[1].as_bytes() else {
            continue;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match pair[0].as_bytes()? {
            b"d" => publication.data = Bytes::copy_from_slice(value),
            b"o" => publisher.client = text(),
            b"u" => publisher.user = text(),
            b"i" => publisher.info = Bytes::copy_from_slice(value),
            b"a" => publication.attachments = Attachments::decode(value).ok()?.parts,
            b"t" => {
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
        let keys = self.redis.keys();
        let mut call = self.append.call();
        call.key(keys.history(channel))
            .key(keys.meta(channel))
            .arg(limits.size)
            .arg(millis(limits.ttl))
            .arg(millis(limits.meta_ttl.max(limits.ttl)))
            .arg(new_epoch())
            .arg(millis(limits.idempotency_ttl));
        for entry in &append.entries {
            let key = entry.idempotency_key.as_deref();
            let publisher = entry.publisher.clone().unwrap_or_default();
            let attachments = match entry.attachments.is_empty() {
                true => Bytes::new(),
                false => Attachments {
                    parts: entry.attachments.clone(),
                }
                .encode_to_vec()
                .into(),
            };
            // Every entry gets a key slot, so that entry i's record is always KEYS[2 + i].
            call.key(keys.idempotency(channel, key.unwrap_or("")))
                .arg(entry.data.clone())
                .arg(publisher.client)
                .arg(publisher.user)
                .arg(publisher.info)
                .arg(attachments)
                .arg(if key.is_some() { "1" } else { "0" })
                .arg(entry.accepted_at_us);
        }
        // Acknowledged only once the replicas asked for hold it (`redis.wait_replicas`).
        let reply = call.run_replicated::<Vec<Value>>(&self.redis).await;
        // Not the script's: the index is one key for every channel, which a script of one
        // channel's keys must not touch (Redis Cluster slots); and written in batches.
        // Recorded even if the append failed, as it may have run all the same.
        let expires = now_ms() + millis(limits.ttl);
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), expires);
        let reply = reply.map_err(|e| op.failed(e))?;
        let malformed = || StoreError::Malformed(format!("append reply for {channel}"));
        let (epoch, results) = reply.split_first().ok_or_else(malformed)?;
        let epoch = epoch.as_string().ok_or_else(malformed)?;
        if results.len() != 2 * append.entries.len() {
            return Err(malformed());
        }
        results
            .chunks_exact(2)
            .map(|pair| {
                let offset = pair[0].as_u64().ok_or_else(malformed)?;
                let duplicate = pair[1].as_u64().ok_or_else(malformed)?;
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
        let keys = self.redis.keys();
        let (epoch, top, entries, truncated): (String, u64, Vec<Value>, u8) = self
            .read
            .call()
            .key(keys.history(channel))
            .key(keys.meta(channel))
            .arg(mode)
            .arg(query.since.unwrap_or(0))
            .arg(query.limit)
            .arg(if query.reverse { "1" } else { "0" })
            .arg(query.max_bytes)
            .arg(ENTRY_OVERHEAD + channel.len())
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
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
        let key = self.redis.keys().activity();
        let pipeline = self.redis.client().pipeline();
        let read: Result<(u64, Vec<String>), _> = async {
            let () = pipeline
                .zremrangebyscore(&key, f64::NEG_INFINITY, before_now())
                .await?;
            let () = pipeline
                .zrangebyscore(&key, since_ms as f64, f64::INFINITY, false, None)
                .await?;
            pipeline.all().await
        }
        .await;
        let (_, channels) = read.map_err(|e| op.failed(store_error(e)))?;
        Ok(channels)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let op = Operation::start(PING);
        self.redis.ping().await.map_err(|e| op.failed(e))
    }
}
