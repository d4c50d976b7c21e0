//! Events with a meaning of their own: what a socket's event asks Herald to do.
//!
//! | event | arguments | does |
//! | --- | --- | --- |
//! | `join` | room | enters a room of the namespace |
//! | `leave` | room | leaves it |
//! | `to` | room, event, ...args | sends `event(...args)` to the room |
//! | `herald:refresh` | token | replaces the socket's token by a fresh one |
//! | `herald:presence` | room? | who is in the room (or the namespace) |
//! | `herald:presence_stats` | room? | how many clients and users are |
//! | `herald:history` | `{room?, limit?, since?, reverse?}`? | the room's (or the namespace's) recent events |
//! | `herald:sync` | `{channel, rev?, epoch?}` | subscribes to a sync document: the ack holds its state |
//! | `herald:unsync` | `{channel}` | ends that subscription |
//! | `herald:sync_get` | `{channel}` | a sync document's snapshot, without subscribing |
//! | `herald:patch` | `{channel, patch, base_rev?, base_epoch?, idempotency_key?}` | patches a sync document |
//! | `herald:rpc` | method, data? | calls a method of the app's backend: the ack holds its answer |
//!
//! The server sends `herald:change` (a sync document changed), `herald:join`, `herald:leave` (presence changes),
//! `herald:unsubscribe` (a backend took the socket out of a room), `herald:subscribe` (a
//! backend put it in one) and `herald:disconnect`
//! (why the server ends a socket). Every other name starting with
//! `herald:`, and the names Socket.IO itself reserves, cannot be emitted.

use herald_core::codes::{ErrorCode, Refusal};
use herald_core::envelope;
use serde::Deserialize;
use serde_json::value::RawValue;

pub use crate::sync::wire::{PatchOptions, SyncOptions};

pub const REFRESH_EVENT: &str = "herald:refresh";
pub const PRESENCE_EVENT: &str = "herald:presence";
pub const PRESENCE_STATS_EVENT: &str = "herald:presence_stats";
pub const HISTORY_EVENT: &str = "herald:history";
pub const JOIN_EVENT: &str = "herald:join";
pub const LEAVE_EVENT: &str = "herald:leave";
pub const DISCONNECT_EVENT: &str = "herald:disconnect";
pub const UNSUBSCRIBE_EVENT: &str = "herald:unsubscribe";
pub const SUBSCRIBE_EVENT: &str = "herald:subscribe";
pub const SYNC_EVENT: &str = "herald:sync";
pub const UNSYNC_EVENT: &str = "herald:unsync";
pub const SYNC_GET_EVENT: &str = "herald:sync_get";
pub const PATCH_EVENT: &str = "herald:patch";
pub const RPC_EVENT: &str = "herald:rpc";

/// What one event asks for.
#[derive(Debug)]
pub enum Request<'a> {
    Join(String),
    Leave(String),
    /// An event for the namespace (`room: None`) or a room.
    Emit {
        room: Option<String>,
        event: String,
        args: Vec<&'a RawValue>,
    },
    Refresh(String),
    /// Presence of the namespace (`room: None`) or a room; `stats`: only the counts.
    Presence {
        room: Option<String>,
        stats: bool,
    },
    History(HistoryOptions),
    Sync(SyncOptions),
    Unsync(String),
    SyncGet(String),
    Patch(PatchOptions<'a>),
    /// A method of the app's backend, and its argument (JSON).
    Rpc {
        method: String,
        data: Option<&'a RawValue>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelOnly {
    channel: String,
}

/// The one argument of a sync event, an object of the event's shape.
fn options<'a, T: Deserialize<'a>>(
    name: &str,
    shape: &str,
    args: &[&'a RawValue],
) -> Result<T, Refusal> {
    let arg = args
        .first()
        .ok_or_else(|| bad(format!("{name} takes {shape}")))?;
    serde_json::from_str(arg.get()).map_err(|e| bad(format!("{name} takes {shape}: {e}")))
}

/// What `herald:history` asks for: the namespace's (`room` absent) or a room's events,
/// paged as native `history` is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryOptions {
    pub room: Option<String>,
    /// Without it: the newest `limit` events. With it: those after it (before it with
    /// `reverse`).
    pub since: Option<u64>,
    pub limit: Option<u32>,
    /// Newest first.
    #[serde(default)]
    pub reverse: bool,
}

fn bad(message: impl Into<String>) -> Refusal {
    Refusal::new(ErrorCode::BadRequest, message)
}

/// Reads event `name` with `args` (the ack callback is not among them).
pub fn parse<'a>(name: String, args: Vec<&'a RawValue>) -> Result<Request<'a>, Refusal> {
    let request = match name.as_str() {
        "join" => Request::Join(room(&args)?),
        "leave" => Request::Leave(room(&args)?),
        "to" => {
            let room = room(&args)?;
            let (event, args) = args[1..]
                .split_first()
                .ok_or_else(|| bad("to(room, event, ...args) needs an event"))?;
            let event: String = serde_json::from_str(event.get())
                .map_err(|_| bad("the event name must be a string"))?;
            emit(Some(room), event, args.to_vec())?
        }
        REFRESH_EVENT => Request::Refresh(
            args.first()
                .and_then(|token| serde_json::from_str::<String>(token.get()).ok())
                .filter(|token| !token.is_empty())
                .ok_or_else(|| bad("herald:refresh(token) needs the token, a string"))?,
        ),
        HISTORY_EVENT => {
            let options = match args.first() {
                None => HistoryOptions::default(),
                Some(arg) if arg.get() == "null" => HistoryOptions::default(),
                Some(arg) => serde_json::from_str(arg.get()).map_err(|e| {
                    bad(format!(
                        "herald:history takes {{room?, limit?, since?, reverse?}}: {e}"
                    ))
                })?,
            };
            if options.room.as_deref() == Some("") {
                return Err(bad("the room must be a non-empty string"));
            }
            Request::History(options)
        }
        SYNC_EVENT => Request::Sync(options(&name, "{channel, rev?, epoch?}", &args)?),
        PATCH_EVENT => Request::Patch(options(
            &name,
            "{channel, patch, base_rev?, base_epoch?, idempotency_key?}",
            &args,
        )?),
        UNSYNC_EVENT | SYNC_GET_EVENT => {
            let ChannelOnly { channel } = options(&name, "{channel}", &args)?;
            match name.as_str() {
                UNSYNC_EVENT => Request::Unsync(channel),
                _ => Request::SyncGet(channel),
            }
        }
        RPC_EVENT => {
            let method = args
                .first()
                .and_then(|method| serde_json::from_str::<String>(method.get()).ok())
                .ok_or_else(|| bad("herald:rpc(method, data?) needs the method, a string"))?;
            Request::Rpc {
                method,
                data: args.get(1).copied(),
            }
        }
        PRESENCE_EVENT | PRESENCE_STATS_EVENT => Request::Presence {
            room: optional_room(&args)?,
            stats: name == PRESENCE_STATS_EVENT,
        },
        _ => emit(None, name, args)?,
    };
    Ok(request)
}

fn emit<'a>(
    room: Option<String>,
    event: String,
    args: Vec<&'a RawValue>,
) -> Result<Request<'a>, Refusal> {
    if envelope::is_reserved(&event) {
        return Err(bad(format!("{event:?} is a reserved event name")));
    }
    Ok(Request::Emit { room, event, args })
}

/// The room named by the first argument: a non-empty string.
fn room(args: &[&RawValue]) -> Result<String, Refusal> {
    args.first()
        .and_then(|room| serde_json::from_str::<String>(room.get()).ok())
        .filter(|room| !room.is_empty())
        .ok_or_else(|| bad("the room must be a non-empty string"))
}

/// A room as the first argument, or none (absent or `null`): the namespace.
fn optional_room(args: &[&RawValue]) -> Result<Option<String>, Refusal> {
    match args.first() {
        None => Ok(None),
        Some(arg) if arg.get() == "null" => Ok(None),
        Some(_) => room(args).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(name: &str, args: &[&str]) -> Result<String, Refusal> {
        let raws: Vec<Box<RawValue>> = args
            .iter()
            .map(|a| RawValue::from_string(a.to_string()).unwrap())
            .collect();
        let args = raws.iter().map(|a| a.as_ref()).collect();
        parse(name.to_string(), args).map(|r| format!("{r:?}"))
    }

    #[test]
    fn reads_every_request() {
        assert_eq!(parsed("join", &["\"a\""]).unwrap(), r#"Join("a")"#);
        assert_eq!(parsed("leave", &["\"a\""]).unwrap(), r#"Leave("a")"#);
        assert!(
            parsed("to", &["\"a\"", "\"m\"", "1"])
                .unwrap()
                .contains(r#"room: Some("a"), event: "m""#)
        );
        assert!(
            parsed("chat", &["1"])
                .unwrap()
                .contains(r#"room: None, event: "chat""#)
        );
        assert_eq!(
            parsed(REFRESH_EVENT, &["\"t\""]).unwrap(),
            r#"Refresh("t")"#
        );
        assert!(
            parsed(
                PATCH_EVENT,
                &[r#"{"channel":"doc:1","patch":{"a":1},"base_rev":2}"#]
            )
            .unwrap()
            .starts_with(r#"Patch(PatchOptions { channel: "doc:1""#)
        );
        assert_eq!(
            parsed(SYNC_GET_EVENT, &[r#"{"channel":"doc:1"}"#]).unwrap(),
            r#"SyncGet("doc:1")"#
        );
        assert_eq!(
            parsed(PRESENCE_EVENT, &[]).unwrap(),
            "Presence { room: None, stats: false }"
        );
        assert_eq!(
            parsed(PRESENCE_STATS_EVENT, &["\"r\""]).unwrap(),
            r#"Presence { room: Some("r"), stats: true }"#
        );
        assert_eq!(
            parsed(HISTORY_EVENT, &[]).unwrap(),
            format!("{:?}", Request::History(HistoryOptions::default()))
        );
        let options = HistoryOptions {
            room: Some("lobby".into()),
            since: Some(7),
            limit: Some(50),
            reverse: true,
        };
        assert_eq!(
            parsed(
                HISTORY_EVENT,
                &[r#"{"room":"lobby","since":7,"limit":50,"reverse":true}"#]
            )
            .unwrap(),
            format!("{:?}", Request::History(options))
        );
    }

    #[test]
    fn refuses_reserved_names_and_bad_arguments() {
        for (name, args) in [
            ("join", &[][..]),
            ("join", &["\"\""]),
            ("leave", &["3"]),
            ("to", &["\"a\""]),
            ("to", &["\"a\"", "7"]),
            ("to", &["\"a\"", "\"join\""]),
            ("disconnect", &[]),
            ("herald:join", &["{}"]),
            (REFRESH_EVENT, &[]),
            (PRESENCE_EVENT, &["5"]),
            (HISTORY_EVENT, &["\"lobby\""]),
            (HISTORY_EVENT, &[r#"{"room":""}"#]),
            (HISTORY_EVENT, &[r#"{"limit":-1}"#]),
            (HISTORY_EVENT, &[r#"{"offset":1}"#]),
            (SYNC_EVENT, &[]),
            (SYNC_EVENT, &["\"doc:1\""]),
            (PATCH_EVENT, &[r#"{"channel":"doc:1"}"#]),
            (UNSYNC_EVENT, &[r#"{"room":"x"}"#]),
        ] {
            let refusal = parsed(name, args).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadRequest, "{name} {args:?}");
        }
    }
}
