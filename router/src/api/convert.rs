//! Messages of the bus as the server API shows them.

use herald_proto::api::v1::{self as api, StreamPosition};
use herald_proto::bus::v1 as bus;

pub fn client_info(client: bus::ClientInfo) -> api::ClientInfo {
    api::ClientInfo {
        client: client.client,
        user: client.user,
        info: String::from_utf8_lossy(&client.info).into_owned(),
    }
}

/// A publication as the API shows it.
pub fn api_publication(p: bus::Publication) -> api::Publication {
    api::Publication {
        offset: p.offset,
        data: String::from_utf8_lossy(&p.data).into_owned(),
        publisher: p.publisher.map(client_info),
        attachments: p.attachments,
        time_ms: p.accepted_at_us / 1000,
    }
}

pub fn position(position: bus::Position) -> StreamPosition {
    StreamPosition {
        offset: position.offset,
        epoch: position.epoch,
    }
}
