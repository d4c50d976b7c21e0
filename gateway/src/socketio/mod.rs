//! The Socket.IO profile: what stock Socket.IO clients speak, at `/socket.io/`.
//!
//! Layers, each testable without a socket:
//! - [`engine`]: Engine.IO v4 packets, the payloads that carry several of them in one
//!   HTTP long-polling body, and the errors of Engine.IO requests.
//! - [`packet`]: Socket.IO v5 packets inside Engine.IO messages (connect, events, acks,
//!   binary events with their attachment count).
//! - [`binary`]: putting a binary event back together from its packet and the
//!   attachments that follow it.
//! - [`channels`]: namespaces and rooms as Herald channels.
//! - [`event`]: events as publication data, and publications as Socket.IO events.
//! - [`reserved`]: the events Herald gives a meaning (rooms, token refresh, presence).
//! - [`offsets`]: the offset string that ends every event when connection state recovery
//!   is on: the socket's position in each of its channels.
//!
//! Then the connection:
//! - [`endpoint`]: the gateway's Socket.IO endpoint: its sessions, its sid token.
//! - [`link`]: an Engine.IO session as its transports see it, and the gateway's table of
//!   sessions by sid.
//! - [`polling`] and [`websocket`]: the two transports, and the upgrade from one to the
//!   other.
//! - [`forward`]: polling requests for a session held by another gateway, forwarded to it
//!   over the bus.
//! - the session (one task per Engine.IO session: handshake, heartbeat, deadlines), its
//!   sockets (one per namespace: what each event asks for), the socket-level steps
//!   (admission, subscriptions, presence, acks), and how the hub's publications reach a
//!   socket (`subscriber`).
//! - `herald:history`, the events of a namespace or room for a Socket.IO app (`history`).
//! - sync documents through reserved events and `herald:change` pushes (`documents`).
//! - the recovery of sockets whose connection was lost: their records, kept by routers
//!   (`recovery`), and resuming them with the replay of what they missed (`resume`).

pub mod binary;
pub mod channels;
mod documents;
pub mod endpoint;
pub mod engine;
pub mod event;
pub mod forward;
mod history;
pub mod inbound;
pub mod link;
pub mod offsets;
pub mod packet;
pub mod polling;
mod recovery;
pub mod reserved;
mod resume;
mod session;
mod socket;
mod sockets;
mod subscriber;
pub mod websocket;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A new gateway token, which starts every Engine.IO sid the gateway makes: 4 random
/// bytes, 6 characters.
pub(crate) fn new_token() -> String {
    random_id::<4>()
}

/// The token of the gateway that made `sid`.
pub(crate) fn sid_token(sid: &str) -> Option<&str> {
    sid.get(..6)
}

/// A random id of `N` bytes in URL-safe base64, like the reference server's ids.
pub(crate) fn random_id<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; N]>())
}
