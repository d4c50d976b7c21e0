//! Test support for Herald: real servers and real clients, cleaned up on `Drop`.
//!
//! # Layout
//! - [`servers`]: `nats-server` and `redis-server` on free loopback ports, which a fault
//!   test can stop and start again on the same port.
//! - [`nats`]: a cluster of three NATS servers, any of which a test can kill.
//! - [`redis`]: Redis with TLS, a client certificate and an ACL user; with Sentinel; as a
//!   Cluster.
//! - [`tls`]: a CA made in the test, and certificates it signed, as PEM files.
//! - [`scratch`]: a directory of files a test writes, removed with it.
//! - [`cluster`]: NATS, Redis, gateways and routers together, ready to use.
//! - [`node`]: a Herald process of our own binary, whose listening address is read from
//!   its standard output.
//! - [`client`]: a native-protocol WebSocket client (commands with ids, pushes, closes).
//! - [`socketio`]: stock Socket.IO clients (npm `socket.io-client`) driven over stdin.
//! - [`backend`]: an app's backend for the hooks, over gRPC and HTTP, answering by what
//!   it is asked.
//! - [`balancer`]: a round-robin HTTP load balancer without sticky sessions, whose set
//!   of backends a test can change.
//! - [`slow_link`]: a TCP relay that delays what a server sends, to hold messages in
//!   flight.
//! - [`wait`]: bounded waiting on a condition, never a fixed sleep.
//! - [`fuzz`]: how many cases the property tests of every crate run.

pub mod backend;
pub mod balancer;
pub mod client;
pub mod cluster;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod nats;
pub mod node;
pub mod redis;
pub mod scratch;
pub mod servers;
pub mod slow_link;
pub mod socketio;
pub mod tls;
pub mod wait;

pub use backend::TestBackend;
pub use balancer::Balancer;
pub use client::NativeClient;
pub use cluster::Cluster;
pub use nats::NatsCluster;
pub use node::HeraldProcess;
pub use redis::{RedisCluster, RedisSentinel, RedisTls};
pub use servers::Server;
pub use slow_link::SlowLink;
pub use tls::TlsFiles;
pub use wait::{wait_for, wait_for_async};
