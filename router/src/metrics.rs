//! What a router records, in the families named in [`herald_core::metrics`]: the time and
//! failures of each Redis operation of its stores, and every family at zero from the start.

use std::time::Instant;

use herald_core::metrics::{
    CONTROL_CALLS, PRESENCE_CHANGES, PRESENCE_SIZE, PUBLICATIONS, REDIS_DURATION, REDIS_ERRORS,
    SYNC_PATCHES, SYNC_RETRIES, SYNC_SNAPSHOTS,
};
use metrics::{counter, histogram};

use crate::history::StoreError;

/// The `operation` label of each Redis operation of the stores.
pub(crate) const HISTORY_APPEND: &str = "history_append";
pub(crate) const HISTORY_READ: &str = "history_read";
pub(crate) const PING: &str = "ping";
pub(crate) const PRESENCE_ADD: &str = "presence_add";
pub(crate) const PRESENCE_REMOVE: &str = "presence_remove";
pub(crate) const PRESENCE_LIST: &str = "presence_list";
pub(crate) const SESSION_SAVE: &str = "session_save";
pub(crate) const SESSION_TAKE: &str = "session_take";
pub(crate) const SESSION_TOUCH: &str = "session_touch";
pub(crate) const SESSION_DROP: &str = "session_drop";
pub(crate) const SESSION_AMEND: &str = "session_amend";
pub(crate) const SYNC_SNAPSHOT: &str = "sync_snapshot";
pub(crate) const SYNC_COMMIT: &str = "sync_commit";
pub(crate) const SYNC_DELETE: &str = "sync_delete";
const OPERATIONS: [&str; 14] = [
    HISTORY_APPEND,
    HISTORY_READ,
    PING,
    PRESENCE_ADD,
    PRESENCE_REMOVE,
    PRESENCE_LIST,
    SESSION_SAVE,
    SESSION_TAKE,
    SESSION_TOUCH,
    SESSION_DROP,
    SESSION_AMEND,
    SYNC_SNAPSHOT,
    SYNC_COMMIT,
    SYNC_DELETE,
];

/// Makes every family of a router visible from the start, at zero, so that dashboards and
/// alerts see a series before the first event.
pub fn initialize() {
    for operation in OPERATIONS {
        counter!(REDIS_ERRORS, "operation" => operation).absolute(0);
        let _ = histogram!(REDIS_DURATION, "operation" => operation);
    }
    counter!(PUBLICATIONS).absolute(0);
    for change in ["join", "leave"] {
        counter!(PRESENCE_CHANGES, "change" => change).absolute(0);
    }
    let _ = histogram!(PRESENCE_SIZE);
    for result in ["applied", "duplicate", "conflict", "refused"] {
        counter!(SYNC_PATCHES, "result" => result).absolute(0);
    }
    for reason in ["initial", "fallback"] {
        counter!(SYNC_SNAPSHOTS, "reason" => reason).absolute(0);
    }
    counter!(SYNC_RETRIES).absolute(0);
    for outcome in CONTROL_OUTCOMES {
        counter!(CONTROL_CALLS, "outcome" => outcome).absolute(0);
    }
}

/// The `outcome` label of calls to gateways' control services.
const CONTROL_OUTCOMES: [&str; 4] = ["ok", "unavailable", "timeout", "refused"];

/// One Redis operation, timed from [`start`](Self::start) until dropped.
pub(crate) struct Operation {
    name: &'static str,
    started: Instant,
}

impl Operation {
    /// `name` is the `operation` label: what the store does (`history_append`, …).
    pub(crate) fn start(name: &'static str) -> Self {
        Self {
            name,
            started: Instant::now(),
        }
    }

    /// The operation failed with `error`: counted, and handed back.
    pub(crate) fn failed(&self, error: StoreError) -> StoreError {
        counter!(REDIS_ERRORS, "operation" => self.name).increment(1);
        error
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        histogram!(REDIS_DURATION, "operation" => self.name).record(elapsed);
    }
}
