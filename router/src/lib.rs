//! The Herald router: the one place where publications get their offsets.
//!
//! Routers are stateless workers over a history store. They receive publish and history
//! requests from gateways through a NATS queue group, so any number can run side by side.
//!
//! # Layout
//! - [`service`]: the request loop: decode, append to history, deliver, reply.
//! - [`history`]: the [`HistoryStore`](history::HistoryStore) trait, with a Redis
//!   implementation (one Lua script per operation) and an in-memory one for standalone mode.
//! - [`keys`]: every Redis key, built in one place.

pub mod history;
pub mod keys;
pub mod service;

pub use service::RouterService;
