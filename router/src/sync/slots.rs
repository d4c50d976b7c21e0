//! The patches of one document on one router wait for each other: a lock per document
//! being patched, holding the document as the last patch left it, so that a busy document
//! is read from the store once rather than once per patch. A lock nobody holds or waits
//! for is dropped, and so is the document it held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::Position;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use super::Snapshot;
use super::document::parse_doc;

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

type Slot = Arc<tokio::sync::Mutex<Option<Current>>>;

/// Patches of one document that may wait on one router at once, at most; more are
/// refused as temporary (111), so that one busy document cannot take every request slot.
/// (A router serving fewer requests at once allows a quarter of them.)
pub(super) const MAX_WAITING: usize = 64;

/// One lock per document being patched on this router, holding the document as the last
/// patch left it; a lock nobody holds or waits for is dropped.
#[derive(Default)]
pub(super) struct Slots {
    slots: Mutex<HashMap<String, Slot>>,
}

pub(super) struct Held<'a> {
    slots: &'a Slots,
    channel: &'a str,
    /// Both released together, under the map's lock, in `drop`.
    slot: Option<Slot>,
    guard: Option<OwnedMutexGuard<Option<Current>>>,
}

impl Slots {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Each critical section leaves the map consistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the lock of `channel`'s document once the patches before have done with it;
    /// refused when more than `most_waiting` are waiting already (`None`: no limit).
    pub(super) async fn hold<'a>(
        &'a self,
        channel: &'a str,
        most_waiting: Option<usize>,
    ) -> Result<Held<'a>, Refusal> {
        let slot = {
            let mut map = self.map();
            let slot = map.entry(channel.to_string()).or_default();
            // The map's reference, and two per patch holding or awaiting the lock.
            if most_waiting.is_some_and(|most| Arc::strong_count(slot) > 1 + 2 * most) {
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    "too many patches of this document at once; retry",
                ));
            }
            slot.clone()
        };
        let mut held = Held {
            slots: self,
            channel,
            slot: Some(slot.clone()),
            guard: None,
        };
        held.guard = Some(slot.lock_owned().await);
        Ok(held)
    }
}

impl Held<'_> {
    pub(super) fn cached(&mut self) -> &mut Option<Current> {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut map = self.slots.map();
        self.guard = None;
        self.slot = None;
        // Only the map's reference left: nobody holds or awaits the lock.
        if map
            .get(self.channel)
            .is_some_and(|slot| Arc::strong_count(slot) == 1)
        {
            map.remove(self.channel);
        }
    }
}
