//! Protobuf messages of Herald, generated at build time from `herald/**.proto`.
//!
//! # Layout
//! - [`bus::v1`]: envelopes on NATS between gateways and routers (publications, publish and
//!   history requests and their replies).

/// Messages carried on the cluster bus.
pub mod bus {
    /// Version 1 of the bus envelopes.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.bus.v1.rs"));
    }
}
