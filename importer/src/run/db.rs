//! The database a run writes to: committed batch by batch, or one dry-run transaction.

use ledger::store::Notifier;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::store::{self, BatchWrite, StoreFailure};

/// The database a run writes to: batches committed one by one, or one transaction rolled
/// back at the end (dry run).
pub(super) enum Db {
    Live(PgPool, Notifier),
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
            Db::Live(pool, _) => Conn::Pooled(pool.acquire().await?),
            Db::Dry(tx) => Conn::Borrowed(tx),
        })
    }

    /// Analyzes the tables the import fills (not in a dry run: its rows are its own).
    /// Never fails the import: statistics are an optimization, so a failure is logged.
    pub(super) async fn analyze(&mut self) {
        if let Db::Live(pool, _) = self {
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
    }

    pub(super) async fn write(&mut self, batch: BatchWrite) -> Result<u64, StoreFailure> {
        match self {
            Db::Live(pool, notifier) => {
                let mut tx = pool.begin().await?;
                let n = store::write_batch(&mut tx, batch).await?;
                tx.commit().await?;
                notifier.committed();
                Ok(n)
            }
            Db::Dry(tx) => store::write_batch(tx, batch).await,
        }
    }
}
