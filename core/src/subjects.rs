//! Every NATS subject Herald uses, built in one place.
//!
//! Channel names may hold characters that NATS subjects cannot (`.`, `*`, `>`, whitespace), so
//! they are encoded reversibly into one subject token: ASCII letters, digits, `-`, `_` and `:`
//! stay as they are (common names stay readable), every other byte becomes `%HH`.
//! A configurable prefix lets several clusters share one NATS.

use std::fmt::Write;

/// Queue group in which routers receive publish and history requests.
pub const ROUTER_QUEUE: &str = "herald-routers";

/// Builds the subjects of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Where a channel's publications are delivered to gateways:
    /// `<prefix>.ch.<bucket>.<channel>`, so that a gateway may take a channel's
    /// publications either alone or with the rest of its bucket ([`Self::bucket`]).
    pub fn delivery(&self, channel: &str) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 8 + channel.len());
        subject.push_str(&self.prefix);
        // Writing to a String cannot fail.
        let _ = write!(subject, ".ch.{}.", bucket_of(channel));
        encode_token(channel, &mut subject);
        subject
    }

    /// Every channel's delivery subject in `bucket` (see [`bucket_of`]): one subscription
    /// that carries many channels, which the subscriber tells apart by the publications'
    /// `channel`.
    pub fn bucket(&self, bucket: u32) -> String {
        format!("{}.ch.{bucket}.>", self.prefix)
    }

    /// Every channel's delivery subject, for the consume stream.
    pub fn all_deliveries(&self) -> String {
        format!("{}.ch.>", self.prefix)
    }

    /// Publish requests to the router queue group.
    pub fn publish_requests(&self) -> String {
        format!("{}.router.publish", self.prefix)
    }

    /// History requests to the router queue group.
    pub fn history_requests(&self) -> String {
        format!("{}.router.history", self.prefix)
    }

    /// Socket.IO session requests (recovery records) to the router queue group.
    pub fn session_requests(&self) -> String {
        format!("{}.router.sessions", self.prefix)
    }

    /// Sync document requests (read, patch, delete) to the router queue group.
    pub fn sync_requests(&self) -> String {
        format!("{}.router.sync", self.prefix)
    }

    /// Presence reports and queries to the router queue group.
    pub fn presence_requests(&self) -> String {
        format!("{}.router.presence", self.prefix)
    }

    /// Node heartbeats (`NodeStatus`), which every node sends and routers read.
    pub fn nodes(&self) -> String {
        format!("{}.nodes", self.prefix)
    }

    /// Socket.IO polling requests for the sessions of the gateway with `token` (a token
    /// is made of subject-safe characters only: letters, digits, `-`, `_`).
    pub fn gateway_polling(&self, token: &str) -> String {
        format!("{}.gateway.{token}.polling", self.prefix)
    }
}

/// How many buckets the channels' delivery subjects are spread over. Part of the subjects
/// every node builds, so every node of a cluster must agree on it: it is not a setting.
pub const DELIVERY_BUCKETS: u32 = 64;

/// The bucket of `channel`'s delivery subject: FNV-1a of its name, which every node and
/// release computes alike (a keyed or per-process hash would not).
pub fn bucket_of(channel: &str) -> u32 {
    let hash = channel.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    hash % DELIVERY_BUCKETS
}

fn keeps_as_is(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':')
}

/// Appends `channel`, encoded as one subject token, to `out`.
pub fn encode_token(channel: &str, out: &mut String) {
    for &b in channel.as_bytes() {
        if keeps_as_is(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Reverses [`encode_token`]; `None` if `token` is not a valid encoding.
pub fn decode_token(token: &str) -> Option<String> {
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_reversible_and_subject_safe() {
        for channel in [
            "news",
            "chat:lobby",
            "/chat:lobby",
            "a.b*c>d e\tf",
            "%",
            "这是一条",
        ] {
            let mut token = String::new();
            encode_token(channel, &mut token);
            assert!(
                !token.contains(['.', '*', '>', ' ', '\t']),
                "{channel} -> {token}"
            );
            assert_eq!(decode_token(&token).as_deref(), Some(channel));
        }
    }

    #[test]
    fn common_names_stay_readable() {
        let subjects = Subjects::new("herald");
        let lobby = bucket_of("chat:lobby");
        assert_eq!(
            subjects.delivery("chat:lobby"),
            format!("herald.ch.{lobby}.chat:lobby")
        );
        let dotted = bucket_of("/chat:x.y");
        assert_eq!(
            subjects.delivery("/chat:x.y"),
            format!("herald.ch.{dotted}.%2Fchat:x%2Ey")
        );
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: nodes of different releases must put a channel in the same bucket.
        assert_eq!(bucket_of(""), 0x811c_9dc5 % DELIVERY_BUCKETS);
        assert_eq!(bucket_of("a"), 0xe40c_292c % DELIVERY_BUCKETS);
        let mut used = [0u32; DELIVERY_BUCKETS as usize];
        for user in 0..6400 {
            used[bucket_of(&format!("user:#{user}")) as usize] += 1;
        }
        assert!(used.iter().all(|&n| (50..150).contains(&n)), "{used:?}");
    }

    #[test]
    fn a_bucket_subject_matches_its_channels_deliveries() {
        let subjects = Subjects::new("p");
        let channel = "user:#alice";
        let wildcard = subjects.bucket(bucket_of(channel));
        let stem = wildcard.strip_suffix('>').expect("a trailing wildcard");
        let delivery = subjects.delivery(channel);
        assert!(
            delivery.starts_with(stem),
            "{delivery} is not in {wildcard}"
        );
        assert!(!delivery[stem.len()..].contains('.'));
    }

    #[test]
    fn distinct_channels_get_distinct_subjects() {
        let subjects = Subjects::new("p");
        assert_ne!(subjects.delivery("a.b"), subjects.delivery("a%2Eb"));
    }
}
