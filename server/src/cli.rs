//! Command-line interface: the mode to run and flags for the common settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
pub use herald::Mode;
use serde_json::{Map, Value, json};

/// Herald: a real-time message broker for instant messaging and data sync.
///
/// Without arguments, runs standalone on port 3000: gateway and router in one process,
/// with in-memory history; no NATS or Redis needed. In a cluster, run gateways (client
/// connections) and routers (history, ordering) against a shared NATS and Redis.
///
/// Settings come from built-in defaults, then the config file, then HERALD_* environment
/// variables (HERALD_<SECTION>__<KEY>, e.g. HERALD_NATS__URL), then these flags.
/// `herald.example.toml` lists every setting.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// What this process runs.
    #[arg(value_enum, default_value_t = Mode::Standalone)]
    pub mode: Mode,

    /// TOML config file.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address of this node's HTTP listener: client connections for standalone and gateway
    /// (gateway.listen, default 0.0.0.0:3000), health probes for a router (router.listen,
    /// default 0.0.0.0:3100). Port 0 picks a free port.
    #[arg(short, long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Address of the gRPC server API of a router or standalone node (api.listen, default
    /// 127.0.0.1:3200; any other address needs api.key). Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,

    /// NATS URL(s) for gateway and router (nats.url).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,

    /// Redis URL for a router (redis.url).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Name of this node in the cluster (node.id); random when unset.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Log filter such as `info` or `herald_gateway=debug,info` (log.level).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl Cli {
    /// The settings given as flags, shaped like the config file, to merge over it.
    pub fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut set = |section: &str, key: &str, value: Value| {
            let entry = root.entry(section).or_insert_with(|| json!({}));
            entry[key] = value;
        };
        if let Some(listen) = self.listen {
            let section = if self.mode == Mode::Router {
                "router"
            } else {
                "gateway"
            };
            set(section, "listen", json!(listen.to_string()));
        }
        if let Some(listen) = self.api_listen {
            set("api", "listen", json!(listen.to_string()));
        }
        if let Some(url) = &self.nats {
            set("nats", "url", json!(url));
        }
        if let Some(url) = &self.redis {
            set("redis", "url", json!(url));
        }
        if let Some(id) = &self.node_id {
            set("node", "id", json!(id));
        }
        if let Some(level) = &self.log_level {
            set("log", "level", json!(level));
        }
        Value::Object(root)
    }
}
