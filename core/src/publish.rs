//! Turning a publish into what goes on the bus, the same way for every protocol and the
//! server API: once the publisher may publish on the channel (for clients, the gateway's
//! access checks), its size is checked against the limit that applies to it and against
//! what the bus can carry, then the publication goes to the routers (channels with
//! history) or straight to subscribers.
//!
//! Sizes count the JSON data and the raw bytes of binary attachments. Three limits meet
//! here: the channel's `max_message_size` (native and server API publishes), Socket.IO's
//! `max_payload` (events), and the bus's message size (NATS `max_payload`, read from the
//! server), which every publication must fit with its envelope.

use bytes::Bytes;
use herald_proto::bus::v1::{ClientInfo, Position, Publication, PublishRequest};
use prost::Message;

use crate::channel;
use crate::codes::{ErrorCode, Refusal};
use crate::config::{ChannelRules, SocketIoConfig};
use crate::upstream::Upstream;

/// Room left in a bus message for what wraps a publication: the batch or the history
/// page it travels in, the epoch and offset a router adds.
pub const ENVELOPE_SLACK: usize = 256;
/// Most bytes of publishes sent to the routers in one request, when the bus carries more.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;

/// A publish, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub channel: String,
    /// The payload, a JSON document.
    pub data: Bytes,
    /// Binary attachments, raw (a Socket.IO binary event's buffers).
    pub attachments: Vec<Bytes>,
    /// Who publishes, as the server sees it; `None` for the server API.
    pub publisher: Option<ClientInfo>,
    /// When set, a retry with the same key is stored once.
    pub idempotency_key: Option<String>,
}

impl Publish {
    /// The payload's size: the data, and the raw bytes of the attachments.
    pub fn size(&self) -> usize {
        self.data.len() + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }

    fn publication(self) -> Publication {
        Publication {
            channel: self.channel,
            data: self.data,
            attachments: self.attachments,
            origin: self
                .publisher
                .as_ref()
                .map(|p| p.client.clone())
                .unwrap_or_default(),
            publisher: self.publisher,
            accepted_at_us: crate::time::unix_micros(),
            ..Default::default()
        }
    }
}

/// The most a publish may carry, and the setting that says so (for the refusal).
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: usize,
    pub setting: &'static str,
}

impl Limit {
    /// A native client's or the server API's publish: the channel's `max_message_size`.
    pub fn channel(rules: &ChannelRules) -> Self {
        Self {
            bytes: rules.max_message_size,
            setting: "the channel's max_message_size",
        }
    }

    /// A Socket.IO event: `socketio.max_payload`, what Socket.IO clients expect.
    pub fn socketio(config: &SocketIoConfig) -> Self {
        Self {
            bytes: config.max_payload,
            setting: "socketio.max_payload",
        }
    }
}

/// A publish, checked and ready to send.
pub enum Prepared {
    /// For a channel with history: to the routers.
    Routed(PublishRequest),
    /// For a channel without history: straight to subscribers.
    Direct(Box<Publication>),
}

impl Prepared {
    pub fn channel(&self) -> &str {
        match self {
            Self::Routed(request) => &request.channel,
            Self::Direct(publication) => &publication.channel,
        }
    }

    /// The publish it was made from, to be changed and prepared again.
    pub fn into_publish(self) -> Publish {
        match self {
            Self::Routed(request) => Publish {
                channel: request.channel,
                data: request.data,
                attachments: request.attachments,
                publisher: request.publisher,
                idempotency_key: (!request.idempotency_key.is_empty())
                    .then_some(request.idempotency_key),
            },
            Self::Direct(publication) => Publish {
                channel: publication.channel,
                data: publication.data,
                attachments: publication.attachments,
                publisher: publication.publisher,
                idempotency_key: None,
            },
        }
    }
}

/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// Refuses an invalid channel name with [`ErrorCode::BadChannel`].
pub fn valid_channel(name: &str) -> Result<(), Refusal> {
    channel::validate(name).map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))
}

/// Refuses an idempotency key over [`MAX_IDEMPOTENCY_KEY_LEN`] bytes with
/// [`ErrorCode::BadRequest`].
pub fn valid_idempotency_key(key: &str) -> Result<(), Refusal> {
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        let message = format!("idempotency_key exceeds {MAX_IDEMPOTENCY_KEY_LEN} bytes");
        return Err(Refusal::new(ErrorCode::BadRequest, message));
    }
    Ok(())
}

/// Checks `publish` against `limit` and against the `bus_limit` bytes a bus message may
/// hold, and readies it for a channel with or without `history`.
pub fn prepare(
    publish: Publish,
    limit: Limit,
    bus_limit: usize,
    history: bool,
) -> Result<Prepared, Refusal> {
    let size = publish.size();
    if size > limit.bytes {
        return Err(too_large(format!(
            "data of {size} bytes exceeds {} ({} bytes)",
            limit.setting, limit.bytes
        )));
    }
    let key = publish.idempotency_key.clone().unwrap_or_default();
    valid_idempotency_key(&key)?;
    let publication = publish.publication();
    let needed = publication.encoded_len() + ENVELOPE_SLACK;
    if needed > bus_limit {
        return Err(too_large(format!(
            "data of {size} bytes needs {needed} bytes on the message bus, more than it \
             carries (NATS max_payload, {bus_limit} bytes)"
        )));
    }
    if !history {
        return Ok(Prepared::Direct(Box::new(publication)));
    }
    Ok(Prepared::Routed(PublishRequest {
        channel: publication.channel,
        data: publication.data,
        idempotency_key: key,
        origin: publication.origin,
        publisher: publication.publisher,
        attachments: publication.attachments,
    }))
}

fn too_large(message: String) -> Refusal {
    Refusal::new(ErrorCode::MessageTooLarge, message)
}

/// Bytes `request` takes in a publish batch: its encoding, and its framing there.
pub fn batch_bytes(request: &PublishRequest) -> usize {
    let len = request.encoded_len();
    len + 1 + prost::length_delimiter_len(len)
}

/// Splits `requests` into batches of at most `limit` bytes (see [`batch_bytes`]), in order;
/// a request larger than `limit` goes alone.
pub fn batches(requests: Vec<PublishRequest>, limit: usize) -> Vec<Vec<PublishRequest>> {
    let mut batches: Vec<Vec<PublishRequest>> = Vec::new();
    let mut bytes = 0;
    for request in requests {
        let size = batch_bytes(&request);
        match batches.last_mut() {
            Some(batch) if bytes + size <= limit => batch.push(request),
            _ => {
                batches.push(vec![request]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    batches
}

/// Most bytes of publishes to send to the routers in one request over `upstream`.
pub fn batch_limit(upstream: &Upstream) -> usize {
    let carried = upstream.bus().max_payload().saturating_sub(ENVELOPE_SLACK);
    MAX_BATCH_BYTES.min(carried)
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

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::bus::v1::PublishBatch;

    const LIMIT: Limit = Limit {
        bytes: 1000,
        setting: "max_message_size",
    };

    fn publish(data: usize, attachments: &[usize]) -> Publish {
        Publish {
            channel: "chat".into(),
            data: Bytes::from(vec![b'1'; data]),
            attachments: attachments
                .iter()
                .map(|&n| Bytes::from(vec![0; n]))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn attachments_count_by_their_raw_size() {
        assert!(prepare(publish(400, &[300, 300]), LIMIT, 1 << 20, true).is_ok());
        let refusal = prepare(publish(400, &[300, 301]), LIMIT, 1 << 20, true)
            .err()
            .unwrap();
        assert_eq!(refusal.code, ErrorCode::MessageTooLarge);
        assert!(
            refusal
                .message
                .contains("1001 bytes exceeds max_message_size (1000 bytes)")
        );
    }

    #[test]
    fn batches_stay_within_their_limit_and_keep_the_order() {
        let request = |n: u8| PublishRequest {
            channel: "c".into(),
            data: Bytes::from(vec![n; 100]),
            ..Default::default()
        };
        let size = batch_bytes(&request(0));
        let split = batches((0..5).map(request).collect(), 2 * size);
        let shape: Vec<Vec<u8>> = split
            .iter()
            .map(|batch| batch.iter().map(|r| r.data[0]).collect())
            .collect();
        assert_eq!(shape, [vec![0, 1], vec![2, 3], vec![4]]);
        let alone = batches(vec![request(7)], 10);
        assert_eq!(alone.len(), 1);
        let whole = PublishBatch {
            requests: split[0].clone(),
        };
        assert_eq!(whole.encoded_len(), 2 * size);
    }

    #[test]
    fn what_the_bus_cannot_carry_is_refused_naming_its_limit() {
        let refusal = prepare(publish(900, &[]), LIMIT, 1000, false)
            .err()
            .unwrap();
        assert_eq!(refusal.code, ErrorCode::MessageTooLarge);
        assert!(
            refusal.message.contains("NATS max_payload, 1000 bytes"),
            "{refusal}"
        );
        assert!(matches!(
            prepare(publish(900, &[]), LIMIT, 2000, false),
            Ok(Prepared::Direct(_))
        ));
    }
}
