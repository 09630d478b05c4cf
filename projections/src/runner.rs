//! The runner: each projector takes a batch of the feed after its checkpoint, applies it
//! and moves its checkpoint in one short transaction, under a transaction-scoped advisory
//! lock (so several processes may run; one works a projector at a time). It wakes on the
//! store's `LISTEN/NOTIFY` channel and also polls, so a lost notification only delays it.

use std::time::Duration;

use ledger::FeedPosition;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::feed::read_batch;
use crate::state::{self, ProjectorState};
use crate::{Projection, ProjectionError, CHANNEL};

/// How the runner works.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Events per transaction.
    pub batch_size: i64,
    /// How often to look at the feed without a notification (events become readable
    /// when an older transaction ends, which notifies no one).
    pub poll_interval: Duration,
    /// Which projectors to run.
    pub projections: Vec<Projection>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            batch_size: 1000,
            poll_interval: Duration::from_millis(250),
            projections: Projection::ALL.to_vec(),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Applied this many events; the checkpoint is now there.
    Applied {
        /// Events applied.
        events: usize,
        /// The new checkpoint.
        checkpoint: FeedPosition,
    },
    /// Nothing to read after the checkpoint (yet).
    Idle,
    /// Another process is working this projector right now.
    Busy,
    /// The projector is halted; here is why.
    Halted(String),
}

/// Runs one batch of one projector: lock, read its state and the feed after its
/// checkpoint, apply, move the checkpoint, commit. A halt found while applying is
/// recorded (the batch itself is rolled back) and returned as [`Step::Halted`].
///
/// # Errors
/// A database error (nothing of the batch is then committed).
pub async fn step(
    pool: &PgPool,
    projection: Projection,
    batch_size: i64,
) -> Result<Step, ProjectionError> {
    let mut tx = pool.begin().await?;
    if !state::try_lock(&mut tx, projection).await? {
        return Ok(Step::Busy);
    }
    let ProjectorState {
        active_side,
        checkpoint,
        halted_reason,
        ..
    } = state::load(&mut *tx, projection).await?;
    if let Some(reason) = halted_reason {
        return Ok(Step::Halted(reason));
    }
    // Reading takes no transaction id, so it holds back no other reader's feed; only the
    // writes below do, briefly.
    let events = read_batch(&mut *tx, checkpoint, batch_size).await?;
    let Some(last) = events.last().map(crate::FeedEvent::feed_position) else {
        tx.commit().await?;
        return Ok(Step::Idle);
    };
    match projection.apply(&mut tx, active_side, &events).await {
        Ok(()) => {}
        Err(ProjectionError::Halted { reason, .. }) => {
            tx.rollback().await?;
            tracing::error!(projector = %projection, %reason, "projector halted");
            state::halt(pool, projection, &reason).await?;
            return Ok(Step::Halted(reason));
        }
        Err(other) => return Err(other),
    }
    state::advance(&mut tx, projection, last, events.len()).await?;
    tx.commit().await?;
    Ok(Step::Applied {
        events: events.len(),
        checkpoint: last,
    })
}

/// What a catch-up did, per projector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// The projector.
    pub projection: Projection,
    /// Events this process applied.
    pub events: u64,
    /// Its checkpoint at the end.
    pub checkpoint: FeedPosition,
}

/// Runs every projector until it has applied every event committed before the call, and
/// returns. An event the feed still holds back (an older transaction of the cluster, in
/// any database, is open) is waited for, up to five minutes: a caller such as
/// `import verify` then finds the projections complete.
///
/// # Errors
/// [`ProjectionError::Halted`] for the first projector found halted (the others still
/// caught up) or held back too long, or a database error.
pub async fn catch_up(
    pool: &PgPool,
    settings: &RunnerSettings,
) -> Result<Vec<CatchUp>, ProjectionError> {
    // Every event committed by now is applied before returning, even one the feed still
    // holds back behind an older transaction of the cluster (it becomes readable when
    // that transaction ends).
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0)::int8 FROM events")
        .fetch_one(pool)
        .await?;
    let mut set = JoinSet::new();
    for &projection in &settings.projections {
        let pool = pool.clone();
        let batch = settings.batch_size;
        set.spawn(async move { catch_up_one(&pool, projection, batch, head).await });
    }
    let mut done = Vec::new();
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(c)) => done.push(c),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert(ProjectionError::halt(
                    "runner",
                    format!("a projector task failed: {join}"),
                ));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    done.sort_by_key(|c| c.projection);
    Ok(done)
}

/// How long a catch-up waits for events committed before it started that the feed holds
/// back behind a transaction still open elsewhere in the cluster.
const HELD_BACK_WAIT: Duration = Duration::from_mins(5);

async fn catch_up_one(
    pool: &PgPool,
    projection: Projection,
    batch_size: i64,
    head: i64,
) -> Result<CatchUp, ProjectionError> {
    let mut events = 0_u64;
    let started = std::time::Instant::now();
    let mut told = false;
    loop {
        match step(pool, projection, batch_size).await? {
            Step::Applied { events: n, .. } => events += n as u64,
            Step::Idle => {
                let waiting = held_back(pool, projection, head).await?;
                if waiting == 0 {
                    break;
                }
                if started.elapsed() > HELD_BACK_WAIT {
                    return Err(ProjectionError::halt(
                        projection.name(),
                        format!(
                            "{waiting} events committed before the catch-up began are still held back \
                             after {HELD_BACK_WAIT:?} by a transaction open elsewhere in the cluster"
                        ),
                    ));
                }
                if !told {
                    told = true;
                    tracing::info!(
                        projector = %projection,
                        events = waiting,
                        "waiting for events held back behind an older transaction still open"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Step::Busy => tokio::time::sleep(Duration::from_millis(20)).await,
            Step::Halted(reason) => {
                return Err(ProjectionError::Halted {
                    projector: projection.name(),
                    reason,
                })
            }
        }
    }
    let checkpoint = state::load(pool, projection).await?.checkpoint;
    Ok(CatchUp {
        projection,
        events,
        checkpoint,
    })
}

/// The events at or below `head` that `projection` has not applied: committed, but beyond
/// its checkpoint in feed order.
async fn held_back(pool: &PgPool, projection: Projection, head: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events e, projection.projector_state s \
         WHERE s.projector = $1 AND e.position <= $2 \
           AND (e.tx_id, e.position) > (s.checkpoint_tx::text::xid8, s.checkpoint_position)",
    )
    .bind(projection.name())
    .bind(head)
    .fetch_one(pool)
    .await
}

/// Runs the projectors until `shutdown` turns true: each in its own task, woken by the
/// store's notifications and by the poll interval. A halted projector waits (logged
/// once) until a rebuild clears it; database errors are logged and retried with backoff.
pub async fn follow(pool: PgPool, settings: RunnerSettings, shutdown: watch::Receiver<bool>) {
    let (wake_tx, wake_rx) = watch::channel(0_u64);
    let mut set = JoinSet::new();
    {
        let pool = pool.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move { listen(pool, wake_tx, shutdown).await });
    }
    for &projection in &settings.projections {
        let pool = pool.clone();
        let settings = settings.clone();
        let wake = wake_rx.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move { follow_one(pool, projection, settings, wake, shutdown).await });
    }
    while set.join_next().await.is_some() {}
}

async fn follow_one(
    pool: PgPool,
    projection: Projection,
    settings: RunnerSettings,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut halted = false;
    // A failure recorded in its state row (see `state::record_failure`), to clear.
    let mut failing = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        wake.borrow_and_update();
        let result = step(&pool, projection, settings.batch_size).await;
        if failing && matches!(result, Ok(Step::Applied { .. } | Step::Idle)) {
            failing = state::clear_failure(&pool, projection).await.is_err();
        }
        let pause = match result {
            Ok(Step::Applied { .. }) => {
                halted = false;
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(Step::Idle | Step::Busy) => {
                halted = false;
                settings.poll_interval
            }
            Ok(Step::Halted(reason)) => {
                if !halted {
                    tracing::error!(projector = %projection, %reason,
                        "projector halted: it waits for a rebuild");
                    halted = true;
                }
                settings.poll_interval.max(Duration::from_secs(1))
            }
            Err(e) => {
                tracing::warn!(projector = %projection, error = %e, "projector step failed; retrying");
                // Best effort: when the database itself is what fails, the log says it.
                if state::record_failure(&pool, projection, &e.to_string())
                    .await
                    .is_ok()
                {
                    failing = true;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
        };
        tokio::select! {
            _ = wake.changed() => {}
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Listens to the store's channel and bumps `wake` on every notification.
async fn listen(pool: PgPool, wake: watch::Sender<u64>, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot LISTEN; polling only for now");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to LISTEN; polling only for now");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(_) => wake.send_modify(|v| *v = v.wrapping_add(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener lost; reconnecting");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
