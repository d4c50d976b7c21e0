//! `herald:history`: a namespace's or a room's recent events, as a Socket.IO app loads
//! them, acked with the events in order, each with its offset, when it was accepted, and
//! who sent it as the server saw it.
//!
//! The ack is one object: `{ok: true, events: [{event, args, offset, time, from?}], offset,
//! epoch, truncated?}`. Binary events keep their buffers: the ack is then a binary ack
//! whose attachments are every event's, in order, each placeholder renumbered to its place
//! among them, so stock clients hand the application its buffers.

use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::envelope::{self, Envelope};
use herald_core::rules::Action;
use herald_proto::bus::v1::{HistoryPage, HistoryRequest, Publication};
use serde_json::{Map, Value, json};

use super::event::DEFAULT_EVENT;
use super::reserved::HistoryOptions;
use super::socket::{Ack, Conn, Socket};
use crate::native::push::ClientView;

/// Most binary attachments one history ack carries; a page with more is cut short, as a
/// page too large for the bus is (`truncated`).
const MAX_ACK_ATTACHMENTS: usize = 256;

impl Conn {
    /// The events of `options.room` (or of the socket's namespace), if the socket may read
    /// its history.
    pub(super) async fn history(
        &self,
        socket: &Socket,
        options: HistoryOptions,
    ) -> Result<Ack, Refusal> {
        let ctx = &self.ctx;
        let channel = socket.channel(options.room.as_deref());
        socket
            .access
            .authorize(&ctx.channels, &channel, Action::ReadHistory)?;
        let limit = options.limit.unwrap_or(ctx.config.history_default_limit);
        if limit > ctx.config.history_max_limit {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("limit exceeds {}", ctx.config.history_max_limit),
            ));
        }
        let request = HistoryRequest {
            channel,
            since: options.since,
            limit,
            reverse: options.reverse,
        };
        Ok(reply(ctx.upstream.history(request).await?))
    }
}

/// The ack of a history request that got `page`.
fn reply(page: HistoryPage) -> Ack {
    let mut attachments = Vec::new();
    let mut events = Vec::with_capacity(page.publications.len());
    let mut truncated = page.truncated;
    for publication in page.publications {
        // Each attachment is a frame of its own: the page stops before it would take more
        // than its share of the socket's outbound queue.
        let more = publication.attachments.len();
        if !events.is_empty() && attachments.len() + more > MAX_ACK_ATTACHMENTS {
            truncated = true;
            break;
        }
        events.push(item(publication, &mut attachments));
    }
    let position = page.position.unwrap_or_default();
    let mut value = json!({
        "ok": true,
        "events": events,
        "offset": position.offset,
        "epoch": position.epoch,
    });
    if truncated {
        value["truncated"] = Value::Bool(true);
    }
    Ack {
        value,
        attachments,
        refused: None,
    }
}

/// One event of the page; its attachments join `attachments`.
fn item(publication: Publication, attachments: &mut Vec<Bytes>) -> Value {
    let data = std::str::from_utf8(&publication.data).unwrap_or("null");
    let (event, args) = match Envelope::decode(data) {
        Some(envelope) => {
            let base = attachments.len() as u64;
            let mut args: Vec<Value> = envelope.args.iter().map(|a| parse(a.get())).collect();
            if !publication.attachments.is_empty() {
                // The event's attachments start at `base` among the ack's.
                let mut shift = |placeholder: &mut Map<String, Value>| {
                    if let Some(num) = placeholder.get("num").and_then(Value::as_u64) {
                        placeholder.insert("num".into(), (num + base).into());
                    }
                };
                for arg in &mut args {
                    envelope::for_each_placeholder(arg, &mut shift);
                }
                attachments.extend(publication.attachments);
            }
            (envelope.event, args)
        }
        None => (DEFAULT_EVENT.to_string(), vec![parse(data)]),
    };
    let mut item = Map::new();
    item.insert("event".into(), Value::String(event));
    item.insert("args".into(), Value::Array(args));
    item.insert("offset".into(), publication.offset.into());
    item.insert("time".into(), (publication.accepted_at_us / 1000).into());
    if let Some(publisher) = publication.publisher.filter(|p| !p.client.is_empty()) {
        let from = serde_json::to_value(ClientView::new(&publisher)).unwrap_or_default();
        item.insert("from".into(), from);
    }
    Value::Object(item)
}

/// JSON that was valid when published; anything else is shown as null.
fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::bus::v1::{ClientInfo, Position};

    fn publication(offset: u64, data: &str, attachments: &[&[u8]]) -> Publication {
        Publication {
            channel: "/chat".into(),
            offset,
            epoch: "e".into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            attachments: attachments
                .iter()
                .map(|a| Bytes::copy_from_slice(a))
                .collect(),
            accepted_at_us: 1_700_000_000_123_456,
            publisher: Some(ClientInfo {
                client: "sid1".into(),
                user: "alice".into(),
                info: Bytes::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_come_in_order_with_who_sent_them_and_their_buffers() {
        let page = HistoryPage {
            publications: vec![
                publication(4, r#"{"event":"message","args":["hi"]}"#, &[]),
                publication(
                    5,
                    r#"{"event":"photo","args":[{"_placeholder":true,"num":0},"cat"]}"#,
                    &[b"jpg1"],
                ),
                publication(6, r#"{"text":"from a backend"}"#, &[]),
                publication(
                    7,
                    r#"{"event":"album","args":[[{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]]}"#,
                    &[b"a", b"b"],
                ),
            ],
            position: Some(Position {
                offset: 7,
                epoch: "e".into(),
            }),
            truncated: true,
        };
        let reply = reply(page);
        let from = json!({"client": "sid1", "user": "alice"});
        let time = 1_700_000_000_123u64;
        assert_eq!(
            reply.value,
            json!({
                "ok": true,
                "events": [
                    {"event": "message", "args": ["hi"], "offset": 4, "time": time, "from": from},
                    {"event": "photo", "args": [{"_placeholder": true, "num": 0}, "cat"],
                     "offset": 5, "time": time, "from": from},
                    {"event": "message", "args": [{"text": "from a backend"}], "offset": 6,
                     "time": time, "from": from},
                    {"event": "album",
                     "args": [[{"_placeholder": true, "num": 2}, {"_placeholder": true, "num": 1}]],
                     "offset": 7, "time": time, "from": from},
                ],
                "offset": 7,
                "epoch": "e",
                "truncated": true,
            })
        );
        assert_eq!(
            reply.attachments,
            [
                Bytes::from_static(b"jpg1"),
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b")
            ]
        );
    }

    #[test]
    fn a_page_with_too_many_attachments_is_cut_short() {
        let album = r#"{"event":"album","args":[{"_placeholder":true,"num":0}]}"#;
        let ten: [&[u8]; 10] = [b"x"; 10];
        let page = HistoryPage {
            publications: (1..=30).map(|n| publication(n, album, &ten)).collect(),
            ..Default::default()
        };
        let reply = reply(page);
        assert_eq!(reply.value["events"].as_array().map(Vec::len), Some(25));
        assert_eq!(reply.value["truncated"], true);
        assert_eq!(reply.attachments.len(), 250);
    }
}
