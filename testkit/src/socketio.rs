//! Stock Socket.IO clients (npm `socket.io-client`, pinned in `clients/js`) driven from
//! tests: each [`Agent`] is a `node` process running `clients/js/agent.mjs`, which takes
//! commands as JSON lines on stdin and reports connects, events, acks and disconnects as
//! JSON lines on stdout. The process is killed on `Drop`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/js")
}

pub struct Agent {
    child: Child,
    stdin: ChildStdin,
    reports: mpsc::UnboundedReceiver<Value>,
    /// Reports read while looking for another one.
    unread: VecDeque<Value>,
    next_seq: u64,
}

impl Agent {
    /// Starts a client connecting to `url` + `namespace` with socket.io-client `options`.
    pub fn spawn(url: &str, namespace: &str, options: Value) -> Self {
        let dir = clients_dir();
        assert!(
            dir.join("node_modules/socket.io-client").is_dir(),
            "socket.io-client is not installed: run scripts/test.sh (npm ci in clients/js)"
        );
        let config = json!({ "namespace": namespace, "options": options }).to_string();
        let mut child = Command::new("node")
            .arg(dir.join("agent.mjs"))
            .args([url, &config])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (run scripts/test.sh, which installs it)");
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
        }
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
            let report = tokio::time::timeout_at(deadline, self.reports.recv())
                .await
                .map_err(|_| format!("not seen within {timeout:?}; unread: {:?}", self.unread))?
                .ok_or("the agent exited")?;
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
        let seq = self.next_seq;
        self.next_seq += 1;
        self.command(json!({"op": "emit", "seq": seq, "event": event, "args": args, "ack": true}));
        let ack = self
            .find(timeout, |r| r["type"] == "ack" && r["seq"] == seq)
            .await?;
        Ok(ack["value"].clone())
    }

    /// `socket.disconnect()`: leaves the namespace on purpose.
    pub fn disconnect(&mut self) {
        self.command(json!({"op": "disconnect"}));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
