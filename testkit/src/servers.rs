//! Real `nats-server` and `redis-server` processes for tests.
//!
//! Each runs on a free loopback port and is killed on `Drop`. `stop` and `start` keep the
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

/// A child server process on a fixed port.
struct ServerProcess {
    name: &'static str,
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl ServerProcess {
    fn new(name: &'static str, port: u16, args: Vec<String>) -> Self {
        let mut server = Self {
            name,
            port,
            args,
            child: None,
        };
        server.start();
        server
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn start(&mut self) {
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `nats-server` on a free port.
pub struct NatsServer(ServerProcess);

impl NatsServer {
    pub fn start() -> Self {
        let port = free_port();
        let args = ["-a", "127.0.0.1", "-p", &port.to_string()]
            .map(String::from)
            .to_vec();
        Self(ServerProcess::new("nats-server", port, args))
    }

    pub fn url(&self) -> String {
        format!("nats://{}", self.0.addr())
    }

    /// Kills the server; clients see the connection drop.
    pub fn stop(&mut self) {
        self.0.stop();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.0.start();
    }
}

/// A `redis-server` on a free port that keeps nothing on disk.
pub struct RedisServer(ServerProcess);

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let args = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .map(String::from)
        .to_vec();
        Self(ServerProcess::new("redis-server", port, args))
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.0.addr())
    }

    pub fn stop(&mut self) {
        self.0.stop();
    }

    pub fn restart(&mut self) {
        self.0.start();
    }
}
