//! The router service: serves publish and history requests from the router queue group.
//!
//! A publish request becomes a publication in three steps: the history store appends it
//! (assigning the offset), the router publishes it on the channel's delivery subject, and
//! then replies to the gateway with the position. Delivery goes out before the reply on the
//! same NATS connection, so a publisher subscribed to its own channel sees the publication
//! before its acknowledgement. Many requests are in flight at once, pipelined on the store.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::bus::{Bus, BusError, BusMessage};
use herald_core::channel;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelsConfig, RouterConfig};
use herald_core::subjects::{ROUTER_QUEUE, Subjects};
use herald_core::time::unix_micros;
use herald_proto::bus::v1::{
    self as pb, HistoryReply, HistoryRequest, Position, Publication, PublishReply, PublishRequest,
    history_reply, publish_reply,
};
use prost::Message;

use crate::history::{Append, HistoryStore, Limits, Query};

/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Most publications one history request returns.
pub const MAX_HISTORY_LIMIT: u32 = 10_000;

enum Request {
    Publish(BusMessage),
    History(BusMessage),
}

pub struct RouterService {
    bus: Arc<dyn Bus>,
    store: Arc<dyn HistoryStore>,
    subjects: Subjects,
    channels: ChannelsConfig,
    config: RouterConfig,
    /// Set once the request subscriptions are live on the bus.
    serving: AtomicBool,
}

impl RouterService {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn HistoryStore>,
        subjects: Subjects,
        channels: ChannelsConfig,
        config: RouterConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            store,
            subjects,
            channels,
            config,
            serving: AtomicBool::new(false),
        })
    }

    /// Joins the router queue group and serves requests until `shutdown` completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        let publishes = self
            .bus
            .queue_subscribe(self.subjects.publish_requests(), ROUTER_QUEUE.into())
            .await?;
        let histories = self
            .bus
            .queue_subscribe(self.subjects.history_requests(), ROUTER_QUEUE.into())
            .await?;
        self.bus.flush().await?;
        self.serving.store(true, Ordering::Release);
        let requests = futures_util::stream::select(
            publishes.map(Request::Publish),
            histories.map(Request::History),
        );
        let serve = requests.for_each_concurrent(self.config.concurrency, |request| {
            let this = self.clone();
            async move { this.serve(request).await }
        });
        tokio::select! {
            () = serve => tracing::warn!("router request subscriptions ended"),
            () = shutdown => tracing::info!("router stopping"),
        }
        self.serving.store(false, Ordering::Release);
        Ok(())
    }

    async fn serve(&self, request: Request) {
        let (reply_to, answer) = match request {
            Request::Publish(message) => {
                let reply = match PublishRequest::decode(message.payload) {
                    Ok(req) => self.publish(req).await,
                    Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
                };
                let result = match reply {
                    Ok(position) => publish_reply::Result::Position(position),
                    Err(refusal) => publish_reply::Result::Error(to_pb(refusal)),
                };
                let encoded = PublishReply {
                    result: Some(result),
                }
                .encode_to_vec();
                (message.reply, encoded)
            }
            Request::History(message) => {
                let reply = match HistoryRequest::decode(message.payload) {
                    Ok(req) => self.history(req).await,
                    Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
                };
                let result = match reply {
                    Ok(page) => history_reply::Result::Page(page),
                    Err(refusal) => history_reply::Result::Error(to_pb(refusal)),
                };
                let encoded = HistoryReply {
                    result: Some(result),
                }
                .encode_to_vec();
                (message.reply, encoded)
            }
        };
        if let Some(reply_to) = reply_to
            && let Err(e) = self.bus.publish(reply_to, Bytes::from(answer)).await
        {
            tracing::warn!(error = %e, "cannot reply to a gateway");
        }
    }

    /// Stores and delivers one publication; returns where it landed.
    pub async fn publish(&self, req: PublishRequest) -> Result<Position, Refusal> {
        channel::validate(&req.channel)
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))?;
        let rules = self.channels.rules_for(&req.channel);
        if req.data.len() > rules.max_message_size {
            return Err(Refusal::new(
                ErrorCode::MessageTooLarge,
                format!("data exceeds {} bytes", rules.max_message_size),
            ));
        }
        if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("idempotency_key exceeds {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        let accepted_at_us = unix_micros();
        let mut publication = Publication {
            channel: req.channel,
            offset: 0,
            epoch: String::new(),
            data: req.data,
            origin: req.origin,
            accepted_at_us,
        };
        if rules.has_history() {
            let appended = self
                .store
                .append(Append {
                    channel: publication.channel.clone(),
                    data: publication.data.clone(),
                    origin: publication.origin.clone(),
                    idempotency_key: Some(req.idempotency_key).filter(|k| !k.is_empty()),
                    accepted_at_us,
                    limits: Limits {
                        size: rules.history_size,
                        ttl: rules.history_ttl,
                        meta_ttl: self.config.stream_meta_ttl,
                        idempotency_ttl: self.config.idempotency_ttl,
                    },
                })
                .await
                .map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
            publication.offset = appended.offset;
            publication.epoch = appended.epoch;
            // A duplicate is delivered again on purpose: if the first attempt was stored but
            // its delivery was lost (a router crash between the two), this one completes it.
            // Gateways drop offsets they have already delivered.
        }
        let position = Position {
            offset: publication.offset,
            epoch: publication.epoch.clone(),
        };
        let subject = self.subjects.delivery(&publication.channel);
        if let Err(e) = self
            .bus
            .publish(subject, Bytes::from(publication.encode_to_vec()))
            .await
        {
            if rules.has_history() {
                // Stored: subscribers will fill the gap from history.
                tracing::warn!(error = %e, "publication stored but not delivered live");
            } else {
                return Err(Refusal::new(ErrorCode::Unavailable, e.to_string()));
            }
        }
        Ok(position)
    }

    /// Reads a page of a channel's history.
    pub async fn history(&self, req: HistoryRequest) -> Result<pb::HistoryPage, Refusal> {
        channel::validate(&req.channel)
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))?;
        if !self.channels.rules_for(&req.channel).has_history() {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "the channel keeps no history",
            ));
        }
        let query = Query {
            since: req.since,
            limit: req.limit.min(MAX_HISTORY_LIMIT),
            reverse: req.reverse,
        };
        let page = self
            .store
            .read(&req.channel, query, self.config.stream_meta_ttl)
            .await
            .map_err(|e| Refusal::new(ErrorCode::Unavailable, e.to_string()))?;
        Ok(pb::HistoryPage {
            publications: page.publications,
            position: Some(page.position),
        })
    }

    /// Whether this router can serve: its subscriptions are live, the bus is connected and
    /// the store answers.
    pub async fn ready(&self) -> bool {
        self.serving.load(Ordering::Acquire)
            && self.bus.is_connected()
            && self.store.ping().await.is_ok()
    }
}

fn to_pb(refusal: Refusal) -> pb::Error {
    pb::Error {
        code: refusal.code.code(),
        temporary: refusal.code.temporary(),
        message: refusal.message,
    }
}
