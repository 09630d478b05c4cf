//! The PostgreSQL side of the import: one batch written in one short transaction (its
//! events, id map rows, deposit references, rejects, anomalies and checkpoint together),
//! and the lookups the translation needs (imported payments' terms, event ids already
//! stored). Functions take the caller's connection; only the run begins and commits.

use std::collections::{HashMap, HashSet};

use ledger::store::{append, StoreError};
use sqlx::PgConnection;
use uuid::Uuid;

mod listing;
mod lookups;
mod rows;
mod state;

pub use listing::{listed, listed_sample, Listing};
pub use lookups::{
    entries_in_suspense, entries_with_references, open_rejects, payment_streams, payment_terms,
    payments_of_purchase_request, postings_of_accounts,
};
pub use rows::{AnomalyRow, BatchWrite, DepositRef, EntryReference, IdMapRow, RejectRow};
pub use state::{
    analyze, checkpoint, complete_collection, domain_completed, lock_imports, mark_domain, ANALYZED,
};

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
    insert_anomalies(conn, &anomalies, true).await?;
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

/// Inserts anomalies (each kind once per document). A document already listed under the
/// kind keeps its row: with `merge`, a detail it does not hold yet is added to it (a
/// webhook retried twice, its copies found by two later batches, names both); without,
/// the first detail stands (the end-of-run checks, which word the same finding again).
///
/// # Errors
/// A database error.
pub async fn insert_anomalies(
    conn: &mut PgConnection,
    anomalies: &[AnomalyRow],
    merge: bool,
) -> Result<(), sqlx::Error> {
    if anomalies.is_empty() {
        return Ok(());
    }
    let on_conflict = if merge {
        // `strpos`: a run resumed after a batch committed adds nothing twice.
        "ON CONFLICT (collection, object_id, kind) DO UPDATE \
           SET detail = a.detail || '; ' || EXCLUDED.detail \
           WHERE strpos(a.detail, EXCLUDED.detail) = 0"
    } else {
        "ON CONFLICT DO NOTHING"
    };
    sqlx::query(&format!(
        "INSERT INTO legacy_import.anomalies AS a (collection, object_id, kind, detail) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) {on_conflict}"
    ))
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
