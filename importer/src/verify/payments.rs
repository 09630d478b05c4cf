//! The payments domain's checks, joined in PostgreSQL over the scratch tables
//! (`scratch.rs`): entries changed since their import, each payment's presence, digest,
//! terms and money by entry type, its projected status, and the reconciliation buckets.

use std::time::Duration;

use futures::TryStreamExt;
use sqlx::PgConnection;
use uuid::Uuid;

use super::scratch;
use super::{payments_projected, Difference, VerifyOutcome};
use crate::mongo::Legacy;
use crate::run::ImportError;

fn short(digest: &str) -> &str {
    &digest[..12.min(digest.len())]
}

/// Runs the checks of the payments domain, adding its differences to `outcome`.
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn verify(
    conn: &mut PgConnection,
    legacy: &Legacy,
    wait: Duration,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    scratch::payments(conn, legacy).await?;
    changed_entries(conn, outcome).await?;
    // Payments changed since their import: read, then written in one short statement.
    let changed: Vec<Uuid> = sqlx::query_scalar(
        "SELECT m.pid FROM pg_temp.verify_mpay m JOIN pg_temp.verify_lpay l ON l.pid = m.pid \
         WHERE m.digest <> l.digest",
    )
    .fetch_all(&mut *conn)
    .await?;
    mark_changed(conn, &changed).await?;
    per_payment(conn, outcome).await?;
    // Entries whose payment is not a payment (orphans) are checked by count only.

    // Status and buckets are read from the projections, so they must have caught up.
    if let Err(behind) = payments_projected(&mut *conn, wait).await? {
        outcome.differences.push(Difference {
            check: "projections".into(),
            key: "payments projector".into(),
            mongo: "-".into(),
            ledger: format!("{behind} events not projected after {wait:?}"),
            ids: Vec::new(),
            explained_by: None,
        });
        outcome.notes.push(
            "statuses and buckets not compared: the payments projector has not caught up \
             (run `escrow-ledger project` or `serve`, then verify again)"
                .into(),
        );
        return Ok(());
    }
    if !crate::store::domain_completed(&mut *conn, "disputes").await? {
        outcome.notes.push(
            "import disputes has not finished here: a payment disputed in MongoDB differs in \
             status until it has (import disputes, then verify again)"
                .into(),
        );
    }
    statuses(conn, outcome).await?;
    outcome.notes.push(
        "ledger buckets from finance.reconciliation_buckets, statuses from finance.payments".into(),
    );
    buckets(conn, outcome).await?;
    Ok(())
}

/// Entries changed in MongoDB since their import (or gone from it): never explained, and
/// their payment's differences are not either.
async fn changed_entries(
    conn: &mut PgConnection,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    let rows: Vec<(String, String, Option<String>, Option<Uuid>)> = sqlx::query_as(
        "SELECT s.object_id, s.digest, me.digest, \
                coalesce(me.pid, CASE WHEN s.stream_type = 'payment' THEN s.stream_id END) \
         FROM legacy_import.id_map s \
         LEFT JOIN pg_temp.verify_ment me ON me.hex = s.object_id \
         WHERE s.collection = 'fundsledgerentries' \
           AND (me.hex IS NULL OR me.digest <> s.digest) \
         ORDER BY s.object_id COLLATE \"C\"",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut changed = Vec::new();
    for (hex, digest, now, pid) in rows {
        changed.extend(pid);
        outcome.differences.push(Difference {
            check: "changed".into(),
            key: format!(
                "entry {hex}{}",
                pid.map(|p| format!(" of payment {p}")).unwrap_or_default()
            ),
            mongo: now.map_or_else(
                || "absent or invalid now".to_owned(),
                |d| format!("digest {}", short(&d)),
            ),
            ledger: format!("digest {}", short(&digest)),
            ids: vec![hex],
            explained_by: None,
        });
    }
    mark_changed(conn, &changed).await
}

/// Notes payments (or payments of entries) changed since their import.
async fn mark_changed(conn: &mut PgConnection, pids: &[Uuid]) -> Result<(), ImportError> {
    sqlx::query(
        "INSERT INTO pg_temp.verify_changed SELECT UNNEST($1::uuid[]) ON CONFLICT DO NOTHING",
    )
    .bind(pids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A payment-level row: pid, hex, in MongoDB, in the ledger, MongoDB's digest, the
/// ledger's, whether the terms differ, MongoDB's terms, the ledger's, changed, and the
/// explanation.
type PaymentRow = (
    Uuid,
    String,
    bool,
    bool,
    Option<String>,
    Option<String>,
    bool,
    String,
    String,
    bool,
    Option<String>,
);

/// A money row: pid, hex, entry type, MongoDB's sum, the ledger's, and the explanation.
type MoneyRow = (Uuid, String, String, String, String, Option<String>);

/// Per payment, in payment id order: presence, digest and terms, then money by entry type.
async fn per_payment(
    conn: &mut PgConnection,
    outcome: &mut VerifyOutcome,
) -> Result<(), ImportError> {
    let mut payments = sqlx::query_as::<_, PaymentRow>(
        "SELECT coalesce(m.pid, l.pid), coalesce(m.hex, l.hex, ''), \
                m.pid IS NOT NULL, l.pid IS NOT NULL, m.digest, l.digest, \
                coalesce(m.amount <> l.amount OR m.asset <> l.asset OR m.provider <> l.provider, false), \
                concat_ws(' ', m.amount, m.asset, m.provider), \
                concat_ws(' ', l.amount, l.asset, l.provider), \
                EXISTS (SELECT 1 FROM pg_temp.verify_changed c WHERE c.pid = coalesce(m.pid, l.pid)), \
                pg_temp.verify_explain(coalesce(m.pid, l.pid), coalesce(m.hex, l.hex, ''), NULL) \
         FROM pg_temp.verify_mpay m FULL JOIN pg_temp.verify_lpay l ON l.pid = m.pid \
         WHERE m.pid IS NULL OR l.pid IS NULL OR m.digest <> l.digest \
            OR m.amount <> l.amount OR m.asset <> l.asset OR m.provider <> l.provider \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .peekable();
    let kinds = scratch::kinds();
    let money: Vec<MoneyRow> = sqlx::query_as(
        "WITH mm AS (SELECT pid, kind, sum(amount) AS amount FROM pg_temp.verify_ment \
                     WHERE pid IS NOT NULL AND kind = ANY($1) GROUP BY 1, 2), \
              lm AS (SELECT pid, kind, amount FROM pg_temp.verify_lmoney WHERE kind = ANY($1)), \
              d AS (SELECT coalesce(mm.pid, lm.pid) AS pid, coalesce(mm.kind, lm.kind) AS kind, \
                           coalesce(mm.amount, 0) AS a, coalesce(lm.amount, 0) AS b \
                    FROM mm FULL JOIN lm ON lm.pid = mm.pid AND lm.kind = mm.kind \
                    WHERE coalesce(mm.amount, 0) <> coalesce(lm.amount, 0)), \
              p AS (SELECT coalesce(m.pid, l.pid) AS pid, coalesce(m.hex, l.hex) AS hex \
                    FROM pg_temp.verify_mpay m FULL JOIN pg_temp.verify_lpay l ON l.pid = m.pid) \
         SELECT d.pid, p.hex, d.kind, trim_scale(d.a)::text, trim_scale(d.b)::text, \
                CASE WHEN EXISTS (SELECT 1 FROM pg_temp.verify_changed c WHERE c.pid = d.pid) \
                     THEN NULL ELSE pg_temp.verify_explain(d.pid, p.hex, d.kind) END \
         FROM d JOIN p ON p.pid = d.pid \
         ORDER BY d.pid, array_position($1, d.kind)",
    )
    .bind(&kinds)
    .fetch_all(&mut *conn)
    .await?;
    for (pid, hex, kind, a, b, explained_by) in money {
        // The payment-level differences of this payment and those before it come first.
        while let Some(row) = payments.next_if(|r| r.0 <= pid) {
            payment_differences(row, outcome);
        }
        outcome.differences.push(Difference {
            check: "payment_money".into(),
            key: format!("payment {hex} ({pid}) {kind}"),
            mongo: a,
            ledger: b,
            ids: vec![hex],
            explained_by,
        });
    }
    for row in payments {
        payment_differences(row, outcome);
    }
    Ok(())
}

fn payment_differences(row: PaymentRow, outcome: &mut VerifyOutcome) {
    let (pid, hex, in_mongo, in_ledger, m_digest, l_digest, terms, m_terms, l_terms, changed, why) =
        row;
    let key = format!("payment {hex} ({pid})");
    let mut push = |check: &str, mongo: String, ledger: String, explained_by| {
        outcome.differences.push(Difference {
            check: check.into(),
            key: key.clone(),
            mongo,
            ledger,
            ids: vec![hex.clone()],
            explained_by,
        });
    };
    match (in_mongo, in_ledger) {
        (true, false) => push("payment", "valid".into(), "not imported".into(), why),
        (false, true) => push(
            "payment",
            "absent or invalid now".into(),
            "imported".into(),
            None,
        ),
        _ => {
            let (m, l) = (m_digest.unwrap_or_default(), l_digest.unwrap_or_default());
            if m != l {
                push(
                    "changed",
                    format!("digest {}", short(&m)),
                    format!("digest {}", short(&l)),
                    None,
                );
            }
            if terms {
                push(
                    "payment_terms",
                    m_terms,
                    l_terms,
                    if changed { None } else { why },
                );
            }
        }
    }
}

/// The mapped legacy status (MongoDB now) of each imported payment against its projected one.
async fn statuses(conn: &mut PgConnection, outcome: &mut VerifyOutcome) -> Result<(), ImportError> {
    let mut rows = sqlx::query_as::<_, (Uuid, String, String, String, Option<String>)>(
        "SELECT m.pid, m.hex, m.status, coalesce(fp.status, 'not projected'), \
                CASE WHEN EXISTS (SELECT 1 FROM pg_temp.verify_changed c WHERE c.pid = m.pid) \
                     THEN NULL ELSE pg_temp.verify_explain(m.pid, m.hex, NULL) END \
         FROM pg_temp.verify_lpay l \
         JOIN pg_temp.verify_mpay m ON m.pid = l.pid \
         LEFT JOIN finance.payments fp ON fp.payment_id = l.pid \
         WHERE m.status IS DISTINCT FROM coalesce(fp.status, 'not projected') \
         ORDER BY m.pid",
    )
    .fetch(&mut *conn);
    while let Some((pid, hex, mongo, ledger, explained_by)) = rows.try_next().await? {
        outcome.differences.push(Difference {
            check: "status".into(),
            key: format!("payment {hex} ({pid})"),
            mongo,
            ledger,
            ids: vec![hex],
            explained_by,
        });
    }
    Ok(())
}

/// (provider, currency, UTC day), count and amount of MongoDB's side, the ledger's.
type BucketRow = (String, String, chrono::NaiveDate, i64, String, i64, String);

/// Buckets: (provider, currency, UTC day) count and amount, MongoDB's payments against
/// the projection's buckets; a differing bucket names the payments that make it differ.
async fn buckets(conn: &mut PgConnection, outcome: &mut VerifyOutcome) -> Result<(), ImportError> {
    let differing: Vec<BucketRow> = sqlx::query_as(
        "WITH m AS (SELECT provider, asset, day, count(*) AS n, sum(amount) AS amount \
                    FROM pg_temp.verify_mpay GROUP BY 1, 2, 3), \
              l AS (SELECT provider, asset, day, sum(payments)::int8 AS n, sum(amount) AS amount \
                    FROM finance.reconciliation_buckets GROUP BY 1, 2, 3) \
         SELECT coalesce(m.provider, l.provider), coalesce(m.asset, l.asset), \
                coalesce(m.day, l.day), coalesce(m.n, 0)::int8, \
                trim_scale(coalesce(m.amount, 0))::text, coalesce(l.n, 0)::int8, \
                trim_scale(coalesce(l.amount, 0))::text \
         FROM m FULL JOIN l ON (l.provider, l.asset, l.day) = (m.provider, m.asset, m.day) \
         WHERE coalesce(m.n, 0) <> coalesce(l.n, 0) \
            OR coalesce(m.amount, 0) <> coalesce(l.amount, 0) \
         ORDER BY coalesce(m.provider, l.provider) COLLATE \"C\", \
                  coalesce(m.asset, l.asset) COLLATE \"C\", coalesce(m.day, l.day)",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (provider, asset, day, mc, ma, lc, la) in differing {
        // The payments of this bucket that differ one by one: in it on MongoDB's side
        // and imported otherwise (or not at all, or changed), or in it on the ledger's
        // side only.
        let culprits: Vec<(Uuid, String, bool, Option<String>)> = sqlx::query_as(
            "SELECT x.pid, x.hex, \
                    EXISTS (SELECT 1 FROM pg_temp.verify_changed c WHERE c.pid = x.pid), \
                    pg_temp.verify_explain(x.pid, x.hex, NULL) \
             FROM (SELECT m.pid, m.hex FROM pg_temp.verify_mpay m \
                   LEFT JOIN pg_temp.verify_lpay l ON l.pid = m.pid \
                   WHERE (m.provider, m.asset, m.day) = ($1, $2, $3) \
                     AND (l.pid IS NULL OR m.amount <> l.amount OR l.day <> m.day \
                          OR EXISTS (SELECT 1 FROM pg_temp.verify_changed c WHERE c.pid = m.pid)) \
                   UNION \
                   SELECT l.pid, coalesce(m.hex, l.hex) FROM pg_temp.verify_lpay l \
                   LEFT JOIN pg_temp.verify_mpay m ON m.pid = l.pid \
                   WHERE (l.provider, l.asset, l.day) = ($1, $2, $3) \
                     AND (m.pid IS NULL OR (m.provider, m.asset, m.day) <> ($1, $2, $3))) AS x \
             ORDER BY x.pid",
        )
        .bind(&provider)
        .bind(&asset)
        .bind(day)
        .fetch_all(&mut *conn)
        .await?;
        let hexes: Vec<String> = culprits.iter().map(|c| c.1.clone()).collect();
        let explained = if culprits.is_empty() || culprits.iter().any(|c| c.2) {
            None
        } else {
            culprits
                .into_iter()
                .map(|c| c.3)
                .collect::<Option<Vec<_>>>()
                .map(|w| w.join("; "))
        };
        outcome.differences.push(Difference {
            check: "bucket".into(),
            key: format!(
                "({provider}, {asset}, {day}) payments {}",
                if hexes.is_empty() {
                    "-".to_owned()
                } else {
                    hexes.join(",")
                }
            ),
            mongo: format!("{mc} / {ma}"),
            ledger: format!("{lc} / {la}"),
            ids: hexes,
            explained_by: explained,
        });
    }
    Ok(())
}
