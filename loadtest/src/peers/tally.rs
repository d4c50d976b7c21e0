//! What receivers count: every payload's latency (HDR histogram), payloads received,
//! those that came after a later one of the same emitter (reordered), and refusals; and
//! the deliveries per emitter that paced emitters wait on ([`Progress`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

/// What a payload says of itself.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub emitter: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// One receiver's count; merged over all receivers at the end of a run.
pub struct Tally {
    pub latency_us: Histogram<u64>,
    pub received: u64,
    pub reordered: u64,
    /// Commands the server refused (native publish replies with an error).
    pub refused: u64,
    /// Connections the server closed during the run.
    pub cut: u64,
    /// The next sequence number expected from each emitter.
    next: Vec<u64>,
    progress: Option<Arc<Progress>>,
    progressed: bool,
}

impl Tally {
    pub fn new(progress: Option<Arc<Progress>>) -> Self {
        Self {
            latency_us: Histogram::new(3).expect("3 significant digits are valid"),
            received: 0,
            reordered: 0,
            refused: 0,
            cut: 0,
            next: Vec::new(),
            progress,
            progressed: false,
        }
    }

    pub fn record(&mut self, stamp: Stamp, now_us: u64) {
        self.received += 1;
        let _ = self
            .latency_us
            .record(now_us.saturating_sub(stamp.sent_us).max(1));
        let emitter = stamp.emitter as usize;
        if self.next.len() <= emitter {
            self.next.resize(emitter + 1, 0);
        }
        if stamp.seq < self.next[emitter] {
            self.reordered += 1;
        } else {
            self.next[emitter] = stamp.seq + 1;
        }
        if let Some(progress) = &self.progress {
            progress.delivered(emitter);
            self.progressed = true;
        }
    }

    /// Called after each frame: wakes the emitters waiting on deliveries, once per frame.
    pub fn frame_done(&mut self, now_us: u64) {
        if std::mem::take(&mut self.progressed)
            && let Some(progress) = &self.progress
        {
            progress.last_us.fetch_max(now_us, Ordering::Relaxed);
            progress.notify.notify_waiters();
        }
    }

    /// The tally of a connection the server closed.
    pub fn cut(mut self) -> Self {
        self.cut += 1;
        self
    }

    pub fn merge(&mut self, other: &Tally) {
        let _ = self.latency_us.add(&other.latency_us);
        self.received += other.received;
        self.reordered += other.reordered;
        self.refused += other.refused;
        self.cut += other.cut;
    }
}

/// Deliveries of each emitter's payloads, over all receivers.
pub struct Progress {
    delivered: Vec<AtomicU64>,
    /// When the last delivery arrived (Unix µs).
    last_us: AtomicU64,
    notify: Notify,
}

impl Progress {
    pub fn new(emitters: usize) -> Arc<Self> {
        Arc::new(Self {
            delivered: (0..emitters).map(|_| AtomicU64::new(0)).collect(),
            last_us: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }

    fn delivered(&self, emitter: usize) {
        if let Some(count) = self.delivered.get(emitter) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn of(&self, emitter: usize) -> u64 {
        self.delivered
            .get(emitter)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    pub fn last_delivery_us(&self) -> u64 {
        self.last_us.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.delivered
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until `done` holds, or `stall` passes without any delivery; false then.
    pub async fn wait(&self, stall: Duration, done: impl Fn(&Self) -> bool) -> bool {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout(stall, notified).await.is_err() {
                return done(self);
            }
        }
    }
}
