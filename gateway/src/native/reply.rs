//! Encoding replies: `{"id": N, "result": {...}}` or `{"id": N, "error": {...}}`.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use herald_core::codes::Refusal;
use herald_proto::bus::v1::{ClientInfo, HistoryPage, Position};
use serde::Serialize;
use serde_json::value::RawValue;

use super::push::{self, ClientView};

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
        let has_offsets = !position.epoch.is_empty();
        Self {
            offset: has_offsets.then_some(position.offset),
            epoch: has_offsets.then_some(position.epoch.as_str()),
        }
    }
}

#[derive(Serialize)]
struct HistoryItem<'a> {
    offset: u64,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct HistoryResult<'a> {
    publications: Vec<HistoryItem<'a>>,
    offset: u64,
    epoch: &'a str,
}

/// Result of `history`: the publications and the stream's current position.
pub fn history(id: u64, page: &HistoryPage) -> Utf8Bytes {
    let publications = page
        .publications
        .iter()
        .map(|p| HistoryItem {
            offset: p.offset,
            // Data was valid JSON when published; anything else is shown as null.
            data: serde_json::from_slice(&p.data).unwrap_or(RawValue::NULL),
        })
        .collect();
    let position = page.position.clone().unwrap_or_default();
    let result = HistoryResult {
        publications,
        offset: position.offset,
        epoch: &position.epoch,
    };
    ok(id, &result)
}
