//! Filling the idle side: every target from its checkpoint up to the readable head, each
//! batch in one short transaction per target (the watermark is cluster-wide). Targets
//! share each read of the feed; the next batch is read while the targets apply this one,
//! each on a connection of its own, so the reading and the projectors' statements run on
//! both cores instead of one after the other.
//!
//! A first fill of an emptied side keeps the payments' folded states and the accounts'
//! running balances in memory between batches (bounded; `payments::Fill`,
//! `balances::Fill`): a payment's row and an account's balance row are then written about
//! once instead of by every batch that touches them. The catch-up before a swap applies
//! batches as the live projector does.

use std::sync::Arc;

use ledger::FeedPosition;
use sqlx::{Executor, PgPool};
use tokio::task::{JoinHandle, JoinSet};

use super::{joined, Progress, RebuildError, Target};
use crate::feed::{read_batch, FeedEvent};
use crate::{balances, payments, Projection};

/// How a target applies its batches.
enum Applier {
    /// As the live projector does: tables current after every batch.
    Live,
    /// Payments held in memory between batches.
    Payments(payments::Fill),
    /// Balances held in memory between batches.
    Balances(balances::Fill),
}

impl Applier {
    fn new(t: &Target, cached: Option<usize>) -> Applier {
        match (t.projection, cached) {
            (Projection::Payments, Some(n)) => Applier::Payments(payments::Fill::new(t.side, n)),
            (Projection::Balances, Some(n)) => Applier::Balances(balances::Fill::new(t.side, n)),
            _ => Applier::Live,
        }
    }

    /// Writes what is still held in memory.
    async fn finish(self, pool: &PgPool) -> Result<(), RebuildError> {
        match self {
            Applier::Live => {}
            Applier::Payments(f) => f.finish(pool).await?,
            Applier::Balances(f) => f.finish(pool).await?,
        }
        Ok(())
    }
}

/// Fills `targets` up to the readable head. With `cached` (a first fill of emptied
/// sides), payments and balances are held in memory, at most about that many of each,
/// and written out at the end.
pub(super) async fn fill(
    pool: &PgPool,
    targets: &mut [Target],
    batch_size: i64,
    cached: Option<usize>,
    progress: &mut impl FnMut(Progress),
) -> Result<(), RebuildError> {
    let mut appliers: Vec<Option<Applier>> = targets
        .iter()
        .map(|t| Some(Applier::new(t, cached)))
        .collect();
    let mut read = 0_u64;
    let mut analyze_at = u64::try_from(batch_size).unwrap_or(0) * 2;
    let Some(from) = targets.iter().map(|t| t.checkpoint).min() else {
        return Ok(());
    };
    let mut pending = spawn_read(pool, from, batch_size);
    loop {
        let events = Arc::new(joined(pending.await)??);
        let Some(last) = events.last().map(FeedEvent::feed_position) else {
            break;
        };
        pending = spawn_read(pool, last, batch_size);
        let mut running = JoinSet::new();
        for (i, t) in targets.iter().enumerate() {
            let skip = events.len() - after(&events, t.checkpoint).len();
            if skip == events.len() {
                continue;
            }
            let Some(mut applier) = appliers.get_mut(i).and_then(Option::take) else {
                continue;
            };
            let (pool, events, projection, side) =
                (pool.clone(), events.clone(), t.projection, t.side);
            running.spawn(async move {
                let mut tx = pool.begin().await?;
                let batch = &events[skip..];
                match &mut applier {
                    Applier::Live => projection.apply(&mut tx, side, batch).await?,
                    Applier::Payments(f) => f.apply(&mut tx, batch).await?,
                    Applier::Balances(f) => f.apply(&mut tx, batch).await?,
                }
                tx.commit().await?;
                Ok::<_, RebuildError>((i, batch.len(), applier))
            });
        }
        while let Some(done) = running.join_next().await {
            let (i, count, applier) = joined(done)??;
            if let Some(t) = targets.get_mut(i) {
                t.events += count as u64;
                t.checkpoint = last;
            }
            if let Some(slot) = appliers.get_mut(i) {
                *slot = Some(applier);
            }
        }
        read += events.len() as u64;
        if read >= analyze_at {
            analyze(pool, targets).await?;
            analyze_at = read * 4;
        }
        progress(Progress {
            events: read,
            position: last.position,
        });
    }
    // What is held in memory, written out projector by projector side by side.
    tracing::info!(
        events = read,
        "feed read; writing out what is held in memory"
    );
    let mut finishing = JoinSet::new();
    for applier in appliers.into_iter().flatten() {
        let pool = pool.clone();
        finishing.spawn(async move { applier.finish(&pool).await });
    }
    while let Some(done) = finishing.join_next().await {
        joined(done)??;
    }
    Ok(())
}

/// Reads the batch after `from` in a task of its own.
fn spawn_read(
    pool: &PgPool,
    from: FeedPosition,
    batch_size: i64,
) -> JoinHandle<Result<Vec<FeedEvent>, sqlx::Error>> {
    let pool = pool.clone();
    tokio::spawn(async move { read_batch(&pool, from, batch_size).await })
}

/// Gathers statistics of the tables being filled. They grow from empty, and without
/// statistics (autovacuum comes later, or never where it is off) the planner keeps plans
/// made for empty tables and assumes a key selects a fixed share of rows: each batch's
/// lookups then scan whole tables, ever longer. Run after the first batches and then each
/// time the tables quadrupled, so it costs little; each table is analyzed in a transaction
/// of its own, briefly.
async fn analyze(pool: &PgPool, targets: &[Target]) -> Result<(), sqlx::Error> {
    let tables: Vec<String> = targets
        .iter()
        .flat_map(|t| {
            t.projection
                .tables()
                .iter()
                .map(move |base| Projection::table(base, t.side))
        })
        .collect();
    if !tables.is_empty() {
        pool.execute(format!("ANALYZE {}", tables.join(", ")).as_str())
            .await?;
    }
    Ok(())
}

/// The events of a batch after `checkpoint`.
fn after(events: &[FeedEvent], checkpoint: FeedPosition) -> &[FeedEvent] {
    let skip = events.partition_point(|e| e.feed_position() <= checkpoint);
    &events[skip..]
}
