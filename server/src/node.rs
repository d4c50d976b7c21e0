//! Wiring of a node for each mode. The same gateway and router code runs in all of them;
//! only the bus and the stores (history, Socket.IO sessions, presence) differ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use herald_core::bus::{Bus, MemoryBus, NatsBus};
use herald_core::config::Config;
use herald_core::heartbeat;
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_gateway::Gateway;
use herald_proto::bus::v1::NodeStatus;
use herald_router::api::nodes::Nodes;
use herald_router::history::{HistoryStore, MemoryHistory, RedisHistory};
use herald_router::presence::{MemoryPresence, PresenceService, PresenceStore, RedisPresence};
use herald_router::sessions::{MemorySessions, RedisSessions, SessionService, SessionStore};
use herald_router::{RouterService, api};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::Mode;
use crate::{router_http, signal};

/// Longest pause between attempts to reach Redis at start-up.
const REDIS_RETRY: Duration = Duration::from_secs(2);

pub async fn run(mode: Mode, config: Config) -> anyhow::Result<()> {
    let node_id = if config.node.id.is_empty() {
        format!("{}-{:06x}", mode.name(), rand::random::<u32>() & 0xff_ffff)
    } else {
        config.node.id.clone()
    };
    if matches!(mode, Mode::Standalone | Mode::Router) {
        // Before anything is reached or bound: an open API must not come up even briefly.
        config.api.check_exposure()?;
    }
    let shutdown = signal::shutdown_token();
    if matches!(mode, Mode::Standalone | Mode::Gateway) {
        herald_gateway::metrics::initialize();
    }
    if matches!(mode, Mode::Standalone | Mode::Router) {
        herald_router::metrics::initialize();
    }
    match mode {
        Mode::Standalone => {
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
            let stores = Stores {
                history: Arc::new(MemoryHistory::new()),
                sessions: Arc::new(MemorySessions::new()),
                presence: Arc::new(MemoryPresence::new()),
            };
            // The router and the API serve until the gateway has drained its clients, who
            // publish until their turn to leave.
            let drained = CancellationToken::new();
            let router = Services::new(&config, bus.clone(), stores);
            router.spawn_side_services(&drained);
            let routing =
                tokio::spawn(router.router.clone().run(drained.clone().cancelled_owned()));
            // Clients must not reach the gateway before its router serves, or their first
            // requests would find no router.
            while !router.serving().await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            serve_api(&config, bus.clone(), &drained).await?;
            let served = gateway(mode, &node_id, &config, bus, shutdown).await;
            drained.cancel();
            let _ = routing.await;
            served
        }
        Mode::Gateway => {
            let bus = nats(&config, &node_id).await?;
            gateway(mode, &node_id, &config, bus, shutdown).await
        }
        Mode::Router => {
            let bus = nats(&config, &node_id).await?;
            let listener = bind(config.router.listen).await?;
            let Some(store) = redis(&config, &shutdown).await else {
                return Ok(());
            };
            let prefix = &config.redis.key_prefix;
            let stores = Stores {
                sessions: Arc::new(RedisSessions::new(store.connection(), prefix)),
                presence: Arc::new(RedisPresence::new(store.connection(), prefix)),
                history: Arc::new(store),
            };
            let services = Services::new(&config, bus.clone(), stores);
            services.spawn_side_services(&shutdown);
            serve_api(&config, bus.clone(), &shutdown).await?;
            let started = unix_micros() / 1000;
            let status = status_of(mode, &node_id, started, || (0, 0, 0));
            heartbeats(&config, bus, status, &shutdown);
            let router = services.router;
            announce(mode, &node_id, listener.local_addr()?);
            router_http::spawn(listener, router.clone(), shutdown.clone());
            router
                .run(shutdown.cancelled_owned())
                .await
                .context("router stopped")
        }
    }
}

/// What a router keeps: history, Socket.IO sessions and presence.
struct Stores {
    history: Arc<dyn HistoryStore>,
    sessions: Arc<dyn SessionStore>,
    presence: Arc<dyn PresenceStore>,
}

/// The router's services: publications and history, Socket.IO sessions, presence.
struct Services {
    router: Arc<RouterService>,
    sessions: Arc<SessionService>,
    presence: Arc<PresenceService>,
}

impl Services {
    fn new(config: &Config, bus: Arc<dyn Bus>, stores: Stores) -> Self {
        let subjects = Subjects::new(config.nats.subject_prefix.clone());
        let concurrency = config.router.concurrency;
        Self {
            router: RouterService::new(
                bus.clone(),
                stores.history,
                subjects.clone(),
                config.channels.clone(),
                config.router.clone(),
            ),
            sessions: SessionService::new(
                bus.clone(),
                stores.sessions,
                subjects.clone(),
                concurrency,
            ),
            presence: PresenceService::new(
                bus,
                stores.presence,
                subjects,
                config.channels.clone(),
                config.presence.ttl,
                concurrency,
            ),
        }
    }

    /// Starts the services beside the publish and history one, until `shutdown`.
    fn spawn_side_services(&self, shutdown: &CancellationToken) {
        tokio::spawn(
            self.sessions
                .clone()
                .run(shutdown.clone().cancelled_owned()),
        );
        tokio::spawn(
            self.presence
                .clone()
                .run(shutdown.clone().cancelled_owned()),
        );
    }

    async fn serving(&self) -> bool {
        self.router.ready().await && self.sessions.serving() && self.presence.serving()
    }
}

async fn gateway(
    mode: Mode,
    node_id: &str,
    config: &Config,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = bind(config.gateway.listen).await?;
    let probes = match config.gateway.metrics_listen {
        Some(addr) => {
            let probes = bind(addr).await?;
            // A distinct line, which test harnesses read for the probes' address.
            println!(
                "herald probes and metrics served at http://{}",
                probes.local_addr()?
            );
            Some(probes)
        }
        None => None,
    };
    let gateway = Gateway::new(node_id, config, bus.clone())?;
    let started = unix_micros() / 1000;
    let load = gateway.clone();
    let status = status_of(mode, node_id, started, move || load.load());
    heartbeats(config, bus, status, &shutdown);
    announce(mode, node_id, listener.local_addr()?);
    herald_gateway::serve(listener, probes, gateway, shutdown.cancelled_owned())
        .await
        .context("gateway stopped")
}

/// What this node tells the cluster in its heartbeats; `load` gives its connections,
/// subscriptions and channels.
fn status_of(
    mode: Mode,
    node_id: &str,
    started_at_ms: u64,
    load: impl Fn() -> (u64, u64, u64) + Send + 'static,
) -> impl Fn() -> NodeStatus + Send + 'static {
    let id = node_id.to_string();
    move || {
        let (connections, subscriptions, channels) = load();
        NodeStatus {
            id: id.clone(),
            kind: mode.name().into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at_ms,
            connections,
            subscriptions,
            channels,
        }
    }
}

/// Sends this node's heartbeats until `shutdown`.
fn heartbeats(
    config: &Config,
    bus: Arc<dyn Bus>,
    status: impl Fn() -> NodeStatus + Send + 'static,
    shutdown: &CancellationToken,
) {
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let interval = config.node.heartbeat;
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(heartbeat::run(bus, subjects, interval, status, stop));
}

/// Starts the gRPC server API (routers and standalone nodes), until `shutdown`.
async fn serve_api(
    config: &Config,
    bus: Arc<dyn Bus>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // A key or certificate that cannot be read stops the node before it serves anything.
    api::tls(config)?;
    let listener = bind(config.api.listen).await?;
    let addr = listener.local_addr()?;
    // A distinct line, which test harnesses read for the API's address.
    println!("herald api listening on grpc://{addr}");
    tracing::info!(%addr, "server API listening");
    let nodes = Nodes::new(config.node.heartbeat);
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    nodes.clone().listen(bus.clone(), subjects.nodes()).await?;
    let config = config.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = api::serve(listener, &config, bus, nodes, stop.cancelled_owned());
        if let Err(e) = served.await {
            tracing::error!(error = %e, "server API failed");
        }
    });
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Tells the terminal (and test harnesses, which read this line) where the node listens.
fn announce(mode: Mode, node_id: &str, addr: SocketAddr) {
    let mode = mode.name();
    // A wildcard address is where the node listens, not where a client should connect.
    let reach = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    match mode {
        "router" => println!("herald {mode} {node_id} listening on http://{addr} (health probes)"),
        _ => println!(
            "herald {mode} {node_id} listening on http://{addr} \
             (native WebSocket: ws://{reach}/connection/websocket)"
        ),
    }
    tracing::info!(%addr, node = node_id, mode, "listening");
}

async fn nats(config: &Config, node_id: &str) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = NatsBus::connect(&config.nats.url, node_id).await?;
    if !bus.wait_connected(Duration::from_secs(5)).await {
        tracing::warn!(url = %config.nats.url, "NATS not reachable yet; retrying in the background");
    }
    Ok(Arc::new(bus))
}

/// Connects to Redis, retrying until it answers or the node is shut down.
async fn redis(config: &Config, shutdown: &CancellationToken) -> Option<RedisHistory> {
    loop {
        let connect = RedisHistory::connect(
            &config.redis.url,
            &config.redis.key_prefix,
            config.redis.timeout,
        );
        match connect.await {
            Ok(store) => return Some(store),
            Err(e) => tracing::warn!(error = %e, "Redis not reachable; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(REDIS_RETRY) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}
