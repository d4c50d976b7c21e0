//! [`SessionStore`] on Redis: one hash per socket (`r` the record, `h` its holder, and
//! `c:<channel>` each amended channel's mark, empty once left) with an expiry; the holder
//! checks run as small Lua scripts, so they are atomic.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use redis::aio::ConnectionManager;

use super::{SessionStore, Stored};
use crate::history::StoreError;
use crate::history::redis::{millis, store_error};
use crate::keys::Keys;
use crate::metrics::{
    Operation, SESSION_AMEND, SESSION_DROP, SESSION_SAVE, SESSION_TAKE, SESSION_TOUCH,
};

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
    connection: ConnectionManager,
    keys: Keys,
    save: Script,
    take: Script,
    touch: Script,
    drop: Script,
    amend: Script,
}

impl RedisSessions {
    /// Uses `connection` (shared with the history store: one pipelined connection).
    pub fn new(connection: ConnectionManager, key_prefix: &str) -> Self {
        Self {
            connection,
            keys: Keys::new(key_prefix),
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
        let mut connection = self.connection.clone();
        self.save
            .key(self.keys.socket(pid))
            .arg(record.as_ref())
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|e| op.failed(store_error(e)))
    }

    async fn take(&self, pid: &str) -> Result<Option<Stored>, StoreError> {
        let op = Operation::start(SESSION_TAKE);
        let mut connection = self.connection.clone();
        let fields: Vec<Vec<u8>> = self
            .take
            .key(self.keys.socket(pid))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| op.failed(store_error(e)))?;
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
        let mut connection = self.connection.clone();
        self.amend
            .key(self.keys.socket(pid))
            .arg(holder)
            .arg(channel)
            .arg(mark.as_deref().unwrap_or_default())
            .arg(millis(ttl))
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|e| op.failed(store_error(e)))
    }

    async fn touch(&self, pid: &str, holder: &str, ttl: Duration) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_TOUCH);
        let mut connection = self.connection.clone();
        self.touch
            .key(self.keys.socket(pid))
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|e| op.failed(store_error(e)))
    }

    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_DROP);
        let mut connection = self.connection.clone();
        self.drop
            .key(self.keys.socket(pid))
            .arg(holder)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|e| op.failed(store_error(e)))
    }
}

/// A record from the fields of its hash (`HGETALL`'s flat list); `None` without `r`. An
/// amendment's order does not matter: each channel has at most one.
fn stored(fields: Vec<Vec<u8>>) -> Option<Stored> {
    let mut record = None;
    let mut amendments = Vec::new();
    let mut pairs = fields.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        if name == b"r" {
            record = Some(Bytes::from(value));
        } else if let Some(channel) = name.strip_prefix(AMENDED) {
            let channel = String::from_utf8_lossy(channel).into_owned();
            let mark = (!value.is_empty()).then(|| Bytes::from(value));
            amendments.push((channel, mark));
        }
    }
    Some(Stored {
        record: record?,
        amendments,
    })
}
