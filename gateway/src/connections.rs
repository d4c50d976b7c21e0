//! How many client connections a gateway holds, against `gateway.max_connections`: a
//! connection holds a [`ConnectionPermit`] for its life.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The connections held now, and the most allowed.
pub struct Connections {
    held: Arc<AtomicUsize>,
    limit: usize,
}

/// One client connection counted against the gateway's limit, until dropped.
pub struct ConnectionPermit {
    held: Arc<AtomicUsize>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// At most `limit` connections; 0 means no limit.
    pub fn new(limit: usize) -> Self {
        Self {
            held: Arc::default(),
            limit: match limit {
                0 => usize::MAX,
                limit => limit,
            },
        }
    }

    /// A place for one more connection; `None` at the limit.
    pub fn permit(&self) -> Option<ConnectionPermit> {
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held < self.limit).then_some(held + 1)
            })
            .ok()?;
        Some(ConnectionPermit {
            held: self.held.clone(),
        })
    }

    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_stop_at_the_limit_and_return_when_dropped() {
        let connections = Connections::new(2);
        let first = connections.permit().expect("one");
        let _second = connections.permit().expect("two");
        assert!(connections.permit().is_none());
        drop(first);
        assert_eq!(connections.held(), 1);
        assert!(connections.permit().is_some());
        let unlimited = Connections::new(0);
        let many: Vec<_> = (0..100).filter_map(|_| unlimited.permit()).collect();
        assert_eq!(many.len(), 100);
    }
}
