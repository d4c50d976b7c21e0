//! Socket.IO events as publication data, the format gateways, routers and backends share:
//! `emit(E, ...args)` is stored as the JSON document `{"event": E, "args": [...args]}`. A
//! binary event keeps Socket.IO's placeholders (`{"_placeholder": true, "num": i}`) in its
//! arguments, and its attachment `i` travels raw beside the data, in the publication's
//! `attachments`.
//!
//! Whoever publishes attachments (a Socket.IO socket, a native client, a backend) passes
//! [`check_attachments`], so that every Socket.IO client can put the event back together:
//! a placeholder that points at no attachment makes stock clients drop the connection.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::codes::{ErrorCode, Refusal};

/// Most binary attachments one publication may carry, as Herald's Socket.IO parser
/// accepts on one packet.
pub const MAX_ATTACHMENTS: usize = 10;

/// Event names Socket.IO clients and servers give a meaning of their own.
const SOCKETIO_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Prefix of the events Herald itself emits and answers.
pub const HERALD_PREFIX: &str = "herald:";

/// Whether `name` may not be emitted as an application event: the names Socket.IO
/// reserves, Herald's room requests (`join`, `leave`, `to`) and every `herald:` event.
pub fn is_reserved(name: &str) -> bool {
    SOCKETIO_EVENTS.contains(&name)
        || ["join", "leave", "to"].contains(&name)
        || name.starts_with(HERALD_PREFIX)
}

/// An event read from publication data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    pub event: String,
    #[serde(borrow)]
    pub args: Vec<&'a RawValue>,
}

impl<'a> Envelope<'a> {
    /// The event in `data`, if `data` is exactly an envelope of a name that may be
    /// emitted. Any other data is not an event (Socket.IO sockets get it as
    /// `message(data)`).
    pub fn decode(data: &'a str) -> Option<Self> {
        let envelope: Self = serde_json::from_str(data).ok()?;
        (!is_reserved(&envelope.event)).then_some(envelope)
    }
}

/// The publication data of `emit(event, ...args)`.
pub fn encode(event: &str, args: &[&RawValue]) -> String {
    let size = event.len() + args.iter().map(|a| a.get().len() + 1).sum::<usize>();
    let mut out = String::with_capacity(24 + size);
    out.push_str(r#"{"event":"#);
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(event).unwrap_or_default());
    out.push_str(r#","args":["#);
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(arg.get());
    }
    out.push_str("]}");
    out
}

/// Refuses data of native clients and backends that is an event envelope with a reserved
/// name: Socket.IO sockets would otherwise be handed `herald:disconnect` or `connect` by
/// whoever may publish. (Socket.IO events are checked by name before they are encoded.)
pub fn check_event_name(data: &str) -> Result<(), Refusal> {
    if !data.contains("\"event\"") {
        return Ok(());
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named<'a> {
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        #[serde(borrow, rename = "args")]
        _args: Vec<&'a RawValue>,
    }
    match serde_json::from_str::<Named>(data) {
        Ok(named) if is_reserved(&named.event) => Err(Refusal::new(
            ErrorCode::BadRequest,
            format!("the event name {:?} is reserved", named.event),
        )),
        _ => Ok(()),
    }
}

/// Checks that `count` attachments can go with `data`: at most [`MAX_ATTACHMENTS`]; when
/// there are any, `data` is an event envelope whose every placeholder points at one of
/// them; when there are none, `data` holds no placeholder (a history page that mixes it
/// with binary events would hand it another event's buffer).
pub fn check_attachments(data: &str, count: usize) -> Result<(), Refusal> {
    let bad = |message: String| Err(Refusal::new(ErrorCode::BadRequest, message));
    if count > MAX_ATTACHMENTS {
        return bad(format!("at most {MAX_ATTACHMENTS} attachments"));
    }
    if count == 0 {
        // Most data has no placeholder; parse only what may.
        if !data.contains("_placeholder") {
            return Ok(());
        }
        let mut value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let mut found = false;
        for_each_placeholder(&mut value, &mut |_| found = true);
        return match found {
            true => bad("a placeholder ({\"_placeholder\": true}) without attachments".into()),
            false => Ok(()),
        };
    }
    let Some(envelope) = Envelope::decode(data) else {
        return bad("attachments need data of the form {\"event\", \"args\"} with an event name that is not reserved".into());
    };
    for arg in envelope.args {
        let mut value: Value = serde_json::from_str(arg.get()).unwrap_or(Value::Null);
        let mut wrong = None;
        for_each_placeholder(&mut value, &mut |placeholder| {
            let num = placeholder.get("num");
            let points = num
                .and_then(Value::as_u64)
                .is_some_and(|n| n < count as u64);
            if !points && wrong.is_none() {
                wrong = Some(num.map_or("without a number".into(), Value::to_string));
            }
        });
        if let Some(num) = wrong {
            return bad(format!(
                "placeholder {num} points at none of the {count} attachments"
            ));
        }
    }
    Ok(())
}

/// Calls `visit` with every placeholder object (`{"_placeholder": true, "num": i}`) in
/// `value`.
pub fn for_each_placeholder(value: &mut Value, visit: &mut impl FnMut(&mut Map<String, Value>)) {
    match value {
        Value::Object(object) if object.get("_placeholder") == Some(&Value::Bool(true)) => {
            visit(object)
        }
        Value::Object(object) => object
            .values_mut()
            .for_each(|v| for_each_placeholder(v, visit)),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| for_each_placeholder(v, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_string()).unwrap()
    }

    #[test]
    fn an_emit_round_trips_through_publication_data() {
        let args = [raw("\"这是一条消息\""), raw("{\"n\":[1,2]}"), raw("3")];
        let args: Vec<&RawValue> = args.iter().map(|a| a.as_ref()).collect();
        let data = encode("greet", &args);
        assert_eq!(
            serde_json::from_str::<Value>(&data).unwrap(),
            serde_json::json!({"event": "greet", "args": ["这是一条消息", {"n": [1, 2]}, 3]})
        );
        let envelope = Envelope::decode(&data).unwrap();
        assert_eq!(envelope.event, "greet");
        assert_eq!(envelope.args.len(), 3);
    }

    #[test]
    fn only_exact_envelopes_of_free_names_are_events() {
        for data in [
            r#"{"event":"e","args":[],"extra":1}"#,
            r#"{"event":1,"args":[]}"#,
            r#"{"event":"e"}"#,
            r#"{"event":"herald:disconnect","args":[{"code":3000}]}"#,
            r#"{"event":"disconnect","args":[]}"#,
            r#"["e"]"#,
            "",
        ] {
            assert!(Envelope::decode(data).is_none(), "{data}");
        }
        assert!(Envelope::decode(r#"{"args":[1],"event":"e"}"#).is_some());
    }

    #[test]
    fn attachments_need_placeholders_that_point_at_them() {
        let data = r#"{"event":"up","args":[{"_placeholder":true,"num":0},{"n":{"_placeholder":true,"num":1}}]}"#;
        for reserved in ["herald:disconnect", "connect", "disconnect", "join"] {
            let data = format!(r#"{{"event":"{reserved}","args":[]}}"#);
            assert!(check_event_name(&data).is_err(), "{reserved}");
        }
        assert!(check_event_name(r#"{"event":"chat","args":[1]}"#).is_ok());
        assert!(check_event_name(r#"{"event":"connect","extra":1,"args":[]}"#).is_ok());
        assert!(check_event_name(r#"{"text":"connect"}"#).is_ok());
        assert!(check_attachments(data, 2).is_ok());
        assert!(check_attachments(data, 1).is_err());
        assert!(check_attachments(r#"{"text":"hi"}"#, 0).is_ok());
        assert!(check_attachments(r#"{"text":"hi"}"#, 1).is_err());
        // A placeholder without attachments would pick up another event's buffer in a
        // binary history ack.
        let stray = r#"{"event":"up","args":[[{"_placeholder":true,"num":0}]]}"#;
        assert!(check_attachments(stray, 0).is_err());
        assert!(check_attachments(r#"{"note":"_placeholder"}"#, 0).is_ok());
        let unnumbered = r#"{"event":"up","args":[{"_placeholder":true}]}"#;
        assert!(check_attachments(unnumbered, 1).is_err());
        let many = r#"{"event":"up","args":[]}"#;
        assert_eq!(
            check_attachments(many, MAX_ATTACHMENTS + 1)
                .unwrap_err()
                .code,
            ErrorCode::BadRequest
        );
    }
}
