//! [`HistoryStore`] in process memory, for standalone mode.
//!
//! Same semantics as the Redis store: offsets from 1 per epoch, size and TTL trimming,
//! idempotency keys with a TTL. Expired channels are swept lazily, every so many appends.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use herald_proto::bus::v1::{Position, Publication};
use tokio::time::Instant;

use super::{
    Append, Appended, Entry, HistoryStore, Limits, Page, Query, StoreError, cut, new_epoch, now_ms,
};

/// Appends between two sweeps of expired channels and idempotency keys.
const SWEEP_EVERY: u64 = 4096;

pub(crate) struct Stream {
    pub(crate) epoch: String,
    pub(crate) top: u64,
    pub(crate) log: VecDeque<Publication>,
    /// The log is dropped at this moment (history TTL).
    pub(crate) log_expires: Instant,
    /// The whole stream, epoch included, is forgotten at this moment.
    pub(crate) meta_expires: Instant,
    /// The channel's sync document, JSON text, if it has one (see `crate::sync`).
    pub(crate) document: Option<Bytes>,
}

impl Stream {
    pub(crate) fn new(now: Instant, meta_ttl: Duration) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            log: VecDeque::new(),
            log_expires: now,
            meta_expires: now + meta_ttl,
            document: None,
        }
    }

    pub(crate) fn position(&self) -> Position {
        Position {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) streams: HashMap<String, Stream>,
    pub(crate) idempotency: HashMap<(String, String), (u64, Instant)>,
    /// Idempotency keys of sync patches: where each key's patch landed, epoch included,
    /// since a document's epoch changes when it is deleted.
    pub(crate) document_keys: HashMap<(String, String), (Position, Instant)>,
    /// When each channel's history expires, in Unix ms (see `HistoryStore::active_since`).
    activity: HashMap<String, u64>,
    appends: u64,
}

impl State {
    /// The live stream of `channel`, created (new epoch) when missing or expired.
    pub(crate) fn stream(
        &mut self,
        channel: &str,
        now: Instant,
        meta_ttl: Duration,
    ) -> &mut Stream {
        let stream = self
            .streams
            .entry(channel.to_string())
            .or_insert_with(|| Stream::new(now, meta_ttl));
        if stream.meta_expires <= now {
            *stream = Stream::new(now, meta_ttl);
        }
        if stream.log_expires <= now {
            stream.log.clear();
        }
        stream
    }

    /// The stream of `channel` if it has one that has not expired; creates nothing.
    pub(crate) fn live(&self, channel: &str, now: Instant) -> Option<&Stream> {
        self.streams
            .get(channel)
            .filter(|stream| stream.meta_expires > now)
    }

    pub(crate) fn append_one(
        &mut self,
        channel: &str,
        entry: Entry,
        limits: Limits,
        now: Instant,
    ) -> Appended {
        let idempotency = entry.idempotency_key.map(|key| (channel.to_string(), key));
        if let Some(id) = &idempotency
            && let Some(&(offset, expires)) = self.idempotency.get(id)
            && expires > now
        {
            let epoch = self.stream(channel, now, limits.meta_ttl).epoch.clone();
            return Appended {
                offset,
                epoch,
                duplicate: true,
            };
        }
        let stream = self.stream(channel, now, limits.meta_ttl);
        stream.top += 1;
        let offset = stream.top;
        stream.log.push_back(Publication {
            channel: channel.to_string(),
            offset,
            epoch: stream.epoch.clone(),
            data: entry.data,
            attachments: entry.attachments,
            origin: entry
                .publisher
                .as_ref()
                .map(|p| p.client.clone())
                .unwrap_or_default(),
            publisher: entry.publisher,
            accepted_at_us: entry.accepted_at_us,
            membership: None,
        });
        while stream.log.len() > limits.size as usize {
            stream.log.pop_front();
        }
        stream.log_expires = now + limits.ttl;
        stream.meta_expires = now + limits.meta_ttl.max(limits.ttl);
        let epoch = stream.epoch.clone();
        if let Some(id) = idempotency {
            self.idempotency
                .insert(id, (offset, now + limits.idempotency_ttl));
        }
        Appended {
            offset,
            epoch,
            duplicate: false,
        }
    }

    /// Counts one write (an append, a sync commit); every so many, sweeps what expired.
    pub(crate) fn count_write(&mut self, now: Instant) {
        self.appends += 1;
        if self.appends.is_multiple_of(SWEEP_EVERY) {
            self.sweep(now);
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.streams.retain(|_, s| s.meta_expires > now);
        for stream in self.streams.values_mut() {
            if stream.log_expires <= now {
                stream.log.clear();
            }
        }
        self.idempotency.retain(|_, (_, expires)| *expires > now);
        self.document_keys.retain(|_, (_, expires)| *expires > now);
        let now_ms = now_ms();
        self.activity.retain(|_, expires| *expires > now_ms);
    }
}

/// History kept in this process.
#[derive(Default)]
pub struct MemoryHistory {
    state: Mutex<State>,
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Refused("memory history lock poisoned".into()))
    }
}

/// Selects the publications of `query` from a log sorted by offset.
fn select(log: &VecDeque<Publication>, query: Query) -> Vec<Publication> {
    let limit = query.limit as usize;
    match (query.since, query.reverse) {
        (None, false) => log
            .iter()
            .skip(log.len().saturating_sub(limit))
            .cloned()
            .collect(),
        (None, true) => log.iter().rev().take(limit).cloned().collect(),
        (Some(since), false) => log
            .iter()
            .filter(|p| p.offset > since)
            .take(limit)
            .cloned()
            .collect(),
        (Some(since), true) => log
            .iter()
            .rev()
            .filter(|p| p.offset < since)
            .take(limit)
            .cloned()
            .collect(),
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn append(&self, append: Append) -> Result<Vec<Appended>, StoreError> {
        let now = Instant::now();
        let limits = append.limits;
        let mut state = self.state()?;
        state.count_write(now);
        let mut results = Vec::with_capacity(append.entries.len());
        for entry in append.entries {
            results.push(state.append_one(&append.channel, entry, limits, now));
        }
        let expires = now_ms() + limits.ttl.as_millis() as u64;
        state.activity.insert(append.channel, expires);
        Ok(results)
    }

    async fn read(&self, channel: &str, query: Query) -> Result<Page, StoreError> {
        let now = Instant::now();
        let state = self.state()?;
        let Some(stream) = state.live(channel, now) else {
            return Ok(Page::default());
        };
        let mut publications = match stream.log_expires > now {
            true => select(&stream.log, query),
            false => Vec::new(),
        };
        let truncated = cut(&mut publications, query.max_bytes);
        Ok(Page {
            publications,
            position: stream.position(),
            truncated,
        })
    }

    async fn active_since(&self, since_ms: u64) -> Result<Vec<String>, StoreError> {
        let now = now_ms();
        let mut state = self.state()?;
        state.activity.retain(|_, expires| *expires > now);
        let active = state
            .activity
            .iter()
            .filter(|(_, expires)| **expires >= since_ms);
        Ok(active.map(|(channel, _)| channel.clone()).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(size: u32) -> Limits {
        Limits {
            size,
            ttl: Duration::from_secs(60),
            meta_ttl: Duration::from_secs(600),
            idempotency_ttl: Duration::from_secs(60),
        }
    }

    fn append(channel: &str, data: &str, key: Option<&str>, size: u32) -> Append {
        Append {
            channel: channel.into(),
            entries: vec![Entry {
                data: Bytes::copy_from_slice(data.as_bytes()),
                idempotency_key: key.map(String::from),
                ..Default::default()
            }],
            limits: limits(size),
        }
    }

    async fn one(store: &MemoryHistory, append: Append) -> Appended {
        store.append(append).await.unwrap().remove(0)
    }

    fn offsets(page: &Page) -> Vec<u64> {
        page.publications.iter().map(|p| p.offset).collect()
    }

    #[tokio::test]
    async fn offsets_are_consecutive_and_history_is_trimmed() {
        let store = MemoryHistory::new();
        for i in 1..=5u64 {
            let appended = one(&store, append("c", "1", None, 3)).await;
            assert_eq!(appended.offset, i);
        }
        let q = |since, limit, reverse| Query {
            since,
            limit,
            reverse,
            max_bytes: usize::MAX,
        };
        let page = store.read("c", q(None, 10, false)).await.unwrap();
        assert_eq!(offsets(&page), [3, 4, 5]);
        assert_eq!(page.position.offset, 5);
        let page = store.read("c", q(None, 2, true)).await.unwrap();
        assert_eq!(offsets(&page), [5, 4]);
        let page = store.read("c", q(Some(3), 10, false)).await.unwrap();
        assert_eq!(offsets(&page), [4, 5]);
        let page = store.read("c", q(Some(5), 10, true)).await.unwrap();
        assert_eq!(offsets(&page), [4, 3]);
    }

    #[tokio::test]
    async fn an_idempotency_key_is_stored_once() {
        let store = MemoryHistory::new();
        let first = one(&store, append("c", "a", Some("k"), 10)).await;
        let again = one(&store, append("c", "a", Some("k"), 10)).await;
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(first.offset, again.offset);
        let other = one(&store, append("c", "b", Some("k2"), 10)).await;
        assert_eq!(other.offset, 2);
    }

    #[tokio::test]
    async fn reads_create_nothing() {
        let store = MemoryHistory::new();
        for i in 0..100 {
            let query = Query {
                since: Some(0),
                limit: 10,
                reverse: false,
                max_bytes: usize::MAX,
            };
            let page = store.read(&format!("x{i}"), query).await.unwrap();
            assert_eq!(page.position, Position::default());
        }
        assert!(store.state().unwrap().streams.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_stream_starts_a_new_epoch() {
        let store = MemoryHistory::new();
        let first = one(&store, append("c", "a", None, 10)).await;
        tokio::time::advance(Duration::from_secs(601)).await;
        let later = one(&store, append("c", "b", None, 10)).await;
        assert_eq!(later.offset, 1);
        assert_ne!(first.epoch, later.epoch);
    }
}
