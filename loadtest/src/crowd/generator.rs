//! One load-generator process of the crowd run (`herald-bench --crowd-child`, started by
//! the coordinator): it opens its share of the connections, alternately native and
//! Socket.IO, over the gateways in turn, from its own loopback address; keeps them alive
//! as stock clients do; and answers the coordinator on stdin and stdout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt, stream};
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::report::{Opened, Status};
use super::{BROADCASTER, CHANNEL, MAX_BROADCASTS, dialect_of, gateway_of};
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

/// A connection's slot: bit `n - 1` set once broadcast `n` arrived, and these two marks.
const CLOSED: u64 = 1 << 63;
const NEVER_OPENED: u64 = 1 << 62;

/// What this generator's connections have seen, shared by their tasks.
struct Seen {
    /// Per connection: the broadcasts it received, as bits, or a mark.
    got: Vec<AtomicU64>,
    /// Broadcast deliveries beyond the first of each (or of no broadcast sent).
    extra: AtomicU64,
    cut: AtomicU64,
    pongs: AtomicU64,
    pings: AtomicU64,
    answered: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
}

impl Seen {
    fn status(&self, broadcasts: u32) -> Status {
        let all = (1_u64 << broadcasts.min(MAX_BROADCASTS)) - 1;
        let (mut complete, mut missing) = (0, 0);
        for slot in &self.got {
            let got = slot.load(Relaxed);
            if got & NEVER_OPENED != 0 {
                // A failure to connect is reported as such, not as deliveries lost.
                continue;
            }
            // A closed connection will never get what it missed.
            let have = if got & CLOSED != 0 { 0 } else { got & all };
            complete += u64::from(have == all);
            missing += u64::from((all & !have).count_ones());
        }
        let latency = self
            .latency_us
            .lock()
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
            .unwrap_or_default();
        Status {
            complete,
            missing,
            extra: self.extra.load(Relaxed),
            cut: self.cut.load(Relaxed),
            pongs: self.pongs.load(Relaxed),
            pings: self.pings.load(Relaxed),
            answered: self.answered.load(Relaxed),
            p50_us: latency.0,
            p99_us: latency.1,
            max_us: latency.2,
        }
    }

    /// Counts broadcast `seq`, received at `now_us`.
    fn received(&self, slot: usize, seq: u64, sent_us: u64, now_us: u64) {
        let bit = match (1..=u64::from(MAX_BROADCASTS)).contains(&seq) {
            true => 1 << (seq - 1),
            false => 0,
        };
        if bit == 0 || self.got[slot].fetch_or(bit, Relaxed) & bit != 0 {
            self.extra.fetch_add(1, Relaxed);
        }
        if let Ok(mut latency) = self.latency_us.lock() {
            let _ = latency.record(now_us.saturating_sub(sent_us));
        }
    }
}

/// Opens the share, reports `opened`, then answers `status <broadcasts>` lines until
/// stdin closes, which ends the process and with it every connection.
pub async fn run(share: Share) -> anyhow::Result<()> {
    let seen = Arc::new(Seen {
        got: (0..share.count).map(|_| AtomicU64::new(0)).collect(),
        extra: AtomicU64::new(0),
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
            let gateway = share.gateways[gateway_of(number, share.gateways.len())];
            let seen = seen.clone();
            async move {
                match join(dialect, share.source, gateway).await {
                    Ok(ws) => {
                        tokio::spawn(hold(dialect, ws, slot, number, seen));
                        Ok(())
                    }
                    Err(error) => {
                        seen.got[slot].store(NEVER_OPENED, Relaxed);
                        Err(error)
                    }
                }
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
    let mut heartbeat = (dialect == Dialect::Native)
        .then(|| tokio::time::interval_at(tokio::time::Instant::now() + offset, NATIVE_PING));
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
                    seen.received(slot, stamp.seq, stamp.sent_us, now);
                }
            }
            _ = tick(heartbeat.as_mut()) => {
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
    seen.got[slot].fetch_or(CLOSED, Relaxed);
}

/// The next tick of `heartbeat`; never without one.
async fn tick(heartbeat: Option<&mut tokio::time::Interval>) {
    match heartbeat {
        Some(heartbeat) => {
            heartbeat.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(connections: usize) -> Seen {
        Seen {
            got: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            extra: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            pings: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new(3).unwrap()),
        }
    }

    #[test]
    fn a_duplicate_does_not_stand_in_for_a_missing_broadcast() {
        let seen = seen(2);
        for seq in [1, 2, 3] {
            seen.received(0, seq, 0, 1);
        }
        for seq in [1, 1, 2] {
            seen.received(1, seq, 0, 1);
        }
        let status = seen.status(3);
        assert_eq!((status.complete, status.missing, status.extra), (1, 1, 1));
    }

    #[test]
    fn closed_connections_miss_everything_and_failed_ones_count_apart() {
        let seen = seen(3);
        for slot in 0..2 {
            seen.received(slot, 1, 0, 1);
        }
        seen.got[1].fetch_or(CLOSED, Relaxed);
        seen.got[2].store(NEVER_OPENED, Relaxed);
        let status = seen.status(2);
        assert_eq!((status.complete, status.missing), (0, 1 + 2));
        seen.received(0, 2, 0, 1);
        seen.received(0, 0, 0, 1);
        let status = seen.status(2);
        assert_eq!((status.complete, status.missing, status.extra), (1, 2, 1));
    }
}
