//! How Socket.IO namespaces and rooms map onto Herald channels, so that native clients,
//! backends and Socket.IO sockets see each other's messages.
//!
//! | Socket.IO | channel |
//! | --- | --- |
//! | namespace `/chat` | `/chat` |
//! | room `lobby` of `/chat` | `/chat:lobby` |
//! | namespace `/` | `/` |
//! | room `lobby` of `/` | `/:lobby` |
//!
//! A channel's Herald namespace (the part before the first `:`) is therefore the Socket.IO
//! namespace, and channel rules configured for `/chat` apply to the namespace and its rooms.

/// The channel every socket of `namespace` is subscribed to.
pub fn namespace_channel(namespace: &str) -> String {
    namespace.to_string()
}

/// The channel of `room` in `namespace`.
pub fn room_channel(namespace: &str, room: &str) -> String {
    format!("{namespace}:{room}")
}

/// The Socket.IO namespace whose sockets may be subscribed to `channel`; `None` for
/// channels outside the mapping (they do not start with `/`).
pub fn namespace_of(channel: &str) -> Option<&str> {
    if !channel.starts_with('/') {
        return None;
    }
    Some(
        channel
            .split_once(':')
            .map_or(channel, |(namespace, _)| namespace),
    )
}

/// The room of `namespace` that `channel` is; `None` for the namespace's own channel and
/// for channels outside the namespace.
pub fn room_of<'a>(channel: &'a str, namespace: &str) -> Option<&'a str> {
    channel.strip_prefix(namespace)?.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_rooms_round_trip() {
        for (namespace, room) in [("/chat", "lobby"), ("/", "lobby"), ("/a", "b:c")] {
            assert_eq!(namespace_of(&namespace_channel(namespace)), Some(namespace));
            assert_eq!(
                namespace_of(&room_channel(namespace, room)),
                Some(namespace)
            );
        }
        assert_eq!(room_channel("/chat", "lobby"), "/chat:lobby");
        assert_eq!(room_channel("/", "lobby"), "/:lobby");
        assert_eq!(namespace_of("news"), None);
        assert_eq!(room_of("/chat:lobby", "/chat"), Some("lobby"));
        assert_eq!(room_of("/chat", "/chat"), None);
        assert_eq!(room_of("/chatter:x", "/chat"), None);
    }
}
