//! The patches of one document on one router are committed together: each request puts
//! its patch in the document's queue and waits for the document's lock; whoever holds the
//! lock commits everything queued so far in one store round trip, answers each patch, and
//! keeps the document as the commit left it for the next batch. A document nobody has
//! queued for or holds is forgotten.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::Position;
use serde_json::Value;
use tokio::sync::oneshot;

use super::document::parse_doc;
use super::{PatchOutcome, Snapshot};
use crate::history::Entry;

/// Patches of one document that may be queued on one router at once, at most; more are
/// refused as temporary (111), so that one busy document cannot take every request slot.
/// (A router serving fewer requests at once allows a quarter of them.)
pub(super) const MAX_WAITING: usize = 64;

/// A document as a router holds it while patching.
pub(super) struct Current {
    pub(super) position: Position,
    pub(super) doc: Value,
}

impl Current {
    pub(super) fn of(snapshot: &Snapshot) -> Result<Self, Refusal> {
        Ok(Self {
            position: snapshot.position.clone(),
            doc: parse_doc(snapshot)?,
        })
    }
}

/// A patch waiting to be committed, checked and parsed, with where its answer goes.
pub(super) struct Waiting {
    pub(super) patch: Value,
    /// The patch as it is stored and delivered.
    pub(super) entry: Entry,
    pub(super) base_rev: Option<u64>,
    pub(super) base_epoch: Option<String>,
    /// Largest document it may make.
    pub(super) max_size: usize,
    pub(super) reply: oneshot::Sender<Result<PatchOutcome, Refusal>>,
}

/// One document being patched on this router.
#[derive(Default)]
pub(super) struct Slot {
    /// Patches waiting to be committed, in arrival order.
    queue: Mutex<Vec<Waiting>>,
    /// Held by the request that commits; the document as the last commit left it.
    document: tokio::sync::Mutex<Option<Current>>,
}

impl Slot {
    fn queue(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // Each critical section leaves the queue consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `waiting`, unless `most` are queued already.
    pub(super) fn push(&self, waiting: Waiting, most: usize) -> Result<(), Refusal> {
        let mut queue = self.queue();
        if queue.len() >= most {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "too many patches of this document at once; retry",
            ));
        }
        queue.push(waiting);
        Ok(())
    }

    /// The first `most` queued patches, in order.
    pub(super) fn take(&self, most: usize) -> Vec<Waiting> {
        let mut queue = self.queue();
        let count = queue.len().min(most);
        queue.drain(..count).collect()
    }

    /// The document's lock.
    pub(super) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Option<Current>> {
        self.document.lock().await
    }
}

/// The documents being patched on this router.
#[derive(Default)]
pub(super) struct Slots {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// A request's hold on one document's slot; the slot goes with the last one.
pub(super) struct Entered<'a> {
    slots: &'a Slots,
    channel: &'a str,
    slot: Option<Arc<Slot>>,
}

impl Slots {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn enter<'a>(&'a self, channel: &'a str) -> Entered<'a> {
        let slot = self.map().entry(channel.to_string()).or_default().clone();
        Entered {
            slots: self,
            channel,
            slot: Some(slot),
        }
    }
}

impl Entered<'_> {
    pub(super) fn slot(&self) -> &Slot {
        self.slot.as_ref().expect("held until dropped")
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.map();
        self.slot = None;
        // Only the map's reference left: nobody queues for or holds the document.
        if map
            .get(self.channel)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(self.channel);
        }
    }
}
