//! The Socket.IO sockets of one connection: one per namespace the client connected to,
//! with its rooms, its events and their acks.
//!
//! Each socket is subscribed to its namespace's channel; `join` and `leave` subscribe it to
//! room channels (see [`super::channels`]). An event becomes a publication on the namespace
//! channel, `to(room, …)` one on the room channel, and the hub delivers it to every other
//! socket, on every gateway.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use herald_proto::bus::v1::Position;
use serde_json::json;
use serde_json::value::RawValue;

use super::binary::Complete;
use super::packet::{Packet, PacketType};
use super::{channels, event, random_id};
use crate::gateway::Gateway;
use crate::hub::{ClientId, Protocol};
use crate::outbound::Outbound;
use crate::publish;

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

/// One namespace connection.
struct Socket {
    sid: Arc<str>,
    rooms: HashSet<String>,
}

pub struct Sockets {
    gateway: Arc<Gateway>,
    conn: ClientId,
    outbound: Outbound,
    sockets: HashMap<String, Socket>,
}

impl Sockets {
    pub fn new(gateway: Arc<Gateway>, conn: ClientId, outbound: Outbound) -> Self {
        Self {
            gateway,
            conn,
            outbound,
            sockets: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// Sends a Socket.IO packet inside an Engine.IO message.
    fn send_packet(&self, packet: &Packet) {
        self.outbound
            .send(Utf8Bytes::from(format!("4{}", packet.encode())));
    }

    pub async fn on_packet(&mut self, complete: Complete) {
        let packet = complete.packet;
        match packet.kind {
            PacketType::Connect => self.connect(&packet.namespace).await,
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

    async fn connect(&mut self, namespace: &str) {
        if let Some(socket) = self.sockets.get(namespace) {
            let reply = json!({ "sid": socket.sid.as_ref() });
            return self.reply_connect(namespace, reply);
        }
        match self.join_namespace(namespace).await {
            Ok(sid) => self.reply_connect(namespace, json!({ "sid": sid.as_ref() })),
            Err(refusal) => {
                let data =
                    json!({ "message": refusal.message, "data": { "code": refusal.code.code() } });
                let packet = Packet::new(PacketType::ConnectError, namespace, raw(&data));
                self.send_packet(&packet);
            }
        }
    }

    async fn join_namespace(&mut self, namespace: &str) -> Result<Arc<str>, Refusal> {
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
        let sid: Arc<str> = random_id::<15>().into();
        self.subscribe(&channels::namespace_channel(namespace), &sid)
            .await?;
        self.sockets.insert(
            namespace.to_string(),
            Socket {
                sid: sid.clone(),
                rooms: HashSet::new(),
            },
        );
        Ok(sid)
    }

    fn reply_connect(&self, namespace: &str, data: serde_json::Value) {
        self.send_packet(&Packet::new(PacketType::Connect, namespace, raw(&data)));
    }

    async fn subscribe(&self, channel: &str, sid: &Arc<str>) -> Result<Position, Refusal> {
        publish::valid_channel(channel)?;
        let history = self.gateway.channels.rules_for(channel).has_history();
        let protocol = Protocol::SocketIo { sid: sid.clone() };
        self.gateway
            .hub
            .subscribe(channel, self.conn, self.outbound.clone(), protocol, history)
            .await
    }

    fn disconnect(&mut self, namespace: &str) {
        if let Some(socket) = self.sockets.remove(namespace) {
            self.unsubscribe_socket(namespace, &socket);
        }
    }

    fn unsubscribe_socket(&self, namespace: &str, socket: &Socket) {
        let hub = &self.gateway.hub;
        hub.unsubscribe(&channels::namespace_channel(namespace), self.conn);
        for room in &socket.rooms {
            hub.unsubscribe(&channels::room_channel(namespace, room), self.conn);
        }
    }

    pub fn leave_all(&mut self) {
        for (namespace, socket) in std::mem::take(&mut self.sockets) {
            self.unsubscribe_socket(&namespace, &socket);
        }
    }

    /// Handles an event; the result is what its ack says.
    async fn event(&mut self, packet: &Packet, attachments: &[Bytes]) -> Result<Position, Refusal> {
        let namespace = packet.namespace.as_str();
        let Some(sid) = self.sockets.get(namespace).map(|s| s.sid.clone()) else {
            return Err(Refusal::new(
                ErrorCode::NotConnected,
                "not connected to this namespace",
            ));
        };
        let (name, args) = packet
            .event()
            .map_err(|e| Refusal::new(ErrorCode::BadRequest, e.to_string()))?;
        match name.as_str() {
            "join" => {
                let room = room_argument(&args)?;
                let channel = channels::room_channel(namespace, &room);
                match self.subscribe(&channel, &sid).await {
                    Ok(_) => {}
                    Err(refusal) if refusal.code == ErrorCode::AlreadySubscribed => {}
                    Err(refusal) => return Err(refusal),
                }
                if let Some(socket) = self.sockets.get_mut(namespace) {
                    socket.rooms.insert(room);
                }
                Ok(Position::default())
            }
            "leave" => {
                let room = room_argument(&args)?;
                if let Some(socket) = self.sockets.get_mut(namespace)
                    && socket.rooms.remove(&room)
                {
                    let channel = channels::room_channel(namespace, &room);
                    self.gateway.hub.unsubscribe(&channel, self.conn);
                }
                Ok(Position::default())
            }
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
                self.publish(channel, &event_name, event_args, attachments, &sid)
                    .await
            }
            _ => {
                let channel = channels::namespace_channel(namespace);
                self.publish(channel, &name, &args, attachments, &sid).await
            }
        }
    }

    async fn publish(
        &self,
        channel: String,
        name: &str,
        args: &[&RawValue],
        attachments: &[Bytes],
        sid: &str,
    ) -> Result<Position, Refusal> {
        if RESERVED_EVENTS.contains(&name) {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("{name:?} is a reserved event name"),
            ));
        }
        let data = event::envelope(name, args, attachments);
        let prepared = publish::prepare(&self.gateway.channels, channel, &data, sid, None)?;
        publish::send(&self.gateway.upstream, prepared).await
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
