//! Test support for the gateway's unit tests: a session context over the in-memory bus with
//! a real router serving it, and a connection whose frames travel over channels instead of
//! a socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Sink, Stream};
use herald_core::bus::{Bus, MemoryBus};
use herald_core::config::Config;
use herald_core::subjects::Subjects;
use herald_router::RouterService;
use herald_router::history::MemoryHistory;
use herald_router::sync::{MemoryDocuments, SyncService};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::connections::{ConnectionPermit, Connections};
use crate::context::Context;

/// Longest wait for anything in these tests.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A context on a fresh in-memory bus, with a router (history and sync documents in
/// memory) serving it.
pub async fn context(config: &Config) -> Arc<Context> {
    let bus = Arc::new(MemoryBus::new());
    let history = Arc::new(MemoryHistory::new());
    let subjects = Subjects::new(config.nats.subject_prefix.clone());
    let router = RouterService::new(
        bus.clone(),
        history.clone(),
        subjects.clone(),
        config.channels.clone(),
        config.router.clone(),
    );
    let sync = SyncService::new(
        bus.clone(),
        history.clone(),
        Arc::new(MemoryDocuments::new(history)),
        subjects,
        config.channels.clone(),
        config.router.idempotency_ttl,
        config.router.concurrency,
    );
    tokio::spawn(router.clone().run(std::future::pending()));
    tokio::spawn(sync.clone().run(std::future::pending()));
    let ready = async {
        while !(router.ready().await && sync.serving()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(PATIENCE, ready)
        .await
        .expect("the router serves");
    let bus: Arc<dyn Bus> = bus;
    Context::new("test", config, bus).expect("a context")
}

/// A place for one connection, under no limit.
pub fn permit() -> ConnectionPermit {
    Connections::new(0).permit().expect("no limit")
}

/// The client's end of a connection carried by channels.
pub struct Peer {
    to_server: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    from_server: mpsc::UnboundedReceiver<Message>,
}

/// A connection: the server's sink and stream, and the client's end.
pub fn connection() -> (
    impl Sink<Message, Error: Send> + Unpin + Send + 'static,
    impl Stream<Item = Result<Message, axum::Error>> + Unpin + Send + 'static,
    Peer,
) {
    let (to_server, incoming) = mpsc::unbounded_channel();
    let (outgoing, from_server) = mpsc::unbounded_channel::<Message>();
    let stream = Box::pin(futures_util::stream::unfold(incoming, |mut rx| async {
        rx.recv().await.map(|message| (message, rx))
    }));
    let sink = Box::pin(futures_util::sink::unfold(
        outgoing,
        |tx, message: Message| async move { tx.send(message).map(|()| tx) },
    ));
    let peer = Peer {
        to_server,
        from_server,
    };
    (sink, stream, peer)
}

impl Peer {
    /// Sends text frames, all at once: the server finds them waiting together.
    pub fn send(&self, texts: &[&str]) {
        for text in texts {
            let frame = Message::Text(Utf8Bytes::from(text.to_string()));
            self.to_server.send(Ok(frame)).expect("the session reads");
        }
    }

    /// The next frame from the server; `None` once it is gone.
    pub async fn next(&mut self) -> Option<Message> {
        tokio::time::timeout(PATIENCE, self.from_server.recv())
            .await
            .expect("a frame in time")
    }

    /// The next frame, which must be a JSON text.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Some(Message::Text(text)) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}
