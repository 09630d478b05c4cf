//! The checks a rebuilt side must pass before it goes live, each computed twice: from the
//! fresh tables, and straight from the store's rows (events and postings) up to the
//! rebuild's checkpoint in feed order.

use ledger::FeedPosition;
use sqlx::{PgPool, Row};

use crate::{Projection, Side};

/// Events up to the checkpoint, in feed order (binds $1 = tx id as text, $2 = position).
const UPTO: &str = "(e.tx_id, e.position) <= ($1::text::xid8, $2)";

/// The events after the checkpoint: at the end of a rebuild, a few (an index range).
/// Postings up to the checkpoint are all postings but theirs, which spares joining every
/// posting to its event; in one statement, so both sides see one snapshot.
const LATER: &str = "later AS MATERIALIZED (SELECT e.position FROM events e \
                     WHERE (e.tx_id, e.position) > ($1::text::xid8, $2))";

/// Keeps the postings (`p`) of events up to the checkpoint; needs [`LATER`].
const POSTED_UPTO: &str = "NOT EXISTS (SELECT 1 FROM later l WHERE l.position = p.position)";

/// Runs the checks of `projection` on `side` at `checkpoint`: what passed, and what
/// failed (empty when all passed).
pub(crate) async fn check(
    pool: &PgPool,
    projection: Projection,
    side: Side,
    checkpoint: FeedPosition,
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let mut c = Checks {
        pool,
        checkpoint,
        passed: Vec::new(),
        failed: Vec::new(),
    };
    match projection {
        Projection::Balances => balances(&mut c, side).await?,
        Projection::Payments => payments(&mut c, side).await?,
        Projection::Disputes => disputes(&mut c, side).await?,
    }
    Ok((c.passed, c.failed))
}

async fn balances(c: &mut Checks<'_>, side: Side) -> Result<(), sqlx::Error> {
    let t = |base: &str| Projection::table(base, side);
    c.equal(
        "balance history rows and checksum = postings rows and checksum",
        &format!(
            "SELECT count(*)::text || ' rows, checksum ' || {} FROM {}",
            checksum(""),
            t("balance_history")
        ),
        &format!(
            "WITH {LATER} SELECT count(*)::text || ' rows, checksum ' || {} \
             FROM postings p WHERE {POSTED_UPTO}",
            checksum("p.")
        ),
    )
    .await?;
    c.zero(
        "every account balance = the sum of its postings",
        &format!(
            "WITH {LATER}, src AS (SELECT p.account COLLATE \"C\" AS account, p.asset, \
                                  sum(p.amount) AS balance, count(*) AS n \
                           FROM postings p WHERE {POSTED_UPTO} GROUP BY 1, 2) \
             SELECT count(*) FROM src FULL JOIN {} b ON b.account = src.account AND b.asset = src.asset \
             WHERE b.balance IS DISTINCT FROM src.balance OR b.postings IS DISTINCT FROM src.n",
            t("account_balances")
        ),
    )
    .await?;
    c.zero(
        "balance totals per asset are zero and equal the trial balance",
        &format!(
            "WITH sums AS (SELECT asset, sum(balance) AS total FROM {} GROUP BY asset) \
                     SELECT count(*) FROM sums FULL JOIN {} tb USING (asset) \
                     WHERE sums.total IS DISTINCT FROM tb.total OR coalesce(tb.total, 0) <> 0 \
                        OR coalesce(sums.total, 0) <> 0",
            t("account_balances"),
            t("trial_balance")
        ),
    )
    .await?;
    Ok(())
}

async fn payments(c: &mut Checks<'_>, side: Side) -> Result<(), sqlx::Error> {
    let t = |base: &str| Projection::table(base, side);
    c.equal(
        "payments rows / sum of their versions = payment streams / payment events",
        &format!(
            "SELECT count(*)::text || '/' || coalesce(sum(version), 0)::text FROM {}",
            t("payments")
        ),
        &format!(
            "SELECT count(DISTINCT stream_id)::text || '/' || count(*)::text \
             FROM events e WHERE stream_type = 'payment' AND {UPTO}"
        ),
    )
    .await?;
    c.zero(
        "every payment's held = its escrow account's postings",
        &format!(
            "WITH {LATER}, esc AS (SELECT p.account, sum(p.amount) AS bal FROM postings p \
                           WHERE p.account LIKE 'escrow:%' AND {POSTED_UPTO} GROUP BY p.account) \
             SELECT count(*) FROM {} pay LEFT JOIN esc ON esc.account = 'escrow:' || pay.payment_id \
             WHERE coalesce(pay.held, 0) <> coalesce(esc.bal, 0)",
            t("payments")
        ),
    )
    .await?;
    c.zero(
                "reconciliation buckets = sums over payments",
                &format!(
                    "WITH agg AS (SELECT provider, status, asset, (created_at AT TIME ZONE 'UTC')::date AS day, \
                                         count(*) AS payments, sum(amount) AS amount, sum(deposited) AS deposited, \
                                         sum(excess) AS excess, sum(held) AS held, sum(released) AS released, \
                                         sum(refunded) AS refunded, sum(fees) AS fees, sum(aml_fees) AS aml_fees, \
                                         sum(paid_out_seller + paid_out_buyer) AS paid_out \
                                  FROM {} GROUP BY 1, 2, 3, 4) \
                     SELECT count(*) FROM agg FULL JOIN {} b USING (provider, status, asset, day) \
                     WHERE (agg.payments, agg.amount, agg.deposited, agg.excess, agg.held, agg.released, \
                            agg.refunded, agg.fees, agg.aml_fees, agg.paid_out) \
                           IS DISTINCT FROM (b.payments, b.amount, b.deposited, b.excess, b.held, b.released, \
                            b.refunded, b.fees, b.aml_fees, b.paid_out)",
                    t("payments"),
                    t("reconciliation_buckets")
                ),
            )
            .await?;
    Ok(())
}

async fn disputes(c: &mut Checks<'_>, side: Side) -> Result<(), sqlx::Error> {
    let t = |base: &str| Projection::table(base, side);
    // One scan of each side for all the counts.
    c.equal(
        "disputes rows / timeline rows / sum of versions / evidence rows / message rows = \
         dispute streams / dispute events / dispute events / evidence of EvidenceSubmitted and \
         DisputeImported events / messages of MessagePosted and DisputeImported events",
        &format!(
            "SELECT concat_ws('/', (SELECT count(*) FROM {d}), \
                 (SELECT count(*) FROM (SELECT DISTINCT dispute_id, version FROM {tl}) x), \
                 (SELECT coalesce(sum(version), 0) FROM {d}), \
                 (SELECT count(*) FROM {ev}), (SELECT count(*) FROM {m}))",
            d = t("disputes"),
            tl = t("dispute_timeline"),
            ev = t("dispute_evidence"),
            m = t("dispute_messages"),
        ),
        &format!(
            "SELECT concat_ws('/', count(DISTINCT stream_id), count(*), count(*), \
                 count(*) FILTER (WHERE event_type = 'EvidenceSubmitted') \
                   + coalesce(sum(jsonb_array_length(payload->'evidence')) \
                              FILTER (WHERE event_type = 'DisputeImported'), 0), \
                 count(*) FILTER (WHERE event_type = 'MessagePosted') \
                   + coalesce(sum(jsonb_array_length(payload->'messages')) \
                              FILTER (WHERE event_type = 'DisputeImported'), 0)) \
             FROM events e WHERE stream_type = 'dispute' AND {UPTO}"
        ),
    )
    .await?;
    Ok(())
}

/// An order-independent checksum of posting-shaped rows (`position, leg, account, asset,
/// amount`, the amount by value), their columns qualified by `q`.
fn checksum(q: &str) -> String {
    format!(
        "coalesce(sum(hashtextextended({q}position::text || '|' || {q}leg::text || '|' || {q}account \
         || '|' || {q}asset || '|' || trim_scale({q}amount)::text, 0)::numeric), 0)::text"
    )
}

struct Checks<'a> {
    pool: &'a PgPool,
    checkpoint: FeedPosition,
    passed: Vec<String>,
    failed: Vec<String>,
}

impl Checks<'_> {
    /// Both queries (each binding the checkpoint if it uses it) answer the same text.
    async fn equal(&mut self, what: &str, built: &str, source: &str) -> Result<(), sqlx::Error> {
        // Both sides at once, on two connections: each is a scan of its own.
        let (ours, theirs) = tokio::try_join!(self.scalar(built), self.scalar(source))?;
        if ours == theirs {
            self.passed.push(format!("{what}: {ours}"));
        } else {
            self.failed.push(format!(
                "{what}: rebuilt tables say {ours}, the store says {theirs}"
            ));
        }
        Ok(())
    }

    /// The query counts offending rows: there must be none.
    async fn zero(&mut self, what: &str, sql: &str) -> Result<(), sqlx::Error> {
        let row = if sql.contains("$1") {
            self.bound(sql).fetch_one(self.pool).await?
        } else {
            sqlx::query(sql).fetch_one(self.pool).await?
        };
        let n: i64 = row.try_get(0)?;
        if n == 0 {
            self.passed.push(what.to_owned());
        } else {
            self.failed.push(format!("{what}: {n} rows differ"));
        }
        Ok(())
    }

    async fn scalar(&self, sql: &str) -> Result<String, sqlx::Error> {
        let row = if sql.contains("$1") {
            self.bound(sql).fetch_one(self.pool).await?
        } else {
            sqlx::query(sql).fetch_one(self.pool).await?
        };
        row.try_get(0)
    }

    fn bound<'q>(
        &self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql)
            .bind(self.checkpoint.tx_id.to_string())
            .bind(self.checkpoint.position)
    }
}
