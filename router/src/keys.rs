//! Every Redis key the router uses, built in one place.
//!
//! Redis keys are binary-safe, so channel names go in unencoded. The `{…}` hash tag around
//! the channel keeps all keys of one channel in one Redis Cluster slot. The tag is what
//! lies between the first `{` and the next `}`, and an empty one does not count: a channel
//! that starts with `}` gets a control character in front, which no channel name holds.

/// Builds the keys of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The stream holding a channel's history.
    pub fn history(&self, channel: &str) -> String {
        format!("{}:history:{{{}}}", self.prefix, tag(channel))
    }

    /// The hash holding a channel's epoch (`e`) and newest offset (`s`).
    pub fn meta(&self, channel: &str) -> String {
        format!("{}:meta:{{{}}}", self.prefix, tag(channel))
    }

    /// The JSON text of a channel's sync document, beside its stream (the patches) and
    /// meta (its revision and epoch).
    pub fn document(&self, channel: &str) -> String {
        format!("{}:doc:{{{}}}", self.prefix, tag(channel))
    }

    /// The hash of a channel's present clients: client id -> encoded `ClientInfo`.
    pub fn presence(&self, channel: &str) -> String {
        format!("{}:presence:{{{}}}", self.prefix, tag(channel))
    }

    /// The sorted set of when each present client of a channel expires (Unix ms).
    pub fn presence_expiry(&self, channel: &str) -> String {
        format!("{}:presence-exp:{{{}}}", self.prefix, tag(channel))
    }

    /// The sorted set of channels with history by when each last got a publication (Unix
    /// ms), for the consume stream to find the channels a returning consumer missed.
    pub fn activity(&self) -> String {
        format!("{}:active", self.prefix)
    }

    /// The record of a Socket.IO socket kept for recovery, by its private id.
    pub fn socket(&self, pid: &str) -> String {
        format!("{}:sio:{pid}", self.prefix)
    }

    /// The record of one idempotency key on a channel. The channel's length comes first,
    /// so that no other channel and key make the same name (`c}:x` with `y`, `c` with
    /// `x}:y`).
    pub fn idempotency(&self, channel: &str, key: &str) -> String {
        let tag = tag(channel);
        format!("{}:idem:{}:{{{tag}}}:{key}", self.prefix, channel.len())
    }
}

/// What goes between the braces for `channel`: itself, unless it starts with `}` (an
/// empty hash tag, which would scatter its keys over the Cluster's slots).
fn tag(channel: &str) -> std::borrow::Cow<'_, str> {
    match channel.starts_with('}') {
        true => format!("\u{1}{channel}").into(),
        false => channel.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_channel_share_a_hash_tag() {
        let keys = Keys::new("h");
        assert_eq!(keys.history("chat:1"), "h:history:{chat:1}");
        assert_eq!(keys.meta("chat:1"), "h:meta:{chat:1}");
        assert_eq!(keys.document("chat:1"), "h:doc:{chat:1}");
        assert_eq!(keys.idempotency("chat:1", "k"), "h:idem:6:{chat:1}:k");
    }

    #[test]
    fn a_channel_that_starts_with_a_closing_brace_still_has_a_hash_tag() {
        let keys = Keys::new("h");
        let slot = |key: String| fred::util::redis_keyslot(key.as_bytes());
        let history = slot(keys.history("}x"));
        assert_eq!(keys.history("}x"), "h:history:{\u{1}}x}");
        assert_eq!(slot(keys.meta("}x")), history);
        assert_eq!(slot(keys.idempotency("}x", "k")), history);
        assert_eq!(slot(keys.document("}x")), history);
        assert_eq!(slot(keys.presence("}x")), slot(keys.presence_expiry("}x")));
        assert_ne!(keys.history("}x"), keys.history("x"));
    }

    proptest::proptest! {
        #[test]
        fn fuzz_idempotency_keys_are_one_to_one(
            a in ".{0,12}", b in ".{0,12}", c in ".{0,12}", d in ".{0,12}",
        ) {
            let keys = Keys::new("h");
            if (&a, &b) != (&c, &d) {
                proptest::prop_assert_ne!(keys.idempotency(&a, &b), keys.idempotency(&c, &d));
            }
        }

        #[test]
        fn fuzz_every_key_of_a_channel_is_in_its_slot(channel in "[{}a:]{1,6}|\\PC{1,12}") {
            let keys = Keys::new("h");
            let slot = |key: String| fred::util::redis_keyslot(key.as_bytes());
            let history = slot(keys.history(&channel));
            for key in [
                keys.meta(&channel),
                keys.document(&channel),
                keys.presence(&channel),
                keys.presence_expiry(&channel),
                keys.idempotency(&channel, "k"),
            ] {
                proptest::prop_assert_eq!(slot(key), history);
            }
        }
    }

    #[test]
    fn idempotency_keys_are_one_to_one() {
        let keys = Keys::new("h");
        assert_ne!(keys.idempotency("c}:x", "y"), keys.idempotency("c", "x}:y"));
        assert_ne!(keys.idempotency("c:", "1"), keys.idempotency("c", ":1"));
    }
}
