//! A projector's row in `projection.projector_state`: its checkpoint, its live side, and
//! why it halted; and the advisory lock that lets one process at a time work it.

use chrono::{DateTime, Utc};
use ledger::FeedPosition;
use sqlx::{PgConnection, PgExecutor, Row};

use crate::{Projection, ProjectionError};

/// One of the two copies of a projector's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// `projection.<table>_a`.
    A,
    /// `projection.<table>_b`.
    B,
}

impl Side {
    /// `"a"` or `"b"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }

    /// The other side.
    #[must_use]
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn parse(text: &str) -> Option<Side> {
        match text {
            "a" => Some(Side::A),
            "b" => Some(Side::B),
            _ => None,
        }
    }
}

/// A projector's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorState {
    /// Which projector.
    pub projection: Projection,
    /// The side the finance views select from.
    pub active_side: Side,
    /// The last event applied, in feed order.
    pub checkpoint: FeedPosition,
    /// Events applied incrementally (a rebuild resets it to the events it applied).
    pub events_applied: i64,
    /// When its checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// Why it stopped, if it did.
    pub halted_reason: Option<String>,
    /// When it last was rebuilt.
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Since when its steps fail on a database error (they are retried), if they do.
    pub failing_since: Option<DateTime<Utc>>,
    /// The latest failed step's error, while it fails.
    pub last_error: Option<String>,
}

/// The advisory lock key of a projector (shared by its runner and its rebuild's swap).
pub(crate) fn lock_key(projection: Projection) -> String {
    format!("escrow_ledger.projector.{}", projection.name())
}

/// Takes the projector's lock for the current transaction, if free.
pub(crate) async fn try_lock(
    conn: &mut PgConnection,
    projection: Projection,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(projection))
        .fetch_one(conn)
        .await
}

/// Waits for the projector's lock for the current transaction (bounded by the
/// transaction's `lock_timeout`).
pub(crate) async fn lock(
    conn: &mut PgConnection,
    projection: Projection,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(lock_key(projection))
        .execute(conn)
        .await?;
    Ok(())
}

/// Reads a projector's state.
///
/// # Errors
/// A database error, or a row that is missing or malformed (a halt: migrations not
/// applied or hand-edited).
pub async fn load<'e>(
    exec: impl PgExecutor<'e>,
    projection: Projection,
) -> Result<ProjectorState, ProjectionError> {
    let row = sqlx::query(
        "SELECT active_side, checkpoint_tx, checkpoint_position, events_applied, updated_at, \
                halted_reason, rebuilt_at, failing_since, last_error \
         FROM projection.projector_state WHERE projector = $1",
    )
    .bind(projection.name())
    .fetch_optional(exec)
    .await?
    .ok_or_else(|| {
        ProjectionError::halt(
            projection.name(),
            "no row in projection.projector_state (run `escrow-ledger migrate`)",
        )
    })?;
    let side: String = row.try_get("active_side")?;
    Ok(ProjectorState {
        projection,
        active_side: Side::parse(&side).ok_or_else(|| {
            ProjectionError::halt(projection.name(), format!("unknown active side {side:?}"))
        })?,
        checkpoint: FeedPosition {
            tx_id: row.try_get("checkpoint_tx")?,
            position: row.try_get("checkpoint_position")?,
        },
        events_applied: row.try_get("events_applied")?,
        updated_at: row.try_get("updated_at")?,
        halted_reason: row.try_get("halted_reason")?,
        rebuilt_at: row.try_get("rebuilt_at")?,
        failing_since: row.try_get("failing_since")?,
        last_error: row.try_get("last_error")?,
    })
}

/// Records that a step of `projection` failed with `error` (kept from its first failure
/// until a step succeeds): what `/readyz` and `/metrics` show of a projector that retries.
///
/// # Errors
/// A database error (the database may be what fails).
pub async fn record_failure(
    pool: &sqlx::PgPool,
    projection: Projection,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection.projector_state \
         SET failing_since = coalesce(failing_since, now()), last_error = $2 \
         WHERE projector = $1",
    )
    .bind(projection.name())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Clears a recorded failure once a step of `projection` succeeded.
///
/// # Errors
/// A database error.
pub async fn clear_failure(pool: &sqlx::PgPool, projection: Projection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection.projector_state SET failing_since = NULL, last_error = NULL \
         WHERE projector = $1 AND failing_since IS NOT NULL",
    )
    .bind(projection.name())
    .execute(pool)
    .await?;
    Ok(())
}

/// Moves the checkpoint after `applied` more events.
pub(crate) async fn advance(
    conn: &mut PgConnection,
    projection: Projection,
    checkpoint: FeedPosition,
    applied: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection.projector_state \
         SET checkpoint_tx = $2, checkpoint_position = $3, \
             events_applied = events_applied + $4, updated_at = now() \
         WHERE projector = $1",
    )
    .bind(projection.name())
    .bind(checkpoint.tx_id)
    .bind(checkpoint.position)
    .bind(i64::try_from(applied).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// Records why a projector stopped (the first reason is kept).
pub(crate) async fn halt<'e>(
    exec: impl PgExecutor<'e>,
    projection: Projection,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection.projector_state SET halted_reason = $2, halted_at = now() \
         WHERE projector = $1 AND halted_reason IS NULL",
    )
    .bind(projection.name())
    .bind(reason)
    .execute(exec)
    .await?;
    Ok(())
}
