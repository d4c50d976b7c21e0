//! Socket.IO v5 packets, as the default parser writes them inside Engine.IO messages:
//!
//! ```text
//! <type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
//! ```
//!
//! `2["message","hi"]` is an event on the root namespace; `21/chat,7["greet",1]` an event
//! on `/chat` asking for acknowledgement 7; `51-["bin",{"_placeholder":true,"num":0}]` a
//! binary event followed by one attachment. The payload is kept as the client wrote it
//! (raw JSON), so relaying an event never re-serializes it.

use std::fmt::Write;

use serde_json::value::RawValue;
use thiserror::Error;

/// Most binary attachments accepted on one packet.
pub const MAX_ATTACHMENTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl PacketType {
    fn from_digit(c: u8) -> Option<Self> {
        Some(match c {
            b'0' => Self::Connect,
            b'1' => Self::Disconnect,
            b'2' => Self::Event,
            b'3' => Self::Ack,
            b'4' => Self::ConnectError,
            b'5' => Self::BinaryEvent,
            b'6' => Self::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> char {
        match self {
            Self::Connect => '0',
            Self::Disconnect => '1',
            Self::Event => '2',
            Self::Ack => '3',
            Self::ConnectError => '4',
            Self::BinaryEvent => '5',
            Self::BinaryAck => '6',
        }
    }

    pub fn is_binary(self) -> bool {
        matches!(self, Self::BinaryEvent | Self::BinaryAck)
    }
}

/// Why a packet cannot be read. Every one of them is a protocol violation: a stock client
/// never sends such a packet, so the connection is closed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("empty Socket.IO packet")]
    Empty,
    #[error("unknown Socket.IO packet type {0:?}")]
    UnknownType(char),
    #[error("invalid attachment count")]
    Attachments,
    #[error("more than {MAX_ATTACHMENTS} attachments")]
    TooManyAttachments,
    #[error("invalid acknowledgement id")]
    AckId,
    #[error("payload is not valid JSON: {0}")]
    Json(String),
    #[error("invalid payload for a {0:?} packet")]
    Payload(PacketType),
    #[error("an attachment arrived without a binary packet waiting for it")]
    UnexpectedAttachment,
    #[error("a packet arrived while attachments were still expected")]
    MissingAttachments,
}

#[derive(Debug, Clone)]
pub struct Packet {
    pub kind: PacketType,
    /// `/` for the root namespace.
    pub namespace: String,
    pub id: Option<u64>,
    /// Binary attachments that follow the packet (binary types only).
    pub attachments: usize,
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.namespace == other.namespace
            && self.id == other.id
            && self.attachments == other.attachments
            && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

/// Splits off the longest prefix of ASCII digits.
fn digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

impl Packet {
    /// A packet on `namespace` with a JSON payload (already serialized).
    pub fn new(kind: PacketType, namespace: &str, data: Option<Box<RawValue>>) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            id: None,
            attachments: 0,
            data,
        }
    }

    /// Parses the text of an Engine.IO message.
    pub fn decode(text: &str) -> Result<Self, PacketError> {
        let first = *text.as_bytes().first().ok_or(PacketError::Empty)?;
        let kind = PacketType::from_digit(first)
            .ok_or_else(|| PacketError::UnknownType(text.chars().next().unwrap_or('?')))?;
        let mut rest = &text[1..];

        let mut attachments = 0;
        if kind.is_binary() {
            let (count, after) = digits(rest);
            let after = after.strip_prefix('-').ok_or(PacketError::Attachments)?;
            attachments = count.parse().map_err(|_| PacketError::Attachments)?;
            if attachments > MAX_ATTACHMENTS {
                return Err(PacketError::TooManyAttachments);
            }
            rest = after;
        }

        let mut namespace = "/";
        if rest.starts_with('/') {
            let end = rest.find(',').unwrap_or(rest.len());
            namespace = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or("");
        }

        let (id, after) = digits(rest);
        let id = if id.is_empty() {
            None
        } else {
            Some(id.parse().map_err(|_| PacketError::AckId)?)
        };
        rest = after;

        let data = if rest.is_empty() {
            None
        } else {
            let raw: Box<RawValue> =
                serde_json::from_str(rest).map_err(|e| PacketError::Json(e.to_string()))?;
            Some(raw)
        };
        let packet = Self {
            kind,
            namespace: namespace.to_string(),
            id,
            attachments,
            data,
        };
        packet.validate()?;
        Ok(packet)
    }

    /// Checks the payload's shape against the packet type, as the reference parser does.
    fn validate(&self) -> Result<(), PacketError> {
        let first = self
            .data
            .as_ref()
            .and_then(|d| d.get().trim_start().bytes().next());
        let valid = match self.kind {
            PacketType::Connect => matches!(first, None | Some(b'{')),
            PacketType::Disconnect => first.is_none(),
            PacketType::ConnectError => matches!(first, Some(b'{' | b'"')),
            PacketType::Event | PacketType::BinaryEvent => self.event().is_ok(),
            PacketType::Ack | PacketType::BinaryAck => first == Some(b'['),
        };
        if valid {
            Ok(())
        } else {
            Err(PacketError::Payload(self.kind))
        }
    }

    /// The event name and arguments of an event packet.
    pub fn event(&self) -> Result<(String, Vec<&RawValue>), PacketError> {
        let invalid = || PacketError::Payload(self.kind);
        let data = self.data.as_ref().ok_or_else(invalid)?;
        let items: Vec<&RawValue> = serde_json::from_str(data.get()).map_err(|_| invalid())?;
        let (name, args) = items.split_first().ok_or_else(invalid)?;
        let name: String = serde_json::from_str(name.get()).map_err(|_| invalid())?;
        Ok((name, args.to_vec()))
    }

    /// The text to send inside an Engine.IO message.
    pub fn encode(&self) -> String {
        let data = self.data.as_ref().map_or("", |d| d.get());
        let mut out = String::with_capacity(16 + self.namespace.len() + data.len());
        out.push(self.kind.digit());
        if self.kind.is_binary() {
            let _ = write!(out, "{}-", self.attachments);
        }
        if self.namespace != "/" {
            out.push_str(&self.namespace);
            out.push(',');
        }
        if let Some(id) = self.id {
            let _ = write!(out, "{id}");
        }
        out.push_str(data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(json.to_string()).unwrap())
    }

    /// Wire text, then the packet it holds: type, namespace, ack id, attachments, payload.
    type Case = (
        &'static str,
        PacketType,
        &'static str,
        Option<u64>,
        usize,
        Option<&'static str>,
    );

    #[test]
    fn decodes_and_re_encodes_every_shape() {
        let cases: [Case; 9] = [
            ("0", PacketType::Connect, "/", None, 0, None),
            ("0/chat,", PacketType::Connect, "/chat", None, 0, None),
            (
                "0/chat,{\"token\":\"t\"}",
                PacketType::Connect,
                "/chat",
                None,
                0,
                Some("{\"token\":\"t\"}"),
            ),
            ("1/chat,", PacketType::Disconnect, "/chat", None, 0, None),
            (
                "2[\"message\",\"这是一条消息\"]",
                PacketType::Event,
                "/",
                None,
                0,
                Some("[\"message\",\"这是一条消息\"]"),
            ),
            (
                "2/chat,12[\"greet\",1,{\"a\":[true]}]",
                PacketType::Event,
                "/chat",
                Some(12),
                0,
                Some("[\"greet\",1,{\"a\":[true]}]"),
            ),
            (
                "3/chat,13[\"bar\"]",
                PacketType::Ack,
                "/chat",
                Some(13),
                0,
                Some("[\"bar\"]"),
            ),
            (
                "51-[\"baz\",{\"_placeholder\":true,\"num\":0}]",
                PacketType::BinaryEvent,
                "/",
                None,
                1,
                Some("[\"baz\",{\"_placeholder\":true,\"num\":0}]"),
            ),
            (
                "62-/admin,15[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
                PacketType::BinaryAck,
                "/admin",
                Some(15),
                2,
                Some("[{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]"),
            ),
        ];
        for (text, kind, namespace, id, attachments, data) in cases {
            let packet = Packet::decode(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let expected = Packet {
                kind,
                namespace: namespace.to_string(),
                id,
                attachments,
                data: data.and_then(raw),
            };
            assert_eq!(packet, expected, "{text}");
            assert_eq!(packet.encode(), text);
        }
    }

    #[test]
    fn events_expose_their_name_and_arguments() {
        let packet = Packet::decode("2[\"to\",\"lobby\",\"message\",{\"x\":1}]").unwrap();
        let (name, args) = packet.event().unwrap();
        assert_eq!(name, "to");
        let args: Vec<&str> = args.iter().map(|a| a.get()).collect();
        assert_eq!(args, ["\"lobby\"", "\"message\"", "{\"x\":1}"]);
    }

    #[test]
    fn malformed_packets_are_refused() {
        let cases = [
            ("", PacketError::Empty),
            ("9", PacketError::UnknownType('9')),
            ("5[\"x\"]", PacketError::Attachments),
            ("5x-[\"x\"]", PacketError::Attachments),
            ("511-[\"x\"]", PacketError::TooManyAttachments),
            ("299999999999999999999[\"x\"]", PacketError::AckId),
            ("2[]", PacketError::Payload(PacketType::Event)),
            ("2{\"a\":1}", PacketError::Payload(PacketType::Event)),
            ("2[1,2]", PacketError::Payload(PacketType::Event)),
            ("2", PacketError::Payload(PacketType::Event)),
            ("0[1]", PacketError::Payload(PacketType::Connect)),
            ("1[1]", PacketError::Payload(PacketType::Disconnect)),
            ("3{}", PacketError::Payload(PacketType::Ack)),
        ];
        for (text, error) in cases {
            assert_eq!(Packet::decode(text).unwrap_err(), error, "{text:?}");
        }
        assert!(matches!(
            Packet::decode("2[\"x\""),
            Err(PacketError::Json(_))
        ));
    }
}
