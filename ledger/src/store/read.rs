//! Reading: one stream in version order, and the global feed in feed order —
//! `(tx_id, position)`, handed out only below the oldest transaction still running, so no
//! event can ever appear before a place a reader has already passed.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

use crate::account::Account;
use crate::event::{FeedPosition, RecordedEvent};
use crate::money::{parse_decimal_exact, Asset};
use crate::posting::Posting;

const COLUMNS: &str = "e.position, e.tx_id::text::int8 AS tx_id, e.stream_id, e.stream_type, e.version, \
    e.event_id, e.event_type, e.schema_version, e.payload, e.metadata, e.occurred_at, e.recorded_at, \
    e.prev_hash, e.hash, \
    (SELECT coalesce(jsonb_agg(jsonb_build_array(p.account, p.asset, p.amount::text) ORDER BY p.leg), '[]') \
       FROM postings p WHERE p.position = e.position) AS postings";

/// Reads a stream's events in version order.
///
/// # Errors
/// A database error, or a stored posting that no longer parses.
pub async fn read_stream<'e>(
    exec: impl PgExecutor<'e>,
    stream_id: Uuid,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events e WHERE e.stream_id = $1 ORDER BY e.version");
    sqlx::query(&sql)
        .bind(stream_id)
        .try_map(|row: PgRow| to_event(&row))
        .fetch_all(exec)
        .await
}

/// Reads several streams' events, each in version order, in one statement (one snapshot):
/// the command path reads the streams of commands decided at the same moment together.
/// Streams follow each other in id order.
///
/// # Errors
/// A database error, or a stored posting that no longer parses.
pub async fn read_streams<'e>(
    exec: impl PgExecutor<'e>,
    stream_ids: &[Uuid],
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events e WHERE e.stream_id = ANY($1) ORDER BY e.stream_id, e.version"
    );
    sqlx::query(&sql)
        .bind(stream_ids)
        .try_map(|row: PgRow| to_event(&row))
        .fetch_all(exec)
        .await
}

/// The stream's current version (0 if it has no events).
///
/// # Errors
/// A database error.
pub async fn stream_version<'e>(
    exec: impl PgExecutor<'e>,
    stream_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT coalesce(max(version), 0)::int8 FROM events WHERE stream_id = $1")
        .bind(stream_id)
        .fetch_one(exec)
        .await
}

/// Reads up to `limit` events after `after` in feed order, among those no running
/// transaction can still precede.
///
/// # Errors
/// A database error.
pub async fn read_feed<'e>(
    exec: impl PgExecutor<'e>,
    after: FeedPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events e \
         WHERE (e.tx_id, e.position) > ($1::text::xid8, $2) \
           AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY e.tx_id, e.position LIMIT $3"
    );
    sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.position)
        .bind(limit)
        .try_map(|row: PgRow| to_event(&row))
        .fetch_all(exec)
        .await
}

/// The feed place of the event at `position`, if there is one (0 means the start).
///
/// # Errors
/// A database error.
pub async fn feed_position_of<'e>(
    exec: impl PgExecutor<'e>,
    position: i64,
) -> Result<Option<FeedPosition>, sqlx::Error> {
    if position == 0 {
        return Ok(Some(FeedPosition::START));
    }
    let tx: Option<i64> =
        sqlx::query_scalar("SELECT tx_id::text::int8 FROM events WHERE position = $1")
            .bind(position)
            .fetch_optional(exec)
            .await?;
    Ok(tx.map(|tx_id| FeedPosition { tx_id, position }))
}

/// How far the readable feed trails the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// The highest position written by a committed transaction.
    pub head_position: i64,
    /// The highest position readers may be handed now.
    pub visible_position: i64,
    /// Committed events readers may not be handed yet, held back by an older transaction.
    pub held_back_events: i64,
    /// How long the oldest held-back event has waited, in milliseconds.
    pub held_back_ms: i64,
}

/// Measures the watermark lag. Cheap at any store size: the visible head is found by
/// walking the position index back past the held-back events only, and those are found
/// through the feed index from the watermark on. (The bound at the snapshot's `xmax`
/// changes no answer: later transactions are invisible anyway. It is there for the
/// planner, which takes a one-sided bound on a parameter for a third of the table and
/// scans all of it; a two-sided one it takes for a narrow range, read by the index.)
///
/// # Errors
/// A database error.
pub async fn watermark<'e>(exec: impl PgExecutor<'e>) -> Result<Watermark, sqlx::Error> {
    let row = sqlx::query(
        "WITH w AS MATERIALIZED (SELECT pg_snapshot_xmin(s) AS xmin, pg_snapshot_xmax(s) AS xmax \
                            FROM pg_current_snapshot() AS s) \
         SELECT coalesce((SELECT max(position) FROM events), 0)::int8 AS head, \
                coalesce((SELECT position FROM events WHERE tx_id < (SELECT xmin FROM w) \
                           ORDER BY position DESC LIMIT 1), 0)::int8 AS visible, \
                (SELECT count(*) FROM events \
                 WHERE tx_id >= (SELECT xmin FROM w) AND tx_id < (SELECT xmax FROM w))::int8 AS held, \
                coalesce((SELECT (extract(epoch FROM clock_timestamp() - min(recorded_at)) * 1000)::int8 \
                          FROM events WHERE tx_id >= (SELECT xmin FROM w) \
                                   AND tx_id < (SELECT xmax FROM w)), 0)::int8 AS held_ms",
    )
    .fetch_one(exec)
    .await?;
    Ok(Watermark {
        head_position: row.try_get("head")?,
        visible_position: row.try_get("visible")?,
        held_back_events: row.try_get("held")?,
        held_back_ms: row.try_get("held_ms")?,
    })
}

#[derive(Deserialize)]
struct StoredPosting(String, String, String);

fn to_event(row: &PgRow) -> Result<RecordedEvent, sqlx::Error> {
    let Json(raw): Json<Vec<StoredPosting>> = row.try_get("postings")?;
    let postings = raw
        .into_iter()
        .map(|StoredPosting(account, asset, amount)| {
            let decode = |m: String| sqlx::Error::Decode(m.into());
            Ok(Posting {
                account: account
                    .parse::<Account>()
                    .map_err(|e| decode(e.to_string()))?,
                asset: asset.parse::<Asset>().map_err(|e| decode(e.to_string()))?,
                amount: parse_decimal_exact(&amount).map_err(|e| decode(e.to_string()))?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let Json(payload): Json<Value> = row.try_get("payload")?;
    let Json(metadata): Json<Value> = row.try_get("metadata")?;
    Ok(RecordedEvent {
        position: row.try_get("position")?,
        tx_id: row.try_get("tx_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_type: row.try_get("stream_type")?,
        version: row.try_get("version")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        payload,
        metadata,
        occurred_at: row.try_get::<DateTime<Utc>, _>("occurred_at")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        postings,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
