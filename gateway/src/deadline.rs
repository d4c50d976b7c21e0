//! Optional deadlines for `select!` loops: a timer that is armed only sometimes.

use tokio::time::{Instant, sleep_until};

/// Completes at `deadline`, or never when there is none.
pub async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
