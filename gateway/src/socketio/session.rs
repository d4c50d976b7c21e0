//! One Engine.IO session, whatever carries it: the open packet, the heartbeat, the connect
//! deadline, and Engine.IO packets turned into Socket.IO packets for the [`Sockets`].
//!
//! A session opened on long-polling is a task of its own; one opened on a WebSocket runs in
//! that connection's task, beside its reader and writer, and ends with it. Transports (a
//! WebSocket, or polling requests one after the other) hand it packets through its
//! [`Link`] and carry its outbound queue to the client. Packets are handled one after the
//! other, so a socket's events keep their order.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use herald_core::codes::DisconnectCode;
use serde_json::json;
use tokio::time::Instant;

use super::binary::{Assembler, Complete};
use super::endpoint::Endpoint;
use super::engine::{self, Data, PacketType};
use super::inbound;
use super::link::{Link, Links, Transport};
use super::packet::{Packet, PacketError};
use super::sockets::Sockets;
use crate::batch::MAX_BURST;
use crate::clients::Commands;
use crate::connections::ConnectionPermit;
use crate::deadline::{earliest, passed, wait_until};
use crate::hooks::Handshake;
use crate::metrics::{self, SOCKETIO};
use crate::outbound;

/// Packets a transport may hand in before it waits for the session to catch up; their
/// bytes are bounded too, by twice `socketio.max_payload`.
const INBOUND_QUEUE: usize = 256;

/// Starts a session on `transport` as a task of its own (long-polling: the requests that
/// carry it come and go) and registers it with the endpoint; its open packet is the first
/// frame queued.
pub fn start(
    endpoint: &Arc<Endpoint>,
    transport: Transport,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> Arc<Link> {
    let (link, mut session) = open(endpoint, transport, permit, handshake);
    endpoint.sessions.spawn(async move { session.run().await });
    link
}

/// Opens a session on `transport` and registers it with the endpoint, as [`start`] does,
/// but returns it to run instead of spawning it: a session opened on a WebSocket runs in
/// that connection's task, without a task of its own.
pub fn open(
    endpoint: &Arc<Endpoint>,
    transport: Transport,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> (Arc<Link>, Opened) {
    let ctx = &endpoint.ctx;
    let (outbound, frames) = outbound::channel(ctx.outbound_bounds());
    let bytes = ctx.socketio.max_payload.saturating_mul(2);
    let (inbound, packets) = inbound::channel(INBOUND_QUEUE, bytes);
    let sid: Arc<str> = endpoint.new_sid().into();
    let link = Arc::new(Link::new(
        sid.clone(),
        inbound,
        frames,
        outbound.closer().clone(),
        transport,
    ));
    endpoint.links.insert(link.clone());
    let id = ctx.next_id();
    let session = Session {
        commands: ctx.clients.open(id),
        sockets: Sockets::new(ctx.clone(), id, outbound, handshake),
        links: endpoint.links.clone(),
        sid,
        assembler: Assembler::default(),
        pong_deadline: None,
        _permit: permit,
    };
    metrics::opened(SOCKETIO);
    let opened = Opened {
        session: Some(session),
        packets,
        transport,
    };
    (link, opened)
}

/// A session to run, with its way in.
///
/// A task runs it by reference (`async move { opened.run().await }`): a future that took it
/// by value would hold it twice for the session's whole life, the value it was given and
/// the one it works on.
pub struct Opened {
    /// Dropped as soon as the session ends, before its transport has said goodbye.
    session: Option<Session>,
    packets: inbound::Receiver,
    transport: Transport,
}

impl Opened {
    /// Runs the session until it ends.
    pub async fn run(&mut self) {
        if let Some(session) = &mut self.session {
            session.run(&mut self.packets, self.transport).await;
        }
        // Its registrations and its place under the connection limit go now: a WebSocket
        // that carries it may take seconds more to say goodbye to a client that stopped
        // reading.
        self.session = None;
    }
}

/// Its context, client id and outbound queue are its sockets' (`Sockets::conn`).
struct Session {
    /// The endpoint's sessions, which this one leaves when it ends.
    links: Arc<Links>,
    sid: Arc<str>,
    assembler: Assembler,
    sockets: Sockets,
    /// Set while a ping waits for its pong.
    pong_deadline: Option<Instant>,
    _permit: ConnectionPermit,
    /// Commands of the server API about this connection's sockets.
    commands: Commands,
}

/// Why the session should end.
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
    async fn run(&mut self, packets: &mut inbound::Receiver, transport: Transport) {
        let closer = self.sockets.conn().outbound.closer().clone();
        self.open(transport);
        let start = Instant::now();
        // Every timer of the session in one: the loop sleeps until the earliest of them.
        let config = &self.sockets.conn().ctx.socketio;
        let mut timers = Timers {
            ping: start + config.ping_interval,
            refresh: self.sockets.refresh_period().map(|period| start + period),
            connect: start.checked_add(config.connect_timeout),
            open: start.checked_add(config.open_timeout),
        };
        let leave = self.sockets.conn().ctx.drain.turn();
        tokio::pin!(leave);
        loop {
            let next = earliest([
                Some(timers.ping),
                timers.refresh,
                timers.connect,
                timers.open,
                self.sockets.next_expiry(),
                self.sockets.next_renewal(),
                self.pong_deadline,
            ]);
            tokio::select! {
                // The work a connection does now and then is boxed: an idle connection's task
                // then holds only this loop's state, not the largest of its steps'.
                Some(command) = self.commands.recv() => {
                    Box::pin(self.sockets.on_command(command)).await;
                }
                packet = packets.recv() => {
                    // Take every packet already handed in, so that their events can travel
                    // to the routers together.
                    let mut burst = Vec::new();
                    // The packets' bytes count against the client's budget until handled.
                    let mut held = Vec::new();
                    timers.open = None;
                    let mut handled = match packet {
                        Some(inbound) => {
                            held.push(inbound.held);
                            self.on_engine(inbound.packet, &mut burst)
                        }
                        None => Err(Ending::Gone),
                    };
                    while handled.is_ok() && burst.len() < MAX_BURST {
                        match packets.try_recv() {
                            Some(inbound) => {
                                held.push(inbound.held);
                                handled = self.on_engine(inbound.packet, &mut burst);
                            }
                            None => break,
                        }
                    }
                    Box::pin(self.sockets.on_packets(burst)).await;
                    drop(held);
                    match handled {
                        Ok(()) => {}
                        Err(Ending::Gone) => closer.gone(),
                        Err(Ending::Violation(violation)) => {
                            tracing::debug!(%violation, "Socket.IO protocol violation");
                            closer.close_after_queued(DisconnectCode::BadRequest);
                        }
                    }
                    if !self.sockets.is_empty() {
                        timers.connect = None;
                    }
                }
                () = wait_until(next) => Box::pin(self.on_timers(&mut timers)).await,
                () = closer.closed() => {}
                () = &mut leave => closer.close(DisconnectCode::Shutdown),
            }
            if closer.is_closed() {
                break;
            }
        }
        // A lost connection's sockets can come back; those of a client that broke the
        // protocol cannot.
        let recoverable = !matches!(
            closer.reason(),
            Some(DisconnectCode::BadRequest | DisconnectCode::MessageTooLarge)
        );
        self.sockets.leave_all(recoverable);
        metrics::ended(SOCKETIO, closer.reason());
    }

    fn send_engine(&self, text: String) {
        self.sockets.conn().outbound.send(Utf8Bytes::from(text));
    }

    /// The Engine.IO handshake; a polling session is offered the upgrade to WebSocket.
    fn open(&self, transport: Transport) {
        let config = &self.sockets.conn().ctx.socketio;
        let upgrades: &[&str] = match transport {
            Transport::Polling => &["websocket"],
            Transport::Upgrading | Transport::WebSocket => &[],
        };
        let handshake = json!({
            "sid": self.sid.as_ref(),
            "upgrades": upgrades,
            "pingInterval": config.ping_interval.as_millis() as u64,
            "pingTimeout": config.ping_timeout.as_millis() as u64,
            "maxPayload": config.max_payload,
        });
        self.send_engine(format!("0{handshake}"));
    }

    /// Does what is due of the session's timers.
    async fn on_timers(&mut self, timers: &mut Timers) {
        let config = self.sockets.conn().ctx.socketio.clone();
        let closer = self.sockets.conn().outbound.closer().clone();
        let now = Instant::now();
        if passed(Some(timers.ping), now) {
            self.ping(config.ping_timeout);
            timers.ping = next_period(timers.ping, config.ping_interval, now);
        }
        if let (Some(due), Some(period)) = (timers.refresh, self.sockets.refresh_period())
            && due <= now
        {
            self.sockets.refresh();
            timers.refresh = Some(next_period(due, period, now));
        }
        if passed(self.sockets.next_expiry(), now) {
            self.sockets.expire();
        }
        if passed(self.sockets.next_renewal(), now) {
            self.sockets.renew().await;
        }
        if passed(self.pong_deadline, now) {
            closer.close(DisconnectCode::PingTimeout);
        }
        // Connected to no namespace in time, or silent since the open packet.
        if passed(timers.connect, now) || passed(timers.open, now) {
            closer.close(DisconnectCode::ConnectTimeout);
        }
    }

    fn ping(&mut self, timeout: std::time::Duration) {
        if self.pong_deadline.is_none() {
            self.send_engine("2".into());
            self.pong_deadline = Some(Instant::now() + timeout);
        }
    }

    /// Handles an Engine.IO packet; a complete Socket.IO packet goes to `burst`.
    fn on_engine(
        &mut self,
        packet: engine::Packet,
        burst: &mut Vec<Complete>,
    ) -> Result<(), Ending> {
        let data = match packet.data {
            Data::Binary(bytes) => {
                burst.extend(self.assembler.attachment(bytes)?);
                return Ok(());
            }
            Data::Text(data) => data,
        };
        match packet.kind {
            PacketType::Message => {
                let packet = Packet::decode(&data)?;
                burst.extend(self.assembler.packet(packet)?);
                Ok(())
            }
            PacketType::Pong => {
                self.pong_deadline = None;
                Ok(())
            }
            // Engine.IO v3 clients ping the server; answering costs nothing.
            PacketType::Ping => {
                self.send_engine(format!("3{data}"));
                Ok(())
            }
            PacketType::Close => Err(Ending::Gone),
            PacketType::Upgrade | PacketType::Noop => Ok(()),
            PacketType::Open => Err(Ending::Violation("a client sent an open packet".into())),
        }
    }
}

/// The session's registrations end with it, however its task ends: a panic must not leave
/// its sockets in the hub and presence forever (their records are dropped then, since
/// what they hold cannot be trusted).
impl Drop for Session {
    fn drop(&mut self) {
        self.sockets.leave_all(false);
        let conn = self.sockets.conn();
        conn.ctx.clients.close(conn.id);
        self.links.ended(&self.sid);
    }
}

/// The deadlines of a session's own timers (those of its sockets are theirs to say).
struct Timers {
    /// The next ping.
    ping: Instant,
    /// The next look at the sockets' sessions of the router, if they have any.
    refresh: Option<Instant>,
    /// Until a namespace is connected.
    connect: Option<Instant>,
    /// Until the client says anything at all.
    open: Option<Instant>,
}

/// The tick after `due` of a timer with `period`; one period from now if it fell behind.
fn next_period(due: Instant, period: std::time::Duration, now: Instant) -> Instant {
    let next = due + period;
    if next <= now { now + period } else { next }
}

#[cfg(test)]
mod tests {
    use herald_core::config::Config;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::outbound::Frame;
    use crate::socketio::link::Poll;
    use crate::testing;

    /// A session on long-polling, driven through its link as the polling transport does.
    async fn session() -> Arc<Link> {
        let ctx = testing::context(&Config::default()).await;
        let endpoint = Endpoint::new(ctx, TaskTracker::new());
        let permit = testing::permit();
        start(&endpoint, Transport::Polling, permit, Handshake::default())
    }

    async fn post(link: &Link, texts: &[&str]) {
        let packets = texts
            .iter()
            .map(|text| engine::Packet::text(PacketType::Message, *text))
            .collect();
        assert_eq!(link.post(packets).await, Some(true));
    }

    /// The texts of the frames the next GET takes.
    async fn get(link: &Link) -> Vec<String> {
        let poll = tokio::time::timeout(testing::PATIENCE, link.poll(usize::MAX));
        match poll.await.expect("an answer in time") {
            Ok(Poll::Frames(frames)) => frames
                .into_iter()
                .map(|frame| match frame {
                    Frame::Text(text) => text.to_string(),
                    Frame::Binary(_) => "<binary>".into(),
                })
                .collect(),
            Ok(Poll::Closed) => vec!["<closed>".into()],
            other => panic!("unexpected poll: {other:?}"),
        }
    }

    /// Frames of the following GETs, until one holds `count` of them in all.
    async fn get_n(link: &Link, count: usize) -> Vec<String> {
        let mut frames = Vec::new();
        while frames.len() < count {
            frames.extend(get(link).await);
        }
        frames
    }

    #[tokio::test]
    async fn events_sent_together_are_acked_in_order_and_a_violation_closes_after_them() {
        let link = session().await;
        let open = get(&link).await;
        assert!(
            open[0].starts_with("0{") && open[0].contains("\"sid\""),
            "{open:?}"
        );
        post(&link, &["0"]).await;
        let connected = get(&link).await;
        assert!(connected[0].starts_with("40{\"sid\""), "{connected:?}");
        post(
            &link,
            &[
                r#"21["chat","a"]"#,
                r#"22["chat","b"]"#,
                r#"23["chat","c"]"#,
            ],
        )
        .await;
        let acks = get_n(&link, 3).await;
        assert_eq!(
            acks,
            [
                r#"431[{"offset":1,"ok":true}]"#,
                r#"432[{"offset":2,"ok":true}]"#,
                r#"433[{"offset":3,"ok":true}]"#,
            ]
        );
        post(&link, &[r#"24["chat","d"]"#, "9 not a packet"]).await;
        let last = get_n(&link, 2).await;
        assert_eq!(last[0], r#"434[{"offset":4,"ok":true}]"#);
        assert_eq!(last[1], "<closed>");
    }
}

#[cfg(test)]
mod footprint {
    use super::*;
    use crate::testing;

    /// Every connection holds its session's task for its whole life, mostly idle: the task
    /// must hold the loop's state only, with the work it does now and then boxed (issue 17:
    /// an idle socket's memory).
    #[tokio::test]
    async fn an_idle_sessions_task_stays_small() {
        let ctx = testing::context(&herald_core::config::Config::default()).await;
        let endpoint = Endpoint::new(ctx, tokio_util::task::TaskTracker::new());
        let handshake = Handshake::default();
        let (_link, mut opened) = open(&endpoint, Transport::Polling, testing::permit(), handshake);
        let task = async move { opened.run().await };
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= 1024,
            "a Socket.IO session's task holds {size} bytes"
        );
        let (sink, stream, _peer) = testing::connection();
        let handshake = Handshake::default();
        let websocket =
            super::super::websocket::open_on(sink, stream, endpoint, testing::permit(), handshake);
        let size = std::mem::size_of_val(&websocket);
        assert!(
            size <= 1920,
            "a Socket.IO WebSocket's task holds {size} bytes"
        );
    }
}
