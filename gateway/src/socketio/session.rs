//! One Socket.IO connection over a WebSocket: the Engine.IO handshake and heartbeat, then
//! Socket.IO packets for any number of namespaces multiplexed on the connection.
//!
//! Each namespace a client connects to is a socket, subscribed to its namespace's channel;
//! `join` and `leave` subscribe it to room channels (see [`super::channels`]). An event
//! becomes a publication on the namespace channel, `to(room, …)` one on the room channel,
//! and the hub delivers it to every other socket, on every gateway. Packets are handled one
//! after the other, so a socket's events keep their order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::codes::{DisconnectCode, ErrorCode, Refusal};
use herald_proto::bus::v1::Position;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep_until};

use super::binary::{Assembler, Complete};
use super::engine::{self, PacketType as EngineType};
use super::packet::{Packet, PacketError, PacketType};
use super::{channels, event};
use crate::deadline::wait_until;
use crate::gateway::Gateway;
use crate::hub::{ClientId, Protocol};
use crate::outbound::{self, Outbound};
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

/// A random session or socket id, 20 URL-safe characters like the reference server's.
fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 15]>())
}

/// One namespace connection.
struct Socket {
    sid: Arc<str>,
    rooms: HashSet<String>,
}

struct Session {
    gateway: Arc<Gateway>,
    conn: ClientId,
    outbound: Outbound,
    assembler: Assembler,
    sockets: HashMap<String, Socket>,
    /// Set while a ping waits for its pong.
    pong_deadline: Option<Instant>,
}

/// Serves one Socket.IO connection that opened directly on WebSocket.
pub async fn serve(socket: WebSocket, gateway: Arc<Gateway>) {
    let config = gateway.socketio.clone();
    let (sink, mut stream) = socket.split();
    let (outbound, frames) = outbound::channel(gateway.config.outbound_queue);
    let closer = outbound.closer().clone();
    // A Socket.IO client learns why from the close itself; there is no farewell message.
    let writer = tokio::spawn(outbound::write_loop(sink, frames, closer.clone(), |_| None));
    let mut session = Session {
        conn: gateway.next_client_id(),
        gateway: gateway.clone(),
        outbound,
        assembler: Assembler::default(),
        sockets: HashMap::new(),
        pong_deadline: None,
    };
    session.open();
    let start = Instant::now();
    let mut ping = tokio::time::interval_at(start + config.ping_interval, config.ping_interval);
    let connect_deadline = start + config.connect_timeout;
    let mut connected_once = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let handled = match frame {
                    Some(Ok(Message::Text(text))) => session.on_text(&text).await,
                    Some(Ok(Message::Binary(bytes))) => session.on_binary(bytes).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_))) | None => Err(Ending::Gone),
                    Some(Err(e)) => Err(Ending::Violation(e.to_string())),
                };
                match handled {
                    Ok(()) => {}
                    Err(Ending::Gone) => closer.gone(),
                    Err(Ending::Violation(violation)) => {
                        tracing::debug!(%violation, "Socket.IO protocol violation");
                        closer.close(DisconnectCode::BadRequest);
                    }
                }
                connected_once |= !session.sockets.is_empty();
            }
            _ = ping.tick() => session.ping(config.ping_timeout),
            () = wait_until(session.pong_deadline) => closer.close(DisconnectCode::PingTimeout),
            () = sleep_until(connect_deadline), if !connected_once => {
                closer.close(DisconnectCode::ConnectTimeout);
            }
            () = closer.closed() => {}
            () = gateway.shutdown.cancelled() => closer.close(DisconnectCode::Shutdown),
        }
        if closer.is_closed() {
            break;
        }
    }
    session.leave_all();
    drop(session);
    let _ = writer.await;
}

/// Why the session loop should stop reading.
enum Ending {
    /// The client closed the connection (or sent an Engine.IO close packet).
    Gone,
    /// The client broke the protocol; the reason is logged.
    Violation(String),
}

impl From<PacketError> for Ending {
    fn from(error: PacketError) -> Self {
        Self::Violation(error.to_string())
    }
}

impl Session {
    fn send_engine(&self, text: String) {
        self.outbound.send(Utf8Bytes::from(text));
    }

    /// Sends a Socket.IO packet inside an Engine.IO message.
    fn send_packet(&self, packet: &Packet) {
        self.send_engine(format!("4{}", packet.encode()));
    }

    /// The Engine.IO handshake. Only WebSocket is served so far, so no upgrades are offered.
    fn open(&self) {
        let config = &self.gateway.socketio;
        let handshake = json!({
            "sid": random_id(),
            "upgrades": [],
            "pingInterval": config.ping_interval.as_millis() as u64,
            "pingTimeout": config.ping_timeout.as_millis() as u64,
            "maxPayload": config.max_payload,
        });
        self.send_engine(format!("0{handshake}"));
    }

    fn ping(&mut self, timeout: std::time::Duration) {
        if self.pong_deadline.is_none() {
            self.send_engine("2".into());
            self.pong_deadline = Some(Instant::now() + timeout);
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ending> {
        if text.len() > self.gateway.socketio.max_payload {
            return Err(Ending::Violation("message larger than maxPayload".into()));
        }
        let packet =
            engine::Packet::decode_text(text).map_err(|e| Ending::Violation(e.to_string()))?;
        let engine::Data::Text(data) = packet.data else {
            return Ok(());
        };
        match packet.kind {
            EngineType::Message => {
                let packet = Packet::decode(&data)?;
                if let Some(complete) = self.assembler.packet(packet)? {
                    self.on_packet(complete).await;
                }
                Ok(())
            }
            EngineType::Pong => {
                self.pong_deadline = None;
                Ok(())
            }
            EngineType::Ping => {
                self.send_engine(format!("3{data}"));
                Ok(())
            }
            EngineType::Close => Err(Ending::Gone),
            EngineType::Upgrade | EngineType::Noop => Ok(()),
            EngineType::Open => Err(Ending::Violation("a client sent an open packet".into())),
        }
    }

    async fn on_binary(&mut self, bytes: Bytes) -> Result<(), Ending> {
        if let Some(complete) = self.assembler.attachment(bytes)? {
            self.on_packet(complete).await;
        }
        Ok(())
    }

    async fn on_packet(&mut self, complete: Complete) {
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
        let sid: Arc<str> = random_id().into();
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

    fn leave_all(&mut self) {
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
