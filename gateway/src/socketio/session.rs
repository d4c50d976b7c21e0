//! One Engine.IO session, whatever carries it: the open packet, the heartbeat, the connect
//! deadline, and Engine.IO packets turned into Socket.IO packets for the [`Sockets`].
//!
//! The session is a task of its own. Transports (a WebSocket, or polling requests one after
//! the other) hand it packets through its [`Link`] and carry its outbound queue to the
//! client. Packets are handled one after the other, so a socket's events keep their order.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use herald_core::codes::DisconnectCode;
use serde_json::json;
use tokio::time::{Instant, sleep_until};

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
use crate::context::Context;
use crate::deadline::wait_until;
use crate::hooks::Handshake;
use crate::hub::ClientId;
use crate::metrics::{self, SOCKETIO};
use crate::outbound::{self, Outbound};

/// Packets a transport may hand in before it waits for the session to catch up; their
/// bytes are bounded too, by twice `socketio.max_payload`.
const INBOUND_QUEUE: usize = 256;

/// Starts a session on `transport` and registers it with the endpoint; its open packet is
/// the first frame queued.
pub fn start(
    endpoint: &Arc<Endpoint>,
    transport: Transport,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> Arc<Link> {
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
        id,
        sockets: Sockets::new(ctx.clone(), id, outbound.clone(), handshake),
        ctx: ctx.clone(),
        links: endpoint.links.clone(),
        sid,
        outbound,
        assembler: Assembler::default(),
        pong_deadline: None,
        _permit: permit,
    };
    metrics::opened(SOCKETIO);
    endpoint.sessions.spawn(session.run(packets, transport));
    link
}

struct Session {
    ctx: Arc<Context>,
    /// The endpoint's sessions, which this one leaves when it ends.
    links: Arc<Links>,
    sid: Arc<str>,
    outbound: Outbound,
    assembler: Assembler,
    sockets: Sockets,
    /// Set while a ping waits for its pong.
    pong_deadline: Option<Instant>,
    _permit: ConnectionPermit,
    id: ClientId,
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
    async fn run(mut self, mut packets: inbound::Receiver, transport: Transport) {
        let config = self.ctx.socketio.clone();
        let closer = self.outbound.closer().clone();
        self.open(transport);
        let start = Instant::now();
        let mut ping = tokio::time::interval_at(start + config.ping_interval, config.ping_interval);
        let connect_deadline = start + config.connect_timeout;
        let open_deadline = start + config.open_timeout;
        let mut connected_once = false;
        let mut heard_once = false;
        let leave = self.ctx.drain.turn();
        tokio::pin!(leave);
        let mut refresh = self
            .sockets
            .refresh_period()
            .map(|period| tokio::time::interval_at(start + period, period));
        loop {
            tokio::select! {
                Some(command) = self.commands.recv() => self.sockets.on_command(command).await,
                packet = packets.recv() => {
                    // Take every packet already handed in, so that their events can travel
                    // to the routers together.
                    let mut burst = Vec::new();
                    // The packets' bytes count against the client's budget until handled.
                    let mut held = Vec::new();
                    heard_once = true;
                    let mut handled = match packet {
                        Some(inbound) => {
                            held.push(inbound.held);
                            self.on_engine(inbound.packet, &mut burst)
                        }
                        None => Err(Ending::Gone),
                    };
                    while handled.is_ok() && burst.len() < MAX_BURST {
                        match packets.try_recv() {
                            Ok(inbound) => {
                                held.push(inbound.held);
                                handled = self.on_engine(inbound.packet, &mut burst);
                            }
                            Err(_) => break,
                        }
                    }
                    self.sockets.on_packets(burst).await;
                    drop(held);
                    match handled {
                        Ok(()) => {}
                        Err(Ending::Gone) => closer.gone(),
                        Err(Ending::Violation(violation)) => {
                            tracing::debug!(%violation, "Socket.IO protocol violation");
                            closer.close_after_queued(DisconnectCode::BadRequest);
                        }
                    }
                    connected_once |= !self.sockets.is_empty();
                }
                _ = ping.tick() => self.ping(config.ping_timeout),
                _ = tick(&mut refresh) => self.sockets.refresh(),
                () = wait_until(self.sockets.next_expiry()) => self.sockets.expire(),
                () = wait_until(self.sockets.next_renewal()) => self.sockets.renew().await,
                () = wait_until(self.pong_deadline) => closer.close(DisconnectCode::PingTimeout),
                () = sleep_until(connect_deadline), if !connected_once => {
                    closer.close(DisconnectCode::ConnectTimeout);
                }
                () = sleep_until(open_deadline), if !heard_once => {
                    closer.close(DisconnectCode::ConnectTimeout);
                }
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
        self.outbound.send(Utf8Bytes::from(text));
    }

    /// The Engine.IO handshake; a polling session is offered the upgrade to WebSocket.
    fn open(&self, transport: Transport) {
        let config = &self.ctx.socketio;
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
        self.ctx.clients.close(self.id);
        self.links.ended(&self.sid);
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use herald_core::config::Config;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::connections::Connections;
    use crate::outbound::Frame;
    use crate::socketio::link::Poll;
    use crate::testing;

    /// A session on long-polling, driven through its link as the polling transport does.
    async fn session() -> Arc<Link> {
        let ctx = testing::context(&Config::default()).await;
        let endpoint = Endpoint::new(ctx, TaskTracker::new());
        let permit = Connections::new(0).permit().expect("a permit");
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
