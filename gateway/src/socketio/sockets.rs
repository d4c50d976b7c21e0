//! The Socket.IO sockets of one connection: one per namespace the client connected to,
//! with its token, its rooms, its events and their acks.
//!
//! Each socket is subscribed to its namespace's channel, and to its user's personal
//! channel; `join` and `leave` subscribe it to room channels (see [`super::channels`]). An
//! event becomes a publication on the namespace channel, `to(room, …)` one on the room
//! channel, and the hub delivers it to every other socket, on every gateway. Every channel
//! a socket uses is checked against the channel rules with the socket's own token.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_core::rules::Action;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::binary::Complete;
use super::documents::Opening;
use super::packet::{Packet, PacketType};
use super::recovery::ConnectData;
use super::reserved::{self, DISCONNECT_EVENT};
use super::reserved::{HistoryOptions, SyncOptions};
use super::socket::{Ack, Conn, Socket, accepted, raw};
use super::{event, random_id};
use crate::batch::Batch;
use crate::clients::Command;
use crate::context::Context;
use crate::hooks::Handshake;
use crate::hub::{ClientId, Joined, Start};
use crate::metrics::{self, SOCKETIO};
use crate::outbound::Outbound;
use crate::sync;
use herald_core::envelope;
use herald_core::publish::{self, Limit, Prepared, Publish};

/// What an event asks for, checked.
enum Request {
    Publish(Prepared),
    Join(String),
    Leave(String),
    Refresh(String),
    Presence { channel: String, stats: bool },
    History(HistoryOptions),
    Sync(SyncOptions),
    Unsync(String),
    SyncGet(String),
    Patch(sync::Patch),
    Rpc { method: String, data: String },
}

pub struct Sockets {
    conn: Conn,
    sockets: ByNamespace,
    /// A document subscribed to by the event being answered (boxed: rare, and every
    /// connection holds the place).
    opening: Option<Box<Opening>>,
}

/// A connection's sockets, one per namespace. A list, not a map: a connection has one
/// socket or a few (at most `socketio.max_namespaces`), where a map would allocate four
/// slots and a key for the first.
#[derive(Default)]
struct ByNamespace(Vec<Socket>);

impl ByNamespace {
    fn get(&self, namespace: &str) -> Option<&Socket> {
        self.0.iter().find(|s| *s.namespace == *namespace)
    }

    fn get_mut(&mut self, namespace: &str) -> Option<&mut Socket> {
        self.0.iter_mut().find(|s| *s.namespace == *namespace)
    }

    /// Adds `socket`, in place of the one of its namespace.
    fn insert(&mut self, socket: Socket) {
        self.remove(&socket.namespace);
        if self.0.capacity() == 0 {
            // Most connections have one socket: one slot, not a vector's four.
            self.0.reserve_exact(1);
        }
        self.0.push(socket);
    }

    fn remove(&mut self, namespace: &str) -> Option<Socket> {
        let index = self.0.iter().position(|s| *s.namespace == *namespace)?;
        Some(self.0.swap_remove(index))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn values(&self) -> impl Iterator<Item = &Socket> {
        self.0.iter()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Socket> {
        self.0.iter_mut()
    }
}

impl Sockets {
    pub fn new(ctx: Arc<Context>, id: ClientId, outbound: Outbound, handshake: Handshake) -> Self {
        Self {
            conn: Conn {
                ctx,
                id,
                outbound,
                holder: random_id::<9>().into(),
                handshake,
            },
            sockets: ByNamespace::default(),
            opening: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// The connection the sockets share: its context, id and outbound queue.
    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// How often [`Self::refresh`] must run, when recovery is on.
    pub fn refresh_period(&self) -> Option<std::time::Duration> {
        self.conn
            .ctx
            .socketio
            .recovery()
            .then(|| self.conn.records().refresh_period())
    }

    /// Keeps the recovery records of this live connection.
    pub fn refresh(&self) {
        for recovery in self.sockets.values().filter_map(|s| s.recovery.as_ref()) {
            self.conn.records().refresh(&recovery.pid);
        }
    }

    /// When the first socket's token runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sockets
            .values()
            .filter_map(|s| s.access.expires())
            .min()
    }

    /// When the first socket admitted by the connect hook is due for the refresh hook.
    pub fn next_renewal(&self) -> Option<Instant> {
        self.sockets
            .values()
            .filter_map(|s| s.access.renewal())
            .min()
    }

    /// Asks the refresh hook to extend the sockets that are due.
    pub async fn renew(&mut self) {
        let now = Instant::now();
        let hooks = &self.conn.ctx.hooks;
        for socket in self.sockets.values_mut() {
            if socket.access.renewal().is_some_and(|at| at <= now) {
                let access = &mut socket.access;
                access
                    .renew(hooks, &socket.sid, SOCKETIO, &socket.namespace)
                    .await;
            }
        }
    }

    /// Ends the sockets whose token ran out without a refresh: each gets a
    /// `herald:disconnect` event with code 3006, then a DISCONNECT packet.
    pub fn expire(&mut self) {
        let expired: Vec<Arc<str>> = self
            .sockets
            .values()
            .filter(|socket| socket.access.expired())
            .map(|socket| socket.namespace.clone())
            .collect();
        for namespace in expired {
            self.kick(&namespace, DisconnectCode::TokenExpired);
        }
    }

    /// Ends the socket of `namespace` from the server's side: a `herald:disconnect` event
    /// with `code`, then a DISCONNECT packet (the client does not reconnect by itself).
    fn kick(&mut self, namespace: &str, code: DisconnectCode) {
        let reason = json!({
            "code": code.code(), "reason": code.reason(), "reconnect": code.reconnect(),
        });
        let array = json!([DISCONNECT_EVENT, reason]).to_string();
        self.conn
            .outbound
            .send(Utf8Bytes::from(event::packet_text(namespace, &array)));
        self.conn
            .send_packet(&Packet::new(PacketType::Disconnect, namespace, None));
        self.disconnect(namespace);
    }

    /// A command of the server API about sockets of this connection.
    pub async fn on_command(&mut self, command: Command) {
        match command {
            Command::Disconnect { user, client } => {
                let chosen: Vec<Arc<str>> = self
                    .sockets
                    .values()
                    .filter(|s| (!user.is_empty() && s.access.user() == user) || *s.sid == client)
                    .map(|s| s.namespace.clone())
                    .collect();
                for namespace in chosen {
                    self.kick(&namespace, DisconnectCode::Disconnected);
                }
            }
            Command::Subscribe { user, channel } => {
                for socket in self.sockets.values_mut() {
                    if socket.access.user() == user {
                        self.conn.enlist(socket, &channel).await;
                    }
                }
            }
            Command::Unsubscribe { user, channel } => {
                for socket in self.sockets.values_mut() {
                    if socket.access.user() == user {
                        self.conn.revoke(socket, &channel).await;
                    }
                }
            }
        }
    }

    /// Handles packets that arrived together. Consecutive events that publish on channels
    /// with history travel to the routers as one batch, in order, and are acked in order:
    /// one round trip for many events.
    pub async fn on_packets(&mut self, packets: Vec<Complete>) {
        let mut batch = Batch::new(&self.conn.ctx.upstream);
        for complete in packets {
            let packet = complete.packet;
            if !matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent) {
                self.conn.publish_batch(&mut batch).await;
                self.on_control(packet).await;
                continue;
            }
            let read = match self.read(&packet, &complete.attachments) {
                Ok(Request::Publish(prepared))
                    if self.conn.ctx.hooks.publish_applies(prepared.channel()) =>
                {
                    // Events before this one need not wait for the backend.
                    self.conn.publish_batch(&mut batch).await;
                    let namespace = &packet.namespace;
                    self.conn
                        .ask_publish_hook(prepared, namespace)
                        .await
                        .map(Request::Publish)
                }
                read => read,
            };
            match read {
                Ok(Request::Publish(Prepared::Routed(request))) => {
                    if !batch.fits(&request) {
                        self.conn.publish_batch(&mut batch).await;
                    }
                    batch.push((packet.namespace, packet.id), request);
                }
                read => {
                    self.conn.publish_batch(&mut batch).await;
                    let outcome = match read {
                        Ok(request) => self.perform(&packet.namespace, request).await,
                        Err(refusal) => Err(refusal),
                    };
                    self.conn.answer(&packet.namespace, packet.id, outcome);
                    if let Some(opening) = self.opening.take() {
                        opening.open(packet.id.is_some());
                    }
                }
            }
        }
        self.conn.publish_batch(&mut batch).await;
    }

    async fn on_control(&mut self, packet: Packet) {
        match packet.kind {
            PacketType::Connect => {
                self.connect(&packet.namespace, packet.data.as_deref())
                    .await
            }
            PacketType::Disconnect => self.disconnect(&packet.namespace),
            // The server never asks for acknowledgements, so there is nothing to match.
            _ => {}
        }
    }

    async fn connect(&mut self, namespace: &str, auth: Option<&RawValue>) {
        if let Some(socket) = self.sockets.get(namespace) {
            return self.conn.reply_connect(socket);
        }
        if self.conn.refuse_namespace(namespace) {
            return;
        }
        let data = ConnectData::parse(auth);
        let sid: Arc<str> = random_id::<15>().into();
        let most = self.conn.ctx.socketio.max_namespaces;
        let admitted = match self.sockets.len() >= most {
            true => Err(Refusal::new(
                ErrorCode::LimitExceeded,
                format!("at most {most} namespaces per connection"),
            )),
            false => self.conn.admit(namespace, &sid, auth, &data).await,
        };
        let outcome = match admitted {
            Err(refusal) => Err(refusal),
            Ok(access) => {
                let recovers = self.conn.ctx.socketio.recovers(namespace, data.recovery);
                let pid = data.pid.as_deref().filter(|_| recovers);
                let resumed = match pid {
                    Some(pid) => {
                        let resumed = self
                            .conn
                            .resume(namespace, pid, data.offset.as_deref(), access)
                            .await;
                        if resumed.is_err() {
                            // Channels resumed one by one count themselves; a socket that
                            // cannot be resumed at all counts here.
                            metrics::recovered(SOCKETIO, false);
                        }
                        resumed
                    }
                    None => Err(access),
                };
                match resumed {
                    Ok(socket) => Ok(socket),
                    Err(access) => {
                        let conn = &self.conn;
                        conn.join_namespace(namespace, sid, access, recovers).await
                    }
                }
            }
        };
        match outcome {
            Ok(socket) => {
                let clients = &self.conn.ctx.clients;
                clients.add(self.conn.id, &socket.sid, socket.access.user());
                self.sockets.insert(socket);
            }
            Err(refusal) => {
                let data =
                    json!({ "message": refusal.message, "data": { "code": refusal.code.code() } });
                let packet = Packet::new(PacketType::ConnectError, namespace, raw(&data));
                self.conn.send_packet(&packet);
            }
        }
    }

    fn disconnect(&mut self, namespace: &str) {
        if let Some(socket) = self.sockets.remove(namespace) {
            let clients = &self.conn.ctx.clients;
            clients.remove(self.conn.id, &socket.sid, socket.access.user());
            self.conn.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                self.conn.records().drop(&recovery.pid);
            }
        }
    }

    /// The connection ended. `recoverable`: it was lost (not left on purpose), so its
    /// sockets' records are kept for the recovery window.
    pub fn leave_all(&mut self, recoverable: bool) {
        for socket in std::mem::take(&mut self.sockets).0 {
            let clients = &self.conn.ctx.clients;
            clients.remove(self.conn.id, &socket.sid, socket.access.user());
            self.conn.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                match recoverable {
                    true => self.conn.records().keep(&recovery.pid),
                    false => self.conn.records().drop(&recovery.pid),
                }
            }
        }
    }

    /// Reads and checks what an event of a connected socket asks for; a publish comes
    /// checked against the socket's permissions and rate limit, and prepared.
    fn read(&mut self, packet: &Packet, attachments: &[Bytes]) -> Result<Request, Refusal> {
        let Some(socket) = self.sockets.get_mut(&packet.namespace) else {
            return Err(Refusal::new(
                ErrorCode::NotConnected,
                "not connected to this namespace",
            ));
        };
        let (name, args) = packet
            .event()
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let request = match reserved::parse(name, args)? {
            reserved::Request::Emit { room, event, args } => {
                let channel = socket.channel(room.as_deref());
                let ctx = &self.conn.ctx;
                let rules = socket.access.authorize_publish(&ctx.channels, &channel)?;
                let data = envelope::encode(&event, &args);
                envelope::check_attachments(&data, attachments.len())?;
                let publish = Publish {
                    channel,
                    data: data.into(),
                    attachments: attachments.to_vec(),
                    publisher: Some(socket.access.client_info(&socket.sid)),
                    idempotency_key: None,
                };
                let limit = Limit::socketio(&ctx.socketio);
                let bus_limit = ctx.upstream.bus().max_payload();
                let prepared = publish::prepare(publish, limit, bus_limit, rules.has_history())?;
                Request::Publish(prepared)
            }
            reserved::Request::Join(room) => Request::Join(socket.channel(Some(&room))),
            reserved::Request::Leave(room) => Request::Leave(socket.channel(Some(&room))),
            reserved::Request::Refresh(token) => Request::Refresh(token),
            reserved::Request::Presence { room, stats } => Request::Presence {
                channel: socket.channel(room.as_deref()),
                stats,
            },
            reserved::Request::History(options) => Request::History(options),
            reserved::Request::Sync(options) => Request::Sync(options),
            reserved::Request::Unsync(channel) => Request::Unsync(channel),
            reserved::Request::SyncGet(channel) => Request::SyncGet(channel),
            reserved::Request::Patch(options) => Request::Patch(options.into()),
            reserved::Request::Rpc { method, data } => Request::Rpc {
                method,
                data: data.map_or("null", RawValue::get).to_string(),
            },
        };
        Ok(request)
    }

    /// Does what an event asks; the result is what its ack says.
    async fn perform(&mut self, namespace: &str, request: Request) -> Result<Ack, Refusal> {
        let conn = &self.conn;
        let Some(socket) = self.sockets.get_mut(namespace) else {
            return Err(Refusal::new(
                ErrorCode::NotConnected,
                "not connected to this namespace",
            ));
        };
        let answer = match request {
            Request::History(options) => return conn.history(socket, options).await,
            Request::Sync(options) => {
                let (ack, opening) = conn.sync(socket, options).await?;
                self.opening = Some(Box::new(opening));
                return Ok(ack);
            }
            Request::Unsync(channel) => return conn.unsync(socket, &channel),
            Request::SyncGet(channel) => return conn.sync_get(socket, &channel).await,
            Request::Patch(patch) => return conn.patch(socket, patch).await,
            Request::Rpc { method, data } => {
                let answer = conn
                    .ctx
                    .hooks
                    .rpc(socket.hook_client(), &method, &data)
                    .await?;
                let answer: serde_json::Value = serde_json::from_str(&answer)
                    .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
                Ok(json!({ "ok": true, "data": answer }))
            }
            Request::Publish(prepared) => {
                let started = std::time::Instant::now();
                let sent = publish::send(&conn.ctx.upstream, prepared).await;
                metrics::published(SOCKETIO, started, 1);
                Ok(accepted(&sent?))
            }
            Request::Join(channel) => {
                let ctx = &conn.ctx;
                socket
                    .access
                    .authorize(&ctx.channels, &channel, Action::Subscribe)?;
                let most = ctx.socketio.max_rooms;
                if socket.is_in(&channel) {
                    return Ok(Ack::from(json!({ "ok": true })));
                }
                if socket.rooms() + socket.documents.len() >= most {
                    let message = format!("at most {most} rooms per socket");
                    return Err(Refusal::new(ErrorCode::LimitExceeded, message));
                }
                let info = ctx
                    .hooks
                    .subscribe(&channel, || socket.hook_client())
                    .await?;
                match conn.subscribe(socket, &channel, Start::Now).await {
                    Ok(Joined::At(position) | Joined::Behind(position)) => {
                        conn.track_as(socket, &channel, info);
                        socket.joined(channel.clone(), position);
                        conn.amend(socket, &channel).await;
                    }
                    Err(refusal) if refusal.code == ErrorCode::AlreadySubscribed => {}
                    Err(refusal) => return Err(refusal),
                }
                Ok(json!({ "ok": true }))
            }
            Request::Leave(channel) => {
                if socket.left(&channel) {
                    conn.ctx.hub.unsubscribe(&channel, socket.id);
                    conn.track(socket, &channel, false);
                    conn.amend(socket, &channel).await;
                }
                Ok(json!({ "ok": true }))
            }
            Request::Refresh(token) => {
                socket.access.refresh(&conn.ctx.auth, &token)?;
                let expires_in = socket.access.identity().expires_in();
                // What the new token no longer allows ends, with `herald:unsubscribe`.
                let channels = &conn.ctx.channels;
                let revoked: Vec<String> = socket
                    .joined
                    .iter()
                    .map(|(channel, _)| channel)
                    .chain(socket.documents.keys())
                    .filter(|c| {
                        socket
                            .access
                            .authorize(channels, c, Action::Subscribe)
                            .is_err()
                    })
                    .cloned()
                    .collect();
                for channel in revoked {
                    conn.revoke(socket, &channel).await;
                }
                Ok(json!({ "ok": true, "expires_in": expires_in }))
            }
            Request::Presence { channel, stats } => conn.presence(socket, channel, stats).await,
        };
        answer.map(Ack::from)
    }
}
