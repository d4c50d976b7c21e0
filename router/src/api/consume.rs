//! The consume stream: every publication of the channels a backend asked for, in offset
//! order per channel, resumable from the positions the backend stored.
//!
//! One task per stream. It listens to every channel's delivery subject and keeps a cursor
//! (epoch, offset) per channel it delivered: the next publication of a channel is the
//! cursor's successor, anything else is read from history (a gap: another router's
//! publication that has not arrived yet, or one the bus dropped), or skipped (already
//! delivered). Routers store a publication before they publish it, so history always
//! holds what a gap is missing, as long as it keeps it.
//!
//! What the live feed cannot show (what was published while the consumer was away, the
//! last publication of a channel that the bus dropped) the channel activity index does:
//! at the start, the channels active since the consumer stopped are caught up from
//! history, and every [`RECONCILE`] the channels active since the last look are checked.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use herald_core::config::ChannelsConfig;
use herald_core::upstream::Upstream;
use herald_proto::api::v1::{
    ChannelPosition, ConsumeEvent, ConsumeRequest, ConsumedPublication, StreamPosition,
    consume_event,
};
use herald_proto::bus::v1::{HistoryRequest, Position, Publication};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::Status;
use wildmatch::WildMatch;

use super::convert::api_publication;
use crate::history::{HistoryStore, now_ms};

/// How often the activity index is checked for channels whose publications the live feed
/// did not bring.
pub const RECONCILE: Duration = Duration::from_secs(2);

/// How far back a look at the activity index reaches before the time it asks for: clocks
/// of nodes disagree a little, and an index entry lands just after its append.
const SLACK_MS: u64 = 30_000;

/// How much earlier than its start a stream from now begins, for publications a gateway
/// with a clock a little behind accepted just before.
const CLOCK_SKEW_MS: u64 = 1_000;

/// Publications read from history at once.
const PAGE: u32 = 1000;

/// Events waiting for the consumer to read them; then the task waits too.
const QUEUE: usize = 1024;

/// Most positions one request may carry.
pub const MAX_POSITIONS: usize = 100_000;

/// Which channels a stream wants.
struct Selection {
    pattern: WildMatch,
    partition: u32,
    partitions: u32,
    channels: ChannelsConfig,
}

impl Selection {
    fn wants(&self, channel: &str) -> bool {
        let rules = self.channels.rules_for(channel);
        rules.history_size > 0
            && !rules.sync
            && self.pattern.matches(channel)
            && (self.partitions <= 1 || partition_of(channel, self.partitions) == self.partition)
    }
}

/// The partition of `channel` among `partitions`: FNV-1a (32 bits) of its UTF-8 bytes.
pub fn partition_of(channel: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in channel.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// Checks a request; the stream's events then arrive on the returned receiver.
pub fn start(
    request: ConsumeRequest,
    upstream: Upstream,
    activity: Arc<dyn HistoryStore>,
    channels: ChannelsConfig,
    closed: watch::Receiver<bool>,
) -> Result<mpsc::Receiver<Result<ConsumeEvent, Status>>, Status> {
    if request.partitions > 1 && request.partition >= request.partitions {
        return Err(Status::invalid_argument(
            "partition must be below partitions",
        ));
    }
    if request.positions.len() > MAX_POSITIONS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_POSITIONS} positions"
        )));
    }
    let pattern = match request.pattern.as_str() {
        "" => "*",
        pattern => pattern,
    };
    let selection = Selection {
        pattern: WildMatch::new(pattern),
        partition: request.partition,
        partitions: request.partitions,
        channels,
    };
    let (events, receiver) = mpsc::channel(QUEUE);
    let mut consumer = Consumer {
        selection,
        upstream,
        activity,
        events,
        cursors: HashMap::new(),
        since_ms: request.since_ms,
        retry: HashSet::new(),
        closed,
    };
    for entry in request.positions {
        let position = entry.position.unwrap_or_default();
        let cursor = Position {
            offset: position.offset,
            epoch: position.epoch,
        };
        consumer.cursors.insert(entry.channel, cursor);
    }
    tokio::spawn(async move {
        if let Err(Gone) = consumer.run().await {
            tracing::debug!("a consume stream ended");
        }
    });
    Ok(receiver)
}

/// The consumer went away (or the stream cannot go on).
struct Gone;

struct Consumer {
    selection: Selection,
    upstream: Upstream,
    activity: Arc<dyn HistoryStore>,
    events: mpsc::Sender<Result<ConsumeEvent, Status>>,
    /// The last publication delivered of each channel.
    cursors: HashMap<String, Position>,
    /// Publications of a channel without a cursor are delivered from this time (Unix ms)
    /// on: when the consumer stopped, or when this stream started.
    since_ms: u64,
    /// Channels whose history could not be read: caught up at the next look.
    retry: HashSet<String>,
    /// Turns true when the node shuts down: the stream ends, and the consumer goes to
    /// another node.
    closed: watch::Receiver<bool>,
}

impl Consumer {
    async fn run(&mut self) -> Result<(), Gone> {
        let bus = self.upstream.bus().clone();
        let subject = self.upstream.subjects().all_deliveries();
        let mut live = match bus.subscribe(subject).await {
            Ok(live) => live,
            Err(e) => return self.fail(Status::unavailable(e.to_string())).await,
        };
        if let Err(e) = bus.flush().await {
            return self.fail(Status::unavailable(e.to_string())).await;
        }
        // Live from here on; what came before is in history.
        let started = now_ms();
        let mut known: Vec<String> = self.cursors.keys().cloned().collect();
        self.since_ms = match self.since_ms {
            0 => started.saturating_sub(CLOCK_SKEW_MS),
            // Nodes' clocks disagree a little: rather twice than never.
            since => {
                let since = since.saturating_sub(SLACK_MS);
                known.extend(self.active_since(since).await.unwrap_or_default());
                since
            }
        };
        known.sort();
        known.dedup();
        for channel in known {
            self.catch_up(&channel).await?;
        }
        let mut looked = started;
        let mut reconcile = tokio::time::interval(RECONCILE);
        let mut closed = self.closed.clone();
        loop {
            tokio::select! {
                message = live.next() => {
                    let Some(message) = message else {
                        return self.fail(Status::unavailable("the bus subscription ended")).await;
                    };
                    if let Ok(publication) = Publication::decode(message.payload) {
                        self.on_live(publication).await?;
                    }
                }
                _ = reconcile.tick() => {
                    let now = now_ms();
                    let mut channels: Vec<String> = self.retry.drain().collect();
                    // When the index cannot be read, the next look covers this one's time.
                    if let Some(active) = self.active_since(looked.saturating_sub(SLACK_MS)).await {
                        channels.extend(active);
                        looked = now;
                    }
                    channels.sort();
                    channels.dedup();
                    for channel in channels {
                        self.catch_up(&channel).await?;
                    }
                }
                () = self.events.closed() => return Err(Gone),
                Ok(()) = closed.changed() => {
                    let closing = *closed.borrow_and_update();
                    if closing {
                        return self.fail(Status::unavailable("the node is shutting down")).await;
                    }
                }
            }
        }
    }

    /// The channels the stream wants that got publications since `since_ms`; `None` when
    /// the index cannot be read.
    async fn active_since(&self, since_ms: u64) -> Option<Vec<String>> {
        match self.activity.active_since(since_ms).await {
            Ok(mut channels) => {
                channels.retain(|channel| self.selection.wants(channel));
                Some(channels)
            }
            Err(e) => {
                tracing::warn!(error = %e, "channel activity not read");
                None
            }
        }
    }

    async fn on_live(&mut self, publication: Publication) -> Result<(), Gone> {
        // Presence events and publications kept out of history have no place in the order.
        if publication.membership.is_some() || publication.epoch.is_empty() {
            return Ok(());
        }
        let channel = publication.channel.clone();
        if !self.selection.wants(&channel) {
            return Ok(());
        }
        match self.cursors.get(&channel) {
            Some(cursor)
                if cursor.epoch == publication.epoch && publication.offset == cursor.offset + 1 =>
            {
                self.deliver(publication).await
            }
            Some(cursor)
                if cursor.epoch == publication.epoch && publication.offset <= cursor.offset =>
            {
                Ok(())
            }
            // A gap, another epoch, or a channel seen for the first time: history knows.
            _ => self.catch_up(&channel).await,
        }
    }

    /// Delivers what history holds of `channel` after its cursor (for a channel without
    /// one: what was published since the stream's start time).
    async fn catch_up(&mut self, channel: &str) -> Result<(), Gone> {
        // A channel without a cursor starts at its first publication accepted since
        // `since_ms`; everything after that one follows, whatever its time (times come from
        // several nodes, and need not grow with offsets).
        let mut starting = !self.cursors.contains_key(channel);
        loop {
            let cursor = self.cursors.get(channel).cloned();
            let since = cursor.as_ref().map_or(0, |c| c.offset);
            let request = HistoryRequest {
                channel: channel.to_string(),
                since: Some(since),
                limit: PAGE,
                reverse: false,
            };
            let page = match self.upstream.history(request).await {
                Ok(page) => page,
                Err(refusal) => {
                    tracing::warn!(channel, %refusal, "consume stream cannot read history");
                    self.retry.insert(channel.to_string());
                    return Ok(());
                }
            };
            let position = page.position.unwrap_or_default();
            let publications = page.publications;
            match &cursor {
                Some(cursor) if !cursor.epoch.is_empty() && cursor.epoch != position.epoch => {
                    // The stream restarted: what the consumer had is gone.
                    self.lost(channel, cursor.clone()).await?;
                    self.cursors.insert(channel.to_string(), restart(&position));
                    continue;
                }
                Some(cursor) if cursor.offset > position.offset => {
                    // A position the stream never had: it goes on from where the stream is.
                    self.lost(channel, cursor.clone()).await?;
                    self.cursors.insert(channel.to_string(), position);
                    return Ok(());
                }
                Some(cursor) => {
                    let first = publications
                        .first()
                        .map_or(position.offset + 1, |p| p.offset);
                    if first > cursor.offset + 1 {
                        let missed = Position {
                            offset: first - 1,
                            epoch: position.epoch.clone(),
                        };
                        self.lost(channel, missed).await?;
                    }
                }
                None => {}
            }
            let count = publications.len();
            for publication in publications {
                starting = starting && publication.accepted_at_us / 1000 < self.since_ms;
                if !starting {
                    self.deliver(publication).await?;
                } else {
                    // Older than what the consumer wants: it is past it.
                    let past = Position {
                        offset: publication.offset,
                        epoch: publication.epoch.clone(),
                    };
                    self.cursors.insert(channel.to_string(), past);
                }
            }
            if cursor.is_none() && count == 0 {
                // Nothing new: the consumer starts after the channel's newest.
                self.cursors.insert(channel.to_string(), position);
            }
            if !page.truncated && count < PAGE as usize {
                return Ok(());
            }
        }
    }

    async fn deliver(&mut self, publication: Publication) -> Result<(), Gone> {
        let channel = publication.channel.clone();
        let cursor = Position {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        };
        let event = consume_event::Event::Publication(ConsumedPublication {
            channel: channel.clone(),
            epoch: publication.epoch.clone(),
            publication: Some(api_publication(publication)),
        });
        self.send(event).await?;
        self.cursors.insert(channel, cursor);
        Ok(())
    }

    async fn lost(&mut self, channel: &str, position: Position) -> Result<(), Gone> {
        let event = consume_event::Event::Lost(ChannelPosition {
            channel: channel.to_string(),
            position: Some(StreamPosition {
                offset: position.offset,
                epoch: position.epoch,
            }),
        });
        self.send(event).await
    }

    async fn send(&self, event: consume_event::Event) -> Result<(), Gone> {
        let event = ConsumeEvent { event: Some(event) };
        self.events.send(Ok(event)).await.map_err(|_| Gone)
    }

    async fn fail(&self, status: Status) -> Result<(), Gone> {
        let _ = self.events.send(Err(status)).await;
        Err(Gone)
    }
}

/// Where a restarted stream begins: before its first offset.
fn restart(position: &Position) -> Position {
    Position {
        offset: 0,
        epoch: position.epoch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_fnv1a_of_the_name() {
        // FNV-1a 32 of "" is the offset basis; of "a" is 0xe40c292c.
        const PRIME: u32 = 1_000_000_007;
        assert_eq!(partition_of("", PRIME), 0x811c_9dc5 % PRIME);
        assert_eq!(partition_of("a", PRIME), 0xe40c_292c % PRIME);
        let spread: std::collections::HashSet<u32> = (0..100)
            .map(|i| partition_of(&format!("chat:{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
