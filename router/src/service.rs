//! The router service: serves publish and history requests from the router queue group.
//!
//! A publish request becomes a publication in three steps: the history store appends it
//! (assigning the offset), the router publishes it on the channel's delivery subject, and
//! then replies to the gateway with the position. Delivery goes out before the reply on the
//! same NATS connection, so a publisher subscribed to its own channel sees the publication
//! before its acknowledgement. Many requests are in flight at once, pipelined on the store.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError};
use herald_core::channel;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelRules, ChannelsConfig, RouterConfig};
use herald_core::metrics::PUBLICATIONS;
use herald_core::publish::ENVELOPE_SLACK;
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_proto::bus::v1::{
    self as pb, ClientInfo, HistoryReply, HistoryRequest, Position, Publication, PublishBatch,
    PublishBatchReply, PublishReply, PublishRequest, history_reply, publish_reply,
};
use prost::Message;

use crate::history::{Append, Entry, HistoryStore, Limits, Query};
use crate::queue::{QueueService, Seat};

pub use herald_core::config::MAX_HISTORY_LIMIT;
pub use herald_core::publish::MAX_IDEMPOTENCY_KEY_LEN;

/// The requests of one channel within a batch.
struct Group {
    channel: String,
    rules: ChannelRules,
    indices: Vec<usize>,
}

/// The router's subjects, in the order of [`QueueService::subjects`].
const PUBLISH_REQUESTS: usize = 0;
const HISTORY_REQUESTS: usize = 1;

pub struct RouterService {
    bus: Arc<dyn Bus>,
    store: Arc<dyn HistoryStore>,
    subjects: Subjects,
    channels: ChannelsConfig,
    config: RouterConfig,
    seat: Seat,
    /// Counts every publication stored and delivered; kept, as it is counted per
    /// publication.
    published: metrics::Counter,
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
            seat: Seat::new(config.concurrency),
            config,
            published: metrics::counter!(PUBLICATIONS),
        })
    }

    /// Joins the router queue group and serves requests until `shutdown` completes, then
    /// answers the requests it has received and leaves the group.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        if self.seat.serve(self.as_ref(), &self.bus, shutdown).await? {
            tracing::info!("router stopped: every request received was answered");
        }
        Ok(())
    }

    async fn answer_publishes(&self, request: Bytes) -> Vec<u8> {
        let replies = match PublishBatch::decode(request) {
            Ok(batch) => self.publish_batch(batch.requests).await,
            Err(e) => vec![Err(Refusal::new(ErrorCode::BadRequest, e.to_string()))],
        };
        let replies = replies
            .into_iter()
            .map(|reply| PublishReply {
                result: Some(match reply {
                    Ok(position) => publish_reply::Result::Position(position),
                    Err(refusal) => publish_reply::Result::Error(refusal.into()),
                }),
            })
            .collect();
        PublishBatchReply { replies }.encode_to_vec()
    }

    async fn answer_history(&self, request: Bytes) -> Vec<u8> {
        let reply = match HistoryRequest::decode(request) {
            Ok(request) => self.history(request).await,
            Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
        };
        let result = match reply {
            Ok(page) => history_reply::Result::Page(page),
            Err(refusal) => history_reply::Result::Error(refusal.into()),
        };
        HistoryReply {
            result: Some(result),
        }
        .encode_to_vec()
    }

    /// Stores and delivers one publication; returns where it landed.
    pub async fn publish(&self, request: PublishRequest) -> Result<Position, Refusal> {
        let mut replies = self.publish_batch(vec![request]).await;
        replies
            .pop()
            .unwrap_or_else(|| Err(Refusal::new(ErrorCode::Internal, "no reply")))
    }

    /// Stores and delivers a batch of publications; one result per request, in order.
    ///
    /// The requests of each channel are appended with one store call, in batch order, so
    /// they get consecutive offsets in that order. Channels are independent and are
    /// appended concurrently.
    pub async fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Vec<Result<Position, Refusal>> {
        let accepted_at_us = unix_micros();
        let mut results: Vec<Option<Result<Position, Refusal>>> = vec![None; requests.len()];
        let mut groups: Vec<Group> = Vec::new();
        // A gateway's request may gather many connections' publishes on many channels.
        let mut group_of: HashMap<&str, usize> = HashMap::new();
        for (index, request) in requests.iter().enumerate() {
            match self.check(request) {
                Ok(rules) => match group_of.get(request.channel.as_str()) {
                    Some(&group) => groups[group].indices.push(index),
                    None => {
                        group_of.insert(&request.channel, groups.len());
                        groups.push(Group {
                            channel: request.channel.clone(),
                            rules,
                            indices: vec![index],
                        });
                    }
                },
                Err(refusal) => results[index] = Some(Err(refusal)),
            }
        }
        let stored = futures_util::future::join_all(
            groups
                .iter()
                .map(|group| self.store(group, &requests, accepted_at_us)),
        )
        .await;
        for (group, stored) in groups.iter().zip(stored) {
            match stored {
                Ok(publications) => {
                    for (&index, publication) in group.indices.iter().zip(publications) {
                        results[index] = Some(self.deliver(&group.rules, publication).await);
                    }
                }
                Err(refusal) => {
                    for &index in &group.indices {
                        results[index] = Some(Err(refusal.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Refusal::new(ErrorCode::Internal, "not handled"))))
            .collect()
    }

    /// Validates one request. Its size was checked by whoever took the publish (a gateway
    /// or the server API), against the limit that applies to it: the channel's
    /// `max_message_size` or Socket.IO's `max_payload`.
    fn check(&self, request: &PublishRequest) -> Result<ChannelRules, Refusal> {
        channel::validate(&request.channel)
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))?;
        let rules = self.channels.rules_for(&request.channel);
        if rules.sync {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "the channel carries a sync document: patch it instead of publishing",
            ));
        }
        if request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("idempotency_key exceeds {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        Ok(rules)
    }

    /// Appends one channel's requests to its history (when it keeps one) and returns the
    /// publications to deliver, in order.
    async fn store(
        &self,
        group: &Group,
        requests: &[PublishRequest],
        accepted_at_us: u64,
    ) -> Result<Vec<Publication>, Refusal> {
        let mut publications: Vec<Publication> = group
            .indices
            .iter()
            .map(|&i| Publication {
                channel: group.channel.clone(),
                data: requests[i].data.clone(),
                attachments: requests[i].attachments.clone(),
                origin: requests[i].origin.clone(),
                publisher: publisher(&requests[i]),
                accepted_at_us,
                ..Default::default()
            })
            .collect();
        if !group.rules.has_history() {
            return Ok(publications);
        }
        let entries = group
            .indices
            .iter()
            .map(|&i| Entry {
                data: requests[i].data.clone(),
                attachments: requests[i].attachments.clone(),
                publisher: publisher(&requests[i]),
                idempotency_key: Some(requests[i].idempotency_key.clone())
                    .filter(|k| !k.is_empty()),
                accepted_at_us,
            })
            .collect();
        let rules = &group.rules;
        let appended = self
            .store
            .append(Append {
                channel: group.channel.clone(),
                entries,
                limits: Limits {
                    size: rules.history_size,
                    ttl: rules.history_ttl,
                    meta_ttl: self.config.stream_meta_ttl,
                    idempotency_ttl: self.config.idempotency_ttl,
                },
            })
            .await
            .map_err(Refusal::from)?;
        if appended.len() != publications.len() {
            return Err(Refusal::new(
                ErrorCode::Internal,
                "history store lost entries",
            ));
        }
        // A duplicate is delivered again on purpose: if the first attempt was stored but its
        // delivery was lost (a router crash between the two), this one completes it.
        // Gateways drop offsets they have already delivered.
        for (publication, appended) in publications.iter_mut().zip(appended) {
            publication.offset = appended.offset;
            publication.epoch = appended.epoch;
        }
        Ok(publications)
    }

    /// Publishes on the channel's delivery subject; returns the publication's position.
    async fn deliver(
        &self,
        rules: &ChannelRules,
        publication: Publication,
    ) -> Result<Position, Refusal> {
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
            if !rules.has_history() {
                return Err(Refusal::new(ErrorCode::Unavailable, e.to_string()));
            }
            // Stored: subscribers will fill the gap from history.
            tracing::warn!(error = %e, "publication stored but not delivered live");
        }
        self.published.increment(1);
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
        // The page must fit in one reply on the bus.
        let query = Query {
            since: req.since,
            limit: req.limit.min(MAX_HISTORY_LIMIT),
            reverse: req.reverse,
            max_bytes: self.bus.max_payload().saturating_sub(ENVELOPE_SLACK),
        };
        let page = self
            .store
            .read(&req.channel, query)
            .await
            .map_err(Refusal::from)?;
        Ok(pb::HistoryPage {
            publications: page.publications,
            position: Some(page.position),
            truncated: page.truncated,
        })
    }

    /// Whether this router can serve: its subscriptions are live, the bus is connected and
    /// the store answers.
    pub async fn ready(&self) -> bool {
        self.seat.serving() && self.bus_connected() && self.store_reachable().await
    }

    pub fn bus_connected(&self) -> bool {
        self.bus.is_connected()
    }

    /// Whether the history store answers a ping.
    pub async fn store_reachable(&self) -> bool {
        self.store.ping().await.is_ok()
    }
}

/// Who published `request`: a gateway of the release before this one sends only its
/// client id, in `origin`.
fn publisher(request: &PublishRequest) -> Option<ClientInfo> {
    request.publisher.clone().or_else(|| {
        (!request.origin.is_empty()).then(|| ClientInfo {
            client: request.origin.clone(),
            ..Default::default()
        })
    })
}

impl QueueService for RouterService {
    fn subjects(&self) -> Vec<String> {
        vec![
            self.subjects.publish_requests(),
            self.subjects.history_requests(),
        ]
    }

    async fn answer(&self, subject: usize, request: Bytes) -> Vec<u8> {
        match subject {
            PUBLISH_REQUESTS => self.answer_publishes(request).await,
            HISTORY_REQUESTS => self.answer_history(request).await,
            _ => Vec::new(),
        }
    }
}
