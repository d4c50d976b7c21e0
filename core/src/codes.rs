//! Client-visible error and disconnect codes, in one place.
//!
//! `docs/protocol.md` documents each of them; keep the two in step. Error codes answer one
//! command and leave the connection open. Disconnect codes close the connection (they are the
//! WebSocket close code) and tell the client whether reconnecting makes sense.

use std::fmt;

/// Why one command was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Something failed inside Herald; retrying may help.
    Internal,
    /// The connection is not allowed (bad or missing credentials).
    Unauthorized,
    /// The channel name is not valid.
    BadChannel,
    /// The connection may not do this on that channel.
    PermissionDenied,
    /// The command name is unknown.
    UnknownCommand,
    /// The connection is already subscribed to the channel.
    AlreadySubscribed,
    /// A per-connection or per-node limit was reached.
    LimitExceeded,
    /// The command's fields are missing or malformed.
    BadRequest,
    /// The channel does not offer this (for example history on a channel without history).
    NotAvailable,
    /// The connection's token has expired.
    TokenExpired,
    /// The command needs `connect` first.
    NotConnected,
    /// A backend (NATS, Redis, the routers) is unreachable or did not answer in time.
    Unavailable,
    /// The publication's data is larger than the channel allows.
    MessageTooLarge,
    /// The connection is not subscribed to the channel.
    NotSubscribed,
    /// `connect` was already sent on this connection.
    AlreadyConnected,
    /// A sync patch was conditional on a revision that is no longer the document's.
    Conflict,
    /// The app's backend refused the request (a hook's answer), with a code of its own
    /// from [`Self::APP_CODES`].
    App(u32),
}

impl ErrorCode {
    /// Every code, in numeric order (for docs and tests).
    pub const ALL: [ErrorCode; 16] = [
        Self::Internal,
        Self::Unauthorized,
        Self::BadChannel,
        Self::PermissionDenied,
        Self::UnknownCommand,
        Self::AlreadySubscribed,
        Self::LimitExceeded,
        Self::BadRequest,
        Self::NotAvailable,
        Self::TokenExpired,
        Self::NotConnected,
        Self::Unavailable,
        Self::MessageTooLarge,
        Self::NotSubscribed,
        Self::AlreadyConnected,
        Self::Conflict,
    ];

    /// The codes an app's backend may give a refusal of its own.
    pub const APP_CODES: std::ops::RangeInclusive<u32> = 1000..=1999;

    pub const fn code(self) -> u32 {
        match self {
            Self::App(code) => code,
            Self::Internal => 100,
            Self::Unauthorized => 101,
            Self::BadChannel => 102,
            Self::PermissionDenied => 103,
            Self::UnknownCommand => 104,
            Self::AlreadySubscribed => 105,
            Self::LimitExceeded => 106,
            Self::BadRequest => 107,
            Self::NotAvailable => 108,
            Self::TokenExpired => 109,
            Self::NotConnected => 110,
            Self::Unavailable => 111,
            Self::MessageTooLarge => 112,
            Self::NotSubscribed => 113,
            Self::AlreadyConnected => 114,
            Self::Conflict => 115,
        }
    }

    /// The code numbered `code`: one of Herald's, or an app's.
    pub fn from_code(code: u32) -> Option<Self> {
        if Self::APP_CODES.contains(&code) {
            return Some(Self::App(code));
        }
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether the same command may succeed when retried later.
    pub const fn temporary(self) -> bool {
        matches!(self, Self::Internal | Self::Unavailable)
    }
}

/// An error code with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.code())
    }
}

impl std::error::Error for Refusal {}

/// A refusal as the bus carries it, in a router's reply.
impl From<Refusal> for herald_proto::bus::v1::Error {
    fn from(refusal: Refusal) -> Self {
        Self {
            code: refusal.code.code(),
            temporary: refusal.code.temporary(),
            message: refusal.message,
        }
    }
}

/// A router's error as a refusal; a code this node does not know is an internal error.
impl From<herald_proto::bus::v1::Error> for Refusal {
    fn from(error: herald_proto::bus::v1::Error) -> Self {
        let code = ErrorCode::from_code(error.code).unwrap_or(ErrorCode::Internal);
        Self::new(code, error.message)
    }
}

/// Why the server closed a connection; the number is the WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectCode {
    /// The node is shutting down or draining; reconnect (to another node).
    Shutdown,
    /// An internal failure; reconnect.
    ServerError,
    /// The client did not read fast enough and its outbound queue filled; reconnect and recover.
    SlowConsumer,
    /// The client broke the protocol (a frame that is not a JSON command, a binary frame, …);
    /// do not reconnect with the same code.
    BadRequest,
    /// A frame was larger than the node accepts; do not resend it.
    MessageTooLarge,
    /// The client did not send `connect` within the handshake deadline.
    ConnectTimeout,
    /// A Socket.IO client did not answer a heartbeat ping in time; it reconnects.
    PingTimeout,
    /// The connection's token expired and no fresh one came with `refresh`; reconnect with
    /// a fresh token.
    TokenExpired,
    /// A backend disconnected the client through the server API; do not reconnect on your
    /// own.
    Disconnected,
}

impl DisconnectCode {
    pub const ALL: [DisconnectCode; 9] = [
        Self::Shutdown,
        Self::ServerError,
        Self::SlowConsumer,
        Self::BadRequest,
        Self::MessageTooLarge,
        Self::ConnectTimeout,
        Self::PingTimeout,
        Self::TokenExpired,
        Self::Disconnected,
    ];

    pub const fn code(self) -> u16 {
        match self {
            Self::Shutdown => 3000,
            Self::ServerError => 3001,
            Self::SlowConsumer => 3004,
            Self::BadRequest => 3501,
            Self::MessageTooLarge => 3502,
            Self::ConnectTimeout => 3503,
            Self::PingTimeout => 3005,
            Self::TokenExpired => 3006,
            Self::Disconnected => 3504,
        }
    }

    /// Short reason sent in the close frame and the disconnect push.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::ServerError => "server error",
            Self::SlowConsumer => "slow consumer",
            Self::BadRequest => "bad request",
            Self::MessageTooLarge => "message too large",
            Self::ConnectTimeout => "connect timeout",
            Self::PingTimeout => "ping timeout",
            Self::TokenExpired => "token expired",
            Self::Disconnected => "disconnected by the server",
        }
    }

    /// Codes below 3500 invite the client to reconnect.
    pub const fn reconnect(self) -> bool {
        self.code() < 3500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.code()));
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        let closes: std::collections::HashSet<_> =
            DisconnectCode::ALL.iter().map(|d| d.code()).collect();
        assert_eq!(closes.len(), DisconnectCode::ALL.len());
    }

    #[test]
    fn only_backend_failures_are_temporary() {
        let temporary: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| c.temporary())
            .collect();
        assert_eq!(temporary, [ErrorCode::Internal, ErrorCode::Unavailable]);
    }
}
