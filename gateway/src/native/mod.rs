//! Herald's native JSON protocol over WebSocket (`/connection/websocket`).
//!
//! Layers, each testable without a socket: [`command`] parses a text frame into a typed
//! command, [`reply`] and [`push`] encode what goes back, `burst` reads ahead and batches
//! publishes, and the session runs one connection: a connect handshake with a deadline, then one loop over commands.
//! `docs/protocol.md` is the reference for clients.

mod burst;
pub mod command;
pub mod push;
pub mod reply;
mod session;

pub use session::serve;
