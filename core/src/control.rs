//! What both ends of the control plane agree on (docs/architecture.md, "Control plane"):
//! the metadata of its key, and its mutual TLS, read from `control.*` for the gateway that
//! serves and the router that calls.

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::call_key::KeyName;
use crate::config::ControlConfig;

/// The control plane's key (`control.key`).
pub const CONTROL_KEY: KeyName = KeyName {
    metadata: "x-control-key",
    what: "control key",
};

/// The metadata naming the gateway a control call is for.
pub const NODE_METADATA: &str = "x-herald-node";

/// A TLS file of `control.*` that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("control.{setting}: cannot read {path}: {error}")]
pub struct TlsFileError {
    setting: &'static str,
    path: String,
    error: std::io::Error,
}

struct TlsFiles {
    ca: Certificate,
    identity: Identity,
}

fn files(config: &ControlConfig) -> Result<Option<TlsFiles>, TlsFileError> {
    if !config.tls() {
        return Ok(None);
    }
    let read = |setting, path: &String| {
        std::fs::read(path).map_err(|error| TlsFileError {
            setting,
            path: path.clone(),
            error,
        })
    };
    let ca = read("tls_ca_file", &config.tls_ca_file)?;
    let cert = read("tls_cert_file", &config.tls_cert_file)?;
    let key = read("tls_key_file", &config.tls_key_file)?;
    Ok(Some(TlsFiles {
        ca: Certificate::from_pem(ca),
        identity: Identity::from_pem(cert, key),
    }))
}

/// A gateway's side: its certificate, and only callers whose certificate the CA signed.
pub fn server_tls(config: &ControlConfig) -> Result<Option<ServerTlsConfig>, TlsFileError> {
    Ok(files(config)?.map(|files| {
        ServerTlsConfig::new()
            .identity(files.identity)
            .client_ca_root(files.ca)
    }))
}

/// A router's side: its certificate, and gateways whose certificate the CA signed for
/// `control.tls_server_name`.
pub fn client_tls(config: &ControlConfig) -> Result<Option<ClientTlsConfig>, TlsFileError> {
    Ok(files(config)?.map(|files| {
        ClientTlsConfig::new()
            .ca_certificate(files.ca)
            .identity(files.identity)
            .domain_name(config.tls_server_name.clone())
    }))
}

/// The connections of a gRPC listener (the control service, the server API), with
/// Nagle's algorithm off: a small answer must leave at once, not wait for the caller's
/// delayed acknowledgement (tens of milliseconds).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
