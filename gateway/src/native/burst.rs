//! Reading ahead: the text frames a client has already sent are handled together, and its
//! consecutive publishes among them travel to a router as one batch.

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{FutureExt, StreamExt};
use herald_core::publish;
use herald_proto::bus::v1::PublishRequest;

use crate::inbound::client_gone;

/// Most frames read ahead and handled together.
const MAX_BURST: usize = 256;

/// Consecutive publishes of one connection, sent to a router together.
pub(super) struct Batch {
    pub(super) ids: Vec<u64>,
    pub(super) requests: Vec<PublishRequest>,
    pub(super) bytes: usize,
    /// Most bytes one batch may hold (see `publish::batch_limit`).
    limit: usize,
}

impl Batch {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            ids: Vec::new(),
            requests: Vec::new(),
            bytes: 0,
            limit,
        }
    }

    pub(super) fn fits(&self, request: &PublishRequest) -> bool {
        self.ids.is_empty() || self.bytes + publish::batch_bytes(request) <= self.limit
    }

    pub(super) fn push(&mut self, id: u64, request: PublishRequest) {
        self.bytes += publish::batch_bytes(&request);
        self.ids.push(id);
        self.requests.push(request);
    }
}

/// Why a burst of text frames ended before the read-ahead ran out.
pub(super) enum Stop {
    /// A binary frame: not part of the native protocol.
    Binary,
    /// The client closed the connection, or it dropped.
    Gone,
    /// The WebSocket layer failed, e.g. on a frame far over the size limit.
    Broken,
}

/// Reads `first` and the text frames already waiting behind it (at most [`MAX_BURST`], and
/// no more once they hold `max_bytes`), so that consecutive publishes reach the routers as
/// one batch. Never waits for a frame that has not arrived.
pub(super) fn read_burst(
    stream: &mut SplitStream<WebSocket>,
    first: Option<Result<Message, axum::Error>>,
    max_bytes: usize,
) -> (Vec<Utf8Bytes>, Option<Stop>) {
    let mut texts = Vec::new();
    let mut bytes = 0;
    let mut frame = first;
    loop {
        match frame {
            Some(Ok(Message::Text(text))) => {
                bytes += text.len();
                texts.push(text);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Binary(_))) => return (texts, Some(Stop::Binary)),
            Some(Ok(Message::Close(_))) | None => return (texts, Some(Stop::Gone)),
            Some(Err(error)) => {
                let stop = if client_gone(error) {
                    Stop::Gone
                } else {
                    Stop::Broken
                };
                return (texts, Some(stop));
            }
        }
        if texts.len() >= MAX_BURST || bytes >= max_bytes {
            return (texts, None);
        }
        match stream.next().now_or_never() {
            Some(next) => frame = next,
            None => return (texts, None),
        }
    }
}
