//! Long-polling without sticky sessions.
//!
//! Every Engine.IO sid starts with the token of the gateway that holds the session. A
//! polling request that reaches another gateway (a round-robin load balancer sends each
//! request anywhere) is forwarded over the bus to the holder's subject, served there, and
//! its HTTP answer relayed back as it is. WebSocket upgrades cannot travel that way: an
//! upgrade that lands elsewhere is refused and the client simply stays on polling.

use std::sync::Arc;

use futures_util::StreamExt;
use herald_core::bus::{BusError, BusMessage};
use herald_core::publish::ENVELOPE_SLACK;
use herald_proto::bus::v1::{PollingReply, PollingRequest};
use prost::Message;
use tokio::task::JoinHandle;

use super::endpoint::Endpoint;
use super::engine::RequestError;
use super::polling::{self, Method, Reply, Request};
use super::sid_token;

/// Serves a polling request here when this gateway holds its session, or forwards it to the
/// gateway that does.
pub async fn serve_polling(endpoint: &Endpoint, request: Request) -> Reply {
    let token = sid_token(&request.sid).filter(|t| subject_safe(t));
    let Some(token) = token.filter(|t| *t != endpoint.token) else {
        return polling::serve(endpoint, request, usize::MAX).await;
    };
    let ctx = &endpoint.ctx;
    let upstream = &ctx.upstream;
    let subject = upstream.subjects().gateway_polling(token);
    let forwarded = PollingRequest {
        post: request.method == Method::Post,
        sid: request.sid,
        body: request.body,
    };
    // A GET waits until the session has something to send, and a ping goes out every
    // interval, so the holder answers within about one interval.
    let config = &ctx.socketio;
    let timeout = config.ping_interval + config.ping_timeout + ctx.config.request_timeout;
    match upstream
        .bus()
        .request(subject, forwarded.encode_to_vec().into(), timeout)
        .await
        .map(PollingReply::decode)
    {
        Ok(Ok(reply)) => Reply {
            status: reply.status as u16,
            content_type: reply.content_type,
            body: reply.body,
        },
        Ok(Err(error)) => {
            tracing::warn!(%error, "malformed forwarded polling reply");
            Reply::error(RequestError::BadRequest)
        }
        // No gateway has that token any more: the session died with its gateway.
        Err(BusError::NoResponders) => Reply::error(RequestError::UnknownSid),
        Err(error) => {
            tracing::debug!(%error, "polling request not forwarded");
            Reply::error(RequestError::UnknownSid)
        }
    }
}

/// Serves the polling requests other gateways forward to this one, until the returned task
/// is aborted or the bus subscription ends.
pub async fn listen(endpoint: Arc<Endpoint>) -> Result<JoinHandle<()>, BusError> {
    let upstream = &endpoint.ctx.upstream;
    let subject = upstream.subjects().gateway_polling(&endpoint.token);
    let mut requests = upstream.bus().subscribe(subject).await?;
    upstream.bus().flush().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = requests.next().await {
            // A GET may wait a whole ping interval, so each request gets its own task.
            tokio::spawn(answer(endpoint.clone(), message));
        }
    }))
}

async fn answer(endpoint: Arc<Endpoint>, message: BusMessage) {
    let Some(reply_to) = message.reply else {
        return;
    };
    let reply = match PollingRequest::decode(message.payload) {
        Ok(request) => {
            let method = if request.post {
                Method::Post
            } else {
                Method::Get
            };
            let request = Request {
                method,
                sid: request.sid,
                body: request.body,
            };
            // The answer goes back in one bus message.
            let fits = endpoint.ctx.upstream.bus().max_payload() - ENVELOPE_SLACK;
            polling::serve(&endpoint, request, fits).await
        }
        Err(_) => Reply::error(RequestError::BadRequest),
    };
    let bus = endpoint.ctx.upstream.bus();
    let encoded = encode(reply);
    let sent = match bus.publish(reply_to.clone(), encoded).await {
        Err(BusError::TooLarge { size, limit }) => {
            // One packet alone (a large binary event, base64 on polling) is more than a bus
            // message holds: the client learns it, rather than waiting for a timeout.
            tracing::warn!(
                size,
                limit,
                "a polling response too large to forward; use WebSocket or sticky sessions"
            );
            let refused = encode(Reply::error(RequestError::PayloadTooLarge));
            bus.publish(reply_to, refused).await
        }
        sent => sent,
    };
    if let Err(error) = sent {
        tracing::debug!(%error, "forwarded polling reply lost");
    }
}

fn encode(reply: Reply) -> bytes::Bytes {
    let reply = PollingReply {
        status: reply.status.into(),
        content_type: reply.content_type,
        body: reply.body,
    };
    reply.encode_to_vec().into()
}

/// Whether a token can stand in a subject: a client controls the sid.
fn subject_safe(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
