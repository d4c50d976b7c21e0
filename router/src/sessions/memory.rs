//! [`SessionStore`] in memory, for standalone mode.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::SessionStore;
use crate::history::StoreError;

struct Kept {
    holder: String,
    record: Bytes,
    expires: Instant,
}

#[derive(Default)]
pub struct MemorySessions {
    records: Mutex<HashMap<String, Kept>>,
}

impl MemorySessions {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
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
        // Expired records go when new ones come, so the map stays as small as the live set.
        records.retain(|_, kept| kept.expires > now);
        let kept = Kept {
            holder: holder.to_string(),
            record,
            expires: now + ttl,
        };
        records.insert(pid.to_string(), kept);
        Ok(())
    }

    async fn take(&self, pid: &str) -> Result<Option<Bytes>, StoreError> {
        let kept = self.records().remove(pid);
        Ok(kept
            .filter(|kept| kept.expires > Instant::now())
            .map(|kept| kept.record))
    }

    async fn touch(&self, pid: &str, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        if let Some(kept) = self.records().get_mut(pid)
            && kept.holder == holder
        {
            kept.expires = Instant::now() + ttl;
        }
        Ok(())
    }

    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError> {
        let mut records = self.records();
        if records.get(pid).is_some_and(|kept| kept.holder == holder) {
            records.remove(pid);
        }
        Ok(())
    }
}
