//! Serves gateways' session requests (save, take, touch, drop) from the router queue group.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, BusMessage};
use herald_core::codes::ErrorCode;
use herald_core::subjects::{ROUTER_QUEUE, Subjects};
use herald_proto::bus::v1::{self as pb, SessionReply, SessionRequest, SocketRecord};
use herald_proto::bus::v1::{session_reply, session_request::Action};
use prost::Message;

use super::SessionStore;
use crate::history::StoreError;

pub struct SessionService {
    bus: Arc<dyn Bus>,
    store: Arc<dyn SessionStore>,
    subjects: Subjects,
    concurrency: usize,
    /// Set once the request subscription is live on the bus.
    serving: AtomicBool,
}

impl SessionService {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn SessionStore>,
        subjects: Subjects,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            store,
            subjects,
            concurrency,
            serving: AtomicBool::new(false),
        })
    }

    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Joins the router queue group for session requests and serves them until `shutdown`
    /// completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        let requests = self
            .bus
            .queue_subscribe(self.subjects.session_requests(), ROUTER_QUEUE.into())
            .await?;
        self.bus.flush().await?;
        self.serving.store(true, Ordering::Release);
        let serve = requests.for_each_concurrent(self.concurrency, |message| {
            let this = self.clone();
            async move { this.serve(message).await }
        });
        tokio::select! {
            () = serve => tracing::warn!("session request subscription ended"),
            () = shutdown => {}
        }
        self.serving.store(false, Ordering::Release);
        Ok(())
    }

    async fn serve(&self, message: BusMessage) {
        let result = match SessionRequest::decode(message.payload) {
            Ok(request) => self.handle(request).await.map_err(|e| pb::Error {
                code: ErrorCode::Unavailable.code(),
                temporary: true,
                message: e.to_string(),
            }),
            Err(e) => Err(pb::Error {
                code: ErrorCode::BadRequest.code(),
                temporary: false,
                message: e.to_string(),
            }),
        };
        let result = match result {
            Ok(Some(record)) => Some(session_reply::Result::Record(record)),
            Ok(None) => None,
            Err(error) => Some(session_reply::Result::Error(error)),
        };
        if let Some(reply_to) = message.reply {
            let reply = SessionReply { result }.encode_to_vec();
            if let Err(e) = self.bus.publish(reply_to, Bytes::from(reply)).await {
                tracing::warn!(error = %e, "cannot reply to a gateway");
            }
        }
    }

    async fn handle(&self, request: SessionRequest) -> Result<Option<SocketRecord>, StoreError> {
        let ttl = Duration::from_millis(request.ttl_ms);
        let (pid, holder) = (request.pid.as_str(), request.holder.as_str());
        match request.action {
            Some(Action::Save(record)) => {
                let bytes = Bytes::from(record.encode_to_vec());
                self.store.save(pid, holder, bytes, ttl).await?;
            }
            Some(Action::Take(_)) => {
                let record = self.store.take(pid).await?;
                // A record that does not decode is as good as none: the client starts afresh.
                return Ok(record.and_then(|bytes| SocketRecord::decode(bytes).ok()));
            }
            Some(Action::Touch(_)) => self.store.touch(pid, holder, ttl).await?,
            Some(Action::Drop(_)) => self.store.drop_held(pid, holder).await?,
            None => {}
        }
        Ok(None)
    }
}
