//! The balances projector: every posting of the batch's events, in feed order, becomes a
//! row of `balance_history_<side>` (with the account's running balance after it), moves
//! `account_balances_<side>`, and adds to the per-asset totals of `trial_balance_<side>`.
//! Set-wise, in SQL over the postings rows themselves: balances are sums of postings,
//! nothing else. A per-asset total other than zero halts the projector.

use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::feed::FeedEvent;
use crate::{Projection, ProjectionError, Side};

mod fill;

pub(crate) use fill::Fill;

const NAME: &str = "balances";

/// Applies a batch's postings.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    side: Side,
    events: &[FeedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let positions: Vec<i64> = events.iter().map(|e| e.position).collect();
    let ordinals: Vec<i32> = (0..).take(events.len()).collect();
    let occurred: Vec<_> = events.iter().map(|e| e.occurred_at).collect();
    let balances = Projection::table("account_balances", side);
    let history = Projection::table("balance_history", side);
    let trial = Projection::table("trial_balance", side);
    let sql = format!(
        "WITH ev AS ( \
             SELECT * FROM unnest($1::int8[], $2::int4[], $3::timestamptz[]) \
                 AS t(position, ord, occurred_at) \
         ), p AS ( \
             SELECT p.position, p.leg, p.account COLLATE \"C\" AS account, p.asset, p.amount, \
                    ev.ord, ev.occurred_at \
             FROM ev JOIN postings p ON p.position = ev.position \
         ), r AS ( \
             SELECT p.*, coalesce(b.balance, 0) + sum(p.amount) OVER ( \
                        PARTITION BY p.account, p.asset ORDER BY p.ord, p.leg) AS balance_after \
             FROM p LEFT JOIN {balances} b ON b.account = p.account AND b.asset = p.asset \
         ), h AS ( \
             INSERT INTO {history} (position, leg, account, asset, amount, balance_after, occurred_at) \
             SELECT position, leg, account, asset, amount, balance_after, occurred_at FROM r \
         ), bal AS ( \
             INSERT INTO {balances} AS b \
                 (account, asset, balance, postings, last_position, last_occurred_at) \
             SELECT account, asset, sum(amount), count(*), \
                    (array_agg(position ORDER BY ord DESC, leg DESC))[1], max(occurred_at) \
             FROM r GROUP BY account, asset \
             ON CONFLICT (account, asset) DO UPDATE SET \
                 balance = b.balance + excluded.balance, \
                 postings = b.postings + excluded.postings, \
                 last_position = excluded.last_position, \
                 last_occurred_at = greatest(b.last_occurred_at, excluded.last_occurred_at) \
         ) \
         INSERT INTO {trial} AS t (asset, total, inflows, outflows, postings) \
         SELECT asset, sum(amount), \
                coalesce(sum(amount) FILTER (WHERE amount > 0), 0), \
                coalesce(-sum(amount) FILTER (WHERE amount < 0), 0), count(*) \
         FROM r GROUP BY asset \
         ON CONFLICT (asset) DO UPDATE SET \
             total = t.total + excluded.total, \
             inflows = t.inflows + excluded.inflows, \
             outflows = t.outflows + excluded.outflows, \
             postings = t.postings + excluded.postings \
         RETURNING asset, total::text"
    );
    let totals: Vec<(String, String)> = sqlx::query_as(&sql)
        .bind(&positions)
        .bind(&ordinals)
        .bind(&occurred)
        .fetch_all(&mut *conn)
        .await?;
    // The total is read as text: a sum too large for Decimal must still be judged.
    let unbalanced: Vec<String> = totals
        .into_iter()
        .filter(|(_, total)| total.parse::<Decimal>().map_or(true, |t| !t.is_zero()))
        .map(|(asset, total)| format!("{asset} totals {total}"))
        .collect();
    if !unbalanced.is_empty() {
        let (first, last) = (positions[0], positions[positions.len() - 1]);
        return Err(ProjectionError::halt(
            NAME,
            format!(
                "the trial balance is not zero after the events at positions {first}..{last}: {}",
                unbalanced.join(", ")
            ),
        ));
    }
    Ok(())
}
