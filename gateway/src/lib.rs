//! The Herald gateway: terminates client connections and fans publications out to them.
//!
//! Gateways are stateless: they hold connections and in-memory subscription tables only.
//! Publications with history are sent to the routers; every publication reaches gateways
//! on its channel's delivery subject, which a gateway subscribes to while it has at least
//! one local subscriber.
//!
//! # Layout
//! - [`gateway`]: the node's shared state and [`serve`], which runs it on a listener.
//! - [`http`]: routes (WebSocket endpoints, `/healthz`, `/readyz`, `/metrics`).
//! - [`drain`]: moving clients off a stopping gateway, spread over the drain period.
//! - [`metrics`]: what a gateway records about its clients, and its gauges at scrape time.
//! - [`native`]: the native JSON protocol: command parsing, replies, pushes, the session.
//! - [`hub`]: local subscriptions and fan-out (encode once, queue to many), protocol-neutral.
//! - [`render`]: publications and join/leave events in each wire format the hub serves.
//! - [`feed`]: one task per subscribed channel, bringing its publications in order.
//! - [`catch_up`]: subscribing a returning client with exactly what it missed.
//! - [`sequencer`]: the ordering rule (no gaps, no duplicates), pure logic.
//! - [`socketio`]: the Socket.IO profile: Engine.IO v4 transports, Socket.IO v5 sockets.
//! - [`access`]: one client's identity, permissions, publish budget and token expiry.
//! - [`rate`]: publish rate limits (token buckets).
//! - [`clients`] and [`control`]: commands of the server API (disconnect, unsubscribe,
//!   channels) reaching the sessions they concern.
//! - [`presence`]: reporting this gateway's clients to the routers' presence.
//! - [`inbound`]: telling a client that went away from one that broke the protocol.
//! - [`outbound`]: a connection's bounded outbound queue, close signal and writer.
//! - [`deadline`]: optional timers for `select!` loops.

pub mod access;
pub mod batch;
pub mod catch_up;
pub mod clients;
pub mod connections;
pub mod context;
pub mod control;
pub mod deadline;
pub mod drain;
pub mod feed;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod inbound;
pub mod metrics;
pub mod native;
pub mod outbound;
pub mod presence;
pub mod rate;
pub mod render;
pub mod sequencer;
pub mod serve;
pub mod socketio;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testing;

pub use gateway::Gateway;
pub use serve::serve;
