//! A native-protocol client for tests and benchmarks: sends commands with ids, matches
//! replies, and queues pushes and the close frame for the test to inspect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// What the server said when it closed the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

/// One event from the server that is not a reply to a command.
#[derive(Debug, Clone)]
pub enum Event {
    Push(Value),
    /// A reply without a known id.
    Stray(Value),
    Closed(Option<Closed>),
}

pub struct NativeClient {
    sink: tokio::sync::Mutex<Sink>,
    pending: Pending,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    next_id: AtomicU64,
    /// The task reading the connection; aborted on drop, which closes the connection.
    reader: tokio::task::AbortHandle,
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl NativeClient {
    /// Opens the WebSocket; does not send `connect`.
    pub async fn open(url: &str) -> Result<Self, String> {
        Self::open_with_headers(url, &[]).await
    }

    /// Opens the WebSocket with extra `headers` on its HTTP request (a `cookie`, as a
    /// browser sends it); does not send `connect`.
    pub async fn open_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Self, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            request.headers_mut().insert(name, value);
        }
        let (ws, _) = connect_async_with_config(request, None, true)
            .await
            .map_err(|e| e.to_string())?;
        let (sink, mut stream) = ws.split();
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let replies = pending.clone();
        let reader = tokio::spawn(async move {
            let mut closed = None;
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(Message::Text(text)) => {
                        let Ok(value) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        let waiter = value
                            .get("id")
                            .and_then(Value::as_u64)
                            .and_then(|id| replies.lock().ok()?.remove(&id));
                        match waiter {
                            Some(waiter) => {
                                let _ = waiter.send(value);
                            }
                            None if value.get("id").is_some() => {
                                let _ = tx.send(Event::Stray(value));
                            }
                            None => {
                                let _ = tx.send(Event::Push(value));
                            }
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        closed = frame.map(|f| Closed {
                            code: f.code.into(),
                            reason: f.reason.to_string(),
                        });
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::Closed(closed));
        });
        Ok(Self {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            events: tokio::sync::Mutex::new(rx),
            next_id: AtomicU64::new(1),
            reader: reader.abort_handle(),
        })
    }

    /// Opens the WebSocket and sends `connect`, expecting success.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = Self::open(url).await?;
        let reply = client.call("connect", json!({})).await?;
        if reply.get("error").is_some() {
            return Err(format!("connect refused: {reply}"));
        }
        Ok(client)
    }

    /// Sends `{"id": N, "method": method, "params": params}` and returns the whole reply.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let command = json!({"id": id, "method": method, "params": params});
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|_| "poisoned")?.insert(id, tx);
        self.send_text(command.to_string()).await?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(format!("connection closed before the reply to {method}")),
            Err(_) => Err(format!("no reply to {method} within 30s")),
        }
    }

    /// Sends a command and returns at once with a receiver for its reply, so that a caller
    /// can keep many commands in flight while sending them in order.
    pub async fn start(
        &self,
        method: &str,
        params: Value,
    ) -> Result<oneshot::Receiver<Value>, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let command = json!({"id": id, "method": method, "params": params});
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|_| "poisoned")?.insert(id, tx);
        self.send_text(command.to_string()).await?;
        Ok(rx)
    }

    /// Like [`call`](Self::call), but returns the `result` or fails with the error.
    pub async fn ok(&self, method: &str, params: Value) -> Result<Value, String> {
        let reply = self.call(method, params).await?;
        match reply.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(format!("{method} failed: {reply}")),
        }
    }

    pub async fn send_text(&self, text: String) -> Result<(), String> {
        self.send(Message::text(text)).await
    }

    pub async fn send(&self, message: Message) -> Result<(), String> {
        self.sink
            .lock()
            .await
            .send(message)
            .await
            .map_err(|e| e.to_string())
    }

    /// The next push or close, waiting at most `timeout`.
    pub async fn next_event(&self, timeout: Duration) -> Option<Event> {
        let mut events = self.events.lock().await;
        tokio::time::timeout(timeout, events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next push, skipping nothing: a close or a timeout yields an error.
    pub async fn next_push(&self, timeout: Duration) -> Result<Value, String> {
        match self.next_event(timeout).await {
            Some(Event::Push(value)) => Ok(value),
            Some(other) => Err(format!("expected a push, got {other:?}")),
            None => Err(format!("no push within {timeout:?}")),
        }
    }

    /// Waits for the server to close the connection and returns its close frame.
    pub async fn closed(&self, timeout: Duration) -> Result<Option<Closed>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Event::Closed(frame)) => return Ok(frame),
                Some(_) => continue,
                None => return Err(format!("connection not closed within {timeout:?}")),
            }
        }
    }
}
