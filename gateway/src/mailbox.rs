//! A queue from many senders to one receiving task that holds memory only while it holds
//! something: a connection's outbound frames, the server API's commands to a session, a
//! Socket.IO session's inbound packets.
//!
//! A gateway keeps several such queues per connection, and most connections are idle
//! most of the time. A `tokio::sync::mpsc` channel allocates a block of 32 slots when it
//! is created and keeps it for the channel's life (1.3 to 1.8 KiB per queue here); this
//! queue starts empty, grows with what is queued, and gives its buffer back once it has
//! been drained: an idle connection's queues hold no slots at all. (A queue drained item by
//! item then allocates a small buffer per item, which costs far less than what the item
//! carries.) Bounds, where a queue has them, are the sender's to ask for
//! ([`Sender::try_send`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds as many as the sender allows.
    Full,
    /// The receiver is gone or closed the queue.
    Closed,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Wakes the receiver; a wake-up sent while it is not waiting is kept for its next wait.
    wake: Notify,
    senders: AtomicUsize,
}

struct State<T> {
    queue: VecDeque<T>,
    closed: bool,
}

impl<T> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State<T>> {
        // Every step leaves the queue consistent, so a poisoned lock is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Creates an empty queue.
pub fn mailbox<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
        }),
        wake: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is closed.
    pub fn send(&self, item: T) -> Result<(), Refused> {
        self.try_send(item, usize::MAX)
    }

    /// Queues `item` unless the queue is closed or already holds `limit` items.
    pub fn try_send(&self, item: T, limit: usize) -> Result<(), Refused> {
        let mut state = self.shared.state();
        if state.closed {
            return Err(Refused::Closed);
        }
        if state.queue.len() >= limit {
            return Err(Refused::Full);
        }
        state.queue.push_back(item);
        drop(state);
        self.shared.wake.notify_one();
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: the receiver gets what is queued, then `None`.
            self.shared.wake.notify_one();
        }
    }
}

pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next item; `None` once the queue is closed (or every sender gone) and empty.
    pub async fn recv(&mut self) -> Option<T> {
        // As with tokio's own channels, a receive spends the task's scheduling budget, so a
        // task that always finds something queued (a client flooding its session) still
        // yields to the others on its thread now and then.
        tokio::task::consume_budget().await;
        loop {
            {
                let mut state = self.shared.state();
                if let Some(item) = Self::pop(&mut state) {
                    return Some(item);
                }
                if state.closed || self.shared.senders.load(Ordering::Acquire) == 0 {
                    return None;
                }
            }
            self.shared.wake.notified().await;
        }
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.shared.state().queue.is_empty()
    }

    /// Whether nothing more can come in: the queue is closed, or every sender is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.state().closed || self.shared.senders.load(Ordering::Acquire) == 0
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        Self::pop(&mut self.shared.state())
    }

    fn pop(state: &mut State<T>) -> Option<T> {
        let item = state.queue.pop_front()?;
        if state.queue.is_empty() {
            state.queue = VecDeque::new();
        }
        Some(item)
    }

    /// Closes the queue: nothing more comes in; what it holds can still be taken.
    pub fn close(&mut self) {
        self.shared.state().closed = true;
    }

    /// Closes the queue and frees what it holds.
    pub fn close_and_clear(&mut self) {
        let taken = {
            let mut state = self.shared.state();
            state.closed = true;
            std::mem::take(&mut state.queue)
        };
        // Dropped outside the lock.
        drop(taken);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn items_arrive_in_order_then_none_when_senders_are_gone() {
        let (tx, mut rx) = mailbox();
        let other = tx.clone();
        tx.send(1).unwrap();
        other.send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Some(2));
        assert!(rx.recv().now_or_never().is_none(), "a sender is left");
        drop(other);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_send() {
        let (tx, mut rx) = mailbox();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        tx.send("hello").unwrap();
        assert_eq!(waiting.await.unwrap(), Some("hello"));
    }

    #[test]
    fn limits_are_the_senders_and_closing_refuses_more() {
        let (tx, mut rx) = mailbox();
        assert_eq!(tx.try_send(1, 2), Ok(()));
        assert_eq!(tx.try_send(2, 2), Ok(()));
        assert_eq!(tx.try_send(3, 2), Err(Refused::Full));
        assert_eq!(tx.send(3), Ok(()), "no limit asked");
        rx.close();
        assert_eq!(tx.send(4), Err(Refused::Closed));
        assert_eq!(rx.try_recv(), Some(1), "what was queued is still there");
        rx.close_and_clear();
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let (tx, mut rx) = mailbox();
        for i in 0..1000 {
            tx.send(i).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert_eq!(rx.shared.state().queue.capacity(), 0);
        tx.send(1).unwrap();
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(rx.shared.state().queue.capacity(), 0, "one item, the same");
    }
}
