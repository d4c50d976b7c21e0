//! Stock Socket.IO clients driven from tests: npm `socket.io-client` (pinned in
//! `clients/js`) and PyPI `python-socketio` (pinned in `clients/python`). Each [`Agent`] is a
//! process running the client's agent script, which takes commands as JSON lines on stdin
//! and reports connects, events, acks and disconnects as JSON lines on stdout. Both scripts
//! speak the same lines, so a test can use either. The process is killed on `Drop`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients")
}

/// Which stock client library an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// npm `socket.io-client`, on Node.js.
    Js,
    /// PyPI `python-socketio`.
    Python,
}

impl Library {
    /// The program and script that run an agent of this library.
    fn command(self) -> Command {
        let dir = clients_dir();
        let (program, script, installed) = match self {
            Library::Js => (
                PathBuf::from("node"),
                dir.join("js/agent.mjs"),
                dir.join("js/node_modules/socket.io-client"),
            ),
            Library::Python => (
                dir.join("python/.venv/bin/python"),
                dir.join("python/agent.py"),
                dir.join("python/.venv/bin/python"),
            ),
        };
        assert!(
            installed.exists(),
            "{self:?} Socket.IO client not installed: run scripts/test.sh"
        );
        let mut command = Command::new(program);
        command.arg(script).current_dir(dir);
        command
    }
}

/// Whether `arg` is a Herald recovery offset string (`key:offset` pairs joined by `.`).
pub fn is_offset(arg: &Value) -> bool {
    arg.as_str().is_some_and(|s| {
        s.split('.').all(|pair| {
            pair.split_once(':').is_some_and(|(key, offset)| {
                key.len() == 8
                    && key.bytes().all(|b| b.is_ascii_hexdigit())
                    && !offset.is_empty()
                    && offset.bytes().all(|b| b.is_ascii_digit())
            })
        })
    })
}

/// With connection state recovery, every event ends with an offset string, which the
/// application's listener receives as an extra last argument. For an agent whose sockets
/// have recovery, reports keep the event's own arguments in `args` and move that string to
/// `offset` (`null` when the event had none).
fn split_offset(report: &mut Value) {
    if report["type"] != "event" {
        return;
    }
    let offset = match report["args"].as_array_mut() {
        Some(args) if args.last().is_some_and(is_offset) => args.pop(),
        _ => None,
    };
    report["offset"] = offset.unwrap_or_default();
}

pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    reports: mpsc::UnboundedReceiver<Value>,
    /// Reports read while looking for another one.
    unread: VecDeque<Value>,
    next_seq: u64,
    /// Whether events end with a recovery offset, to be split off (see [`Self::with_offsets`]).
    offsets: bool,
}

impl Agent {
    /// Starts a client of `library` connecting to `url` + `namespace` with client
    /// `options` (`transports` is understood by both libraries).
    pub fn spawn(library: Library, url: &str, namespace: &str, options: Value) -> Self {
        let config = json!({ "namespace": namespace, "options": options });
        Self::start(library, url, config)
    }

    /// Starts one JavaScript socket per namespace of `namespaces`, all on one connection
    /// (the client multiplexes them, as it does by default); socket `i` is on
    /// `namespaces[i]`, and every report carries its index.
    pub fn spawn_multiplexed(url: &str, namespaces: &[&str], options: Value) -> Self {
        let config = json!({ "namespaces": namespaces, "options": options });
        Self::start(Library::Js, url, config)
    }

    /// Starts a python-socketio client whose handlers of `events` take exactly one argument,
    /// `def handler(data)`, as applications write them: an event with more arguments
    /// raises `TypeError` in the client, and is never reported.
    pub fn spawn_python_one_argument(
        url: &str,
        namespace: &str,
        options: Value,
        events: &[&str],
    ) -> Self {
        let config = json!({ "namespace": namespace, "options": options, "one_argument": events });
        Self::start(Library::Python, url, config)
    }

    /// Starts `count` JavaScript sockets in one process, each on a connection of its own;
    /// every report carries the index of its `socket`.
    pub fn spawn_many(url: &str, namespace: &str, options: Value, count: usize) -> Self {
        let config = json!({ "namespace": namespace, "options": options, "count": count });
        Self::start(Library::Js, url, config)
    }

    fn start(library: Library, url: &str, config: Value) -> Self {
        let config = config.to_string();
        let mut child = library
            .command()
            .args([url, &config])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {library:?} agent: {e}"));
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, reports) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(report) => {
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("[socket.io agent] {line}"),
                }
            }
        });
        Self {
            child,
            stdin,
            reports,
            unread: VecDeque::new(),
            next_seq: 1,
            offsets: false,
        }
    }

    /// For sockets with connection state recovery: each event report gets its recovery
    /// offset (its last argument) in `offset`, and keeps the application's arguments in
    /// `args`. Without this, reports show every argument as the handler received it.
    pub fn with_offsets(mut self) -> Self {
        self.offsets = true;
        self
    }

    fn command(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("write to the agent");
        self.stdin.flush().expect("flush to the agent");
    }

    /// The first report (read before or arriving within `timeout`) for which `wanted`
    /// holds; other reports stay queued, in order.
    pub async fn find(
        &mut self,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        if let Some(i) = self.unread.iter().position(&wanted) {
            return Ok(self.unread.remove(i).expect("position is valid"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut report = tokio::time::timeout_at(deadline, self.reports.recv())
                .await
                .map_err(|_| format!("not seen within {timeout:?}; unread: {:?}", self.unread))?
                .ok_or("the agent exited")?;
            if self.offsets {
                split_offset(&mut report);
            }
            if wanted(&report) {
                return Ok(report);
            }
            self.unread.push_back(report);
        }
    }

    /// Waits for the next report of `kind` (`connect`, `event`, `disconnect`, …).
    pub async fn next(&mut self, kind: &str, timeout: Duration) -> Result<Value, String> {
        self.find(timeout, |r| r["type"] == kind).await
    }

    /// Emits without an ack callback.
    pub fn emit(&mut self, event: &str, args: Value) {
        self.command(json!({"op": "emit", "event": event, "args": args, "ack": false}));
    }

    /// Emits with an ack callback and returns the value the server acknowledged with.
    pub async fn emit_ack(
        &mut self,
        event: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.emit_ack_on(0, event, args, timeout).await
    }

    /// [`Self::emit_ack`] from socket `socket` of the agent.
    pub async fn emit_ack_on(
        &mut self,
        socket: usize,
        event: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.command(json!({
            "op": "emit", "seq": seq, "event": event, "args": args, "ack": true, "socket": socket,
        }));
        let ack = self
            .find(timeout, |r| r["type"] == "ack" && r["seq"] == seq)
            .await?;
        Ok(ack["value"].clone())
    }

    /// Drops the transport as a lost network would, with automatic reconnection off
    /// (JavaScript only).
    pub fn cut(&mut self) {
        self.command(json!({"op": "cut"}));
    }

    /// Reconnects after [`Self::cut`] as the Manager does: with the socket's pid and the
    /// last offset it received (JavaScript only).
    pub fn reconnect(&mut self) {
        self.command(json!({"op": "reconnect"}));
    }

    /// Sets the `auth` object the socket sends with its next CONNECT (JavaScript only).
    pub fn set_auth(&mut self, auth: Value) {
        self.command(json!({"op": "auth", "auth": auth}));
    }

    /// `socket.disconnect()`: leaves the namespace on purpose.
    pub fn disconnect(&mut self) {
        self.disconnect_on(0);
    }

    /// [`Self::disconnect`] for socket `socket` of the agent.
    pub fn disconnect_on(&mut self, socket: usize) {
        self.command(json!({"op": "disconnect", "socket": socket}));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
