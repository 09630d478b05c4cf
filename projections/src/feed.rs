//! The feed as projectors read it: the same order and visibility as
//! `ledger::store::read_feed` — `(tx_id, position)`, only below the oldest running
//! transaction — but without what projectors do not use (hashes, postings: the balances
//! projector joins the postings rows itself; an imported event's copy of its legacy
//! `document`, most of its payload, which nothing projected comes from).

use chrono::{DateTime, Utc};
use ledger::FeedPosition;
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// An event as a projector sees it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FeedEvent {
    /// Global position.
    pub position: i64,
    /// The writing transaction's id.
    pub tx_id: i64,
    /// Its stream.
    pub stream_id: Uuid,
    /// `payment`, `dispute`, `adjustment`, ...
    pub stream_type: String,
    /// Its version in the stream.
    pub version: i64,
    /// Stored type name.
    pub event_type: String,
    /// Payload shape version.
    pub schema_version: i32,
    /// The data.
    pub payload: Value,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// Who caused it (`metadata.actor.name`).
    pub actor_name: Option<String>,
    /// As which role (`metadata.actor.role`).
    pub actor_role: Option<String>,
}

impl FeedEvent {
    /// This event's place in the feed.
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// Reads up to `limit` events after `after`, in feed order, among those no running
/// transaction can still precede.
///
/// # Errors
/// A database error.
pub async fn read_batch<'e>(
    exec: impl PgExecutor<'e>,
    after: FeedPosition,
    limit: i64,
) -> Result<Vec<FeedEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.position, e.tx_id::text::int8 AS tx_id, e.stream_id, e.stream_type, e.version, \
                e.event_type, e.schema_version, e.payload - 'document' AS payload, e.occurred_at, \
                e.metadata->'actor'->>'name' AS actor_name, \
                e.metadata->'actor'->>'role' AS actor_role \
         FROM events e \
         WHERE (e.tx_id, e.position) > ($1::text::xid8, $2) \
           AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY e.tx_id, e.position LIMIT $3",
    )
    .bind(after.tx_id.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(exec)
    .await
}
