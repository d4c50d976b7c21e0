//! One load-generator process of the crowd run (`herald-bench --crowd-generator`, started
//! by the coordinator): it opens its share of the connections, alternately native and
//! Socket.IO, over the gateways in turn, from its own loopback address; keeps them alive
//! as stock clients do; and answers the coordinator on stdin and stdout.
//!
//! A process may hold about 20,000 files on the machine this was written for, so the
//! crowd is spread over several such processes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::report::{Opened, Status};
use super::{BROADCASTER, CHANNEL, dialect_of};
use crate::peers::wire::{self, Dialect, Ws};

/// Handshakes one generator has in flight at once.
const OPENING: usize = 64;

/// Bytes each connection reads into at once.
const READ_BUFFER: usize = 4096;

/// How often a native connection pings, as a client library's heartbeat would (the
/// Socket.IO server pings its sockets itself, every `socketio.ping_interval`).
const NATIVE_PING: Duration = Duration::from_secs(25);

/// This generator's part of the crowd.
pub struct Share {
    /// The crowd-wide number of its first connection (which decides protocols and
    /// gateways, so that generators together alternate them evenly).
    pub first: usize,
    pub count: usize,
    pub source: IpAddr,
    pub gateways: Vec<SocketAddr>,
}

/// What this generator's connections have seen, shared by their tasks.
struct Seen {
    /// Broadcasts received, per connection.
    got: Vec<AtomicU32>,
    cut: AtomicU64,
    pongs: AtomicU64,
    pings: AtomicU64,
    answered: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Seen {
    fn status(&self, broadcasts: u32) -> Status {
        let got = || self.got.iter().map(|g| g.load(Relaxed));
        let latency = self
            .latency_us
            .lock()
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
            .unwrap_or_default();
        Status {
            complete: got().filter(|n| *n >= broadcasts).count() as u64,
            missing: got().map(|n| u64::from(broadcasts.saturating_sub(n))).sum(),
            cut: self.cut.load(Relaxed),
            pongs: self.pongs.load(Relaxed),
            pings: self.pings.load(Relaxed),
            answered: self.answered.load(Relaxed),
            p50_us: latency.0,
            p99_us: latency.1,
            max_us: latency.2,
        }
    }
}

/// Opens the share, reports `opened`, then answers `status <broadcasts>` lines until
/// stdin closes, which ends the process and with it every connection.
pub async fn run(share: Share) -> anyhow::Result<()> {
    let seen = Arc::new(Seen {
        got: (0..share.count).map(|_| AtomicU32::new(0)).collect(),
        cut: AtomicU64::new(0),
        pongs: AtomicU64::new(0),
        pings: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new(3).context("histogram")?),
    });
    let start_us = unix_micros();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..share.count)
        .map(|slot| {
            let number = share.first + slot;
            let dialect = dialect_of(number);
            let gateway = share.gateways[number % share.gateways.len()];
            let seen = seen.clone();
            async move {
                let ws = join(dialect, share.source, gateway).await?;
                tokio::spawn(hold(dialect, ws, slot, number, seen));
                Ok(())
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count() as u64;
    if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
        eprintln!(
            "generator {}: {failed} connections failed, the first: {first:#}",
            share.source
        );
    }
    let opened = Opened {
        ok: share.count as u64 - failed,
        failed,
        start_us,
        end_us: unix_micros(),
    };
    println!("{}", opened.line());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(broadcasts) = line.strip_prefix("status ") {
            let broadcasts: u32 = broadcasts.trim().parse().context("status <broadcasts>")?;
            println!("{}", seen.status(broadcasts).line());
        }
    }
    Ok(())
}

/// A connection that has completed its handshake and is in the crowd's channel (every
/// Socket.IO socket is in its namespace's channel, `/`, from the start).
async fn join(dialect: Dialect, source: IpAddr, gateway: SocketAddr) -> anyhow::Result<Ws> {
    // tungstenite reads into 128 KiB by default: a crowd's connections read small frames.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let mut ws = dialect
        .open_from(Some(source), gateway, Some(config))
        .await?;
    if dialect == Dialect::Native {
        dialect.join(&mut ws, CHANNEL).await?;
    }
    Ok(ws)
}

/// Keeps one connection alive until the server closes it, counting what it receives.
async fn hold(dialect: Dialect, mut ws: Ws, slot: usize, number: usize, seen: Arc<Seen>) {
    // Spread the native heartbeats over the period, as clients started at different
    // moments would send them.
    let offset = Duration::from_millis((number as u64 * 7919) % NATIVE_PING.as_millis() as u64);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + offset, NATIVE_PING);
    let mut id = 10_u64;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    _ => break,
                };
                let bytes: &[u8] = match &frame {
                    Message::Text(text) => text.as_bytes(),
                    Message::Binary(bytes) => bytes,
                    Message::Close(_) => break,
                    _ => continue,
                };
                if dialect == Dialect::SocketIo && bytes == b"2" {
                    if ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    seen.pongs.fetch_add(1, Relaxed);
                    continue;
                }
                if dialect == Dialect::Native && bytes.starts_with(br#"{"id""#) {
                    seen.answered.fetch_add(1, Relaxed);
                    continue;
                }
                let now = unix_micros();
                for stamp in wire::stamps(bytes).filter(|s| s.emitter == BROADCASTER) {
                    seen.got[slot].fetch_add(1, Relaxed);
                    if let Ok(mut latency) = seen.latency_us.lock() {
                        let _ = latency.record(now.saturating_sub(stamp.sent_us));
                    }
                }
            }
            _ = heartbeat.tick(), if dialect == Dialect::Native => {
                id += 1;
                let ping = format!(r#"{{"id":{id},"method":"ping"}}"#);
                if ws.send(Message::text(ping)).await.is_err() {
                    break;
                }
                seen.pings.fetch_add(1, Relaxed);
            }
        }
    }
    seen.cut.fetch_add(1, Relaxed);
    // A closed connection will never get what it missed: count it as having nothing.
    seen.got[slot].store(0, Relaxed);
}
