//! The payments projector as a rebuild fills a fresh side: the same fold, but the folded
//! states stay in memory across batches and each payment's row is written once, when it
//! leaves the cache or at the end, instead of being read, deleted and written again by
//! every batch that touches it (about four times a payment). The cache is bounded: past
//! `capacity` payments, those touched least recently are written out and dropped, and read
//! back if a later event needs them. The reconciliation buckets are summed in memory (a few
//! thousand rows) and written at the end.
//!
//! Only for a side that starts empty and that no one reads until [`Fill::finish`] has run:
//! between batches the table lags the cache.

use std::collections::{BTreeMap, HashMap};

use ledger::payment::Payment;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    add_to_buckets, bucket_rows, fold, payment_events, write, write_buckets, BucketDelta,
    BucketKey, Extra, PaymentRow, NAME,
};
use crate::feed::FeedEvent;
use crate::{bounded, Projection, ProjectionError, Side};

/// Rows written per statement when the cache is written out.
const CHUNK: usize = 5_000;

/// A payment held in memory.
#[derive(Debug)]
struct Cached {
    payment: Payment,
    extra: Extra,
    /// A row for it is in the table (it was written out once and read back).
    stored: bool,
}

/// The state of a payments fill between batches.
#[derive(Debug)]
pub(crate) struct Fill {
    side: Side,
    capacity: usize,
    /// Boxed: a folded payment is a few hundred bytes, and the map's table keeps room for
    /// more entries than it holds.
    cached: HashMap<Uuid, Box<Cached>>,
    buckets: BTreeMap<BucketKey, BucketDelta>,
    /// Some payment was written out: a payment missing from the cache may be in the table.
    spilled: bool,
}

impl Fill {
    /// A fill of the empty `side`, holding at most about `capacity` payments in memory.
    pub(crate) fn new(side: Side, capacity: usize) -> Fill {
        Fill {
            side,
            capacity: capacity.max(1),
            cached: HashMap::new(),
            buckets: BTreeMap::new(),
            spilled: false,
        }
    }

    /// Folds a batch (in feed order) into the cache, writing out the payments it pushes
    /// past the capacity, inside the caller's transaction.
    ///
    /// # Errors
    /// [`ProjectionError::Halted`] as the live projector would halt, or a database error.
    pub(crate) async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
    ) -> Result<(), ProjectionError> {
        let (ours, touched) = payment_events(events);
        if self.spilled {
            self.read_back(conn, &touched).await?;
        }

        add_to_buckets(&mut self.buckets, held(&self.cached, &touched), -1)?;
        for e in &ours {
            let c = self.cached.entry(e.stream_id).or_insert_with(|| {
                Box::new(Cached {
                    payment: Payment::default(),
                    extra: Extra::default(),
                    stored: false,
                })
            });
            fold(&mut c.payment, &mut c.extra, e)?;
        }
        add_to_buckets(&mut self.buckets, held(&self.cached, &touched), 1)?;

        if self.cached.len() > self.capacity {
            self.spill(conn).await?;
        }
        Ok(())
    }

    /// Reads back the rows of the `touched` payments that were written out earlier.
    async fn read_back(
        &mut self,
        conn: &mut PgConnection,
        touched: &[Uuid],
    ) -> Result<(), ProjectionError> {
        let missing: Vec<Uuid> = touched
            .iter()
            .filter(|id| !self.cached.contains_key(id))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let table = Projection::table("payments", self.side);
        let rows: Vec<PaymentRow> =
            sqlx::query_as(&format!("SELECT * FROM {table} WHERE payment_id = ANY($1)"))
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
        for row in rows {
            let (payment, extra) = row.to_state().map_err(|r| ProjectionError::halt(NAME, r))?;
            self.cached.insert(
                row.payment_id,
                Box::new(Cached {
                    payment,
                    extra,
                    stored: true,
                }),
            );
        }
        Ok(())
    }

    /// Writes out and drops the payments touched least recently, past the capacity.
    async fn spill(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let leaving =
            bounded::take_least_recent(&mut self.cached, self.capacity, |c| c.extra.last_position);
        self.spilled = true;
        write_out(conn, self.side, &leaving).await
    }

    /// Writes every payment still in memory and the buckets, each chunk in a short
    /// transaction of its own.
    ///
    /// # Errors
    /// [`ProjectionError::Halted`] for a state without terms, or a database error.
    pub(crate) async fn finish(self, pool: &PgPool) -> Result<(), ProjectionError> {
        let all: Vec<(Uuid, Box<Cached>)> = self.cached.into_iter().collect();
        for chunk in all.chunks(CHUNK) {
            let mut tx = pool.begin().await?;
            write_out(&mut tx, self.side, chunk).await?;
            tx.commit().await?;
        }
        let deltas = bucket_rows(self.buckets);
        for chunk in deltas.chunks(CHUNK) {
            let mut tx = pool.begin().await?;
            write_buckets(&mut tx, self.side, chunk).await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

/// The folded states of those of `ids` held in memory.
fn held<'a>(
    cached: &'a HashMap<Uuid, Box<Cached>>,
    ids: &'a [Uuid],
) -> impl Iterator<Item = &'a Payment> + 'a {
    ids.iter()
        .filter_map(|id| cached.get(id))
        .map(|c| &c.payment)
}

/// Replaces the rows of `payments` in the side's table.
async fn write_out(
    conn: &mut PgConnection,
    side: Side,
    payments: &[(Uuid, Box<Cached>)],
) -> Result<(), ProjectionError> {
    let table = Projection::table("payments", side);
    let stored: Vec<Uuid> = payments
        .iter()
        .filter(|(_, c)| c.stored)
        .map(|(id, _)| *id)
        .collect();
    if !stored.is_empty() {
        sqlx::query(&format!("DELETE FROM {table} WHERE payment_id = ANY($1)"))
            .bind(&stored)
            .execute(&mut *conn)
            .await?;
    }
    let rows = payments
        .iter()
        .map(|(id, c)| PaymentRow::from_state(*id, &c.payment, &c.extra))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|r| ProjectionError::halt(NAME, r))?;
    write::insert_rows(conn, &table, &rows).await?;
    Ok(())
}
