//! A Herald node as a library: the wiring of each mode, on listeners bound beforehand, until
//! a shutdown token is cancelled. The same gateway and router code runs in every mode; only
//! the bus and the stores (history, Socket.IO sessions, presence) differ. The `herald`
//! binary binds the listeners its settings name and runs one node; tests run whole
//! clusters of nodes in one process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use herald_core::auth::Verifier;
use herald_core::bus::{Bus, MemoryBus, NatsBus};
use herald_core::config::Config;
use herald_core::control;
use herald_core::heartbeat;
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_gateway::Gateway;
use herald_proto::bus::v1::NodeStatus;
use herald_router::api::nodes::Nodes;
use herald_router::history::{HistoryStore, MemoryHistory, RedisHistory};
use herald_router::presence::{MemoryPresence, PresenceService, PresenceStore, RedisPresence};
use herald_router::redis::{ConnectError, Redis};
use herald_router::sessions::{MemorySessions, RedisSessions, SessionService, SessionStore};
use herald_router::sync::{DocumentStore, MemoryDocuments, RedisDocuments, SyncService};
use herald_router::{RouterService, api};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::router_http;

/// Longest pause between attempts to reach Redis at start-up.
const REDIS_RETRY: Duration = Duration::from_secs(2);

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Gateway and router in one process, with an in-process bus and in-memory history.
    Standalone,
    /// Client connections (WebSocket), over NATS.
    Gateway,
    /// History and ordering, over NATS and Redis.
    Router,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Gateway => "gateway",
            Mode::Router => "router",
        }
    }

    /// Whether the node serves the gRPC server API.
    fn serves_api(self) -> bool {
        matches!(self, Mode::Standalone | Mode::Router)
    }
}

/// The listeners of one node.
pub struct Listeners {
    /// Client connections (standalone, gateway), or a router's probes and `/metrics`.
    pub main: TcpListener,
    /// A gateway's probes and `/metrics`, when `gateway.metrics_listen` is set.
    pub probes: Option<TcpListener>,
    /// The gRPC server API of a standalone node or a router.
    pub api: Option<TcpListener>,
    /// The control service of a standalone node or a gateway.
    pub control: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` gives for `mode`. An API that would be open to other
    /// machines without a key, or whose TLS files cannot be read, stops the node before
    /// anything is bound: it must not come up even briefly.
    pub async fn bind(mode: Mode, config: &Config) -> anyhow::Result<Self> {
        if mode.serves_api() {
            config.api.check_exposure()?;
            api::tls(config)?;
            // The API calls the gateways' control services with these.
            control::client_tls(&config.control)?;
        }
        if mode != Mode::Router {
            // A token key that cannot be read stops the node before it binds, too; so
            // does a control listener open to all, or control TLS files that cannot be read.
            Verifier::new(&config.auth)?;
            config.control.check_exposure()?;
            herald_gateway::control::check(&config.control)?;
        }
        let main = match mode {
            Mode::Router => config.router.listen,
            Mode::Standalone | Mode::Gateway => config.gateway.listen,
        };
        let probes = match (mode, config.gateway.metrics_listen) {
            (Mode::Standalone | Mode::Gateway, Some(addr)) => Some(bind(addr).await?),
            _ => None,
        };
        let api = match mode.serves_api() {
            true => Some(bind(config.api.listen).await?),
            false => None,
        };
        let control = match mode {
            Mode::Router => None,
            Mode::Standalone | Mode::Gateway => {
                let control = bind(config.control.listen).await?;
                config.control.advertised(control.local_addr()?)?;
                Some(control)
            }
        };
        Ok(Self {
            main: bind(main).await?,
            probes,
            api,
            control,
        })
    }

    /// Where the main listener is.
    pub fn main_addr(&self) -> std::io::Result<SocketAddr> {
        self.main.local_addr()
    }

    /// Where the server API listens, if the node has one.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where the control service listens, if the node has one.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where a gateway's probes listen, if on a listener of their own.
    pub fn probes_addr(&self) -> Option<SocketAddr> {
        self.probes.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// The id of a node of `mode`: `node.id`, or the mode and random characters.
pub fn node_id(mode: Mode, config: &Config) -> String {
    if config.node.id.is_empty() {
        format!("{}-{:06x}", mode.name(), rand::random::<u32>() & 0xff_ffff)
    } else {
        config.node.id.clone()
    }
}

/// Runs a node of `mode` on `listeners` until `shutdown` is cancelled, then drains it:
/// a gateway sends its clients away over the drain period, a router answers the requests
/// it has received; returns once every service of the node has stopped.
pub async fn run(
    mode: Mode,
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node_id = node_id(mode, &config);
    // Cancelled by `shutdown`, or when a service the node needs stops on its own.
    let shutdown = shutdown.child_token();
    if mode.serves_api() {
        config.api.check_exposure()?;
    }
    if mode != Mode::Router {
        config.control.check_exposure()?;
    }
    if matches!(mode, Mode::Standalone | Mode::Gateway) {
        herald_gateway::metrics::initialize();
    }
    if mode.serves_api() {
        herald_router::metrics::initialize();
    }
    let Listeners {
        main,
        probes,
        api,
        control,
    } = listeners;
    let api = || api.context("a standalone node or router needs its API listener");
    let gateway_listeners = |main, probes, control: Option<TcpListener>| {
        control
            .context("a standalone node or gateway needs its control listener")
            .map(|control| herald_gateway::Listeners {
                clients: main,
                probes,
                control,
            })
    };
    match mode {
        Mode::Standalone => {
            let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
            let history = Arc::new(MemoryHistory::new());
            let activity: Arc<dyn HistoryStore> = history.clone();
            let stores = Stores {
                documents: Arc::new(MemoryDocuments::new(history.clone())),
                history,
                sessions: Arc::new(MemorySessions::new()),
                presence: Arc::new(MemoryPresence::new()),
            };
            // The router and the API serve until the gateway has drained its clients, who
            // publish until their turn to leave.
            let drained = CancellationToken::new();
            let services = Services::new(&config, bus.clone(), stores);
            let mut running = Tasks::new(&drained, &shutdown);
            services.spawn(&mut running);
            // Clients must not reach the gateway before its router serves, or their first
            // requests would find no router.
            while !services.serving().await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let api = serve_api(api()?, &config, bus.clone(), activity, &drained).await?;
            running.push(api);
            let listeners = gateway_listeners(main, probes, control)?;
            let served = gateway(mode, &node_id, &config, bus, listeners, shutdown).await;
            drained.cancel();
            let stopped = running.stopped().await;
            served.and(stopped)
        }
        Mode::Gateway => {
            let bus = nats(&config, &node_id).await?;
            let listeners = gateway_listeners(main, probes, control)?;
            gateway(mode, &node_id, &config, bus, listeners, shutdown).await
        }
        Mode::Router => {
            let bus = nats(&config, &node_id).await?;
            let Some(redis) = redis(&config, &shutdown).await? else {
                return Ok(());
            };
            let stores = Stores {
                documents: Arc::new(RedisDocuments::new(&redis)),
                sessions: Arc::new(RedisSessions::new(&redis)),
                presence: Arc::new(RedisPresence::new(&redis)),
                history: Arc::new(RedisHistory::new(&redis)),
            };
            let activity = stores.history.clone();
            let services = Services::new(&config, bus.clone(), stores);
            let mut running = Tasks::new(&shutdown, &shutdown);
            services.spawn(&mut running);
            let api = serve_api(api()?, &config, bus.clone(), activity, &shutdown).await?;
            running.push(api);
            let started = unix_micros() / 1000;
            let status = status_of(mode, &node_id, started, |_| {});
            running.push(heartbeats(&config, bus, status, &shutdown));
            let router = services.router.clone();
            running.push(router_http::spawn(main, router, shutdown.clone()));
            running.stopped().await
        }
    }
}

/// How long the tasks of a stopping node may take once it is told to stop: a router's
/// services answer what they received within 10 s; anything longer (a client holding a
/// gRPC stream open) is cut.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// The tasks of a running node, awaited when it stops. A service the node cannot do without
/// that ends before the node is told to stop stops the node, which then exits with an
/// error: an orchestrator restarts it, where a router that no longer serves would linger,
/// alive and useless.
struct Tasks {
    /// What the services watch: once cancelled, they are expected to end.
    watched: CancellationToken,
    /// Cancelled when a service ends early: the node stops.
    fail: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Tasks {
    fn new(watched: &CancellationToken, fail: &CancellationToken) -> Self {
        Self {
            watched: watched.clone(),
            fail: fail.clone(),
            failure: Arc::default(),
            handles: Vec::new(),
        }
    }

    fn push(&mut self, handle: JoinHandle<()>) {
        self.handles.push(handle);
    }

    /// Runs `service`, which must keep running until the node is told to stop.
    fn essential<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        service: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let (watched, fail, failure) = (
            self.watched.clone(),
            self.fail.clone(),
            self.failure.clone(),
        );
        self.push(tokio::spawn(async move {
            let outcome = service.await;
            if watched.is_cancelled() {
                if let Err(error) = outcome {
                    tracing::warn!(service = name, %error, "service failed while stopping");
                }
                return;
            }
            let why = match outcome {
                Ok(()) => format!("{name} stopped serving"),
                Err(error) => format!("{name} failed: {error}"),
            };
            tracing::error!(reason = %why, "stopping the node");
            if let Ok(mut failure) = failure.lock() {
                failure.get_or_insert(why);
            }
            fail.cancel();
        }));
    }

    /// Waits until the node is told to stop, then for every task, each at most
    /// [`STOP_LIMIT`]; fails if a service ended before its time.
    async fn stopped(self) -> anyhow::Result<()> {
        self.watched.cancelled().await;
        let deadline = tokio::time::Instant::now() + STOP_LIMIT;
        for mut handle in self.handles {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Err(error)) if error.is_panic() => {
                    tracing::error!(%error, "a task of the node panicked");
                }
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!("a task of the node did not stop in time");
                    handle.abort();
                }
            }
        }
        let failure = self.failure.lock().ok().and_then(|mut f| f.take());
        match failure {
            Some(why) => Err(anyhow::anyhow!(why)),
            None => Ok(()),
        }
    }
}

/// What a router keeps: history, sync documents beside it, Socket.IO sessions and
/// presence.
struct Stores {
    history: Arc<dyn HistoryStore>,
    documents: Arc<dyn DocumentStore>,
    sessions: Arc<dyn SessionStore>,
    presence: Arc<dyn PresenceStore>,
}

/// The router's services: publications and history, sync documents, Socket.IO sessions,
/// presence.
struct Services {
    router: Arc<RouterService>,
    sync: Arc<SyncService>,
    sessions: Arc<SessionService>,
    presence: Arc<PresenceService>,
}

impl Services {
    fn new(config: &Config, bus: Arc<dyn Bus>, stores: Stores) -> Self {
        let subjects = Subjects::new(config.nats.subject_prefix.clone());
        let concurrency = config.router.concurrency;
        Self {
            sync: SyncService::new(
                bus.clone(),
                stores.history.clone(),
                stores.documents,
                subjects.clone(),
                config.channels.clone(),
                config.router.idempotency_ttl,
                concurrency,
            ),
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

    /// Starts the four services on `tasks`, until the tasks' stop.
    fn spawn(&self, tasks: &mut Tasks) {
        let stop = || tasks.watched.clone().cancelled_owned();
        let (router, sync, sessions, presence) = (
            self.router.clone().run(stop()),
            self.sync.clone().run(stop()),
            self.sessions.clone().run(stop()),
            self.presence.clone().run(stop()),
        );
        tasks.essential("router", router);
        tasks.essential("sync", sync);
        tasks.essential("sessions", sessions);
        tasks.essential("presence", presence);
    }

    async fn serving(&self) -> bool {
        self.router.ready().await
            && self.sync.serving()
            && self.sessions.serving()
            && self.presence.serving()
    }
}

/// Serves a gateway on its listeners (clients, and probes when they have their own) until
/// `shutdown`, then drains it.
async fn gateway(
    mode: Mode,
    node_id: &str,
    config: &Config,
    bus: Arc<dyn Bus>,
    listeners: herald_gateway::Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = Gateway::new(node_id, config, bus.clone())?;
    let started = unix_micros() / 1000;
    let control = config.control.advertised(listeners.control.local_addr()?)?;
    let load = gateway.clone();
    let status = status_of(mode, node_id, started, move |status| {
        (status.connections, status.subscriptions, status.channels) = load.load();
        status.draining = load.draining();
        status.control.clone_from(&control);
    });
    let heartbeats = heartbeats(config, bus, status, &shutdown);
    let served = herald_gateway::serve(listeners, gateway, shutdown.cancelled_owned())
        .await
        .context("gateway stopped");
    let _ = heartbeats.await;
    served
}

/// What this node tells the cluster in its heartbeats; `now` adds what a gateway holds
/// now, and where its control service is.
fn status_of(
    mode: Mode,
    node_id: &str,
    started_at_ms: u64,
    now: impl Fn(&mut NodeStatus) + Send + 'static,
) -> impl Fn() -> NodeStatus + Send + 'static {
    let id = node_id.to_string();
    move || {
        let mut status = NodeStatus {
            id: id.clone(),
            kind: mode.name().into(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at_ms,
            ..NodeStatus::default()
        };
        now(&mut status);
        status
    }
}

/// Sends this node's heartbeats until `shutdown`.
fn heartbeats(
    config: &Config,
    bus: Arc<dyn Bus>,
    status: impl Fn() -> NodeStatus + Send + 'static,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let interval = config.node.heartbeat;
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(heartbeat::run(bus, subjects, interval, status, stop))
}

/// Starts the gRPC server API (routers and standalone nodes) on `listener`, until
/// `shutdown`.
async fn serve_api(
    listener: TcpListener,
    config: &Config,
    bus: Arc<dyn Bus>,
    activity: Arc<dyn HistoryStore>,
    shutdown: &CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let nodes = Nodes::new(config.node.heartbeat);
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    nodes.clone().listen(bus.clone(), subjects.nodes()).await?;
    let config = config.clone();
    let stop = shutdown.clone();
    Ok(tokio::spawn(async move {
        let served = api::serve(
            listener,
            &config,
            bus,
            nodes,
            activity,
            stop.cancelled_owned(),
        );
        if let Err(e) = served.await {
            tracing::error!(error = %e, "server API failed");
        }
    }))
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Tells the terminal (and test harnesses, which read these lines) where the node listens.
pub fn announce(mode: Mode, node_id: &str, listeners: &Listeners) -> std::io::Result<()> {
    let addr = listeners.main_addr()?;
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
    if let Some(probes) = listeners.probes_addr() {
        println!("herald probes and metrics served at http://{probes}");
    }
    if let Some(api) = listeners.api_addr() {
        println!("herald api listening on grpc://{api}");
    }
    if let Some(control) = listeners.control_addr() {
        println!("herald control listening on grpc://{control}");
    }
    tracing::info!(%addr, node = node_id, mode, "listening");
    Ok(())
}

async fn nats(config: &Config, node_id: &str) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = NatsBus::connect(&config.nats, node_id).await?;
    if !bus.wait_connected(Duration::from_secs(5)).await {
        tracing::warn!(url = %config.nats.url, "NATS not reachable yet; retrying in the background");
    }
    Ok(Arc::new(bus))
}

/// Connects to Redis, retrying until it answers or the node is shut down (`None`); a
/// configuration that cannot work is an error at once.
async fn redis(config: &Config, shutdown: &CancellationToken) -> anyhow::Result<Option<Redis>> {
    loop {
        match Redis::connect(&config.redis).await {
            Ok(redis) => return Ok(Some(redis)),
            Err(e @ ConnectError::Config(_)) => return Err(e.into()),
            Err(ConnectError::Store(e)) => {
                tracing::warn!(error = %e, "Redis not reachable; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(REDIS_RETRY) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}
