//! Herald's native JSON protocol over WebSocket (`/connection/websocket`).
//!
//! Layers, each testable without a socket: [`command`] parses a text frame into a typed
//! command, [`reply`] and [`push`] encode what goes back, `burst` reads ahead so that
//! publishes travel in one [`Batch`](crate::batch::Batch), and the session ([`run`]) serves
//! one connection over any stream and sink of frames: a connect handshake with a deadline,
//! then one loop over commands.
//! `docs/protocol.md` is the reference for clients.

mod burst;
pub mod command;
pub mod push;
pub mod reply;
mod session;

pub use session::{run, serve};
