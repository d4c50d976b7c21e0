//! What Herald's gateway and router share, so that neither depends on the other's internals.
//!
//! # Layout
//! - [`config`]: the typed configuration (TOML file, `HERALD_*` environment, flags).
//! - [`rules`]: channel rules by namespace, user-limited channels, and who may do what.
//! - [`auth`]: connection tokens (JWT) and who they say a client is.
//! - [`hooks`]: which calls gateways make to the app's backend, and how.
//! - [`channel`]: valid channel names and their namespaces.
//! - [`subjects`]: every NATS subject, and the reversible channel-name encoding.
//! - [`codes`]: client-visible error and disconnect codes.
//! - [`bus`]: the cluster bus trait, on NATS and in memory.
//! - [`publish`]: turning a permitted publish into what goes on the bus, for every protocol
//!   and the server API, within the limits that apply to it.
//! - [`envelope`]: Socket.IO events as publication data, and the checks of attachments.
//! - [`upstream`]: requests to the routers over the bus, for gateways and the server API.
//! - [`metrics`]: the Prometheus families every node exports, and their exporter.
//! - [`heartbeat`]: the heartbeats by which nodes say they are alive.
//! - [`control`]: what the gateways' control service and its callers agree on (key, TLS);
//!   [`call_key`]: keys that gRPC calls carry.
//! - [`time`]: wall-clock helpers for latency measurements.
//! - [`redact`]: secrets as logs and `Debug` output show them.

pub mod auth;
pub mod bus;
pub mod call_key;
pub mod channel;
pub mod codes;
pub mod config;
pub mod control;
pub mod envelope;
pub mod heartbeat;
pub mod hooks;
pub mod metrics;
pub mod publish;
pub mod redact;
pub mod rules;
pub mod subjects;
pub mod time;
pub mod upstream;

#[cfg(test)]
mod fuzz;
