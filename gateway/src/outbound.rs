//! One connection's way out: a bounded queue of encoded frames, a close signal, and the
//! writer task that drains both onto the socket.
//!
//! The queue is bounded twice, in frames and in bytes, and the bounds are the slow-consumer
//! rule: a frame that does not fit means the client has stopped keeping up, and the
//! connection is closed with [`DisconnectCode::SlowConsumer`] instead of buffering without
//! limit. The writer drains everything queued into one write and one flush.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use herald_core::codes::DisconnectCode;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

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
    /// `None` when the client went away: there is nobody to tell why.
    reason: OnceLock<Option<DisconnectCode>>,
    token: CancellationToken,
}

impl Closer {
    /// Closes with `code`, unless the connection is already closing.
    pub fn close(&self, code: DisconnectCode) {
        self.set(Some(code));
    }

    /// Marks the client as gone.
    pub fn gone(&self) {
        self.set(None);
    }

    fn set(&self, reason: Option<DisconnectCode>) {
        if self.inner.reason.set(reason).is_ok() {
            self.inner.token.cancel();
        }
    }

    pub async fn closed(&self) {
        self.inner.token.cancelled().await;
    }

    pub fn is_closed(&self) -> bool {
        self.inner.token.is_cancelled()
    }

    /// Why the server closed the connection, if it did.
    pub fn reason(&self) -> Option<DisconnectCode> {
        self.inner.reason.get().copied().flatten()
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
    frames: mpsc::Sender<Frame>,
    closer: Closer,
    /// Bytes queued now, and the most there may be.
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
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
        match self.frames.try_send(frame) {
            Ok(()) => true,
            Err(error) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if let TrySendError::Full(_) = error {
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
    let (frames, receiver) = mpsc::channel(bounds.frames);
    let queued = Arc::new(AtomicUsize::new(0));
    let outbound = Outbound {
        frames,
        closer: Closer::default(),
        queued: queued.clone(),
        max_bytes: bounds.bytes,
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
    receiver: mpsc::Receiver<Frame>,
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
        let frame = self.receiver.try_recv().ok()?;
        Some(self.taken(frame))
    }

    /// Takes `frame` back: it is the next one out. (Its bytes no longer count against the
    /// budget: it holds no more memory than when it was taken.)
    pub fn put_back(&mut self, frame: Frame) {
        self.put_back = Some(frame);
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
pub async fn write_loop<S>(
    mut sink: S,
    frames: &mut Frames,
    closer: Closer,
    farewell: impl Fn(DisconnectCode) -> Option<Utf8Bytes>,
) where
    S: Sink<Message> + Unpin,
{
    loop {
        let first = tokio::select! {
            biased;
            () = closer.closed() => break,
            frame = frames.recv() => frame,
        };
        let Some(first) = first else { break };
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
        // A client that stops reading blocks the flush; closing must still win.
        let written = tokio::select! {
            biased;
            () = closer.closed() => break,
            written = write => written,
        };
        if written.is_err() {
            closer.gone();
            break;
        }
    }
    // What is still queued will never be sent: free it before waiting on the goodbye.
    frames.drain();
    let Some(code) = closer.reason() else {
        // The client left. If it sent a close frame, the WebSocket layer has queued the
        // reply that completes the closing handshake (RFC 6455, 5.5.1): send it, so the
        // client sees a clean close rather than a dropped connection.
        let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, sink.close()).await;
        return;
    };
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
