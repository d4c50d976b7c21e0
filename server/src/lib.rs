//! A Herald node as a library: [`run`] a standalone broker, a gateway or a router on
//! [`Listeners`] bound beforehand, until a shutdown token is cancelled. The `herald` binary
//! is this plus a command line, logging, metrics and signals.

mod node;
mod router_http;

pub use node::{Listeners, Mode, announce, node_id, run};
