//! Connection state recovery: the records routers keep of sockets, the missed
//! publications of a returning one, and the order they are replayed in.
//!
//! A socket's record (namespace, sid, and each channel with the position it joined at)
//! is saved when it connects and whenever it joins or leaves a room, refreshed while its
//! connection lives, and kept for the recovery window once the connection is lost. A
//! client that comes back with the socket's `pid` takes the record (once); the offset
//! string it echoes says how far it got in each channel (see [`super::offsets`]).

use std::sync::Arc;
use std::time::Duration;

use herald_proto::bus::v1::session_request::Action;
use herald_proto::bus::v1::{Mark, Position, Publication, SessionRequest, SocketRecord};
use serde_json::Value;

use super::offsets::{self, Marks};
use herald_core::upstream::Upstream;

/// What a client may send with CONNECT: its `auth` object (a token, and `recovery: true`
/// to ask for connection state recovery), to which a client resuming a socket adds the
/// socket's `pid` and the last offset string it received.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectData {
    pub token: GivenToken,
    pub recovery: bool,
    pub pid: Option<String>,
    pub offset: Option<String>,
}

impl ConnectData {
    /// Reads the CONNECT payload, each key on its own: a key of another type is left out
    /// (the Dart client sends `"offset": null` before its first event), and anything but
    /// an object is an empty one.
    pub fn parse(data: Option<&serde_json::value::RawValue>) -> Self {
        let Some(Ok(Value::Object(auth))) = data.map(|raw| serde_json::from_str(raw.get())) else {
            return Self::default();
        };
        let text = |key: &str| auth.get(key).and_then(Value::as_str).map(str::to_string);
        let token = match auth.get("token") {
            None | Some(Value::Null) => GivenToken::None,
            Some(Value::String(token)) => GivenToken::Text(token.clone()),
            Some(_) => GivenToken::Unusable,
        };
        Self {
            token,
            recovery: auth.get("recovery") == Some(&Value::Bool(true)),
            pid: text("pid"),
            offset: text("offset"),
        }
    }
}

/// The `token` of a CONNECT `auth`. A token that is there is checked, never ignored: one
/// that is not a string is refused, not taken for none.
#[derive(Debug, Default, PartialEq, Eq)]
pub enum GivenToken {
    /// No `token` key, or `null`.
    #[default]
    None,
    Text(String),
    /// Anything but a string or `null`.
    Unusable,
}

/// A socket's recovery state on its gateway.
pub struct Recovery {
    /// The private id the client comes back with.
    pub pid: Arc<str>,
    pub marks: Arc<Marks>,
}

impl Recovery {
    pub fn new(pid: Arc<str>) -> Self {
        Self {
            pid,
            marks: Arc::default(),
        }
    }
}

/// Requests about records, on behalf of one connection (the holder). A view, made when
/// needed: a connection keeps only its holder id.
pub struct Records<'a> {
    upstream: &'a Upstream,
    holder: &'a str,
    window: Duration,
}

impl<'a> Records<'a> {
    pub fn new(upstream: &'a Upstream, holder: &'a str, window: Duration) -> Self {
        Self {
            upstream,
            holder,
            window,
        }
    }

    /// How long a record lives without a refresh while its connection is up: longer than
    /// the window by the refresh period, so that a record whose gateway dies between two
    /// refreshes still lasts the whole window.
    fn live_ttl(&self) -> Duration {
        self.window + self.refresh_period()
    }

    /// How often a live connection refreshes its records.
    pub fn refresh_period(&self) -> Duration {
        self.window / 2
    }

    fn request(&self, pid: &str, ttl: Duration, action: Action) -> SessionRequest {
        SessionRequest {
            pid: pid.to_string(),
            holder: self.holder.to_string(),
            ttl_ms: ttl.as_millis() as u64,
            action: Some(action),
        }
    }

    /// Sends a request in the background: a lost one costs at most one recovery.
    fn send(&self, request: SessionRequest) {
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            if let Err(refusal) = upstream.session(request).await {
                tracing::debug!(%refusal, "Socket.IO session record not updated");
            }
        });
    }

    /// Saves a socket's record; waits for the router, so that a client told it joined can
    /// recover with that room.
    pub async fn save(&self, pid: &str, record: SocketRecord) {
        let request = self.request(pid, self.live_ttl(), Action::Save(record));
        if let Err(refusal) = self.upstream.session(request).await {
            tracing::debug!(%refusal, "Socket.IO session record not saved");
        }
    }

    /// Amends a socket's record: `channel`'s mark becomes `mark`, or goes with `None`.
    /// Waits for the router, like [`Self::save`].
    pub async fn amend(&self, pid: &str, channel: &str, mark: Option<Mark>) {
        let action = match mark {
            Some(mark) => Action::Mark(mark),
            None => Action::Unmark(channel.to_string()),
        };
        let request = self.request(pid, self.live_ttl(), action);
        if let Err(refusal) = self.upstream.session(request).await {
            tracing::debug!(%refusal, "Socket.IO session record not amended");
        }
    }

    /// Keeps the records of a live connection.
    pub fn refresh(&self, pid: &str) {
        self.send(self.request(pid, self.live_ttl(), Action::Touch(true)));
    }

    /// The connection is lost: the records last the window from now.
    pub fn keep(&self, pid: &str) {
        self.send(self.request(pid, self.window, Action::Touch(true)));
    }

    /// The socket left on purpose: nothing to recover.
    pub fn drop(&self, pid: &str) {
        self.send(self.request(pid, Duration::ZERO, Action::Drop(true)));
    }

    /// Takes the record of `pid`, if there is one: a record is good for one recovery.
    pub async fn take(&self, pid: &str) -> Option<SocketRecord> {
        let request = self.request(pid, Duration::ZERO, Action::Take(true));
        match self.upstream.session(request).await {
            Ok(record) => record,
            Err(refusal) => {
                tracing::debug!(%refusal, "Socket.IO session record not read");
                None
            }
        }
    }
}

/// A socket's record.
pub fn record(
    namespace: &str,
    sid: &str,
    user: &str,
    joined: &[(String, Position)],
) -> SocketRecord {
    SocketRecord {
        namespace: namespace.to_string(),
        sid: sid.to_string(),
        user: user.to_string(),
        marks: joined
            .iter()
            .map(|(channel, position)| Mark {
                channel: channel.clone(),
                joined: Some(position.clone()),
            })
            .collect(),
    }
}

/// Where a returning socket stands in each channel of its record: the offset string's
/// position where it has one for the channel, else where the socket joined it. Never
/// before it joined: the offset string is the client's word, and recovery gives back
/// what the socket missed, not the channel's history.
pub fn starting_points(record: &SocketRecord, offset: Option<&str>) -> Vec<(String, Position)> {
    let echoed = offsets::parse(offset.unwrap_or_default());
    record
        .marks
        .iter()
        .map(|mark| {
            let joined = mark.joined.clone().unwrap_or_default();
            let key = offsets::key(&mark.channel, &joined.epoch);
            let from = match echoed.iter().find(|(k, _)| *k == key) {
                Some(&(_, offset)) => Position {
                    offset: offset.max(joined.offset),
                    epoch: joined.epoch,
                },
                None => joined,
            };
            (mark.channel.clone(), from)
        })
        .collect()
}

/// Merges channels' publications into one replay by acceptance time, keeping each
/// channel's own order (routers' clocks may disagree a little; offsets may not).
pub fn merge(mut lists: Vec<Vec<Publication>>) -> Vec<Publication> {
    let total = lists.iter().map(Vec::len).sum();
    let mut merged = Vec::with_capacity(total);
    for list in &mut lists {
        list.reverse();
    }
    loop {
        let earliest = lists
            .iter()
            .enumerate()
            .filter_map(|(i, list)| list.last().map(|p| (p.accepted_at_us, i)))
            .min();
        let Some((_, i)) = earliest else { break };
        merged.extend(lists[i].pop());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(channel: &str, offset: u64, accepted_at_us: u64) -> Publication {
        Publication {
            channel: channel.into(),
            offset,
            accepted_at_us,
            ..Default::default()
        }
    }

    #[test]
    fn a_replay_interleaves_channels_by_time_but_keeps_each_channels_order() {
        let a = vec![publication("a", 1, 10), publication("a", 2, 30)];
        // A router with a slow clock stamped b's second publication before its first.
        let b = vec![publication("b", 1, 20), publication("b", 2, 5)];
        let order: Vec<_> = merge(vec![a, b])
            .iter()
            .map(|p| (p.channel.clone(), p.offset))
            .collect();
        assert_eq!(
            order,
            [
                ("a".into(), 1),
                ("b".into(), 1),
                ("b".into(), 2),
                ("a".into(), 2)
            ]
        );
    }

    #[test]
    fn a_returning_socket_starts_where_its_offset_says_or_where_it_joined() {
        let at = |offset, epoch: &str| Position {
            offset,
            epoch: epoch.into(),
        };
        let joined = vec![
            ("/chat".to_string(), at(3, "e")),
            ("/chat:lobby".to_string(), at(7, "f")),
        ];
        let record = record("/chat", "sid", "alice", &joined);
        let offset = format!("{:08x}:9", offsets::key("/chat", "e"));
        assert_eq!(
            starting_points(&record, Some(&offset)),
            [
                ("/chat".to_string(), at(9, "e")),
                ("/chat:lobby".to_string(), at(7, "f"))
            ]
        );
        assert_eq!(starting_points(&record, None), joined);
        // A forged offset before the join gives nothing from before the join.
        let forged = format!("{:08x}:0", offsets::key("/chat", "e"));
        assert_eq!(starting_points(&record, Some(&forged)), joined);
    }

    #[test]
    fn connect_data_is_read_key_by_key() {
        let parse = |json: &str| {
            let raw = serde_json::value::RawValue::from_string(json.into()).unwrap();
            ConnectData::parse(Some(&raw))
        };
        assert_eq!(
            parse(r#"{"token":"t","recovery":true,"pid":"p","offset":"o","extra":1}"#),
            ConnectData {
                token: GivenToken::Text("t".into()),
                recovery: true,
                pid: Some("p".into()),
                offset: Some("o".into()),
            }
        );
        // The Dart client's reconnect before any event, and a recovery flag that is not
        // `true`.
        assert_eq!(
            parse(r#"{"token":"t","pid":"p","offset":null,"recovery":"yes"}"#),
            ConnectData {
                token: GivenToken::Text("t".into()),
                pid: Some("p".into()),
                ..Default::default()
            }
        );
        for (auth, token) in [
            (r#"{"token":null}"#, GivenToken::None),
            (r#"{"token":123}"#, GivenToken::Unusable),
            (r#"{"token":{"a":1}}"#, GivenToken::Unusable),
            (r#"{"token":""}"#, GivenToken::Text(String::new())),
        ] {
            assert_eq!(parse(auth).token, token, "{auth}");
        }
        assert_eq!(parse("[1]"), ConnectData::default());
        assert_eq!(ConnectData::parse(None), ConnectData::default());
    }
}
