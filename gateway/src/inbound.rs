//! Reading a client's WebSocket: which read errors mean that the client went away (a
//! dropped connection, a socket closed without the closing handshake) and which that it
//! broke the protocol (a frame far over the size limit, a malformed frame).
//!
//! The difference decides the close code and the disconnect metrics: a phone losing its
//! network is not a misbehaving client.

use tungstenite::error::{Error, ProtocolError};

/// Whether a read error of the WebSocket layer means only that the client is gone.
pub fn client_gone(error: axum::Error) -> bool {
    let error = error.into_inner();
    match error.downcast_ref::<Error>() {
        Some(Error::ConnectionClosed | Error::AlreadyClosed | Error::Io(_)) => true,
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => true,
        Some(_) => false,
        // Anything the layer did not classify: treat as a lost connection, not blame.
        None => error.downcast_ref::<std::io::Error>().is_some(),
    }
}
