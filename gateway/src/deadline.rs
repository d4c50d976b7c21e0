//! Optional deadlines for `select!` loops: a timer that is armed only sometimes.

use std::pin::Pin;

use tokio::time::{Instant, Sleep, sleep_until};

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

/// A timer that is armed only now and then, and costs a pointer while it is not: for a
/// task that lives long and mostly idle, whose state would otherwise hold a whole
/// [`Sleep`] (about 130 bytes) all its life.
#[derive(Default)]
pub struct Alarm(Option<Pin<Box<Sleep>>>);

impl Alarm {
    /// Sets the alarm for `at`, whether or not it was set.
    pub fn set(&mut self, at: Instant) {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.0 = Some(Box::pin(sleep_until(at))),
        }
    }

    /// Takes the alarm off.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Completes when the alarm goes off, which takes it off; never while it is not set.
    pub async fn rings(&mut self) {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().await,
            None => std::future::pending().await,
        }
        self.0 = None;
    }
}
