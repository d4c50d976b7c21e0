//! Real `nats-server` and `redis-server` processes for tests.
//!
//! Each runs on a free loopback port and is killed on `Drop`. `stop` and `restart` keep the
//! port, so a fault test can take a server away and bring it back where clients expect it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait::wait_for;

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago. The servers we start cannot bind `:0` and report
/// back, so we ask the kernel for a free port and hand it over.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Finds a server binary on `PATH` or in the Debian locations (`/usr/sbin` is not on every
/// user's `PATH`).
pub fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found: run scripts/test.sh, which installs it"))
}

/// A server child process on a fixed loopback port, killed on `Drop`.
pub struct Server {
    name: &'static str,
    scheme: &'static str,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    /// A configuration file written for this server, removed with it.
    config_file: Option<std::path::PathBuf>,
}

impl Server {
    /// A `nats-server` on a free port.
    pub fn nats() -> Self {
        let port = free_port();
        Self::start(
            "nats-server",
            "nats",
            port,
            &["-a", "127.0.0.1", "-p", &port.to_string()],
        )
    }

    /// A `nats-server` on a free port with `config` (nats-server's configuration
    /// format, e.g. `max_payload: 262144`) on top of the listen address.
    pub fn nats_with_config(config: &str) -> Self {
        static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("herald-nats-{}-{n}.conf", std::process::id()));
        std::fs::write(&path, config).expect("write a nats-server config file");
        let port = free_port();
        let file = path.to_string_lossy().into_owned();
        let mut server = Self::start(
            "nats-server",
            "nats",
            port,
            &["-c", &file, "-a", "127.0.0.1", "-p", &port.to_string()],
        );
        server.config_file = Some(path);
        server
    }

    /// A `redis-server` on a free port that keeps nothing on disk.
    pub fn redis() -> Self {
        Self::redis_with(&[])
    }

    /// A `redis-server` on a free port that keeps nothing on disk, with more
    /// configuration (`--name value` pairs, as on its command line).
    pub fn redis_with(args: &[&str]) -> Self {
        let port = free_port();
        Self::redis_on(
            port,
            "redis",
            &[&["--port", &port.to_string()], args].concat(),
        )
    }

    /// A `redis-server` (or sentinel) listening on `port`, its URL scheme `scheme`, with
    /// `args` (which open the port) after the shared ones.
    pub(crate) fn redis_on(port: u16, scheme: &'static str, args: &[&str]) -> Self {
        let shared = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        Self::start("redis-server", scheme, port, &[&shared[..], args].concat())
    }

    pub(crate) fn start(
        name: &'static str,
        scheme: &'static str,
        port: u16,
        args: &[&str],
    ) -> Self {
        let mut server = Self {
            name,
            scheme,
            port,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            config_file: None,
        };
        server.restart();
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it listens, on loopback.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL clients connect to, e.g. `nats://127.0.0.1:4222`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr())
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let child = Command::new(find_binary(self.name))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
        let addr = self.addr();
        let up = wait_for(START_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(up, "{} did not listen on {addr} in time", self.name);
    }

    /// The running server's process id (for benchmarks that pin or measure it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the server's process without ending it (SIGSTOP): it answers nothing, and
    /// its connections stay open, until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("the server is running").to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "kill {signal} {pid} failed"
        );
    }

    /// Kills the server; its clients see the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(path) = self.config_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
