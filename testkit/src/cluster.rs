//! A whole Herald cluster of real processes: `nats-server`, `redis-server`, gateways and
//! routers of our own binary, each on free loopback ports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::node::HeraldProcess;
use crate::servers::Server;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Cluster {
    binary: PathBuf,
    env: Vec<(String, String)>,
    // Nodes first: fields drop in order, so nodes stop before the servers they use.
    pub gateways: Vec<HeraldProcess>,
    pub routers: Vec<HeraldProcess>,
    pub nats: Server,
    pub redis: Server,
}

impl Cluster {
    /// Starts NATS, Redis, `routers` routers and `gateways` gateways, and waits until every
    /// node is ready. `env` holds extra `HERALD_…` settings for every node.
    pub fn start(
        binary: impl AsRef<Path>,
        gateways: usize,
        routers: usize,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(Server::nats(), binary, gateways, routers, env)
    }

    /// Like [`Self::start`], on the given `nats` server (e.g. one with its own limits).
    pub fn start_on(
        nats: Server,
        binary: impl AsRef<Path>,
        gateways: usize,
        routers: usize,
        env: &[(&str, &str)],
    ) -> Self {
        let mut cluster = Self {
            binary: binary.as_ref().to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            gateways: Vec::new(),
            routers: Vec::new(),
            nats,
            redis: Server::redis(),
        };
        for _ in 0..routers {
            cluster.add_router();
        }
        for _ in 0..gateways {
            cluster.add_gateway();
        }
        cluster
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Starts one more router and waits until it serves.
    pub fn add_router(&mut self) -> &HeraldProcess {
        let name = format!("router-{}", self.routers.len() + 1);
        let (nats, redis) = (self.nats.url(), self.redis.url());
        let node = router(&self.binary, &name, &nats, Some(&redis), &self.env());
        self.routers.push(node);
        self.routers.last().expect("just pushed")
    }

    /// Starts one more gateway and waits until it is ready.
    pub fn add_gateway(&mut self) -> &HeraldProcess {
        let name = format!("gateway-{}", self.gateways.len() + 1);
        let node = gateway(&self.binary, &name, &self.nats.url(), &self.env());
        self.gateways.push(node);
        self.gateways.last().expect("just pushed")
    }

    /// WebSocket URL of gateway `i`'s native endpoint.
    pub fn ws_url(&self, i: usize) -> String {
        self.gateways[i].ws_url()
    }
}

/// A router of `binary` named `name`, on the NATS servers `nats` (comma-separated) and the
/// Redis at `redis` (or as `env` says), with `env`'s `HERALD_…` settings; ready.
pub fn router(
    binary: &Path,
    name: &str,
    nats: &str,
    redis: Option<&str>,
    env: &[(&str, &str)],
) -> HeraldProcess {
    let mut args = vec![
        "router",
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
    ];
    args.extend(["--nats", nats, "--node-id", name]);
    if let Some(redis) = redis {
        args.extend(["--redis", redis]);
    }
    ready(HeraldProcess::spawn_with_env(name, binary, &args, env))
}

/// A gateway of `binary` named `name`, on the NATS servers `nats`, with `env`; ready.
pub fn gateway(binary: &Path, name: &str, nats: &str, env: &[(&str, &str)]) -> HeraldProcess {
    let args = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--nats",
        nats,
        "--node-id",
        name,
    ];
    ready(HeraldProcess::spawn_with_env(name, binary, &args, env))
}

fn ready(node: HeraldProcess) -> HeraldProcess {
    node.wait_ready(READY_TIMEOUT);
    node
}
