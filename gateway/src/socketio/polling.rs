//! The HTTP long-polling transport: the handshake GET, then GETs that take what the
//! session queued and POSTs that hand packets in, each body a payload of packets separated
//! by `\x1e`.
//!
//! Requests are plain values ([`Request`] in, [`Reply`] out) so that a gateway can serve a
//! request for one of its sessions that reached another gateway and was forwarded to it.

use std::sync::Arc;

use bytes::Bytes;
use herald_core::codes::DisconnectCode;

use super::endpoint::Endpoint;
use super::engine::{self, Encoded, RequestError};
use super::link::{Link, Poll, PollError, Transport};
use super::session;
use crate::connections::ConnectionPermit;
use crate::hooks::Handshake;
use crate::outbound::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// A polling request for an existing session.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub sid: String,
    pub body: Bytes,
}

/// What a polling request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

const PAYLOAD_TYPE: &str = "text/plain; charset=UTF-8";

impl Reply {
    fn payload(body: String) -> Self {
        Self {
            status: 200,
            content_type: PAYLOAD_TYPE.into(),
            body: body.into(),
        }
    }

    /// The reference server's answer to a POST it took.
    fn ok() -> Self {
        Self {
            status: 200,
            content_type: "text/html".into(),
            body: Bytes::from_static(b"ok"),
        }
    }

    pub fn error(error: RequestError) -> Self {
        Self {
            status: error.status(),
            content_type: "application/json".into(),
            body: error.body().into(),
        }
    }
}

/// Opens a session on polling: the reply carries the open packet.
pub async fn handshake(
    endpoint: &Arc<Endpoint>,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> Reply {
    let link = session::start(endpoint, Transport::Polling, permit, handshake);
    get(&link, usize::MAX).await.0
}

/// Serves a request for a session held by this gateway; a GET's body holds at most
/// `max_bytes` of packets, unless the first alone is larger (a request forwarded from
/// another gateway is answered in one bus message).
pub async fn serve(endpoint: &Endpoint, request: Request, max_bytes: usize) -> Reply {
    let Some(link) = endpoint.links.get(&request.sid) else {
        return Reply::error(RequestError::UnknownSid);
    };
    match request.method {
        Method::Get => {
            let (reply, last) = get(&link, max_bytes).await;
            if last {
                // Its last answer: the session is over.
                endpoint.links.remove(&link.sid);
            }
            reply
        }
        Method::Post => post(endpoint.ctx.socketio.max_payload, &link, &request.body).await,
    }
}

/// Answers a GET; `true` with the session's last answer (nothing is left to take).
async fn get(link: &Link, max_bytes: usize) -> (Reply, bool) {
    let reply = match link.poll(max_bytes).await {
        Ok(Poll::Frames(frames)) => Reply::payload(encode(&frames)),
        Ok(Poll::Noop) => Reply::payload("6".into()),
        Ok(Poll::Closed) => return (Reply::payload("1".into()), true),
        Err(PollError::NotPolling) => Reply::error(RequestError::BadRequest),
        Err(PollError::Overlap) => {
            // The reference server ends a session whose client broke the one-GET rule.
            link.closer().close(DisconnectCode::BadRequest);
            Reply::error(RequestError::BadRequest)
        }
    };
    // A session closed at once has nothing more to send either.
    let last = link.closer().is_closed() && !link.closer().queued_first();
    (reply, last)
}

async fn post(max_payload: usize, link: &Link, body: &[u8]) -> Reply {
    if body.len() > max_payload {
        link.closer().close(DisconnectCode::MessageTooLarge);
        return Reply::error(RequestError::PayloadTooLarge);
    }
    let packets = std::str::from_utf8(body)
        .ok()
        .and_then(|text| engine::decode_payload(text).ok());
    let Some(packets) = packets else {
        tracing::debug!("malformed polling payload");
        link.closer().close(DisconnectCode::BadRequest);
        return Reply::error(RequestError::BadRequest);
    };
    match link.post(packets).await {
        Some(true) => Reply::ok(),
        Some(false) => Reply::error(RequestError::UnknownSid),
        None => {
            link.closer().close(DisconnectCode::BadRequest);
            Reply::error(RequestError::BadRequest)
        }
    }
}

/// One response body: text packets as they are, binary ones as `b` and base64.
fn encode(frames: &[Frame]) -> String {
    engine::encode_payload(frames.iter().map(|frame| match frame {
        Frame::Text(text) => Encoded::Text(text.as_str()),
        Frame::Binary(bytes) => Encoded::Binary(bytes),
    }))
}
