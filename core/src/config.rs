//! Typed configuration, loaded and validated once before any port is bound.
//!
//! Sources, later ones winning: built-in defaults, the TOML file, `HERALD_*` environment
//! variables (`__` separates sections: `HERALD_NATS__URL`), then command-line flags (the
//! binary merges those in through [`Config::load`]'s `overrides`). `herald.example.toml` at
//! the repository root lists every option with its default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::auth::AuthConfig;
use crate::channel;
pub use crate::hooks::HooksConfig;
use crate::redact::hidden;
pub use crate::redact::redact_url;
pub use crate::rules::{Access, ChannelRules, ChannelsConfig, NamespaceRules};

/// A configuration that could not be loaded or is inconsistent.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: {0}")]
    Key(#[from] crate::auth::KeyError),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub gateway: GatewayConfig,
    pub router: RouterConfig,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub channels: ChannelsConfig,
    pub socketio: SocketIoConfig,
    pub auth: AuthConfig,
    pub presence: PresenceConfig,
    pub api: ApiConfig,
    pub control: ControlConfig,
    pub hooks: HooksConfig,
    pub log: LogConfig,
}

/// The gRPC server API (docs/server-api.md), served by routers and standalone nodes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address the gRPC listener binds. Loopback by default: the API can read every
    /// channel and disconnect anyone, so it is reachable from elsewhere only with a key.
    pub listen: SocketAddr,
    /// Every call must carry it in the `x-api-key` metadata. Required unless `listen` is a
    /// loopback address. Prefer `HERALD_API__KEY` to writing it in a file.
    pub key: String,
    /// PEM certificate chain and private key: with both set, the API is served over TLS.
    pub tls_cert_file: String,
    pub tls_key_file: String,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("key", &hidden(&self.key))
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3200)),
            key: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

/// The control plane between services (docs/architecture.md, "Control plane"): each
/// gateway serves its control service here, and routers call it with these settings.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Address a gateway's (or standalone node's) control listener binds. Loopback on a
    /// free port by default, which serves nodes on one machine; in a cluster across
    /// machines, a reachable address (`0.0.0.0:3102`) with `advertise`, and `key` or TLS.
    pub listen: SocketAddr,
    /// Where other nodes reach this gateway's control service, as `host` or `host:port`
    /// (without a port: the port `listen` got). Required when `listen` is a wildcard
    /// address; by default `listen`'s address.
    pub advertise: String,
    /// Every control call carries it (`x-control-key` metadata): the same on every node.
    /// Required, unless TLS is on, when `listen` is not a loopback address. Prefer
    /// `HERALD_CONTROL__KEY` to writing it in a file.
    pub key: String,
    /// Mutual TLS between services: with all three set, gateways serve over TLS and take
    /// only callers whose certificate the CA signed; routers present theirs and check the
    /// gateway's against the CA and `tls_server_name`.
    pub tls_ca_file: String,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// The name a gateway's certificate must carry (gateways are reached by address, so
    /// their certificates need not name it).
    pub tls_server_name: String,
    /// Longest wait for one gateway's answer; one that takes longer is reported as failed.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: String::new(),
            key: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: "herald-control".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("key", &hidden(&self.key))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Shortest `control.key` that may guard a control listener on its own.
pub const MIN_CONTROL_KEY: usize = 16;

impl ControlConfig {
    /// Whether calls travel over mutual TLS.
    pub fn tls(&self) -> bool {
        !self.tls_ca_file.is_empty()
    }

    /// What is wrong with the settings, if anything.
    fn check(&self) -> Result<(), String> {
        let files = [&self.tls_ca_file, &self.tls_cert_file, &self.tls_key_file];
        let set = files.iter().filter(|f| !f.is_empty()).count();
        if set != 0 && set != files.len() {
            return Err("control.tls_ca_file, control.tls_cert_file and \
                 control.tls_key_file go together (mutual TLS)"
                .into());
        }
        if !self.key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            // It travels as gRPC metadata, which holds visible ASCII only.
            return Err("control.key must be printable ASCII characters".into());
        }
        if self.tls() && self.tls_server_name.is_empty() {
            return Err("control.tls_server_name is empty".into());
        }
        if self.timeout.is_zero() {
            return Err("control.timeout must be positive".into());
        }
        Ok(())
    }

    /// Refuses a control listener that other machines can reach without a key or TLS:
    /// anyone there could disconnect users and drain gateways.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let exposed = !self.listen.ip().is_loopback();
        if exposed && !self.tls() && !self.key.is_empty() && self.key.len() < MIN_CONTROL_KEY {
            return Err(ConfigError::Invalid(format!(
                "control.key must be at least {MIN_CONTROL_KEY} characters when it alone \
                 guards a control listener other machines can reach"
            )));
        }
        if self.key.is_empty() && !self.tls() && exposed {
            return Err(ConfigError::Invalid(format!(
                "control.listen {} is reachable from other machines, but neither \
                 control.key nor control.tls_* is set, so anyone could disconnect users and \
                 drain gateways: set a key (HERALD_CONTROL__KEY, the same on every node) or \
                 mutual TLS, or listen on loopback",
                self.listen
            )));
        }
        Ok(())
    }

    /// Where other nodes reach a control listener bound at `bound`: `advertise` (with
    /// `bound`'s port when it names none), or `bound` itself unless it is a wildcard.
    pub fn advertised(&self, bound: SocketAddr) -> Result<String, ConfigError> {
        let advertise = self.advertise.trim();
        if advertise.is_empty() {
            if bound.ip().is_unspecified() {
                return Err(ConfigError::Invalid(format!(
                    "control.listen {} is a wildcard address: set control.advertise to the \
                     address other nodes reach this one at (in Kubernetes, the pod's IP)",
                    self.listen
                )));
            }
            return Ok(bound.to_string());
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_:[]".contains(c);
        if !advertise.chars().all(allowed) {
            return Err(ConfigError::Invalid(format!(
                "control.advertise {advertise:?} is not a host or host:port"
            )));
        }
        let has_port = match advertise.rsplit_once(':') {
            // `[v6]:port`, `host:port`; a bare IPv6 address has colons but no brackets.
            Some((host, port)) => {
                port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        };
        Ok(match (has_port, advertise.parse::<std::net::Ipv6Addr>()) {
            (true, _) => advertise.to_string(),
            (false, Ok(v6)) => SocketAddr::from((v6, bound.port())).to_string(),
            (false, Err(_)) => format!("{advertise}:{}", bound.port()),
        })
    }
}

/// Who is subscribed where, as routers keep it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How long a presence entry lives without a heartbeat: the longest a client of a
    /// crashed gateway stays in presence.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often gateways confirm the entries of their clients.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
        }
    }
}

impl ApiConfig {
    /// Refuses an API that anyone who reaches its port could use: no key, on an address
    /// other machines can reach. Checked by the nodes that serve the API.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if self.key.is_empty() && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "api.key is empty but api.listen {} is reachable from other machines, so \
                 anyone could read every channel and disconnect users: set a key \
                 (HERALD_API__KEY) or listen on loopback (--api-listen 127.0.0.1:3200)",
                self.listen
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name of this node in the cluster; a random one when empty.
    pub id: String,
    /// How often the node tells the cluster it is alive; after three missed heartbeats it
    /// drops out of the server API's `Info`.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            heartbeat: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP/WebSocket listener binds.
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served instead of `listen`, so that
    /// an Ingress that routes the client port never exposes them. Unset: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest WebSocket frame accepted from a client, in bytes; larger ones close the
    /// connection with code 3502.
    pub max_frame_size: usize,
    /// Frames a connection may have waiting to be written before it counts as a slow
    /// consumer and is disconnected (code 3004).
    pub outbound_queue: usize,
    /// Bytes a connection may have waiting to be written, likewise: the most memory a
    /// client that stops reading holds. At least twice `socketio.max_payload`.
    pub outbound_bytes: usize,
    /// How long a gateway waits for a router's answer before replying "unavailable".
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a publication that arrived after a gap in offsets is held, waiting for the
    /// missing ones, before the gap is filled from history.
    #[serde(with = "humantime_serde")]
    pub gap_hold: Duration,
    /// How long a new connection has to send `connect` before it is closed (code 3503).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Publications returned by `history` when the client gives no limit.
    pub history_default_limit: u32,
    /// Most publications one `history` command may ask for.
    pub history_max_limit: u32,
    /// Web origins whose pages may connect (the `Origin` header of WebSocket and Socket.IO
    /// requests): exact origins such as `https://app.example.com`, or `*`. Requests
    /// without an `Origin` (apps, backends) are always let through. Empty: any origin.
    pub allowed_origins: Vec<String>,
    /// Most channels one native connection may be subscribed to at once (its personal
    /// channel included); more are refused with 106.
    pub max_subscriptions: usize,
    /// Most client connections (WebSockets and Socket.IO sessions) this gateway holds at
    /// once; more are refused with HTTP 503. About 7 KiB (native) to 10 KiB (Socket.IO)
    /// each when idle, plus their channels and queues. 0: no limit.
    pub max_connections: usize,
    /// How long a stopping gateway takes to send its clients away (code 3000, to reconnect
    /// elsewhere). Each client leaves at a random moment within it, so that they do not all
    /// reconnect at once. Keep it below the orchestrator's grace period (Kubernetes
    /// `terminationGracePeriodSeconds`) by at least 10 s. Zero: all at once.
    #[serde(with = "humantime_serde")]
    pub drain_period: Duration,
    /// Publish requests this gateway has on their way to the routers at most. The
    /// connections' publishes that wait for one travel together in the next (a group
    /// commit: fewer, larger requests under load, nothing held back when one is free).
    pub publish_in_flight: usize,
}

impl GatewayConfig {
    /// Whether a page from `origin` may connect.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.is_empty() || channel::origin_listed(&self.allowed_origins, origin)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            metrics_listen: None,
            max_frame_size: 1024 * 1024,
            outbound_queue: 4096,
            outbound_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            gap_hold: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            history_default_limit: 100,
            history_max_limit: 1000,
            allowed_origins: Vec::new(),
            max_subscriptions: 512,
            max_connections: 25_000,
            drain_period: Duration::from_secs(15),
            publish_in_flight: 4,
        }
    }
}

/// Most rooms `socketio.max_rooms` may allow one socket.
pub const MAX_ROOMS: usize = 2048;

/// Most publications one history request returns, whatever asks (routers cap it).
pub const MAX_HISTORY_LIMIT: u32 = 10_000;

/// The Socket.IO profile at `/socket.io/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// How often the server pings each connection (Engine.IO `pingInterval`).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed
    /// (Engine.IO `pingTimeout`).
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    /// Largest Engine.IO message accepted, in bytes (Engine.IO `maxPayload`), and largest
    /// Socket.IO event: its JSON (name and arguments) plus its attachments, raw.
    pub max_payload: usize,
    /// How long a new connection has to connect to its first namespace.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a new session waits for its client's first packet (stock clients send
    /// their CONNECT at once) before it is closed: what a handshake that is never
    /// followed up costs.
    #[serde(with = "humantime_serde")]
    pub open_timeout: Duration,
    /// Namespaces clients may connect to: exact names (`/chat`) or prefixes ending in `*`
    /// (`/team-*`). Empty: every namespace.
    pub namespaces: Vec<String>,
    /// Most namespaces one connection may be connected to at once; more get a
    /// CONNECT_ERROR with code 106.
    pub max_namespaces: usize,
    /// Most rooms one socket may be in at once (at most 2,048); a `join` past it is
    /// refused with 106.
    pub max_rooms: usize,
    /// Web origins whose pages may use HTTP long-polling across origins (CORS): exact
    /// origins (`https://app.example.com`), or `*` for any. Empty: no cross-origin polling.
    pub cors_origins: Vec<String>,
    /// How long after losing its connection a socket with connection state recovery can
    /// come back with its rooms and the events it missed. Zero turns recovery off for
    /// every socket.
    #[serde(with = "humantime_serde")]
    pub recovery_window: Duration,
    /// Namespaces whose every socket has connection state recovery, as the reference
    /// server's `connectionStateRecovery` option gives it: exact names (`/chat`) or
    /// prefixes ending in `*`. A socket of another namespace has it when its client asks
    /// in the CONNECT `auth` (`{recovery: true}`). Recovery ends every event a socket
    /// receives with an offset argument, which only socket.io-client ≥ 4.6 and the Dart
    /// client expect: keep it off where Python clients or handlers that count their
    /// arguments connect.
    pub recovery_namespaces: Vec<String>,
    /// Namespaces whose sockets get one more argument after those of every event: who
    /// sent it, `{client, user?, info?}` as the server saw it (`null` for publications of
    /// the server API). Exact names or prefixes ending in `*`; empty by default, so that
    /// handlers get exactly the emitted arguments.
    pub sender_namespaces: Vec<String>,
}

impl SocketIoConfig {
    /// Whether clients may connect to `namespace`.
    pub fn allows(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || listed(&self.namespaces, namespace)
    }

    /// Whether a page from `origin` may poll across origins.
    pub fn allows_origin(&self, origin: &str) -> bool {
        channel::origin_listed(&self.cors_origins, origin)
    }

    /// Whether connection state recovery is possible at all.
    pub fn recovery(&self) -> bool {
        !self.recovery_window.is_zero()
    }

    /// Whether the events sockets of `namespace` receive end with their sender.
    pub fn sends_sender(&self, namespace: &str) -> bool {
        listed(&self.sender_namespaces, namespace)
    }

    /// Whether a socket of `namespace` has connection state recovery; `asked`: its client
    /// asked for it in the CONNECT `auth`.
    pub fn recovers(&self, namespace: &str, asked: bool) -> bool {
        self.recovery() && (asked || listed(&self.recovery_namespaces, namespace))
    }
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        // The defaults of the reference Socket.IO server, which clients are tuned for.
        Self {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            connect_timeout: Duration::from_secs(45),
            open_timeout: Duration::from_secs(10),
            namespaces: Vec::new(),
            max_namespaces: 32,
            max_rooms: 512,
            cors_origins: Vec::new(),
            recovery_window: Duration::from_secs(120),
            recovery_namespaces: Vec::new(),
            sender_namespaces: Vec::new(),
        }
    }
}

/// Whether `namespace` is one of `patterns` (exact names, or prefixes ending in `*`).
fn listed(patterns: &[String], namespace: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| channel::matches(pattern, namespace))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Address of the router's HTTP listener (`/healthz`, `/readyz`, `/metrics`).
    pub listen: SocketAddr,
    /// Publish and history requests one router handles at once (pipelined on Redis).
    pub concurrency: usize,
    /// How long an idempotency key is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a channel's offset counter and epoch outlive its last publication. Past
    /// this the stream starts over with a new epoch.
    #[serde(with = "humantime_serde")]
    pub stream_meta_ttl: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3100)),
            concurrency: 512,
            idempotency_ttl: Duration::from_secs(300),
            stream_meta_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS server URL(s), comma-separated: every server of a cluster, so that a node can
    /// start while one is down. `tls://` requires TLS.
    pub url: String,
    /// First token of every subject, so that several clusters can share one NATS.
    pub subject_prefix: String,
    /// One way to authenticate, or none: `user` and `password`, `token`, `nkey_seed` (an
    /// NKey's seed, `SU…`), or `credentials_file` (a `.creds` file: a user JWT and its
    /// seed). Prefer `HERALD_NATS__PASSWORD` and the like (Secrets) to this file.
    pub user: String,
    pub password: String,
    pub token: String,
    pub nkey_seed: String,
    pub credentials_file: String,
    /// PEM file of the CAs that sign the servers' certificates (the system's otherwise);
    /// setting it requires TLS.
    pub tls_ca_file: String,
    /// PEM client certificate chain and key, for servers that verify clients (both or
    /// neither).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Require TLS whatever the URLs say.
    pub tls_required: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "herald".into(),
            user: String::new(),
            password: String::new(),
            token: String::new(),
            nkey_seed: String::new(),
            credentials_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_required: false,
        }
    }
}

/// Without the secrets: the password, token and seed, and a password in a URL.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<String> = self.url.split(',').map(redact_url).collect();
        f.debug_struct("NatsConfig")
            .field("url", &urls.join(","))
            .field("subject_prefix", &self.subject_prefix)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("nkey_seed", &hidden(&self.nkey_seed))
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl NatsConfig {
    /// What is wrong with the authentication and TLS settings, if anything.
    fn check(&self) -> Result<(), String> {
        if self.user.is_empty() != self.password.is_empty() {
            return Err("nats.user and nats.password go together".into());
        }
        let methods = [
            !self.user.is_empty(),
            !self.token.is_empty(),
            !self.nkey_seed.is_empty(),
            !self.credentials_file.is_empty(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err("set one NATS authentication: nats.user and nats.password, \
                 nats.token, nats.nkey_seed or nats.credentials_file"
                .into());
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err("nats.tls_cert_file and nats.tls_key_file go together".into());
        }
        Ok(())
    }
}

/// Where the routers keep history, presence, sessions and documents (docs/operations.md,
/// "Redis topologies").
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` (one server), `rediss://` (with TLS), `redis-sentinel://` and
    /// `redis-cluster://` (and their `rediss-` forms): the URL syntax of the `fred` client,
    /// e.g. `redis-sentinel://h1:26379?node=h2:26379&sentinelServiceName=herald`.
    pub url: String,
    /// ACL user; replaces the URL's when set.
    pub username: String,
    /// Password; replaces the URL's when set. Prefer `HERALD_REDIS__PASSWORD` (a Secret).
    pub password: String,
    /// Credentials for the sentinels when they differ from the servers'.
    pub sentinel_username: String,
    pub sentinel_password: String,
    /// PEM file of the CAs that sign the servers' certificates, instead of the system's.
    /// Turns TLS on for a `redis://` URL too.
    pub tls_ca_file: String,
    /// PEM client certificate chain and key, for servers that require one (both or neither).
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// Prefix of every key, so that several clusters can share one Redis.
    pub key_prefix: String,
    /// Longest wait for one Redis reply before the operation fails as unavailable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Replicas that must hold a publication before it is acknowledged (Redis `WAIT`); 0
    /// acknowledges once the primary has it.
    pub wait_replicas: u32,
    /// Longest wait for those replicas; a publication they did not confirm in time is
    /// answered as unavailable (code 111), so its publisher retries.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            username: String::new(),
            password: String::new(),
            sentinel_username: String::new(),
            sentinel_password: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            key_prefix: "herald".into(),
            timeout: Duration::from_secs(2),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

/// Without the secrets: the password, and a password in the URL.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &hidden(&self.password))
            .field("sentinel_username", &self.sentinel_username)
            .field("sentinel_password", &hidden(&self.sentinel_password))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty when standard error is a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `herald_gateway=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if given), then `HERALD_*` variables, then `overrides`,
    /// and validates the result.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment
            .merge(Env::prefixed("HERALD_").split("__"))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads defaults, then `settings`, named as the `HERALD_*` environment variables
    /// (`HERALD_GATEWAY__DRAIN_PERIOD`) but taken from the list instead of the environment:
    /// for nodes run inside another program, such as tests, which must not share its
    /// environment.
    pub fn from_settings(settings: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        for (name, value) in settings {
            let Some(path) = name.strip_prefix("HERALD_") else {
                return Err(ConfigError::Invalid(format!(
                    "{name} is not a HERALD_ setting"
                )));
            };
            let path = path.to_lowercase().replace("__", ".");
            // Read as the environment's values are: numbers, booleans, arrays, text.
            let value: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
            figment = figment.merge(Serialized::default(&path, value));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults (for tests and `config check`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.nats.subject_prefix.is_empty()
            || self
                .nats
                .subject_prefix
                .contains(|c: char| c == '*' || c == '>' || c.is_whitespace())
        {
            return invalid(format!(
                "nats.subject_prefix {:?} must be a non-empty subject without wildcards or spaces",
                self.nats.subject_prefix
            ));
        }
        self.nats.check().map_err(ConfigError::Invalid)?;
        self.control.check().map_err(ConfigError::Invalid)?;
        let redis = &self.redis;
        if redis.key_prefix.contains(['{', '}']) {
            // Each channel's keys share the hash tag `{channel}` (one Redis Cluster slot);
            // a brace in the prefix would make the prefix the tag instead.
            return invalid(format!(
                "redis.key_prefix {:?} must not contain braces",
                redis.key_prefix
            ));
        }
        if redis.tls_cert_file.is_empty() != redis.tls_key_file.is_empty() {
            return invalid("redis.tls_cert_file and redis.tls_key_file go together".into());
        }
        if redis.wait_replicas > 0 && redis.wait_timeout.is_zero() {
            // WAIT with a timeout of 0 blocks until the replicas answer, however long.
            return invalid("redis.wait_timeout must be positive with wait_replicas".into());
        }
        if self.gateway.outbound_queue == 0 {
            return invalid("gateway.outbound_queue must be at least 1".into());
        }
        if self.gateway.outbound_bytes < 2 * self.socketio.max_payload {
            return invalid(format!(
                "gateway.outbound_bytes ({}) must be at least twice socketio.max_payload ({})",
                self.gateway.outbound_bytes, self.socketio.max_payload
            ));
        }
        if self.gateway.publish_in_flight == 0 {
            return invalid("gateway.publish_in_flight must be at least 1".into());
        }
        if self.gateway.max_subscriptions == 0 || self.socketio.max_namespaces == 0 {
            return invalid(
                "gateway.max_subscriptions and socketio.max_namespaces must be at least 1".into(),
            );
        }
        if self.socketio.max_rooms > MAX_ROOMS {
            // A socket's recovery record holds every room; past this it may not fit in one
            // NATS message (1 MiB by default) with names of the longest kind.
            return invalid(format!("socketio.max_rooms must be at most {MAX_ROOMS}"));
        }
        if self.gateway.max_frame_size < 1024 {
            return invalid("gateway.max_frame_size must be at least 1024 bytes".into());
        }
        if self.gateway.history_default_limit > self.gateway.history_max_limit {
            return invalid("gateway.history_default_limit exceeds history_max_limit".into());
        }
        if self.gateway.history_max_limit > MAX_HISTORY_LIMIT {
            return invalid(format!(
                "gateway.history_max_limit must be at most {MAX_HISTORY_LIMIT}"
            ));
        }
        if self.socketio.ping_interval.is_zero() || self.socketio.ping_timeout.is_zero() {
            return invalid("socketio.ping_interval and ping_timeout must be positive".into());
        }
        crate::auth::Verifier::new(&self.auth)?;
        let keys = !self.auth.hmac_secret.is_empty() || !self.auth.public_key_file.is_empty();
        if !self.auth.anonymous && !keys && !self.hooks.connect.enabled() {
            return invalid(
                "auth.anonymous = false needs a way to admit clients: auth.hmac_secret, \
                 auth.public_key_file or hooks.connect"
                    .into(),
            );
        }
        if self.api.tls_cert_file.is_empty() != self.api.tls_key_file.is_empty() {
            return invalid("api.tls_cert_file and api.tls_key_file go together".into());
        }
        if self.node.heartbeat.is_zero() {
            return invalid("node.heartbeat must be positive".into());
        }
        if self.router.concurrency == 0 {
            return invalid("router.concurrency must be at least 1".into());
        }
        self.channels.validate().map_err(ConfigError::Invalid)?;
        self.hooks.validate().map_err(ConfigError::Invalid)?;
        if self.presence.heartbeat.is_zero() || self.presence.heartbeat * 2 > self.presence.ttl {
            return invalid("presence.heartbeat must be positive and at most half of ttl".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_the_environment_would_give_them() {
        let config = Config::from_settings(&[
            ("HERALD_GATEWAY__DRAIN_PERIOD", "1s"),
            ("HERALD_GATEWAY__MAX_CONNECTIONS", "2"),
            ("HERALD_CHANNELS__NAMESPACES__TYPING__HISTORY_SIZE", "0"),
            ("HERALD_AUTH__ANONYMOUS", "false"),
            ("HERALD_AUTH__HMAC_SECRET", "s3cret"),
        ])
        .unwrap();
        assert_eq!(config.gateway.drain_period, Duration::from_secs(1));
        assert_eq!(config.gateway.max_connections, 2);
        assert!(!config.channels.rules_for("typing:x").has_history());
        assert!(config.channels.rules_for("chat:x").has_history());
        assert!(!config.auth.anonymous);
        let err = Config::from_settings(&[("GATEWAY__LISTEN", "x")]).unwrap_err();
        assert!(err.to_string().contains("GATEWAY__LISTEN"), "{err}");
        let err = Config::from_settings(&[("HERALD_GATEWAY__NOPE", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let err = Config::from_toml("[gateway]\nlisten_addr = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
        let err = Config::from_toml("[nats]\nsubject_prefix = \"a b\"").unwrap_err();
        assert!(err.to_string().contains("subject_prefix"), "{err}");
    }

    #[test]
    fn namespace_allow_list_takes_names_and_prefixes() {
        let config = Config::from_toml(
            r#"
            [socketio]
            namespaces = ["/", "/chat", "/team-*"]
            "#,
        )
        .unwrap();
        for (namespace, allowed) in [
            ("/", true),
            ("/chat", true),
            ("/team-7", true),
            ("/chatroom", false),
            ("/admin", false),
        ] {
            assert_eq!(config.socketio.allows(namespace), allowed, "{namespace}");
        }
        assert!(Config::default().socketio.allows("/anything"));
    }

    #[test]
    fn recovery_is_asked_for_by_a_client_or_given_to_a_namespace() {
        let config = Config::from_toml(
            r#"
            [socketio]
            recovery_namespaces = ["/js", "/web-*"]
            "#,
        )
        .unwrap();
        let socketio = &config.socketio;
        assert!(socketio.recovers("/js", false));
        assert!(socketio.recovers("/web-app", false));
        assert!(!socketio.recovers("/", false));
        assert!(socketio.recovers("/", true));
        let off = Config::from_toml("[socketio]\nrecovery_window = \"0s\"").unwrap();
        assert!(!off.socketio.recovers("/", true));
    }

    #[test]
    fn the_example_config_is_valid_and_matches_the_defaults() {
        let text = include_str!("../../herald.example.toml");
        let config = Config::from_toml(text).unwrap();
        // Every setting, compared as data: a default changed in one place only fails here.
        let config = serde_json::to_value(&config).unwrap();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(config, defaults);
    }

    #[test]
    fn redis_settings_that_cannot_work_are_refused() {
        let half = Config::from_toml("[redis]\ntls_cert_file = \"c.pem\"").unwrap_err();
        assert!(half.to_string().contains("go together"), "{half}");
        let braces = Config::from_toml("[redis]\nkey_prefix = \"{h}\"").unwrap_err();
        assert!(braces.to_string().contains("braces"), "{braces}");
        let wait = "[redis]\nwait_replicas = 1\nwait_timeout = \"0s\"";
        let forever = Config::from_toml(wait).unwrap_err();
        assert!(forever.to_string().contains("wait_timeout"), "{forever}");
    }

    /// `config`'s `Debug` output, checked to hold none of the secrets `pw1` to `pw4`.
    fn without_secrets(config: &impl std::fmt::Debug) -> String {
        let printed = format!("{config:?}");
        for secret in ["pw1", "pw2", "pw3", "pw4"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        printed
    }

    #[test]
    fn one_nats_authentication_and_whole_pairs() {
        let two = "[nats]\ntoken = \"t\"\nnkey_seed = \"SU\"";
        let err = Config::from_toml(two).unwrap_err();
        assert!(err.to_string().contains("one NATS authentication"), "{err}");
        let half = Config::from_toml("[nats]\nuser = \"u\"").unwrap_err();
        assert!(half.to_string().contains("go together"), "{half}");
        let cert = Config::from_toml("[nats]\ntls_key_file = \"k.pem\"").unwrap_err();
        assert!(cert.to_string().contains("go together"), "{cert}");
        let config = NatsConfig {
            url: "nats://a:pw1@n1:4222,nats://n2:4222".into(),
            password: "pw2".into(),
            token: "pw3".into(),
            nkey_seed: "pw4".into(),
            ..NatsConfig::default()
        };
        let printed = without_secrets(&config);
        assert!(printed.contains("nats://n2:4222"), "{printed}");
    }

    #[test]
    fn redis_secrets_stay_out_of_debug_output() {
        let config = RedisConfig {
            url: "redis-sentinel://u:pw1@s1:26379?node=s2:26379&sentinelPassword=pw2&x=1".into(),
            password: "pw3".into(),
            sentinel_password: "pw4".into(),
            ..RedisConfig::default()
        };
        let printed = without_secrets(&config);
        assert!(printed.contains("u:<hidden>@s1:26379"), "{printed}");
        assert!(printed.contains("&x=1"), "{printed}");
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("rediss://:pw@h"), "rediss://:<hidden>@h");
        assert_eq!(
            redact_url("redis://u:p/w@h:1/0"),
            "redis://u:<hidden>@h:1/0"
        );
    }

    #[test]
    fn half_a_tls_configuration_is_refused() {
        for half in ["tls_key_file = \"key.pem\"", "tls_cert_file = \"cert.pem\""] {
            let err = Config::from_toml(&format!("[api]\n{half}")).unwrap_err();
            assert!(err.to_string().contains("go together"), "{err}");
        }
    }

    #[test]
    fn the_api_refuses_to_serve_other_machines_without_a_key() {
        let mut api = ApiConfig::default();
        assert!(api.check_exposure().is_ok(), "loopback needs no key");
        api.listen = "0.0.0.0:3200".parse().unwrap();
        let refusal = api.check_exposure().unwrap_err().to_string();
        assert!(refusal.contains("HERALD_API__KEY"), "{refusal}");
        api.key = "k".into();
        assert!(api.check_exposure().is_ok());
        api.key.clear();
        api.listen = "[::1]:3200".parse().unwrap();
        assert!(api.check_exposure().is_ok());
    }

    #[test]
    fn clients_must_have_a_way_in() {
        let err = Config::from_toml("[auth]\nanonymous = false").unwrap_err();
        assert!(err.to_string().contains("hooks.connect"), "{err}");
        let hooked = "[auth]\nanonymous = false\n[hooks.connect]\nurl = \"grpc://127.0.0.1:1\"";
        assert!(Config::from_toml(hooked).is_ok());
    }

    #[test]
    fn the_control_listener_refuses_other_machines_without_a_key_or_tls() {
        let mut control = ControlConfig::default();
        assert!(control.check_exposure().is_ok(), "loopback needs neither");
        control.listen = "0.0.0.0:3102".parse().unwrap();
        let refusal = control.check_exposure().unwrap_err().to_string();
        assert!(refusal.contains("HERALD_CONTROL__KEY"), "{refusal}");
        control.key = "short".into();
        let refusal = control.check_exposure().unwrap_err().to_string();
        assert!(refusal.contains("at least 16"), "{refusal}");
        control.key = "a-key-of-16-char".into();
        assert!(control.check_exposure().is_ok());
        control.key.clear();
        control.tls_ca_file = "ca.pem".into();
        assert!(control.check_exposure().is_ok());
        let config = |files: &str| Config::from_toml(&format!("[control]\n{files}"));
        let err = config("tls_ca_file = \"ca.pem\"").unwrap_err();
        assert!(err.to_string().contains("go together"), "{err}");
        let whole = "tls_ca_file = \"a\"\ntls_cert_file = \"b\"\ntls_key_file = \"c\"";
        assert!(config(whole).is_ok());
        assert!(config("timeout = \"0s\"").is_err());
        assert!(config("key = \"caf\\u00e9\"").is_err());
    }

    #[test]
    fn a_control_listener_advertises_where_it_can_be_reached() {
        let mut control = ControlConfig::default();
        let bound: SocketAddr = "127.0.0.1:4711".parse().unwrap();
        assert_eq!(control.advertised(bound).unwrap(), "127.0.0.1:4711");
        let wildcard: SocketAddr = "0.0.0.0:3102".parse().unwrap();
        let err = control.advertised(wildcard).unwrap_err().to_string();
        assert!(err.contains("control.advertise"), "{err}");
        for (advertise, expected) in [
            ("10.0.0.7", "10.0.0.7:3102"),
            ("10.0.0.7:9000", "10.0.0.7:9000"),
            ("gateway-1", "gateway-1:3102"),
            ("fd00::7", "[fd00::7]:3102"),
            ("[fd00::7]:9000", "[fd00::7]:9000"),
        ] {
            control.advertise = advertise.into();
            assert_eq!(
                control.advertised(wildcard).unwrap(),
                expected,
                "{advertise}"
            );
        }
        for bad in ["http://gw:1", "gw 1", "gw/1"] {
            control.advertise = bad.into();
            assert!(control.advertised(wildcard).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_token_secrets_stay_out_of_debug_output() {
        let mut config = Config::default();
        config.control.key = "pw1".into();
        config.api.key = "pw2".into();
        config.auth.hmac_secret = "pw3".into();
        config.hooks.key = "pw4".into();
        without_secrets(&config);
    }
}
