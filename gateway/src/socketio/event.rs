//! How Socket.IO events travel as publication data, and how any publication reaches a
//! Socket.IO socket.
//!
//! `emit(E, ...args)` is stored as the JSON document `{"event": E, "args": [...args]}`, so
//! a native subscriber of the channel sees the event name and its arguments. In the other
//! direction, a publication whose data has that shape is delivered to sockets as
//! `E(...args)`; any other data `D` (a native client's or a backend's) as `message(D)`.

use axum::extract::ws::Utf8Bytes;
use herald_proto::bus::v1::Publication;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::channels;

/// Event name under which data that is not an event envelope is delivered.
pub const DEFAULT_EVENT: &str = "message";

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow)]
    args: Vec<&'a RawValue>,
}

/// The publication data for `emit(event, ...args)`.
pub fn envelope(event: &str, args: &[&RawValue]) -> String {
    let mut out = String::from(r#"{"event":"#);
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(event).unwrap_or_default());
    out.push_str(r#","args":["#);
    push_joined(&mut out, args.iter().map(|a| a.get()));
    out.push_str("]}");
    out
}

/// The Socket.IO event array `[E, ...args]` for publication data.
pub fn event_array(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    out.push('[');
    match serde_json::from_str::<Envelope>(data) {
        Ok(envelope) if envelope.event.get().starts_with('"') => {
            push_joined(
                &mut out,
                std::iter::once(envelope.event.get()).chain(envelope.args.iter().map(|a| a.get())),
            );
        }
        _ => {
            out.push_str(&serde_json::to_string(DEFAULT_EVENT).unwrap_or_default());
            out.push(',');
            out.push_str(if data.is_empty() { "null" } else { data });
        }
    }
    out.push(']');
    out
}

/// The Engine.IO message (`42/ns,[E,...args]`) that delivers a publication to the Socket.IO
/// sockets subscribed to its channel; `None` for channels outside the Socket.IO mapping or
/// data that is not UTF-8.
pub fn frame(publication: &Publication) -> Option<Utf8Bytes> {
    let namespace = channels::namespace_of(&publication.channel)?;
    let data = std::str::from_utf8(&publication.data).ok()?;
    let array = event_array(data);
    let mut out = String::with_capacity(4 + namespace.len() + array.len());
    out.push_str("42");
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
    out.push_str(&array);
    Some(out.into())
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

    #[test]
    fn an_emit_round_trips_through_publication_data() {
        let args = [raw("\"这是一条消息\""), raw("{\"n\":[1,2]}"), raw("3")];
        let args: Vec<&RawValue> = args.iter().map(|a| a.as_ref()).collect();
        let data = envelope("greet", &args);
        let stored: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            stored,
            json!({"event": "greet", "args": ["这是一条消息", {"n": [1, 2]}, 3]})
        );
        let delivered: Value = serde_json::from_str(&event_array(&data)).unwrap();
        assert_eq!(
            delivered,
            json!(["greet", "这是一条消息", {"n": [1, 2]}, 3])
        );
    }

    #[test]
    fn publications_become_engine_io_messages_of_their_namespace() {
        let publication = |channel: &str, data: &'static str| Publication {
            channel: channel.into(),
            data: bytes::Bytes::from_static(data.as_bytes()),
            ..Default::default()
        };
        let frame = frame(&publication("/chat:lobby", r#"{"event":"m","args":[1]}"#));
        assert_eq!(frame.unwrap().as_str(), r#"42/chat,["m",1]"#);
        let frame = super::frame(&publication("/", "\"hi\""));
        assert_eq!(frame.unwrap().as_str(), r#"42["message","hi"]"#);
        assert!(super::frame(&publication("news", "1")).is_none());
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
            ("", json!(["message", null])),
        ] {
            let delivered: Value = serde_json::from_str(&event_array(data)).unwrap();
            assert_eq!(delivered, expected, "{data}");
        }
    }
}
