//! How Socket.IO events travel as publication data, and how any publication reaches a
//! Socket.IO socket.
//!
//! `emit(E, ...args)` is stored as the JSON document `{"event": E, "args": [...args]}`, so
//! a native subscriber of the channel sees the event name and its arguments. In the other
//! direction, a publication whose data has that shape is delivered to sockets as
//! `E(...args)`; any other data `D` (a native client's or a backend's) as `message(D)`.

use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use herald_proto::bus::v1::{ClientInfo, Membership, Publication};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{channels, reserved};
use crate::native::push::ClientView;
use crate::outbound::Encoded;

/// Event name under which data that is not an event envelope is delivered.
pub const DEFAULT_EVENT: &str = "message";

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow)]
    args: Vec<&'a RawValue>,
    /// Binary attachments, base64; the arguments hold their placeholders.
    #[serde(default)]
    attachments: Vec<String>,
}

/// The publication data for `emit(event, ...args)`. A binary event's arguments keep their
/// `{"_placeholder": true, "num": i}` objects, and attachment `i` goes, base64, in
/// `attachments[i]`.
pub fn envelope(event: &str, args: &[&RawValue], attachments: &[Bytes]) -> String {
    let mut out = String::from(r#"{"event":"#);
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(event).unwrap_or_default());
    out.push_str(r#","args":["#);
    push_joined(&mut out, args.iter().map(|a| a.get()));
    out.push(']');
    if !attachments.is_empty() {
        out.push_str(r#","attachments":["#);
        for (i, attachment) in attachments.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            BASE64.encode_string(attachment, &mut out);
            out.push('"');
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// A Socket.IO event ready to send: the array `[E, ...args]` and its attachments.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub array: String,
    pub attachments: Vec<Bytes>,
}

/// The Socket.IO event for publication data: the envelope's event, or `message(data)`.
pub fn decode(data: &str) -> Event {
    if let Ok(envelope) = serde_json::from_str::<Envelope>(data)
        && envelope.event.get().starts_with('"')
        && let Ok(attachments) = envelope
            .attachments
            .iter()
            .map(|a| BASE64.decode(a).map(Bytes::from))
            .collect::<Result<Vec<_>, _>>()
    {
        let mut array = String::with_capacity(data.len());
        array.push('[');
        let items =
            std::iter::once(envelope.event.get()).chain(envelope.args.iter().map(|a| a.get()));
        push_joined(&mut array, items);
        array.push(']');
        return Event { array, attachments };
    }
    let data = if data.is_empty() { "null" } else { data };
    let array = format!(
        "[{},{data}]",
        serde_json::to_string(DEFAULT_EVENT).unwrap_or_default()
    );
    Event {
        array,
        attachments: Vec::new(),
    }
}

/// `encoded` (an event packet) with `offset` as the event's last argument, for connection
/// state recovery. (An offset string holds no characters JSON would escape.)
pub fn with_offset(encoded: &Encoded, offset: &str) -> Encoded {
    let array = encoded.text.as_str();
    let open = array.strip_suffix(']').unwrap_or(array);
    let mut text = String::with_capacity(open.len() + offset.len() + 4);
    text.push_str(open);
    text.push_str(",\"");
    text.push_str(offset);
    text.push_str("\"]");
    Encoded {
        text: text.into(),
        binary: encoded.binary.clone(),
    }
}

/// The event packet of a publication (`42/ns,[E,...args]`, or `45N-/ns,[…]` followed by N
/// binary frames) for the sockets of `namespace` subscribed to its channel; `None` for data
/// that is not UTF-8.
pub fn render(publication: &Publication, namespace: &str) -> Option<Encoded> {
    let data = std::str::from_utf8(&publication.data).ok()?;
    let event = decode(data);
    let mut text = String::with_capacity(8 + namespace.len() + event.array.len());
    if event.attachments.is_empty() {
        text.push_str("42");
    } else {
        text.push_str(&format!("45{}-", event.attachments.len()));
    }
    if namespace != "/" {
        text.push_str(namespace);
        text.push(',');
    }
    text.push_str(&event.array);
    Some(Encoded::new(text, event.attachments))
}

/// The `herald:join` or `herald:leave` event for the sockets of `namespace` on `channel`:
/// `{channel, room, client, user?, info?}`, where `room` is the room of the namespace the
/// channel is (`null` for the namespace's own channel).
pub fn membership(channel: &str, namespace: &str, membership: &Membership) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        channel: &'a str,
        room: Option<&'a str>,
        #[serde(flatten)]
        client: ClientView<'a>,
    }
    let empty = ClientInfo::default();
    let body = Body {
        channel,
        room: channels::room_of(channel, namespace),
        client: ClientView::new(membership.client.as_ref().unwrap_or(&empty)),
    };
    let name = if membership.joined {
        reserved::JOIN_EVENT
    } else {
        reserved::LEAVE_EVENT
    };
    // Serializing these plain structs cannot fail.
    let array = serde_json::to_string(&(name, body)).unwrap_or_default();
    packet_text(namespace, &array).into()
}

/// `42/ns,[…]`: an event packet inside an Engine.IO message (no `/ns,` for the root).
pub fn packet_text(namespace: &str, array: &str) -> String {
    let mut text = String::with_capacity(4 + namespace.len() + array.len());
    text.push_str("42");
    if namespace != "/" {
        text.push_str(namespace);
        text.push(',');
    }
    text.push_str(array);
    text
}

fn push_joined<'a>(out: &mut String, items: impl Iterator<Item = &'a str>) {
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    fn array(data: &str) -> Value {
        serde_json::from_str(&decode(data).array).unwrap()
    }

    #[test]
    fn an_emit_round_trips_through_publication_data() {
        let args = [raw("\"这是一条消息\""), raw("{\"n\":[1,2]}"), raw("3")];
        let args: Vec<&RawValue> = args.iter().map(|a| a.as_ref()).collect();
        let data = envelope("greet", &args, &[]);
        let stored: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            stored,
            json!({"event": "greet", "args": ["这是一条消息", {"n": [1, 2]}, 3]})
        );
        assert_eq!(
            array(&data),
            json!(["greet", "这是一条消息", {"n": [1, 2]}, 3])
        );
    }

    #[test]
    fn binary_attachments_travel_as_base64() {
        let placeholder = raw(r#"{"_placeholder":true,"num":0}"#);
        let data = envelope("bin", &[&placeholder], &[Bytes::from_static(&[1, 2, 3])]);
        let stored: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(stored["attachments"], json!(["AQID"]));
        let event = decode(&data);
        assert_eq!(event.attachments, [Bytes::from_static(&[1, 2, 3])]);
        let publication = Publication {
            channel: "/chat:room".into(),
            data: Bytes::from(data),
            ..Default::default()
        };
        let rendered = render(&publication, "/chat").unwrap();
        let attachment = [Bytes::from_static(&[1, 2, 3])];
        assert_eq!(
            rendered,
            Encoded::new(
                r#"451-/chat,["bin",{"_placeholder":true,"num":0}]"#,
                attachment.to_vec()
            )
        );
        assert_eq!(
            with_offset(&rendered, "0a:1"),
            Encoded::new(
                r#"451-/chat,["bin",{"_placeholder":true,"num":0},"0a:1"]"#,
                attachment.to_vec()
            )
        );
    }

    #[test]
    fn publications_become_engine_io_messages_of_their_namespace() {
        let publication = |channel: &str, data: &'static str| Publication {
            channel: channel.into(),
            data: Bytes::from_static(data.as_bytes()),
            ..Default::default()
        };
        let text = |rendered: Option<Encoded>| rendered.unwrap().text.to_string();
        let room = publication("/chat:lobby", r#"{"event":"m","args":[1]}"#);
        assert_eq!(text(render(&room, "/chat")), r#"42/chat,["m",1]"#);
        assert_eq!(
            text(render(&publication("/", "\"hi\""), "/")),
            r#"42["message","hi"]"#
        );
        // A personal channel reaches sockets in whatever namespace they are.
        assert_eq!(
            text(render(&publication("user:#alice", "1"), "/chat")),
            r#"42/chat,["message",1]"#
        );
    }

    #[test]
    fn other_data_arrives_as_a_message_event() {
        for (data, expected) in [
            (r#"{"text":"hi"}"#, json!(["message", {"text": "hi"}])),
            ("42", json!(["message", 42])),
            (
                r#"{"event":1,"args":[]}"#,
                json!(["message", {"event": 1, "args": []}]),
            ),
            (
                r#"{"event":"e","args":[],"attachments":["!"]}"#,
                json!(["message", {"event": "e", "args": [], "attachments": ["!"]}]),
            ),
            ("", json!(["message", null])),
        ] {
            assert_eq!(array(data), expected, "{data}");
        }
    }
}
