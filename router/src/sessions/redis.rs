//! [`SessionStore`] on Redis: one hash per socket (`r` the record, `h` its holder) with
//! an expiry; the holder checks run as small Lua scripts, so they are atomic.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use redis::aio::ConnectionManager;

use super::SessionStore;
use crate::history::StoreError;
use crate::history::redis::millis;
use crate::keys::Keys;
use crate::metrics::{Operation, SESSION_DROP, SESSION_SAVE, SESSION_TAKE, SESSION_TOUCH};

const SAVE: &str = r"
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'h', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
";

const TAKE: &str = r"
local record = redis.call('HGET', KEYS[1], 'r')
redis.call('DEL', KEYS[1])
return record
";

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
            .map_err(|e| op.failed(e))
    }

    async fn take(&self, pid: &str) -> Result<Option<Bytes>, StoreError> {
        let op = Operation::start(SESSION_TAKE);
        let mut connection = self.connection.clone();
        let record: Option<Vec<u8>> = self
            .take
            .key(self.keys.socket(pid))
            .invoke_async(&mut connection)
            .await
            .map_err(|e| op.failed(e))?;
        Ok(record.map(Bytes::from))
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
            .map_err(|e| op.failed(e))
    }

    async fn drop_held(&self, pid: &str, holder: &str) -> Result<(), StoreError> {
        let op = Operation::start(SESSION_DROP);
        let mut connection = self.connection.clone();
        self.drop
            .key(self.keys.socket(pid))
            .arg(holder)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(|e| op.failed(e))
    }
}
