//! The stores' Lua scripts: each runs by its SHA1 (`EVALSHA`), and is sent whole (`EVAL`,
//! which also caches it) on the node that does not know it yet: after a restart, a
//! failover, or on a Cluster node that has not run it. A write that must reach replicas
//! before it counts runs with `WAIT` right behind it, on the same connection.

use bytes::Bytes;
use fred::clients::Pipeline;
use fred::error::Error;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, FromValue, Key, Value};

use super::{Redis, Replicated, store_error};
use crate::history::StoreError;

/// A Lua script and its digest.
pub struct Script {
    lua: String,
    hash: String,
}

impl Script {
    pub fn new(lua: impl Into<String>) -> Self {
        let lua = lua.into();
        let hash = fred::util::sha1_hash(&lua);
        Self { lua, hash }
    }

    /// A run of this script with no keys or arguments yet.
    pub fn call(&self) -> Call<'_> {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One run of a script: its keys (`KEYS`) and arguments (`ARGV`) in order.
pub struct Call<'a> {
    script: &'a Script,
    keys: Vec<Key>,
    args: Vec<Value>,
}

impl Call<'_> {
    pub fn key(&mut self, key: String) -> &mut Self {
        self.keys.push(Key::from(key));
        self
    }

    pub fn arg(&mut self, arg: impl Into<Arg>) -> &mut Self {
        self.args.push(arg.into().0);
        self
    }

    /// Runs it, on the node that holds its keys.
    pub async fn run<R: FromValue>(&self, redis: &Redis) -> Result<R, StoreError> {
        let client = redis.client();
        let script = self.script;
        let by_hash = client
            .evalsha(script.hash.as_str(), self.keys.clone(), self.args.clone())
            .await;
        match by_hash {
            Err(e) if e.details().starts_with("NOSCRIPT") => client
                .eval(script.lua.as_str(), self.keys.clone(), self.args.clone())
                .await
                .map_err(store_error),
            result => result.map_err(store_error),
        }
    }

    /// Runs it and answers once `redis.wait_replicas` replicas hold what it wrote (as
    /// [`Self::run`] without that setting). The script and its `WAIT` travel together on
    /// one connection: a `WAIT` sent after a reconnection, on a connection that wrote
    /// nothing, would confirm at once a write the replicas never got. If that connection
    /// breaks, both fail (the client never sends a command twice).
    pub async fn run_replicated<R: FromValue>(&self, redis: &Redis) -> Result<R, StoreError> {
        let Some(replicated) = redis.replicated() else {
            return self.run(redis).await;
        };
        // Both go to the node of the script's keys, which the WAIT has none of.
        let slot = self
            .keys
            .first()
            .map_or(0, |key| fred::util::redis_keyslot(key.as_bytes()));
        let timeout = replicated.timeout + redis.command_timeout();
        let mut replies = self.run_then_wait(replicated, slot, timeout, true).await;
        if matches!(replies.first(), Some(Err(e)) if e.details().starts_with("NOSCRIPT")) {
            replies = self.run_then_wait(replicated, slot, timeout, false).await;
        }
        // A pipeline that could not be sent answers with its one error.
        let mut replies = replies.into_iter();
        let missing = || StoreError::Malformed("no reply to a script or its WAIT".into());
        let reply = replies.next().ok_or_else(missing)?.map_err(store_error)?;
        let acked = replies.next().ok_or_else(missing)?.map_err(store_error)?;
        let acked = acked.as_u64().unwrap_or(0);
        if acked < u64::from(replicated.replicas) {
            return Err(StoreError::Unavailable(format!(
                "{acked} of {} replicas confirmed the write within {:?}",
                replicated.replicas, replicated.timeout
            )));
        }
        R::from_value(reply).map_err(store_error)
    }

    /// The script (by its hash, or whole) and `WAIT`, pipelined; a reply for each.
    async fn run_then_wait(
        &self,
        replicated: &Replicated,
        slot: u16,
        timeout: std::time::Duration,
        by_hash: bool,
    ) -> Vec<Result<Value, Error>> {
        let options = Options {
            timeout: Some(timeout),
            ..Options::default()
        };
        let pipeline = Pipeline::from(replicated.client.with_options(&options));
        let (command, body) = match by_hash {
            true => ("EVALSHA", &self.script.hash),
            false => ("EVAL", &self.script.lua),
        };
        let mut args = Vec::with_capacity(2 + self.keys.len() + self.args.len());
        args.push(Value::from(body.as_str()));
        args.push(Value::Integer(self.keys.len() as i64));
        args.extend(self.keys.iter().map(|key| Value::from(key.clone())));
        args.extend(self.args.iter().cloned());
        let on_slot = |name| CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
        let wait = vec![
            Value::Integer(i64::from(replicated.replicas)),
            Value::Integer(replicated.timeout.as_millis().max(1) as i64),
        ];
        // Queued in memory here; sent together by `try_all`.
        let queued: [Result<(), Error>; 2] = [
            pipeline.custom(on_slot(command), args).await,
            pipeline.custom(on_slot("WAIT"), wait).await,
        ];
        if let Some(Err(e)) = queued.into_iter().find(Result::is_err) {
            return vec![Err(e)];
        }
        pipeline.try_all::<Value>().await
    }
}

/// A script argument. Lua sees every argument as a string: numbers as their digits.
pub struct Arg(Value);

impl From<u64> for Arg {
    fn from(n: u64) -> Self {
        Self(Value::String(n.to_string().into()))
    }
}

impl From<u32> for Arg {
    fn from(n: u32) -> Self {
        Self(Value::Integer(n.into()))
    }
}

impl From<usize> for Arg {
    fn from(n: usize) -> Self {
        Self::from(n as u64)
    }
}

impl From<&str> for Arg {
    fn from(text: &str) -> Self {
        Self(Value::String(text.into()))
    }
}

impl From<&String> for Arg {
    fn from(text: &String) -> Self {
        Self::from(text.as_str())
    }
}

impl From<String> for Arg {
    fn from(text: String) -> Self {
        Self(Value::String(text.into()))
    }
}

impl From<&[u8]> for Arg {
    fn from(bytes: &[u8]) -> Self {
        Self(Value::Bytes(Bytes::copy_from_slice(bytes)))
    }
}

impl From<Bytes> for Arg {
    fn from(bytes: Bytes) -> Self {
        Self(Value::Bytes(bytes))
    }
}
