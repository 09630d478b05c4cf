//! The lookups the translation needs: imported payments' terms, earlier entries with a
//! reference, escrow accounts holding postings, open rejects.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger::payment::PaymentCreated;
use rust_decimal::Decimal;
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::EntryReference;

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

/// The entries committed by earlier batches whose reference is among `references` (the
/// batch a live run is still committing is the caller's to add).
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
    // Only the terms leave the server, decoded straight into their type: the whole
    // payload (the legacy document with it) decoded into a JSON tree was a fifth of the
    // importer's own CPU in the entries pass.
    let rows: Vec<(Uuid, Json<PaymentCreated>)> = sqlx::query_as(
        "SELECT e.stream_id, e.payload -> 'terms' \
         FROM (SELECT DISTINCT s FROM UNNEST($1::uuid[]) AS s) AS wanted \
         CROSS JOIN LATERAL (SELECT * FROM events x WHERE x.stream_id = wanted.s \
                             AND x.version = 1 AND x.event_type = 'PaymentImported') AS e",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id, Json(t))| (id, t)).collect())
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

/// Per payment among `payments`, how many legacy ledger entries were imported on streams
/// of their own (into suspense: the payment was rejected or missing then).
///
/// # Errors
/// A database error.
pub async fn entries_in_suspense(
    conn: &mut PgConnection,
    payments: &[Uuid],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let ids: Vec<String> = payments.iter().map(Uuid::to_string).collect();
    // No index serves the payload: a retry of rejects is rare, and reads the entries once
    // per batch of retried payments.
    sqlx::query_as(
        "SELECT (payload ->> 'payment_id')::uuid, count(*) FROM events \
         WHERE stream_type = $1 AND payload ->> 'payment_id' = ANY($2) GROUP BY 1",
    )
    .bind(ledger::payment::ENTRY_STREAM_TYPE)
    .bind(&ids)
    .fetch_all(conn)
    .await
}

/// The stream version of each payment among `payments` that has a stream, and whether
/// that stream holds an event that is not an import event (a dispute's freeze, a live
/// command): then its imported history is closed.
///
/// # Errors
/// A database error.
pub async fn payment_streams(
    conn: &mut PgConnection,
    payments: &[Uuid],
) -> Result<Vec<(Uuid, i64, bool)>, sqlx::Error> {
    if payments.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT wanted.s, h.version, EXISTS (SELECT 1 FROM events x WHERE x.stream_id = wanted.s \
                 AND x.event_type NOT IN ('PaymentImported', 'LedgerEntryImported')) \
         FROM (SELECT DISTINCT s FROM UNNEST($1::uuid[]) AS s) AS wanted \
         CROSS JOIN LATERAL (SELECT version FROM events e WHERE e.stream_id = wanted.s \
                             ORDER BY version DESC LIMIT 1) AS h",
    )
    .bind(payments)
    .fetch_all(conn)
    .await
}
