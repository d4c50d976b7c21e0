//! The stores' Lua scripts: each runs by its SHA1 (`EVALSHA`), and is sent whole (`EVAL`,
//! which also caches it) on the node that does not know it yet: after a restart, a
//! failover, or on a Cluster node that has not run it.

use bytes::Bytes;
use fred::interfaces::LuaInterface;
use fred::types::{FromValue, Key, Value};

use super::{Redis, store_error};
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
