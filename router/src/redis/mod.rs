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
use fred::interfaces::ClientLike;
use herald_core::config::RedisConfig;

pub use script::Script;

use crate::history::StoreError;
use crate::keys::Keys;

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

/// Redis as the stores use it: the client, the keys of this cluster, and, with
/// `redis.wait_replicas`, a second client for the writes that wait for replicas.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    keys: Keys,
    replicated: Option<Replicated>,
}

/// Writes acknowledged once replicas hold them: a client of their own, since each `WAIT`
/// holds its connection until the replicas answer, and reads must not queue behind it.
#[derive(Clone)]
pub(crate) struct Replicated {
    pub(crate) client: Client,
    /// `WAIT`'s arguments.
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

impl Redis {
    /// Connects as `config` says. Fails if Redis cannot be reached now (or the
    /// configuration is unusable); later outages and failovers are survived by
    /// reconnecting, meanwhile operations fail as [`StoreError::Unavailable`].
    pub async fn connect(config: &RedisConfig) -> Result<Self, ConnectError> {
        let connect = || async {
            let client = connect::client(config).map_err(ConnectError::Config)?;
            client.init().await.map_err(store_error)?;
            Ok::<_, ConnectError>(client)
        };
        let client = connect().await?;
        let replicated = match config.wait_replicas {
            0 => None,
            replicas => Some(Replicated {
                client: connect().await?,
                replicas,
                timeout: config.wait_timeout,
            }),
        };
        Ok(Self {
            client,
            keys: Keys::new(&config.key_prefix),
            replicated,
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

    /// Where writes that wait for replicas go; `None` when nothing waits.
    pub(crate) fn replicated(&self) -> Option<&Replicated> {
        self.replicated.as_ref()
    }

    /// Longest wait for one reply.
    pub(crate) fn command_timeout(&self) -> Duration {
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

/// Error replies that a failover or a restart in progress gives, and that end with it;
/// and what the client says of a command it could not send while reconnecting.
fn temporary_reply(details: &str) -> bool {
    const TEMPORARY: [&str; 9] = [
        "READONLY",
        "MASTERDOWN",
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOREPLICAS",
        "BUSY",
        "Failed to route command",
        "Too many failed write attempts",
    ];
    TEMPORARY.iter().any(|prefix| details.starts_with(prefix))
}
