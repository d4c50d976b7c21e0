//! The JSON side of sync documents, with no I/O: reading a patch, applying it to a
//! document within the document's size limit. A document is always a JSON object, and a
//! patch is a JSON Merge Patch (RFC 7386) that is an object too, so every patch of an
//! object yields an object.

use bytes::Bytes;
use herald_core::codes::{ErrorCode, Refusal};
use serde_json::Value;

use super::Snapshot;
use crate::history::StoreError;

/// A merge patch as a client or backend sent it: one JSON object, at most `max_size`
/// bytes.
pub fn parse_patch(patch: &[u8], max_size: usize) -> Result<Value, Refusal> {
    if patch.len() > max_size {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!("the patch exceeds the channel's max_document_size of {max_size} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(patch)
        .map_err(|e| Refusal::new(ErrorCode::BadRequest, format!("the patch is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "a merge patch must be a JSON object (a document is always an object)",
        ));
    }
    Ok(value)
}

/// A stored document, parsed.
pub fn parse_doc(snapshot: &Snapshot) -> Result<Value, StoreError> {
    serde_json::from_slice::<Value>(&snapshot.doc)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| StoreError::Malformed("a stored sync document is not a JSON object".into()))
}

/// `doc` with `patch` applied, and its JSON text; refused if the text would exceed
/// `max_size` bytes, in which case nothing changes.
pub fn apply(doc: &Value, patch: &Value, max_size: usize) -> Result<(Value, Bytes), Refusal> {
    let mut patched = doc.clone();
    json_patch::merge(&mut patched, patch);
    let text = serde_json::to_vec(&patched)
        .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
    if text.len() > max_size {
        return Err(Refusal::new(
            ErrorCode::MessageTooLarge,
            format!(
                "the patched document would be {} bytes, over the channel's \
                 max_document_size of {max_size}",
                text.len()
            ),
        ));
    }
    Ok((patched, Bytes::from(text)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        let patch = parse_patch(
            br#"{"a":"z","c":{"f":null},"list":[3],"n":{"x":null}}"#,
            1000,
        )
        .expect("a patch");
        let (patched, text) = apply(&doc, &patch, 1000).expect("fits");
        assert_eq!(
            patched,
            json!({"a": "z", "c": {"d": "e"}, "list": [3], "n": {}})
        );
        assert_eq!(serde_json::from_slice::<Value>(&text).unwrap(), patched);
    }

    #[test]
    fn refuses_what_is_not_an_object_patch_and_what_grows_too_large() {
        for bad in [&b"[1]"[..], b"5", b"null", b"\"x\"", b"{", b""] {
            let refusal = parse_patch(bad, 100).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::BadRequest, "{bad:?}");
        }
        let refusal = parse_patch(br#"{"a":"0123456789"}"#, 10).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::MessageTooLarge);
        let doc = json!({"a": "x"});
        let patch = parse_patch(br#"{"b":"0123456789"}"#, 100).unwrap();
        let refusal = apply(&doc, &patch, 20).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::MessageTooLarge);
        assert_eq!(doc, json!({"a": "x"}), "the document is unchanged");
    }
}
