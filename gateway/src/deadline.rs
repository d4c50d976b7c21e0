//! Optional deadlines for `select!` loops: a timer that is armed only sometimes.

use tokio::time::{Instant, sleep_until};

/// The earliest of some optional deadlines: one timer for a loop that has several.
pub fn earliest(deadlines: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    deadlines.into_iter().flatten().min()
}

/// Whether `deadline` is set and has come.
pub fn passed(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|deadline| deadline <= now)
}

/// Completes at `deadline`, or never when there is none.
pub async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
