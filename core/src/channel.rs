//! Channel names: what is valid, and the namespace a channel belongs to.
//!
//! A channel name is any non-empty UTF-8 string of at most [`MAX_CHANNEL_LEN`] bytes without
//! control characters. Dots, wildcards and spaces are allowed: they are encoded away when a
//! name becomes a NATS subject (see [`crate::subjects`]).

use thiserror::Error;

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Why a channel name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    #[error("channel name is empty")]
    Empty,
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    #[error("channel name contains a control character")]
    ControlCharacter,
}

/// Checks that `name` may be used as a channel.
pub fn validate(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(ChannelError::ControlCharacter);
    }
    Ok(())
}

/// The channel's namespace: the part before the first `:`, or `""` when there is none.
/// Channel rules are configured per namespace. A name that starts with `/` and has no `:`
/// is its own namespace: it is a Socket.IO namespace's channel (`/chat`), whose rooms
/// (`/chat:lobby`) share its rules.
pub fn namespace(name: &str) -> &str {
    match name.split_once(':') {
        Some((namespace, _)) => namespace,
        None if name.starts_with('/') => name,
        None => "",
    }
}

/// Whether `name` matches `pattern`: the same name, or a prefix ending in `*` (token grants,
/// the Socket.IO namespace allow-list).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Whether `origin` is in a list of web origins, where `*` stands for any.
pub fn origin_listed(list: &[String], origin: &str) -> bool {
    list.iter()
        .any(|allowed| allowed == "*" || allowed == origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_with_subject_special_characters() {
        for name in ["news", "chat:lobby", "a.b*c>d e", "/chat:room", "这是"] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate(""), Err(ChannelError::Empty));
        assert_eq!(validate(&"x".repeat(256)), Err(ChannelError::TooLong));
        assert_eq!(validate("a\nb"), Err(ChannelError::ControlCharacter));
    }

    #[test]
    fn namespace_is_the_part_before_the_first_colon() {
        assert_eq!(namespace("chat:lobby:1"), "chat");
        assert_eq!(namespace("news"), "");
        assert_eq!(namespace("/chat:lobby"), "/chat");
        assert_eq!(namespace("/chat"), "/chat");
        assert_eq!(namespace("/"), "/");
    }
}
