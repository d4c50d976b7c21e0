//! How sync documents look to clients, the same JSON in both protocols: what a client asks
//! (a subscribe, a patch), a document's state (a snapshot, or the patches a client missed)
//! and a patch as it happens.
//!
//! - state: `{"rev": 7, "epoch": "…", "snapshot": true, "doc": {…}}`, or
//!   `{"rev": 7, "epoch": "…", "snapshot": false, "patches": [{"rev": 6, "patch": {…}}, …]}`;
//! - a change pushed to subscribers: `{"channel": "…", "rev": 8, "epoch": "…", "patch": {…}}`, or
//!   `{"channel": "…", …state}` when the client must be brought up to date at once (after
//!   the document was deleted, or patches were lost on the way).
//!
//! Natively a change is the push `{"push": "sync", …change}`; on Socket.IO it is the event
//! `herald:change` with the change as its one argument.

use herald_proto::bus::v1::{Position, Publication, SyncConflict, SyncState};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The Socket.IO event a change is pushed as.
pub const CHANGE_EVENT: &str = "herald:change";

/// What a subscribe asks for (native `sync_subscribe`, Socket.IO `herald:sync`): a
/// document, from the revision the client has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncOptions {
    pub channel: String,
    /// The revision the client has, with its epoch: it is sent the patches after it, or a
    /// snapshot when they are no longer kept.
    pub rev: Option<u64>,
    pub epoch: Option<String>,
}

impl SyncOptions {
    /// Where the client says it is, if it says.
    pub fn since(&self) -> Option<Position> {
        self.rev.map(|offset| Position {
            offset,
            epoch: self.epoch.clone().unwrap_or_default(),
        })
    }
}

/// What a patch asks for (native `sync_patch`, Socket.IO `herald:patch`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOptions<'a> {
    pub channel: String,
    /// A JSON Merge Patch (RFC 7386): an object.
    #[serde(borrow)]
    pub patch: &'a RawValue,
    /// Applied only if the document is at this revision...
    pub base_rev: Option<u64>,
    /// ... of this epoch, when given.
    pub base_epoch: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The revision and epoch of a position the routers sent (revision 0 of no epoch when
/// there is none).
fn rev_epoch(position: Option<&Position>) -> (u64, &str) {
    position.map_or((0, ""), |p| (p.offset, p.epoch.as_str()))
}

/// JSON the routers stored, as it is (`null` if it somehow is not JSON).
fn raw(json: &[u8]) -> Option<&RawValue> {
    serde_json::from_slice(json).ok()
}

#[derive(Serialize)]
pub struct PatchView<'a> {
    rev: u64,
    patch: Option<&'a RawValue>,
}

impl<'a> PatchView<'a> {
    pub fn of(publication: &'a Publication) -> Self {
        Self {
            rev: publication.offset,
            patch: raw(&publication.data),
        }
    }
}

/// A document's state as a client gets it.
#[derive(Serialize)]
pub struct StateView<'a> {
    rev: u64,
    epoch: &'a str,
    snapshot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    doc: Option<Option<&'a RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patches: Option<Vec<PatchView<'a>>>,
}

impl<'a> StateView<'a> {
    pub fn of(state: &'a SyncState) -> Self {
        let (rev, epoch) = rev_epoch(state.position.as_ref());
        Self {
            rev,
            epoch,
            snapshot: state.snapshot,
            doc: state.snapshot.then(|| raw(&state.doc)),
            patches: (!state.snapshot).then(|| state.patches.iter().map(PatchView::of).collect()),
        }
    }
}

/// What a refused conditional patch tells the client besides the error: where the
/// document is, and the document to rebase on.
#[derive(Serialize)]
pub struct ConflictView<'a> {
    pub rev: u64,
    pub epoch: &'a str,
    pub doc: Option<&'a RawValue>,
}

impl<'a> ConflictView<'a> {
    pub fn of(conflict: &'a SyncConflict) -> Self {
        let (rev, epoch) = rev_epoch(conflict.position.as_ref());
        Self {
            rev,
            epoch,
            doc: raw(&conflict.doc),
        }
    }
}

/// One patch as it happens, with its epoch: a client that subscribed before the
/// document's first patch learns the epoch from it.
#[derive(Serialize)]
struct LivePatch<'a> {
    rev: u64,
    epoch: &'a str,
    patch: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Patch(LivePatch<'a>),
    State(StateView<'a>),
}

/// A change of `channel`'s document as subscribers are told.
#[derive(Serialize)]
pub struct Change<'a> {
    channel: &'a str,
    #[serde(flatten)]
    body: Body<'a>,
}

impl<'a> Change<'a> {
    pub fn patch(channel: &'a str, publication: &'a Publication) -> Self {
        Self {
            channel,
            body: Body::Patch(LivePatch {
                rev: publication.offset,
                epoch: &publication.epoch,
                patch: raw(&publication.data),
            }),
        }
    }

    pub fn state(channel: &'a str, state: &'a SyncState) -> Self {
        Self {
            channel,
            body: Body::State(StateView::of(state)),
        }
    }

    /// `{"push":"sync",…}`.
    pub fn native(&self) -> String {
        #[derive(Serialize)]
        struct Push<'a> {
            push: &'static str,
            #[serde(flatten)]
            change: &'a Change<'a>,
        }
        let push = Push {
            push: "sync",
            change: self,
        };
        // Plain structs and raw JSON: serializing cannot fail.
        serde_json::to_string(&push).unwrap_or_default()
    }

    /// `["herald:change",{…}]`, the array of a Socket.IO event packet.
    pub fn socketio_array(&self) -> String {
        serde_json::to_string(&(CHANGE_EVENT, self)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use herald_proto::bus::v1::Position;
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn states_and_changes_read_the_same_in_both_protocols() {
        let patch = Publication {
            channel: "doc:1".into(),
            offset: 8,
            epoch: "e".into(),
            data: Bytes::from_static(br#"{"a":1}"#),
            ..Default::default()
        };
        let change = Change::patch("doc:1", &patch);
        let native: Value = serde_json::from_str(&change.native()).unwrap();
        assert_eq!(
            native,
            json!({"push": "sync", "channel": "doc:1", "rev": 8, "epoch": "e", "patch": {"a": 1}})
        );
        let array: Value = serde_json::from_str(&change.socketio_array()).unwrap();
        assert_eq!(
            array,
            json!(["herald:change", {"channel": "doc:1", "rev": 8, "epoch": "e", "patch": {"a": 1}}])
        );
        let snapshot = SyncState {
            position: Some(Position {
                offset: 7,
                epoch: "e".into(),
            }),
            snapshot: true,
            doc: Bytes::from_static(br#"{"b":[1]}"#),
            patches: Vec::new(),
        };
        let view = serde_json::to_value(StateView::of(&snapshot)).unwrap();
        assert_eq!(
            view,
            json!({"rev": 7, "epoch": "e", "snapshot": true, "doc": {"b": [1]}})
        );
        let caught_up = SyncState {
            position: Some(Position {
                offset: 8,
                epoch: "e".into(),
            }),
            snapshot: false,
            doc: Bytes::new(),
            patches: vec![patch.clone()],
        };
        let push: Value =
            serde_json::from_str(&Change::state("doc:1", &caught_up).native()).unwrap();
        assert_eq!(
            push,
            json!({"push": "sync", "channel": "doc:1", "rev": 8, "epoch": "e",
                   "snapshot": false, "patches": [{"rev": 8, "patch": {"a": 1}}]})
        );
    }
}
