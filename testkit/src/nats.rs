//! A NATS cluster for tests: three `nats-server` processes routed to each other on
//! loopback, any of which a test can SIGKILL and start again.

use std::net::SocketAddr;
use std::time::Duration;

use crate::node::http_get;
use crate::servers::{Server, free_port};
use crate::wait::wait_for;

const FORMED: Duration = Duration::from_secs(30);

/// NATS servers in one cluster, each with its client port, route port and monitoring
/// port on loopback.
pub struct NatsCluster {
    pub nodes: Vec<Server>,
    monitors: Vec<SocketAddr>,
}

impl NatsCluster {
    /// Starts `n` servers and waits until each has a route to every other.
    pub fn start(n: usize) -> Self {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let monitors: Vec<SocketAddr> = (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let urls: Vec<String> = routes
            .iter()
            .map(|port| format!("\"nats-route://127.0.0.1:{port}\""))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                Server::nats_with_config(&format!(
                    "server_name: n{i}\nhttp: \"{}\"\n\
                     cluster {{ name: herald, listen: \"127.0.0.1:{}\", routes: [{}] }}\n",
                    monitors[i],
                    routes[i],
                    urls.join(", ")
                ))
            })
            .collect();
        let cluster = Self { nodes, monitors };
        assert!(cluster.wait_formed(), "the NATS cluster did not form");
        cluster
    }

    /// Every running server's URL, comma-separated, as a node's `nats.url`.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Server::url).collect();
        urls.join(",")
    }

    /// The index of the running server that holds the client connection named `name`
    /// (a Herald node names its connection by its node id).
    pub fn serving(&self, name: &str) -> Option<usize> {
        (0..self.nodes.len()).find(|i| {
            self.nodes[*i].pid().is_some()
                && http_get(self.monitors[*i], "/connz").is_some_and(|(_, body)| {
                    let connz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    connz["connections"].as_array().is_some_and(|connections| {
                        connections.iter().any(|c| c["name"].as_str() == Some(name))
                    })
                })
        })
    }

    /// Waits until every running server has a route to every other running one.
    pub fn wait_formed(&self) -> bool {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].pid().is_some())
            .collect();
        wait_for(FORMED, || {
            running.iter().all(|i| {
                http_get(self.monitors[*i], "/routez").is_some_and(|(status, body)| {
                    status == 200 && peers(&body) + 1 >= running.len()
                })
            })
        })
    }
}

/// How many other servers a `/routez` reply has routes to (a pair of servers may hold
/// several routes).
fn peers(routez: &str) -> usize {
    let routez: serde_json::Value = serde_json::from_str(routez).unwrap_or_default();
    let mut remotes: Vec<&str> = routez["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .filter_map(|route| route["remote_id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    remotes.sort_unstable();
    remotes.dedup();
    remotes.len()
}
