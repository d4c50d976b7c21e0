//! Reading ahead: the text frames a client has already sent are handled together, so that
//! its consecutive publishes among them travel to a router as one [`Batch`].
//!
//! [`Batch`]: crate::batch::Batch

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{FutureExt, Stream, StreamExt};

use crate::batch::MAX_BURST;
use crate::inbound::client_gone;

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
    stream: &mut (impl Stream<Item = Result<Message, axum::Error>> + Unpin),
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
