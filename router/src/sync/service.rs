//! The router queue group's sync requests: read a document (its snapshot, or the patches a
//! reader missed), patch it, delete it.
//!
//! A patch is applied by compare-and-set: the router merges the patch into the document
//! as it last saw it and asks the store to commit the result only if the document has not
//! moved since (see [`Committed`]); when another router got there first it merges again
//! into what the store answered. Patches of one document on one router wait for each
//! other, and the document they leave stays in memory while more are waiting, so a storm
//! on one document costs one store round trip per patch rather than two. The committed
//! patch is then published on the channel's delivery subject, before the reply, as
//! publications are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError};
use herald_core::channel;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelRules, ChannelsConfig};
use herald_core::metrics::{SYNC_PATCHES, SYNC_RETRIES, SYNC_SNAPSHOTS};
use herald_core::publish::{ENVELOPE_SLACK, MAX_IDEMPOTENCY_KEY_LEN};
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_proto::bus::v1::{
    Position, Publication, SyncCommitted, SyncConflict, SyncPatch, SyncReply, SyncRequest,
    SyncState, sync_reply, sync_request,
};
use prost::Message;
use serde_json::Value;

use super::document;
use super::slots::{Current, MAX_WAITING, Slots};
use super::{Commit, Committed, DocumentStore, Retention};
use crate::history::{Entry, HistoryStore, Query};
use crate::queue::{QueueService, Seat};

/// Most patches a reader is sent to catch up; one further behind gets a snapshot.
pub const MAX_CATCH_UP: u32 = 1000;

/// Times a patch is merged again after other routers' patches before it gives up (111).
const MAX_ATTEMPTS: usize = 64;

/// What a patch gives: its revision, or the conflict that kept it from being applied.
pub type PatchOutcome = Result<SyncCommitted, SyncConflict>;

/// The requests a router answers on the sync subject.
pub struct SyncService {
    bus: Arc<dyn Bus>,
    history: Arc<dyn HistoryStore>,
    documents: Arc<dyn DocumentStore>,
    subjects: Subjects,
    channels: ChannelsConfig,
    idempotency_ttl: Duration,
    slots: Slots,
    /// Patches of one document that may wait at once (see [`MAX_WAITING`]).
    most_waiting: usize,
    seat: Seat,
}

fn patched(result: &'static str) {
    metrics::counter!(SYNC_PATCHES, "result" => result).increment(1);
}

impl SyncService {
    pub fn new(
        bus: Arc<dyn Bus>,
        history: Arc<dyn HistoryStore>,
        documents: Arc<dyn DocumentStore>,
        subjects: Subjects,
        channels: ChannelsConfig,
        idempotency_ttl: Duration,
        concurrency: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            bus,
            history,
            documents,
            subjects,
            channels,
            idempotency_ttl,
            slots: Slots::default(),
            most_waiting: (concurrency / 4).clamp(1, MAX_WAITING),
            seat: Seat::new(concurrency),
        })
    }

    /// Serves sync requests until `shutdown` completes, then answers those received.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        self.seat.serve(self.as_ref(), &self.bus, shutdown).await?;
        Ok(())
    }

    /// Whether its subscriptions are live.
    pub fn serving(&self) -> bool {
        self.seat.serving()
    }

    /// The rules of `channel`, which must be a valid name in a namespace with `sync` on.
    fn rules(&self, channel: &str) -> Result<ChannelRules, Refusal> {
        channel::validate(channel)
            .map_err(|e| Refusal::new(ErrorCode::BadChannel, e.to_string()))?;
        let rules = self.channels.rules_for(channel);
        if !rules.sync {
            return Err(Refusal::new(
                ErrorCode::NotAvailable,
                "the channel's namespace has no sync documents (`sync = true`)",
            ));
        }
        Ok(rules)
    }

    async fn answer_request(&self, request: SyncRequest) -> Result<sync_reply::Result, Refusal> {
        let channel = request.channel.as_str();
        match request.action {
            Some(sync_request::Action::Read(read)) => {
                let state = self.read(channel, read.since).await?;
                Ok(sync_reply::Result::State(state))
            }
            Some(sync_request::Action::Patch(patch)) => match self.patch(channel, patch).await? {
                Ok(committed) => Ok(sync_reply::Result::Committed(committed)),
                Err(conflict) => Ok(sync_reply::Result::Conflict(conflict)),
            },
            Some(sync_request::Action::Delete(_)) => {
                let position = self.delete(channel).await?;
                Ok(sync_reply::Result::Committed(SyncCommitted {
                    position: Some(position),
                    duplicate: false,
                }))
            }
            None => Err(Refusal::new(ErrorCode::BadRequest, "no sync action")),
        }
    }

    /// Brings a reader at `since` to the current revision: the patches after `since` when
    /// they are all kept, a snapshot otherwise. Either way the document is kept another
    /// `sync_ttl`: a document that clients read is in use.
    pub async fn read(&self, channel: &str, since: Option<Position>) -> Result<SyncState, Refusal> {
        let rules = self.rules(channel)?;
        if let Some(since) = &since {
            let current = self.documents.keep(channel, rules.sync_ttl).await?;
            if since.offset <= current.offset
                && let Some(state) = self.patches_after(channel, since).await?
            {
                return Ok(state);
            }
        }
        let snapshot = self.documents.snapshot(channel, rules.sync_ttl).await?;
        let reason = if since.is_some() {
            "fallback"
        } else {
            "initial"
        };
        metrics::counter!(SYNC_SNAPSHOTS, "reason" => reason).increment(1);
        Ok(SyncState {
            position: Some(snapshot.position),
            snapshot: true,
            doc: snapshot.doc,
            patches: Vec::new(),
        })
    }

    /// Every patch after `since`, if the store still has them all and they fit one reply.
    async fn patches_after(
        &self,
        channel: &str,
        since: &Position,
    ) -> Result<Option<SyncState>, Refusal> {
        let query = Query {
            since: Some(since.offset),
            limit: MAX_CATCH_UP,
            reverse: false,
            max_bytes: self.bus.max_payload().saturating_sub(ENVELOPE_SLACK),
        };
        let page = self.history.read(channel, query).await?;
        let position = page.position;
        // Revision 0 of no epoch is the empty document, which every epoch starts from.
        let same_epoch =
            position.epoch == since.epoch || (since.epoch.is_empty() && since.offset == 0);
        let offsets = page.publications.iter().map(|p| p.offset);
        let complete = offsets.eq(since.offset + 1..=position.offset);
        Ok(
            (same_epoch && complete && !page.truncated).then(|| SyncState {
                position: Some(position),
                snapshot: false,
                doc: Bytes::new(),
                patches: page.publications,
            }),
        )
    }

    /// Applies a merge patch; see the module's documentation.
    pub async fn patch(&self, channel: &str, request: SyncPatch) -> Result<PatchOutcome, Refusal> {
        let outcome = self.try_patch(channel, request).await;
        match &outcome {
            Ok(Ok(committed)) if committed.duplicate => patched("duplicate"),
            Ok(Ok(_)) => patched("applied"),
            Ok(Err(_)) => patched("conflict"),
            Err(refusal) if !refusal.code.temporary() => patched("refused"),
            Err(_) => {}
        }
        outcome
    }

    async fn try_patch(&self, channel: &str, request: SyncPatch) -> Result<PatchOutcome, Refusal> {
        let rules = self.rules(channel)?;
        if request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                format!("idempotency_key exceeds {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        // A document must fit one reply on the bus (a snapshot, a conflict), whatever the
        // configuration says.
        let max_size = rules
            .max_document_size
            .min(self.bus.max_payload().saturating_sub(ENVELOPE_SLACK));
        let patch = document::parse_patch(&request.patch, max_size)?;
        // What subscribers get is what was applied, in this node's JSON, not the sender's
        // bytes: every number and string reads the same for them as it did here.
        let data = Bytes::from(serde_json::to_vec(&patch).unwrap_or_default());
        let entry = Entry {
            data: data.clone(),
            attachments: Vec::new(),
            publisher: request.publisher,
            idempotency_key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
            accepted_at_us: unix_micros(),
        };
        let retention = Retention {
            patches: rules.sync_history,
            ttl: rules.sync_ttl,
            idempotency_ttl: self.idempotency_ttl,
        };
        // An epoch names the document the base revision is of; one that is not given (or
        // is that of no document yet) leaves the revision alone to decide.
        let base_epoch = Some(request.base_epoch.as_str())
            .filter(|epoch| !epoch.is_empty() && request.base_rev.is_some());
        let mut held = self.slots.hold(channel, Some(self.most_waiting)).await?;
        let mut current = match held.cached().take() {
            Some(current) => current,
            None => Current::of(&self.documents.snapshot(channel, rules.sync_ttl).await?)?,
        };
        for _ in 0..MAX_ATTEMPTS {
            let applies = request
                .base_rev
                .is_none_or(|base| base == current.position.offset)
                && base_epoch.is_none_or(|epoch| epoch == current.position.epoch);
            // On a revision other than `base_rev` the store answers with the conflict, or
            // with the document as it is if this one is out of date.
            let (doc, text) = match applies {
                true => document::apply(&current.doc, &patch, max_size)?,
                false => (Value::Null, Bytes::new()),
            };
            let commit = Commit {
                channel: channel.to_string(),
                expected: current.position.clone(),
                base_rev: request.base_rev,
                base_epoch: base_epoch.map(str::to_string),
                doc: text,
                patch: entry.clone(),
                retention,
            };
            match self.documents.commit(commit).await? {
                Committed::Applied(position) => {
                    self.deliver(channel, &position, &entry).await;
                    *held.cached() = Some(Current {
                        position: position.clone(),
                        doc,
                    });
                    return Ok(Ok(SyncCommitted {
                        position: Some(position),
                        duplicate: false,
                    }));
                }
                Committed::Duplicate { position, patch } => {
                    // Delivered again in case the first delivery was lost with a router;
                    // gateways drop revisions they have delivered.
                    if let Some(data) = patch {
                        let first = Entry { data, ..entry };
                        self.deliver(channel, &position, &first).await;
                    }
                    return Ok(Ok(SyncCommitted {
                        position: Some(position),
                        duplicate: true,
                    }));
                }
                Committed::Conflict(snapshot) => {
                    *held.cached() = Some(Current::of(&snapshot)?);
                    return Ok(Err(SyncConflict {
                        position: Some(snapshot.position),
                        doc: snapshot.doc,
                    }));
                }
                Committed::Stale(snapshot) => {
                    metrics::counter!(SYNC_RETRIES).increment(1);
                    current = Current::of(&snapshot)?;
                }
            }
        }
        Err(Refusal::new(
            ErrorCode::Unavailable,
            "the document changed under every attempt; retry",
        ))
    }

    /// Deletes a document; its subscribers are told by a publication of the new epoch at
    /// revision 0, which makes their gateways send them the empty document.
    pub async fn delete(&self, channel: &str) -> Result<Position, Refusal> {
        let rules = self.rules(channel)?;
        // A delete waits its turn however busy the document is.
        let mut held = self.slots.hold(channel, None).await?;
        *held.cached() = None;
        let position = self.documents.delete(channel, rules.sync_ttl).await?;
        let reset = Entry {
            accepted_at_us: unix_micros(),
            ..Entry::default()
        };
        self.deliver(channel, &position, &reset).await;
        Ok(position)
    }

    /// Publishes a committed patch on the channel's delivery subject. A failure loses
    /// nothing: the patch is stored, and gateways fill the gap from the channel's history.
    async fn deliver(&self, channel: &str, position: &Position, entry: &Entry) {
        let publication = Publication {
            channel: channel.to_string(),
            offset: position.offset,
            epoch: position.epoch.clone(),
            data: entry.data.clone(),
            origin: entry
                .publisher
                .as_ref()
                .map(|p| p.client.clone())
                .unwrap_or_default(),
            publisher: entry.publisher.clone(),
            accepted_at_us: entry.accepted_at_us,
            ..Default::default()
        };
        let subject = self.subjects.delivery(channel);
        if let Err(e) = self
            .bus
            .publish(subject, Bytes::from(publication.encode_to_vec()))
            .await
        {
            tracing::warn!(channel, error = %e, "sync patch stored but not delivered live");
        }
    }
}

impl QueueService for SyncService {
    fn subjects(&self) -> Vec<String> {
        vec![self.subjects.sync_requests()]
    }

    async fn answer(&self, _subject: usize, request: Bytes) -> Vec<u8> {
        let result = match SyncRequest::decode(request) {
            Ok(request) => self.answer_request(request).await,
            Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
        };
        let result = result.unwrap_or_else(|refusal| sync_reply::Result::Error(refusal.into()));
        SyncReply {
            result: Some(result),
        }
        .encode_to_vec()
    }
}
