//! How publications reach one Socket.IO socket: as event packets of its namespace, never
//! its own events, and, when the socket has connection state recovery, each ending with
//! the offset string that lets it come back.

use std::sync::Arc;

use herald_proto::bus::v1::{Position, Publication};

use super::event;
use super::offsets::Marks;
use crate::hub::Subscriber;
use crate::outbound::{Encoded, Outbound};
use crate::render::Format;

/// One socket, as the hub and the replay of a resumed socket see it.
pub struct SocketSubscriber {
    sid: Arc<str>,
    format: Format,
    outbound: Outbound,
    /// The socket's position in each channel, with recovery on.
    marks: Option<Arc<Marks>>,
}

impl SocketSubscriber {
    /// `format` is the socket's: its namespace, and whether its events end with their
    /// sender.
    pub fn new(
        sid: Arc<str>,
        format: Format,
        outbound: Outbound,
        marks: Option<Arc<Marks>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            sid,
            format,
            outbound,
            marks,
        })
    }

    /// Sends a publication the socket missed while away, as it would have been sent live.
    pub fn replay(&self, publication: &Publication) {
        if let Some(encoded) = self.format.publication(publication) {
            self.publication(&publication.channel, publication, &encoded);
        }
    }

    /// Whether the socket published `publication` itself.
    fn own(&self, publication: &Publication) -> bool {
        let client = match &publication.publisher {
            Some(publisher) => &publisher.client,
            // From a router of the release before this one, during a rolling upgrade.
            None => &publication.origin,
        };
        **client == *self.sid
    }
}

impl Subscriber for SocketSubscriber {
    fn format(&self) -> &Format {
        &self.format
    }

    fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    fn publication(&self, channel: &str, publication: &Publication, encoded: &Encoded) -> bool {
        let position = || Position {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        };
        if self.own(publication) {
            // Its own events are not sent back, but the socket is past them.
            if let Some(marks) = &self.marks {
                marks.set(channel, &position());
            }
            return false;
        }
        match &self.marks {
            Some(marks) => {
                let offset = marks.advance(channel, &position());
                self.outbound
                    .send_encoded(&event::with_offset(encoded, &offset))
            }
            None => self.outbound.send_encoded(encoded),
        }
    }
}
