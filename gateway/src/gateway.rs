//! One gateway node: the session context its clients share, its Socket.IO endpoint, the
//! connections it holds and the session tasks its drain waits for.

use std::sync::Arc;
use std::time::Duration;

use herald_core::bus::Bus;
use herald_core::config::{Config, ConfigError, ControlConfig};
use tokio_util::task::TaskTracker;

use crate::connections::{ConnectionPermit, Connections};
use crate::context::Context;
use crate::metrics::{self, Gauges};
use crate::socketio::endpoint::Endpoint;

pub struct Gateway {
    pub(crate) ctx: Arc<Context>,
    pub(crate) socketio: Arc<Endpoint>,
    /// Every session task (native and Socket.IO), so that a drain can wait for them:
    /// upgraded WebSockets are out of reach of the HTTP server's own graceful shutdown.
    pub(crate) sessions: TaskTracker,
    /// Client connections held now, against `gateway.max_connections`.
    connections: Connections,
    pub(crate) presence_heartbeat: Duration,
    /// How the control service is served.
    pub(crate) control: ControlConfig,
}

impl Gateway {
    /// Fails only on an auth key that cannot be read.
    pub fn new(
        node_id: impl Into<String>,
        config: &Config,
        bus: Arc<dyn Bus>,
    ) -> Result<Arc<Self>, ConfigError> {
        let ctx = Context::new(node_id, config, bus)?;
        let sessions = TaskTracker::new();
        Ok(Arc::new(Self {
            socketio: Endpoint::new(ctx.clone(), sessions.clone()),
            ctx,
            sessions,
            connections: Connections::new(config.gateway.max_connections),
            presence_heartbeat: config.presence.heartbeat,
            control: config.control.clone(),
        }))
    }

    /// A place for one more client connection; `None` at `max_connections`.
    pub(crate) fn connection_permit(&self) -> Option<ConnectionPermit> {
        self.connections.permit()
    }

    /// How many client connections, subscriptions and channels this gateway holds.
    pub fn load(&self) -> (u64, u64, u64) {
        let (subscriptions, channels) = self.ctx.hub.totals();
        (self.connections.held() as u64, subscriptions, channels)
    }

    /// Whether the gateway is draining (a stop, or an operator's `heraldctl node drain`).
    pub fn draining(&self) -> bool {
        self.ctx.drain.is_draining()
    }

    /// Ready to take clients: the bus is connected and the node is not draining.
    pub fn ready(&self) -> bool {
        !self.ctx.drain.is_draining() && self.ctx.upstream.bus().is_connected()
    }

    /// Sets the gauges that describe the gateway now; called before each scrape.
    pub(crate) fn observe(&self) {
        let (connections, subscriptions, channels) = self.load();
        let (polling, websocket) = self.socketio.links.by_transport();
        metrics::observe(&Gauges {
            native: connections.saturating_sub((polling + websocket) as u64),
            socketio_websocket: websocket as u64,
            socketio_polling: polling as u64,
            subscriptions,
            channels,
            draining: self.ctx.drain.is_draining(),
            bus_connected: self.ctx.upstream.bus().is_connected(),
        });
    }
}
