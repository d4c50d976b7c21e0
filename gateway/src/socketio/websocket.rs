//! The WebSocket transport: a session opened on WebSocket, and the upgrade of a polling
//! session (probe, then `upgrade`).
//!
//! Each text frame is one Engine.IO packet and each binary frame a binary message. The
//! reader hands packets to the session; the writer drains the session's outbound queue.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitStream;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use herald_core::codes::DisconnectCode;
use tokio::sync::MutexGuard;

use super::endpoint::Endpoint;
use super::engine::{self, PacketType};
use super::link::{Link, Transport};
use super::session;
use crate::connections::ConnectionPermit;
use crate::hooks::Handshake;
use crate::inbound::client_gone;
use crate::outbound::{self, Frames};

/// How long a probing WebSocket has to send `upgrade`, as in the reference server.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a session that opened directly on WebSocket.
pub fn open(
    socket: WebSocket,
    endpoint: Arc<Endpoint>,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> impl Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    open_on(sink, stream, endpoint, permit, handshake)
}

/// Serves a session that opened directly on a WebSocket whose frames arrive on `stream`
/// and leave through `sink`: any WebSocket, or a test's channels.
///
/// Not an `async fn`, which would hold the socket twice for the connection's whole life:
/// its arguments, and what it made of them. The session is opened (registered, counted)
/// when this is called; the future is meant to be awaited at once.
pub fn open_on<W, R>(
    sink: W,
    stream: R,
    endpoint: Arc<Endpoint>,
    permit: ConnectionPermit,
    handshake: Handshake,
) -> impl Future<Output = ()> + Send
where
    W: Sink<Message, Error: Send> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let (link, mut session) = session::open(&endpoint, Transport::WebSocket, permit, handshake);
    // The session and the socket that carries it end together: one task for both (a task
    // costs a few hundred bytes more than the two futures do in one).
    async move {
        let frames = link.take_frames().await;
        tokio::join!(session.run(), carry(sink, stream, &link, frames));
    }
}

/// Serves a WebSocket that asks to take over the polling session `link` (not an
/// `async fn`, for the reason [`open_on`] gives).
pub fn upgrade(socket: WebSocket, link: Arc<Link>) -> impl Future<Output = ()> + Send {
    let (mut sink, mut stream) = socket.split();
    async move {
        // Whether this WebSocket holds the session's upgrade: only then may it give it
        // back to polling.
        let mut claimed = false;
        let probed = tokio::time::timeout(UPGRADE_TIMEOUT, async {
            if next_packet(&mut stream).await? != engine::Packet::text(PacketType::Ping, "probe") {
                return None;
            }
            // Claimed before the client can learn that the probe worked: a WebSocket it
            // opens after that finds the session upgrading and is refused.
            if !link.begin_upgrade() {
                return None;
            }
            claimed = true;
            sink.send(Message::Text(Utf8Bytes::from_static("3probe")))
                .await
                .ok()?;
            let upgraded =
                next_packet(&mut stream).await == Some(engine::Packet::empty(PacketType::Upgrade));
            upgraded.then_some(())
        })
        .await;
        match probed {
            Ok(Some(())) => {
                let frames = link.take_frames().await;
                carry(sink, stream, &link, frames).await;
            }
            // The client stays on polling; the probing WebSocket just goes away.
            _ => {
                if claimed {
                    link.abort_upgrade();
                }
                let _ = sink.close().await;
            }
        }
    }
}

/// Closes a WebSocket that asked to take over a session another WebSocket holds or is
/// taking over, as the reference server does: opened, then closed at once.
pub async fn refuse(mut socket: WebSocket) {
    let _ = socket.send(Message::Close(None)).await;
}

/// The next Engine.IO text packet during the upgrade handshake.
async fn next_packet(stream: &mut SplitStream<WebSocket>) -> Option<engine::Packet> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return engine::Packet::decode_text(&text).ok(),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            _ => return None,
        }
    }
}

/// Carries the session over the WebSocket until either side ends it.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold its arguments twice"
)]
pub(super) fn carry<'a, W, R>(
    sink: W,
    mut stream: R,
    link: &'a Link,
    mut frames: MutexGuard<'a, Frames>,
) -> impl Future<Output = ()> + use<'a, W, R>
where
    W: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    async move {
        let closer = link.closer().clone();
        // A Socket.IO client learns why from the close itself; there is no farewell message.
        let writer = outbound::write_loop(sink, &mut *frames, closer.clone(), |_| None);
        let reader = async {
            loop {
                let message = tokio::select! {
                    () = closer.closed() => break,
                    message = stream.next() => message,
                };
                let packet = match message {
                    Some(Ok(Message::Text(text))) => match engine::Packet::decode_text(&text) {
                        Ok(packet) => packet,
                        Err(error) => {
                            tracing::debug!(%error, "Engine.IO protocol violation");
                            closer.close(DisconnectCode::BadRequest);
                            break;
                        }
                    },
                    Some(Ok(Message::Binary(bytes))) => engine::Packet::binary(bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => {
                        closer.gone();
                        break;
                    }
                    Some(Err(error)) => {
                        if client_gone(error) {
                            closer.gone();
                        } else {
                            // Mostly a message over `maxPayload`, which the WebSocket layer
                            // refuses.
                            closer.close(DisconnectCode::BadRequest);
                        }
                        break;
                    }
                };
                if !link.deliver(packet).await {
                    break;
                }
            }
        };
        tokio::join!(reader, writer);
    }
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Message;
    use herald_core::config::Config;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::testing::{self, Peer};

    async fn session() -> Peer {
        let ctx = testing::context(&Config::default()).await;
        let endpoint = Endpoint::new(ctx, TaskTracker::new());
        let permit = testing::permit();
        let (sink, stream, peer) = testing::connection();
        tokio::spawn(open_on(
            sink,
            stream,
            endpoint,
            permit,
            Handshake::default(),
        ));
        peer
    }

    async fn text(peer: &mut Peer) -> String {
        match peer.next().await {
            Some(Message::Text(text)) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_socket_connects_emits_and_gets_its_acks_over_websocket_frames() {
        let mut peer = session().await;
        let open = text(&mut peer).await;
        assert!(
            open.starts_with("0{") && open.contains("\"upgrades\":[]"),
            "{open}"
        );
        peer.send(&["40"]);
        assert!(text(&mut peer).await.starts_with("40{\"sid\""));
        peer.send(&[r#"421["chat","a"]"#, r#"422["chat","b"]"#]);
        assert_eq!(text(&mut peer).await, r#"431[{"offset":1,"ok":true}]"#);
        assert_eq!(text(&mut peer).await, r#"432[{"offset":2,"ok":true}]"#);
        // A protocol violation ends the session after the acks of what came before it.
        peer.send(&[r#"423["chat","c"]"#, "4not a packet"]);
        assert_eq!(text(&mut peer).await, r#"433[{"offset":3,"ok":true}]"#);
        match peer.next().await {
            Some(Message::Close(Some(close))) => assert_eq!(close.code, 3501),
            other => panic!("expected the close frame, got {other:?}"),
        }
    }
}
