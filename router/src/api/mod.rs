//! The gRPC server API for backends and operators (`proto/herald/api/v1/api.proto`,
//! `docs/server-api.md`), served by routers and standalone nodes.
//!
//! The API asks the cluster what a gateway would, over the bus (so any router may answer),
//! and asks the gateways themselves about their clients over the control plane
//! ([`gateways`]), with no permission checks: callers are trusted, and proven by the API key when one is
//! configured. Beside it on the same port: the standard gRPC health service (for probes)
//! and server reflection (for `grpcurl`), both without the key.

mod cluster;
mod consume;
mod convert;
mod gateways;
pub mod nodes;
mod service;
mod status;

use std::future::Future;
use std::sync::Arc;

use herald_core::bus::Bus;
use herald_core::call_key;
use herald_core::control::incoming;

use crate::history::HistoryStore;
use herald_core::config::Config;
use herald_core::subjects::Subjects;
use herald_core::upstream::Upstream;
use herald_proto::api::v1::FILE_DESCRIPTOR_SET;
use herald_proto::api::v1::herald_api_server::HeraldApiServer;
use tokio::net::TcpListener;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

pub use service::Api;

use gateways::Gateways;
use nodes::Nodes;

/// Name of the API service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "herald.api.v1.HeraldApi";

/// Why the API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("api.{0}: {1}")]
    TlsFile(&'static str, std::io::Error),
    #[error("server API: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Control(#[from] gateways::ControlSetupError),
}

/// The TLS settings of the API, when `api.tls_cert_file` and `api.tls_key_file` are set;
/// an error when the files cannot be read.
pub fn tls(config: &Config) -> Result<Option<ServerTlsConfig>, ApiError> {
    let api = &config.api;
    if api.tls_cert_file.is_empty() {
        return Ok(None);
    }
    let cert =
        std::fs::read(&api.tls_cert_file).map_err(|e| ApiError::TlsFile("tls_cert_file", e))?;
    let key = std::fs::read(&api.tls_key_file).map_err(|e| ApiError::TlsFile("tls_key_file", e))?;
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert, key)),
    ))
}

/// Serves the API on `listener` until `shutdown` completes. `nodes` is what this node
/// hears of the cluster's heartbeats; `activity` the history store, which knows which
/// channels got publications when (for the consume stream).
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    bus: Arc<dyn Bus>,
    nodes: Arc<Nodes>,
    activity: Arc<dyn HistoryStore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ApiError> {
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let timeout = config.gateway.request_timeout;
    let upstream = Upstream::new(bus, subjects, timeout);
    let gateways = Gateways::new(&config.control, nodes)?;
    // Streams (Consume) would hold the server open past the shutdown: they end first.
    let (closing, closed) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = closing.send(true);
    };
    let api = Api::new(
        upstream,
        config.channels.clone(),
        gateways,
        activity,
        closed,
    );
    let api =
        HeraldApiServer::with_interceptor(api, call_key::check(call_key::API_KEY, &config.api.key));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    health.set_service_status("", ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let mut server = Server::builder();
    if let Some(tls) = tls(config)? {
        server = server.tls_config(tls)?;
    }
    let mut routes = server.add_service(health_service).add_service(api);
    match reflection {
        Ok(reflection) => routes = routes.add_service(reflection),
        Err(e) => tracing::warn!(error = %e, "gRPC reflection is off"),
    }
    routes
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}
