//! The Socket.IO sockets of one connection: one per namespace the client connected to,
//! with its token, its rooms, its events and their acks.
//!
//! Each socket is subscribed to its namespace's channel, and to its user's personal
//! channel; `join` and `leave` subscribe it to room channels (see [`super::channels`]). An
//! event becomes a publication on the namespace channel, `to(room, …)` one on the room
//! channel, and the hub delivers it to every other socket, on every gateway. Every channel
//! a socket uses is checked against the channel rules with the socket's own token.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_core::rules::Action;
use herald_proto::bus::v1::{Position, PresenceQuery, Publication, PublishRequest, presence_reply};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::binary::Complete;
use super::packet::{Packet, PacketType};
use super::recovery::{self, ConnectData, Records, Recovery};
use super::reserved::{self, DISCONNECT_EVENT};
use super::{channels, event, random_id};
use crate::access::Access;
use crate::catch_up::{self, Resumed, Returning};
use crate::gateway::Gateway;
use crate::hub::{ClientId, Joined, Protocol, Start};
use crate::native::push::ClientView;
use crate::outbound::Outbound;
use crate::publish::{self, Prepared};

/// Most event bytes in one publish batch, well under NATS' default 1 MiB message limit.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// What an event asks for, checked.
enum Request {
    Publish(Prepared),
    Join(String),
    Leave(String),
    Refresh(String),
    Presence { channel: String, stats: bool },
}

/// One namespace connection.
struct Socket {
    sid: Arc<str>,
    namespace: Arc<str>,
    access: Access,
    /// With connection state recovery on.
    recovery: Option<Recovery>,
    /// The socket's channels (its namespace's first, then its rooms'), each with the
    /// position it joined at: what its recovery record holds.
    joined: Vec<(String, Position)>,
}

impl Socket {
    fn protocol(&self) -> Protocol {
        Protocol::SocketIo {
            sid: self.sid.clone(),
            namespace: self.namespace.clone(),
            marks: self.recovery.as_ref().map(|r| r.marks.clone()),
        }
    }

    fn joined(&mut self, channel: String, position: Position) {
        if let Some(recovery) = &self.recovery {
            recovery.marks.start(&channel, &position);
        }
        self.joined.retain(|(c, _)| *c != channel);
        self.joined.push((channel, position));
    }

    fn left(&mut self, channel: &str) -> bool {
        if let Some(recovery) = &self.recovery {
            recovery.marks.remove(channel);
        }
        let before = self.joined.len();
        self.joined.retain(|(c, _)| c != channel);
        self.joined.len() != before
    }

    /// The channel of `room`, or of the namespace.
    fn channel(&self, room: Option<&str>) -> String {
        match room {
            Some(room) => channels::room_channel(&self.namespace, room),
            None => channels::namespace_channel(&self.namespace),
        }
    }
}

/// What every socket of the connection shares.
struct Conn {
    gateway: Arc<Gateway>,
    id: ClientId,
    outbound: Outbound,
    records: Records,
}

pub struct Sockets {
    conn: Conn,
    sockets: HashMap<String, Socket>,
}

impl Sockets {
    pub fn new(gateway: Arc<Gateway>, id: ClientId, outbound: Outbound) -> Self {
        let records = Records::new(
            gateway.upstream.clone(),
            random_id::<9>().into(),
            gateway.socketio.recovery_window,
        );
        Self {
            conn: Conn {
                gateway,
                id,
                outbound,
                records,
            },
            sockets: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// How often [`Self::refresh`] must run, when recovery is on.
    pub fn refresh_period(&self) -> Option<std::time::Duration> {
        let gateway = &self.conn.gateway;
        gateway
            .socketio
            .recovery()
            .then(|| self.conn.records.refresh_period())
    }

    /// Keeps the recovery records of this live connection.
    pub fn refresh(&self) {
        for recovery in self.sockets.values().filter_map(|s| s.recovery.as_ref()) {
            self.conn.records.refresh(&recovery.pid);
        }
    }

    /// When the first socket's token runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sockets
            .values()
            .filter_map(|s| s.access.expires())
            .min()
    }

    /// Ends the sockets whose token ran out without a refresh: each gets a
    /// `herald:disconnect` event with code 3006, then a DISCONNECT packet.
    pub fn expire(&mut self) {
        let expired: Vec<String> = self
            .sockets
            .iter()
            .filter(|(_, socket)| socket.access.expired())
            .map(|(namespace, _)| namespace.clone())
            .collect();
        for namespace in expired {
            let code = DisconnectCode::TokenExpired;
            let reason = json!({
                "code": code.code(), "reason": code.reason(), "reconnect": code.reconnect(),
            });
            let array = json!([DISCONNECT_EVENT, reason]).to_string();
            self.conn
                .outbound
                .send(Utf8Bytes::from(event::packet_text(&namespace, &array)));
            self.conn
                .send_packet(&Packet::new(PacketType::Disconnect, &namespace, None));
            self.disconnect(&namespace);
        }
    }

    /// Handles packets that arrived together. Consecutive events that publish on channels
    /// with history travel to the routers as one batch, in order, and are acked in order:
    /// one round trip for many events.
    pub async fn on_packets(&mut self, packets: Vec<Complete>) {
        let mut batch: Vec<(String, Option<u64>, PublishRequest)> = Vec::new();
        let mut bytes = 0;
        for complete in packets {
            let packet = complete.packet;
            if !matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent) {
                self.conn.publish_batch(std::mem::take(&mut batch)).await;
                self.on_control(packet).await;
                continue;
            }
            match self.read(&packet, &complete.attachments) {
                Ok(Request::Publish(Prepared::Routed(request))) => {
                    if bytes + request.data.len() > MAX_BATCH_BYTES {
                        self.conn.publish_batch(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                    bytes += request.data.len();
                    batch.push((packet.namespace, packet.id, request));
                }
                read => {
                    self.conn.publish_batch(std::mem::take(&mut batch)).await;
                    let outcome = match read {
                        Ok(request) => self.perform(&packet.namespace, request).await,
                        Err(refusal) => Err(refusal),
                    };
                    self.conn.answer(&packet.namespace, packet.id, outcome);
                }
            }
        }
        self.conn.publish_batch(batch).await;
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

    async fn connect(&mut self, namespace: &str, data: Option<&RawValue>) {
        if let Some(socket) = self.sockets.get(namespace) {
            return self.conn.reply_connect(socket);
        }
        let data = ConnectData::parse(data);
        let outcome = match self.conn.admit(namespace, &data) {
            Err(refusal) => Err(refusal),
            Ok(access) => {
                let pid = data
                    .pid
                    .as_deref()
                    .filter(|_| self.conn.gateway.socketio.recovery());
                let resumed = match pid {
                    Some(pid) => {
                        self.conn
                            .resume(namespace, pid, data.offset.as_deref(), access)
                            .await
                    }
                    None => Err(access),
                };
                match resumed {
                    Ok(socket) => Ok(socket),
                    Err(access) => self.conn.join_namespace(namespace, access).await,
                }
            }
        };
        match outcome {
            Ok(socket) => {
                self.sockets.insert(namespace.to_string(), socket);
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
            self.conn.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                self.conn.records.drop(&recovery.pid);
            }
        }
    }

    /// The connection ended. `recoverable`: it was lost (not left on purpose), so its
    /// sockets' records are kept for the recovery window.
    pub fn leave_all(&mut self, recoverable: bool) {
        for socket in std::mem::take(&mut self.sockets).into_values() {
            self.conn.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                match recoverable {
                    true => self.conn.records.keep(&recovery.pid),
                    false => self.conn.records.drop(&recovery.pid),
                }
            }
        }
    }

    /// Reads and checks what an event of a connected socket asks for; a publish comes
    /// checked against the socket's permissions and rate limit, and prepared.
    fn read(&mut self, packet: &Packet, attachments: &[Bytes]) -> Result<Request, Refusal> {
        let Some(socket) = self.sockets.get_mut(packet.namespace.as_str()) else {
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
                let gateway = &self.conn.gateway;
                let rules = socket
                    .access
                    .authorize_publish(&gateway.channels, &channel)?;
                let data = event::envelope(&event, &args, attachments);
                let prepared = publish::prepare(&rules, channel, &data, &socket.sid, None)?;
                Request::Publish(prepared)
            }
            reserved::Request::Join(room) => Request::Join(socket.channel(Some(&room))),
            reserved::Request::Leave(room) => Request::Leave(socket.channel(Some(&room))),
            reserved::Request::Refresh(token) => Request::Refresh(token),
            reserved::Request::Presence { room, stats } => Request::Presence {
                channel: socket.channel(room.as_deref()),
                stats,
            },
        };
        Ok(request)
    }

    /// Does what an event asks; the result is what its ack says.
    async fn perform(&mut self, namespace: &str, request: Request) -> Result<Value, Refusal> {
        let conn = &self.conn;
        let Some(socket) = self.sockets.get_mut(namespace) else {
            return Err(Refusal::new(
                ErrorCode::NotConnected,
                "not connected to this namespace",
            ));
        };
        match request {
            Request::Publish(prepared) => {
                let position = publish::send(&conn.gateway.upstream, prepared).await?;
                Ok(accepted(&position))
            }
            Request::Join(channel) => {
                let gateway = &conn.gateway;
                socket
                    .access
                    .authorize(&gateway.channels, &channel, Action::Subscribe)?;
                match conn.subscribe(socket, &channel, Start::Now).await {
                    Ok(Joined::At(position) | Joined::Behind(position)) => {
                        conn.track(socket, &channel, true);
                        socket.joined(channel, position);
                        conn.save(socket).await;
                    }
                    Err(refusal) if refusal.code == ErrorCode::AlreadySubscribed => {}
                    Err(refusal) => return Err(refusal),
                }
                Ok(json!({ "ok": true }))
            }
            Request::Leave(channel) => {
                if socket.left(&channel) {
                    conn.gateway.hub.unsubscribe(&channel, conn.id);
                    conn.track(socket, &channel, false);
                    conn.save(socket).await;
                }
                Ok(json!({ "ok": true }))
            }
            Request::Refresh(token) => {
                socket.access.refresh(&conn.gateway.auth, &token)?;
                let expires_in = socket.access.identity().expires_in();
                Ok(json!({ "ok": true, "expires_in": expires_in }))
            }
            Request::Presence { channel, stats } => conn.presence(socket, channel, stats).await,
        }
    }
}

impl Conn {
    /// Sends a Socket.IO packet inside an Engine.IO message.
    fn send_packet(&self, packet: &Packet) {
        self.outbound
            .send(Utf8Bytes::from(format!("4{}", packet.encode())));
    }

    /// Who may connect to `namespace`.
    fn admit(&self, namespace: &str, data: &ConnectData) -> Result<Access, Refusal> {
        let access = Access::admit(&self.gateway.auth, data.token.as_deref())?;
        if !self.gateway.socketio.allows(namespace) {
            // The reference server's words, which client code may match on.
            return Err(Refusal::new(
                ErrorCode::PermissionDenied,
                "Invalid namespace",
            ));
        }
        if namespace.contains(':') {
            return Err(Refusal::new(
                ErrorCode::BadChannel,
                "a namespace name cannot contain ':'",
            ));
        }
        Ok(access)
    }

    /// A new socket of `namespace`, subscribed to the namespace's channel and its user's
    /// personal channel; the client is told.
    async fn join_namespace(&self, namespace: &str, access: Access) -> Result<Socket, Refusal> {
        let channel = channels::namespace_channel(namespace);
        access.authorize(&self.gateway.channels, &channel, Action::Subscribe)?;
        let recovery = self
            .gateway
            .socketio
            .recovery()
            .then(|| Recovery::new(random_id::<15>().into()));
        let mut socket = Socket {
            sid: random_id::<15>().into(),
            namespace: namespace.into(),
            access,
            recovery,
            joined: Vec::new(),
        };
        let personal = self.gateway.channels.personal_channel(socket.access.user());
        for channel in std::iter::once(channel).chain(personal) {
            let position = match self.subscribe(&socket, &channel, Start::Now).await {
                Ok(Joined::At(position) | Joined::Behind(position)) => position,
                Err(refusal) => {
                    self.unsubscribe_socket(&socket);
                    return Err(refusal);
                }
            };
            self.track(&socket, &channel, true);
            socket.joined(channel, position);
        }
        self.save(&socket).await;
        self.reply_connect(&socket);
        Ok(socket)
    }

    fn reply_connect(&self, socket: &Socket) {
        let data = match &socket.recovery {
            Some(recovery) => json!({ "sid": socket.sid.as_ref(), "pid": recovery.pid.as_ref() }),
            None => json!({ "sid": socket.sid.as_ref() }),
        };
        let packet = Packet::new(PacketType::Connect, &socket.namespace, raw(&data));
        self.send_packet(&packet);
    }

    async fn save(&self, socket: &Socket) {
        if let Some(recovery) = &socket.recovery {
            let user = socket.access.user();
            let record = recovery::record(&socket.namespace, &socket.sid, user, &socket.joined);
            self.records.save(&recovery.pid, record).await;
        }
    }

    /// Resumes the socket the client had, if its record and every event it missed can
    /// still be had, and the client is the same user, still allowed in every channel:
    /// the same sid and pid, its rooms, then exactly the missed events, in order. Gives
    /// `access` back when not: the client gets a fresh socket.
    async fn resume(
        &self,
        namespace: &str,
        pid: &str,
        offset: Option<&str>,
        access: Access,
    ) -> Result<Socket, Access> {
        let Some(record) = self.records.take(pid).await else {
            return Err(access);
        };
        let channels = &self.gateway.channels;
        let allowed = record.marks.iter().all(|mark| {
            access
                .authorize(channels, &mark.channel, Action::Subscribe)
                .is_ok_and(|rules| rules.recovery)
        });
        if record.namespace != namespace
            || record.marks.is_empty()
            || record.user != access.user()
            || !allowed
        {
            return Err(access);
        }
        let starts = recovery::starting_points(&record, offset);
        let upstream = &self.gateway.upstream;
        let mut missed = Vec::with_capacity(starts.len());
        for (channel, from) in &starts {
            match catch_up::missed(upstream, channel, from).await {
                Some(publications) => missed.push(publications),
                None => return Err(access),
            }
        }
        let recovery = Recovery::new(pid.into());
        for (channel, from) in &starts {
            recovery.marks.set(channel, from);
        }
        let mut socket = Socket {
            sid: record.sid.as_str().into(),
            namespace: namespace.into(),
            access,
            recovery: Some(recovery),
            joined: Vec::new(),
        };
        for mark in record.marks {
            socket.joined(mark.channel, mark.joined.unwrap_or_default());
        }
        // The reply first, so that no client sees events of a socket it was refused.
        self.reply_connect(&socket);
        let mut last: Vec<Position> = starts.iter().map(|(_, from)| from.clone()).collect();
        for publication in recovery::merge(missed) {
            if let Some(i) = starts.iter().position(|(c, _)| *c == publication.channel) {
                last[i] = Position {
                    offset: publication.offset,
                    epoch: publication.epoch.clone(),
                };
            }
            self.replay(&socket, &publication);
        }
        for ((channel, _), from) in starts.iter().zip(last) {
            let returning = self.returning(&socket, channel);
            match returning
                .subscribe_after(channel, from, |p| self.replay(&socket, p))
                .await
            {
                Ok(Resumed::Recovered(_)) => {}
                Ok(Resumed::Lost(_)) => {
                    tracing::debug!(channel, "cannot catch up a resumed socket")
                }
                Err(refusal) => {
                    tracing::debug!(channel, %refusal, "a resumed socket lost a channel");
                    continue;
                }
            }
            self.track(&socket, channel, true);
        }
        self.save(&socket).await;
        Ok(socket)
    }

    fn returning<'a>(&'a self, socket: &Socket, channel: &str) -> Returning<'a> {
        Returning {
            hub: &self.gateway.hub,
            upstream: &self.gateway.upstream,
            client: self.id,
            outbound: &self.outbound,
            protocol: socket.protocol(),
            history: self.gateway.channels.rules_for(channel).has_history(),
        }
    }

    /// Sends a missed publication to a resumed socket, as it would have been sent live.
    fn replay(&self, socket: &Socket, publication: &Publication) {
        let position = Position {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        };
        let Some(recovery) = &socket.recovery else {
            return;
        };
        if *socket.sid == publication.origin {
            recovery.marks.set(&publication.channel, &position);
            return;
        }
        let Some(rendered) = event::render(publication, &socket.namespace) else {
            return;
        };
        let offset = recovery.marks.advance(&publication.channel, &position);
        for frame in rendered.frames_with_offset(&offset) {
            self.outbound.send(frame);
        }
    }

    async fn subscribe(
        &self,
        socket: &Socket,
        channel: &str,
        start: Start<'_>,
    ) -> Result<Joined, Refusal> {
        publish::valid_channel(channel)?;
        let history = self.gateway.channels.rules_for(channel).has_history();
        self.gateway
            .hub
            .subscribe_from(
                channel,
                self.id,
                self.outbound.clone(),
                socket.protocol(),
                history,
                start,
            )
            .await
    }

    /// Tells presence that `socket` joined or left `channel`, if the channel keeps it.
    fn track(&self, socket: &Socket, channel: &str, joined: bool) {
        if !self.gateway.channels.rules_for(channel).tracks_presence() {
            return;
        }
        let presence = &self.gateway.presence;
        match joined {
            true => presence.join(channel, socket.access.client_info(&socket.sid)),
            false => presence.leave(channel, &socket.sid),
        }
    }

    fn unsubscribe_socket(&self, socket: &Socket) {
        for (channel, _) in &socket.joined {
            self.gateway.hub.unsubscribe(channel, self.id);
            self.track(socket, channel, false);
        }
    }

    /// Who is on `channel`: `{ok, presence: {sid: {client, user?, info?}}}`, or with
    /// `stats` `{ok, num_clients, num_users}`.
    async fn presence(
        &self,
        socket: &Socket,
        channel: String,
        stats: bool,
    ) -> Result<Value, Refusal> {
        let gateway = &self.gateway;
        let rules = socket
            .access
            .authorize(&gateway.channels, &channel, Action::ReadPresence)?;
        if !rules.presence {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "the channel keeps no presence",
            ));
        }
        let query = PresenceQuery {
            channel,
            stats_only: stats,
        };
        match gateway.upstream.presence(query).await? {
            presence_reply::Result::Stats(stats) => Ok(json!({
                "ok": true, "num_clients": stats.clients, "num_users": stats.users,
            })),
            presence_reply::Result::List(list) => {
                let clients: serde_json::Map<String, Value> = list
                    .clients
                    .iter()
                    .map(|c| (c.client.clone(), json!(ClientView::new(c))))
                    .collect();
                Ok(json!({ "ok": true, "presence": clients }))
            }
            presence_reply::Result::Error(_) => {
                Err(Refusal::new(ErrorCode::Internal, "unexpected router reply"))
            }
        }
    }

    async fn publish_batch(&self, batch: Vec<(String, Option<u64>, PublishRequest)>) {
        if batch.is_empty() {
            return;
        }
        let (acks, requests): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|(namespace, id, request)| ((namespace, id), request))
            .unzip();
        let outcomes = match self.gateway.upstream.publish(requests).await {
            Ok(outcomes) => outcomes,
            Err(refusal) => vec![Err(refusal); acks.len()],
        };
        for ((namespace, id), outcome) in acks.into_iter().zip(outcomes) {
            self.answer(&namespace, id, outcome.map(|position| accepted(&position)));
        }
    }

    /// Acks an event that asked for it with `outcome` (`{ok: true, …}` or
    /// `{ok: false, error: {code, message}}`).
    fn answer(&self, namespace: &str, id: Option<u64>, outcome: Result<Value, Refusal>) {
        let Some(id) = id else {
            if let Err(refusal) = outcome {
                tracing::debug!(%refusal, "event refused, and no ack was asked for");
            }
            return;
        };
        let body = match outcome {
            Ok(body) => json!([body]),
            Err(refusal) => json!([{
                "ok": false,
                "error": { "code": refusal.code.code(), "message": refusal.message },
            }]),
        };
        let mut packet = Packet::new(PacketType::Ack, namespace, raw(&body));
        packet.id = Some(id);
        self.send_packet(&packet);
    }
}

/// The ack of an accepted publish: `{ok: true}`, with the offset on channels with history.
fn accepted(position: &Position) -> Value {
    match position.epoch.is_empty() {
        true => json!({ "ok": true }),
        false => json!({ "ok": true, "offset": position.offset }),
    }
}

fn raw(value: &Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}
