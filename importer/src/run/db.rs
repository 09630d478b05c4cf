//! The database a run writes to: committed batch by batch, or one dry-run transaction.

use ledger::store::Notifier;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::task::JoinHandle;

use super::ImportError;
use crate::store::{self, BatchWrite, StoreFailure};

/// The database a run writes to: batches committed one by one, or one transaction rolled
/// back at the end (dry run).
pub(super) enum Db {
    Live {
        pool: PgPool,
        notifier: Notifier,
        /// The statistics being gathered in the background, if any.
        analyzing: Option<JoinHandle<()>>,
    },
    Dry(Box<Transaction<'static, Postgres>>),
}

/// A connection of the run: pooled, or the dry run's transaction.
pub(super) enum Conn<'a> {
    Pooled(PoolConnection<Postgres>),
    Borrowed(&'a mut PgConnection),
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Borrowed(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Borrowed(c) => c,
        }
    }
}

impl Db {
    pub(super) async fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        Ok(match self {
            Db::Live { pool, .. } => Conn::Pooled(pool.acquire().await?),
            Db::Dry(tx) => Conn::Borrowed(tx),
        })
    }

    /// Analyzes the tables the import fills (not in a dry run: its rows are its own), and
    /// returns when done. Never fails the import: statistics are an optimization, so a
    /// failure is logged.
    pub(super) async fn analyze(&mut self) {
        if let Db::Live {
            pool, analyzing, ..
        } = self
        {
            if let Some(running) = analyzing.take() {
                let _ = running.await;
            }
            analyze_tables(pool).await;
        }
    }

    /// Starts analyzing the tables the import fills in the background, unless that is
    /// still running from the last time (then this time is skipped: the next one, or the
    /// end of the pass, gathers them): a pass does not wait for its statistics (an
    /// `ANALYZE` of the events samples their payloads, about 0.4 s), and the lookups that
    /// need them are index probes whatever the statistics say.
    pub(super) fn analyze_in_background(&mut self) {
        if let Db::Live {
            pool, analyzing, ..
        } = self
        {
            if analyzing.as_ref().is_some_and(|a| !a.is_finished()) {
                return;
            }
            let pool = pool.clone();
            *analyzing = Some(tokio::spawn(async move { analyze_tables(&pool).await }));
        }
    }

    pub(super) async fn write(&mut self, batch: BatchWrite) -> Result<u64, StoreFailure> {
        match self {
            Db::Live { pool, notifier, .. } => commit_batch(pool, notifier, batch).await,
            Db::Dry(tx) => store::write_batch(tx, batch).await,
        }
    }

    /// Starts writing `batch`: a live run commits it in a task of its own, so that the
    /// next batch is translated meanwhile; a dry run writes it into its one transaction
    /// before this returns.
    pub(super) async fn start_write(&mut self, batch: BatchWrite) -> Result<Writing, StoreFailure> {
        Ok(match self {
            Db::Live { pool, notifier, .. } => {
                let (pool, notifier) = (pool.clone(), notifier.clone());
                Writing::Committing(tokio::spawn(async move {
                    commit_batch(&pool, &notifier, batch).await
                }))
            }
            Db::Dry(tx) => Writing::Written(store::write_batch(tx, batch).await?),
        })
    }
}

/// A batch on its way into the database (see [`Db::start_write`]).
pub(super) enum Writing {
    /// Being committed in its own task.
    Committing(JoinHandle<Result<u64, StoreFailure>>),
    /// Written (a dry run's transaction): the events it wrote.
    Written(u64),
}

impl Writing {
    /// Whether the batch is still being committed (a live run's).
    pub(super) fn is_committing(&self) -> bool {
        matches!(self, Writing::Committing(_))
    }

    /// Waits until the batch is committed; returns the events it wrote.
    pub(super) async fn finish(self) -> Result<u64, ImportError> {
        match self {
            Writing::Committing(task) => Ok(task
                .await
                .map_err(|e| ImportError::Writer(e.to_string()))??),
            Writing::Written(n) => Ok(n),
        }
    }
}

/// Analyzes the import's tables, logging a failure (see [`Db::analyze`]).
async fn analyze_tables(pool: &PgPool) {
    let done = match pool.acquire().await {
        Ok(mut conn) => store::analyze(&mut conn).await,
        Err(e) => Err(e),
    };
    match done {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!("cannot act as the tables' owner: left to autovacuum");
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not analyze the import's tables; going on");
        }
    }
}

/// Writes `batch` in one transaction of its own and announces the commit.
async fn commit_batch(
    pool: &PgPool,
    notifier: &Notifier,
    batch: BatchWrite,
) -> Result<u64, StoreFailure> {
    let mut tx = pool.begin().await?;
    let n = store::write_batch(&mut tx, batch).await?;
    tx.commit().await?;
    notifier.committed();
    Ok(n)
}
