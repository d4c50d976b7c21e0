//! Subscribing a client that comes back: it gets exactly the publications it missed, in
//! order, then the live ones, with nothing twice; or it learns that this is impossible.
//!
//! Both protocols use it: a native `subscribe` with `recover`, and a Socket.IO socket
//! resumed by connection state recovery.

use herald_core::codes::Refusal;
use herald_proto::bus::v1::{HistoryRequest, Position, Publication};

use std::sync::Arc;

use crate::hub::{Hub, Joined, Start, Subscriber, SubscriberId};
use crate::metrics;
use herald_core::upstream::Upstream;

/// Most publications a returning client is given per channel; one that missed more must
/// fetch the state afresh.
pub const MAX_REPLAY: u32 = 1000;

/// How a returning client was subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// With everything it missed; live publications follow this position.
    Recovered(Position),
    /// From now on: what it missed cannot be had (history trimmed, a new epoch, or too
    /// much). Live publications follow this position.
    Lost(Position),
}

/// Every publication of `channel` after `from`; `None` when they cannot all be had (the
/// stream has a new epoch, history was trimmed past `from`, or more than [`MAX_REPLAY`]).
/// Pages cut short to fit the bus are followed by the next, until the stream's position.
/// `from` in the empty epoch was taken before the channel had a stream: its offset is one
/// of the epoch the channel has now.
pub async fn missed(
    upstream: &Upstream,
    channel: &str,
    from: &Position,
    history: bool,
) -> Option<Vec<Publication>> {
    if !history {
        // Nothing to replay, and nothing to check.
        return Some(Vec::new());
    }
    let mut missed: Vec<Publication> = Vec::new();
    let mut after = from.offset;
    loop {
        let request = HistoryRequest {
            channel: channel.to_string(),
            since: Some(after),
            limit: MAX_REPLAY - missed.len() as u32,
            reverse: false,
        };
        let page = upstream.history(request).await.ok()?;
        let position = page.position.unwrap_or_default();
        if position.epoch != from.epoch && !from.epoch.is_empty() {
            return None;
        }
        let count = page.publications.len() as u64;
        let offsets = page.publications.iter().map(|p| p.offset);
        if !offsets.eq(after + 1..=after + count) {
            // Trimmed: the first ones are gone.
            return None;
        }
        after += count;
        missed.extend(page.publications);
        if after >= position.offset {
            return Some(missed);
        }
        // Short of the position: more than MAX_REPLAY, unless the page was cut to fit.
        if !page.truncated || count == 0 || missed.len() as u32 >= MAX_REPLAY {
            return None;
        }
    }
}

/// Who is coming back, and how it receives publications.
pub struct Returning<'a> {
    pub hub: &'a Arc<Hub>,
    pub upstream: &'a Upstream,
    pub id: SubscriberId,
    pub subscriber: Arc<dyn Subscriber>,
    pub history: bool,
}

impl Returning<'_> {
    /// Subscribes to `channel` right after `from`. Whatever the channel published since is
    /// handed to `replay` first, in order; live publications follow.
    pub async fn subscribe_after(
        &self,
        channel: &str,
        from: Position,
        replay: impl FnMut(&Publication),
    ) -> Result<Resumed, Refusal> {
        let resumed = self.resume(channel, from, replay).await;
        if let Ok(resumed) = &resumed {
            let label = metrics::protocol(self.subscriber.format());
            metrics::recovered(label, matches!(resumed, Resumed::Recovered(_)));
        }
        resumed
    }

    async fn resume(
        &self,
        channel: &str,
        mut from: Position,
        mut replay: impl FnMut(&Publication),
    ) -> Result<Resumed, Refusal> {
        loop {
            let joined = self.join(channel, Start::After(&from)).await?;
            match joined {
                Joined::At(position) if position.epoch == from.epoch || from.epoch.is_empty() => {
                    return Ok(Resumed::Recovered(position));
                }
                Joined::At(position) => return Ok(Resumed::Lost(position)),
                Joined::Behind(_) => {}
            }
            let publications = missed(self.upstream, channel, &from, self.history).await;
            let Some(newest) = publications.as_ref().and_then(|p| p.last()) else {
                // Nothing to be had, though the channel is further: start from now.
                let position = match self.join(channel, Start::Now).await? {
                    Joined::At(position) | Joined::Behind(position) => position,
                };
                return Ok(Resumed::Lost(position));
            };
            from = Position {
                offset: newest.offset,
                epoch: newest.epoch.clone(),
            };
            for publication in publications.iter().flatten() {
                replay(publication);
            }
        }
    }

    async fn join(&self, channel: &str, start: Start<'_>) -> Result<Joined, Refusal> {
        self.hub
            .subscribe_from(
                channel,
                self.id,
                self.subscriber.clone(),
                self.history,
                start,
            )
            .await
    }
}
