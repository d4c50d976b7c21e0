//! Serves gateways' presence reports and queries from the router queue group, and sends
//! join and leave events for channels that have them.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use herald_core::bus::{Bus, BusError};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::ChannelsConfig;
use herald_core::metrics::{PRESENCE_CHANGES, PRESENCE_SIZE};
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_proto::bus::v1::{
    Membership, Presence, PresenceList, PresenceQuery, PresenceReply, PresenceReport,
    PresenceRequest, PresenceStats, Publication, presence_reply, presence_request,
};
use prost::Message;

use super::PresenceStore;
use crate::history::StoreError;
use crate::queue::{QueueService, Seat};

pub struct PresenceService {
    bus: Arc<dyn Bus>,
    store: Arc<dyn PresenceStore>,
    subjects: Subjects,
    channels: ChannelsConfig,
    ttl: Duration,
    seat: Seat,
}

impl PresenceService {
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn PresenceStore>,
        subjects: Subjects,
        channels: ChannelsConfig,
        ttl: Duration,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            store,
            subjects,
            channels,
            ttl,
            seat: Seat::new(concurrency),
        })
    }

    pub fn serving(&self) -> bool {
        self.seat.serving()
    }

    /// Joins the router queue group for presence requests and serves them until
    /// `shutdown` completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        self.seat.serve(self.as_ref(), &self.bus, shutdown).await?;
        Ok(())
    }

    /// Applies a gateway's report. A gateway never reports one client's join and leave of
    /// one channel in the same report, so the changes are applied all at once.
    async fn apply(&self, report: PresenceReport) -> Result<(), Refusal> {
        let joins = report
            .joins
            .into_iter()
            .chain(report.alive)
            .map(|presence| async move {
                let client = presence.client.clone().unwrap_or_default();
                let added = self.store.add(&presence.channel, &client, self.ttl).await?;
                Ok::<_, StoreError>(added.then_some((presence, true)))
            });
        let leaves = report.leaves.into_iter().map(|presence| async move {
            let client = presence.client.as_ref().map_or("", |c| c.client.as_str());
            let removed = self.store.remove(&presence.channel, client).await?;
            Ok::<_, StoreError>(removed.then_some((presence, false)))
        });
        let (joined, left) = tokio::join!(join_all(joins), join_all(leaves));
        let mut failure = None;
        for outcome in joined.into_iter().chain(left) {
            match outcome {
                Ok(Some((presence, joined))) => {
                    let change = if joined { "join" } else { "leave" };
                    metrics::counter!(PRESENCE_CHANGES, "change" => change).increment(1);
                    self.announce(presence, joined).await;
                }
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Sends a join or leave event to the channel's subscribers, if the channel has them.
    async fn announce(&self, presence: Presence, joined: bool) {
        if !self.channels.rules_for(&presence.channel).join_leave {
            return;
        }
        let subject = self.subjects.delivery(&presence.channel);
        let event = Publication {
            channel: presence.channel,
            membership: Some(Membership {
                joined,
                client: presence.client,
            }),
            accepted_at_us: unix_micros(),
            ..Default::default()
        };
        if let Err(e) = self
            .bus
            .publish(subject, Bytes::from(event.encode_to_vec()))
            .await
        {
            tracing::warn!(error = %e, "cannot send a join or leave event");
        }
    }

    /// Answers a query, for every caller (gateways and the server API) alike.
    async fn query(&self, query: PresenceQuery) -> Result<presence_reply::Result, Refusal> {
        if !self.channels.rules_for(&query.channel).presence {
            let message = "the channel keeps no presence";
            return Err(Refusal::new(ErrorCode::NotAvailable, message));
        }
        let clients = self.store.list(&query.channel).await?;
        metrics::histogram!(PRESENCE_SIZE).record(clients.len() as f64);
        if !query.stats_only {
            let list = PresenceList { clients };
            // A list that cannot travel in one bus message is refused plainly, not lost
            // on the way; the counts always can.
            if list.encoded_len() + 64 > self.bus.max_payload() {
                let message = format!(
                    "{} clients are too many to list in one reply: ask for presence_stats",
                    list.clients.len()
                );
                return Err(Refusal::new(ErrorCode::NotAvailable, message));
            }
            return Ok(presence_reply::Result::List(list));
        }
        let users: HashSet<&str> = clients
            .iter()
            .map(|c| c.user.as_str())
            .filter(|user| !user.is_empty())
            .collect();
        Ok(presence_reply::Result::Stats(PresenceStats {
            clients: clients.len() as u32,
            users: users.len() as u32,
        }))
    }
}

impl QueueService for PresenceService {
    fn subjects(&self) -> Vec<String> {
        vec![self.subjects.presence_requests()]
    }

    async fn answer(&self, _subject: usize, request: Bytes) -> Vec<u8> {
        let result = match PresenceRequest::decode(request).map(|r| r.action) {
            Ok(Some(presence_request::Action::Report(report))) => {
                self.apply(report).await.map(|()| None)
            }
            Ok(Some(presence_request::Action::Query(query))) => self.query(query).await.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
        };
        let result = match result {
            Ok(result) => result,
            Err(refusal) => Some(presence_reply::Result::Error(refusal.into())),
        };
        PresenceReply { result }.encode_to_vec()
    }
}
