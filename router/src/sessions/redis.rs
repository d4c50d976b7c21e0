//! [`SessionStore`] on Redis: one hash per socket (`r` the record, `h` its holder, and
//! `c:<channel>` each amended channel's mark, empty once left) with an expiry; the holder
//! checks run as small Lua scripts, so they are atomic.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::types::Value;

use super::{SessionStore, Stored};
use crate::history::StoreError;
use crate::metrics::{
    Operation, SESSION_AMEND, SESSION_DROP, SESSION_SAVE, SESSION_TAKE, SESSION_TOUCH,
};
use crate::redis::{Redis, Script, millis};

const SAVE: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'h', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
";

const TAKE: &str = r"
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return fields
";

const AMEND: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
";

/// Prefix of an amended channel's field.
const AMENDED: &[u8] = b"c:";

const TOUCH: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
";

const DROP: &str = r"
if redis.call('HGET', KEYS[1], 'h') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
";

pub struct RedisSessions {
    redis: Redis,
    save: Script,
    take: Script,
    touch: Script,
    drop: Script,
    amend: Script,
}

impl RedisSessions {
    /// Sessions in `redis` (shared with the other stores: one pipelined client).
    pub fn new(redis: &Redis) -> Self {
        Self {
            redis: redis.clone(),
            save: Script::new(SAVE),
            take: Script::new(TAKE),
            touch: Script::new(TOUCH),
            drop: Script::new(DROP),
            amend: Script::new(AMEND),
        }
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn save(
        &self,
        pid: &str,
        holder: &str,
        record: Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_SAVE);
        self.save
            .call()
            .key(self.redis.keys().socket(pid))
            .arg(record)
            .arg(holder)
            .arg(millis(ttl))
            .run::<()>(&self.redis)
            .await
            .map_err(|e| op.failed(e))
    }

    async fn take(&self, pid: &str) -> Result<Option<Stored>, StoreError> {
        let op = Operation::start(SESSION_TAKE);
        let fields: Vec<Value> = self
            .take
            .call()
            .key(self.redis.keys().socket(pid))
            .run(&self.redis)
            .await
            .map_err(|e| op.failed(e))?;
        Ok(stored(fields))
    }

    async fn amend(
        &self,
        pid: &str,
        holder: &str,
        channel: &str,
        mark: Option<Bytes>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_AMEND);
        self.amend
            .call()
            .key(self.redis.keys().socket(pid))
            .arg(holder)
            .arg(channel)
            .arg(mark.unwrap_or_default())
            .arg(millis(ttl))
            .run::<()>(&self.redis)
            .await
            .map_err(|e| op.failed(e))
    }

    async fn touch(&self, pid: &str, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_TOUCH);
        self.touch
            .call()
            .key(self.redis.keys().socket(pid))
            .arg(holder)
            .arg(millis(ttl))
            .run::<()>(&self.redis)
            .await
            .map_err(|e| op.failed(e))
    }

    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_DROP);
        self.drop
            .call()
            .key(self.redis.keys().socket(pid))
            .arg(holder)
            .run::<()>(&self.redis)
            .await
            .map_err(|e| op.failed(e))
    }
}

/// A record from the fields of its hash (`HGETALL`'s flat list); `None` without `r`. An
/// amendment's order does not matter: each channel has at most one.
fn stored(fields: Vec<Value>) -> Option<Stored> {
    let mut record = None;
    let mut amendments = Vec::new();
    for pair in fields.chunks_exact(2) {
        let (Some(name), Some(value)) = (pair[0].as_bytes(), pair[1].as_bytes()) else {
            continue;
        };
        if name == b"r" {
            record = Some(Bytes::copy_from_slice(value));
        } else if let Some(channel) = name.strip_prefix(AMENDED) {
            let channel = String::from_utf8_lossy(channel).into_owned();
            let mark = (!value.is_empty()).then(|| Bytes::copy_from_slice(value));
            amendments.push((channel, mark));
        }
    }
    Some(Stored {
        record: record?,
        amendments,
    })
}
