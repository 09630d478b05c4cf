//! `import verify <domain>`: the parity check finance runs after cutover, computed on the
//! client with the importer's own parser (never a MongoDB `$sum` over doubles). Per
//! collection, documents = imported + rejected; per payment, the money of its entries by
//! type against the ledger's postings, its terms against its import; per (provider,
//! currency, UTC day of `createdAt`), count and amount against the projections'
//! reconciliation buckets, and each payment's mapped status against its projected one (so
//! verify waits for the payments projector and fails when it has not caught up). Every
//! imported payment, entry and dispute is compared by the digest of its document: one
//! changed after its import is named and never explained, nor are its payment's
//! differences. Otherwise a difference is explained when the import listed that id: a
//! reject or an anomaly of the payment, or of one of its entries (of the type that
//! differs, for money). A rejected document changed or deleted since its reject is named
//! and never explained either (`rejects.rs`).
//!
//! MongoDB's side is parsed on the client and written in batches into temporary tables of
//! verify's connection; PostgreSQL joins them with the ledger's side (`scratch.rs`), so
//! verify's memory stays flat however large the legacy collections are. Only the
//! differences are held.

mod disputes;
mod payments;
mod rejects;
mod scratch;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::mongo::Legacy;
use crate::run::{Domain, ImportError};

/// One difference between MongoDB and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// Which check (`count`, `bucket`, `payment_money`, `payment_terms`, `status`, ...).
    pub check: String,
    /// What differs: the bucket, the payment, the collection.
    pub key: String,
    /// MongoDB's side.
    pub mongo: String,
    /// The ledger's side.
    pub ledger: String,
    /// The legacy ids concerned.
    pub ids: Vec<String>,
    /// The listing that explains it, if any.
    pub explained_by: Option<String>,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    /// The domain checked.
    pub domain: String,
    /// Per collection: (documents in MongoDB, imported, open rejects).
    pub counts: BTreeMap<String, (u64, u64, u64)>,
    /// Every difference.
    pub differences: Vec<Difference>,
    /// Where the ledger's side came from, and alike.
    pub notes: Vec<String>,
}

impl VerifyOutcome {
    /// The differences no listing explains.
    pub fn unexplained(&self) -> usize {
        self.differences
            .iter()
            .filter(|d| d.explained_by.is_none())
            .count()
    }

    /// A table for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "import verify {}", self.domain);
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        let _ = writeln!(
            out,
            "{:<20} {:>10} {:>10} {:>10}",
            "collection", "mongo", "imported", "rejected"
        );
        for (c, (m, i, r)) in &self.counts {
            let _ = writeln!(out, "{c:<20} {m:>10} {i:>10} {r:>10}");
        }
        if self.differences.is_empty() {
            let _ = writeln!(out, "no differences: MongoDB and the ledger agree");
            return out;
        }
        let _ = writeln!(
            out,
            "{} difference(s), {} unexplained:",
            self.differences.len(),
            self.unexplained()
        );
        let _ = writeln!(
            out,
            "{:<14} | {:<48} | {:<24} | {:<24} | explained by",
            "check", "key", "mongo", "ledger"
        );
        for d in &self.differences {
            let _ = writeln!(
                out,
                "{:<14} | {:<48} | {:<24} | {:<24} | {}",
                d.check,
                d.key,
                d.mongo,
                d.ledger,
                d.explained_by.as_deref().unwrap_or("UNEXPLAINED")
            );
        }
        out
    }
}

async fn counts(conn: &mut PgConnection, collection: &str) -> Result<(u64, u64), sqlx::Error> {
    let (imported, rejected): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM legacy_import.id_map WHERE collection = $1), \
                (SELECT count(*) FROM legacy_import.rejects WHERE collection = $1 AND resolved_at IS NULL)",
    )
    .bind(collection)
    .fetch_one(conn)
    .await?;
    Ok((
        u64::try_from(imported).unwrap_or(0),
        u64::try_from(rejected).unwrap_or(0),
    ))
}

/// Runs the parity check of a domain, waiting up to `wait` for the payments projector to
/// catch up (its statuses and buckets are compared).
///
/// # Errors
/// MongoDB or PostgreSQL failed (temporary tables refused included).
pub async fn verify(
    pool: &PgPool,
    domain: Domain,
    uri: &str,
    db: &str,
    wait: Duration,
) -> Result<VerifyOutcome, ImportError> {
    let legacy = Legacy::connect(uri, db).await?;
    legacy
        .require_any(&crate::mongo::LEGACY_COLLECTIONS)
        .await?;
    // One connection: the scratch tables are its own. No transaction around the checks:
    // one would hold the feed's watermark, which the projector verify waits for needs.
    let mut conn = pool.acquire().await?;
    scratch::listed(&mut conn).await?;
    let mut outcome = VerifyOutcome {
        domain: domain.name().into(),
        ..VerifyOutcome::default()
    };
    for &c in domain.collections() {
        let docs = legacy.count(c.name(), None).await?;
        let (imported, rejected) = counts(&mut conn, c.name()).await?;
        outcome
            .counts
            .insert(c.name().into(), (docs, imported, rejected));
        if docs != imported + rejected {
            outcome.differences.push(Difference {
                check: "count".into(),
                key: c.name().into(),
                mongo: format!("{docs} documents"),
                ledger: format!("{imported} imported + {rejected} rejected"),
                ids: Vec::new(),
                explained_by: None,
            });
        }
    }
    for &c in domain.collections() {
        rejects::verify(&mut conn, &legacy, c.name(), &mut outcome).await?;
    }
    match domain {
        Domain::Payments => payments::verify(&mut conn, &legacy, wait, &mut outcome).await?,
        Domain::Disputes => disputes::verify(&mut conn, &legacy, &mut outcome).await?,
    }
    // The connection goes back to the pool: its scratch tables go with this process.
    Ok(outcome)
}

/// Waits (up to `wait`) until the payments projector has applied every
/// committed event; `Err(events behind)` when it has not by then (or is not there).
async fn payments_projected(
    conn: &mut PgConnection,
    wait: Duration,
) -> Result<Result<(), i64>, sqlx::Error> {
    let deadline = Instant::now() + wait;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT CASE WHEN s.projector IS NULL THEN (SELECT count(*) FROM events) \
                    ELSE (SELECT count(*) FROM events e \
                          WHERE (e.tx_id::text::int8, e.position) > (s.checkpoint_tx, s.checkpoint_position)) END \
             FROM (SELECT 1) AS one \
             LEFT JOIN projection.projector_state s ON s.projector = 'payments'",
        )
        .fetch_one(&mut *conn)
        .await?;
        if behind == 0 {
            return Ok(Ok(()));
        }
        if Instant::now() >= deadline {
            return Ok(Err(behind));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
