//! Parsing client commands: `{"id": 1, "method": "publish", "params": {...}}`.
//!
//! A frame that is not a JSON object with a numeric `id` is a protocol violation: there is
//! no id to answer, so the connection is closed. Everything else that is wrong with a
//! command (unknown method, missing or malformed params) is answered with an error and the
//! connection stays open.

use std::borrow::Cow;

use herald_core::codes::{ErrorCode, Refusal};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::sync::wire::{PatchOptions, SyncOptions};

/// The frame cannot be answered; the connection is closed with this reason.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ProtocolViolation(pub String);

#[derive(Deserialize)]
struct Envelope<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectParams {
    /// Connection token (JWT); required unless `auth.anonymous` is on (or the connect
    /// hook admits the client).
    pub token: Option<String>,
    /// Anything for the connect hook, JSON.
    pub data: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcParams<'a> {
    /// The backend's method.
    pub method: String,
    /// Its argument, any JSON.
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelParams {
    pub channel: String,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    pub channel: String,
    /// Asks for the publications after `offset` of `epoch`, missed while away.
    #[serde(default)]
    pub recover: bool,
    pub offset: Option<u64>,
    pub epoch: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RefreshParams {
    pub token: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishParams<'a> {
    pub channel: String,
    /// Any JSON value, kept as the client wrote it.
    #[serde(borrow)]
    pub data: &'a RawValue,
    pub idempotency_key: Option<String>,
    /// Binary attachments, base64, for a Socket.IO binary event in `data`.
    #[serde(default)]
    pub attachments: Vec<String>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    pub channel: String,
    pub since: Option<u64>,
    pub limit: Option<u32>,
    #[serde(default)]
    pub reverse: bool,
}

#[derive(Debug)]
pub enum Command<'a> {
    Connect(ConnectParams),
    Subscribe(SubscribeParams),
    Unsubscribe(ChannelParams),
    Publish(PublishParams<'a>),
    History(HistoryParams),
    Presence(ChannelParams),
    PresenceStats(ChannelParams),
    Refresh(RefreshParams),
    SyncSubscribe(SyncOptions),
    SyncUnsubscribe(ChannelParams),
    SyncGet(ChannelParams),
    SyncPatch(PatchOptions<'a>),
    Rpc(RpcParams<'a>),
    Ping,
}

/// A command with an id; the command itself may be refused.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub id: u64,
    pub command: Result<Command<'a>, Refusal>,
}

fn params<'a, T: Deserialize<'a>>(method: &str, raw: Option<&'a RawValue>) -> Result<T, Refusal> {
    let raw = raw.ok_or_else(|| {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("{method}: params are missing"),
        )
    })?;
    serde_json::from_str(raw.get())
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("{method}: {e}")))
}

fn optional_params<T: DeserializeOwned + Default>(
    method: &str,
    raw: Option<&RawValue>,
) -> Result<T, Refusal> {
    match raw {
        None => Ok(T::default()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("{method}: {e}"))),
    }
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Parsed<'_>, ProtocolViolation> {
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|e| ProtocolViolation(format!("frame is not a JSON command: {e}")))?;
    let id = envelope
        .id
        .filter(|&id| id > 0)
        .ok_or_else(|| ProtocolViolation("command without a positive integer id".into()))?;
    let Some(method) = envelope.method else {
        let refusal = Refusal::new(ErrorCode::BadRequest, "method is missing");
        return Ok(Parsed {
            id,
            command: Err(refusal),
        });
    };
    let raw = envelope.params;
    let command = match method.as_ref() {
        "connect" => optional_params("connect", raw).map(Command::Connect),
        "subscribe" => params("subscribe", raw).map(Command::Subscribe),
        "unsubscribe" => params("unsubscribe", raw).map(Command::Unsubscribe),
        "publish" => params("publish", raw).map(Command::Publish),
        "history" => params("history", raw).map(Command::History),
        "presence" => params("presence", raw).map(Command::Presence),
        "presence_stats" => params("presence_stats", raw).map(Command::PresenceStats),
        "refresh" => params("refresh", raw).map(Command::Refresh),
        "sync_subscribe" => params("sync_subscribe", raw).map(Command::SyncSubscribe),
        "sync_unsubscribe" => params("sync_unsubscribe", raw).map(Command::SyncUnsubscribe),
        "sync_get" => params("sync_get", raw).map(Command::SyncGet),
        "sync_patch" => params("sync_patch", raw).map(Command::SyncPatch),
        "rpc" => params("rpc", raw).map(Command::Rpc),
        "ping" => Ok(Command::Ping),
        other => Err(Refusal::new(
            ErrorCode::UnknownCommand,
            format!("unknown method {other:?}"),
        )),
    };
    Ok(Parsed { id, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (u64, ErrorCode, String) {
        let parsed = parse(text).unwrap();
        let refusal = parsed.command.unwrap_err();
        (parsed.id, refusal.code, refusal.message)
    }

    #[test]
    fn parses_every_command() {
        let p = parse(r#"{"id":7,"method":"publish","params":{"channel":"c","data":{"a":[1,"两"]},"idempotency_key":"k"}}"#).unwrap();
        assert_eq!(p.id, 7);
        let Ok(Command::Publish(publish)) = p.command else {
            panic!("not a publish")
        };
        assert_eq!(publish.channel, "c");
        assert_eq!(publish.data.get(), r#"{"a":[1,"两"]}"#);
        assert_eq!(publish.idempotency_key.as_deref(), Some("k"));

        let p = parse(r#"{"id":1,"method":"connect"}"#).unwrap();
        assert!(matches!(
            p.command,
            Ok(Command::Connect(ConnectParams { token: None, .. }))
        ));
        let p = parse(r#"{"id":2,"method":"history","params":{"channel":"c","since":3}}"#).unwrap();
        let Ok(Command::History(h)) = p.command else {
            panic!("not history")
        };
        assert_eq!((h.since, h.limit, h.reverse), (Some(3), None, false));
        assert!(matches!(
            parse(r#"{"id":3,"method":"ping"}"#).unwrap().command,
            Ok(Command::Ping)
        ));
        let p = parse(
            r#"{"id":4,"method":"subscribe","params":{"channel":"c","recover":true,"offset":5,"epoch":"e"}}"#,
        )
        .unwrap();
        let Ok(Command::Subscribe(s)) = p.command else {
            panic!("not subscribe")
        };
        assert!(s.recover);
        assert_eq!((s.offset, s.epoch.as_deref()), (Some(5), Some("e")));
        let p = parse(
            r#"{"id":4,"method":"sync_patch","params":{"channel":"d","patch":{"a":null},"base_rev":3}}"#,
        )
        .unwrap();
        let Ok(Command::SyncPatch(patch)) = p.command else {
            panic!("not sync_patch")
        };
        assert_eq!(
            (patch.patch.get(), patch.base_rev),
            (r#"{"a":null}"#, Some(3))
        );
        let p = parse(
            r#"{"id":4,"method":"sync_subscribe","params":{"channel":"d","rev":2,"epoch":"e"}}"#,
        )
        .unwrap();
        let Ok(Command::SyncSubscribe(s)) = p.command else {
            panic!("not sync_subscribe")
        };
        assert_eq!((s.rev, s.epoch.as_deref()), (Some(2), Some("e")));
        let p = parse(r#"{"id":5,"method":"refresh","params":{"token":"t"}}"#).unwrap();
        assert!(matches!(p.command, Ok(Command::Refresh(RefreshParams { token })) if token == "t"));
        for method in ["presence", "presence_stats"] {
            let text = format!(r#"{{"id":6,"method":"{method}","params":{{"channel":"c"}}}}"#);
            let p = parse(&text).unwrap();
            assert!(matches!(
                p.command,
                Ok(Command::Presence(_) | Command::PresenceStats(_))
            ));
        }
    }

    #[test]
    fn malformed_commands_are_refused_with_their_id() {
        assert_eq!(
            refused(r#"{"id":4,"method":"fly"}"#).1,
            ErrorCode::UnknownCommand
        );
        let (id, code, message) = refused(r#"{"id":5,"method":"subscribe"}"#);
        assert_eq!((id, code), (5, ErrorCode::BadRequest));
        assert!(message.contains("params are missing"), "{message}");
        let (_, code, message) = refused(r#"{"id":6,"method":"publish","params":{"channel":"c"}}"#);
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(message.contains("missing field `data`"), "{message}");
        let (_, _, message) = refused(r#"{"id":6,"method":"subscribe","params":{"chanel":"c"}}"#);
        assert!(message.contains("unknown field `chanel`"), "{message}");
        assert_eq!(refused(r#"{"id":8}"#).1, ErrorCode::BadRequest);
        assert_eq!(
            refused(r#"{"id":9,"method":"history","params":{"channel":"c","limit":-1}}"#).1,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn frames_without_an_id_are_protocol_violations() {
        for text in [
            "not json",
            "[1,2]",
            r#"{"method":"ping"}"#,
            r#"{"id":0,"method":"ping"}"#,
            r#"{"id":"x"}"#,
            "",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
