//! One connection's way out: a bounded queue of encoded frames, a close signal, and the
//! writer task that drains both onto the socket.
//!
//! The queue is bounded twice, in frames and in bytes, and the bounds are the slow-consumer
//! rule: a frame that does not fit means the client has stopped keeping up, and the
//! connection is closed with [`DisconnectCode::SlowConsumer`] instead of buffering without
//! limit. The writer drains everything queued into one write and one flush.

use std::borrow::BorrowMut;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use herald_core::codes::DisconnectCode;
use tokio::sync::Notify;

use crate::mailbox::{self, Refused};

/// Frames written per flush at most, so one busy connection cannot starve its own closing.
const WRITE_BATCH: usize = 256;
/// Time allowed for the goodbye (disconnect push and close frame) to a client. A slow
/// consumer's goodbye waits behind what its socket still holds, so it gets a few seconds;
/// by then the queue is gone, and only the socket's buffers hold memory.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for answering a client's close frame.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// Ends a connection once, with the reason of whoever ended it first.
#[derive(Clone, Default)]
pub struct Closer {
    inner: Arc<CloserInner>,
}

#[derive(Default)]
struct CloserInner {
    ending: OnceLock<Ending>,
    /// Wakes those waiting for the close. (Not a `CancellationToken`, which allocates a
    /// tree node of its own for every connection.)
    closing: Notify,
}

#[derive(Clone, Copy)]
struct Ending {
    /// `None` when the client went away: there is nobody to tell why.
    reason: Option<DisconnectCode>,
    /// Whether what was queued before the close still goes out before the goodbye.
    queued_first: bool,
}

impl Closer {
    /// Closes with `code` at once, unless the connection is already closing: what is
    /// queued is dropped (a slow consumer, a drain, an expired token).
    pub fn close(&self, code: DisconnectCode) {
        self.set(Some(code), false);
    }

    /// Closes with `code` once what is queued now has been written, unless the connection
    /// is already closing: the answers to a client's commands before the one that broke
    /// the protocol reach it before the close does.
    pub fn close_after_queued(&self, code: DisconnectCode) {
        self.set(Some(code), true);
    }

    /// Marks the client as gone.
    pub fn gone(&self) {
        self.set(None, false);
    }

    fn set(&self, reason: Option<DisconnectCode>, queued_first: bool) {
        let ending = Ending {
            reason,
            queued_first,
        };
        if self.inner.ending.set(ending).is_ok() {
            self.inner.closing.notify_waiters();
        }
    }

    /// Whether what was queued before the close still goes out (see
    /// [`Self::close_after_queued`]).
    pub fn queued_first(&self) -> bool {
        self.inner.ending.get().is_some_and(|e| e.queued_first)
    }

    pub async fn closed(&self) {
        let closing = self.inner.closing.notified();
        tokio::pin!(closing);
        // Registered before the look, so a close right after it still wakes this one.
        closing.as_mut().enable();
        if !self.is_closed() {
            closing.await;
        }
    }

    pub fn is_closed(&self) -> bool {
        self.inner.ending.get().is_some()
    }

    /// Why the server closed the connection, if it did.
    pub fn reason(&self) -> Option<DisconnectCode> {
        self.inner.ending.get().and_then(|e| e.reason)
    }
}

/// One WebSocket frame to write: text (JSON, Engine.IO packets) or binary (Socket.IO
/// attachments). Both share their buffer when cloned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl From<Utf8Bytes> for Frame {
    fn from(text: Utf8Bytes) -> Self {
        Self::Text(text)
    }
}

/// A message encoded once for the wire and shared by every connection it goes to: a text
/// frame, and the binary frames that follow it (a Socket.IO binary event's attachments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub text: Utf8Bytes,
    pub binary: Arc<[Bytes]>,
}

impl Encoded {
    pub fn new(text: impl Into<Utf8Bytes>, binary: Vec<Bytes>) -> Self {
        Self {
            text: text.into(),
            binary: binary.into(),
        }
    }

    /// A text frame alone.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Self::new(text, Vec::new())
    }

    /// The frames, sharing their bytes with every other connection's.
    pub fn frames(&self) -> impl Iterator<Item = Frame> + '_ {
        std::iter::once(Frame::Text(self.text.clone()))
            .chain(self.binary.iter().cloned().map(Frame::Binary))
    }
}

impl From<Frame> for Message {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Text(text) => Message::Text(text),
            Frame::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

impl Frame {
    /// Bytes the frame holds.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(text) => text.len(),
            Self::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How much a connection may have queued: frames, and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub frames: usize,
    pub bytes: usize,
}

/// The sending side of a connection, cheap to clone into the hub.
#[derive(Clone)]
pub struct Outbound {
    frames: mailbox::Sender<Frame>,
    closer: Closer,
    /// Bytes queued now, and the most there may be.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    max_frames: usize,
}

impl Outbound {
    /// Queues a frame without waiting. A full queue (in frames or bytes) closes the
    /// connection as a slow consumer; returns whether the frame was queued.
    pub fn send(&self, frame: impl Into<Frame>) -> bool {
        let frame = frame.into();
        let len = frame.len();
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.closer.close(DisconnectCode::SlowConsumer);
            return false;
        }
        match self.frames.try_send(frame, self.max_frames) {
            Ok(()) => true,
            Err(refused) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if refused == Refused::Full {
                    self.closer.close(DisconnectCode::SlowConsumer);
                }
                false
            }
        }
    }

    /// Queues every frame of `encoded`; stops at the first that does not fit.
    pub fn send_encoded(&self, encoded: &Encoded) -> bool {
        encoded.frames().all(|frame| self.send(frame))
    }

    pub fn closer(&self) -> &Closer {
        &self.closer
    }
}

/// Creates a connection's outbound queue within `bounds`.
pub fn channel(bounds: Bounds) -> (Outbound, Frames) {
    let (frames, receiver) = mailbox::mailbox();
    let queued = Arc::new(AtomicUsize::new(0));
    let outbound = Outbound {
        frames,
        closer: Closer::default(),
        queued: queued.clone(),
        max_bytes: bounds.bytes,
        max_frames: bounds.frames,
    };
    let frames = Frames {
        receiver,
        queued,
        put_back: None,
    };
    (outbound, frames)
}

/// The receiving side of a connection's queue, for whichever transport writes it.
pub struct Frames {
    receiver: mailbox::Receiver<Frame>,
    queued: Arc<AtomicUsize>,
    /// A frame taken but not sent, which goes first next time.
    put_back: Option<Frame>,
}

impl Frames {
    fn taken(&self, frame: Frame) -> Frame {
        self.queued.fetch_sub(frame.len(), Ordering::Relaxed);
        frame
    }

    /// The next frame; `None` once the queue is closed and empty.
    pub async fn recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.put_back.take() {
            return Some(frame);
        }
        let frame = self.receiver.recv().await?;
        Some(self.taken(frame))
    }

    /// The next frame if one is queued now.
    pub fn try_recv(&mut self) -> Option<Frame> {
        if let Some(frame) = self.put_back.take() {
            return Some(frame);
        }
        let frame = self.receiver.try_recv()?;
        Some(self.taken(frame))
    }

    /// Takes `frame` back: it is the next one out. (Its bytes no longer count against the
    /// budget: it holds no more memory than when it was taken.)
    pub fn put_back(&mut self, frame: Frame) {
        self.put_back = Some(frame);
    }

    /// Closes the queue: nothing more comes in, what it holds can still be taken.
    pub fn close(&mut self) {
        self.receiver.close();
    }

    /// Closes the queue and frees what it holds.
    pub fn drain(&mut self) {
        self.put_back = None;
        self.receiver.close();
        while self.try_recv().is_some() {}
    }
}

/// Writes queued frames until the connection closes. When the server closed it, the client
/// gets `farewell(code)` (a protocol-specific disconnect message, if any) and a close frame.
///
/// `frames` is the queue itself or a borrow of it: a writer that lives as long as its
/// connection owns the queue, one of several transports of a session borrows it.
///
/// Not an `async fn`: that would hold each argument twice for the connection's life.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` would hold its arguments twice"
)]
pub fn write_loop<S, F>(
    mut sink: S,
    mut frames: F,
    closer: Closer,
    farewell: impl Fn(DisconnectCode) -> Option<Utf8Bytes>,
) -> impl Future<Output = ()>
where
    S: Sink<Message> + Unpin,
    F: BorrowMut<Frames>,
{
    async move {
        loop {
            let first = tokio::select! {
                biased;
                () = closer.closed() => break,
                frame = frames.borrow_mut().recv() => frame,
            };
            let Some(first) = first else { break };
            // Boxed, as is the goodbye: a writer waits far more than it writes, and its task
            // then holds only the wait above.
            let write = Box::pin(write_batch(&mut sink, frames.borrow_mut(), first, &closer));
            match write.await {
                Written::All => {}
                Written::Closed => break,
                Written::Failed => {
                    closer.gone();
                    break;
                }
            }
        }
        Box::pin(goodbye(sink, frames.borrow_mut(), &closer, farewell)).await;
    }
}

/// How writing one batch ended.
enum Written {
    All,
    /// The connection closed while it was written.
    Closed,
    /// The socket failed: the client is gone.
    Failed,
}

/// Writes `first` and what is queued behind it, up to [`WRITE_BATCH`] frames, in one flush.
async fn write_batch<S>(sink: &mut S, frames: &mut Frames, first: Frame, closer: &Closer) -> Written
where
    S: Sink<Message> + Unpin,
{
    let write = async {
        sink.feed(first.into()).await?;
        for _ in 1..WRITE_BATCH {
            match frames.try_recv() {
                Some(frame) => sink.feed(frame.into()).await?,
                None => break,
            }
        }
        sink.flush().await
    };
    tokio::pin!(write);
    // A client that stops reading blocks the flush; closing must still win.
    tokio::select! {
        biased;
        () = closer.closed() => {
            if closer.queued_first() {
                // The frames this write took are answers the client is owed.
                let _ = tokio::time::timeout(FAREWELL_TIMEOUT, &mut write).await;
            }
            Written::Closed
        }
        written = &mut write => match written {
            Ok(()) => Written::All,
            Err(_) => Written::Failed,
        },
    }
}

/// Ends the connection's way out: the close frame that answers a client's, or the server's
/// goodbye after what it still owes the client.
async fn goodbye<S>(
    mut sink: S,
    frames: &mut Frames,
    closer: &Closer,
    farewell: impl Fn(DisconnectCode) -> Option<Utf8Bytes>,
) where
    S: Sink<Message> + Unpin,
{
    let Some(code) = closer.reason() else {
        frames.drain();
        // The client left. If it sent a close frame, the WebSocket layer has queued the
        // reply that completes the closing handshake (RFC 6455, 5.5.1): send it, so the
        // client sees a clean close rather than a dropped connection.
        let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, sink.close()).await;
        return;
    };
    if closer.queued_first() {
        // What was queued when the connection closed goes first, and nothing after it.
        frames.close();
        let queued = async {
            while let Some(frame) = frames.try_recv() {
                sink.feed(frame.into()).await?;
            }
            sink.flush().await
        };
        let _ = tokio::time::timeout(FAREWELL_TIMEOUT, queued).await;
    }
    // What is still queued will never be sent: free it before waiting on the goodbye.
    frames.drain();
    let goodbye = async {
        if let Some(frame) = farewell(code) {
            sink.send(Message::Text(frame)).await?;
        }
        let close = CloseFrame {
            code: code.code(),
            reason: code.reason().into(),
        };
        sink.send(Message::Close(Some(close))).await
    };
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, goodbye).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(message: &Message) -> &str {
        match message {
            Message::Text(text) => text.as_str(),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    async fn written(closing: impl Fn(&Closer)) -> Vec<Message> {
        let bounds = Bounds {
            frames: 8,
            bytes: 1024,
        };
        let (outbound, mut frames) = channel(bounds);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = futures_util::sink::unfold(tx, |tx, message: Message| async move {
            tx.send(message).map(|()| tx)
        });
        let sink = Box::pin(sink);
        for reply in ["one", "two"] {
            outbound.send(Utf8Bytes::from(reply));
        }
        closing(outbound.closer());
        let farewell = |code: DisconnectCode| Some(Utf8Bytes::from(format!("bye {}", code.code())));
        write_loop(sink, &mut frames, outbound.closer().clone(), farewell).await;
        let mut messages = Vec::new();
        while let Ok(message) = rx.try_recv() {
            messages.push(message);
        }
        messages
    }

    #[tokio::test]
    async fn a_close_after_queued_sends_the_queue_then_the_goodbye() {
        let code = DisconnectCode::BadRequest;
        let messages = written(|closer| closer.close_after_queued(code)).await;
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert_eq!(text(&messages[0]), "one");
        assert_eq!(text(&messages[1]), "two");
        assert_eq!(text(&messages[2]), format!("bye {}", code.code()));
        let Message::Close(Some(close)) = &messages[3] else {
            panic!("not a close frame: {:?}", messages[3]);
        };
        assert_eq!(close.code, code.code());
    }

    #[tokio::test]
    async fn waiting_for_the_close_ends_whenever_it_comes_with_the_first_reason() {
        let closer = Closer::default();
        let waiting: Vec<_> = (0..3)
            .map(|_| {
                let closer = closer.clone();
                tokio::spawn(async move { closer.closed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(
            waiting.iter().all(|w| !w.is_finished()),
            "nothing closed yet"
        );
        closer.close(DisconnectCode::SlowConsumer);
        for waiter in waiting {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("every waiter is woken")
                .expect("and ends cleanly");
        }
        // Once closed, a wait ends at once, and a later close changes nothing.
        closer.closed().await;
        closer.gone();
        assert!(closer.is_closed());
        assert_eq!(closer.reason(), Some(DisconnectCode::SlowConsumer));
    }

    #[tokio::test]
    async fn a_close_drops_the_queue() {
        let messages = written(|closer| closer.close(DisconnectCode::SlowConsumer)).await;
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(text(&messages[0]).starts_with("bye"));
        assert!(matches!(messages[1], Message::Close(Some(_))));
    }
}
