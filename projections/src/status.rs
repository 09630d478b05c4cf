//! Where the projectors stand: their lag behind the store (for `/metrics` and `/readyz`),
//! and whether they have passed a position (for `min_position`, read-your-writes). Both
//! speak feed order, like the checkpoints.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ledger::FeedPosition;
use sqlx::{PgExecutor, PgPool, Row};

use crate::state;
use crate::{Projection, ProjectionError};

/// A projector's lag and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorStatus {
    /// The projector.
    pub projection: Projection,
    /// The last event it applied.
    pub checkpoint: FeedPosition,
    /// `"a"` or `"b"`: the side the views select from.
    pub active_side: &'static str,
    /// Committed events after its checkpoint (in feed order).
    pub lag_events: i64,
    /// How long the oldest of them has waited, in milliseconds (0 when none).
    pub lag_ms: i64,
    /// Why it stopped, if it did.
    pub halted_reason: Option<String>,
    /// When its checkpoint last moved.
    pub updated_at: DateTime<Utc>,
    /// When it was last rebuilt.
    pub rebuilt_at: Option<DateTime<Utc>>,
    /// Since when its steps fail on a database error (retried), if they do.
    pub failing_since: Option<DateTime<Utc>>,
    /// The latest failed step's error, while it fails.
    pub last_error: Option<String>,
}

/// Every projector's status.
///
/// # Errors
/// A database error, or a malformed state row.
pub async fn status(pool: &PgPool) -> Result<Vec<ProjectorStatus>, ProjectionError> {
    let mut out = Vec::new();
    // The redundant two-sided bound on `tx_id` is for the planner: it reads a one-sided
    // bound on a parameter as a third of the table and scans all of it.
    for projection in Projection::ALL {
        let st = state::load(pool, projection).await?;
        let row = sqlx::query(
            "SELECT count(*)::int8 AS n, \
                    coalesce((extract(epoch FROM clock_timestamp() - min(recorded_at)) * 1000)::int8, 0) AS ms \
             FROM events WHERE (tx_id, position) > ($1::text::xid8, $2) \
               AND tx_id >= $1::text::xid8 AND tx_id <= pg_snapshot_xmax(pg_current_snapshot())",
        )
        .bind(st.checkpoint.tx_id.to_string())
        .bind(st.checkpoint.position)
        .fetch_one(pool)
        .await?;
        out.push(ProjectorStatus {
            projection,
            checkpoint: st.checkpoint,
            active_side: st.active_side.as_str(),
            lag_events: row.try_get("n")?,
            lag_ms: row.try_get("ms")?,
            halted_reason: st.halted_reason,
            updated_at: st.updated_at,
            rebuilt_at: st.rebuilt_at,
            failing_since: st.failing_since,
            last_error: st.last_error,
        });
    }
    Ok(out)
}

/// Whether projectors have passed a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// Every one asked about has applied the event at that position (or, for a position
    /// no event holds, every committed event before it).
    Yes,
    /// Not yet.
    No,
}

/// Whether all of `projections` have passed the event at `position`, in feed order.
///
/// A position no committed event holds (a rolled-back append, or one not committed yet)
/// counts as passed once every committed event with a lower position is applied and a
/// higher position exists.
///
/// # Errors
/// A database error.
pub async fn passed<'e, E>(
    exec: E,
    projections: &[Projection],
    position: i64,
) -> Result<Passed, ProjectionError>
where
    E: PgExecutor<'e> + Copy,
{
    if position <= 0 {
        return Ok(Passed::Yes);
    }
    let target = ledger::store::feed_position_of(exec, position).await?;
    for &projection in projections {
        let st = state::load(exec, projection).await?;
        let ok = match target {
            Some(at) => st.checkpoint >= at,
            None => {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM events WHERE position > $3) \
                    AND NOT EXISTS (SELECT 1 FROM events \
                        WHERE (tx_id, position) > ($1::text::xid8, $2) AND position < $3)",
                )
                .bind(st.checkpoint.tx_id.to_string())
                .bind(st.checkpoint.position)
                .bind(position)
                .fetch_one(exec)
                .await?
            }
        };
        if !ok {
            return Ok(Passed::No);
        }
    }
    Ok(Passed::Yes)
}

/// Waits until `projections` have passed `position`, polling, for at most `bound`.
///
/// # Errors
/// A database error.
pub async fn wait_for(
    pool: &PgPool,
    projections: &[Projection],
    position: i64,
    bound: Duration,
) -> Result<Passed, ProjectionError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if passed(pool, projections, position).await? == Passed::Yes {
            return Ok(Passed::Yes);
        }
        let left = bound.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Ok(Passed::No);
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
