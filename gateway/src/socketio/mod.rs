//! The Socket.IO profile: what stock Socket.IO clients speak, at `/socket.io/`.
//!
//! Layers, each testable without a socket:
//! - [`engine`]: Engine.IO v4 packets, and the payloads that carry several of them in one
//!   HTTP long-polling body.
//! - [`packet`]: Socket.IO v5 packets inside Engine.IO messages (connect, events, acks,
//!   binary events with their attachment count).
//! - [`binary`]: putting a binary event back together from its packet and the
//!   attachments that follow it.
//! - [`channels`]: namespaces and rooms as Herald channels.
//! - [`event`]: events as publication data, and publications as Socket.IO events.
//! - the session: one connection, its namespaces, rooms, events and acks.
//!

pub mod binary;
pub mod channels;
pub mod engine;
pub mod event;
pub mod packet;
mod session;

pub use session::serve;
