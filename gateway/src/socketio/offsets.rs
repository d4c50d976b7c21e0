//! The offset string of connection state recovery: where a socket stands in each of its
//! channels.
//!
//! With recovery on, every event sent to a socket ends with an offset string, and the
//! client echoes the last one it received when it reconnects. A socket listens on several
//! channels (its namespace's and its rooms'), each with offsets of its own, so the string
//! lists them all: `key:offset` pairs joined by `.`, where the key is a 32-bit hash of the
//! channel and its epoch (`1f3a9c07:42.9b01ee2d:7`). The hash keeps the string short
//! whatever the channel names, and a channel whose stream has a new epoch no longer
//! matches, so its old offset is never used against the new stream.
//!
//! Every gateway computes the same keys, so any of them can read a string another wrote.

use std::sync::{Arc, Mutex};

use herald_proto::bus::v1::Position;

/// The key of `channel` in its life `epoch` (FNV-1a, which every gateway computes alike).
pub fn key(channel: &str, epoch: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in channel.bytes().chain([0]).chain(epoch.bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Reads an offset string; unreadable parts are skipped (the channel then recovers from
/// where the socket joined it).
pub fn parse(offsets: &str) -> Vec<(u32, u64)> {
    offsets
        .split('.')
        .filter_map(|pair| {
            let (key, offset) = pair.split_once(':')?;
            Some((u32::from_str_radix(key, 16).ok()?, offset.parse().ok()?))
        })
        .collect()
}

struct Mark {
    channel: Arc<str>,
    key: u32,
    offset: u64,
}

/// A socket's position in each of its channels with history, shared by its subscriptions
/// so that an event on any channel carries them all.
#[derive(Default)]
pub struct Marks {
    marks: Mutex<Vec<Mark>>,
}

impl Marks {
    fn marks(&self) -> std::sync::MutexGuard<'_, Vec<Mark>> {
        // Each step leaves the list consistent, so a poisoned lock is still sound.
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the socket is at `position` in `channel`. Channels without history
    /// (no epoch) have no place in the string.
    pub fn set(&self, channel: &str, position: &Position) {
        if position.epoch.is_empty() {
            return;
        }
        let key = key(channel, &position.epoch);
        let mut marks = self.marks();
        match marks.iter_mut().find(|m| &*m.channel == channel) {
            Some(mark) => {
                mark.key = key;
                mark.offset = position.offset;
            }
            None => marks.push(Mark {
                channel: channel.into(),
                key,
                offset: position.offset,
            }),
        }
    }

    /// Records where the socket starts in `channel`, unless an event of the channel was
    /// delivered to it already (a subscription is live before its caller hears back).
    pub fn start(&self, channel: &str, position: &Position) {
        if !self.marks().iter().any(|m| &*m.channel == channel) {
            self.set(channel, position);
        }
    }

    /// The socket left `channel`.
    pub fn remove(&self, channel: &str) {
        self.marks().retain(|m| &*m.channel != channel);
    }

    /// Records that the socket received `position` in `channel`, and returns the offset
    /// string that goes with it.
    pub fn advance(&self, channel: &str, position: &Position) -> String {
        self.set(channel, position);
        self.render()
    }

    pub fn render(&self) -> String {
        let marks = self.marks();
        let mut out = String::with_capacity(marks.len() * 16);
        for (i, mark) in marks.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            out.push_str(&format!("{:08x}:{}", mark.key, mark.offset));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn an_offset_string_lists_every_channel_and_parses_back() {
        let marks = Marks::default();
        marks.set("/chat", &at(3, "e1"));
        marks.set("/chat:lobby", &at(0, "e2"));
        marks.set("/chat:typing", &Position::default());
        let rendered = marks.advance("/chat", &at(4, "e1"));
        assert_eq!(
            parse(&rendered),
            [(key("/chat", "e1"), 4), (key("/chat:lobby", "e2"), 0)]
        );
        marks.remove("/chat");
        assert_eq!(parse(&marks.render()), [(key("/chat:lobby", "e2"), 0)]);
    }

    #[test]
    fn keys_differ_by_channel_and_epoch() {
        assert_ne!(key("/chat", "e1"), key("/chat", "e2"));
        assert_ne!(key("/chat", "e1"), key("/chat:e1", ""));
        assert_eq!(key("/chat", "e1"), key("/chat", "e1"));
    }

    #[test]
    fn garbage_is_skipped() {
        assert_eq!(parse(""), []);
        assert_eq!(parse("zz:1.0000000a:x.0000000b:2"), [(11, 2)]);
    }
}
