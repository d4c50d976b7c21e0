//! Requests to the routers over the bus (publish, history, presence, Socket.IO session
//! records), and direct delivery for channels without history: what gateways and the
//! server API ask of the cluster.
//!
//! Every failure becomes a [`Refusal`] a client can act on: a bus that is down, a router
//! that does not answer in time, or no router at all are [`ErrorCode::Unavailable`]
//! (temporary), never a silent drop.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{Bus, BusError};
use crate::codes::{ErrorCode, Refusal};
use crate::subjects::Subjects;
use bytes::Bytes;
use herald_proto::bus::v1::{
    ClientInfo, HistoryPage, HistoryReply, HistoryRequest, Position, PresenceQuery, PresenceReply,
    PresenceReport, PresenceRequest, PresenceStats, Publication, PublishBatch, PublishBatchReply,
    PublishRequest, SessionReply, SessionRequest, SocketRecord, SyncCommitted, SyncConflict,
    SyncDelete, SyncPatch, SyncRead, SyncReply, SyncRequest, SyncState, history_reply,
    presence_reply, presence_request, publish_reply, session_reply, sync_reply, sync_request,
};
use prost::Message;

/// Cheap to clone (one shared allocation): every channel's feed on a gateway holds one.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Arc<dyn Bus>,
    subjects: Subjects,
    timeout: Duration,
}

/// A bus failure as a client sees it: temporary, unless the message could never travel.
fn unavailable(e: BusError) -> Refusal {
    metrics::counter!(crate::metrics::BUS_REQUEST_ERRORS, "kind" => e.kind()).increment(1);
    let code = match e {
        BusError::TooLarge { .. } => ErrorCode::MessageTooLarge,
        _ => ErrorCode::Unavailable,
    };
    Refusal::new(code, e.to_string())
}

/// The refusal of a conditional sync patch that met another revision, as clients and the
/// server API report it (beside the current document, where the protocol has room).
pub fn conflict_refusal(conflict: &SyncConflict) -> Refusal {
    let (rev, epoch) = conflict
        .position
        .as_ref()
        .map_or((0, ""), |p| (p.offset, p.epoch.as_str()));
    Refusal::new(
        ErrorCode::Conflict,
        format!("the document is at revision {rev} of epoch {epoch:?}, not the patch's base"),
    )
}

fn unexpected_reply() -> Refusal {
    Refusal::new(ErrorCode::Internal, "unexpected router reply")
}

fn malformed(e: prost::DecodeError) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("malformed router reply: {e}"))
}

impl Upstream {
    pub fn new(bus: Arc<dyn Bus>, subjects: Subjects, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                subjects,
                timeout,
            }),
        }
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.inner.bus
    }

    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// Sends `request` to the router queue group on `subject` and decodes the reply.
    async fn ask<Reply: Message + Default>(
        &self,
        subject: String,
        request: impl Message,
    ) -> Result<Reply, Refusal> {
        let payload = Bytes::from(request.encode_to_vec());
        let reply = self
            .inner
            .bus
            .request(subject, payload, self.inner.timeout)
            .await
            .map_err(unavailable)?;
        Reply::decode(reply).map_err(malformed)
    }

    /// Asks a router to store and deliver publications, in order; one result per request.
    pub async fn publish(
        &self,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<Result<Position, Refusal>>, Refusal> {
        let sent = requests.len();
        let batch = PublishBatch { requests };
        let reply: PublishBatchReply = self
            .ask(self.inner.subjects.publish_requests(), batch)
            .await?;
        let replies = reply.replies;
        if replies.len() != sent {
            let message = format!("router answered {} of {sent} publishes", replies.len());
            return Err(Refusal::new(ErrorCode::Internal, message));
        }
        Ok(replies
            .into_iter()
            .map(|reply| match reply.result {
                Some(publish_reply::Result::Position(position)) => Ok(position),
                Some(publish_reply::Result::Error(error)) => Err(error.into()),
                None => Err(Refusal::new(ErrorCode::Internal, "empty router reply")),
            })
            .collect())
    }

    /// Reads a page of history from a router.
    pub async fn history(&self, request: HistoryRequest) -> Result<HistoryPage, Refusal> {
        let reply: HistoryReply = self
            .ask(self.inner.subjects.history_requests(), request)
            .await?;
        match reply.result {
            Some(history_reply::Result::Page(page)) => Ok(page),
            Some(history_reply::Result::Error(error)) => Err(error.into()),
            None => Err(Refusal::new(ErrorCode::Internal, "empty router reply")),
        }
    }

    /// The current position of a channel's stream.
    pub async fn position(&self, channel: &str) -> Result<Position, Refusal> {
        let page = self
            .history(HistoryRequest {
                channel: channel.to_string(),
                since: None,
                limit: 0,
                reverse: false,
            })
            .await?;
        Ok(page.position.unwrap_or_default())
    }

    /// Asks a router to save, take, touch or drop a Socket.IO session record; returns the
    /// record a `take` found.
    pub async fn session(&self, request: SessionRequest) -> Result<Option<SocketRecord>, Refusal> {
        let reply: SessionReply = self
            .ask(self.inner.subjects.session_requests(), request)
            .await?;
        match reply.result {
            Some(session_reply::Result::Record(record)) => Ok(Some(record)),
            Some(session_reply::Result::Error(error)) => Err(error.into()),
            None => Ok(None),
        }
    }

    /// Sends a presence report to a router and waits until it is applied.
    pub async fn presence_report(&self, report: PresenceReport) -> Result<(), Refusal> {
        let action = presence_request::Action::Report(report);
        match self.presence_request(action).await? {
            Some(presence_reply::Result::Error(error)) => Err(error.into()),
            _ => Ok(()),
        }
    }

    /// Who is present on `channel`.
    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, Refusal> {
        match self.presence_query(channel, false).await? {
            presence_reply::Result::List(list) => Ok(list.clients),
            _ => Err(unexpected_reply()),
        }
    }

    /// How many clients and users are present on `channel`.
    pub async fn presence_stats(&self, channel: &str) -> Result<PresenceStats, Refusal> {
        match self.presence_query(channel, true).await? {
            presence_reply::Result::Stats(stats) => Ok(stats),
            _ => Err(unexpected_reply()),
        }
    }

    async fn presence_query(
        &self,
        channel: &str,
        stats_only: bool,
    ) -> Result<presence_reply::Result, Refusal> {
        let query = PresenceQuery {
            channel: channel.to_string(),
            stats_only,
        };
        match self
            .presence_request(presence_request::Action::Query(query))
            .await?
        {
            Some(presence_reply::Result::Error(error)) => Err(error.into()),
            Some(result) => Ok(result),
            None => Err(Refusal::new(ErrorCode::Internal, "empty router reply")),
        }
    }

    async fn presence_request(
        &self,
        action: presence_request::Action,
    ) -> Result<Option<presence_reply::Result>, Refusal> {
        let request = PresenceRequest {
            action: Some(action),
        };
        let reply: PresenceReply = self
            .ask(self.inner.subjects.presence_requests(), request)
            .await?;
        Ok(reply.result)
    }

    /// Brings a reader of `channel`'s sync document from `since` to the current revision:
    /// the patches after it, or a snapshot.
    pub async fn sync_read(
        &self,
        channel: &str,
        since: Option<Position>,
    ) -> Result<SyncState, Refusal> {
        match self
            .sync(channel, sync_request::Action::Read(SyncRead { since }))
            .await?
        {
            sync_reply::Result::State(state) => Ok(state),
            _ => Err(unexpected_reply()),
        }
    }

    /// Applies a patch to `channel`'s sync document: its revision, or the conflict that
    /// kept it from being applied.
    pub async fn sync_patch(
        &self,
        channel: &str,
        patch: SyncPatch,
    ) -> Result<Result<SyncCommitted, SyncConflict>, Refusal> {
        match self
            .sync(channel, sync_request::Action::Patch(patch))
            .await?
        {
            sync_reply::Result::Committed(committed) => Ok(Ok(committed)),
            sync_reply::Result::Conflict(conflict) => Ok(Err(conflict)),
            _ => Err(unexpected_reply()),
        }
    }

    /// Deletes `channel`'s sync document; returns revision 0 of its new epoch.
    pub async fn sync_delete(&self, channel: &str) -> Result<Position, Refusal> {
        match self
            .sync(channel, sync_request::Action::Delete(SyncDelete {}))
            .await?
        {
            sync_reply::Result::Committed(committed) => Ok(committed.position.unwrap_or_default()),
            _ => Err(unexpected_reply()),
        }
    }

    async fn sync(
        &self,
        channel: &str,
        action: sync_request::Action,
    ) -> Result<sync_reply::Result, Refusal> {
        let request = SyncRequest {
            channel: channel.to_string(),
            action: Some(action),
        };
        let reply: SyncReply = self
            .ask(self.inner.subjects.sync_requests(), request)
            .await?;
        match reply.result {
            Some(sync_reply::Result::Error(error)) => Err(error.into()),
            Some(result) => Ok(result),
            None => Err(Refusal::new(ErrorCode::Internal, "empty router reply")),
        }
    }

    /// Delivers a publication of a channel without history straight to subscribers.
    pub async fn deliver(&self, publication: &Publication) -> Result<(), Refusal> {
        self.inner
            .bus
            .publish(
                self.inner.subjects.delivery(&publication.channel),
                Bytes::from(publication.encode_to_vec()),
            )
            .await
            .map_err(unavailable)
    }
}
