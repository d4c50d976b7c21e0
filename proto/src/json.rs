//! How the hooks' messages ([`crate::backend::v1`]) read and write as the JSON of HTTP
//! hooks: fields holding JSON text are embedded as JSON (not as a string), bytes are
//! base64.

/// A `string` field holding JSON text, embedded as JSON; empty text is `null`.
pub mod text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        if text.is_empty() {
            return serializer.serialize_none();
        }
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer).map_err(D::Error::custom)?;
        Ok(match raw.get() {
            "null" => String::new(),
            text => text.to_string(),
        })
    }
}

/// An `optional string` field holding JSON text: absent is `None`, anything given
/// (`null` included) is that JSON.
pub mod text_option {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::value::RawValue;

    pub fn serialize<S: Serializer>(
        text: &Option<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match text {
            Some(text) => super::text::serialize(text, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        // Reached only when the field is present: `null` is data too.
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Some(raw.get().to_string()))
    }
}

/// A `repeated bytes` field, as a list of base64 strings.
pub mod base64_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Bytes], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(|bytes| STANDARD.encode(bytes)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Bytes>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .into_iter()
            .map(|text| STANDARD.decode(text).map(Bytes::from))
            .collect::<Result<_, _>>()
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::v1::{Client, PublishReply, PublishRequest};
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn json_payloads_are_embedded_and_bytes_are_base64() {
        let request = PublishRequest {
            client: Some(Client {
                client: "c1".into(),
                user: "alice".into(),
                info: String::new(),
                transport: "native".into(),
                namespace: String::new(),
            }),
            channel: "chat".into(),
            data: r#"{"text":"hi"}"#.into(),
            attachments: vec![Bytes::from_static(b"\x00\x01")],
        };
        let written = serde_json::to_value(&request).expect("serializes");
        assert_eq!(
            written,
            json!({
                "client": {"client": "c1", "user": "alice", "info": null,
                           "transport": "native", "namespace": ""},
                "channel": "chat", "data": {"text": "hi"}, "attachments": ["AAE="],
            })
        );
        let read: PublishRequest = serde_json::from_value(written).expect("reads back");
        assert_eq!(read, request);
    }

    #[test]
    fn a_reply_says_only_what_it_changes() {
        let reply: PublishReply = serde_json::from_str("{}").expect("reads");
        assert_eq!(reply.data, None);
        let reply: PublishReply = serde_json::from_str(r#"{"data": null}"#).expect("reads");
        assert_eq!(reply.data.as_deref(), Some("null"));
        let reply: PublishReply =
            serde_json::from_str(r#"{"data": {"text": "***"}, "skip_history": true}"#)
                .expect("reads");
        assert_eq!(reply.data.as_deref(), Some(r#"{"text": "***"}"#));
        assert!(reply.skip_history);
    }
}
