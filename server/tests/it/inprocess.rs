//! Nodes run inside the test process through the `herald` library, for tests where
//! processes are not the point (no kill, no signal, no metrics of their own): nothing to
//! spawn, no address to read from a log. Real NATS and Redis servers still serve a cluster.

use std::net::SocketAddr;

use herald::{Listeners, Mode};
use herald_core::config::Config;
use herald_testkit::node::http_status;
use herald_testkit::{Server, wait_for};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PATIENCE;

/// One node in this process, stopped (and drained) by [`Node::stop`], or at once on drop.
pub struct Node {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    /// Starts a node of `mode` with `settings` (`HERALD_…` names) on free loopback ports,
    /// and waits until it is ready.
    pub async fn start(mode: Mode, name: &str, settings: &[(&str, &str)]) -> Self {
        let mut config = Config::from_settings(settings).expect("valid settings");
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        config.gateway.listen = loopback;
        config.router.listen = loopback;
        config.api.listen = loopback;
        config.node.id = name.into();
        let listeners = Listeners::bind(mode, &config).await.expect("bind");
        let addr = listeners.main_addr().expect("an address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(herald::run(mode, config, listeners, shutdown.clone()));
        let mut node = Self {
            addr,
            shutdown,
            task: Some(task),
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let addr = self.addr;
        let ready = tokio::task::spawn_blocking(move || {
            wait_for(PATIENCE, || http_status(addr, "/readyz") == Some(200))
        });
        let task = self.task.as_mut().expect("running");
        tokio::select! {
            ready = ready => assert!(ready.expect("a check"), "{addr} not ready in time"),
            ended = task => panic!("the node stopped while starting: {ended:?}"),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of the native WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Stops the node as a signal would, and waits until it has drained.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task).await??
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A standalone node in this process.
pub async fn standalone(settings: &[(&str, &str)]) -> Node {
    Node::start(Mode::Standalone, "standalone", settings).await
}

/// NATS, Redis, routers and gateways, the nodes in this process.
pub struct Cluster {
    // Nodes first: fields drop in order, so nodes stop before the servers they use.
    pub gateways: Vec<Node>,
    pub routers: Vec<Node>,
    /// Serving the nodes while the cluster lives.
    _nats: Server,
    _redis: Server,
}

impl Cluster {
    /// Starts `routers` routers, then `gateways` gateways, each with `settings`.
    pub async fn start(gateways: usize, routers: usize, settings: &[(&str, &str)]) -> Self {
        let (nats, redis) = (Server::nats(), Server::redis());
        let (nats_url, redis_url) = (nats.url(), redis.url());
        let mut gateway_settings: Vec<(&str, &str)> = settings.to_vec();
        gateway_settings.push(("HERALD_NATS__URL", &nats_url));
        let mut router_settings = gateway_settings.clone();
        router_settings.push(("HERALD_REDIS__URL", &redis_url));
        let mut cluster = Self {
            gateways: Vec::new(),
            routers: Vec::new(),
            _nats: nats,
            _redis: redis,
        };
        for n in 1..=routers {
            let name = format!("router-{n}");
            let node = Node::start(Mode::Router, &name, &router_settings).await;
            cluster.routers.push(node);
        }
        for n in 1..=gateways {
            let name = format!("gateway-{n}");
            let node = Node::start(Mode::Gateway, &name, &gateway_settings).await;
            cluster.gateways.push(node);
        }
        cluster
    }

    /// WebSocket URL of gateway `i`'s native endpoint.
    pub fn ws_url(&self, i: usize) -> String {
        self.gateways[i].ws_url()
    }
}
