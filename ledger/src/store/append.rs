//! Appending: optimistic concurrency per stream, the hash chain, and the postings rows,
//! all inside the caller's transaction. Two round trips whatever the number of events: one
//! to read the streams' heads, one to insert the events and their postings together.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::hash::{event_hash, HashInput, GENESIS};
use super::StoreError;
use crate::event::StreamAppend;
use crate::posting::check_balanced;

/// Where one appended event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: Uuid,
    /// Its version in the stream.
    pub version: i64,
    /// Its global position.
    pub position: i64,
}

#[derive(Default)]
struct Rows {
    stream_id: Vec<Uuid>,
    stream_type: Vec<String>,
    version: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    payload: Vec<Json<Value>>,
    metadata: Vec<Json<Value>>,
    occurred_at: Vec<DateTime<Utc>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
    // postings, keyed by the index of their event in the rows above
    p_event: Vec<i32>,
    p_leg: Vec<i16>,
    p_account: Vec<String>,
    p_asset: Vec<String>,
    p_amount: Vec<rust_decimal::Decimal>,
}

const INSERT: &str = r"
WITH ev AS (
    INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version,
                        payload, metadata, occurred_at, recorded_at, prev_hash, hash)
    SELECT s, st, v, eid, et, sv, p, m, oa, $10, ph, h
    FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::uuid[], $5::text[], $6::int4[],
                $7::jsonb[], $8::jsonb[], $9::timestamptz[], $11::bytea[], $12::bytea[])
         AS t(s, st, v, eid, et, sv, p, m, oa, ph, h)
    RETURNING position, event_id
), ins_postings AS (
    INSERT INTO postings (position, leg, account, asset, amount)
    SELECT ev.position, t.leg, t.account, t.asset, t.amount
    FROM UNNEST($13::int4[], $14::int2[], $15::text[], $16::text[], $17::numeric[])
         AS t(idx, leg, account, asset, amount)
    JOIN ev ON ev.event_id = ($4::uuid[])[t.idx]
)
SELECT position, event_id FROM ev
";

/// Appends events to one or more streams inside the caller's transaction.
///
/// Checks each stream's expected version against its head (read first, so an ordinary
/// conflict is reported with the actual version) and relies on the unique
/// `(stream_id, version)` constraint for races between that read and the insert.
///
/// # Errors
/// [`StoreError::InvalidAppend`], [`StoreError::Conflict`] (whose `actual` is `None` when
/// found by the constraint: the transaction is then aborted),
/// [`StoreError::DuplicateEvent`], or [`StoreError::Database`].
pub async fn append(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<Vec<AppendedEvent>, StoreError> {
    validate(appends)?;
    let stream_ids: Vec<Uuid> = appends.iter().map(|a| a.stream_id).collect();
    let heads: HashMap<Uuid, (i64, Vec<u8>)> = sqlx::query_as::<_, (Uuid, i64, Vec<u8>)>(
        "SELECT DISTINCT ON (stream_id) stream_id, version, hash FROM events \
         WHERE stream_id = ANY($1) ORDER BY stream_id, version DESC",
    )
    .bind(&stream_ids)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(s, v, h)| (s, (v, h)))
    .collect();

    let recorded_at = Utc::now().trunc_subsecs(6);
    let rows = build_rows(appends, &heads, recorded_at)?;

    let inserted: Vec<(i64, Uuid)> = sqlx::query_as(INSERT)
        .bind(&rows.stream_id)
        .bind(&rows.stream_type)
        .bind(&rows.version)
        .bind(&rows.event_id)
        .bind(&rows.event_type)
        .bind(&rows.schema_version)
        .bind(&rows.payload)
        .bind(&rows.metadata)
        .bind(&rows.occurred_at)
        .bind(recorded_at)
        .bind(&rows.prev_hash)
        .bind(&rows.hash)
        .bind(&rows.p_event)
        .bind(&rows.p_leg)
        .bind(&rows.p_account)
        .bind(&rows.p_asset)
        .bind(&rows.p_amount)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(e, appends))?;

    let positions: HashMap<Uuid, i64> = inserted.into_iter().map(|(p, id)| (id, p)).collect();
    let mut done = Vec::with_capacity(rows.event_id.len());
    for i in 0..rows.event_id.len() {
        let position = positions.get(&rows.event_id[i]).copied().ok_or_else(|| {
            StoreError::InvalidAppend("an inserted event was not returned".into())
        })?;
        done.push(AppendedEvent {
            event_id: rows.event_id[i],
            stream_id: rows.stream_id[i],
            version: rows.version[i],
            position,
        });
    }
    done.sort_by_key(|e| e.position);
    Ok(done)
}

/// Checks expected versions against the heads and lays out the rows, chaining hashes.
fn build_rows(
    appends: &[StreamAppend],
    heads: &HashMap<Uuid, (i64, Vec<u8>)>,
    recorded_at: DateTime<Utc>,
) -> Result<Rows, StoreError> {
    let recorded_micros = recorded_at.timestamp_micros();
    let mut rows = Rows::default();
    let mut index = 0_i32;
    for a in appends {
        let (actual, mut prev) = heads
            .get(&a.stream_id)
            .cloned()
            .unwrap_or((0, GENESIS.to_vec()));
        if !a.expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream_id: a.stream_id,
                expected: a.expected,
                actual: Some(actual),
            });
        }
        let mut version = actual;
        for e in &a.events {
            version += 1;
            index += 1;
            let occurred_at = e.occurred_at.trunc_subsecs(6);
            let payload = normalize(&e.payload);
            let metadata = normalize(&e.metadata);
            let hash = event_hash(
                &prev,
                &HashInput {
                    stream_id: a.stream_id,
                    stream_type: &a.stream_type,
                    version,
                    event_id: e.event_id,
                    event_type: &e.event_type,
                    schema_version: e.schema_version,
                    payload: &payload,
                    metadata: &metadata,
                    occurred_at_micros: occurred_at.timestamp_micros(),
                    recorded_at_micros: recorded_micros,
                    postings: &e.postings,
                },
            );
            for (leg, p) in e.postings.iter().enumerate() {
                rows.p_event.push(index);
                rows.p_leg.push(i16::try_from(leg).map_err(|_| {
                    StoreError::InvalidAppend("an event has more than 32767 postings".into())
                })?);
                rows.p_account.push(p.account.to_string());
                rows.p_asset.push(p.asset.code().to_owned());
                rows.p_amount.push(p.amount);
            }
            rows.stream_id.push(a.stream_id);
            rows.stream_type.push(a.stream_type.clone());
            rows.version.push(version);
            rows.event_id.push(e.event_id);
            rows.event_type.push(e.event_type.clone());
            rows.schema_version.push(e.schema_version);
            rows.payload.push(Json(payload));
            rows.metadata.push(Json(metadata));
            rows.occurred_at.push(occurred_at);
            rows.prev_hash
                .push(std::mem::replace(&mut prev, hash.to_vec()));
            rows.hash.push(hash.to_vec());
        }
    }

    Ok(rows)
}

fn validate(appends: &[StreamAppend]) -> Result<(), StoreError> {
    let invalid = |m: String| Err(StoreError::InvalidAppend(m));
    if appends.is_empty() {
        return invalid("no streams to append to".into());
    }
    let mut seen = std::collections::HashSet::new();
    for a in appends {
        if !seen.insert(a.stream_id) {
            return invalid(format!("stream {} named twice in one append", a.stream_id));
        }
        if a.events.is_empty() {
            return invalid(format!("no events for stream {}", a.stream_id));
        }
        if a.stream_type.is_empty() {
            return invalid("empty stream type".into());
        }
        for e in &a.events {
            if !e.payload.is_object() {
                return invalid(format!("payload of {} is not a JSON object", e.event_type));
            }
            if !e.metadata.is_object() {
                return invalid(format!("metadata of {} is not a JSON object", e.event_type));
            }
            if e.event_type.is_empty() || e.schema_version < 1 {
                return invalid("event type empty or schema version below 1".into());
            }
            if has_nul(&e.payload) || has_nul(&e.metadata) {
                return invalid(format!(
                    "{} holds U+0000, which PostgreSQL cannot store",
                    e.event_type
                ));
            }
            if let Err(err) = check_balanced(&e.postings) {
                return invalid(format!("postings of {}: {err}", e.event_type));
            }
        }
    }
    Ok(())
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Makes a value read back from `jsonb` equal to the one written: `jsonb` has no negative
/// zero, so `-0.0` is written as `0.0`.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n)
            if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) && n.is_f64() =>
        {
            serde_json::Number::from_f64(0.0).map_or(Value::Null, Value::Number)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

fn classify(err: sqlx::Error, appends: &[StreamAppend]) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        match db.constraint() {
            Some("events_stream_version_key") => {
                let first = &appends[0];
                return StoreError::Conflict {
                    stream_id: first.stream_id,
                    expected: first.expected,
                    actual: None,
                };
            }
            Some("events_event_id_key") => {
                let id = appends
                    .iter()
                    .flat_map(|a| a.events.iter())
                    .map(|e| e.event_id)
                    .next()
                    .unwrap_or_default();
                return StoreError::DuplicateEvent(id);
            }
            _ => {}
        }
    }
    StoreError::Database(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExpectedVersion;
    use serde_json::json;

    #[test]
    fn negative_zero_is_written_as_zero() {
        let v = normalize(&json!({"a": [-0.0, 1.5], "b": "x"}));
        assert_eq!(v, json!({"a": [0.0, 1.5], "b": "x"}));
        assert!(!v["a"][0].as_f64().unwrap().is_sign_negative());
    }

    #[test]
    fn nul_anywhere_is_found() {
        assert!(has_nul(&json!({"a": ["x\u{0}"]})));
        assert!(!has_nul(&json!({"a": ["x"]})));
    }

    #[test]
    fn expected_versions_admit_what_they_say() {
        assert!(ExpectedVersion::Any.admits(7));
        assert!(ExpectedVersion::NoStream.admits(0));
        assert!(!ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exact(3).admits(3));
        assert!(!ExpectedVersion::Exact(3).admits(4));
    }
}
