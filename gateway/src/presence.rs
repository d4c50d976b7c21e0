//! This gateway's part of presence: it tells the routers which of its clients joined and
//! left channels that keep presence, and confirms the ones still there in heartbeats.
//!
//! Changes are coalesced (the last one per client and channel wins) and sent by one task,
//! one report at a time, so the routers apply them in order. A report that fails is merged
//! back and retried; a leave that never arrives is covered by the entry's expiry, a join
//! by the next heartbeat.

use std::collections::HashMap;
use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_proto::bus::v1::{ClientInfo, Presence, PresenceReport};
use prost::Message;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use herald_core::upstream::Upstream;

/// Most entries in one report, to keep bus messages small.
const REPORT_CHUNK: usize = 1000;
/// Most bytes of entries in one report: well within one NATS message (1 MiB by default),
/// whatever the clients' `info` holds.
const REPORT_BYTES: usize = 256 * 1024;
/// Pause after a failed report before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

type Key = (String, String);

enum Change {
    Join(ClientInfo),
    Leave(ClientInfo),
}

#[derive(Default)]
struct State {
    /// Every client of this gateway on a channel with presence.
    present: HashMap<Key, ClientInfo>,
    /// Changes not reported yet.
    pending: HashMap<Key, Change>,
}

#[derive(Default)]
pub struct PresenceReporter {
    state: Mutex<State>,
    wake: Notify,
}

impl PresenceReporter {
    fn state(&self) -> MutexGuard<'_, State> {
        // Each step leaves the maps consistent, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `client` joined `channel`.
    pub fn join(&self, channel: &str, client: ClientInfo) {
        let key = (channel.to_string(), client.client.clone());
        let mut state = self.state();
        state.present.insert(key.clone(), client.clone());
        state.pending.insert(key, Change::Join(client));
        drop(state);
        self.wake.notify_one();
    }

    /// The client with id `client` left `channel`.
    pub fn leave(&self, channel: &str, client: &str) {
        let key = (channel.to_string(), client.to_string());
        let mut state = self.state();
        let Some(client) = state.present.remove(&key) else {
            return;
        };
        state.pending.insert(key, Change::Leave(client));
        drop(state);
        self.wake.notify_one();
    }

    /// Reports changes as they come and heartbeats every `heartbeat`, until `stop`; then
    /// reports the changes still pending once (the leaves of a drained gateway's last
    /// clients), so that they need not wait for expiry.
    pub async fn run(
        self: Arc<Self>,
        upstream: Upstream,
        heartbeat: Duration,
        stop: CancellationToken,
    ) {
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (alive, last) = tokio::select! {
                () = stop.cancelled() => (false, true),
                () = self.wake.notified() => (false, false),
                _ = beat.tick() => (true, false),
            };
            let changes = mem::take(&mut self.state().pending);
            let mut reports = reports(changes.iter());
            if alive {
                let present: Vec<Presence> = self
                    .state()
                    .present
                    .iter()
                    .map(|((channel, _), client)| presence(channel, client.clone()))
                    .collect();
                let mut report = PresenceReport::default();
                let mut bytes = 0;
                for entry in present {
                    bytes += entry.encoded_len();
                    report.alive.push(entry);
                    if report.alive.len() >= REPORT_CHUNK || bytes >= REPORT_BYTES {
                        reports.push(mem::take(&mut report));
                        bytes = 0;
                    }
                }
                if !report.alive.is_empty() {
                    reports.push(report);
                }
            }
            for report in reports {
                if let Err(refusal) = upstream.presence_report(report).await {
                    if last {
                        tracing::debug!(%refusal, "last presence report failed; entries expire");
                        return;
                    }
                    tracing::debug!(%refusal, "presence report failed; retrying");
                    self.restore(changes);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    self.wake.notify_one();
                    break;
                }
            }
            if last {
                return;
            }
        }
    }

    /// Puts back changes that were not reported, unless newer ones came meanwhile.
    fn restore(&self, changes: HashMap<Key, Change>) {
        let mut state = self.state();
        for (key, change) in changes {
            state.pending.entry(key).or_insert(change);
        }
    }
}

fn presence(channel: &str, client: ClientInfo) -> Presence {
    Presence {
        channel: channel.to_string(),
        client: Some(client),
    }
}

/// The changes as reports of at most [`REPORT_CHUNK`] entries and about [`REPORT_BYTES`].
fn reports<'a>(changes: impl Iterator<Item = (&'a Key, &'a Change)>) -> Vec<PresenceReport> {
    let mut reports = Vec::new();
    let mut report = PresenceReport::default();
    let mut bytes = 0;
    for ((channel, _), change) in changes {
        let (entries, client) = match change {
            Change::Join(client) => (&mut report.joins, client),
            Change::Leave(client) => (&mut report.leaves, client),
        };
        let entry = presence(channel, client.clone());
        bytes += entry.encoded_len();
        entries.push(entry);
        if report.joins.len() + report.leaves.len() >= REPORT_CHUNK || bytes >= REPORT_BYTES {
            reports.push(mem::take(&mut report));
            bytes = 0;
        }
    }
    if !report.joins.is_empty() || !report.leaves.is_empty() {
        reports.push(report);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn reports_stay_small_in_entries_and_in_bytes() {
        let client = |n: usize, info: usize| ClientInfo {
            client: format!("c{n}"),
            user: "u".into(),
            info: Bytes::from(vec![b'x'; info]),
        };
        let key = |n: usize| ("chat".to_string(), format!("c{n}"));
        let small: Vec<(Key, Change)> = (0..2500)
            .map(|n| (key(n), Change::Join(client(n, 10))))
            .collect();
        let counts: Vec<usize> = reports(small.iter().map(|(k, c)| (k, c)))
            .iter()
            .map(|r| r.joins.len())
            .collect();
        assert_eq!(counts, [1000, 1000, 500]);
        // Clients with 4 KiB of info each: bounded by bytes long before 1,000 entries.
        let large: Vec<(Key, Change)> = (0..300)
            .map(|n| (key(n), Change::Leave(client(n, 4096))))
            .collect();
        let large = reports(large.iter().map(|(k, c)| (k, c)));
        assert!(large.len() > 1);
        for report in &large {
            assert!(
                report.encoded_len() < 2 * REPORT_BYTES,
                "{}",
                report.encoded_len()
            );
        }
        assert_eq!(large.iter().map(|r| r.leaves.len()).sum::<usize>(), 300);
    }
}
