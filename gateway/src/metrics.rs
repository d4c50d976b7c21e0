//! What a gateway records about its clients, in the families named in
//! [`herald_core::metrics`]: the label values, one function per event, and the gauges read
//! from the gateway's state when `/metrics` is scraped (so that no hot path keeps them).
//! Every family starts at zero ([`initialize`]).

use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_core::metrics::{
    CHANNELS, CONNECTIONS, CONNECTIONS_OPENED, CONNECTIONS_REFUSED, DELIVERY_LATENCY, DISCONNECTS,
    DRAINING, MESSAGES_RECEIVED, MESSAGES_SENT, NATS_CONNECTED, PUBLISH_DURATION, RECOVERIES,
    REPLIES, SUBSCRIPTIONS,
};
use std::time::Instant;

use herald_core::time::unix_micros;
use metrics::{Counter, Histogram, counter, gauge, histogram};

use crate::render::Format;

/// `protocol` label of the native JSON protocol.
pub const NATIVE: &str = "native";
/// `protocol` label of the Socket.IO profile.
pub const SOCKETIO: &str = "socketio";

/// The `protocol` label of subscribers that take `format`.
pub fn protocol(format: &Format) -> &'static str {
    match format {
        Format::Native | Format::NativeSync => NATIVE,
        Format::SocketIo { .. } | Format::SocketIoSync { .. } => SOCKETIO,
    }
}

/// Makes every family of a gateway visible from the start, at zero, so that dashboards
/// and alerts see a series before the first event.
pub fn initialize() {
    for reason in [Refused::Full, Refused::Draining, Refused::Origin] {
        counter!(CONNECTIONS_REFUSED, "reason" => reason.label()).absolute(0);
    }
    for protocol in [NATIVE, SOCKETIO] {
        counter!(CONNECTIONS_OPENED, "protocol" => protocol).absolute(0);
        counter!(MESSAGES_RECEIVED, "protocol" => protocol).absolute(0);
        let _ = histogram!(PUBLISH_DURATION, "protocol" => protocol);
        for result in ["recovered", "lost"] {
            counter!(RECOVERIES, "protocol" => protocol, "result" => result).absolute(0);
        }
        let codes = ErrorCode::ALL.iter().map(|c| c.code().to_string());
        for code in std::iter::once("0".to_string()).chain(codes) {
            counter!(REPLIES, "protocol" => protocol, "code" => code).absolute(0);
        }
        let codes = DisconnectCode::ALL.iter().map(|c| c.code().to_string());
        for code in std::iter::once("client".to_string()).chain(codes) {
            counter!(DISCONNECTS, "protocol" => protocol, "code" => code).absolute(0);
        }
    }
}

/// Why a connection attempt was turned away, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// At `gateway.max_connections`.
    Full,
    /// The gateway is draining.
    Draining,
    /// A page of an origin not allowed.
    Origin,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Draining => "draining",
            Self::Origin => "origin",
        }
    }
}

pub fn refused(why: Refused) {
    counter!(CONNECTIONS_REFUSED, "reason" => why.label()).increment(1);
}

pub fn opened(protocol: &'static str) {
    counter!(CONNECTIONS_OPENED, "protocol" => protocol).increment(1);
}

/// A connection ended: closed by the server with `reason`, or by the client (`None`).
pub fn ended(protocol: &'static str, reason: Option<DisconnectCode>) {
    let code = reason.map_or_else(|| "client".to_string(), |code| code.code().to_string());
    counter!(DISCONNECTS, "protocol" => protocol, "code" => code).increment(1);
}

/// A command or acknowledged event was answered: with success, or refused.
pub fn replied<T>(protocol: &'static str, outcome: &Result<T, Refusal>) {
    match outcome {
        Ok(_) => counter!(REPLIES, "protocol" => protocol, "code" => "0").increment(1),
        Err(refusal) => {
            // An app's own codes (a thousand of them) count as one series.
            let code = match refusal.code {
                ErrorCode::App(_) => "app".to_string(),
                code => code.code().to_string(),
            };
            counter!(REPLIES, "protocol" => protocol, "code" => code).increment(1);
        }
    }
}

/// `count` publications of clients, sent on together at `started`, have their answer.
pub fn published(protocol: &'static str, started: Instant, count: usize) {
    counter!(MESSAGES_RECEIVED, "protocol" => protocol).increment(count as u64);
    let duration = histogram!(PUBLISH_DURATION, "protocol" => protocol);
    let elapsed = started.elapsed().as_secs_f64();
    for _ in 0..count {
        duration.record(elapsed);
    }
}

/// A returning subscription got everything it missed (`true`) or could not (`false`).
pub fn recovered(protocol: &'static str, recovered: bool) {
    let result = if recovered { "recovered" } else { "lost" };
    counter!(RECOVERIES, "protocol" => protocol, "result" => result).increment(1);
}

/// The families of the fan-out, registered once: it records for every publication.
pub struct Deliveries {
    native: Counter,
    socketio: Counter,
    latency: Histogram,
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            native: counter!(MESSAGES_SENT, "protocol" => NATIVE),
            socketio: counter!(MESSAGES_SENT, "protocol" => SOCKETIO),
            latency: histogram!(DELIVERY_LATENCY),
        }
    }
}

impl Deliveries {
    /// A publication accepted by a router at `accepted_at_us` (Unix microseconds) arrived.
    /// Clocks of different hosts make this as exact as their synchronisation.
    pub fn arrived(&self, accepted_at_us: u64) {
        if accepted_at_us > 0 {
            let micros = unix_micros().saturating_sub(accepted_at_us);
            self.latency.record(micros as f64 / 1e6);
        }
    }

    /// A publication was queued to `count` subscribers that take `format`.
    pub fn sent(&self, format: &Format, count: u64) {
        match format {
            Format::Native | Format::NativeSync => self.native.increment(count),
            Format::SocketIo { .. } | Format::SocketIoSync { .. } => self.socketio.increment(count),
        }
    }
}

/// What describes a gateway now, for the gauges.
pub struct Gauges {
    /// Connections of the native protocol.
    pub native: u64,
    /// Socket.IO sessions on WebSocket, and on long-polling.
    pub socketio_websocket: u64,
    pub socketio_polling: u64,
    pub subscriptions: u64,
    pub channels: u64,
    pub draining: bool,
    pub bus_connected: bool,
}

/// Sets the gauges; called before each scrape.
pub fn observe(now: &Gauges) {
    let held = [
        (NATIVE, "websocket", now.native),
        (SOCKETIO, "websocket", now.socketio_websocket),
        (SOCKETIO, "polling", now.socketio_polling),
    ];
    for (protocol, transport, count) in held {
        gauge!(CONNECTIONS, "protocol" => protocol, "transport" => transport).set(count as f64);
    }
    gauge!(SUBSCRIPTIONS).set(now.subscriptions as f64);
    gauge!(CHANNELS).set(now.channels as f64);
    gauge!(DRAINING).set(f64::from(u8::from(now.draining)));
    gauge!(NATS_CONNECTED).set(f64::from(u8::from(now.bus_connected)));
}
