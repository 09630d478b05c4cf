//! The scratch tables `verify` compares in: MongoDB's side, parsed on the client with the
//! importer's own parser, written in batches into temporary tables of verify's connection,
//! beside the ledger's side and the import's listings. PostgreSQL then joins them, so
//! verify's memory stays flat however many payments and entries there are.

use ledger::payment::EntryKind;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ids::Collection;
use crate::mongo::Legacy;
use crate::run::ImportError;
use crate::translate::{parse_entry, payment};

/// Documents read from MongoDB and written to the scratch tables per batch.
const BATCH: u32 = 1000;

/// The listings of the import (open rejects, anomalies) per document, for explaining
/// differences: a view, read where a difference needs it.
const LISTED: &str = "
CREATE OR REPLACE TEMP VIEW verify_listed AS
SELECT collection, object_id, string_agg(why, ', ' ORDER BY source, why) AS why
  FROM (SELECT collection, object_id, 'reject ' || code AS why, 0 AS source
          FROM legacy_import.rejects WHERE resolved_at IS NULL
        UNION ALL
        SELECT collection, object_id, 'anomaly ' || kind, 1 FROM legacy_import.anomalies) AS l
 GROUP BY collection, object_id;
";

/// MongoDB's payments and entries as parsed, the ledger's imported payments and the money
/// of their imported entries by type, and which payments changed since their import; and
/// `pg_temp.verify_explain`, which names the listing that explains a payment's
/// difference: one of the payment, else the first (by `_id`) of one of its entries, of
/// the given type when one is given. Indexes are made before the tables fill, so that no
/// statement of verify runs long while holding a transaction id: one would hold back the
/// feed's watermark, and so the live projectors (`design-notes.md`).
const PAYMENTS: &str = r#"
DROP TABLE IF EXISTS pg_temp.verify_mpay, pg_temp.verify_ment, pg_temp.verify_lpay,
                     pg_temp.verify_lmoney, pg_temp.verify_changed;
CREATE TEMP TABLE verify_mpay (
    pid uuid PRIMARY KEY, hex text NOT NULL, provider text NOT NULL, asset text NOT NULL,
    day date NOT NULL, amount numeric NOT NULL, status text NOT NULL, digest text NOT NULL);
CREATE INDEX ON pg_temp.verify_mpay (provider, asset, day);
CREATE TEMP TABLE verify_ment (
    hex text PRIMARY KEY, pid uuid, kind text NOT NULL, amount numeric NOT NULL,
    digest text NOT NULL);
CREATE INDEX ON pg_temp.verify_ment (pid, hex);
CREATE TEMP TABLE verify_lpay (
    pid uuid PRIMARY KEY, hex text NOT NULL, digest text NOT NULL, provider text,
    asset text, amount numeric, day date);
CREATE INDEX ON pg_temp.verify_lpay (provider, asset, day);
CREATE TEMP TABLE verify_lmoney (
    pid uuid NOT NULL, kind text NOT NULL, amount numeric NOT NULL, PRIMARY KEY (pid, kind));
CREATE TEMP TABLE verify_changed (pid uuid PRIMARY KEY);
CREATE OR REPLACE FUNCTION pg_temp.verify_explain(p uuid, h text, k text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce(
        (SELECT 'payments ' || h || ': ' || l.why FROM pg_temp.verify_listed l
          WHERE l.collection = 'payments' AND l.object_id = h),
        (SELECT 'fundsledgerentries ' || e.hex || ': ' || l.why
           FROM pg_temp.verify_ment e
           JOIN pg_temp.verify_listed l
             ON l.collection = 'fundsledgerentries' AND l.object_id = e.hex
          WHERE e.pid = p AND (k IS NULL OR e.kind = k)
          ORDER BY e.hex COLLATE "C" LIMIT 1))
$$;
"#;

/// Events per statement when the ledger's side is read into the scratch tables.
const EVENTS_PER_STATEMENT: i64 = 20_000;

/// The ledger's imported payments (terms, digest, UTC day) of events in a position range;
/// the first import of a stream wins, as positions rise.
const LEDGER_PAYMENTS: &str = "
INSERT INTO pg_temp.verify_lpay
SELECT e.stream_id, m.object_id, m.digest,
       e.payload -> 'terms' ->> 'provider', e.payload -> 'terms' ->> 'asset',
       (e.payload -> 'terms' ->> 'amount')::numeric,
       ((e.payload ->> 'created_at')::timestamptz AT TIME ZONE 'UTC')::date
  FROM events e
  JOIN legacy_import.id_map m ON m.collection = 'payments' AND m.id = e.stream_id
 WHERE e.position > $1 AND e.position <= $2 AND e.event_type = 'PaymentImported'
 ORDER BY e.position
ON CONFLICT (pid) DO NOTHING";

/// The money the ledger's imported entries of a position range moved, by payment and
/// entry type (what was posted to the accounts credited), added to the earlier ranges'.
const LEDGER_MONEY: &str = "
INSERT INTO pg_temp.verify_lmoney
SELECT (e.payload ->> 'payment_id')::uuid, e.payload ->> 'kind', sum(p.amount)
  FROM events e
  JOIN postings p ON p.position = e.position AND p.amount > 0
 WHERE e.position > $1 AND e.position <= $2 AND e.event_type = 'LedgerEntryImported'
   AND e.payload ->> 'payment_id' IS NOT NULL
 GROUP BY 1, 2
ON CONFLICT (pid, kind) DO UPDATE SET amount = verify_lmoney.amount + EXCLUDED.amount";

/// Makes the listings view (both domains).
///
/// # Errors
/// The database failed (or refused temporary tables).
pub async fn listed(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    // A view: creating it is a short write, reading it takes no transaction id.
    sqlx::raw_sql(LISTED).execute(conn).await?;
    Ok(())
}

/// Builds the payments domain's tables: MongoDB's payments and entries read and parsed,
/// then the ledger's side.
///
/// # Errors
/// MongoDB or PostgreSQL failed.
pub async fn payments(conn: &mut PgConnection, legacy: &Legacy) -> Result<(), ImportError> {
    sqlx::raw_sql(PAYMENTS).execute(&mut *conn).await?;
    mongo_payments(conn, legacy).await?;
    mongo_entries(conn, legacy).await?;
    ledger_side(conn).await?;
    // Statistics for the joins (temporary tables are never analyzed automatically); one
    // short statement each.
    for table in ["verify_mpay", "verify_ment", "verify_lpay", "verify_lmoney"] {
        sqlx::query(&format!("ANALYZE pg_temp.{table}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Reads the ledger's side a position range at a time, one short statement each, up to
/// the last event stored when verify began.
async fn ledger_side(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(&mut *conn)
        .await?;
    let mut from = 0;
    while from < last {
        let to = from.saturating_add(EVENTS_PER_STATEMENT).min(last);
        for sql in [LEDGER_PAYMENTS, LEDGER_MONEY] {
            sqlx::query(sql)
                .bind(from)
                .bind(to)
                .execute(&mut *conn)
                .await?;
        }
        from = to;
    }
    Ok(())
}

#[derive(Default)]
struct PaymentRows {
    pid: Vec<Uuid>,
    hex: Vec<String>,
    provider: Vec<String>,
    asset: Vec<String>,
    day: Vec<chrono::NaiveDate>,
    amount: Vec<Decimal>,
    status: Vec<String>,
    digest: Vec<String>,
}

async fn mongo_payments(conn: &mut PgConnection, legacy: &Legacy) -> Result<(), ImportError> {
    let mut rx = legacy.batches(Collection::Payments.name(), None, BATCH);
    while let Some(batch) = rx.recv().await {
        let mut rows = PaymentRows::default();
        for raw in batch? {
            // A document the parser refuses was rejected: counted, never compared.
            let Ok((p, source)) = payment(&raw) else {
                continue;
            };
            rows.pid.push(p.terms.payment_id);
            rows.hex.push(source.object_id);
            rows.provider.push(p.terms.provider.clone());
            rows.asset.push(p.terms.asset.code().to_owned());
            rows.day.push(p.created_at.date_naive());
            rows.amount.push(p.terms.amount);
            rows.status.push(p.mapped_status.as_str().to_owned());
            rows.digest.push(source.digest);
        }
        sqlx::query(
            "INSERT INTO pg_temp.verify_mpay \
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::date[], \
                                  $6::numeric[], $7::text[], $8::text[]) \
             ON CONFLICT (pid) DO UPDATE SET hex = EXCLUDED.hex, provider = EXCLUDED.provider, \
                 asset = EXCLUDED.asset, day = EXCLUDED.day, amount = EXCLUDED.amount, \
                 status = EXCLUDED.status, digest = EXCLUDED.digest",
        )
        .bind(&rows.pid)
        .bind(&rows.hex)
        .bind(&rows.provider)
        .bind(&rows.asset)
        .bind(&rows.day)
        .bind(&rows.amount)
        .bind(&rows.status)
        .bind(&rows.digest)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct EntryRows {
    hex: Vec<String>,
    pid: Vec<Option<Uuid>>,
    kind: Vec<&'static str>,
    amount: Vec<Decimal>,
    digest: Vec<String>,
}

async fn mongo_entries(conn: &mut PgConnection, legacy: &Legacy) -> Result<(), ImportError> {
    let mut rx = legacy.batches(Collection::FundsLedgerEntries.name(), None, BATCH);
    while let Some(batch) = rx.recv().await {
        let mut rows = EntryRows::default();
        for raw in batch? {
            let Ok(e) = parse_entry(&raw) else {
                continue;
            };
            rows.pid.push(
                e.payment_hex
                    .as_deref()
                    .map(|h| Collection::Payments.uuid_of(h)),
            );
            rows.kind.push(e.kind.as_str());
            rows.amount.push(e.amount);
            rows.hex.push(e.source.object_id);
            rows.digest.push(e.source.digest);
        }
        sqlx::query(
            "INSERT INTO pg_temp.verify_ment \
             SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::numeric[], $5::text[]) \
             ON CONFLICT (hex) DO UPDATE SET pid = EXCLUDED.pid, kind = EXCLUDED.kind, \
                 amount = EXCLUDED.amount, digest = EXCLUDED.digest",
        )
        .bind(&rows.hex)
        .bind(&rows.pid)
        .bind(&rows.kind)
        .bind(&rows.amount)
        .bind(&rows.digest)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The entry types, in the order differences are listed.
pub fn kinds() -> Vec<&'static str> {
    EntryKind::ALL.iter().map(|k| k.as_str()).collect()
}
