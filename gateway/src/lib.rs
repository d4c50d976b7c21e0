//! The Herald gateway: terminates client connections and fans publications out to them.
//!
//! Gateways are stateless: they hold connections and in-memory subscription tables only.
//! Publications with history are sent to the routers; every publication reaches gateways
//! on its channel's delivery subject, which a gateway subscribes to (alone, or with the
//! rest of its bucket) while it has at least one local subscriber.
//!
//! # Layout
//!
//! The modules form a one-way hierarchy: a module uses modules of its own layer or of the
//! layers below it, never above (`tests/layering.rs` holds every module to this list).
//!
//! 1. Leaves. [`mailbox`]: a queue that holds memory only while it holds something.
//!    [`outbound`]: a connection's bounded queue, close signal and writer.
//!    [`sequencer`]: the ordering rule, pure logic. [`rate`]: token buckets. [`deadline`]:
//!    optional timers for `select!` loops. [`drain`]: spreading clients' departures over the
//!    drain period. [`inbound`]: a client that went away or broke the protocol.
//!    [`connections`]: the count against `max_connections`. [`small_map`]: a map by id that
//!    holds a lone entry without allocating.
//! 2. Wire formats, pure encoding and parsing: [`native::command`], [`native::push`],
//!    [`native::reply`]; [`socketio::engine`], [`socketio::packet`], [`socketio::binary`],
//!    [`socketio::channels`], [`socketio::reserved`], [`socketio::offsets`],
//!    [`socketio::event`]; [`sync::wire`].
//! 3. Rendering: [`render`], a publication in each format the hub serves; [`metrics`],
//!    what a gateway records.
//! 4. Fan-out: [`buckets`], the bus subscriptions that channels with shared delivery
//!    share; [`feed`], one task per channel bringing its publications in order; and
//!    [`hub`], who is subscribed to what, protocol-neutral.
//! 5. What sessions share: [`access`] (identity, permissions, publish budget),
//!    [`catch_up`] (a returning client gets what it missed), [`hooks`] (calls to the app's
//!    backend), [`clients`] (sessions by user
//!    and client id), [`presence`] (reports to the routers), [`batch`] (one publish batcher
//!    for both protocols), [`publisher`] (the gateway's publish requests, gathered under
//!    load), [`sync`] (a
//!    subscriber of a sync document, kept at the router's revision), and [`context`], the
//!    narrow context every session is given.
//! 6. The protocols: [`native`] (the session, reading ahead) and [`socketio`] (Engine.IO
//!    transports, links, sessions, sockets, recovery).
//! 7. HTTP wiring: [`gateway`] (the node's state), [`http`] (routes, probes, `/metrics`),
//!    [`control`] (the control service routers call: the server API's commands about
//!    clients, status, drain) and [`serve`] (listeners and the drain).

pub mod access;
pub mod batch;
pub mod buckets;
pub mod catch_up;
pub mod clients;
pub mod connections;
pub mod context;
pub mod control;
pub mod deadline;
pub mod drain;
pub mod feed;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod inbound;
pub mod mailbox;
pub mod metrics;
pub mod native;
pub mod outbound;
pub mod presence;
pub mod publisher;
pub mod rate;
pub mod render;
pub mod sequencer;
pub mod serve;
pub mod small_map;
pub mod socketio;
pub mod sync;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testing;

pub use gateway::Gateway;
pub use serve::{Listeners, serve};
