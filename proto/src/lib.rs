//! Protobuf messages of Herald, generated at build time from `herald/**.proto`.
//!
//! # Layout
//! - [`bus::v1`]: envelopes on NATS between gateways and routers (publications, publish and
//!   history requests and their replies).
//! - [`api::v1`]: the gRPC server API for backends and operators (messages, the
//!   `HeraldApi` client and server, and the descriptors for server reflection).
//! - [`control::v1`]: the control service each gateway serves to routers
//!   (`GatewayControl`).
//! - [`backend::v1`]: the hooks an app's backend implements and gateways call
//!   (`HeraldBackend`); their messages are also the JSON of HTTP hooks ([`json`]).

pub mod json;

/// Messages carried on the cluster bus.
pub mod bus {
    /// Version 1 of the bus envelopes.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.bus.v1.rs"));
    }
}

/// The gRPC server API.
pub mod api {
    /// Version 1 of the server API.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.api.v1.rs"));

        /// The encoded descriptors of the API, for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/herald_api_v1.bin"));
    }
}

/// The control plane between services.
pub mod control {
    /// Version 1 of the gateways' control service.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.control.v1.rs"));
    }
}

/// The hooks of an app's backend.
pub mod backend {
    /// Version 1 of the hooks.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/herald.backend.v1.rs"));
    }
}
