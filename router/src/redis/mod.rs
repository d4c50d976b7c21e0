//! The routers' connection to Redis, through `fred`: one multiplexed client for every
//! store, whatever the topology (one server, Sentinel, Cluster), with the configured
//! credentials and TLS ([`connect`]); the stores' Lua scripts ([`Script`]); and what a
//! Redis error means for a caller ([`store_error`]).
//!
//! Every key of one channel carries the hash tag `{channel}` ([`Keys`]), so each script
//! touches one Cluster slot and runs on one node.

mod connect;
mod script;

use std::time::Duration;

use fred::clients::Client;
use fred::error::{Error, ErrorKind};
use fred::interfaces::{ClientLike, ServerInterface};
use fred::types::ClusterHash;
use fred::types::config::Options;
use herald_core::config::RedisConfig;

pub use script::Script;

use crate::history::StoreError;
use crate::keys::Keys;

/// Redis as the stores use it: the client, the keys of this cluster, and how long a write
/// waits for replicas.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    keys: Keys,
    replicas: Option<Replicas>,
}

/// Why [`Redis::connect`] did not give a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The `redis.*` settings cannot work (a URL fred cannot read, a TLS file missing or
    /// not PEM): trying again will not help.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    /// Redis did not answer as it should now (unreachable, refused the credentials).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `WAIT`'s arguments: a write counts once this many replicas hold it.
#[derive(Debug, Clone, Copy)]
struct Replicas {
    count: u32,
    timeout: Duration,
}

impl Redis {
    /// Connects as `config` says. Fails if Redis cannot be reached now (or the
    /// configuration is unusable); later outages and failovers are survived by
    /// reconnecting, meanwhile operations fail as [`StoreError::Unavailable`].
    pub async fn connect(config: &RedisConfig) -> Result<Self, ConnectError> {
        let client = connect::client(config).map_err(ConnectError::Config)?;
        client.init().await.map_err(store_error)?;
        let replicas = (config.wait_replicas > 0).then_some(Replicas {
            count: config.wait_replicas,
            timeout: config.wait_timeout,
        });
        Ok(Self {
            client,
            keys: Keys::new(&config.key_prefix),
            replicas,
        })
    }

    /// Connects to the Redis at `url` with the other settings at their defaults (tests,
    /// tools).
    pub async fn connect_url(url: &str, key_prefix: &str) -> Result<Self, ConnectError> {
        Self::connect(&RedisConfig {
            url: url.into(),
            key_prefix: key_prefix.into(),
            ..RedisConfig::default()
        })
        .await
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Waits until the configured number of replicas hold every write made so far to the
    /// node that holds `key` (at once without `redis.wait_replicas`). Redis answers `WAIT`
    /// on the connection the writes went through, which is the one a command for `key`
    /// takes.
    pub async fn replicated(&self, key: &str) -> Result<(), StoreError> {
        let Some(replicas) = self.replicas else {
            return Ok(());
        };
        let options = Options {
            cluster_hash: Some(ClusterHash::Custom(fred::util::redis_keyslot(
                key.as_bytes(),
            ))),
            timeout: Some(replicas.timeout + self.command_timeout()),
            ..Options::default()
        };
        let millis = replicas.timeout.as_millis().max(1) as i64;
        let acked: i64 = self
            .client
            .with_options(&options)
            .wait(i64::from(replicas.count), millis)
            .await
            .map_err(store_error)?;
        if acked < i64::from(replicas.count) {
            return Err(StoreError::Unavailable(format!(
                "{acked} of {} replicas confirmed the write in {:?}",
                replicas.count, replicas.timeout
            )));
        }
        Ok(())
    }

    fn command_timeout(&self) -> Duration {
        self.client.perf_config().default_command_timeout
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client.ping::<()>(None).await.map_err(store_error)
    }
}

/// A Redis expiry in milliseconds; at least 1, since 0 would delete the key.
pub(crate) fn millis(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

/// A Redis error by what it means for the caller: the connection, a timeout or a
/// failover in progress is temporary ([`StoreError::Unavailable`]); an error reply is a
/// refusal; a reply Herald cannot read is malformed.
pub(crate) fn store_error(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Routing
        | ErrorKind::Cluster
        | ErrorKind::Sentinel
        | ErrorKind::Tls => StoreError::Unavailable(e.to_string()),
        ErrorKind::Parse | ErrorKind::Protocol => StoreError::Malformed(e.to_string()),
        _ if temporary_reply(e.details()) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Refused(e.to_string()),
    }
}

/// Error replies that a failover or a restart in progress gives, and that end with it.
fn temporary_reply(details: &str) -> bool {
    const TEMPORARY: [&str; 7] = [
        "READONLY",
        "MASTERDOWN",
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOREPLICAS",
        "BUSY",
    ];
    TEMPORARY.iter().any(|prefix| details.starts_with(prefix))
}
