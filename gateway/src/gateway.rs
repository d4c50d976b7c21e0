//! The shared state of one gateway node, and serving it on a listener.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use herald_core::auth::Verifier;
use herald_core::bus::Bus;
use herald_core::config::{ChannelsConfig, Config, ConfigError, GatewayConfig, SocketIoConfig};
use herald_core::subjects::Subjects;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::Clients;
use crate::control;
use crate::drain::Drain;
use crate::feed::FeedConfig;
use crate::http;
use crate::hub::{ClientId, Hub};
use crate::outbound::Bounds;
use crate::presence::PresenceReporter;
use crate::socketio::{self, link::Links};
use herald_core::upstream::Upstream;

/// How long sessions get to say goodbye after the drain period.
const SESSION_GRACE: Duration = Duration::from_secs(5);

pub struct Gateway {
    pub(crate) node_id: String,
    pub(crate) config: GatewayConfig,
    pub(crate) channels: ChannelsConfig,
    pub(crate) socketio: SocketIoConfig,
    pub(crate) auth: Verifier,
    pub(crate) hub: Arc<Hub>,
    pub(crate) presence: Arc<PresenceReporter>,
    /// Client connections by user and client id, for the server API's commands.
    pub(crate) clients: Clients,
    presence_heartbeat: Duration,
    pub(crate) upstream: Upstream,
    /// Begins when the node is told to stop; every session watches for its turn to leave,
    /// because upgraded WebSockets are out of reach of the HTTP server's own graceful
    /// shutdown.
    pub(crate) drain: Drain,
    pub(crate) sessions: TaskTracker,
    /// Engine.IO sessions held here, for polling requests and upgrades.
    pub(crate) socketio_links: Arc<Links>,
    /// Starts every Engine.IO sid made here, so any gateway can tell where a session lives.
    pub(crate) engine_token: String,
    next_client: AtomicU64,
    /// Client connections held now, against `config.max_connections`.
    connections: Arc<AtomicUsize>,
}

/// One client connection counted against the gateway's limit, until dropped.
pub struct ConnectionPermit {
    connections: Arc<AtomicUsize>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gateway {
    /// Fails only on an auth key that cannot be read.
    pub fn new(
        node_id: impl Into<String>,
        config: &Config,
        bus: Arc<dyn Bus>,
    ) -> Result<Arc<Self>, ConfigError> {
        let upstream = Upstream::new(
            bus,
            Subjects::new(config.nats.subject_prefix.clone()),
            config.gateway.request_timeout,
        );
        let feed_config = FeedConfig {
            gap_hold: config.gateway.gap_hold,
        };
        Ok(Arc::new(Self {
            auth: Verifier::new(&config.auth)?,
            node_id: node_id.into(),
            config: config.gateway.clone(),
            channels: config.channels.clone(),
            socketio: config.socketio.clone(),
            hub: Hub::new(
                upstream.clone(),
                feed_config,
                config.gateway.request_timeout,
            ),
            upstream,
            presence: Arc::default(),
            clients: Clients::default(),
            presence_heartbeat: config.presence.heartbeat,
            drain: Drain::new(config.gateway.drain_period),
            sessions: TaskTracker::new(),
            socketio_links: Arc::default(),
            engine_token: socketio::new_token(),
            next_client: AtomicU64::new(1),
            connections: Arc::default(),
        }))
    }

    /// A place for one more client connection; `None` at `max_connections`.
    pub(crate) fn connection_permit(&self) -> Option<ConnectionPermit> {
        let limit = match self.config.max_connections {
            0 => usize::MAX,
            limit => limit,
        };
        self.connections
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            connections: self.connections.clone(),
        })
    }

    /// How much one connection may have queued.
    pub(crate) fn outbound_bounds(&self) -> Bounds {
        Bounds {
            frames: self.config.outbound_queue,
            bytes: self.config.outbound_bytes,
        }
    }

    pub(crate) fn next_client_id(&self) -> ClientId {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// A new Engine.IO session id: this gateway's token, then random characters.
    pub(crate) fn new_engine_sid(&self) -> String {
        self.engine_token.clone() + &socketio::random_id::<12>()
    }

    /// How many client connections, subscriptions and channels this gateway holds.
    pub fn load(&self) -> (u64, u64, u64) {
        let (subscriptions, channels) = self.hub.totals();
        let connections = self.connections.load(Ordering::Relaxed) as u64;
        (connections, subscriptions, channels)
    }

    /// Ready to take clients: the bus is connected and the node is not draining.
    pub fn ready(&self) -> bool {
        !self.drain.is_draining() && self.upstream.bus().is_connected()
    }
}

/// Serves the gateway on `listener`. When `shutdown` completes the gateway drains: it
/// turns not ready and refuses new clients, sends its clients away over the drain period
/// (code 3000, so that they reconnect elsewhere), waits briefly for their goodbyes, sends
/// the last presence report, and returns. Probes and `/metrics` answer throughout, on
/// `probes` when the gateway has a listener for them (`gateway.metrics_listen`).
pub async fn serve(
    listener: TcpListener,
    probes: Option<TcpListener>,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(error) = socketio::forward::listen(gateway.clone()).await {
        tracing::warn!(%error, "cannot take forwarded Socket.IO polling requests");
    }
    if let Err(error) = control::listen(gateway.clone()).await {
        tracing::warn!(%error, "cannot take commands of the server API");
    }
    // Presence reports outlive the sessions, so that the leaves of drained clients go out.
    let presence_stop = CancellationToken::new();
    let reporter = tokio::spawn(gateway.presence.clone().run(
        gateway.upstream.clone(),
        gateway.presence_heartbeat,
        presence_stop.clone(),
    ));
    let probes_stop = CancellationToken::new();
    if let Some(probes) = probes {
        let app = http::probes(gateway.clone());
        let stop = probes_stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(probes, app).with_graceful_shutdown(stop).await {
                tracing::error!(%error, "the probe and metrics listener failed");
            }
        });
    }
    let app = http::router(gateway.clone());
    // Real-time frames must leave at once: Nagle's algorithm would hold small writes back
    // for tens of milliseconds waiting for the client's delayed acknowledgement.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // The listener stays open while the sessions drain, for probes and metrics.
    axum::serve(listener, app)
        .with_graceful_shutdown(drain_sessions(gateway.clone(), shutdown))
        .await?;
    presence_stop.cancel();
    let _ = tokio::time::timeout(gateway.config.request_timeout, reporter).await;
    probes_stop.cancel();
    Ok(())
}

/// Waits for `shutdown`, then drains the gateway's sessions.
async fn drain_sessions(gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    shutdown.await;
    gateway.drain.begin();
    gateway.sessions.close();
    let limit = gateway.drain.period() + SESSION_GRACE;
    if tokio::time::timeout(limit, gateway.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = gateway.sessions.len(),
            "sessions still open after the drain period"
        );
    }
}
