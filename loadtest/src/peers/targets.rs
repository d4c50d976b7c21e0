//! The systems compared, started as real processes on free loopback ports and pinned to
//! the server CPU: the Socket.IO-Node cluster (two `node` processes of `socket.io` 4.8
//! with the Redis adapter, and their `redis-server`), `nats-server` with its websocket
//! listener, and a Herald cluster (NATS, Redis, two routers, two gateways).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use herald_testkit::servers::free_port;
use herald_testkit::{Cluster, Server};

use super::wire::Dialect;
use crate::procfs;

/// Where the Socket.IO-Node server and its `package.json` live, from the workspace root.
const NODE_PEER: &str = "loadtest/peers/socketio-node";

/// The HS256 secret of the Herald clusters' connection tokens.
const TOKEN_SECRET: &str = "herald-bench";

/// A connection token of Herald's clusters for `user`, valid for an hour.
pub fn user_token(user: &str) -> anyhow::Result<String> {
    let claims = serde_json::json!({
        "sub": user,
        "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    SocketIoNode,
    Nats,
    Herald { dialect: Dialect, history: bool },
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::SocketIoNode,
        Target::Nats,
        Target::Herald {
            dialect: Dialect::SocketIo,
            history: true,
        },
        Target::Herald {
            dialect: Dialect::Native,
            history: true,
        },
        Target::Herald {
            dialect: Dialect::SocketIo,
            history: false,
        },
        Target::Herald {
            dialect: Dialect::Native,
            history: false,
        },
    ];

    /// The name on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::SocketIoNode => "socketio-node",
            Self::Nats => "nats-ws",
            Self::Herald {
                dialect: Dialect::SocketIo,
                history: true,
            } => "herald-socketio",
            Self::Herald {
                dialect: Dialect::SocketIo,
                history: false,
            } => "herald-socketio-nohistory",
            Self::Herald { history: true, .. } => "herald-native",
            Self::Herald { history: false, .. } => "herald-native-nohistory",
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            Self::SocketIoNode => Dialect::SocketIo,
            Self::Nats => Dialect::Nats,
            Self::Herald { dialect, .. } => dialect,
        }
    }

    /// Starts the system on the server CPU and returns once it takes connections; `cpus`
    /// are the server's and the load generator's.
    pub fn start(self, herald: &Path, cpus: Option<(usize, usize)>) -> anyhow::Result<Running> {
        // Processes inherit their parent's CPUs: started while this one is on the server
        // CPU, each sees one CPU from birth and sizes its runtime for it (tokio's workers,
        // Go's GOMAXPROCS), as in a container given one core. Pinned after start instead,
        // tokio kept two workers switching on one CPU.
        if let Some((server, _)) = cpus {
            pin(std::process::id(), server)?;
        }
        let running = match self {
            Self::SocketIoNode => start_socketio_node(),
            Self::Nats => Ok(start_nats()),
            Self::Herald { history, .. } => Ok(start_herald(herald, history)),
        };
        if let Some((_, generator)) = cpus {
            pin(std::process::id(), generator)?;
        }
        running
    }
}

/// A started system: where clients connect (spread over in turn), and its processes.
pub struct Running {
    pub endpoints: Vec<SocketAddr>,
    /// Whether connections may sign in as users ([`user_token`]), each then in a personal
    /// channel of its own: Herald's.
    pub users: bool,
    /// Every server process, by kind ("gateway", "redis", …).
    processes: Vec<(&'static str, u32)>,
    // Kept for their `Drop`, which stops the processes.
    _cluster: Option<Cluster>,
    _servers: Vec<Server>,
    _children: Vec<ChildGuard>,
}

impl Running {
    /// Resident memory of all its processes, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        self.rss_by_kind().iter().map(|(_, bytes)| bytes).sum()
    }

    /// Resident memory per kind of process (the sum over processes of that kind), in
    /// bytes, in the order the kinds were started.
    pub fn rss_by_kind(&self) -> Vec<(&'static str, u64)> {
        procfs::by_kind(&self.processes, |pid| procfs::rss_bytes(pid).unwrap_or(0))
    }

    /// CPU time all its processes used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.processes
            .iter()
            .filter_map(|(_, pid)| procfs::cpu_seconds(*pid))
            .sum()
    }
}

/// Pins every thread of `pid` to `cpu`.
pub fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux) is needed to pin processes")?;
    if !status.success() {
        bail!("taskset could not pin {pid} to CPU {cpu}");
    }
    Ok(())
}

fn start_herald(binary: &Path, history: bool) -> Running {
    let mut settings = vec![
        ("HERALD_LOG__LEVEL", "warn"),
        ("RUST_LOG", "warn"),
        ("HERALD_AUTH__HMAC_SECRET", TOKEN_SECRET),
    ];
    if !history {
        settings.push(("HERALD_CHANNELS__DEFAULT__HISTORY_SIZE", "0"));
    }
    let cluster = Cluster::start(binary, 2, 2, &settings);
    let processes = procfs::of_cluster(&cluster);
    Running {
        endpoints: cluster.gateways.iter().map(|g| g.addr()).collect(),
        users: true,
        processes,
        _cluster: Some(cluster),
        _servers: Vec::new(),
        _children: Vec::new(),
    }
}

fn start_nats() -> Running {
    let port = free_port();
    let config = format!(
        "websocket {{ listen: \"127.0.0.1:{port}\", no_tls: true }}\nlog_file: \"/dev/null\""
    );
    let nats = Server::nats_with_config(&config);
    let endpoint = SocketAddr::from(([127, 0, 0, 1], port));
    Running {
        endpoints: vec![endpoint],
        users: false,
        processes: nats.pid().map(|pid| ("nats", pid)).into_iter().collect(),
        _cluster: None,
        _servers: vec![nats],
        _children: Vec::new(),
    }
}

fn start_socketio_node() -> anyhow::Result<Running> {
    let dir = PathBuf::from(NODE_PEER);
    install_node_peer(&dir)?;
    let redis = Server::redis();
    let mut children = Vec::new();
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis.url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start node (is Node.js installed?)")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let guard = ChildGuard(child);
        wait_ready(stdout)?;
        children.push(guard);
        endpoints.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    let mut processes: Vec<(&str, u32)> = children.iter().map(|c| ("node", c.0.id())).collect();
    processes.extend(redis.pid().map(|pid| ("redis", pid)));
    Ok(Running {
        endpoints,
        users: false,
        processes,
        _cluster: None,
        _servers: vec![redis],
        _children: children,
    })
}

/// Installs the pinned `socket.io` and adapter (`npm ci`) unless they are there.
fn install_node_peer(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules/socket.io").is_dir() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .context("npm is needed for the Socket.IO-Node peer")?;
    if !status.success() {
        bail!("npm ci in {} failed", dir.display());
    }
    Ok(())
}

/// Waits for the Node server's "ready" line, reading on a thread so it can time out.
fn wait_ready(stdout: std::process::ChildStdout) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.any(|line| line.is_ok_and(|l| l.trim() == "ready"));
        let _ = tx.send(ready);
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(true) => Ok(()),
        _ => bail!("the Socket.IO-Node server did not start"),
    }
}

/// A child process killed on `Drop`.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
