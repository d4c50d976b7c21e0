//! Engine.IO v4 packets and polling payloads.
//!
//! A packet is a type digit followed by its data: `4hello` is a message, `2probe` a ping
//! probe. Over WebSocket each text frame holds one packet, and a binary frame is a message
//! whose data is the frame as it is. Over HTTP long-polling one body holds several packets
//! separated by the record separator `\x1e`, and binary messages are written as `b` followed
//! by their base64 encoding.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use thiserror::Error;

/// Separates packets in a polling payload.
pub const SEPARATOR: char = '\x1e';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Open,
    Close,
    Ping,
    Pong,
    Message,
    Upgrade,
    Noop,
}

impl PacketType {
    fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Open,
            b'1' => Self::Close,
            b'2' => Self::Ping,
            b'3' => Self::Pong,
            b'4' => Self::Message,
            b'5' => Self::Upgrade,
            b'6' => Self::Noop,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Self::Open => '0',
            Self::Close => '1',
            Self::Ping => '2',
            Self::Pong => '3',
            Self::Message => '4',
            Self::Upgrade => '5',
            Self::Noop => '6',
        }
    }
}

/// What a packet carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Text(String),
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub kind: PacketType,
    pub data: Data,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in a binary packet")]
    Base64,
}

impl Packet {
    pub fn text(kind: PacketType, text: impl Into<String>) -> Self {
        Self {
            kind,
            data: Data::Text(text.into()),
        }
    }

    pub fn empty(kind: PacketType) -> Self {
        Self::text(kind, String::new())
    }

    pub fn binary(bytes: Bytes) -> Self {
        Self {
            kind: PacketType::Message,
            data: Data::Binary(bytes),
        }
    }

    /// Parses one packet from its text form (a WebSocket text frame, or one part of a
    /// polling payload).
    pub fn decode_text(text: &str) -> Result<Self, EngineError> {
        let first = *text.as_bytes().first().ok_or(EngineError::Empty)?;
        let kind = PacketType::from_digit(first)
            .ok_or_else(|| EngineError::UnknownType(text.chars().next().unwrap_or('?')))?;
        // The type is one ASCII digit, so the data starts at byte 1.
        Ok(Self::text(kind, &text[1..]))
    }

    /// The text form of a packet; `None` for a binary message, which WebSocket sends as a
    /// binary frame.
    pub fn encode_text(&self) -> Option<String> {
        match &self.data {
            Data::Text(text) => {
                let mut out = String::with_capacity(1 + text.len());
                out.push(self.kind.digit());
                out.push_str(text);
                Some(out)
            }
            Data::Binary(_) => None,
        }
    }
}

/// Splits a polling request body into packets.
pub fn decode_payload(body: &str) -> Result<Vec<Packet>, EngineError> {
    body.split(SEPARATOR)
        .map(|part| match part.strip_prefix('b') {
            Some(encoded) => BASE64
                .decode(encoded)
                .map(|bytes| Packet::binary(Bytes::from(bytes)))
                .map_err(|_| EngineError::Base64),
            None => Packet::decode_text(part),
        })
        .collect()
}

/// A packet already in its WebSocket form: a text frame, or a binary frame's bytes.
#[derive(Debug, Clone, Copy)]
pub enum Encoded<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// Joins packets into one polling response body; binary ones become `b` and base64.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = Encoded<'a>>) -> String {
    let mut out = String::new();
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match packet {
            Encoded::Text(text) => out.push_str(text),
            Encoded::Binary(bytes) => {
                out.push('b');
                BASE64.encode_string(bytes, &mut out);
            }
        }
    }
    out
}

/// Why an Engine.IO HTTP request (a handshake, a poll, a WebSocket upgrade) was refused:
/// the codes and messages of the reference server, which clients report as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("Transport unknown")]
    TransportUnknown,
    #[error("Session ID unknown")]
    UnknownSid,
    #[error("Bad handshake method")]
    BadHandshakeMethod,
    #[error("Bad request")]
    BadRequest,
    #[error("Forbidden")]
    Forbidden,
    #[error("Unsupported protocol version")]
    UnsupportedVersion,
    /// A POST body over `maxPayload`.
    #[error("Payload too large")]
    PayloadTooLarge,
}

impl RequestError {
    pub fn code(self) -> u8 {
        match self {
            Self::TransportUnknown => 0,
            Self::UnknownSid => 1,
            Self::BadHandshakeMethod => 2,
            Self::BadRequest | Self::PayloadTooLarge => 3,
            Self::Forbidden => 4,
            Self::UnsupportedVersion => 5,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::Forbidden => 403,
            Self::PayloadTooLarge => 413,
            _ => 400,
        }
    }

    /// The JSON body: `{"code":1,"message":"Session ID unknown"}`.
    pub fn body(self) -> String {
        serde_json::json!({ "code": self.code(), "message": self.to_string() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_round_trip() {
        for (text, kind, data) in [
            ("2probe", PacketType::Ping, "probe"),
            ("3", PacketType::Pong, ""),
            ("4这是一条消息", PacketType::Message, "这是一条消息"),
            ("5", PacketType::Upgrade, ""),
            ("6", PacketType::Noop, ""),
            ("1", PacketType::Close, ""),
        ] {
            let packet = Packet::decode_text(text).unwrap();
            assert_eq!(packet, Packet::text(kind, data));
            assert_eq!(packet.encode_text().as_deref(), Some(text));
        }
    }

    #[test]
    fn bad_packets_are_refused() {
        assert_eq!(Packet::decode_text(""), Err(EngineError::Empty));
        assert_eq!(
            Packet::decode_text("9x"),
            Err(EngineError::UnknownType('9'))
        );
        assert_eq!(Packet::decode_text("é"), Err(EngineError::UnknownType('é')));
    }

    #[test]
    fn polling_payloads_split_on_the_record_separator() {
        let packets = decode_payload("4hello\x1e2\x1ebAQIDBA==").unwrap();
        assert_eq!(
            packets,
            [
                Packet::text(PacketType::Message, "hello"),
                Packet::empty(PacketType::Ping),
                Packet::binary(Bytes::from_static(&[1, 2, 3, 4])),
            ]
        );
        let encoded = encode_payload([
            Encoded::Text("4hello"),
            Encoded::Text("2"),
            Encoded::Binary(&[1, 2, 3, 4]),
        ]);
        assert_eq!(encoded, "4hello\x1e2\x1ebAQIDBA==");
        assert_eq!(
            decode_payload("4a\x1ebnot base64!"),
            Err(EngineError::Base64)
        );
        assert_eq!(decode_payload("4a\x1e"), Err(EngineError::Empty));
    }

    #[test]
    fn binary_messages_have_no_text_form() {
        assert_eq!(Packet::binary(Bytes::from_static(b"x")).encode_text(), None);
    }
}
