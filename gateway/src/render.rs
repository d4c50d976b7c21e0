//! What the hub fans out, in each wire format a subscriber may take: a publication or a
//! join/leave event is encoded once per format and the same bytes go to every local
//! subscriber of that format.
//!
//! The hub knows formats only through this module, so a new protocol, or a new variant of
//! one, is a new [`Format`] here and a hub `Subscriber` in its own module; the
//! hub's registry does not change.

use std::sync::Arc;

use herald_proto::bus::v1::{Membership, Publication, SyncState};

use crate::native::push;
use crate::outbound::Encoded;
use crate::socketio::event;
use crate::sync::wire::Change;

/// How a subscriber takes publications. Subscribers with equal formats share encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Native JSON pushes.
    Native,
    /// Socket.IO event packets of `namespace`; with `sender`, each event's arguments end
    /// with who sent it.
    SocketIo { namespace: Arc<str>, sender: bool },
    /// A sync document's patches, as native `sync` pushes.
    NativeSync,
    /// A sync document's patches, as `herald:change` events of `namespace`.
    SocketIoSync { namespace: Arc<str> },
}

impl Format {
    /// `publication` in this format; `None` when it cannot be shown in it (data that is not
    /// UTF-8).
    pub fn publication(&self, publication: &Publication) -> Option<Encoded> {
        match self {
            Self::Native => push::publication(publication).map(Encoded::text),
            Self::SocketIo { namespace, sender } => event::render(publication, namespace, *sender),
            Self::NativeSync | Self::SocketIoSync { .. } => {
                Some(self.sync_change(&Change::patch(&publication.channel, publication)))
            }
        }
    }

    /// A sync document's whole state (a snapshot, or the patches a client missed), pushed
    /// to bring a subscriber up to date; for sync formats only.
    pub fn sync_state(&self, channel: &str, state: &SyncState) -> Encoded {
        self.sync_change(&Change::state(channel, state))
    }

    fn sync_change(&self, change: &Change<'_>) -> Encoded {
        match self {
            Self::SocketIo { namespace, .. } | Self::SocketIoSync { namespace } => {
                Encoded::text(event::packet_text(namespace, &change.socketio_array()))
            }
            Self::Native | Self::NativeSync => Encoded::text(change.native()),
        }
    }

    /// A join or leave event on `channel` in this format.
    pub fn membership(&self, channel: &str, membership: &Membership) -> Encoded {
        match self {
            Self::Native | Self::NativeSync => Encoded::text(push::membership(channel, membership)),
            Self::SocketIo { namespace, .. } | Self::SocketIoSync { namespace } => {
                Encoded::text(event::membership(channel, namespace, membership))
            }
        }
    }
}
