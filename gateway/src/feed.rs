//! A channel's feed: the one task, and the bus subscription of its own or share of its
//! bucket's ([`crate::buckets`]), that bring a channel's publications to this gateway, in
//! order.
//!
//! For a channel with history the feed learns the stream's position from a router, then
//! runs every publication through a [`Sequencer`]. A gap is first given
//! [`FeedConfig::gap_hold`] to close by itself (another router's publication still on its
//! way), then filled from history. After the bus reconnects, the feed catches up from
//! history too, since publications sent during the outage never arrived.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use futures_util::{FutureExt, StreamExt};
use herald_core::bus::Subscription;
use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::{HistoryRequest, Position, Publication};
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::buckets::{Parked, Route, Share};
use crate::deadline::Alarm;
use crate::sequencer::{Accepted, Sequencer};
use herald_core::upstream::Upstream;

/// Publications read from history per catch-up request.
const CATCH_UP_PAGE: u32 = 1000;

/// Where a feed brings its channel's publications: the hub's entry for the channel, which
/// hands them to the local subscribers.
pub trait Listener: Send + Sync + 'static {
    /// The channel whose feed it listens to.
    fn channel(&self) -> &Arc<str>;
    /// The feed receives publications; those after `position` follow. Returns whether
    /// the feed is still wanted (its channel may have been let go while it started).
    fn started(&self, position: Position) -> bool;
    /// The feed cannot go on: its subscribers must subscribe again.
    fn failed(&self, refusal: Refusal);
    /// Publications, in order, each once.
    fn deliver(&self, publications: &[Publication]);
    /// A join or leave event of the channel's presence.
    fn announce(&self, event: &Publication);
    /// Whether the feed is still wanted: a shared channel's feed is not aborted when its
    /// channel is let go, and stops at its next step (or page of a catch-up).
    fn wanted(&self) -> bool;
}

#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    /// How long a publication after a gap waits for the gap to close by itself.
    pub gap_hold: Duration,
}

/// Where a feed takes its channel's publications from.
enum Source {
    /// A bus subscription of the channel's own.
    Own(Subscription),
    /// Its share of its bucket's subscription (`delivery = "shared"`).
    Shared(Route),
}

impl Source {
    async fn open(
        upstream: &Upstream,
        channel: &Arc<str>,
        shared: Option<Share>,
    ) -> Result<Self, Refusal> {
        let opened = match shared {
            Some(share) => share
                .buckets
                .route(channel, share.generation)
                .await
                .map(Self::Shared),
            None => {
                let subject = upstream.subjects().delivery(channel);
                upstream.bus().subscribe(subject).await.map(Self::Own)
            }
        };
        opened.map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))
    }

    /// The next publication; `None` once the subscription has ended.
    async fn next(&mut self, channel: &str) -> Option<Publication> {
        match self {
            Self::Shared(route) => route.next().await,
            Self::Own(subscription) => loop {
                match Publication::decode(subscription.next().await?.payload) {
                    Ok(publication) => return Some(publication),
                    Err(e) => tracing::warn!(channel, error = %e, "undecodable publication"),
                }
            },
        }
    }
}

/// Runs the feed of `listener`'s channel until its bus subscription ends or it is
/// aborted; `shared` when the channel is delivered through its bucket's subscription (the
/// feed then parks whenever it is idle, and its task ends: [`crate::buckets`]).
pub fn run(
    listener: impl Listener,
    upstream: Upstream,
    config: FeedConfig,
    history: bool,
    shared: Option<Share>,
) -> impl Future<Output = ()> + Send + 'static {
    // The start is boxed, as every step that waits on the bus or a router: a feed lives as
    // long as its channel has subscribers here, mostly idle, and its task then holds only
    // the loop's state. Chained, not awaited in an `async` block, which would keep room
    // for the started feed beside the loop that took it over.
    Box::pin(start(listener, upstream, config, history, shared)).then(|started| match started {
        Some((feed, source)) => Either::Left(feed.serve(source)),
        None => Either::Right(std::future::ready(())),
    })
}

/// Opens the channel's source and learns its position; the feed ready to serve, or
/// `None` once its listener has been told why not.
async fn start<L: Listener>(
    listener: L,
    upstream: Upstream,
    config: FeedConfig,
    history: bool,
    shared: Option<Share>,
) -> Option<(Feed<L>, Source)> {
    let channel = listener.channel();
    let source = match Source::open(&upstream, channel, shared).await {
        Ok(source) => source,
        Err(refusal) => {
            listener.failed(refusal);
            return None;
        }
    };
    let mut connections = upstream.bus().connections();
    connections.mark_unchanged();
    // The subscription must be live on the bus before any subscriber is told it is
    // subscribed, or a publication sent right after could pass it by. For a channel with
    // history the position request, sent after the subscription on the same connection,
    // guarantees that; without history a flush (a round trip to the server) does.
    let position = if history {
        match upstream.position(channel).await {
            Ok(position) => position,
            Err(refusal) => {
                listener.failed(refusal);
                return None;
            }
        }
    } else {
        if let Err(e) = upstream.bus().flush().await {
            listener.failed(Refusal::new(ErrorCode::Unavailable, e.to_string()));
            return None;
        }
        Position::default()
    };
    let sequencer = Sequencer::new(&position);
    if !listener.started(position) {
        return None;
    }
    let feed = Feed {
        listener,
        upstream,
        sequencer,
        gap_alarm: Alarm::default(),
        gap_hold: config.gap_hold,
        history,
        connections,
    };
    Some((feed, source))
}

impl<L: Listener> Parked for Feed<L> {
    fn pending(&self) -> bool {
        Feed::pending(self)
    }

    fn resume(self: Box<Self>, route: Route) {
        tokio::spawn(self.serve(Source::Shared(route)));
    }
}

/// What a feed does after the select: nothing, or work that waits on a router.
enum Step {
    Idle,
    FillGap,
    CatchUp,
    /// A publication of another epoch, boxed: it is rare, and the step is kept small.
    ChangeEpoch(Box<Publication>),
}

/// A running feed's state; parked as it is when the feed is idle (shared channels).
struct Feed<L> {
    listener: L,
    upstream: Upstream,
    sequencer: Sequencer,
    /// Set while a gap waits to close by itself or to be filled.
    gap_alarm: Alarm,
    gap_hold: Duration,
    history: bool,
    /// Reconnections of the bus: after one, a feed with history catches up.
    connections: watch::Receiver<u64>,
}

impl<L: Listener> Feed<L> {
    /// Takes the channel's publications from `source` until it ends or the task is
    /// aborted; a feed of a shared channel parks whenever it is idle (its task ends, and
    /// its bucket resumes it in a new one when there is work).
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` would hold its arguments twice"
    )]
    fn serve(mut self, mut source: Source) -> impl Future<Output = ()> + Send + 'static {
        async move {
            loop {
                source = match source {
                    Source::Shared(route) if route.is_idle() && self.may_park() => {
                        return route.park(Box::new(self));
                    }
                    source => source,
                };
                // The select takes what came, handling a publication in place; work that
                // waits on a router comes after it, so the task holds only the select's
                // state while idle.
                let step = tokio::select! {
                    publication = source.next(self.listener.channel()) => {
                        let Some(publication) = publication else { break };
                        if publication.membership.is_some() {
                            self.listener.announce(&publication);
                            Step::Idle
                        } else if publication.epoch.is_empty() || !self.history {
                            // Without history, or kept out of it by the publish hook: no place
                            // in the order.
                            self.listener.deliver(&[publication]);
                            Step::Idle
                        } else {
                            self.accept(publication)
                        }
                    }
                    () = self.gap_alarm.rings() => Step::FillGap,
                    changed = self.connections.changed(), if self.history => {
                        if changed.is_err() { break }
                        Step::CatchUp
                    }
                };
                match step {
                    Step::Idle => {}
                    Step::FillGap => Box::pin(self.fill_gap()).await,
                    Step::CatchUp => Box::pin(self.catch_up()).await,
                    Step::ChangeEpoch(publication) => {
                        Box::pin(self.change_epoch(*publication)).await;
                        self.track_gap();
                    }
                }
            }
            let refusal = Refusal::new(ErrorCode::Unavailable, "channel subscription ended");
            self.listener.failed(refusal);
        }
    }

    /// Whether nothing but a publication would make it work: no gap waits, and no
    /// reconnection is left to catch up from.
    fn may_park(&self) -> bool {
        !self.gap_alarm.is_set() && !self.pending()
    }

    fn pending(&self) -> bool {
        self.history && self.connections.has_changed().unwrap_or(false)
    }

    fn channel(&self) -> &str {
        self.listener.channel()
    }

    fn deliver(&self, publications: &[Publication]) {
        self.listener.deliver(publications);
    }

    /// Arms the gap timer when a gap opens, disarms it when none is left.
    fn track_gap(&mut self) {
        match (self.sequencer.gap(), self.gap_alarm.is_set()) {
            (Some(_), false) => self.gap_alarm.set(Instant::now() + self.gap_hold),
            (None, true) => self.gap_alarm.clear(),
            _ => {}
        }
    }

    /// Runs a publication through the sequencer; what it cannot settle without a router
    /// is left as the next step.
    fn accept(&mut self, publication: Publication) -> Step {
        let step = match self.sequencer.accept(publication) {
            Accepted::Deliver(ready) => {
                self.deliver(&ready);
                Step::Idle
            }
            Accepted::Nothing => Step::Idle,
            Accepted::OtherEpoch(publication) => return Step::ChangeEpoch(publication),
        };
        self.track_gap();
        step
    }

    /// A publication from another epoch: the stream was lost and restarted, or the
    /// publication is a straggler from the old one. A router says which.
    async fn change_epoch(&mut self, publication: Publication) {
        match self.upstream.position(self.channel()).await {
            Ok(current) if current.epoch == publication.epoch => {
                tracing::info!(channel = self.channel(), epoch = %current.epoch, "stream restarted");
                self.sequencer.restart(current.epoch);
                if publication.offset == 0 {
                    // A deleted sync document's new epoch, announced at revision 0: its
                    // subscribers must learn of it now, not at the next patch.
                    self.deliver(std::slice::from_ref(&publication));
                } else if let Accepted::Deliver(ready) = self.sequencer.accept(publication) {
                    self.deliver(&ready);
                }
            }
            Ok(_) => {}
            Err(refusal) => {
                tracing::warn!(channel = self.channel(), %refusal, "cannot check the epoch");
            }
        }
    }

    async fn fill_gap(&mut self) {
        let Some((from, to)) = self.sequencer.gap() else {
            return;
        };
        let request = HistoryRequest {
            channel: self.channel().to_string(),
            since: Some(from - 1),
            limit: u32::try_from(to - from + 1).unwrap_or(u32::MAX),
            reverse: false,
        };
        match self.upstream.history(request).await {
            Ok(page) => {
                let ready = self.sequencer.fill(page.publications, page.truncated);
                self.deliver(&ready);
                self.track_gap();
                if page.truncated && self.gap_alarm.is_set() {
                    // The rest of the gap is in history too: read on at once.
                    self.gap_alarm.set(Instant::now());
                }
            }
            Err(refusal) => {
                tracing::warn!(channel = self.channel(), %refusal, "cannot fill a gap; retrying");
                self.gap_alarm.set(Instant::now() + self.gap_hold);
            }
        }
    }

    /// Delivers whatever was published after the last delivered offset (after a bus outage).
    async fn catch_up(&mut self) {
        // Read on from where each page ended, not from the sequencer's position: a page
        // that begins past a gap (history trimmed) is held behind it, and asking again from
        // the position would return the same page for ever.
        let mut from = self.sequencer.position();
        while self.listener.wanted() {
            let request = HistoryRequest {
                channel: self.channel().to_string(),
                since: Some(from.offset),
                limit: CATCH_UP_PAGE,
                reverse: false,
            };
            let page = match self.upstream.history(request).await {
                Ok(page) => page,
                Err(refusal) => {
                    tracing::warn!(channel = self.channel(), %refusal, "cannot catch up");
                    return;
                }
            };
            let current = page.position.unwrap_or_default();
            if current.epoch != from.epoch {
                self.sequencer.restart(current.epoch.clone());
                from = Position {
                    offset: 0,
                    epoch: current.epoch,
                };
                continue;
            }
            let more = page.truncated || page.publications.len() as u32 == CATCH_UP_PAGE;
            let Some(last) = page.publications.last() else {
                return;
            };
            from.offset = last.offset;
            for publication in page.publications {
                if let Accepted::Deliver(ready) = self.sequencer.accept(publication) {
                    self.deliver(&ready);
                }
            }
            self.track_gap();
            if !more {
                return;
            }
        }
    }
}
