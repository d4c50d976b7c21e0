//! Putting binary packets back together.
//!
//! A binary event or ack announces how many attachments follow it; they arrive as the next
//! binary messages (WebSocket binary frames, or `b…` packets in a polling payload). Until
//! all have arrived, nothing else may come in between.

use bytes::Bytes;

use super::packet::{Packet, PacketError};

/// A packet with all its attachments, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Complete {
    pub packet: Packet,
    pub attachments: Vec<Bytes>,
}

/// Collects the attachments of the binary packet being received.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Boxed: every session holds an assembler, and most never receive an attachment.
    waiting: Option<Box<Complete>>,
}

impl Assembler {
    /// Takes a decoded packet; returns it once complete (at once unless it has attachments).
    pub fn packet(&mut self, packet: Packet) -> Result<Option<Complete>, PacketError> {
        if self.waiting.is_some() {
            return Err(PacketError::MissingAttachments);
        }
        let complete = Complete {
            attachments: Vec::with_capacity(packet.attachments),
            packet,
        };
        if complete.packet.attachments == 0 {
            return Ok(Some(complete));
        }
        self.waiting = Some(Box::new(complete));
        Ok(None)
    }

    /// Takes one attachment; returns the packet once it has all of them.
    pub fn attachment(&mut self, bytes: Bytes) -> Result<Option<Complete>, PacketError> {
        let waiting = self
            .waiting
            .as_mut()
            .ok_or(PacketError::UnexpectedAttachment)?;
        waiting.attachments.push(bytes);
        if waiting.attachments.len() < waiting.packet.attachments {
            return Ok(None);
        }
        Ok(self.waiting.take().map(|complete| *complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_event_completes_with_its_last_attachment() {
        let mut assembler = Assembler::default();
        let packet = Packet::decode(
            "52-[\"bin\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
        )
        .unwrap();
        assert_eq!(assembler.packet(packet.clone()).unwrap(), None);
        assert_eq!(
            assembler.attachment(Bytes::from_static(b"a")).unwrap(),
            None
        );
        let complete = assembler
            .attachment(Bytes::from_static(b"b"))
            .unwrap()
            .unwrap();
        assert_eq!(complete.packet, packet);
        assert_eq!(
            complete.attachments,
            [Bytes::from_static(b"a"), Bytes::from_static(b"b")]
        );
        // Done: the next text packet passes straight through.
        let plain = Packet::decode("2[\"x\"]").unwrap();
        assert!(assembler.packet(plain).unwrap().is_some());
    }

    #[test]
    fn out_of_place_packets_are_protocol_violations() {
        let mut assembler = Assembler::default();
        assert_eq!(
            assembler.attachment(Bytes::from_static(b"x")),
            Err(PacketError::UnexpectedAttachment)
        );
        let binary = Packet::decode("51-[\"bin\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assembler.packet(binary).unwrap();
        let plain = Packet::decode("2[\"x\"]").unwrap();
        assert_eq!(
            assembler.packet(plain),
            Err(PacketError::MissingAttachments)
        );
    }
}
