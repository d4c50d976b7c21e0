//! A Herald node running as a real process of our own binary.
//!
//! The node is started with `--listen 127.0.0.1:0`; the port it got is read from the line
//! it prints on standard output (`… listening on http://ADDR …`), so tests never race for
//! ports. The process is killed on `Drop`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::wait::wait_for;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const LISTENING: &str = "listening on http://";
const API_LISTENING: &str = "api listening on grpc://";
const CONTROL_LISTENING: &str = "control listening on grpc://";
const PROBES_SERVED: &str = "probes and metrics served at http://";
/// Lines of other listeners a node announces, besides its main one.
const ANNOUNCEMENTS: [&str; 3] = [API_LISTENING, CONTROL_LISTENING, PROBES_SERVED];

pub struct HeraldProcess {
    name: String,
    child: Child,
    addr: SocketAddr,
    /// Where the other listeners are (the gRPC server API, a separate probes listener),
    /// by the line announcing each, once the node said so.
    announced: Arc<Mutex<Vec<(&'static str, SocketAddr)>>>,
}

impl HeraldProcess {
    /// Runs `binary` with `args` (which must make it listen on `127.0.0.1:0`) and waits until
    /// it reports its address. `name` prefixes its output in the test log.
    pub fn spawn(name: &str, binary: impl AsRef<Path>, args: &[&str]) -> Self {
        Self::spawn_with_env(name, binary, args, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables (`HERALD_…` settings).
    pub fn spawn_with_env(
        name: &str,
        binary: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(binary.as_ref())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            // After the default: a caller's `RUST_LOG` wins.
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        let label = name.to_string();
        let announced: Arc<Mutex<Vec<(&'static str, SocketAddr)>>> = Arc::default();
        let seen = announced.clone();
        // Keep draining stdout for the life of the process, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for marker in ANNOUNCEMENTS {
                    if let Some(rest) = line.split(marker).nth(1)
                        && let Ok(addr) = rest.trim().parse::<SocketAddr>()
                        && let Ok(mut seen) = seen.lock()
                    {
                        seen.push((marker, addr));
                    }
                }
                if let Some(rest) = line.split(LISTENING).nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    if let (Some(tx), Ok(addr)) = (tx.take(), addr.parse::<SocketAddr>()) {
                        let _ = tx.send(addr);
                    }
                }
                eprintln!("[{label}] {line}");
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not report its address within {START_TIMEOUT:?}");
            }
        };
        Self {
            name: name.to_string(),
            child,
            addr,
            announced,
        }
    }

    /// Where the node's gRPC server API listens; panics if it did not say in time.
    pub fn api_addr(&self) -> SocketAddr {
        self.announced(API_LISTENING)
    }

    /// Where a gateway's control service listens; panics if it did not say in time.
    pub fn control_addr(&self) -> SocketAddr {
        self.announced(CONTROL_LISTENING)
    }

    /// Where a gateway serves its probes and metrics when `gateway.metrics_listen` is set;
    /// panics if it did not say in time.
    pub fn probes_addr(&self) -> SocketAddr {
        self.announced(PROBES_SERVED)
    }

    fn announced(&self, marker: &str) -> SocketAddr {
        let mut addr = None;
        wait_for(START_TIMEOUT, || {
            addr = self
                .announced
                .lock()
                .ok()
                .and_then(|seen| seen.iter().find(|(m, _)| *m == marker).map(|(_, a)| *a));
            addr.is_some()
        });
        addr.unwrap_or_else(|| panic!("{} announced no address for {marker:?}", self.name))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until `GET /readyz` answers 200; panics after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        let ready = wait_for(timeout, || http_status(self.addr, "/readyz") == Some(200));
        assert!(ready, "{} not ready within {timeout:?}", self.name);
    }

    /// URL of the native WebSocket endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to shut down (SIGTERM), as an orchestrator would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.name);
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_for(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (for benchmarks that pin or measure the node).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory in bytes (Linux), if it can be read.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for HeraldProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Status code of `GET path` on `addr`, or `None` if the request failed.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// Status code and body of `GET path` on `addr`, or `None` if the request failed.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8(response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// The body of a chunked HTTP response.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}
