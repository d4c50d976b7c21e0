//! [`PresenceStore`] on Redis: per channel, a hash of client id -> encoded `ClientInfo` and
//! a sorted set of when each entry expires. Expired entries are dropped by the next read
//! or write of the channel; both keys expire with the newest entry, so a channel everyone
//! left quietly leaves nothing behind. Times come from the Redis server's clock, so routers
//! with skewed clocks agree.

use std::time::Duration;

use async_trait::async_trait;
use fred::types::Value;
use herald_proto::bus::v1::ClientInfo;
use prost::Message;

use super::PresenceStore;
use crate::history::StoreError;
use crate::metrics::{Operation, PRESENCE_ADD, PRESENCE_LIST, PRESENCE_REMOVE};
use crate::redis::{Redis, Script, millis};

/// Shared start of every script: the server's time in ms, and expired entries dropped.
const PRUNE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, client in ipairs(expired) do
  redis.call('HDEL', KEYS[1], client)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
";

const ADD: &str = r"
local added = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
-- The keys live as long as their longest-lived entry.
local keep = tonumber(ARGV[3])
local current = redis.call('PTTL', KEYS[1])
if current > keep then keep = current end
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
return added
";

const REMOVE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
";

const LIST: &str = r"
return redis.call('HVALS', KEYS[1])
";

pub struct RedisPresence {
    redis: Redis,
    add: Script,
    remove: Script,
    list: Script,
}

impl RedisPresence {
    /// Presence in `redis` (shared with the other stores: one pipelined client).
    pub fn new(redis: &Redis) -> Self {
        let script = |body: &str| Script::new(format!("{PRUNE}{body}"));
        Self {
            redis: redis.clone(),
            add: script(ADD),
            remove: script(REMOVE),
            list: script(LIST),
        }
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn add(
        &self,
        channel: &str,
        client: &ClientInfo,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let op = Operation::start(PRESENCE_ADD);
        let keys = self.redis.keys();
        let added: i64 = self
            .add
            .call()
            .key(keys.presence(channel))
            .key(keys.presence_expiry(channel))
            .arg(&client.client)
            .arg(client.encode_to_vec().as_slice())
            .arg(millis(ttl))
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        Ok(added == 1)
    }

    async fn remove(&self, channel: &str, client: &str) -> Result<bool, StoreError> {
        let op = Operation::start(PRESENCE_REMOVE);
        let keys = self.redis.keys();
        let removed: i64 = self
            .remove
            .call()
            .key(keys.presence(channel))
            .key(keys.presence_expiry(channel))
            .arg(client)
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        Ok(removed == 1)
    }

    async fn list(&self, channel: &str) -> Result<Vec<ClientInfo>, StoreError> {
        let op = Operation::start(PRESENCE_LIST);
        let keys = self.redis.keys();
        let values: Vec<Value> = self
            .list
            .call()
            .key(keys.presence(channel))
            .key(keys.presence_expiry(channel))
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        // An entry that does not decode was not written by Herald; it is left out.
        Ok(values
            .iter()
            .filter_map(|value| ClientInfo::decode(value.as_bytes()?).ok())
            .collect())
    }
}
