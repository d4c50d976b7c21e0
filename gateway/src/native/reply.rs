//! Encoding replies: `{"id": N, "result": {...}}` or `{"id": N, "error": {...}}`.

use std::collections::BTreeMap;
use std::fmt::Write;

use axum::extract::ws::Utf8Bytes;
use herald_core::codes::Refusal;
use herald_proto::bus::v1::{ClientInfo, HistoryPage, Position};
use serde::Serialize;
use serde_json::value::RawValue;

use super::push::{self, ClientView};
use crate::sync::wire::ConflictView;

#[derive(Serialize)]
struct Ok<'a, T> {
    id: u64,
    result: &'a T,
}

#[derive(Serialize)]
struct Failed<'a> {
    id: u64,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u32,
    message: &'a str,
    temporary: bool,
}

/// A successful reply with `result`.
pub fn ok(id: u64, result: &impl Serialize) -> Utf8Bytes {
    // Serializing these plain structs into a String cannot fail.
    serde_json::to_string(&Ok { id, result })
        .unwrap_or_default()
        .into()
}

/// A successful reply with an empty result.
pub fn empty(id: u64) -> Utf8Bytes {
    format!(r#"{{"id":{id},"result":{{}}}}"#).into()
}

pub fn error(id: u64, refusal: &Refusal) -> Utf8Bytes {
    let body = Failed {
        id,
        error: ErrorBody {
            code: refusal.code.code(),
            message: &refusal.message,
            temporary: refusal.code.temporary(),
        },
    };
    serde_json::to_string(&body).unwrap_or_default().into()
}

/// A refused conditional `sync_patch`: the error, with where the document is and the
/// document itself, to rebase on.
pub fn conflict(id: u64, refusal: &Refusal, conflict: &ConflictView<'_>) -> Utf8Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        id: u64,
        error: ConflictError<'a>,
    }
    #[derive(Serialize)]
    struct ConflictError<'a> {
        #[serde(flatten)]
        error: ErrorBody<'a>,
        #[serde(flatten)]
        conflict: &'a ConflictView<'a>,
    }
    let body = Body {
        id,
        error: ConflictError {
            error: ErrorBody {
                code: refusal.code.code(),
                message: &refusal.message,
                temporary: refusal.code.temporary(),
            },
            conflict,
        },
    };
    serde_json::to_string(&body).unwrap_or_default().into()
}

/// Result of `rpc`: the backend's answer.
#[derive(Serialize)]
pub struct RpcResult<'a> {
    pub data: &'a RawValue,
}

/// Result of `sync_patch`: the patch's revision.
#[derive(Serialize)]
pub struct PatchResult<'a> {
    pub rev: u64,
    pub epoch: &'a str,
    /// The idempotency key had been seen: nothing was applied again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Serialize)]
pub struct ConnectResult<'a> {
    pub client: &'a str,
    pub version: &'a str,
    /// The user id of the token; absent for anonymous clients.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user: &'a str,
    /// Seconds until the token must be refreshed; absent when it does not expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    /// The user's personal channel, which the connection is subscribed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal: Option<&'a str>,
}

/// Result of `refresh`.
#[derive(Serialize)]
pub struct RefreshResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// Result of `subscribe`: where the channel stands, and with `recover` whether
/// everything missed was delivered.
#[derive(Serialize)]
pub struct SubscribeResult<'a> {
    #[serde(flatten)]
    pub position: PositionResult<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// Result of `presence`: every client on the channel, by client id.
pub fn presence(id: u64, clients: &[ClientInfo]) -> Utf8Bytes {
    #[derive(Serialize)]
    struct PresenceResult<'a> {
        presence: BTreeMap<&'a str, ClientView<'a>>,
    }
    let presence = push::presence_map(clients);
    ok(id, &PresenceResult { presence })
}

/// Result of `presence_stats`.
#[derive(Serialize)]
pub struct PresenceStatsResult {
    pub num_clients: u32,
    pub num_users: u32,
}

/// Result of `subscribe` and `publish`: where the channel's stream stands. Channels without
/// history have no offsets, so the fields are left out.
#[derive(Serialize)]
pub struct PositionResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
}

impl<'a> PositionResult<'a> {
    pub fn new(position: &'a Position) -> Self {
        Self::of(position, !position.epoch.is_empty())
    }

    /// The position of a channel with or without `history`. A channel with history that
    /// has no stream yet is at offset 0 of the empty epoch, which a client recovers from
    /// like any other position.
    pub fn of(position: &'a Position, history: bool) -> Self {
        Self {
            offset: history.then_some(position.offset),
            epoch: history.then_some(position.epoch.as_str()),
        }
    }
}

/// Result of `history`: the publications, each with its offset, when it was accepted
/// (`time`, Unix milliseconds), its data and attachments and who sent it (`from`), then the
/// stream's current position, and `truncated` when the page was cut short to fit the bus.
pub fn history(id: u64, page: &HistoryPage) -> Utf8Bytes {
    let size: usize = page.publications.iter().map(|p| 96 + p.data.len()).sum();
    let mut out = String::with_capacity(64 + size);
    let _ = write!(out, r#"{{"id":{id},"result":{{"publications":["#);
    for (i, p) in page.publications.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let time = p.accepted_at_us / 1000;
        let _ = write!(out, r#"{{"offset":{},"time":{time}"#, p.offset);
        // Data was valid JSON when published; anything else is shown as null.
        let data = std::str::from_utf8(&p.data)
            .ok()
            .filter(|data| serde_json::from_str::<&RawValue>(data).is_ok())
            .unwrap_or("null");
        push::push_payload(&mut out, data, &p.attachments, p.publisher.as_ref());
        out.push('}');
    }
    let position = page.position.clone().unwrap_or_default();
    let _ = write!(out, r#"],"offset":{},"epoch":"#, position.offset);
    out.push_str(&serde_json::to_string(&position.epoch).unwrap_or_default());
    if page.truncated {
        out.push_str(r#","truncated":true"#);
    }
    out.push_str("}}");
    out.into()
}
