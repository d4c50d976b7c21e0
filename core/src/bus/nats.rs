//! [`Bus`] over a NATS server, with automatic reconnection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, connection::State};

use crate::config::{NatsConfig, redact_url};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Bus, BusError, BusMessage, Operation, Subscription, drain};
use crate::metrics::{NATS_CONNECTS, NATS_DISCONNECTS, NATS_ERRORS};

/// Reconnection backoff stays short: a gateway or router waiting on NATS is useless, and
/// tests restart NATS and expect service back within seconds.
const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(1000);

/// A subject nobody subscribes to, for round trips that prove the server has processed
/// what came before.
const ROUND_TRIP_SUBJECT: &str = "_HERALD.ROUNDTRIP";
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// The `max_payload` of a NATS server that has not said (its default).
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// The cluster bus on NATS.
#[derive(Clone)]
pub struct NatsBus {
    client: Client,
    connections: Arc<watch::Sender<u64>>,
    /// The connected server's `max_payload`, read from its INFO on first need after each
    /// connection; 0 until then.
    max_payload: Arc<AtomicUsize>,
}

impl NatsBus {
    /// Connects to the servers of `config.url` (comma-separated), authenticated and over
    /// TLS as `config` says. Returns at once: the first connection, and every reconnection
    /// after an outage, is made in the background, so a node can start (not ready) before
    /// NATS is up. Fails on an invalid URL, or a credentials file or seed that cannot be
    /// read.
    pub async fn connect(config: &NatsConfig, name: &str) -> Result<Self, BusError> {
        let url = &config.url;
        let connections = Arc::new(watch::Sender::new(0u64));
        let events = connections.clone();
        let max_payload = Arc::new(AtomicUsize::new(0));
        let server_changed = max_payload.clone();
        let refused =
            |e: &dyn std::fmt::Display| BusError::failed(Operation::Connect, e.to_string());
        let client = secured(ConnectOptions::new(), config)
            .await
            .map_err(|e| refused(&e))?
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(3))
            .reconnect_delay_callback(|attempts| {
                MAX_RECONNECT_DELAY.min(Duration::from_millis(50 * attempts as u64))
            })
            .event_callback(move |event| {
                let events = events.clone();
                let server_changed = server_changed.clone();
                async move {
                    match &event {
                        Event::Connected => {
                            // Perhaps another server of the cluster, with other limits.
                            server_changed.store(0, Ordering::Relaxed);
                            events.send_modify(|n| *n += 1);
                            metrics::counter!(NATS_CONNECTS).increment(1);
                        }
                        Event::Disconnected => metrics::counter!(NATS_DISCONNECTS).increment(1),
                        Event::SlowConsumer(_) => count_error("slow_consumer"),
                        Event::ServerError(_) => count_error("server"),
                        Event::ClientError(_) => count_error("client"),
                        _ => {}
                    }
                    tracing::info!(%event, "nats connection event");
                }
            })
            // A list: a single string would be read as one URL.
            .connect(servers(url))
            .await
            .map_err(|e| refused(&format!("NATS at {}: {e}", redact_url(url))))?;
        Ok(Self {
            client,
            connections,
            max_payload,
        })
    }

    /// Connects to `url` with no authentication and no TLS settings (tests, tools).
    pub async fn connect_url(url: &str, name: &str) -> Result<Self, BusError> {
        let config = NatsConfig {
            url: url.into(),
            ..NatsConfig::default()
        };
        Self::connect(&config, name).await
    }

    /// Waits until the first connection is established, or `timeout` passes.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_connected()
    }
}

impl NatsBus {
    /// Refuses a payload the server would refuse, with a clear error.
    fn fits(&self, payload: &Bytes) -> Result<(), BusError> {
        let limit = self.max_payload();
        match payload.len() {
            size if size > limit => Err(BusError::TooLarge { size, limit }),
            _ => Ok(()),
        }
    }
}

/// The servers of a comma-separated list of URLs.
fn servers(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// `options` with the authentication and TLS of `config`.
async fn secured(options: ConnectOptions, config: &NatsConfig) -> Result<ConnectOptions, String> {
    let mut options = match () {
        _ if !config.user.is_empty() => {
            options.user_and_password(config.user.clone(), config.password.clone())
        }
        _ if !config.token.is_empty() => options.token(config.token.clone()),
        _ if !config.nkey_seed.is_empty() => {
            // Checked here: the client would only find out when the server asks.
            nkeys::KeyPair::from_seed(config.nkey_seed.trim())
                .map_err(|e| format!("nats.nkey_seed: {e}"))?;
            options.nkey(config.nkey_seed.trim().to_string())
        }
        _ if !config.credentials_file.is_empty() => options
            .credentials_file(&config.credentials_file)
            .await
            .map_err(|e| format!("nats.credentials_file {}: {e}", config.credentials_file))?,
        _ => options,
    };
    if !config.tls_ca_file.is_empty() {
        options = options.add_root_certificates(config.tls_ca_file.clone().into());
    }
    if !config.tls_cert_file.is_empty() {
        options = options.add_client_certificate(
            config.tls_cert_file.clone().into(),
            config.tls_key_file.clone().into(),
        );
    }
    let tls =
        config.tls_required || !config.tls_ca_file.is_empty() || !config.tls_cert_file.is_empty();
    Ok(options.require_tls(tls))
}

fn count_error(kind: &'static str) {
    metrics::counter!(NATS_ERRORS, "kind" => kind).increment(1);
}

fn into_subscription(subscriber: async_nats::Subscriber) -> Subscription {
    Subscription::new(NatsSource {
        subscriber,
        ended: false,
    })
}

/// A NATS subscription as a drainable source.
struct NatsSource {
    subscriber: async_nats::Subscriber,
    /// Set when the drain could not be sent: nothing more is read.
    ended: bool,
}

impl drain::Source for NatsSource {
    async fn next(&mut self) -> Option<BusMessage> {
        if self.ended {
            return None;
        }
        let message = self.subscriber.next().await?;
        Some(BusMessage {
            payload: message.payload,
            reply: message.reply.map(|r| r.to_string()),
        })
    }

    async fn stop(&mut self) {
        // The server stops sending; what it sent before still comes, then the end.
        if let Err(e) = self.subscriber.drain().await {
            tracing::warn!(error = %e, "cannot drain a NATS subscription");
            self.ended = true;
        }
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), BusError> {
        if !self.is_connected() {
            return Err(BusError::NotConnected);
        }
        self.fits(&payload)?;
        self.client
            .publish(subject, payload)
            .await
            .map_err(|e| BusError::failed(Operation::Publish, e))
    }

    async fn request(
        &self,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        use async_nats::RequestErrorKind;
        if !self.is_connected() {
            return Err(BusError::NotConnected);
        }
        self.fits(&payload)?;
        let request = async_nats::Request::new()
            .payload(payload)
            .timeout(Some(timeout));
        match self.client.send_request(subject, request).await {
            Ok(message) => Ok(message.payload),
            Err(e) => Err(match e.kind() {
                RequestErrorKind::TimedOut => BusError::Timeout,
                RequestErrorKind::NoResponders => BusError::NoResponders,
                RequestErrorKind::Other => BusError::failed(Operation::Request, e),
            }),
        }
    }

    async fn subscribe(&self, subject: String) -> Result<Subscription, BusError> {
        self.client
            .subscribe(subject)
            .await
            .map(into_subscription)
            .map_err(|e| BusError::failed(Operation::Subscribe, e))
    }

    async fn queue_subscribe(
        &self,
        subject: String,
        queue: String,
    ) -> Result<Subscription, BusError> {
        self.client
            .queue_subscribe(subject, queue)
            .await
            .map(into_subscription)
            .map_err(|e| BusError::failed(Operation::Subscribe, e))
    }

    async fn flush(&self) -> Result<(), BusError> {
        use async_nats::RequestErrorKind;
        // `Client::flush` only empties our socket buffer; it does not wait for the server. A
        // request that nobody answers does: the server replies "no responders" once it has
        // processed everything this connection sent before it, subscriptions included.
        let request = async_nats::Request::new()
            .payload(Bytes::new())
            .timeout(Some(ROUND_TRIP_TIMEOUT));
        match self.client.send_request(ROUND_TRIP_SUBJECT, request).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Err(e) => Err(BusError::failed(Operation::RoundTrip, e)),
        }
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn max_payload(&self) -> usize {
        match self.max_payload.load(Ordering::Relaxed) {
            0 => {
                let announced = self.client.server_info().max_payload;
                self.max_payload.store(announced, Ordering::Relaxed);
                if announced == 0 {
                    DEFAULT_MAX_PAYLOAD
                } else {
                    announced
                }
            }
            known => known,
        }
    }

    fn connections(&self) -> watch::Receiver<u64> {
        self.connections.subscribe()
    }
}
