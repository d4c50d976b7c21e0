//! An Engine.IO session as its transports see it: the way in (packets for the session),
//! the way out (the session's outbound queue), and which transport holds it.
//!
//! A session outlives HTTP requests: with long-polling, every GET takes what is queued and
//! every POST hands packets in. An upgrade hands the way out to a WebSocket; frames that no
//! GET has taken yet stay in the queue and leave on the WebSocket, so the switch loses
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard, Notify};

use super::{engine, inbound};
use crate::outbound::{Closer, Frame, Frames};

/// Frames one polling response carries at most.
const POLL_BATCH: usize = 256;
/// How long a polling session its client closed still answers a GET (see [`Links::ended`]).
pub const CLOSED_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Which transport carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Polling,
    /// A WebSocket answered the probe; polling goes on until the client sends `upgrade`.
    Upgrading,
    WebSocket,
}

/// What a polling GET receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Frames to send, in order (never empty).
    Frames(Vec<Frame>),
    /// Nothing to send, but the client must stop waiting: an upgrade is under way, or the
    /// client closed the session itself.
    Noop,
    /// The server ended the session.
    Closed,
}

/// Why a polling request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("the session is on WebSocket now")]
    NotPolling,
    #[error("a GET is already waiting on this session")]
    Overlap,
}

pub struct Link {
    pub sid: Arc<str>,
    inbound: inbound::Sender,
    frames: AsyncMutex<Frames>,
    closer: Closer,
    transport: Mutex<Transport>,
    /// Wakes a waiting GET when the session leaves polling. (Not a `watch` channel: that
    /// allocates a third of a kilobyte, kept by every session for its whole life.)
    left_polling: Notify,
    /// Held while a POST hands its packets in, so two POSTs cannot interleave.
    posting: tokio::sync::Mutex<()>,
}

impl Link {
    pub fn new(
        sid: Arc<str>,
        inbound: inbound::Sender,
        frames: Frames,
        closer: Closer,
        transport: Transport,
    ) -> Self {
        Self {
            sid,
            inbound,
            frames: AsyncMutex::new(frames),
            closer,
            transport: Mutex::new(transport),
            left_polling: Notify::new(),
            posting: tokio::sync::Mutex::new(()),
        }
    }

    pub fn closer(&self) -> &Closer {
        &self.closer
    }

    pub fn transport(&self) -> Transport {
        *self.transport_lock()
    }

    fn transport_lock(&self) -> MutexGuard<'_, Transport> {
        // A transport is a plain value, always whole: a poisoned lock is still sound.
        self.transport.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the session to transport `to`, from `from` only if given; `false` if it was
    /// on another. Waiting GETs are woken when it leaves polling.
    fn switch(&self, from: Option<Transport>, to: Transport) -> bool {
        let mut transport = self.transport_lock();
        if from.is_some_and(|from| *transport != from) {
            return false;
        }
        let was = std::mem::replace(&mut *transport, to);
        drop(transport);
        if was == Transport::Polling && to != Transport::Polling {
            self.left_polling.notify_waiters();
        }
        true
    }

    /// Resolves once the session is off polling.
    async fn off_polling(&self) {
        let left = self.left_polling.notified();
        tokio::pin!(left);
        // Registered before the look, so a switch right after it still wakes this one.
        left.as_mut().enable();
        if self.transport() == Transport::Polling {
            left.await;
        }
    }

    /// Hands one packet to the session; `false` once the session has ended.
    pub async fn deliver(&self, packet: engine::Packet) -> bool {
        tokio::select! {
            sent = self.inbound.send(packet) => sent,
            () = self.closer.closed() => false,
        }
    }

    /// Hands the packets of one POST to the session, in order; `None` when another POST is
    /// still doing so. Returns whether the session took them all.
    pub async fn post(&self, packets: Vec<engine::Packet>) -> Option<bool> {
        let _posting = self.posting.try_lock().ok()?;
        for packet in packets {
            if !self.deliver(packet).await {
                return Some(false);
            }
        }
        Some(true)
    }

    /// Waits for frames to send on a polling GET: as many as are queued, within
    /// `max_bytes` of response body, and at least one.
    pub async fn poll(&self, max_bytes: usize) -> Result<Poll, PollError> {
        if self.transport() == Transport::WebSocket {
            return Err(PollError::NotPolling);
        }
        let Ok(mut frames) = self.frames.try_lock() else {
            return Err(PollError::Overlap);
        };
        let first = tokio::select! {
            biased;
            frame = frames.recv() => frame,
            () = self.closer.closed() => None,
            () = self.off_polling() => return Ok(Poll::Noop),
        };
        let Some(first) = first else {
            // A client that closed the session (a close packet) is waiting for nothing.
            return Ok(match self.closer.reason() {
                Some(_) => Poll::Closed,
                None => Poll::Noop,
            });
        };
        let mut bytes = body_bytes(&first);
        let mut batch = vec![first];
        while batch.len() < POLL_BATCH {
            let Some(frame) = frames.try_recv() else {
                break;
            };
            bytes += body_bytes(&frame);
            if bytes > max_bytes {
                frames.put_back(frame);
                break;
            }
            batch.push(frame);
        }
        Ok(Poll::Frames(batch))
    }

    /// A WebSocket answered the probe: pending and new GETs return at once from now on.
    /// `false` when the session is not on polling (already upgraded, or upgrading).
    pub fn begin_upgrade(&self) -> bool {
        self.switch(Some(Transport::Polling), Transport::Upgrading)
    }

    /// The probe came to nothing; polling carries on.
    pub fn abort_upgrade(&self) {
        self.switch(Some(Transport::Upgrading), Transport::Polling);
    }

    /// Moves the way out to a WebSocket: returns the outbound queue once no GET holds it.
    pub async fn take_frames(&self) -> AsyncMutexGuard<'_, Frames> {
        self.switch(None, Transport::WebSocket);
        self.frames.lock().await
    }
}

/// Bytes a frame takes in a polling response: binary ones go as `b` and base64, and each
/// is separated from the next.
fn body_bytes(frame: &Frame) -> usize {
    match frame {
        Frame::Text(text) => text.len() + 1,
        Frame::Binary(bytes) => bytes.len().div_ceil(3) * 4 + 2,
    }
}

/// The Engine.IO sessions this gateway holds, by sid.
#[derive(Default)]
pub struct Links {
    map: Mutex<HashMap<Arc<str>, Arc<Link>>>,
}

impl Links {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Link>>> {
        // Inserts and removes leave the map consistent, so a poisoned lock is still sound.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, link: Arc<Link>) {
        self.map().insert(link.sid.clone(), link);
    }

    pub fn get(&self, sid: &str) -> Option<Arc<Link>> {
        self.map().get(sid).cloned()
    }

    pub fn remove(&self, sid: &str) {
        self.map().remove(sid);
    }

    /// Forgets a session that ended. One on polling stays for [`CLOSED_LINGER`] or until a
    /// GET takes its end, if its client closed it (the client's last GET may have been on
    /// its way when its close packet arrived, and is answered with a noop, as it would have
    /// been had it arrived first, instead of an unknown sid), or if the server closed it
    /// after what was queued (the acks before a protocol violation are still taken).
    pub fn ended(self: &Arc<Self>, sid: &Arc<str>) {
        let linger = self.get(sid).is_some_and(|link| {
            let closer = &link.closer;
            link.transport() == Transport::Polling
                && (closer.reason().is_none() || closer.queued_first())
        });
        if !linger {
            return self.remove(sid);
        }
        let (links, sid) = (self.clone(), sid.clone());
        tokio::spawn(async move {
            tokio::time::sleep(CLOSED_LINGER).await;
            links.remove(&sid);
        });
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// How many sessions are on long-polling (upgrading ones included) and on WebSocket.
    pub fn by_transport(&self) -> (usize, usize) {
        let map = self.map();
        let open = map.values().filter(|link| !link.closer.is_closed());
        let (mut polling, mut websocket) = (0, 0);
        for link in open {
            match link.transport() {
                Transport::WebSocket => websocket += 1,
                Transport::Polling | Transport::Upgrading => polling += 1,
            }
        }
        (polling, websocket)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{self, Bounds, Outbound};
    use axum::extract::ws::Utf8Bytes;
    use herald_core::codes::DisconnectCode;

    fn link(transport: Transport) -> (Link, Outbound, inbound::Receiver) {
        let (inbound, packets) = inbound::channel(8, 1 << 20);
        let bounds = Bounds {
            frames: 8,
            bytes: 1 << 20,
        };
        let (outbound, frames) = outbound::channel(bounds);
        let link = Link::new(
            "sid".into(),
            inbound,
            frames,
            outbound.closer().clone(),
            transport,
        );
        (link, outbound, packets)
    }

    fn text(s: &'static str) -> Frame {
        Frame::Text(Utf8Bytes::from_static(s))
    }

    /// A GET on `link`, once it waits with the queue in hand.
    async fn waiting_get(link: &Arc<Link>) -> tokio::task::JoinHandle<Result<Poll, PollError>> {
        let get = tokio::spawn({
            let link = link.clone();
            async move { link.poll(usize::MAX).await }
        });
        while link.frames.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        get
    }

    #[tokio::test]
    async fn a_get_takes_everything_queued() {
        let (link, out, _packets) = link(Transport::Polling);
        out.send(text("40"));
        out.send(text("42[\"a\"]"));
        assert_eq!(
            link.poll(usize::MAX).await,
            Ok(Poll::Frames(vec![text("40"), text("42[\"a\"]")]))
        );
    }

    #[tokio::test]
    async fn a_get_takes_what_fits_in_its_bytes_and_leaves_the_rest_in_order() {
        let (link, out, _packets) = link(Transport::Polling);
        let frame = |n: u8| Frame::Text(String::from_utf8(vec![b'a' + n; 99]).unwrap().into());
        for n in 0..3 {
            out.send(frame(n));
        }
        // 100 bytes each in a body: two fit in 250, the third waits for the next GET.
        assert_eq!(
            link.poll(250).await,
            Ok(Poll::Frames(vec![frame(0), frame(1)]))
        );
        assert_eq!(link.poll(250).await, Ok(Poll::Frames(vec![frame(2)])));
        // One frame larger than the budget still goes, alone.
        out.send(frame(3));
        assert_eq!(link.poll(10).await, Ok(Poll::Frames(vec![frame(3)])));
    }

    #[tokio::test]
    async fn a_second_get_overlaps() {
        let (link, _out, _packets) = link(Transport::Polling);
        let link = Arc::new(link);
        let first = waiting_get(&link).await;
        assert_eq!(link.poll(usize::MAX).await, Err(PollError::Overlap));
        link.closer().close(DisconnectCode::BadRequest);
        assert_eq!(first.await.unwrap(), Ok(Poll::Closed));
    }

    #[tokio::test]
    async fn a_waiting_get_gets_a_noop_when_the_client_closes_and_a_close_when_the_server_does() {
        for (end, expected) in [
            (None, Poll::Noop),
            (Some(DisconnectCode::Shutdown), Poll::Closed),
        ] {
            let (link, _out, _packets) = link(Transport::Polling);
            let link = Arc::new(link);
            let waiting = waiting_get(&link).await;
            match end {
                // A close packet POSTed by the client.
                None => link.closer().gone(),
                Some(code) => link.closer().close(code),
            }
            assert_eq!(waiting.await.unwrap(), Ok(expected));
        }
    }

    #[tokio::test]
    async fn an_upgrade_releases_a_waiting_get_and_keeps_the_queue() {
        let (link, out, _packets) = link(Transport::Polling);
        let link = Arc::new(link);
        let waiting = waiting_get(&link).await;
        assert!(link.begin_upgrade());
        assert!(!link.begin_upgrade());
        assert_eq!(waiting.await.unwrap(), Ok(Poll::Noop));
        out.send(text("42[\"late\"]"));
        let mut frames = link.take_frames().await;
        assert_eq!(frames.recv().await, Some(text("42[\"late\"]")));
        assert_eq!(link.poll(usize::MAX).await, Err(PollError::NotPolling));
    }

    #[tokio::test]
    async fn posts_reach_the_session_in_order() {
        let (link, _out, mut packets) = link(Transport::Polling);
        let sent = vec![
            engine::Packet::text(engine::PacketType::Message, "0"),
            engine::Packet::empty(engine::PacketType::Pong),
        ];
        assert_eq!(link.post(sent.clone()).await, Some(true));
        for expected in sent {
            assert_eq!(packets.recv().await.map(|i| i.packet), Some(expected));
        }
    }
}
