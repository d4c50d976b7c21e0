//! What a client session may use of its gateway: the settings, token verification, the
//! hooks to the app's backend, the hub, the routers (through [`Upstream`]), presence reports, the server API's view of the
//! sessions, and the drain. Nothing of HTTP or of a transport is here, so a session runs,
//! and is tested, on a context built from a configuration and a bus alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::auth::Verifier;
use herald_core::bus::Bus;
use herald_core::config::{ChannelsConfig, Config, ConfigError, GatewayConfig, SocketIoConfig};
use herald_core::subjects::Subjects;
use herald_core::upstream::Upstream;

use crate::clients::Clients;
use crate::drain::Drain;
use crate::feed::FeedConfig;
use crate::hooks::Hooks;
use crate::hub::{ClientId, Hub};
use crate::outbound::Bounds;
use crate::presence::PresenceReporter;
use crate::publisher::Publisher;

pub struct Context {
    /// This node's id: the prefix of its clients' cluster-wide names.
    pub node_id: String,
    pub config: GatewayConfig,
    pub channels: ChannelsConfig,
    pub socketio: SocketIoConfig,
    pub auth: Verifier,
    /// Calls to the app's backend.
    pub hooks: Hooks,
    pub hub: Arc<Hub>,
    pub upstream: Upstream,
    /// Publish requests to the routers, gathered under load.
    pub publisher: Publisher,
    pub presence: Arc<PresenceReporter>,
    /// Client connections by user and client id, for the server API's commands.
    pub clients: Clients,
    /// Begins when the node is told to stop; every session watches for its turn to leave.
    pub drain: Drain,
    next_id: AtomicU64,
}

impl Context {
    /// Fails only on an auth key that cannot be read. Runs on a tokio runtime (it starts
    /// the publisher's task).
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
            hooks: Hooks::new(&config.hooks)?,
            node_id: node_id.into(),
            config: config.gateway.clone(),
            channels: config.channels.clone(),
            socketio: config.socketio.clone(),
            hub: Hub::new(
                upstream.clone(),
                config.channels.clone(),
                feed_config,
                config.gateway.request_timeout,
            ),
            publisher: Publisher::start(upstream.clone(), config.gateway.publish_in_flight),
            upstream,
            presence: Arc::default(),
            clients: Clients::default(),
            drain: Drain::new(config.gateway.drain_period),
            next_id: AtomicU64::new(1),
        }))
    }

    /// A new id for a connection or a subscriber, unique on this gateway.
    pub fn next_id(&self) -> ClientId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// How much one connection may have queued.
    pub fn outbound_bounds(&self) -> Bounds {
        Bounds {
            frames: self.config.outbound_queue,
            bytes: self.config.outbound_bytes,
        }
    }
}
