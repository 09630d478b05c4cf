//! Tamper evidence: each event's hash over a canonical encoding of everything it says and
//! its stream's previous hash, and the running digest over the feed that `verify` prints.
//! The encoding is ours, not PostgreSQL's text form, so a changed database function
//! cannot change what a hash means.

use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::posting::Posting;

/// The hash the first event of a stream chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Everything an event's hash covers, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Stream id.
    pub stream_id: Uuid,
    /// Stream type.
    pub stream_type: &'a str,
    /// Version in the stream.
    pub version: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Event type.
    pub event_type: &'a str,
    /// Schema version.
    pub schema_version: i32,
    /// Payload.
    pub payload: &'a Value,
    /// Metadata.
    pub metadata: &'a Value,
    /// Business time in microseconds since the epoch.
    pub occurred_at_micros: i64,
    /// Store time in microseconds since the epoch.
    pub recorded_at_micros: i64,
    /// Postings in leg order.
    pub postings: &'a [Posting],
}

/// The event's hash: [`link`] of the previous hash, the version and [`content_digest`].
pub fn event_hash(prev_hash: &[u8], input: &HashInput<'_>) -> [u8; 32] {
    link(prev_hash, input.version, &content_digest(input))
}

/// Chains an event to its stream: `SHA-256(prev_hash || version as 8 bytes big-endian ||
/// content digest)`. Split from the content so that the append, which learns the stream's
/// head and therefore the version and previous hash only inside its one SQL statement,
/// can finish the chain there (`sha256(prev || int8send(version) || content)`) while the
/// canonical encoding stays ours.
pub fn link(prev_hash: &[u8], version: i64, content: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev_hash);
    h.update(version.to_be_bytes());
    h.update(content);
    h.finalize().into()
}

/// SHA-256 of the canonical encoding of everything an event says except its place in the
/// stream (version and previous hash, which [`link`] adds).
pub fn content_digest(input: &HashInput<'_>) -> [u8; 32] {
    let mut buf = Vec::with_capacity(512);
    buf.extend_from_slice(b"escrow-ledger/event/v1\n");
    buf.extend_from_slice(input.stream_id.as_bytes());
    put_str(&mut buf, input.stream_type);
    buf.extend_from_slice(input.event_id.as_bytes());
    put_str(&mut buf, input.event_type);
    buf.extend_from_slice(&input.schema_version.to_be_bytes());
    let mut json = Vec::new();
    canonical_json(input.payload, &mut json);
    put_bytes(&mut buf, &json);
    json.clear();
    canonical_json(input.metadata, &mut json);
    put_bytes(&mut buf, &json);
    buf.extend_from_slice(&input.occurred_at_micros.to_be_bytes());
    buf.extend_from_slice(&input.recorded_at_micros.to_be_bytes());
    buf.extend_from_slice(&(input.postings.len() as u64).to_be_bytes());
    for p in input.postings {
        put_str(&mut buf, &p.account.to_string());
        put_str(&mut buf, p.asset.code());
        put_str(&mut buf, &p.amount.normalize().to_string());
    }
    Sha256::digest(&buf).into()
}

/// One step of the running feed digest: `D' = SHA-256(D || position || event hash)`.
pub fn digest_step(digest: &[u8; 32], position: i64, event_hash: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(digest);
    h.update(position.to_be_bytes());
    h.update(event_hash);
    h.finalize().into()
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u64).to_be_bytes());
    buf.extend_from_slice(b);
}

/// Writes `value` as JSON with object keys sorted bytewise, whatever map type serde_json
/// was built with, so the same value always gives the same bytes.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                canonical_json(&map[key], out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is deterministic; a String never fails to serialize.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut a = Vec::new();
        canonical_json(
            &json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": "é\n"}}),
            &mut a,
        );
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"a":{"c":"é\n","z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn hash_changes_with_any_field_and_with_the_chain() {
        let payload = json!({"amount": "1.00"});
        let meta = json!({});
        let input = HashInput {
            stream_id: Uuid::nil(),
            stream_type: "payment",
            version: 1,
            event_id: Uuid::nil(),
            event_type: "X",
            schema_version: 1,
            payload: &payload,
            metadata: &meta,
            occurred_at_micros: 1,
            recorded_at_micros: 2,
            postings: &[],
        };
        let h = event_hash(&GENESIS, &input);
        assert_eq!(h, event_hash(&GENESIS, &input));
        assert_ne!(h, event_hash(&[1; 32], &input));
        let other = json!({"amount": "1.01"});
        assert_ne!(
            h,
            event_hash(
                &GENESIS,
                &HashInput {
                    payload: &other,
                    ..input
                }
            )
        );
        assert_ne!(
            h,
            event_hash(
                &GENESIS,
                &HashInput {
                    version: 2,
                    ..input
                }
            )
        );
    }
}
