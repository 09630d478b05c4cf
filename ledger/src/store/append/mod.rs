//! Appending: optimistic concurrency per stream, the hash chain, and the postings rows in
//! one SQL statement, so an append outside a transaction is one round trip and its own
//! transaction. The statement reads each stream's head, checks the expected versions,
//! finishes each event's hash from its stream's previous one (the content digest comes
//! from here, see [`super::hash`]), and inserts events and postings; a version check that
//! fails inserts nothing. Taking the heads inside the statement rather than in a read
//! before it is what makes the append one round trip: no lock, no second statement.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

mod sql;

use super::hash::{content_digest, HashInput, GENESIS};
use super::StoreError;
use crate::event::{ExpectedVersion, StreamAppend};
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

/// The statement's parameters, one array per column.
#[derive(Default)]
struct Rows {
    // streams
    s_stream: Vec<Uuid>,
    s_type: Vec<String>,
    s_expected: Vec<i64>,
    // events, in append order; `ord` counts from 1 within the stream
    idx: Vec<i32>,
    stream_id: Vec<Uuid>,
    ord: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<String>,
    schema_version: Vec<i32>,
    payload: Vec<Json<Value>>,
    metadata: Vec<Json<Value>>,
    occurred_at: Vec<DateTime<Utc>>,
    content: Vec<Vec<u8>>,
    // postings, keyed by `idx` of their event
    p_event: Vec<i32>,
    p_leg: Vec<i16>,
    p_account: Vec<String>,
    p_asset: Vec<String>,
    p_amount: Vec<rust_decimal::Decimal>,
}

/// What [`append_or_refuse`] did: everything, or nothing because some streams were not at
/// their expected versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Every event was inserted; in position order.
    Done(Vec<AppendedEvent>),
    /// Nothing was inserted: these streams' actual versions did not admit the append. The
    /// statement did not fail, so a surrounding transaction is still usable.
    Refused(HashMap<Uuid, i64>),
}

/// Appends events to one or more streams: one statement, run inside the caller's
/// transaction or, on a connection outside one, as its own transaction.
///
/// Checks each stream's expected version against its head in the statement and relies
/// on the unique `(stream_id, version)` constraint for a race with another append that
/// commits between that read and the insert.
///
/// # Errors
/// [`StoreError::InvalidAppend`], [`StoreError::Conflict`] (whose `actual` is `None` when
/// found by the constraint: the statement failed, and a surrounding transaction with
/// it), [`StoreError::DuplicateEvent`], or [`StoreError::Database`].
pub async fn append(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<Vec<AppendedEvent>, StoreError> {
    match append_or_refuse(conn, appends).await? {
        Appended::Done(done) => Ok(done),
        Appended::Refused(refused) => {
            let Some(a) = appends
                .iter()
                .find(|a| refused.contains_key(&a.stream_id))
                .or_else(|| appends.first())
            else {
                return Err(StoreError::InvalidAppend("no streams to append to".into()));
            };
            Err(StoreError::Conflict {
                stream_id: a.stream_id,
                expected: a.expected,
                actual: refused.get(&a.stream_id).copied(),
            })
        }
    }
}

/// [`append`], but a version check that fails is an answer naming every stream it failed
/// for rather than an error: the group commit of the command path appends many commands'
/// events in one statement and drops only the commands whose streams moved.
///
/// # Errors
/// As [`append`], except that a failed version check is [`Appended::Refused`].
pub async fn append_or_refuse(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
) -> Result<Appended, StoreError> {
    validate(appends)?;
    let recorded_at = Utc::now().trunc_subsecs(6);
    let rows = build_rows(appends, recorded_at)?;
    let returned = if rows.idx.len() == 1 {
        return single(conn, appends, &rows, recorded_at).await;
    } else if rows.idx.len() == rows.s_stream.len() {
        one_per_stream(conn, &rows, recorded_at).await
    } else {
        chained(conn, &rows, recorded_at).await
    }
    .map_err(|e| classify(e, appends))?;

    let mut inserted: HashMap<Uuid, (i64, i64)> = HashMap::with_capacity(returned.len());
    let mut refused: HashMap<Uuid, i64> = HashMap::new();
    for (position, event_id, stream_id, version) in returned {
        match (position, event_id) {
            (Some(position), Some(event_id)) => {
                inserted.insert(event_id, (position, version));
            }
            _ => {
                refused.insert(stream_id, version);
            }
        }
    }
    if !refused.is_empty() {
        return Ok(Appended::Refused(refused));
    }
    let mut done = Vec::with_capacity(rows.event_id.len());
    for (i, event_id) in rows.event_id.iter().enumerate() {
        let (position, version) = inserted.get(event_id).copied().ok_or_else(|| {
            StoreError::InvalidAppend("an inserted event was not returned".into())
        })?;
        done.push(AppendedEvent {
            event_id: *event_id,
            stream_id: rows.stream_id[i],
            version,
            position,
        });
    }
    done.sort_by_key(|e| e.position);
    Ok(Appended::Done(done))
}

/// A row the multi-event statements return: an inserted event (position, event id,
/// stream, version) or a refused stream (no position, no event id, stream, its head).
type Returned = (Option<i64>, Option<Uuid>, Uuid, i64);

async fn single(
    conn: &mut PgConnection,
    appends: &[StreamAppend],
    rows: &Rows,
    recorded_at: DateTime<Utc>,
) -> Result<Appended, StoreError> {
    let with_postings = !rows.p_event.is_empty();
    let query = sqlx::query_as::<_, (i64, i64)>(if with_postings {
        sql::SINGLE_WITH_POSTINGS
    } else {
        sql::SINGLE
    })
    .bind(rows.stream_id[0])
    .bind(&rows.s_type[0])
    .bind(rows.s_expected[0])
    .bind(rows.event_id[0])
    .bind(&rows.event_type[0])
    .bind(rows.schema_version[0])
    .bind(&rows.payload[0])
    .bind(&rows.metadata[0])
    .bind(rows.occurred_at[0])
    .bind(recorded_at)
    .bind(&rows.content[0])
    .bind(GENESIS.as_slice());
    let query = if with_postings {
        query
            .bind(&rows.p_leg)
            .bind(&rows.p_account)
            .bind(&rows.p_asset)
            .bind(&rows.p_amount)
    } else {
        query
    };
    let inserted = query
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| classify(e, appends))?;
    let Some((position, version)) = inserted else {
        // Nothing inserted: the version check failed. Name the actual version.
        let actual = super::stream_version(&mut *conn, rows.stream_id[0]).await?;
        return Ok(Appended::Refused(HashMap::from([(
            rows.stream_id[0],
            actual,
        )])));
    };
    Ok(Appended::Done(vec![AppendedEvent {
        event_id: rows.event_id[0],
        stream_id: rows.stream_id[0],
        version,
        position,
    }]))
}

async fn one_per_stream(
    conn: &mut PgConnection,
    rows: &Rows,
    recorded_at: DateTime<Utc>,
) -> Result<Vec<Returned>, sqlx::Error> {
    sqlx::query_as(sql::ONE_PER_STREAM)
        .bind(&rows.idx)
        .bind(&rows.stream_id)
        .bind(&rows.s_type)
        .bind(&rows.s_expected)
        .bind(&rows.event_id)
        .bind(&rows.event_type)
        .bind(&rows.schema_version)
        .bind(&rows.payload)
        .bind(&rows.metadata)
        .bind(&rows.occurred_at)
        .bind(&rows.content)
        .bind(recorded_at)
        .bind(GENESIS.as_slice())
        .bind(&rows.p_event)
        .bind(&rows.p_leg)
        .bind(&rows.p_account)
        .bind(&rows.p_asset)
        .bind(&rows.p_amount)
        .fetch_all(&mut *conn)
        .await
}

async fn chained(
    conn: &mut PgConnection,
    rows: &Rows,
    recorded_at: DateTime<Utc>,
) -> Result<Vec<Returned>, sqlx::Error> {
    sqlx::query_as(sql::CHAINED)
        .bind(&rows.s_stream)
        .bind(&rows.s_type)
        .bind(&rows.s_expected)
        .bind(&rows.idx)
        .bind(&rows.stream_id)
        .bind(&rows.ord)
        .bind(&rows.event_id)
        .bind(&rows.event_type)
        .bind(&rows.schema_version)
        .bind(&rows.payload)
        .bind(&rows.metadata)
        .bind(&rows.occurred_at)
        .bind(&rows.content)
        .bind(recorded_at)
        .bind(&rows.p_event)
        .bind(&rows.p_leg)
        .bind(&rows.p_account)
        .bind(&rows.p_asset)
        .bind(&rows.p_amount)
        .bind(GENESIS.as_slice())
        .fetch_all(&mut *conn)
        .await
}

/// Lays out the statement's arrays and computes each event's content digest.
fn build_rows(appends: &[StreamAppend], recorded_at: DateTime<Utc>) -> Result<Rows, StoreError> {
    let recorded_micros = recorded_at.timestamp_micros();
    let mut rows = Rows::default();
    let mut index = 0_i32;
    for a in appends {
        rows.s_stream.push(a.stream_id);
        rows.s_type.push(a.stream_type.clone());
        rows.s_expected.push(match a.expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => v,
        });
        for (ord, e) in (1_i64..).zip(&a.events) {
            index += 1;
            let occurred_at = e.occurred_at.trunc_subsecs(6);
            let payload = normalize(&e.payload);
            let metadata = normalize(&e.metadata);
            let content = content_digest(&HashInput {
                stream_id: a.stream_id,
                stream_type: &a.stream_type,
                version: 0, // not part of the content: the statement links it
                event_id: e.event_id,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                payload: &payload,
                metadata: &metadata,
                occurred_at_micros: occurred_at.timestamp_micros(),
                recorded_at_micros: recorded_micros,
                postings: &e.postings,
            });
            for (leg, p) in e.postings.iter().enumerate() {
                rows.p_event.push(index);
                rows.p_leg.push(i16::try_from(leg).map_err(|_| {
                    StoreError::InvalidAppend("an event has more than 32767 postings".into())
                })?);
                rows.p_account.push(p.account.to_string());
                rows.p_asset.push(p.asset.code().to_owned());
                rows.p_amount.push(p.amount);
            }
            rows.idx.push(index);
            rows.stream_id.push(a.stream_id);
            rows.ord.push(ord);
            rows.event_id.push(e.event_id);
            rows.event_type.push(e.event_type.clone());
            rows.schema_version.push(e.schema_version);
            rows.payload.push(Json(payload));
            rows.metadata.push(Json(metadata));
            rows.occurred_at.push(occurred_at);
            rows.content.push(content.to_vec());
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
        if matches!(a.expected, ExpectedVersion::Exact(v) if v < 0) {
            return invalid(format!(
                "negative expected version for stream {}",
                a.stream_id
            ));
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
        // A deadlock (two writers locking the same streams' index entries in opposite
        // orders: a dispute command beside a group commit) or a serialization failure
        // rolled the statement back: a lost race, decided again like any other.
        if matches!(db.code().as_deref(), Some("40P01" | "40001")) {
            let first = &appends[0];
            return StoreError::Conflict {
                stream_id: first.stream_id,
                expected: first.expected,
                actual: None,
            };
        }
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
