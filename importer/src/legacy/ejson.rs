//! Extended JSON of legacy documents: canonical Extended JSON for the digest stored with
//! every imported event and for the document carried in it, a lossy rendering for rejected
//! documents that are not valid BSON text (kept with their raw bytes beside it), and the
//! U+0000 replacement PostgreSQL needs.

use bson::{Bson, Document, RawDocument};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical Extended JSON of a document that reads (no invalid UTF-8).
///
/// # Errors
/// The BSON error when the document does not convert.
pub fn canonical(doc: &RawDocument) -> Result<Value, bson::raw::Error> {
    let converted = Document::try_from(doc)?;
    Ok(Bson::Document(converted).into_canonical_extjson())
}

/// Canonical Extended JSON when the document reads, else a lossy rendering (invalid UTF-8
/// replaced), else the bytes in hex: for the rejects table.
pub fn lossy(doc: &RawDocument) -> Value {
    if let Ok(v) = canonical(doc) {
        return v;
    }
    match bson::from_slice_utf8_lossy::<Document>(doc.as_bytes()) {
        Ok(d) => Bson::Document(d).into_canonical_extjson(),
        Err(_) => serde_json::json!({ "$unparsedBsonHex": hex::encode(doc.as_bytes()) }),
    }
}

/// The JSON text of a value (keys in document order).
pub fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The SHA-256, in hex, of a document's canonical Extended JSON text.
pub fn digest(canonical: &Value) -> String {
    hex::encode(Sha256::digest(text(canonical).as_bytes()))
}

/// Replaces U+0000 with U+FFFD in every string and key; returns whether any was replaced.
pub fn replace_nul(value: &mut Value) -> bool {
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{fffd}");
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| replace_nul(v) | any),
        Value::Object(map) => {
            let mut any = false;
            if map.keys().any(|k| k.contains('\0')) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(k.replace('\0', "\u{fffd}"), v);
                }
                any = true;
            }
            map.values_mut().fold(any, |any, v| replace_nul(v) | any)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_keeps_types_and_the_digest_is_stable() {
        let doc = bson::rawdoc! { "a": 1_i32, "b": 0.1, "c": "x" };
        let v = canonical(&doc).unwrap();
        assert_eq!(
            v,
            json!({"a": {"$numberInt": "1"}, "b": {"$numberDouble": "0.1"}, "c": "x"})
        );
        assert_eq!(digest(&v), digest(&canonical(&doc).unwrap()));
        assert_eq!(digest(&v).len(), 64);
    }

    #[test]
    fn nul_is_replaced_everywhere() {
        let mut v = json!({"a": ["x\u{0}y"], "b": {"c": "ok"}});
        assert!(replace_nul(&mut v));
        assert_eq!(v["a"][0], "x\u{fffd}y");
        let mut clean = json!({"a": "x"});
        assert!(!replace_nul(&mut clean));
    }
}
