//! The Socket.IO sockets of one connection: one per namespace the client connected to,
//! with its rooms, its events and their acks.
//!
//! Each socket is subscribed to its namespace's channel; `join` and `leave` subscribe it to
//! room channels (see [`super::channels`]). An event becomes a publication on the namespace
//! channel, `to(room, …)` one on the room channel, and the hub delivers it to every other
//! socket, on every gateway.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::{Position, Publication, PublishRequest};
use serde_json::json;
use serde_json::value::RawValue;

use super::binary::Complete;
use super::packet::{Packet, PacketType};
use super::recovery::{self, ConnectData, Records, Recovery};
use super::{channels, event, random_id};
use crate::gateway::Gateway;
use crate::hub::{ClientId, Joined, Protocol, Start};
use crate::outbound::Outbound;
use crate::publish::{self, Prepared};

/// Most event bytes in one publish batch, well under NATS' default 1 MiB message limit.
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Events with a meaning of their own: rooms, and the names Socket.IO reserves.
const RESERVED_EVENTS: [&str; 9] = [
    "join",
    "leave",
    "to",
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// What an event asks for.
enum Request {
    Join(String),
    Leave(String),
    Publish(Prepared),
}

/// One namespace connection.
struct Socket {
    sid: Arc<str>,
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
}

pub struct Sockets {
    gateway: Arc<Gateway>,
    conn: ClientId,
    outbound: Outbound,
    records: Records,
    sockets: HashMap<String, Socket>,
}

impl Sockets {
    pub fn new(gateway: Arc<Gateway>, conn: ClientId, outbound: Outbound) -> Self {
        let records = Records::new(
            gateway.upstream.clone(),
            random_id::<9>().into(),
            gateway.socketio.recovery_window,
        );
        Self {
            gateway,
            conn,
            outbound,
            records,
            sockets: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// How often [`Self::refresh`] must run, when recovery is on.
    pub fn refresh_period(&self) -> Option<std::time::Duration> {
        self.gateway
            .socketio
            .recovery()
            .then(|| self.records.refresh_period())
    }

    /// Keeps the recovery records of this live connection.
    pub fn refresh(&self) {
        for recovery in self.sockets.values().filter_map(|s| s.recovery.as_ref()) {
            self.records.refresh(&recovery.pid);
        }
    }

    /// Sends a Socket.IO packet inside an Engine.IO message.
    fn send_packet(&self, packet: &Packet) {
        self.outbound
            .send(Utf8Bytes::from(format!("4{}", packet.encode())));
    }

    /// Handles packets that arrived together. Consecutive events that publish on channels
    /// with history travel to the routers as one batch, in order, and are acked in order:
    /// one round trip for many events.
    pub async fn on_packets(&mut self, packets: Vec<Complete>) {
        let mut batch: Vec<(String, Option<u64>, PublishRequest)> = Vec::new();
        let mut bytes = 0;
        for complete in packets {
            match self.routed_event(&complete.packet, &complete.attachments) {
                Some(request) => {
                    if bytes + request.data.len() > MAX_BATCH_BYTES {
                        self.publish_batch(std::mem::take(&mut batch)).await;
                        bytes = 0;
                    }
                    bytes += request.data.len();
                    let packet = complete.packet;
                    batch.push((packet.namespace, packet.id, request));
                }
                None => {
                    self.publish_batch(std::mem::take(&mut batch)).await;
                    self.on_packet(complete).await;
                }
            }
        }
        self.publish_batch(batch).await;
    }

    /// The publish request of an event that goes to the routers as it is: not a room
    /// request, not refused, on a channel with history. Anything else is handled alone.
    fn routed_event(&self, packet: &Packet, attachments: &[Bytes]) -> Option<PublishRequest> {
        if !matches!(packet.kind, PacketType::Event | PacketType::BinaryEvent) {
            return None;
        }
        match self.request(packet, attachments) {
            Ok(Request::Publish(Prepared::Routed(request))) => Some(request),
            _ => None,
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
            match id {
                Some(id) => self.ack(&namespace, id, outcome),
                None => {
                    if let Err(refusal) = outcome {
                        tracing::debug!(%refusal, "event refused, and no ack was asked for");
                    }
                }
            }
        }
    }

    async fn on_packet(&mut self, complete: Complete) {
        let packet = complete.packet;
        match packet.kind {
            PacketType::Connect => {
                self.connect(&packet.namespace, packet.data.as_deref())
                    .await
            }
            PacketType::Disconnect => self.disconnect(&packet.namespace),
            PacketType::Event | PacketType::BinaryEvent => {
                let outcome = self.event(&packet, &complete.attachments).await;
                if let Some(id) = packet.id {
                    self.ack(&packet.namespace, id, outcome);
                } else if let Err(refusal) = outcome {
                    tracing::debug!(%refusal, "event refused, and no ack was asked for");
                }
            }
            // The server never asks for acknowledgements, so there is nothing to match.
            PacketType::Ack | PacketType::BinaryAck | PacketType::ConnectError => {}
        }
    }

    async fn connect(&mut self, namespace: &str, data: Option<&RawValue>) {
        if let Some(socket) = self.sockets.get(namespace) {
            return self.reply_connect(namespace, socket);
        }
        let data = ConnectData::parse(data);
        let outcome = match self.admit(namespace, &data) {
            Err(refusal) => Err(refusal),
            Ok(()) => match data.pid.as_deref() {
                Some(pid) if self.gateway.socketio.recovery() => {
                    match self.resume(namespace, pid, data.offset.as_deref()).await {
                        true => Ok(()),
                        false => self.join_namespace(namespace).await,
                    }
                }
                _ => self.join_namespace(namespace).await,
            },
        };
        if let Err(refusal) = outcome {
            let data =
                json!({ "message": refusal.message, "data": { "code": refusal.code.code() } });
            let packet = Packet::new(PacketType::ConnectError, namespace, raw(&data));
            self.send_packet(&packet);
        }
    }

    /// Whether a client may connect to `namespace`.
    fn admit(&self, namespace: &str, data: &ConnectData) -> Result<(), Refusal> {
        self.gateway.auth.verify(data.token.as_deref())?;
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
        Ok(())
    }

    /// Connects a new socket to `namespace` and tells the client.
    async fn join_namespace(&mut self, namespace: &str) -> Result<(), Refusal> {
        let recovery = self
            .gateway
            .socketio
            .recovery()
            .then(|| Recovery::new(random_id::<15>().into()));
        let mut socket = Socket {
            sid: random_id::<15>().into(),
            recovery,
            joined: Vec::new(),
        };
        let channel = channels::namespace_channel(namespace);
        let position = self.subscribe(&channel, &socket, Start::Now).await?;
        let position = match position {
            Joined::At(position) | Joined::Behind(position) => position,
        };
        socket.joined(channel, position);
        self.save(namespace, &socket).await;
        self.reply_connect(namespace, &socket);
        self.sockets.insert(namespace.to_string(), socket);
        Ok(())
    }

    fn reply_connect(&self, namespace: &str, socket: &Socket) {
        let data = match &socket.recovery {
            Some(recovery) => json!({ "sid": socket.sid.as_ref(), "pid": recovery.pid.as_ref() }),
            None => json!({ "sid": socket.sid.as_ref() }),
        };
        self.send_packet(&Packet::new(PacketType::Connect, namespace, raw(&data)));
    }

    async fn save(&self, namespace: &str, socket: &Socket) {
        if let Some(recovery) = &socket.recovery {
            let record = recovery::record(namespace, &socket.sid, &socket.joined);
            self.records.save(&recovery.pid, record).await;
        }
    }

    /// Resumes the socket the client had, if its record and every event it missed can
    /// still be had: the same sid and pid, its rooms, then exactly the missed events, in
    /// order. `false` leaves nothing done: the client gets a fresh socket.
    async fn resume(&mut self, namespace: &str, pid: &str, offset: Option<&str>) -> bool {
        let Some(record) = self.records.take(pid).await else {
            return false;
        };
        if record.namespace != namespace || record.marks.is_empty() {
            return false;
        }
        let starts = recovery::starting_points(&record, offset);
        let upstream = &self.gateway.upstream;
        let mut missed = Vec::with_capacity(starts.len());
        for (channel, from) in &starts {
            match recovery::missed(upstream, channel, from).await {
                Some(publications) => missed.push(publications),
                None => return false,
            }
        }
        let mut socket = Socket {
            sid: record.sid.as_str().into(),
            recovery: Some(Recovery::new(pid.into())),
            joined: Vec::new(),
        };
        for mark in record.marks {
            socket.joined(mark.channel, mark.joined.unwrap_or_default());
        }
        let marks = socket.recovery.as_ref().map(|r| r.marks.clone());
        for (channel, from) in &starts {
            if let Some(marks) = &marks {
                marks.set(channel, from);
            }
        }
        // The reply first, so that no client sees events of a socket it was refused.
        self.reply_connect(namespace, &socket);
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
            self.catch_up(&socket, channel, from).await;
        }
        self.save(namespace, &socket).await;
        self.sockets.insert(namespace.to_string(), socket);
        true
    }

    /// Subscribes a resumed socket to `channel` right after `from`, replaying whatever the
    /// channel delivered in the meantime first.
    async fn catch_up(&self, socket: &Socket, channel: &str, mut from: Position) {
        loop {
            match self.subscribe(channel, socket, Start::After(&from)).await {
                Ok(Joined::At(_)) => return,
                Ok(Joined::Behind(_)) => {
                    let upstream = &self.gateway.upstream;
                    let Some(publications) = recovery::missed(upstream, channel, &from).await
                    else {
                        tracing::debug!(channel, "cannot catch up a resumed socket");
                        let _ = self.subscribe(channel, socket, Start::Now).await;
                        return;
                    };
                    for publication in &publications {
                        self.replay(socket, publication);
                    }
                    if let Some(newest) = publications.last() {
                        from.offset = newest.offset;
                    }
                }
                Err(refusal) => {
                    tracing::debug!(channel, %refusal, "a resumed socket lost a channel");
                    return;
                }
            }
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
        let Some(rendered) = event::render(publication) else {
            return;
        };
        let offset = recovery.marks.advance(&publication.channel, &position);
        for frame in rendered.frames_with_offset(&offset) {
            self.outbound.send(frame);
        }
    }

    async fn subscribe(
        &self,
        channel: &str,
        socket: &Socket,
        start: Start<'_>,
    ) -> Result<Joined, Refusal> {
        publish::valid_channel(channel)?;
        let history = self.gateway.channels.rules_for(channel).has_history();
        self.gateway
            .hub
            .subscribe_from(
                channel,
                self.conn,
                self.outbound.clone(),
                socket.protocol(),
                history,
                start,
            )
            .await
    }

    fn disconnect(&mut self, namespace: &str) {
        if let Some(socket) = self.sockets.remove(namespace) {
            self.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                self.records.drop(&recovery.pid);
            }
        }
    }

    fn unsubscribe_socket(&self, socket: &Socket) {
        for (channel, _) in &socket.joined {
            self.gateway.hub.unsubscribe(channel, self.conn);
        }
    }

    /// The connection ended. `recoverable`: it was lost (not left on purpose), so its
    /// sockets' records are kept for the recovery window.
    pub fn leave_all(&mut self, recoverable: bool) {
        for socket in std::mem::take(&mut self.sockets).into_values() {
            self.unsubscribe_socket(&socket);
            if let Some(recovery) = &socket.recovery {
                match recoverable {
                    true => self.records.keep(&recovery.pid),
                    false => self.records.drop(&recovery.pid),
                }
            }
        }
    }

    /// Reads what an event of a connected socket asks for; a publish comes checked.
    fn request(&self, packet: &Packet, attachments: &[Bytes]) -> Result<Request, Refusal> {
        let namespace = packet.namespace.as_str();
        let Some(socket) = self.sockets.get(namespace) else {
            return Err(Refusal::new(
                ErrorCode::NotConnected,
                "not connected to this namespace",
            ));
        };
        let (name, args) = packet
            .event()
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        let (channel, name, args) = match name.as_str() {
            "join" => return Ok(Request::Join(room_argument(&args)?)),
            "leave" => return Ok(Request::Leave(room_argument(&args)?)),
            "to" => {
                let room = room_argument(&args)?;
                let (event_name, event_args) = args[1..].split_first().ok_or_else(|| {
                    Refusal::new(
                        ErrorCode::BadRequest,
                        "to(room, event, ...args) needs an event",
                    )
                })?;
                let event_name: String = serde_json::from_str(event_name.get()).map_err(|_| {
                    Refusal::new(ErrorCode::BadRequest, "the event name must be a string")
                })?;
                let channel = channels::room_channel(namespace, &room);
                (channel, event_name, event_args.to_vec())
            }
            _ => (channels::namespace_channel(namespace), name, args),
        };
        if RESERVED_EVENTS.contains(&name.as_str()) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("{name:?} is a reserved event name"),
            ));
        }
        let data = event::envelope(&name, &args, attachments);
        let prepared = publish::prepare(&self.gateway.channels, channel, &data, &socket.sid, None)?;
        Ok(Request::Publish(prepared))
    }

    /// Handles an event; the result is what its ack says.
    async fn event(&mut self, packet: &Packet, attachments: &[Bytes]) -> Result<Position, Refusal> {
        let namespace = packet.namespace.as_str();
        match self.request(packet, attachments)? {
            Request::Join(room) => {
                let channel = channels::room_channel(namespace, &room);
                let Some(socket) = self.sockets.get(namespace) else {
                    return Ok(Position::default());
                };
                let joined = self.subscribe(&channel, socket, Start::Now).await;
                let position = match joined {
                    Ok(Joined::At(position) | Joined::Behind(position)) => position,
                    Err(refusal) if refusal.code == ErrorCode::AlreadySubscribed => {
                        return Ok(Position::default());
                    }
                    Err(refusal) => return Err(refusal),
                };
                if let Some(socket) = self.sockets.get_mut(namespace) {
                    socket.joined(channel, position);
                }
                if let Some(socket) = self.sockets.get(namespace) {
                    self.save(namespace, socket).await;
                }
                Ok(Position::default())
            }
            Request::Leave(room) => {
                let channel = channels::room_channel(namespace, &room);
                if let Some(socket) = self.sockets.get_mut(namespace)
                    && socket.left(&channel)
                {
                    self.gateway.hub.unsubscribe(&channel, self.conn);
                    if let Some(socket) = self.sockets.get(namespace) {
                        self.save(namespace, socket).await;
                    }
                }
                Ok(Position::default())
            }
            Request::Publish(prepared) => publish::send(&self.gateway.upstream, prepared).await,
        }
    }

    /// Answers an event's ack callback with `{ok: true, offset?}` or `{ok: false, error}`.
    fn ack(&self, namespace: &str, id: u64, outcome: Result<Position, Refusal>) {
        let body = match outcome {
            Ok(position) if position.epoch.is_empty() => json!([{ "ok": true }]),
            Ok(position) => json!([{ "ok": true, "offset": position.offset }]),
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

/// The room named by an event's first argument: a non-empty string.
fn room_argument(args: &[&RawValue]) -> Result<String, Refusal> {
    args.first()
        .and_then(|room| serde_json::from_str::<String>(room.get()).ok())
        .filter(|room| !room.is_empty())
        .ok_or_else(|| Refusal::new(ErrorCode::BadRequest, "the room must be a non-empty string"))
}

fn raw(value: &serde_json::Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(value).ok()
}
