//! What a router records, in the families named in [`herald_core::metrics`]: the time and
//! failures of each Redis operation of its stores.

use std::time::Instant;

use herald_core::metrics::{REDIS_DURATION, REDIS_ERRORS};
use metrics::{counter, histogram};

use crate::history::StoreError;
use crate::history::redis::store_error;

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

    /// The operation failed with `error`: counted, and turned into the store's error.
    pub(crate) fn failed(&self, error: impl std::fmt::Display) -> StoreError {
        counter!(REDIS_ERRORS, "operation" => self.name).increment(1);
        store_error(error)
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64();
        histogram!(REDIS_DURATION, "operation" => self.name).record(elapsed);
    }
}
