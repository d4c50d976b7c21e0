//! The scenarios of the comparison, the same for every system:
//!
//! - **i, paced fan-out**: one emitter sends 200 payloads a second for 20 s to a room of
//!   1,000 receivers;
//! - **ii, chat**: 10 rooms, each with 10 emitters and 10 receivers; every emitter keeps
//!   at most `chat_window` of its payloads undelivered (saturation);
//! - **iii, idle**: 10,000 connections, each in a room of its own (as messaging users are
//!   in their personal channels: on Herald, each signs in as a user of its own and is in
//!   that user's personal channel); the servers' memory per connection, and how fast they
//!   were let in; and the same with all of them in one room (`iii-shared`), which leaves
//!   out what a channel costs;
//! - **iv, saturated fan-out**: one emitter to a room of 10 receivers, at most
//!   `fan_window` payloads undelivered.
//!
//! Connections are spread over the system's endpoints in turn, emitters starting one
//! endpoint further than receivers, so that a payload crosses servers where there are
//! several. Payloads are 100 bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::tally::{Progress, Tally};
use super::targets::{Running, user_token};
use super::wire::{Dialect, Link, payload};
use crate::procfs;

/// Handshakes in progress at once while connections are opened.
const OPENING: usize = 64;
/// An emitter waiting on its window goes on after this long without a delivery (a
/// system that drops payloads would otherwise stop it).
const STALL: Duration = Duration::from_secs(1);
/// After the last send, how long the run waits for a delivery before it counts the rest
/// as lost.
const DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Paced,
    Chat,
    Idle,
    /// The idle connections all in one room: what a connection costs without a channel
    /// of its own.
    IdleShared,
    Fan,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Idle,
        Scenario::IdleShared,
        Scenario::Paced,
        Scenario::Chat,
        Scenario::Fan,
    ];

    pub fn is_idle(self) -> bool {
        matches!(self, Self::Idle | Self::IdleShared)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Paced => "i",
            Self::Chat => "ii",
            Self::Idle => "iii",
            Self::IdleShared => "iii-shared",
            Self::Fan => "iv",
        }
    }

    /// The scenario as it was run, for the table.
    pub fn title(self, knobs: &Knobs) -> String {
        match self {
            Self::Paced => format!(
                "i: 1 → {}, {}/s paced, {} s",
                knobs.paced_receivers, knobs.paced_rate, knobs.paced_seconds
            ),
            Self::Chat => format!(
                "ii: chat, 10 rooms of 10 emitters + 10 receivers, window {}, {} s",
                knobs.chat_window, knobs.saturation_seconds
            ),
            Self::Idle => format!(
                "iii: {} idle connections, each in a room of its own",
                knobs.idle
            ),
            Self::IdleShared => format!("iii-shared: {} idle connections in one room", knobs.idle),
            Self::Fan => format!(
                "iv: 1 → 10, window {}, {} s",
                knobs.fan_window, knobs.saturation_seconds
            ),
        }
    }
}

/// The knobs of the scenarios (command-line options).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub paced_receivers: usize,
    pub paced_rate: u64,
    pub paced_seconds: u64,
    pub saturation_seconds: u64,
    pub chat_window: u64,
    pub fan_window: u64,
    pub idle: usize,
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    Rate(u64),
    Window(u64),
}

/// Rooms, their members, and how emitters send.
struct Plan {
    rooms: usize,
    emitters: usize,
    receivers: usize,
    pace: Pace,
    duration: Duration,
}

/// What one run of one scenario measured.
pub struct Outcome {
    pub per_second: f64,
    pub latency_us: Histogram<u64>,
    pub expected: u64,
    pub received: u64,
    pub reordered: u64,
    pub refused: u64,
    /// Connections the server closed during the run.
    pub cut: u64,
    /// Cores the system's processes used on average during the run.
    pub cpu_cores: f64,
    pub rss_bytes: u64,
    /// Idle scenario: memory per connection, and connections let in per second.
    pub per_connection_bytes: Option<f64>,
    /// Idle scenario: memory per connection by kind of process.
    pub per_kind_bytes: Vec<(&'static str, f64)>,
    pub connects_per_second: Option<f64>,
}

impl Outcome {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

pub async fn run(
    scenario: Scenario,
    system: &Running,
    dialect: Dialect,
    knobs: &Knobs,
    tag: &str,
) -> anyhow::Result<Outcome> {
    let saturation = Duration::from_secs(knobs.saturation_seconds);
    let plan = match scenario {
        Scenario::Idle => return idle(system, dialect, knobs.idle, true).await,
        Scenario::IdleShared => return idle(system, dialect, knobs.idle, false).await,
        Scenario::Paced => Plan {
            rooms: 1,
            emitters: 1,
            receivers: knobs.paced_receivers,
            pace: Pace::Rate(knobs.paced_rate),
            duration: Duration::from_secs(knobs.paced_seconds),
        },
        Scenario::Chat => Plan {
            rooms: 10,
            emitters: 10,
            receivers: 10,
            pace: Pace::Window(knobs.chat_window),
            duration: saturation,
        },
        Scenario::Fan => Plan {
            rooms: 1,
            emitters: 1,
            receivers: 10,
            pace: Pace::Window(knobs.fan_window),
            duration: saturation,
        },
    };
    traffic(system, dialect, &plan, tag).await
}

/// Opens `count` connections, `OPENING` at a time, each set up by `open`.
async fn open_all<F, Fut>(count: usize, open: F) -> anyhow::Result<Vec<Link>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Link>>,
{
    stream::iter(0..count)
        .map(open)
        .buffered(OPENING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn member(
    dialect: Dialect,
    addr: SocketAddr,
    room: Option<String>,
    tally: Tally,
) -> anyhow::Result<Link> {
    let mut ws = dialect.open(addr).await?;
    if let Some(room) = room {
        dialect.join(&mut ws, &room).await?;
    }
    Ok(Link::spawn(dialect, ws, tally))
}

async fn traffic(
    system: &Running,
    dialect: Dialect,
    plan: &Plan,
    tag: &str,
) -> anyhow::Result<Outcome> {
    let endpoints = &system.endpoints;
    let room = |r: usize| format!("room-{tag}-{r}");
    let progress = Progress::new(plan.rooms * plan.emitters);
    let receivers = open_all(plan.rooms * plan.receivers, |i| {
        let addr = endpoints[i % endpoints.len()];
        let tally = Tally::new(Some(progress.clone()));
        member(dialect, addr, Some(room(i / plan.receivers)), tally)
    })
    .await?;
    let emitters = open_all(plan.rooms * plan.emitters, |i| {
        let addr = endpoints[(i + 1) % endpoints.len()];
        member(dialect, addr, None, Tally::new(None))
    })
    .await?;

    let cpu_before = system.cpu_seconds();
    let (started, started_us) = (Instant::now(), unix_micros());
    let deadline = started + plan.duration;
    let senders: Vec<_> = emitters
        .iter()
        .enumerate()
        .map(|(e, link)| {
            let emitter = Emitter {
                id: e,
                room: room(e / plan.emitters),
                dialect,
                tx: link.tx.clone(),
                fan_out: plan.receivers as u64,
                progress: progress.clone(),
            };
            tokio::spawn(emitter.run(plan.pace, deadline))
        })
        .collect();
    let mut sent = 0;
    for sender in senders {
        sent += sender.await?;
    }
    let expected = sent * plan.receivers as u64;
    progress.wait(DRAIN, |p| p.total() >= expected).await;
    let elapsed_us = progress
        .last_delivery_us()
        .saturating_sub(started_us)
        .max(1);
    let cpu_cores = (system.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    let rss_bytes = system.rss_bytes();

    let mut total = Tally::new(None);
    for link in emitters.into_iter().chain(receivers) {
        total.merge(&link.finish().await?);
    }
    Ok(Outcome {
        per_second: total.received as f64 / (elapsed_us as f64 / 1e6),
        latency_us: total.latency_us,
        expected,
        received: total.received,
        reordered: total.reordered,
        refused: total.refused,
        cut: total.cut,
        cpu_cores,
        rss_bytes,
        per_connection_bytes: None,
        per_kind_bytes: Vec::new(),
        connects_per_second: None,
    })
}

struct Emitter {
    id: usize,
    room: String,
    dialect: Dialect,
    tx: mpsc::UnboundedSender<Message>,
    fan_out: u64,
    progress: Arc<Progress>,
}

impl Emitter {
    /// Sends until `deadline`; returns how many it sent.
    async fn run(self, pace: Pace, deadline: Instant) -> u64 {
        let mut tick = match pace {
            Pace::Rate(rate) => Some(tokio::time::interval(Duration::from_micros(
                1_000_000 / rate.max(1),
            ))),
            Pace::Window(_) => None,
        };
        let mut seq = 0u64;
        while Instant::now() < deadline {
            match (pace, tick.as_mut()) {
                (Pace::Window(window), _) => {
                    let (id, floor) = (self.id, seq.saturating_sub(window) * self.fan_out);
                    self.progress.wait(STALL, |p| p.of(id) >= floor).await;
                }
                (Pace::Rate(_), Some(tick)) => {
                    tick.tick().await;
                }
                (Pace::Rate(_), None) => {}
            }
            let text = payload(self.id as u32, seq);
            // Native command ids 1 and 2 went to the handshake.
            let frame = self.dialect.publish(&self.room, &text, seq + 3);
            if self.tx.send(frame).is_err() {
                break;
            }
            seq += 1;
        }
        seq
    }
}

async fn idle(
    system: &Running,
    dialect: Dialect,
    count: usize,
    own_rooms: bool,
) -> anyhow::Result<Outcome> {
    let endpoints = &system.endpoints;
    let before = system.rss_by_kind();
    let started = Instant::now();
    let links = open_all(count, |i| {
        let addr = endpoints[i % endpoints.len()];
        async move {
            match (own_rooms, system.users) {
                // A user's room of their own is their personal channel, which signing in
                // subscribes them to.
                (true, true) => {
                    let ws = dialect
                        .open_as(addr, &user_token(&format!("idle-{i}"))?)
                        .await?;
                    Ok(Link::spawn(dialect, ws, Tally::new(None)))
                }
                (true, false) => {
                    member(dialect, addr, Some(format!("idle-{i}")), Tally::new(None)).await
                }
                (false, _) => member(dialect, addr, Some("idle".into()), Tally::new(None)).await,
            }
        }
    })
    .await?;
    let connects_per_second = count as f64 / started.elapsed().as_secs_f64();
    // Not a synchronization: the connections are up; this lets setup's transient buffers
    // go before the steady state is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = system.rss_by_kind();
    let per_kind: Vec<(&'static str, f64)> = after
        .iter()
        .map(|(kind, bytes)| {
            let was = procfs::of_kind(&before, kind);
            (*kind, bytes.saturating_sub(was) as f64 / count as f64)
        })
        .collect();
    let mut total = Tally::new(None);
    for link in links {
        total.merge(&link.finish().await?);
    }
    Ok(Outcome {
        per_second: 0.0,
        latency_us: total.latency_us,
        expected: 0,
        received: 0,
        reordered: 0,
        refused: total.refused,
        cut: total.cut,
        cpu_cores: 0.0,
        rss_bytes: after.iter().map(|(_, bytes)| bytes).sum(),
        per_connection_bytes: Some(per_kind.iter().map(|(_, bytes)| bytes).sum()),
        per_kind_bytes: per_kind,
        connects_per_second: Some(connects_per_second),
    })
}
