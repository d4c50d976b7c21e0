//! [`SessionStore`] in memory, for standalone mode.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{SessionStore, Stored};
use crate::history::StoreError;

struct Kept {
    holder: String,
    stored: Stored,
    expires: Instant,
}

#[derive(Default)]
pub struct MemorySessions {
    records: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    map: HashMap<String, Kept>,
    /// The map's size at which expired records are swept next: twice its size after the
    /// last sweep, so that sweeping costs O(1) per save however many records are live.
    sweep_at: usize,
}

impl MemorySessions {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // Every step leaves the map consistent, so a poisoned lock is still sound.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn save(
        &self,
        pid: &str,
        holder: &str,
        record: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut records = self.records();
        // Expired records go as new ones come, so the map stays within twice the live set.
        if records.map.len() >= records.sweep_at {
            records.map.retain(|_, kept| kept.expires > now);
            records.sweep_at = (records.map.len() * 2).max(64);
        }
        let kept = Kept {
            holder: holder.to_string(),
            stored: Stored {
                record,
                amendments: Vec::new(),
            },
            expires: now + ttl,
        };
        records.map.insert(pid.to_string(), kept);
        Ok(())
    }

    async fn take(&self, pid: &str) -> Result<Option<Stored>, StoreError> {
        let kept = self.records().map.remove(pid);
        Ok(kept
            .filter(|kept| kept.expires > Instant::now())
            .map(|kept| kept.stored))
    }

    async fn amend(
        &self,
        pid: &str,
        holder: &str,
        channel: &str,
        mark: Option<Bytes>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if let Some(kept) = self.records().map.get_mut(pid)
            && kept.holder == holder
        {
            let amendments = &mut kept.stored.amendments;
            amendments.retain(|(c, _)| c != channel);
            amendments.push((channel.to_string(), mark));
            kept.expires = Instant::now() + ttl;
        }
        Ok(())
    }

    async fn touch(&self, pid: &str, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        if let Some(kept) = self.records().map.get_mut(pid)
            && kept.holder == holder
        {
            kept.expires = Instant::now() + ttl;
        }
        Ok(())
    }

    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError> {
        let mut records = self.records();
        if records
            .map
            .get(pid)
            .is_some_and(|kept| kept.holder == holder)
        {
            records.map.remove(pid);
        }
        Ok(())
    }
}
