//! Encoding server pushes (frames without an `id`).
//!
//! The publication push is built by hand around the payload, which is already JSON: it is
//! copied in as it is, never parsed and re-serialized. This runs once per publication per
//! gateway, not once per recipient.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use herald_core::codes::DisconnectCode;
use herald_proto::bus::v1::{ClientInfo, Membership, Position, Publication};
use serde::Serialize;
use serde_json::value::RawValue;

/// `{"push":"publication","channel":…,"offset":…,"epoch":…,"data":…,"attachments":[…],
/// "from":{…}}`; the offset and epoch only for channels with history, the attachments
/// (base64) only when there are any, `from` only when a client published it. `None` if the
/// payload is not UTF-8 (it cannot be JSON).
pub fn publication(p: &Publication) -> Option<Utf8Bytes> {
    let Ok(data) = std::str::from_utf8(&p.data) else {
        tracing::warn!(channel = %p.channel, "dropping a publication whose data is not UTF-8");
        return None;
    };
    let mut out = String::with_capacity(96 + p.channel.len() + p.epoch.len() + data.len());
    out.push_str(r#"{"push":"publication","channel":"#);
    push_json_string(&mut out, &p.channel);
    if !p.epoch.is_empty() {
        let _ = write!(out, r#","offset":{},"epoch":"#, p.offset);
        push_json_string(&mut out, &p.epoch);
    }
    push_payload(&mut out, data, &p.attachments, p.publisher.as_ref());
    out.push('}');
    Some(out.into())
}

/// `,"data":…`, then `,"attachments":[…]` and `,"from":{…}` where there are any: what a
/// publication carries, in pushes and in history.
pub fn push_payload(
    out: &mut String,
    data: &str,
    attachments: &[Bytes],
    publisher: Option<&ClientInfo>,
) {
    out.push_str(r#","data":"#);
    out.push_str(if data.is_empty() { "null" } else { data });
    if !attachments.is_empty() {
        out.push_str(r#","attachments":["#);
        for (i, attachment) in attachments.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            BASE64.encode_string(attachment, out);
            out.push('"');
        }
        out.push(']');
    }
    if let Some(publisher) = publisher.filter(|p| !p.client.is_empty()) {
        out.push_str(r#","from":"#);
        // Serializing this plain struct cannot fail.
        out.push_str(&serde_json::to_string(&ClientView::new(publisher)).unwrap_or_default());
    }
}

/// A client as presence and join/leave events show it.
#[derive(Serialize)]
pub struct ClientView<'a> {
    pub client: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<&'a RawValue>,
}

impl<'a> ClientView<'a> {
    pub fn new(client: &'a ClientInfo) -> Self {
        // `info` came from a verified token as serialized JSON; anything else is left out.
        let info = std::str::from_utf8(&client.info)
            .ok()
            .and_then(|info| serde_json::from_str(info).ok());
        Self {
            client: &client.client,
            user: &client.user,
            info,
        }
    }
}

/// Every client on a channel, by client id: what `presence` shows on both protocols.
pub fn presence_map(clients: &[ClientInfo]) -> BTreeMap<&str, ClientView<'_>> {
    clients
        .iter()
        .map(|c| (c.client.as_str(), ClientView::new(c)))
        .collect()
}

#[derive(Serialize)]
struct MembershipPush<'a> {
    push: &'static str,
    channel: &'a str,
    #[serde(flatten)]
    client: ClientView<'a>,
}

/// `{"push":"join"|"leave","channel":…,"client":…,"user":…,"info":…}`.
pub fn membership(channel: &str, membership: &Membership) -> Utf8Bytes {
    let empty = ClientInfo::default();
    let push = MembershipPush {
        push: if membership.joined { "join" } else { "leave" },
        channel,
        client: ClientView::new(membership.client.as_ref().unwrap_or(&empty)),
    };
    // Serializing these plain structs into a String cannot fail.
    serde_json::to_string(&push).unwrap_or_default().into()
}

/// `{"push":"unsubscribe","channel":…}`: the server unsubscribed the connection.
pub fn unsubscribe(channel: &str) -> Utf8Bytes {
    let mut out = String::from(r#"{"push":"unsubscribe","channel":"#);
    push_json_string(&mut out, channel);
    out.push('}');
    out.into()
}

/// `{"push":"subscribe","channel":…,"offset":…,"epoch":…}`: the server subscribed the
/// connection; publications follow from that position (`offset` and `epoch` only on
/// channels with history).
pub fn subscribe(channel: &str, position: &Position, history: bool) -> Utf8Bytes {
    let mut out = String::from(r#"{"push":"subscribe","channel":"#);
    push_json_string(&mut out, channel);
    if history {
        out.push_str(&format!(r#","offset":{},"epoch":"#, position.offset));
        push_json_string(&mut out, &position.epoch);
    }
    out.push('}');
    out.into()
}

/// `{"push":"disconnect","code":…,"reason":…,"reconnect":…}`, sent before the close frame.
pub fn disconnect(code: DisconnectCode) -> Option<Utf8Bytes> {
    Some(
        format!(
            r#"{{"push":"disconnect","code":{},"reason":"{}","reconnect":{}}}"#,
            code.code(),
            code.reason(),
            code.reconnect()
        )
        .into(),
    )
}

fn push_json_string(out: &mut String, s: &str) {
    // Serializing a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn publication_push_is_valid_json_with_the_payload_intact() {
        let p = Publication {
            channel: "chat:\"x\"".into(),
            offset: 7,
            epoch: "ab12".into(),
            data: Bytes::from_static("{\"text\":\"这是一条消息\"}".as_bytes()),
            ..Default::default()
        };
        let frame = publication(&p).unwrap();
        let value: Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(
            value,
            json!({"push":"publication","channel":"chat:\"x\"","offset":7,"epoch":"ab12",
                   "data":{"text":"这是一条消息"}})
        );
    }

    #[test]
    fn a_publication_says_who_sent_it_and_carries_its_attachments() {
        let p = Publication {
            channel: "/files".into(),
            offset: 3,
            epoch: "e".into(),
            data: Bytes::from_static(br#"{"event":"up","args":[{"_placeholder":true,"num":0}]}"#),
            attachments: vec![Bytes::from_static(&[1, 2, 3])],
            publisher: Some(ClientInfo {
                client: "c1".into(),
                user: "alice".into(),
                info: Bytes::from_static(br#"{"name":"Alice"}"#),
            }),
            ..Default::default()
        };
        let value: Value = serde_json::from_str(publication(&p).unwrap().as_str()).unwrap();
        assert_eq!(value["attachments"], json!(["AQID"]));
        assert_eq!(
            value["from"],
            json!({"client": "c1", "user": "alice", "info": {"name": "Alice"}})
        );
    }

    #[test]
    fn channels_without_history_carry_no_offset() {
        let p = Publication {
            channel: "typing".into(),
            data: Bytes::from_static(b"1"),
            ..Default::default()
        };
        let value: Value = serde_json::from_str(publication(&p).unwrap().as_str()).unwrap();
        assert_eq!(
            value,
            json!({"push":"publication","channel":"typing","data":1})
        );
    }

    #[test]
    fn disconnect_push_says_whether_to_reconnect() {
        let value: Value =
            serde_json::from_str(disconnect(DisconnectCode::SlowConsumer).unwrap().as_str())
                .unwrap();
        assert_eq!(value["code"], 3004);
        assert_eq!(value["reconnect"], true);
    }
}
