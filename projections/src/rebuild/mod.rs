//! Rebuild without downtime. For each projector asked: empty the idle side of its tables,
//! fill it from the start of the feed in batches (short transactions: the watermark is
//! cluster-wide), check it against the postings rows, catch up, then in one short
//! transaction with a `lock_timeout` — holding the projector's lock, so its live runner
//! pauses between batches — apply the last few events, repoint the finance views
//! (`projection.point_views`) and make that side live. A long report on the views delays
//! the swap (it is retried) instead of being blocked by it. A failed check leaves the live
//! tables in place and says why.
//!
//! Runs as the owner role (it truncates tables and replaces views): connect with
//! [`connect`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledger::FeedPosition;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Acquire, Executor, PgConnection, PgPool};
use tokio::task::JoinSet;

mod fill;
mod indexes;

use crate::checks::check;
use crate::feed::read_batch;
use crate::state::{self, Side};
use crate::{Projection, ProjectionError};

/// The role that owns the read tables and the views.
pub use ledger::store::OWNER_ROLE;

/// How a rebuild works.
#[derive(Debug, Clone)]
pub struct RebuildSettings {
    /// Events per transaction while filling.
    pub batch_size: i64,
    /// How long the swap may wait for a lock (readers of the views, the live batch)
    /// before it gives up and tries again.
    pub lock_timeout: Duration,
    /// How many times the swap is tried.
    pub swap_attempts: u32,
    /// While filling, how many payments and how many accounts may be held in memory
    /// between batches (see `fill`): more is fewer writes, less is less memory.
    pub cached: usize,
}

impl Default for RebuildSettings {
    fn default() -> Self {
        RebuildSettings {
            batch_size: 10_000,
            lock_timeout: Duration::from_millis(500),
            swap_attempts: 120,
            cached: 50_000,
        }
    }
}

/// What a rebuild did for one projector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// The projector.
    pub projection: Projection,
    /// The side that is now live.
    pub side: Side,
    /// Events applied to it.
    pub events: u64,
    /// Its checkpoint when it went live.
    pub checkpoint: FeedPosition,
    /// What was checked, for the log.
    pub checks: Vec<String>,
}

/// Progress of a rebuild, for the caller to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events read from the feed so far.
    pub events: u64,
    /// The last position read.
    pub position: i64,
}

/// Why a rebuild did not swap.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Another rebuild of this projector is running.
    #[error("a rebuild of {0} is already running")]
    AlreadyRunning(Projection),
    /// The fresh tables did not pass their checks; the live tables are untouched.
    #[error("the rebuilt {projection} tables failed their checks, the live tables stay: {}", failures.join("; "))]
    CheckFailed {
        /// The projector.
        projection: Projection,
        /// Each failed check, for a person.
        failures: Vec<String>,
    },
    /// The swap could not get its locks in time, every attempt.
    #[error("could not swap {0} in: readers or the live projector held their locks too long; the live tables stay")]
    SwapTimedOut(Projection),
    /// The ledger looked inconsistent while filling.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A task of the rebuild panicked or was cancelled; nothing was swapped.
    #[error("a rebuild task failed: {0}")]
    TaskFailed(String),
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        RebuildError::Projection(ProjectionError::Database(e))
    }
}

/// A pool acting as the owner role, for rebuilds. A rebuild of all projectors holds one
/// connection for its locks and uses up to four more while filling (the next batch's read
/// and three applies), and at the end six for the checks beside two for the index builds:
/// give it ten.
///
/// # Errors
/// The database is unreachable, or the connecting user may not act as the owner.
pub async fn connect(options: PgConnectOptions, max: u32) -> Result<PgPool, sqlx::Error> {
    // A first connection within the store's connect limit: a database that never answers
    // is then said to be so, where the pool would report "pool timed out" after 30 s.
    sqlx::Connection::close(ledger::store::connect_once(&options).await?).await?;
    PgPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(format!("SET ROLE {OWNER_ROLE}").as_str())
                    .await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

struct Target {
    projection: Projection,
    side: Side,
    checkpoint: FeedPosition,
    events: u64,
}

/// Rebuilds `projections` side by side (the feed is read once for all of them), then
/// checks and swaps each in. `pool` must act as the owner role ([`connect`]).
///
/// # Errors
/// [`RebuildError`]: nothing is swapped for a projector whose rebuild failed.
pub async fn rebuild(
    pool: &PgPool,
    projections: &[Projection],
    settings: &RebuildSettings,
    mut progress: impl FnMut(Progress),
) -> Result<Vec<RebuildReport>, RebuildError> {
    // One rebuild per projector at a time: session locks held until we return.
    let mut guard = pool.acquire().await?;
    for &p in projections {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("escrow_ledger.rebuild.{}", p.name()))
            .fetch_one(&mut *guard)
            .await?;
        if !got {
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *guard)
                .await?;
            return Err(RebuildError::AlreadyRunning(p));
        }
    }
    let result = rebuild_locked(pool, projections, settings, &mut progress).await;
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *guard)
        .await?;
    result
}

async fn rebuild_locked(
    pool: &PgPool,
    projections: &[Projection],
    settings: &RebuildSettings,
    progress: &mut impl FnMut(Progress),
) -> Result<Vec<RebuildReport>, RebuildError> {
    let mut targets = Vec::new();
    let mut aside = Vec::new();
    for &projection in projections {
        let live = state::load(pool, projection).await?;
        let side = live.active_side.other();
        truncate(pool, projection, side, Duration::from_secs(30)).await?;
        aside.extend(indexes::set_aside(pool, projection, side).await?);
        targets.push(Target {
            projection,
            side,
            checkpoint: FeedPosition::START,
            events: 0,
        });
    }

    let mut clock = Instant::now();
    fill::fill(
        pool,
        &mut targets,
        settings.batch_size,
        Some(settings.cached),
        progress,
    )
    .await?;
    lap(&mut clock, "filled");
    // The checks scan whole tables and need no secondary index: they run beside the
    // index builds, whose waits leave a core idle.
    let mut running = JoinSet::new();
    for t in &targets {
        let (pool, projection, side, checkpoint) =
            (pool.clone(), t.projection, t.side, t.checkpoint);
        running.spawn(async move {
            let outcome = check(&pool, projection, side, checkpoint).await;
            (projection, outcome)
        });
    }
    indexes::build(pool, &aside).await?;
    lap(&mut clock, "secondary indexes built");
    let mut checks = BTreeMap::new();
    while let Some(done) = running.join_next().await {
        let (projection, outcome) = joined(done)?;
        let (passed, failures) = outcome?;
        if !failures.is_empty() {
            return Err(RebuildError::CheckFailed {
                projection,
                failures,
            });
        }
        checks.insert(projection, passed);
    }
    lap(&mut clock, "checked");

    let mut reports = Vec::new();
    for t in &mut targets {
        swap(pool, t, settings).await?;
        // The old side is idle now; empty it if no straggler holds it (else next time).
        let old = t.side.other();
        if let Err(e) = truncate(pool, t.projection, old, settings.lock_timeout).await {
            tracing::info!(projector = %t.projection, error = %e, "old side left to empty later");
        }
        reports.push(RebuildReport {
            projection: t.projection,
            side: t.side,
            events: t.events,
            checkpoint: t.checkpoint,
            checks: checks.remove(&t.projection).unwrap_or_default(),
        });
    }
    Ok(reports)
}

/// Logs how long a phase took, for whoever tunes a rebuild.
fn lap(clock: &mut Instant, phase: &str) {
    let ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(ms, "rebuild {phase}");
    *clock = Instant::now();
}

async fn truncate(
    pool: &PgPool,
    projection: Projection,
    side: Side,
    lock_timeout: Duration,
) -> Result<(), sqlx::Error> {
    let tables: Vec<String> = projection
        .tables()
        .iter()
        .map(|t| Projection::table(t, side))
        .collect();
    let mut tx = pool.begin().await?;
    set_lock_timeout(&mut tx, lock_timeout).await?;
    tx.execute(format!("TRUNCATE {}", tables.join(", ")).as_str())
        .await?;
    tx.commit().await
}

async fn set_lock_timeout(conn: &mut PgConnection, t: Duration) -> Result<(), sqlx::Error> {
    conn.execute(format!("SET LOCAL lock_timeout = '{}ms'", t.as_millis().max(1)).as_str())
        .await?;
    Ok(())
}

/// A task's result, or the rebuild's error when the task panicked or was cancelled.
fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, RebuildError> {
    r.map_err(|e| RebuildError::TaskFailed(e.to_string()))
}

/// Catches up, then swaps the target in: in one transaction holding the projector's
/// lock, the last events, the views, and the state row. Retried while locks time out.
async fn swap(
    pool: &PgPool,
    t: &mut Target,
    settings: &RebuildSettings,
) -> Result<(), RebuildError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        fill::fill(
            pool,
            std::slice::from_mut(t),
            settings.batch_size,
            None,
            &mut |_| {},
        )
        .await?;
        let started = Instant::now();
        match try_swap(pool, t, settings).await {
            Ok(()) => {
                tracing::info!(projector = %t.projection, side = t.side.as_str(),
                    ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "swapped in");
                return Ok(());
            }
            Err(RebuildError::Projection(ProjectionError::Database(sqlx::Error::Database(db))))
                if db.code().as_deref() == Some("55P03") && attempt < settings.swap_attempts =>
            {
                tracing::info!(projector = %t.projection, attempt, "swap waited too long for a lock; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(RebuildError::Projection(ProjectionError::Database(sqlx::Error::Database(db))))
                if db.code().as_deref() == Some("55P03") =>
            {
                return Err(RebuildError::SwapTimedOut(t.projection));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_swap(
    pool: &PgPool,
    t: &mut Target,
    settings: &RebuildSettings,
) -> Result<(), RebuildError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    set_lock_timeout(&mut tx, settings.lock_timeout).await?;
    state::lock(&mut tx, t.projection).await?;
    let mut checkpoint = t.checkpoint;
    let mut applied = 0_u64;
    loop {
        let events = read_batch(&mut *tx, checkpoint, settings.batch_size).await?;
        let Some(last) = events.last() else { break };
        t.projection.apply(&mut tx, t.side, &events).await?;
        applied += events.len() as u64;
        checkpoint = last.feed_position();
    }
    sqlx::query("SELECT projection.point_views($1, $2)")
        .bind(t.projection.name())
        .bind(t.side.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE projection.projector_state \
         SET active_side = $2, checkpoint_tx = $3, checkpoint_position = $4, \
             events_applied = $5, updated_at = now(), rebuilt_at = now(), \
             halted_reason = NULL, halted_at = NULL \
         WHERE projector = $1",
    )
    .bind(t.projection.name())
    .bind(t.side.as_str())
    .bind(checkpoint.tx_id)
    .bind(checkpoint.position)
    .bind(i64::try_from(t.events + applied).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    t.checkpoint = checkpoint;
    t.events += applied;
    Ok(())
}
