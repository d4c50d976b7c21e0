//! The way in from a connection's transports to its session: Engine.IO packets in order,
//! bounded in count and in bytes, so that however fast a client sends, its gateway holds
//! at most a few of its largest messages before the transport waits (backpressure: a
//! WebSocket stops being read, a POST is not answered).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::engine::{self, Data};
use crate::mailbox::{self, mailbox};

/// A packet on its way to the session, with its share of the byte budget.
#[derive(Debug)]
pub struct Inbound {
    pub packet: engine::Packet,
    pub held: Held,
}

/// A packet's place and bytes in the budget, given back when dropped: once the session
/// has handled the packet.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: u32,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.places.add_permits(1);
        self.budget.bytes.add_permits(self.bytes as usize);
    }
}

/// Places for packets, and bytes: one allocation for both, kept for the session's life.
#[derive(Debug)]
struct Budget {
    places: Semaphore,
    bytes: Semaphore,
}

pub struct Sender {
    packets: mailbox::Sender<Inbound>,
    budget: Arc<Budget>,
    /// The whole byte budget: what a packet larger than it takes.
    most: u32,
}

pub type Receiver = mailbox::Receiver<Inbound>;

/// A way in that holds at most `packets` packets and `bytes` bytes of them; a packet
/// larger than `bytes` goes through alone.
pub fn channel(packets: usize, bytes: usize) -> (Sender, Receiver) {
    let most = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
    let (tx, rx) = mailbox();
    let sender = Sender {
        packets: tx,
        budget: Arc::new(Budget {
            places: Semaphore::new(packets.max(1)),
            bytes: Semaphore::new(most as usize),
        }),
        most,
    };
    (sender, rx)
}

impl Sender {
    /// Hands `packet` to the session once its bytes fit; `false` once the session ended.
    pub async fn send(&self, packet: engine::Packet) -> bool {
        let size = match &packet.data {
            Data::Text(text) => text.len(),
            Data::Binary(bytes) => bytes.len(),
        };
        let cost = u32::try_from(size).unwrap_or(u32::MAX).clamp(1, self.most);
        let Ok(place) = self.budget.places.acquire().await else {
            return false;
        };
        let Ok(bytes) = self.budget.bytes.acquire_many(cost).await else {
            return false;
        };
        // Given back by `Held` when the session is done with the packet.
        place.forget();
        bytes.forget();
        let inbound = Inbound {
            packet,
            held: Held {
                budget: self.budget.clone(),
                bytes: cost,
            },
        };
        self.packets.send(inbound).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{Packet, PacketType};
    use futures_util::FutureExt;

    #[tokio::test]
    async fn bytes_in_flight_are_bounded() {
        let (sender, mut receiver) = channel(16, 10);
        assert!(
            sender
                .send(Packet::text(PacketType::Message, "123456"))
                .await
        );
        // 7 more bytes do not fit beside the first 6.
        let second = sender.send(Packet::text(PacketType::Message, "1234567"));
        tokio::pin!(second);
        assert_eq!((&mut second).now_or_never(), None);
        let first = receiver.recv().await.unwrap();
        assert_eq!((&mut second).now_or_never(), None, "held until handled");
        drop(first);
        assert!(second.await);
        // Larger than the whole budget: it goes alone.
        drop(receiver.recv().await);
        assert!(
            sender
                .send(Packet::text(PacketType::Message, "x".repeat(100)))
                .await
        );
    }
}
