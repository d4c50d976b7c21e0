//! Serves gateways' session requests (save, take, touch, drop) from the router queue group.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::bus::{Bus, BusError};
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::subjects::Subjects;
use herald_proto::bus::v1::{self as pb, SessionReply, SessionRequest, SocketRecord};
use herald_proto::bus::v1::{session_reply, session_request::Action};
use prost::Message;

use super::{SessionStore, Stored};
use crate::history::StoreError;
use crate::queue::{QueueService, Seat};

pub struct SessionService {
    bus: Arc<dyn Bus>,
    store: Arc<dyn SessionStore>,
    subjects: Subjects,
    seat: Seat,
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
            seat: Seat::new(concurrency),
        })
    }

    pub fn serving(&self) -> bool {
        self.seat.serving()
    }

    /// Joins the router queue group for session requests and serves them until `shutdown`
    /// completes.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
        self.seat.serve(self.as_ref(), &self.bus, shutdown).await?;
        Ok(())
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
                let stored = self.store.take(pid).await?;
                // A record that does not decode is as good as none: the client starts afresh.
                return Ok(stored.and_then(|stored| amended(stored).ok()));
            }
            Some(Action::Touch(_)) => self.store.touch(pid, holder, ttl).await?,
            Some(Action::Drop(_)) => self.store.drop_held(pid, holder).await?,
            Some(Action::Mark(mark)) => {
                let bytes = Bytes::from(mark.encode_to_vec());
                let store = &self.store;
                store
                    .amend(pid, holder, &mark.channel, Some(bytes), ttl)
                    .await?;
            }
            Some(Action::Unmark(channel)) => {
                self.store.amend(pid, holder, &channel, None, ttl).await?;
            }
            None => {}
        }
        Ok(None)
    }
}

/// The record with its amendments applied: each amended channel's mark replaced, added at
/// the end, or gone.
fn amended(stored: Stored) -> Result<SocketRecord, prost::DecodeError> {
    let mut record = SocketRecord::decode(stored.record)?;
    for (channel, mark) in stored.amendments {
        record.marks.retain(|m| m.channel != channel);
        if let Some(bytes) = mark {
            record.marks.push(pb::Mark::decode(bytes)?);
        }
    }
    Ok(record)
}

impl QueueService for SessionService {
    fn subjects(&self) -> Vec<String> {
        vec![self.subjects.session_requests()]
    }

    async fn answer(&self, _subject: usize, request: Bytes) -> Vec<u8> {
        let result = match SessionRequest::decode(request) {
            Ok(request) => self.handle(request).await.map_err(Refusal::from),
            Err(e) => Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
        };
        let result = match result {
            Ok(Some(record)) => Some(session_reply::Result::Record(record)),
            Ok(None) => None,
            Err(refusal) => Some(session_reply::Result::Error(refusal.into())),
        };
        SessionReply { result }.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(channel: &str, offset: u64) -> pb::Mark {
        pb::Mark {
            channel: channel.into(),
            joined: Some(pb::Position {
                offset,
                epoch: "e".into(),
            }),
        }
    }

    #[test]
    fn amendments_replace_add_and_remove_marks() {
        let record = SocketRecord {
            namespace: "/".into(),
            marks: vec![mark("/", 1), mark("/:a", 2)],
            ..Default::default()
        };
        let encoded = |m: pb::Mark| Some(Bytes::from(m.encode_to_vec()));
        let stored = Stored {
            record: Bytes::from(record.encode_to_vec()),
            amendments: vec![
                ("/:a".into(), None),
                ("/:b".into(), encoded(mark("/:b", 5))),
                ("/".into(), encoded(mark("/", 7))),
            ],
        };
        let marks = amended(stored).unwrap().marks;
        assert_eq!(marks, [mark("/:b", 5), mark("/", 7)]);
    }
}
