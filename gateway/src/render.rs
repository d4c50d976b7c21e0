//! What the hub fans out, in each wire format a subscriber may take: a publication or a
//! join/leave event is encoded once per format and the same bytes go to every local
//! subscriber of that format.
//!
//! The hub knows formats only through this module, so a new protocol, or a new variant of
//! one, is a new [`Format`] here and a hub `Subscriber` in its own module; the
//! hub's registry does not change.

use std::sync::Arc;

use herald_proto::bus::v1::{Membership, Publication};

use crate::native::push;
use crate::outbound::Encoded;
use crate::socketio::event;

/// How a subscriber takes publications. Subscribers with equal formats share encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Native JSON pushes.
    Native,
    /// Socket.IO event packets of `namespace`; with `sender`, each event's arguments end
    /// with who sent it.
    SocketIo { namespace: Arc<str>, sender: bool },
}

impl Format {
    /// `publication` in this format; `None` when it cannot be shown in it (data that is not
    /// UTF-8).
    pub fn publication(&self, publication: &Publication) -> Option<Encoded> {
        match self {
            Self::Native => push::publication(publication).map(Encoded::text),
            Self::SocketIo { namespace, sender } => event::render(publication, namespace, *sender),
        }
    }

    /// A join or leave event on `channel` in this format.
    pub fn membership(&self, channel: &str, membership: &Membership) -> Encoded {
        match self {
            Self::Native => Encoded::text(push::membership(channel, membership)),
            Self::SocketIo { namespace, .. } => {
                Encoded::text(event::membership(channel, namespace, membership))
            }
        }
    }
}
