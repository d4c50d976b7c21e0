//! A `fred` client as `redis.*` configures it: the URL chooses the topology (and TLS with
//! a `rediss` scheme), the separate settings override its credentials and bring TLS
//! material from files (mounted Secrets), and the timeouts are Herald's.

use std::time::Duration;

use fred::clients::Client;
use fred::rustls::pki_types::pem::PemObject;
use fred::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use fred::rustls::{ClientConfig, RootCertStore};
use fred::types::Builder;
use fred::types::config::{
    Config, ReconnectError, ReconnectPolicy, ServerConfig, TlsConnector, TlsHostMapping,
    UnresponsiveConfig,
};
use herald_core::config::{RedisConfig, redact_url};

/// Longest pause between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A client for `config`, not yet connected; what in the configuration cannot work.
pub(super) fn client(config: &RedisConfig) -> Result<Client, String> {
    let mut fred = Config::from_url(&config.url)
        .map_err(|e| format!("url {}: {}", redact_url(&config.url), e.details()))?;
    if !config.username.is_empty() {
        fred.username = Some(config.username.clone());
    }
    if !config.password.is_empty() {
        fred.password = Some(config.password.clone());
    }
    if let ServerConfig::Sentinel {
        username, password, ..
    } = &mut fred.server
    {
        if !config.sentinel_username.is_empty() {
            *username = Some(config.sentinel_username.clone());
        }
        if !config.sentinel_password.is_empty() {
            *password = Some(config.sentinel_password.clone());
        }
    }
    if !config.tls_ca_file.is_empty() || !config.tls_cert_file.is_empty() {
        fred.tls = Some(TlsConnector::from(tls(config)?).into());
    }
    // Cluster nodes announce themselves by address: the handshake checks each against the
    // name of the node that was asked first (a managed service's wildcard certificate).
    if let (Some(tls), ServerConfig::Clustered { .. }) = (&mut fred.tls, &fred.server) {
        tls.hostnames = TlsHostMapping::DefaultHost;
    }
    Builder::from_config(fred)
        .with_connection_config(|connection| {
            connection.connection_timeout = config.timeout;
            connection.internal_command_timeout = config.timeout;
            // A command whose connection broke after it was written may have run: sending
            // it again could append a publication twice. It fails as unavailable instead,
            // and its publisher retries with its idempotency key.
            connection.max_command_attempts = 1;
            // A silent network (no reset, no reply) counts as a broken connection.
            connection.unresponsive = UnresponsiveConfig {
                max_timeout: Some(config.timeout + config.wait_timeout),
                interval: Duration::from_millis(250),
            };
            // Replies that mean the node is no longer (or not yet) the one to ask: find
            // the primary again.
            connection.reconnect_errors = vec![
                ReconnectError::ClusterDown,
                ReconnectError::Loading,
                ReconnectError::ReadOnly,
                ReconnectError::MasterDown,
            ];
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = config.timeout;
        })
        .set_policy(ReconnectPolicy::new_exponential(
            0,
            50,
            MAX_RECONNECT_DELAY.as_millis() as u32,
            2,
        ))
        .build()
        .map_err(|e| e.details().to_string())
}

/// TLS with the configured CAs (the system's without `tls_ca_file`) and client
/// certificate.
fn tls(config: &RedisConfig) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    if config.tls_ca_file.is_empty() {
        let native = fred::rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    } else {
        let unusable =
            |e: &dyn std::fmt::Display| format!("tls_ca_file {}: {e}", config.tls_ca_file);
        for cert in CertificateDer::pem_file_iter(&config.tls_ca_file).map_err(|e| unusable(&e))? {
            let cert = cert.map_err(|e| unusable(&e))?;
            roots.add(cert).map_err(|e| unusable(&e))?;
        }
        if roots.is_empty() {
            return Err(unusable(&"no PEM certificate in it"));
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    if config.tls_cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let chain = CertificateDer::pem_file_iter(&config.tls_cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert_file {}: {e}", config.tls_cert_file))?;
    let key = PrivateKeyDer::from_pem_file(&config.tls_key_file)
        .map_err(|e| format!("tls_key_file {}: {e}", config.tls_key_file))?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("tls_cert_file/tls_key_file: {e}"))
}
