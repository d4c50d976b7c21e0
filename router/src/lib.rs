//! The Herald router: the one place where publications get their offsets.
//!
//! Routers are stateless workers over a history store. They receive publish and history
//! requests from gateways through a NATS queue group, so any number can run side by side.
//!
//! # Layout
//! - [`api`]: the gRPC server API for backends and operators, with health and reflection.
//! - [`service`]: the request loop: decode, append to history, deliver, reply.
//! - [`history`]: the [`HistoryStore`](history::HistoryStore) trait, with a Redis
//!   implementation (one Lua script per operation) and an in-memory one for standalone mode.
//! - [`sessions`]: Socket.IO sockets kept for connection state recovery, in Redis or in
//!   memory, and the service that answers gateways about them.
//! - [`presence`]: who is subscribed where, kept from gateways' reports with expiry, in
//!   Redis or in memory, and the service that answers gateways about it.
//! - [`sync`]: sync documents beside their channels' history, patched by compare-and-set,
//!   and the service that reads, patches and deletes them.
//! - [`queue`]: serving one kind of request from the router queue group.
//! - [`redis`]: the one Redis client the stores share (one server, Sentinel or Cluster,
//!   with credentials and TLS), their Lua scripts, and what Redis errors mean.
//! - [`keys`]: every Redis key, built in one place.
//! - [`metrics`]: the time and failures of Redis operations.

pub mod api;
pub mod history;
pub mod keys;
pub mod metrics;
pub mod presence;
mod queue;
pub mod redis;
pub mod service;
pub mod sessions;
pub mod sync;

pub use service::RouterService;
