//! The PostgreSQL side of the import: one batch written in one short transaction (its
//! events, id map rows, deposit references, rejects, anomalies and checkpoint together),
//! and the lookups the translation needs (imported payments' terms, event ids already
//! stored). Functions take the caller's connection; only the run begins and commits.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use ledger::event::StreamAppend;
use ledger::payment::{PaymentCreated, PaymentImported};
use ledger::store::{append, StoreError, OWNER_ROLE};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::legacy::Anomaly;
use crate::report::Listed;

/// A row of the id map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex.
    pub object_id: String,
    /// The UUID it became.
    pub id: Uuid,
    /// Its stream.
    pub stream_id: Uuid,
    /// The stream's type.
    pub stream_type: &'static str,
    /// Digest of its canonical Extended JSON.
    pub digest: String,
    /// Payments: the account key of the purchase request.
    pub purchase_request: Option<String>,
}

/// A rejected document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex (or its Extended JSON when not an ObjectId).
    pub object_id: String,
    /// The reason's code.
    pub code: String,
    /// The field at fault.
    pub field: Option<String>,
    /// The reason in words.
    pub reason: String,
    /// The document as Extended JSON text.
    pub raw_ejson: String,
    /// The document's bytes as read.
    pub raw_bson: Vec<u8>,
    /// Payments: the account key of its `purchaseRequestId`, when readable (disputes
    /// without `paymentId` are matched against rejected payments too).
    pub purchase_request: Option<String>,
}

/// An anomaly of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex.
    pub object_id: String,
    /// What.
    pub anomaly: Anomaly,
}

/// A provider reference deposited by an imported entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRef {
    /// The provider.
    pub provider: String,
    /// The reference.
    pub reference: String,
    /// The payment.
    pub payment_id: Uuid,
    /// The event that deposited it.
    pub event_id: Uuid,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Appends, one per stream, events in order.
    pub appends: Vec<StreamAppend>,
    /// Id map rows.
    pub id_map: Vec<IdMapRow>,
    /// Rejects (upserted: a reject seen again is updated).
    pub rejects: Vec<RejectRow>,
    /// Rejects now imported by a retry: (collection, object id).
    pub resolved: Vec<(&'static str, String)>,
    /// Anomalies (each kind once per document).
    pub anomalies: Vec<AnomalyRow>,
    /// Deposit references.
    pub deposits: Vec<DepositRef>,
    /// The checkpoint: (collection, last `_id`, documents in the batch).
    pub checkpoint: Option<(&'static str, String, i64)>,
    /// Ledger entries with a reference, for later batches' duplicate check.
    pub references: Vec<EntryReference>,
}

/// A legacy ledger entry with a reference, as parsed: what the duplicate-webhook check
/// compares (`translate::duplicates_of`).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryReference {
    /// Its `_id` (24 hex digits).
    pub object_id: String,
    /// Its reference.
    pub reference: String,
    /// Its type (`"deposit"`).
    pub kind: String,
    /// Its magnitude.
    pub amount: Decimal,
    /// Its `createdAt`.
    pub created_at: DateTime<Utc>,
    /// Whether it became an event (not rejected).
    pub imported: bool,
}

impl BatchWrite {
    /// Adds events to `stream_id`'s append, creating it (with `expected`) if new.
    pub fn push_events(
        &mut self,
        stream_id: Uuid,
        stream_type: &str,
        expected: ledger::ExpectedVersion,
        events: Vec<ledger::NewEvent>,
    ) {
        if let Some(a) = self.appends.iter_mut().find(|a| a.stream_id == stream_id) {
            a.events.extend(events);
        } else {
            self.appends.push(StreamAppend {
                stream_id,
                stream_type: stream_type.to_owned(),
                expected,
                events,
            });
        }
    }

    /// The number of events to append.
    pub fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}

/// An error of the PostgreSQL side.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// The event store refused the append.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Writes one batch inside the caller's transaction; returns the events written (those
/// already stored by an earlier run are left out: re-runs write nothing).
///
/// # Errors
/// [`StoreFailure`].
#[allow(clippy::too_many_lines)]
pub async fn write_batch(conn: &mut PgConnection, batch: BatchWrite) -> Result<u64, StoreFailure> {
    let BatchWrite {
        mut appends,
        id_map,
        rejects,
        resolved,
        anomalies,
        deposits,
        checkpoint,
        references,
    } = batch;
    insert_references(conn, &references).await?;
    let ids: Vec<Uuid> = appends
        .iter()
        .flat_map(|a| a.events.iter().map(|e| e.event_id))
        .collect();
    let stored: HashSet<Uuid> = if ids.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT x.event_id FROM UNNEST($1::uuid[]) AS wanted(id) \
             CROSS JOIN LATERAL (SELECT event_id FROM events WHERE event_id = wanted.id) AS x",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    for a in &mut appends {
        a.events.retain(|e| !stored.contains(&e.event_id));
    }
    appends.retain(|a| !a.events.is_empty());
    let mut positions: HashMap<Uuid, i64> = HashMap::new();
    if !appends.is_empty() {
        for done in append(conn, &appends).await? {
            positions.insert(done.event_id, done.position);
        }
    }
    let written = u64::try_from(positions.len()).unwrap_or(0);

    if !id_map.is_empty() {
        sqlx::query(
            "INSERT INTO legacy_import.id_map \
               (collection, object_id, id, stream_id, stream_type, digest, purchase_request) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], \
                                  $6::text[], $7::text[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id_map.iter().map(|r| r.collection).collect::<Vec<_>>())
        .bind(
            id_map
                .iter()
                .map(|r| r.object_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(id_map.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(id_map.iter().map(|r| r.stream_id).collect::<Vec<_>>())
        .bind(id_map.iter().map(|r| r.stream_type).collect::<Vec<_>>())
        .bind(id_map.iter().map(|r| r.digest.clone()).collect::<Vec<_>>())
        .bind(
            id_map
                .iter()
                .map(|r| r.purchase_request.clone())
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    }
    let deposits: Vec<_> = deposits
        .into_iter()
        .filter_map(|d| positions.get(&d.event_id).map(|p| (d, *p)))
        .collect();
    if !deposits.is_empty() {
        sqlx::query(
            "INSERT INTO deposit_references (provider, reference, payment_id, position) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::int8[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(
            deposits
                .iter()
                .map(|(d, _)| d.provider.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            deposits
                .iter()
                .map(|(d, _)| d.reference.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            deposits
                .iter()
                .map(|(d, _)| d.payment_id)
                .collect::<Vec<_>>(),
        )
        .bind(deposits.iter().map(|(_, p)| *p).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    for r in &rejects {
        sqlx::query(
            "INSERT INTO legacy_import.rejects \
               (collection, object_id, code, field, reason, raw_ejson, raw_bson, purchase_request) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (collection, object_id) DO UPDATE SET code = EXCLUDED.code, \
               field = EXCLUDED.field, reason = EXCLUDED.reason, raw_ejson = EXCLUDED.raw_ejson, \
               raw_bson = EXCLUDED.raw_bson, purchase_request = EXCLUDED.purchase_request, \
               last_seen_at = now(), resolved_at = NULL",
        )
        .bind(r.collection)
        .bind(&r.object_id)
        .bind(&r.code)
        .bind(&r.field)
        .bind(&r.reason)
        .bind(&r.raw_ejson)
        .bind(&r.raw_bson)
        .bind(&r.purchase_request)
        .execute(&mut *conn)
        .await?;
    }
    if !resolved.is_empty() {
        sqlx::query(
            "UPDATE legacy_import.rejects r SET resolved_at = now() \
             FROM UNNEST($1::text[], $2::text[]) AS t(c, o) \
             WHERE r.collection = t.c AND r.object_id = t.o AND r.resolved_at IS NULL",
        )
        .bind(resolved.iter().map(|(c, _)| *c).collect::<Vec<_>>())
        .bind(resolved.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    insert_anomalies(conn, &anomalies).await?;
    if let Some((collection, last, documents)) = checkpoint {
        sqlx::query(
            "INSERT INTO legacy_import.checkpoints (collection, last_object_id, documents) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (collection) DO UPDATE SET last_object_id = EXCLUDED.last_object_id, \
               documents = legacy_import.checkpoints.documents + EXCLUDED.documents, \
               updated_at = now()",
        )
        .bind(collection)
        .bind(last)
        .bind(documents)
        .execute(&mut *conn)
        .await?;
    }
    Ok(written)
}

/// The accounts among `accounts` that have postings, with how many.
///
/// # Errors
/// A database error.
pub async fn postings_of_accounts(
    conn: &mut PgConnection,
    accounts: &[String],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT account, count(*) FROM postings WHERE account = ANY($1) GROUP BY account",
    )
    .bind(accounts)
    .fetch_all(conn)
    .await
}

/// Records entries with a reference (a retried reject that now imports is marked so).
///
/// # Errors
/// A database error.
async fn insert_references(
    conn: &mut PgConnection,
    rows: &[EntryReference],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO legacy_import.entry_references \
           (object_id, reference, kind, amount, created_at, imported) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], \
                              $5::timestamptz[], $6::bool[]) \
         ON CONFLICT (object_id) DO UPDATE \
           SET imported = legacy_import.entry_references.imported OR EXCLUDED.imported",
    )
    .bind(rows.iter().map(|r| r.object_id.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.reference.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.amount).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.imported).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The entries recorded by earlier batches whose reference is among `references`.
///
/// # Errors
/// A database error.
pub async fn entries_with_references(
    conn: &mut PgConnection,
    references: &[String],
) -> Result<Vec<EntryReference>, sqlx::Error> {
    if references.is_empty() {
        return Ok(Vec::new());
    }
    // One index probe per reference, whatever the statistics say: `reference = ANY($1)`
    // over a table never analyzed (a first import outruns autovacuum) was planned as a
    // scan of the whole table, 200 ms a batch at 300,000 entries.
    let rows: Vec<(String, String, String, Decimal, DateTime<Utc>, bool)> = sqlx::query_as(
        "SELECT e.object_id, e.reference, e.kind, e.amount, e.created_at, e.imported \
         FROM (SELECT DISTINCT r FROM UNNEST($1::text[]) AS r) AS wanted \
         CROSS JOIN LATERAL (SELECT * FROM legacy_import.entry_references x \
                             WHERE x.reference = wanted.r) AS e",
    )
    .bind(references)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(object_id, reference, kind, amount, created_at, imported)| EntryReference {
                object_id,
                reference,
                kind,
                amount,
                created_at,
                imported,
            },
        )
        .collect())
}

/// Inserts anomalies (each kind once per document).
///
/// # Errors
/// A database error.
pub async fn insert_anomalies(
    conn: &mut PgConnection,
    anomalies: &[AnomalyRow],
) -> Result<(), sqlx::Error> {
    if anomalies.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO legacy_import.anomalies (collection, object_id, kind, detail) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(anomalies.iter().map(|a| a.collection).collect::<Vec<_>>())
    .bind(
        anomalies
            .iter()
            .map(|a| a.object_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        anomalies
            .iter()
            .map(|a| a.anomaly.kind.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        anomalies
            .iter()
            .map(|a| a.anomaly.detail.clone())
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The terms of the imported payments among `ids`.
///
/// # Errors
/// A database error.
pub async fn payment_terms(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, PaymentCreated>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Json<Value>)> = sqlx::query_as(
        "SELECT e.stream_id, e.payload \
         FROM (SELECT DISTINCT s FROM UNNEST($1::uuid[]) AS s) AS wanted \
         CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.stream_id = wanted.s \
                             AND x.version = 1 AND x.event_type = 'PaymentImported') AS e",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, Json(p))| {
            serde_json::from_value::<PaymentImported>(p)
                .ok()
                .map(|e| (id, e.terms))
        })
        .collect())
}

/// The last `_id` imported from `collection`, and whether its pass finished.
///
/// # Errors
/// A database error.
pub async fn checkpoint(
    conn: &mut PgConnection,
    collection: &str,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    sqlx::query_as::<_, (String, bool)>(
        "SELECT last_object_id, completed_at IS NOT NULL FROM legacy_import.checkpoints \
         WHERE collection = $1",
    )
    .bind(collection)
    .fetch_optional(conn)
    .await
}

/// Marks a collection's pass finished.
///
/// # Errors
/// A database error.
pub async fn complete_collection(
    conn: &mut PgConnection,
    collection: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO legacy_import.checkpoints (collection, last_object_id, completed_at) \
         VALUES ($1, '', now()) \
         ON CONFLICT (collection) DO UPDATE SET completed_at = coalesce(legacy_import.checkpoints.completed_at, now())",
    )
    .bind(collection)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a domain's import has finished.
///
/// # Errors
/// A database error.
pub async fn domain_completed(conn: &mut PgConnection, domain: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT completed_at IS NOT NULL FROM legacy_import.domains WHERE domain = $1",
    )
    .bind(domain)
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}

/// Records that a domain's import started (once) or finished.
///
/// # Errors
/// A database error.
pub async fn mark_domain(
    conn: &mut PgConnection,
    domain: &str,
    done: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO legacy_import.domains (domain, completed_at) \
         VALUES ($1, CASE WHEN $2 THEN now() END) \
         ON CONFLICT (domain) DO UPDATE SET completed_at = \
           CASE WHEN $2 THEN coalesce(legacy_import.domains.completed_at, now()) \
                ELSE legacy_import.domains.completed_at END",
    )
    .bind(domain)
    .bind(done)
    .execute(conn)
    .await?;
    Ok(())
}

/// The open rejects of a collection: their `_id`s in hex.
///
/// # Errors
/// A database error.
pub async fn open_rejects(
    conn: &mut PgConnection,
    collection: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT object_id FROM legacy_import.rejects \
         WHERE collection = $1 AND resolved_at IS NULL ORDER BY object_id",
    )
    .bind(collection)
    .fetch_all(conn)
    .await
}

/// The legacy payments whose purchase request has this account key: the imported ones
/// (their UUIDs, at most two) and how many are open rejects.
///
/// # Errors
/// A database error.
pub async fn payments_of_purchase_request(
    conn: &mut PgConnection,
    key: &str,
) -> Result<(Vec<Uuid>, i64), sqlx::Error> {
    let imported: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM legacy_import.id_map WHERE collection = 'payments' AND purchase_request = $1 LIMIT 2",
    )
    .bind(key)
    .fetch_all(&mut *conn)
    .await?;
    let rejected: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM legacy_import.rejects WHERE collection = 'payments' \
         AND purchase_request = $1 AND resolved_at IS NULL",
    )
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok((imported, rejected))
}

/// The tables an import fills, analyzed as they grow: a first import outruns autovacuum,
/// and plans made for the empty tables (whole-table scans for batch lookups) would
/// otherwise stay.
pub const ANALYZED: [&str; 4] = [
    "events",
    "postings",
    "legacy_import.id_map",
    "legacy_import.entry_references",
];

/// Analyzes [`ANALYZED`] as the owner role, each table in a short transaction of its own:
/// a transaction that has written one table's statistics holds a transaction id, and the
/// feed's watermark waits for the oldest one, so one transaction over all four would hold
/// every live projector back while the others are sampled. Returns false, having changed
/// nothing, when the login may not act as the owner: the statistics are an optimization,
/// and autovacuum gathers them in time.
///
/// # Errors
/// A database error other than the missing right.
pub async fn analyze(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    for table in ANALYZED {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let role = sqlx::query(&format!("SET LOCAL ROLE {OWNER_ROLE}"))
            .execute(&mut *tx)
            .await;
        match role {
            Ok(_) => {}
            Err(e)
                if e.as_database_error()
                    .and_then(sqlx::error::DatabaseError::code)
                    .as_deref()
                    == Some("42501") =>
            {
                tx.rollback().await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(true)
}

/// Which of the two lists a report names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// The open rejects, by reason code.
    Rejects,
    /// The anomalies, by kind.
    Anomalies,
}

impl Listing {
    /// The list's rows as (key, collection, object id, detail) of the collections `$1`,
    /// in order of key, collection, `_id` and detail.
    fn sql(self) -> &'static str {
        match self {
            Listing::Rejects => {
                "SELECT code, collection, object_id, reason FROM legacy_import.rejects \
                 WHERE collection = ANY($1) AND resolved_at IS NULL ORDER BY 1, 2, 3, 4"
            }
            Listing::Anomalies => {
                "SELECT kind, collection, object_id, detail FROM legacy_import.anomalies \
                 WHERE collection = ANY($1) ORDER BY 1, 2, 3, 4"
            }
        }
    }
}

type ListedRow = (String, String, String, String);

fn listed_of((key, collection, object_id, detail): ListedRow) -> (String, Listed) {
    (
        key,
        Listed {
            collection,
            object_id,
            detail,
        },
    )
}

/// Every item of a list in `collections`, grouped by key (reason or kind), then by
/// collection and `_id`: streamed, never held all at once.
pub fn listed<'c>(
    conn: &'c mut PgConnection,
    listing: Listing,
    collections: &'c [&'c str],
) -> impl futures::Stream<Item = Result<(String, Listed), sqlx::Error>> + 'c {
    sqlx::query_as::<_, ListedRow>(listing.sql())
        .bind(collections)
        .fetch(conn)
        .map_ok(listed_of)
}

/// The count of every key of a list in `collections`, and its first `sample` items (in
/// the order of [`listed`]).
///
/// # Errors
/// The database failed.
pub async fn listed_sample(
    conn: &mut PgConnection,
    listing: Listing,
    collections: &[&str],
    sample: usize,
) -> Result<(BTreeMap<String, u64>, BTreeMap<String, Vec<Listed>>), sqlx::Error> {
    let base = listing.sql();
    let counted: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT l.k, count(*) FROM ({base}) AS l(k) GROUP BY 1"
    ))
    .bind(collections)
    .fetch_all(&mut *conn)
    .await?;
    let rows: Vec<ListedRow> = sqlx::query_as(&format!(
        "SELECT k, c, o, d FROM ( \
             SELECT l.*, row_number() OVER (PARTITION BY k ORDER BY c, o, d) AS n \
             FROM ({base}) AS l(k, c, o, d)) AS numbered \
         WHERE n <= $2 ORDER BY k, c, o, d"
    ))
    .bind(collections)
    .bind(i64::try_from(sample).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let counts = counted
        .into_iter()
        .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
        .collect();
    let mut lists: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for row in rows {
        let (key, item) = listed_of(row);
        lists.entry(key).or_default().push(item);
    }
    Ok((counts, lists))
}
