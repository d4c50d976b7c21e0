//! The router queue group's sync requests: read a document (its snapshot, or the patches a
//! reader missed), patch it, delete it.
//!
//! A patch is applied by compare-and-set: the router merges the patch into the document
//! as it last saw it and asks the store to commit the result only if the document has not
//! moved since (see [`Committed`]); when another router got there first it merges again
//! into what the store answered. The patches of one document that arrive while a commit
//! is under way are committed together by the next (see `slots`), so a busy document costs
//! one store round trip per batch rather than per patch. Committed patches are then
//! published on the channel's delivery subject, in order, before the replies, as
//! publications are.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::{ChannelRules, ChannelsConfig};
use herald_core::metrics::{SYNC_PATCHES, SYNC_RETRIES, SYNC_SNAPSHOTS};
use herald_core::publish::{self, ENVELOPE_SLACK};
use herald_core::subjects::Subjects;
use herald_core::time::unix_micros;
use herald_proto::bus::v1::{
    Position, Publication, SyncCommitted, SyncConflict, SyncPatch, SyncReply, SyncRequest,
    SyncState, sync_reply, sync_request,
};
use prost::Message;
use serde_json::Value;
use tokio::sync::oneshot;

use super::PatchOutcome;
use super::document;
use super::slots::{Current, MAX_WAITING, Slots, Waiting};
use super::{Commit, Committed, DocumentStore, Retention};
use crate::history::{Entry, HistoryStore, Query};
use crate::queue::{QueueService, Seat};

/// Most patches a reader is sent to catch up; one further behind gets a snapshot.
pub const MAX_CATCH_UP: u32 = 1000;

/// Times a patch is merged again after other routers' patches before it gives up (111).
const MAX_ATTEMPTS: usize = 64;

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
        publish::valid_channel(channel)?;
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
        publish::valid_idempotency_key(&request.idempotency_key)?;
        // A document must fit one reply on the bus (a snapshot, a conflict), whatever the
        // configuration says.
        let max_size = rules
            .max_document_size
            .min(self.bus.max_payload().saturating_sub(ENVELOPE_SLACK));
        let patch = document::parse_patch(&request.patch, max_size)?;
        // What subscribers get is what was applied, in this node's JSON, not the sender's
        // bytes: every number and string reads the same for them as it did here.
        let data = Bytes::from(serde_json::to_vec(&patch).unwrap_or_default());
        let (reply, mut answer) = oneshot::channel();
        let waiting = Waiting {
            patch,
            entry: Entry {
                data,
                attachments: Vec::new(),
                publisher: request.publisher,
                idempotency_key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
                accepted_at_us: unix_micros(),
            },
            base_rev: request.base_rev,
            // An epoch names the document the base revision is of; without a revision it
            // says nothing.
            base_epoch: Some(request.base_epoch)
                .filter(|e| !e.is_empty() && request.base_rev.is_some()),
            max_size,
            reply,
        };
        let entered = self.slots.enter(channel);
        entered.slot().push(waiting, self.most_waiting)?;
        tokio::select! {
            biased;
            outcome = &mut answer => {
                return outcome.unwrap_or_else(|_| Err(dropped()));
            }
            mut document = entered.slot().lock() => {
                // Whoever holds the lock commits what is queued, this patch among it.
                loop {
                    let batch = entered.slot().take(MAX_BATCH);
                    if batch.is_empty() {
                        break;
                    }
                    self.commit_batch(channel, &rules, &mut document, batch).await;
                }
            }
        }
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }

    /// Commits a batch of one document's patches in one store round trip, in order, and
    /// answers each. A conditional patch on another revision is a conflict, one that
    /// would make the document too large is refused; the others are applied in turn.
    async fn commit_batch(
        &self,
        channel: &str,
        rules: &ChannelRules,
        document: &mut Option<Current>,
        mut batch: Vec<Waiting>,
    ) {
        let mut current = match document.take() {
            Some(current) => current,
            None => match self.documents.snapshot(channel, rules.sync_ttl).await {
                Ok(snapshot) => match Current::of(&snapshot) {
                    Ok(current) => current,
                    Err(refusal) => return answer_all(batch, &refusal),
                },
                Err(e) => return answer_all(batch, &Refusal::from(e)),
            },
        };
        let retention = Retention {
            patches: rules.sync_history,
            ttl: rules.sync_ttl,
            idempotency_ttl: self.idempotency_ttl,
        };
        for _ in 0..MAX_ATTEMPTS {
            let plan = Plan::of(&current, &batch);
            let commit = Commit {
                channel: channel.to_string(),
                expected: current.position.clone(),
                doc: plan.text.clone(),
                patches: plan
                    .applied
                    .iter()
                    .map(|&i| batch[i].entry.clone())
                    .collect(),
                retention,
            };
            match self.documents.commit(commit).await {
                Err(e) => return answer_all(batch, &Refusal::from(e)),
                Ok(Committed::Applied(first)) => {
                    *document = Some(self.answer(channel, &current, plan, batch, first).await);
                    return;
                }
                Ok(Committed::Duplicate {
                    index,
                    position,
                    patch,
                }) => {
                    let Some(&i) = plan.applied.get(index) else {
                        let refusal = Refusal::new(ErrorCode::Internal, "bad duplicate index");
                        return answer_all(batch, &refusal);
                    };
                    let waiting = batch.remove(i);
                    // Delivered again in case the first delivery was lost with a router;
                    // gateways drop revisions they have delivered.
                    if let Some(data) = patch {
                        let first = Entry {
                            data,
                            ..waiting.entry
                        };
                        self.deliver(channel, &position, &first).await;
                    }
                    let committed = SyncCommitted {
                        position: Some(position),
                        duplicate: true,
                    };
                    let _ = waiting.reply.send(Ok(Ok(committed)));
                }
                Ok(Committed::Stale(snapshot)) => {
                    metrics::counter!(SYNC_RETRIES).increment(1);
                    match Current::of(&snapshot) {
                        Ok(fresh) => current = fresh,
                        Err(refusal) => return answer_all(batch, &refusal),
                    }
                }
            }
        }
        let refusal = Refusal::new(
            ErrorCode::Unavailable,
            "the document changed under every attempt; retry",
        );
        answer_all(batch, &refusal);
    }

    /// Delivers a committed batch's patches, in order, and answers every patch of it;
    /// returns the document as the batch left it.
    async fn answer(
        &self,
        channel: &str,
        base: &Current,
        plan: Plan,
        batch: Vec<Waiting>,
        first: Position,
    ) -> Current {
        // Before the first patch of a new document there is no epoch; after, the commit's.
        let epoch_at = |rev: u64| match rev == base.position.offset {
            true => base.position.epoch.clone(),
            false => first.epoch.clone(),
        };
        let mut rev = first.offset;
        for (outcome, waiting) in plan.outcomes.into_iter().zip(batch) {
            let answer = match outcome {
                Outcome::Applied => {
                    let position = Position {
                        offset: rev,
                        epoch: first.epoch.clone(),
                    };
                    rev += 1;
                    self.deliver(channel, &position, &waiting.entry).await;
                    Ok(Ok(SyncCommitted {
                        position: Some(position),
                        duplicate: false,
                    }))
                }
                Outcome::Conflict { rev, doc } => Ok(Err(SyncConflict {
                    position: Some(Position {
                        offset: rev,
                        epoch: epoch_at(rev),
                    }),
                    doc,
                })),
                Outcome::Refused(refusal) => Err(refusal),
            };
            let _ = waiting.reply.send(answer);
        }
        let position = Position {
            offset: rev - 1,
            epoch: epoch_at(rev - 1),
        };
        Current {
            position,
            doc: plan.doc,
        }
    }

    /// Deletes a document; its subscribers are told by a publication of the new epoch at
    /// revision 0, which makes their gateways send them the empty document.
    pub async fn delete(&self, channel: &str) -> Result<Position, Refusal> {
        let rules = self.rules(channel)?;
        // A delete waits its turn however busy the document is.
        let entered = self.slots.enter(channel);
        let mut document = entered.slot().lock().await;
        *document = None;
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

/// Patches committed together at most.
const MAX_BATCH: usize = 64;

fn dropped() -> Refusal {
    Refusal::new(ErrorCode::Internal, "the patch was dropped unanswered")
}

fn answer_all(batch: Vec<Waiting>, refusal: &Refusal) {
    for waiting in batch {
        let _ = waiting.reply.send(Err(refusal.clone()));
    }
}

/// What becomes of one patch of a batch, if the batch is committed.
enum Outcome {
    Applied,
    /// At this revision, with this document.
    Conflict {
        rev: u64,
        doc: Bytes,
    },
    Refused(Refusal),
}

/// A batch applied in memory to the document it starts from.
struct Plan {
    outcomes: Vec<Outcome>,
    /// The batch's indices of the patches applied, in order.
    applied: Vec<usize>,
    /// The document after them, and its JSON text (empty when none applies).
    doc: Value,
    text: Bytes,
}

impl Plan {
    fn of(current: &Current, batch: &[Waiting]) -> Self {
        let mut doc = current.doc.clone();
        let mut text = Bytes::new();
        let mut rev = current.position.offset;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut applied = Vec::new();
        for (i, waiting) in batch.iter().enumerate() {
            // A new document's epoch is made by the commit: no base epoch names it yet.
            let other_epoch = waiting.base_epoch.as_ref().is_some_and(|epoch| {
                current.position.epoch.is_empty() || *epoch != current.position.epoch
            });
            if waiting
                .base_rev
                .is_some_and(|base| base != rev || other_epoch)
            {
                let text = serde_json::to_vec(&doc).unwrap_or_default();
                outcomes.push(Outcome::Conflict {
                    rev,
                    doc: Bytes::from(text),
                });
                continue;
            }
            match document::apply(&doc, &waiting.patch, waiting.max_size) {
                Ok((patched, patched_text)) => {
                    doc = patched;
                    text = patched_text;
                    rev += 1;
                    applied.push(i);
                    outcomes.push(Outcome::Applied);
                }
                Err(refusal) => outcomes.push(Outcome::Refused(refusal)),
            }
        }
        Self {
            outcomes,
            applied,
            doc,
            text,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn waiting(patch: Value, base_rev: Option<u64>, max_size: usize) -> Waiting {
        Waiting {
            patch,
            entry: Entry::default(),
            base_rev,
            base_epoch: None,
            max_size,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_applies_in_order_and_judges_each_condition_on_the_revision_before_it() {
        let current = Current {
            position: Position {
                offset: 5,
                epoch: "e".into(),
            },
            doc: json!({"n": 0}),
        };
        let batch = [
            waiting(json!({"n": 1}), Some(5), 100),
            // Conditional on 5, but the patch before made it 6.
            waiting(json!({"late": true}), Some(5), 100),
            waiting(json!({"big": "x".repeat(100)}), None, 100),
            waiting(json!({"n": 2}), Some(6), 100),
        ];
        let plan = Plan::of(&current, &batch);
        assert_eq!(plan.applied, [0, 3]);
        assert_eq!(plan.doc, json!({"n": 2}));
        assert_eq!(plan.text, Bytes::from_static(br#"{"n":2}"#));
        match &plan.outcomes[1] {
            Outcome::Conflict { rev, doc } => {
                assert_eq!(*rev, 6);
                assert_eq!(doc, &Bytes::from_static(br#"{"n":1}"#));
            }
            _ => panic!("the second patch conflicts"),
        }
        match &plan.outcomes[2] {
            Outcome::Refused(refusal) => assert_eq!(refusal.code, ErrorCode::MessageTooLarge),
            _ => panic!("the third patch is too large"),
        }
        assert!(matches!(plan.outcomes[0], Outcome::Applied));
        assert!(matches!(plan.outcomes[3], Outcome::Applied));
    }

    #[test]
    fn a_batch_with_nothing_to_apply_commits_nothing() {
        let current = Current {
            position: Position::default(),
            doc: json!({}),
        };
        let mut conditional = waiting(json!({"a": 1}), Some(0), 100);
        // A new document has no epoch yet: no base epoch names it.
        conditional.base_epoch = Some("e".into());
        let plan = Plan::of(&current, &[conditional]);
        assert!(plan.applied.is_empty());
        assert!(plan.text.is_empty());
        assert!(matches!(plan.outcomes[0], Outcome::Conflict { rev: 0, .. }));
    }
}
