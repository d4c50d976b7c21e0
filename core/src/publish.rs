//! Turning a publish into what goes on the bus, the same way for every protocol and the
//! server API: once the publisher may publish on the channel (for clients, the gateway's
//! access checks), the data size is checked against the channel's rules, then the
//! publication goes to the routers (channels with history) or straight to subscribers.

use bytes::Bytes;
use herald_proto::bus::v1::{Position, Publication, PublishRequest};

use crate::channel;
use crate::codes::{ErrorCode, Refusal};
use crate::config::ChannelRules;
use crate::upstream::Upstream;

/// A publish, checked and ready to send.
pub enum Prepared {
    /// For a channel with history: to the routers.
    Routed(PublishRequest),
    /// For a channel without history: straight to subscribers.
    Direct(Publication),
}

/// Refuses an invalid channel name with [`ErrorCode::BadChannel`].
pub fn valid_channel(name: &str) -> Result<(), Refusal> {
    channel::validate(name).map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))
}

/// Checks a publish of `data` (JSON) to `channel`, whose rules are `rules`, by `origin`.
pub fn prepare(
    rules: &ChannelRules,
    channel: String,
    data: &str,
    origin: &str,
    idempotency_key: Option<String>,
) -> Result<Prepared, Refusal> {
    if data.len() > rules.max_message_size {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!("data exceeds {} bytes", rules.max_message_size),
        ));
    }
    let data = Bytes::copy_from_slice(data.as_bytes());
    if !rules.has_history() {
        return Ok(Prepared::Direct(Publication {
            channel,
            data,
            origin: origin.to_string(),
            accepted_at_us: crate::time::unix_micros(),
            ..Default::default()
        }));
    }
    Ok(Prepared::Routed(PublishRequest {
        channel,
        data,
        idempotency_key: idempotency_key.unwrap_or_default(),
        origin: origin.to_string(),
    }))
}

/// Sends one prepared publish and waits for its position (empty for channels without
/// history).
pub async fn send(upstream: &Upstream, prepared: Prepared) -> Result<Position, Refusal> {
    match prepared {
        Prepared::Direct(publication) => {
            upstream.deliver(&publication).await?;
            Ok(Position::default())
        }
        Prepared::Routed(request) => upstream
            .publish(vec![request])
            .await?
            .pop()
            .unwrap_or_else(|| Err(Refusal::new(ErrorCode::Internal, "no reply"))),
    }
}
