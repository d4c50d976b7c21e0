//! The gated subscriber of one document (see [`super`]): the hub hands it every
//! patch of the channel; it lets through only the next revision of what its client has,
//! and brings the client up to date from a router when anything else comes.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use herald_core::upstream::Upstream;
use herald_proto::bus::v1::{Position, Publication, SyncState};

use crate::hub::Subscriber;
use crate::outbound::{Encoded, Outbound};
use crate::render::Format;

/// Patches, and bytes of them, held behind a closed gate at most; past this they are
/// dropped and the client is brought up to date from a router instead.
const MAX_HELD: usize = 1000;
const MAX_HELD_BYTES: usize = 1 << 20;

/// Wait before asking a router again when bringing a client up to date failed.
const RETRY: Duration = Duration::from_millis(500);

struct Gate {
    /// The client's document: its revision and epoch.
    at: Position,
    /// Patches go out as they come; otherwise they wait in `held`.
    open: bool,
    held: Vec<Publication>,
    held_bytes: usize,
    /// Patches were dropped for want of room in `held`.
    overflowed: bool,
    /// The client's state is being read; nobody else starts reading it.
    reading: bool,
    /// Cleared when the client leaves the document: nothing more is sent.
    active: bool,
}

impl Gate {
    fn hold(&mut self, publication: &Publication) {
        let bytes = publication.data.len();
        if self.held.len() < MAX_HELD && self.held_bytes + bytes <= MAX_HELD_BYTES {
            self.held.push(publication.clone());
            self.held_bytes += bytes;
        } else {
            self.overflowed = true;
        }
    }

    fn take_held(&mut self) -> Vec<Publication> {
        self.held_bytes = 0;
        std::mem::take(&mut self.held)
    }
}

/// How a patch relates to the client's document.
enum Fit {
    /// The next revision: it goes out.
    Next,
    /// The client has it already.
    Old,
    /// Revision 0 of another epoch: the document was deleted, and is the empty one now.
    Reset,
    /// A gap, or another epoch: the client must be brought up to date.
    Break,
}

fn fit(at: &Position, patch: &Publication) -> Fit {
    // Revision 0 of no epoch is the empty document, which every epoch starts from.
    let same_epoch = patch.epoch == at.epoch || (at.epoch.is_empty() && at.offset == 0);
    if same_epoch && patch.offset == at.offset + 1 {
        Fit::Next
    } else if same_epoch && patch.offset <= at.offset {
        Fit::Old
    } else if patch.offset == 0 && !patch.epoch.is_empty() {
        Fit::Reset
    } else {
        Fit::Break
    }
}

/// The empty document at `reset`'s position: what a deleted document is.
fn emptied(reset: &Publication) -> SyncState {
    SyncState {
        position: Some(position_of(reset)),
        snapshot: true,
        doc: Bytes::from_static(b"{}"),
        patches: Vec::new(),
    }
}

fn position_of(patch: &Publication) -> Position {
    Position {
        offset: patch.offset,
        epoch: patch.epoch.clone(),
    }
}

/// One client's subscription to one document, as the hub sees it.
pub struct SyncSubscriber {
    me: Weak<Self>,
    channel: String,
    format: Format,
    outbound: Outbound,
    pub(super) upstream: Upstream,
    gate: Mutex<Gate>,
}

impl SyncSubscriber {
    /// A subscriber whose gate is closed until [`Self::opened`]. `format` is
    /// [`Format::NativeSync`] or [`Format::SocketIoSync`].
    pub fn new(channel: &str, format: Format, outbound: Outbound, upstream: Upstream) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            channel: channel.to_string(),
            format,
            outbound,
            upstream,
            gate: Mutex::new(Gate {
                at: Position::default(),
                open: false,
                held: Vec::new(),
                held_bytes: 0,
                overflowed: false,
                reading: true,
                active: true,
            }),
        })
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn gate(&self) -> MutexGuard<'_, Gate> {
        // Every critical section leaves the gate consistent.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client has been sent `state` (in the reply to its subscribe), or is sent it now
    /// as a change when `push`: patches after it go out from now on.
    pub fn opened(&self, state: &SyncState, push: bool) {
        let mut gate = self.gate();
        if push {
            self.outbound
                .send_encoded(&self.format.sync_state(&self.channel, state));
        }
        gate.at = state.position.clone().unwrap_or_default();
        gate.reading = false;
        if !self.flush(&mut gate) {
            self.bring_up_to_date(&mut gate);
        }
    }

    /// The client left the document: nothing more is sent.
    pub fn stop(&self) {
        let mut gate = self.gate();
        gate.active = false;
        gate.open = false;
        gate.take_held();
    }

    /// Sends the held patches that follow the client's revision and opens the gate;
    /// returns false, keeping the gate closed and dropping what was held, if they do not
    /// all follow: the client is then brought up to date from a router, which has them.
    fn flush(&self, gate: &mut Gate) -> bool {
        let held = gate.take_held();
        for patch in &held {
            match fit(&gate.at, patch) {
                Fit::Next => {
                    gate.at = position_of(patch);
                    if let Some(encoded) = self.format.publication(patch) {
                        self.outbound.send_encoded(&encoded);
                    }
                }
                Fit::Old => {}
                // An announcement held while the client's state was read may be older than
                // that state (another delete, and patches, since): only a router can say.
                Fit::Reset | Fit::Break => {
                    gate.overflowed = false;
                    return false;
                }
            }
        }
        if std::mem::take(&mut gate.overflowed) {
            return false;
        }
        gate.open = true;
        true
    }

    /// The document was deleted: the client gets the empty one, at revision 0 of the new
    /// epoch, with no need to ask a router (every subscriber would, at once).
    fn reset(&self, gate: &mut Gate, announcement: &Publication) {
        let state = emptied(announcement);
        self.outbound
            .send_encoded(&self.format.sync_state(&self.channel, &state));
        gate.at = position_of(announcement);
    }

    /// Closes the gate and starts reading the client's state from a router, unless that
    /// is under way.
    fn bring_up_to_date(&self, gate: &mut Gate) {
        gate.open = false;
        if gate.reading || !gate.active {
            return;
        }
        gate.reading = true;
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move { me.read_until_current().await });
        }
    }

    /// Asks a router for what the client misses until it is current, then pushes it and
    /// opens the gate; gives up when the client leaves.
    async fn read_until_current(self: Arc<Self>) {
        loop {
            let since = {
                let mut gate = self.gate();
                if !gate.active || self.outbound.closer().is_closed() {
                    return;
                }
                // What came before this read is in the store, hence in what it returns: only
                // what comes during the read is worth holding (a busy document would fill
                // the hold during every wait, and never let the gate open).
                gate.take_held();
                gate.overflowed = false;
                gate.at.clone()
            };
            match self.upstream.sync_read(&self.channel, Some(since)).await {
                Ok(state) => {
                    if self.deliver_state(&state) {
                        return;
                    }
                    // What came meanwhile does not follow what the router said (a store
                    // that lost its newest writes, say): ask again, not at once.
                    tokio::time::sleep(RETRY).await;
                }
                Err(refusal) => {
                    tracing::warn!(channel = self.channel, %refusal, "cannot bring a sync subscriber up to date");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// Pushes a state read from a router and opens the gate; returns whether the reading
    /// is over (the gate is open, or the client left).
    fn deliver_state(&self, state: &SyncState) -> bool {
        let mut gate = self.gate();
        if !gate.active {
            return true;
        }
        self.outbound
            .send_encoded(&self.format.sync_state(&self.channel, state));
        gate.at = state.position.clone().unwrap_or_default();
        let opened = self.flush(&mut gate);
        gate.reading = !opened;
        opened
    }
}

impl Subscriber for SyncSubscriber {
    fn format(&self) -> &Format {
        &self.format
    }

    fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn publication(&self, _channel: &str, patch: &Publication, encoded: &Encoded) -> bool {
        let mut gate = self.gate();
        if !gate.open {
            if gate.active {
                gate.hold(patch);
            }
            return false;
        }
        match fit(&gate.at, patch) {
            Fit::Next => {
                gate.at = position_of(patch);
                self.outbound.send_encoded(encoded)
            }
            Fit::Old => false,
            Fit::Reset => {
                self.reset(&mut gate, patch);
                true
            }
            Fit::Break => {
                self.bring_up_to_date(&mut gate);
                false
            }
        }
    }
}
