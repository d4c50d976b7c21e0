//! How any publication reaches a Socket.IO socket.
//!
//! `emit(E, ...args)` is stored as an event envelope (`herald_core::envelope`), so a
//! native subscriber of the channel sees the event name and its arguments. In the other
//! direction, a publication whose data is an envelope is delivered to sockets as
//! `E(...args)`, with its attachments; any other data `D` (a native client's or a
//! backend's) as `message(D)`.

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::envelope::Envelope;
use herald_proto::bus::v1::{ClientInfo, Membership, Publication};
use serde::Serialize;

use super::channels;
use super::reserved;
use crate::native::push::ClientView;
use crate::outbound::Encoded;

/// Event name under which data that is not an event envelope is delivered.
pub const DEFAULT_EVENT: &str = "message";

/// A Socket.IO event ready to send: the array `[E, ...args]` and its attachments.
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub array: String,
    pub attachments: Vec<Bytes>,
}

/// The Socket.IO event for publication data and its attachments: the envelope's event,
/// or `message(data)` (without attachments, which have no placeholders to go in).
pub fn decode(data: &str, attachments: &[Bytes]) -> Event {
    if let Some(envelope) = Envelope::decode(data) {
        let mut array = String::with_capacity(data.len());
        array.push('[');
        // Serializing a String cannot fail.
        array.push_str(&serde_json::to_string(&envelope.event).unwrap_or_default());
        for arg in &envelope.args {
            array.push(',');
            array.push_str(arg.get());
        }
        array.push(']');
        return Event {
            array,
            attachments: attachments.to_vec(),
        };
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
/// binary frames) for the sockets of `namespace` subscribed to its channel; with `sender`,
/// the arguments end with who sent it (`{client, user?, info?}`, or `null` for the server
/// API's). `None` for data that is not UTF-8.
pub fn render(publication: &Publication, namespace: &str, sender: bool) -> Option<Encoded> {
    let data = std::str::from_utf8(&publication.data).ok()?;
    let mut event = decode(data, &publication.attachments);
    if sender {
        let from = publication
            .publisher
            .as_ref()
            .filter(|p| !p.client.is_empty())
            .map(ClientView::new);
        event.array.pop();
        event.array.push(',');
        // Serializing this plain struct cannot fail.
        event
            .array
            .push_str(&serde_json::to_string(&from).unwrap_or_default());
        event.array.push(']');
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn array(data: &str) -> Value {
        serde_json::from_str(&decode(data, &[]).array).unwrap()
    }

    #[test]
    fn an_envelope_becomes_its_event() {
        let data = r#"{"event":"greet","args":["这是一条消息",{"n":[1,2]},3]}"#;
        assert_eq!(
            array(data),
            json!(["greet", "这是一条消息", {"n": [1, 2]}, 3])
        );
    }

    #[test]
    fn binary_attachments_follow_the_event_raw() {
        let data = r#"{"event":"bin","args":[{"_placeholder":true,"num":0}]}"#;
        let attachment = [Bytes::from_static(&[1, 2, 3])];
        let publication = Publication {
            channel: "/chat:room".into(),
            data: Bytes::from_static(data.as_bytes()),
            attachments: attachment.to_vec(),
            ..Default::default()
        };
        let rendered = render(&publication, "/chat", false).unwrap();
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
        assert_eq!(text(render(&room, "/chat", false)), r#"42/chat,["m",1]"#);
        assert_eq!(
            text(render(&publication("/", "\"hi\""), "/", false)),
            r#"42["message","hi"]"#
        );
        // A personal channel reaches sockets in whatever namespace they are.
        assert_eq!(
            text(render(&publication("user:#alice", "1"), "/chat", false)),
            r#"42/chat,["message",1]"#
        );
    }

    #[test]
    fn a_namespace_may_have_each_event_end_with_its_sender() {
        let mut publication = Publication {
            channel: "/chat".into(),
            data: Bytes::from_static(br#"{"event":"m","args":[1,2]}"#),
            ..Default::default()
        };
        let text = |p: &Publication| render(p, "/chat", true).unwrap().text.to_string();
        assert_eq!(text(&publication), r#"42/chat,["m",1,2,null]"#);
        publication.publisher = Some(ClientInfo {
            client: "sid".into(),
            user: "alice".into(),
            info: Bytes::from_static(br#"{"name":"Alice"}"#),
        });
        assert_eq!(
            text(&publication),
            r#"42/chat,["m",1,2,{"client":"sid","user":"alice","info":{"name":"Alice"}}]"#
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
                r#"{"event":"e","args":[],"attachments":["AQID"]}"#,
                json!(["message", {"event": "e", "args": [], "attachments": ["AQID"]}]),
            ),
            // A publisher cannot make Herald's own events, nor Socket.IO's.
            (
                r#"{"event":"herald:disconnect","args":[{"code":3000}]}"#,
                json!(["message", {"event": "herald:disconnect", "args": [{"code": 3000}]}]),
            ),
            ("", json!(["message", null])),
        ] {
            assert_eq!(array(data), expected, "{data}");
        }
    }
}
