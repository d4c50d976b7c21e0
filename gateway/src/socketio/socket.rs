//! One Socket.IO socket (a namespace connection), and what the sockets of one connection
//! share: the session context, the outbound queue, the recovery records. The socket-level steps
//! live here: admitting a client, subscribing a socket to its channels, telling presence,
//! answering acks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::rules::Action;
use herald_proto::bus::v1::{Mark, Position};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::packet::{Packet, PacketType};
use super::random_id;
use super::recovery::{self, ConnectData, GivenToken, Records, Recovery};
use super::reserved::{SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT};
use super::subscriber::SocketSubscriber;
use super::{channels, event};
use crate::access::Access;
use crate::batch::Batch;
use crate::context::Context;
use crate::hooks::{self, Attempt, Handshake};
use crate::hub::{ClientId, Joined, Start, SubscriberId};
use crate::metrics::{self, SOCKETIO};
use crate::native::push;
use crate::outbound::{Frame, Outbound};
use crate::render::Format;
use crate::sync::SyncSubscriber;
use herald_core::publish::{self, Limit, Prepared};

/// One namespace connection.
pub(super) struct Socket {
    pub(super) sid: Arc<str>,
    pub(super) namespace: Arc<str>,
    /// The socket's own key in the hub: each socket of a connection subscribes on its own.
    pub(super) id: SubscriberId,
    pub(super) subscriber: Arc<SocketSubscriber>,
    pub(super) access: Access,
    /// With connection state recovery on.
    pub(super) recovery: Option<Recovery>,
    /// The socket's channels (its namespace's first, then its rooms'), each with the
    /// position it joined at: what its recovery record holds.
    pub(super) joined: Vec<(String, Position)>,
    /// Amendments sent since the record was last saved whole.
    amendments: AtomicUsize,
    /// The sync documents it is subscribed to (not kept for recovery: a client says which
    /// revision it has when it subscribes again).
    pub(super) documents: Documents,
}

/// A socket's sync documents by channel: a list, not a map, since a socket has few (at
/// most `socketio.max_rooms` with its rooms) and most have none, where a map's empty
/// state alone is twice a list's.
#[derive(Default)]
pub(super) struct Documents(Vec<(String, Arc<SyncSubscriber>)>);

impl Documents {
    pub(super) fn contains_key(&self, channel: &str) -> bool {
        self.0.iter().any(|(held, _)| held == channel)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the document of `channel`, in place of the one it had.
    pub(super) fn insert(&mut self, channel: String, document: Arc<SyncSubscriber>) {
        self.remove(&channel);
        self.0.push((channel, document));
    }

    pub(super) fn remove(&mut self, channel: &str) -> Option<Arc<SyncSubscriber>> {
        let index = self.0.iter().position(|(held, _)| held == channel)?;
        Some(self.0.swap_remove(index).1)
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Arc<SyncSubscriber>> {
        self.0.iter().map(|(_, document)| document)
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(channel, _)| channel)
    }
}

impl Socket {
    /// A socket of `namespace` with id `sid` on `conn`'s connection, in no channel yet.
    pub(super) fn new(
        conn: &Conn,
        sid: Arc<str>,
        namespace: &str,
        access: Access,
        recovery: Option<Recovery>,
    ) -> Self {
        let namespace: Arc<str> = namespace.into();
        let format = Format::SocketIo {
            namespace: namespace.clone(),
            sender: conn.ctx.socketio.sends_sender(&namespace),
        };
        let subscriber = SocketSubscriber::new(
            sid.clone(),
            format,
            conn.outbound.clone(),
            recovery.as_ref().map(|r| r.marks.clone()),
        );
        Self {
            sid,
            namespace,
            id: conn.ctx.next_id(),
            subscriber,
            access,
            recovery,
            joined: Vec::new(),
            amendments: AtomicUsize::new(0),
            documents: Documents::default(),
        }
    }

    pub(super) fn joined(&mut self, channel: String, position: Position) {
        if let Some(recovery) = &self.recovery {
            recovery.marks.start(&channel, &position);
        }
        self.joined.retain(|(c, _)| *c != channel);
        if self.joined.len() == self.joined.capacity() && self.joined.len() < 4 {
            // Most sockets are in a room or two: a slot each, not a vector's four.
            self.joined.reserve_exact(1);
        }
        self.joined.push((channel, position));
    }

    pub(super) fn left(&mut self, channel: &str) -> bool {
        if let Some(recovery) = &self.recovery {
            recovery.marks.remove(channel);
        }
        let before = self.joined.len();
        self.joined.retain(|(c, _)| c != channel);
        self.joined.len() != before
    }

    /// How many rooms the socket is in.
    pub(super) fn rooms(&self) -> usize {
        let namespace = &self.namespace;
        self.joined
            .iter()
            .filter(|(channel, _)| channels::room_of(channel, namespace).is_some())
            .count()
    }

    pub(super) fn is_in(&self, channel: &str) -> bool {
        self.joined.iter().any(|(c, _)| c == channel)
    }

    /// The socket as the hooks describe it.
    pub(super) fn hook_client(&self) -> herald_proto::backend::v1::Client {
        let info = self.access.client_info(&self.sid);
        hooks::client(&info, SOCKETIO, &self.namespace)
    }

    /// The channel of `room`, or of the namespace.
    pub(super) fn channel(&self, room: Option<&str>) -> String {
        match room {
            Some(room) => channels::room_channel(&self.namespace, room),
            None => channels::namespace_channel(&self.namespace),
        }
    }
}

/// What every socket of the connection shares.
pub(super) struct Conn {
    pub(super) ctx: Arc<Context>,
    pub(super) id: ClientId,
    pub(super) outbound: Outbound,
    /// Who holds this connection's recovery records (see [`Self::records`]).
    pub(super) holder: Box<str>,
    /// What the request that opened the connection said, for the connect hook.
    pub(super) handshake: Handshake,
}

impl Conn {
    /// Requests about this connection's recovery records.
    pub(super) fn records(&self) -> Records<'_> {
        Records::new(
            &self.ctx.upstream,
            &self.holder,
            self.ctx.socketio.recovery_window,
        )
    }

    /// Sends a Socket.IO packet inside an Engine.IO message.
    pub(super) fn send_packet(&self, packet: &Packet) {
        self.outbound
            .send(Utf8Bytes::from(format!("4{}", packet.encode())));
    }

    /// Who may connect to `namespace` as socket `sid`; `auth` is the CONNECT payload, and
    /// `data` what it says. (Namespaces outside `socketio.namespaces` are refused before,
    /// see [`Self::refuse_namespace`].)
    pub(super) async fn admit(
        &self,
        namespace: &str,
        sid: &str,
        auth: Option<&RawValue>,
        data: &ConnectData,
    ) -> Result<Access, Refusal> {
        let token = match &data.token {
            GivenToken::None => None,
            GivenToken::Text(token) => Some(token.as_str()),
            GivenToken::Unusable => {
                let message = "auth.token must be a string";
                return Err(Refusal::new(ErrorCode::Unauthorized, message));
            }
        };
        if namespace.contains(':') {
            return Err(Refusal::new(
                ErrorCode::BadChannel,
                "a namespace name cannot contain ':'",
            ));
        }
        let attempt = Attempt {
            client: sid,
            transport: SOCKETIO,
            namespace,
            token,
            data: auth.map(RawValue::get),
            handshake: &self.handshake,
        };
        Access::admit(&self.ctx.auth, &self.ctx.hooks, &attempt).await
    }

    /// Refuses a CONNECT to a namespace outside `socketio.namespaces` with the reference
    /// server's exact packet, `44/ns,{"message":"Invalid namespace"}`, which clients and
    /// its protocol test suite match on. Returns whether it did.
    pub(super) fn refuse_namespace(&self, namespace: &str) -> bool {
        if self.ctx.socketio.allows(namespace) {
            return false;
        }
        let data = json!({ "message": "Invalid namespace" });
        let packet = Packet::new(PacketType::ConnectError, namespace, raw(&data));
        self.send_packet(&packet);
        true
    }

    /// A new socket `sid` of `namespace`, subscribed to the namespace's channel (if the
    /// subscribe hook agrees) and its user's personal channel, with connection state
    /// recovery if `recovers`; the client is told.
    pub(super) async fn join_namespace(
        &self,
        namespace: &str,
        sid: Arc<str>,
        access: Access,
        recovers: bool,
    ) -> Result<Socket, Refusal> {
        let channel = channels::namespace_channel(namespace);
        access.authorize(&self.ctx.channels, &channel, Action::Subscribe)?;
        let about = || hooks::client(&access.client_info(&sid), SOCKETIO, namespace);
        let info = self.ctx.hooks.subscribe(&channel, about).await?;
        let recovery = recovers.then(|| Recovery::new(random_id::<15>().into()));
        let mut socket = Socket::new(self, sid, namespace, access, recovery);
        let personal = self.ctx.channels.personal_channel(socket.access.user());
        let infos = [info, None];
        for (channel, info) in std::iter::once(channel).chain(personal).zip(infos) {
            let position = match self.subscribe(&socket, &channel, Start::Now).await {
                Ok(Joined::At(position) | Joined::Behind(position)) => position,
                Err(refusal) => {
                    self.unsubscribe_socket(&socket);
                    return Err(refusal);
                }
            };
            self.track_as(&socket, &channel, info);
            socket.joined(channel, position);
        }
        self.save(&socket).await;
        self.reply_connect(&socket);
        Ok(socket)
    }

    pub(super) fn reply_connect(&self, socket: &Socket) {
        let data = match &socket.recovery {
            Some(recovery) => json!({ "sid": socket.sid.as_ref(), "pid": recovery.pid.as_ref() }),
            None => json!({ "sid": socket.sid.as_ref() }),
        };
        let packet = Packet::new(PacketType::Connect, &socket.namespace, raw(&data));
        self.send_packet(&packet);
    }

    pub(super) async fn save(&self, socket: &Socket) {
        if let Some(recovery) = &socket.recovery {
            socket.amendments.store(0, Ordering::Relaxed);
            let user = socket.access.user();
            let record = recovery::record(&socket.namespace, &socket.sid, user, &socket.joined);
            self.records().save(&recovery.pid, record).await;
        }
    }

    /// Tells the socket's record that it joined or left `channel`: one mark, so that a
    /// join costs the same however many rooms the socket is in. Once the amendments since
    /// the last whole save outnumber the socket's channels (and 16), the record is saved
    /// whole instead, so what the router keeps stays within twice the socket's channels
    /// plus 16, and whole saves cost O(1) per join on average.
    pub(super) async fn amend(&self, socket: &Socket, channel: &str) {
        let Some(recovery) = &socket.recovery else {
            return;
        };
        let amendments = socket.amendments.fetch_add(1, Ordering::Relaxed) + 1;
        if amendments > socket.joined.len().max(16) {
            return self.save(socket).await;
        }
        let mark = socket
            .joined
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(channel, position)| Mark {
                channel: channel.clone(),
                joined: Some(position.clone()),
            });
        self.records().amend(&recovery.pid, channel, mark).await;
    }

    pub(super) async fn subscribe(
        &self,
        socket: &Socket,
        channel: &str,
        start: Start<'_>,
    ) -> Result<Joined, Refusal> {
        publish::valid_channel(channel)?;
        let history = self.ctx.channels.rules_for(channel).has_history();
        self.ctx
            .hub
            .subscribe_from(
                channel,
                socket.id,
                socket.subscriber.clone(),
                history,
                start,
            )
            .await
    }

    /// Tells presence that `socket` joined or left `channel`, if the channel keeps it.
    pub(super) fn track(&self, socket: &Socket, channel: &str, joined: bool) {
        match joined {
            true => self.track_as(socket, channel, None),
            false if self.ctx.channels.rules_for(channel).tracks_presence() => {
                self.ctx.presence.leave(channel, &socket.sid);
            }
            false => {}
        }
    }

    /// Tells presence that `socket` joined `channel`, showing `info` there instead of its
    /// own when the subscribe hook gave one.
    pub(super) fn track_as(&self, socket: &Socket, channel: &str, info: Option<String>) {
        if !self.ctx.channels.rules_for(channel).tracks_presence() {
            return;
        }
        let mut client = socket.access.client_info(&socket.sid);
        if let Some(info) = info {
            client.info = Bytes::from(info);
        }
        self.ctx.presence.join(channel, client);
    }

    /// Takes `socket` out of `channel` from the server's side, and tells its client with
    /// a `herald:unsubscribe` event `{channel, room}`.
    pub(super) async fn revoke(&self, socket: &mut Socket, channel: &str) {
        if let Some(document) = socket.documents.remove(channel) {
            self.ctx.hub.unsubscribe(channel, socket.id);
            document.stop();
        } else if socket.left(channel) {
            self.ctx.hub.unsubscribe(channel, socket.id);
            self.track(socket, channel, false);
            self.amend(socket, channel).await;
        } else {
            return;
        }
        let body = json!({
            "channel": channel,
            "room": channels::room_of(channel, &socket.namespace),
        });
        let array = json!([UNSUBSCRIBE_EVENT, body]).to_string();
        let text = event::packet_text(&socket.namespace, &array);
        self.outbound.send(Utf8Bytes::from(text));
    }

    /// Puts `socket` in `channel` from the server's side, when the channel is its
    /// namespace's or a room of it, and tells its client with a `herald:subscribe` event
    /// `{channel, room}`. A socket already in it, or in `socketio.max_rooms` rooms, is
    /// left as it is.
    pub(super) async fn enlist(&self, socket: &mut Socket, channel: &str) {
        let room = channels::room_of(channel, &socket.namespace);
        let ours = room.is_some() || channel == channels::namespace_channel(&socket.namespace);
        let full = socket.rooms() + socket.documents.len() >= self.ctx.socketio.max_rooms;
        if !ours || socket.is_in(channel) || (room.is_some() && full) {
            return;
        }
        match self.subscribe(socket, channel, Start::Now).await {
            Ok(Joined::At(position) | Joined::Behind(position)) => {
                self.track(socket, channel, true);
                socket.joined(channel.to_string(), position);
                self.amend(socket, channel).await;
            }
            Err(refusal) => {
                tracing::debug!(channel, %refusal, "server-side subscribe not done");
                return;
            }
        }
        let body = json!({ "channel": channel, "room": room });
        let array = json!([SUBSCRIBE_EVENT, body]).to_string();
        let text = event::packet_text(&socket.namespace, &array);
        self.outbound.send(Utf8Bytes::from(text));
    }

    pub(super) fn unsubscribe_socket(&self, socket: &Socket) {
        for (channel, _) in &socket.joined {
            self.ctx.hub.unsubscribe(channel, socket.id);
            self.track(socket, channel, false);
        }
        for document in socket.documents.values() {
            self.ctx.hub.unsubscribe(document.channel(), socket.id);
            document.stop();
        }
    }

    /// Who is on `channel`: `{ok, presence: {sid: {client, user?, info?}}}`, or with
    /// `stats` `{ok, num_clients, num_users}`.
    pub(super) async fn presence(
        &self,
        socket: &Socket,
        channel: String,
        stats: bool,
    ) -> Result<Value, Refusal> {
        let ctx = &self.ctx;
        socket
            .access
            .authorize(&ctx.channels, &channel, Action::ReadPresence)?;
        if stats {
            let stats = ctx.upstream.presence_stats(&channel).await?;
            return Ok(json!({
                "ok": true, "num_clients": stats.clients, "num_users": stats.users,
            }));
        }
        let clients = ctx.upstream.presence(&channel).await?;
        Ok(json!({ "ok": true, "presence": push::presence_map(&clients) }))
    }

    /// Asks the publish hook about a checked event of a socket of `namespace`: it comes
    /// back as the backend had it, checked again against `socketio.max_payload`.
    pub(super) async fn ask_publish_hook(
        &self,
        prepared: Prepared,
        namespace: &str,
    ) -> Result<Prepared, Refusal> {
        let limit = Limit::socketio(&self.ctx.socketio);
        let bus_limit = self.ctx.upstream.bus().max_payload();
        let rules = self.ctx.channels.rules_for(prepared.channel());
        let hooks = &self.ctx.hooks;
        hooks
            .publish(prepared, SOCKETIO, namespace, limit, bus_limit, &rules)
            .await
    }

    /// Sends the batched events to a router and acks each, in order.
    pub(super) async fn publish_batch(&self, batch: &mut Batch<(String, Option<u64>)>) {
        for ((namespace, id), outcome) in batch.send(&self.ctx.publisher, SOCKETIO).await {
            let outcome = outcome.map(|position| Ack::from(accepted(&position)));
            self.answer(&namespace, id, outcome);
        }
    }

    /// Acks an event that asked for it with `outcome` (`{ok: true, …}` or
    /// `{ok: false, error: {code, message}}`); an ack with attachments is a binary ack.
    pub(super) fn answer(&self, namespace: &str, id: Option<u64>, outcome: Result<Ack, Refusal>) {
        match &outcome {
            Ok(Ack {
                refused: Some(refusal),
                ..
            }) => metrics::replied::<()>(SOCKETIO, &Err(refusal.clone())),
            counted => metrics::replied(SOCKETIO, counted),
        }
        let Some(id) = id else {
            if let Err(refusal) = outcome {
                tracing::debug!(%refusal, "event refused, and no ack was asked for");
            }
            return;
        };
        let ack = outcome.unwrap_or_else(|refusal| {
            Ack::from(json!({
                "ok": false,
                "error": { "code": refusal.code.code(), "message": refusal.message },
            }))
        });
        let kind = match ack.attachments.is_empty() {
            true => PacketType::Ack,
            false => PacketType::BinaryAck,
        };
        let mut packet = Packet::new(kind, namespace, raw(&json!([ack.value])));
        packet.id = Some(id);
        packet.attachments = ack.attachments.len();
        self.send_packet(&packet);
        for attachment in ack.attachments {
            self.outbound.send(Frame::Binary(attachment));
        }
    }
}

/// What an ack answers with: its one argument, and the binary attachments its
/// placeholders point at.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Ack {
    pub(super) value: Value,
    pub(super) attachments: Vec<Bytes>,
    /// The refusal the value tells of, when it says more than `{code, message}` (a sync
    /// conflict, with the document): counted as that refusal.
    pub(super) refused: Option<Refusal>,
}

impl From<Value> for Ack {
    fn from(value: Value) -> Self {
        Self {
            value,
            attachments: Vec::new(),
            refused: None,
        }
    }
}

/// The ack of an accepted publish: `{ok: true}`, with the offset on channels with history.
pub(super) fn accepted(position: &Position) -> Value {
    match position.epoch.is_empty() {
        true => json!({ "ok": true }),
        false => json!({ "ok": true, "offset": position.offset }),
    }
}

pub(super) fn raw(value: &Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}
