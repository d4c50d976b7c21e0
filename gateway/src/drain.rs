//! Graceful drain: how a gateway that is told to stop moves its clients off.
//!
//! When draining begins the gateway turns not ready and refuses new connections, and each
//! session leaves at its own random moment within the drain period (code 3000, "reconnect
//! elsewhere"). Spreading the goodbyes keeps the other gateways, and the routers behind
//! them, from taking every reconnection and recovery of this node's clients at once.

use std::future::Future;
use std::time::Duration;

use herald_core::metrics::DRAINING;
use rand::RngExt;
use tokio_util::sync::CancellationToken;

pub struct Drain {
    begun: CancellationToken,
    period: Duration,
}

impl Drain {
    pub fn new(period: Duration) -> Self {
        Self {
            begun: CancellationToken::new(),
            period,
        }
    }

    /// Starts draining; later calls do nothing.
    pub fn begin(&self) {
        if !self.begun.is_cancelled() {
            tracing::info!(period = ?self.period, "draining clients");
            metrics::gauge!(DRAINING).set(1.0);
            self.begun.cancel();
        }
    }

    pub fn is_draining(&self) -> bool {
        self.begun.is_cancelled()
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Resolves when draining has begun.
    pub async fn begun(&self) {
        self.begun.cancelled().await;
    }

    /// Resolves at one session's moment to leave: a random point within the drain period
    /// after draining begins. Owns what it needs, so a session can keep it across its loop.
    pub fn turn(&self) -> impl Future<Output = ()> + Send + 'static {
        let begun = self.begun.clone();
        let period = self.period;
        async move {
            begun.cancelled().await;
            if !period.is_zero() {
                let delay = rand::rng().random_range(Duration::ZERO..period);
                // Boxed: every session holds its turn for its whole life.
                Box::pin(tokio::time::sleep(delay)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn every_turn_comes_within_the_period_after_draining_begins() {
        let drain = Drain::new(Duration::from_secs(10));
        let turns: Vec<_> = (0..50).map(|_| tokio::spawn(drain.turn())).collect();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            turns.iter().all(|t| !t.is_finished()),
            "no turn before the drain"
        );
        let start = tokio::time::Instant::now();
        drain.begin();
        let mut latest = Duration::ZERO;
        for turn in turns {
            turn.await.unwrap();
            latest = latest.max(start.elapsed());
        }
        assert!(latest <= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_spread_over_the_period() {
        let drain = Drain::new(Duration::from_secs(10));
        let turns: Vec<_> = (0..200).map(|_| tokio::spawn(drain.turn())).collect();
        drain.begin();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let done = turns.iter().filter(|t| t.is_finished()).count();
        // Uniform over 10 s: about half are gone after 5 s; far from none and from all.
        assert!(
            (40..=160).contains(&done),
            "{done} of 200 left in the first half"
        );
    }

    #[tokio::test]
    async fn a_zero_period_sends_everyone_away_at_once() {
        let drain = Drain::new(Duration::ZERO);
        let turn = drain.turn();
        drain.begin();
        tokio::time::timeout(Duration::from_secs(1), turn)
            .await
            .expect("turn comes at once");
    }
}
