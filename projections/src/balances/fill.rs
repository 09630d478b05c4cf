//! The balances projector as a rebuild fills a fresh side: the same rows as
//! [`super::apply`], but the running balances are kept in memory across batches, so a
//! batch is one read of its postings and one insert of its history rows, and each
//! account's balance row is written once, when it leaves the cache or at the end, instead
//! of being upserted by every batch that moves it. The cache is bounded: past `capacity`
//! accounts, those moved least recently (mostly the escrow accounts of settled payments)
//! are written out and dropped, and read back if a later posting moves them. The trial
//! balance (a row per asset) is summed in memory, checked after every batch, and written
//! at the end.
//!
//! Only for a side that starts empty and that no one reads until [`Fill::finish`] has run.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::NAME;
use crate::feed::FeedEvent;
use crate::{bounded, Projection, ProjectionError, Side};

/// Rows written per statement when the cache is written out.
const CHUNK: usize = 5_000;

/// An account and asset.
type Key = (String, String);

/// An account's balance row.
#[derive(Debug, Clone)]
struct Balance {
    amount: Decimal,
    postings: i64,
    last_position: i64,
    last_occurred_at: DateTime<Utc>,
}

/// An asset's trial balance row.
#[derive(Debug, Clone, Default)]
struct Trial {
    total: Decimal,
    inflows: Decimal,
    outflows: Decimal,
    postings: i64,
}

/// A posting of the batch, in feed order.
#[derive(sqlx::FromRow)]
struct Posting {
    position: i64,
    leg: i16,
    account: String,
    asset: String,
    /// As PostgreSQL prints it: numeric's scale is part of the value finance reads.
    amount: String,
    occurred_at: DateTime<Utc>,
}

/// The state of a balances fill between batches.
#[derive(Debug)]
pub(crate) struct Fill {
    side: Side,
    capacity: usize,
    accounts: HashMap<Key, Balance>,
    trial: BTreeMap<String, Trial>,
    /// Some account was written out: an account missing from the cache may be in the table.
    spilled: bool,
}

impl Fill {
    /// A fill of the empty `side`, holding at most about `capacity` accounts in memory.
    pub(crate) fn new(side: Side, capacity: usize) -> Fill {
        Fill {
            side,
            capacity: capacity.max(1),
            accounts: HashMap::new(),
            trial: BTreeMap::new(),
            spilled: false,
        }
    }

    /// Writes the history rows of a batch's postings (in feed order) and moves the
    /// balances in memory, inside the caller's transaction.
    ///
    /// # Errors
    /// [`ProjectionError::Halted`] when a trial balance is not zero after the batch or a
    /// sum overflows, or a database error.
    pub(crate) async fn apply(
        &mut self,
        conn: &mut PgConnection,
        events: &[FeedEvent],
    ) -> Result<(), ProjectionError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return Ok(());
        };
        let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
        let ordinals: Vec<i32> = (0..).take(events.len()).collect();
        let occurred: Vec<_> = events.iter().map(|e| e.occurred_at).collect();
        let postings: Vec<Posting> = sqlx::query_as(
            "SELECT p.position, p.leg, p.account, p.asset, p.amount::text AS amount, ev.occurred_at \
             FROM unnest($1::int8[], $2::int4[], $3::timestamptz[]) AS ev(position, ord, occurred_at) \
             JOIN postings p ON p.position = ev.position \
             ORDER BY ev.ord, p.leg",
        )
        .bind(&positions)
        .bind(&ordinals)
        .bind(&occurred)
        .fetch_all(&mut *conn)
        .await?;
        if self.spilled {
            self.read_back(conn, &postings).await?;
        }

        let overflow = || ProjectionError::halt(NAME, "a balance or a total overflows");
        let mut after = Vec::with_capacity(postings.len());
        for p in &postings {
            let amount = exact(&p.amount)?;
            let b = self
                .accounts
                .entry((p.account.clone(), p.asset.clone()))
                .or_insert(Balance {
                    amount: Decimal::ZERO,
                    postings: 0,
                    last_position: p.position,
                    last_occurred_at: p.occurred_at,
                });
            b.amount = add(b.amount, amount).ok_or_else(overflow)?;
            b.postings += 1;
            b.last_position = p.position;
            b.last_occurred_at = b.last_occurred_at.max(p.occurred_at);
            after.push(b.amount.to_string());

            let t = self.trial.entry(p.asset.clone()).or_default();
            t.total = add(t.total, amount).ok_or_else(overflow)?;
            if amount.is_sign_positive() {
                t.inflows = add(t.inflows, amount).ok_or_else(overflow)?;
            } else {
                t.outflows = add(t.outflows, -amount).ok_or_else(overflow)?;
            }
            t.postings += 1;
        }
        insert_history(conn, self.side, &postings, &after).await?;

        let unbalanced: Vec<String> = self
            .trial
            .iter()
            .filter(|(_, t)| !t.total.is_zero())
            .map(|(asset, t)| format!("{asset} totals {}", t.total))
            .collect();
        if !unbalanced.is_empty() {
            return Err(ProjectionError::halt(
                NAME,
                format!(
                    "the trial balance is not zero after the events at positions {}..{}: {}",
                    first.position,
                    last.position,
                    unbalanced.join(", ")
                ),
            ));
        }
        if self.accounts.len() > self.capacity {
            self.spill(conn).await?;
        }
        Ok(())
    }

    /// Reads back the balance rows of the batch's accounts that were written out earlier.
    async fn read_back(
        &mut self,
        conn: &mut PgConnection,
        postings: &[Posting],
    ) -> Result<(), ProjectionError> {
        let missing: HashSet<(&str, &str)> = postings
            .iter()
            .filter(|p| {
                !self
                    .accounts
                    .contains_key(&(p.account.clone(), p.asset.clone()))
            })
            .map(|p| (p.account.as_str(), p.asset.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let (accounts, assets): (Vec<&str>, Vec<&str>) = missing.into_iter().unzip();
        let table = Projection::table("account_balances", self.side);
        let rows: Vec<(String, String, String, i64, i64, DateTime<Utc>)> =
            sqlx::query_as(&format!(
            "SELECT b.account, b.asset, b.balance::text, b.postings, b.last_position, b.last_occurred_at \
             FROM unnest($1::text[], $2::text[]) AS k(account, asset) \
             JOIN {table} b ON b.account = k.account AND b.asset = k.asset"
        ))
            .bind(&accounts)
            .bind(&assets)
            .fetch_all(&mut *conn)
            .await?;
        for (account, asset, balance, postings, last_position, last_occurred_at) in rows {
            self.accounts.insert(
                (account, asset),
                Balance {
                    amount: exact(&balance)?,
                    postings,
                    last_position,
                    last_occurred_at,
                },
            );
        }
        Ok(())
    }

    /// Writes out and drops the accounts moved least recently, past the capacity.
    async fn spill(&mut self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let leaving =
            bounded::take_least_recent(&mut self.accounts, self.capacity, |b| b.last_position);
        self.spilled = true;
        upsert_balances(conn, self.side, &leaving).await
    }

    /// Writes every balance still in memory and the trial balance, each chunk in a short
    /// transaction of its own.
    ///
    /// # Errors
    /// A database error.
    pub(crate) async fn finish(self, pool: &PgPool) -> Result<(), ProjectionError> {
        let all: Vec<(Key, Balance)> = self.accounts.into_iter().collect();
        for chunk in all.chunks(CHUNK) {
            let mut tx = pool.begin().await?;
            upsert_balances(&mut tx, self.side, chunk).await?;
            tx.commit().await?;
        }
        let table = Projection::table("trial_balance", self.side);
        let mut tx = pool.begin().await?;
        for (asset, t) in &self.trial {
            sqlx::query(&format!(
                "INSERT INTO {table} (asset, total, inflows, outflows, postings) \
                 VALUES ($1, $2::numeric, $3::numeric, $4::numeric, $5) \
                 ON CONFLICT (asset) DO UPDATE SET total = excluded.total, \
                     inflows = excluded.inflows, outflows = excluded.outflows, \
                     postings = excluded.postings"
            ))
            .bind(asset)
            .bind(t.total.to_string())
            .bind(t.inflows.to_string())
            .bind(t.outflows.to_string())
            .bind(t.postings)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// `a + b` at the larger of their scales, as PostgreSQL's numeric addition keeps it
/// (`0.0 + 200` is `200.0`; rust_decimal returns `200` when one side is zero). Money is
/// written as text for the same reason: the driver writes every zero without decimals.
fn add(a: Decimal, b: Decimal) -> Option<Decimal> {
    let scale = a.scale().max(b.scale());
    let mut sum = ledger::money::exact_add(a, b)?;
    if sum.scale() < scale {
        sum.rescale(scale);
        if sum.scale() != scale {
            return None;
        }
    }
    Some(sum)
}

/// A numeric as PostgreSQL printed it, exactly, decimals and all: `3.308000` stays
/// `3.308000` (not `ledger::money::parse_decimal_exact`, which reads values and drops
/// trailing zeros). Text too long for a `Decimal` is refused, never rounded.
fn exact(text: &str) -> Result<Decimal, ProjectionError> {
    Decimal::from_str_exact(text).map_err(|e| {
        ProjectionError::halt(
            NAME,
            format!("an amount of {text} does not fit a Decimal: {e}"),
        )
    })
}

/// Inserts the history rows of `postings`, each with its account's balance after it.
async fn insert_history(
    conn: &mut PgConnection,
    side: Side,
    postings: &[Posting],
    after: &[String],
) -> Result<(), ProjectionError> {
    if postings.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Posting) -> String| postings.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&format!(
        "INSERT INTO {} (position, leg, account, asset, amount, balance_after, occurred_at) \
         SELECT * FROM unnest($1::int8[], $2::int2[], $3::text[], $4::text[], \
             $5::text[]::numeric[], $6::text[]::numeric[], $7::timestamptz[])",
        Projection::table("balance_history", side)
    ))
    .bind(postings.iter().map(|p| p.position).collect::<Vec<_>>())
    .bind(postings.iter().map(|p| p.leg).collect::<Vec<_>>())
    .bind(col(|p| p.account.clone()))
    .bind(col(|p| p.asset.clone()))
    .bind(col(|p| p.amount.clone()))
    .bind(after)
    .bind(postings.iter().map(|p| p.occurred_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes balance rows whole (a row read back earlier is replaced).
async fn upsert_balances(
    conn: &mut PgConnection,
    side: Side,
    rows: &[(Key, Balance)],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {} AS b (account, asset, balance, postings, last_position, last_occurred_at) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[]::numeric[], $4::int8[], $5::int8[], \
             $6::timestamptz[]) \
         ON CONFLICT (account, asset) DO UPDATE SET balance = excluded.balance, \
             postings = excluded.postings, last_position = excluded.last_position, \
             last_occurred_at = excluded.last_occurred_at",
        Projection::table("account_balances", side)
    ))
    .bind(
        rows.iter()
            .map(|((a, _), _)| a.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|((_, s), _)| s.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(_, b)| b.amount.to_string()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, b)| b.postings).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(_, b)| b.last_position)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(_, b)| b.last_occurred_at)
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn sums_keep_the_larger_scale_as_postgres_does() {
        assert_eq!(add(d("0.0"), d("200")).unwrap().to_string(), "200.0");
        assert_eq!(add(d("100.5"), d("-100.5")).unwrap().to_string(), "0.0");
        assert_eq!(add(Decimal::ZERO, d("1.25")).unwrap().to_string(), "1.25");
        assert_eq!(add(d("0.00"), d("0.0")).unwrap().to_string(), "0.00");
    }

    #[test]
    fn an_amount_beyond_a_decimal_halts_instead_of_rounding() {
        assert_eq!(exact("12.50").unwrap().to_string(), "12.50");
        assert_eq!(exact("3.308000").unwrap().to_string(), "3.308000");
        assert!(exact("1.00000000000000000000000000001").is_err());
    }

    #[test]
    fn a_sum_past_28_significant_digits_is_refused_not_rounded() {
        let eth = d("49999999999.999999999999999999");
        assert_eq!(add(eth, Decimal::ZERO), Some(eth));
        // The exact sum, 99999999999.999999999999999998, needs a mantissa past 2^96.
        assert_eq!(add(eth, eth), None);
        assert!(add(eth, -eth).unwrap().is_zero());
    }
}
