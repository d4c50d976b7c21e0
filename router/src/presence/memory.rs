//! [`PresenceStore`] in memory, for standalone mode.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use herald_proto::bus::v1::ClientInfo;
use tokio::time::Instant;

use super::PresenceStore;
use crate::history::StoreError;

type Channel = HashMap<String, (ClientInfo, Instant)>;

#[derive(Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<String, Channel>>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // Every step leaves the map consistent, so a poisoned lock is still sound.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn add(
        &self,
        channel: &str,
        client: &ClientInfo,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut channels = self.channels();
        let clients = channels.entry(channel.to_string()).or_default();
        let previous = clients.insert(client.client.clone(), (client.clone(), now + ttl));
        Ok(previous.is_none_or(|(_, expires)| expires <= now))
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut channels = self.channels();
        let Some(clients) = channels.get_mut(channel) else {
            return Ok(false);
        };
        let removed = clients.remove(client);
        if clients.is_empty() {
            channels.remove(channel);
        }
        Ok(removed.is_some_and(|(_, expires)| expires > now))
    }

    async fn list(&self, channel: &str) -> Result<Vec<ClientInfo>, StoreError> {
        let now = Instant::now();
        let mut channels = self.channels();
        let Some(clients) = channels.get_mut(channel) else {
            return Ok(Vec::new());
        };
        clients.retain(|_, (_, expires)| *expires > now);
        let list = clients.values().map(|(client, _)| client.clone()).collect();
        if clients.is_empty() {
            channels.remove(channel);
        }
        Ok(list)
    }
}
