//! Where the import stands across runs: the checkpoint of each collection, the domains
//! finished, and the statistics of the tables it fills.

use ledger::store::OWNER_ROLE;
use sqlx::PgConnection;

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

/// Takes the database's import lock: one import (of any domain, dry runs included) at a
/// time, as a second one would read the first one's half-written batches and fail on
/// them. The lock is the returned connection's, taken out of the pool: it is released
/// when that connection is dropped, the run ended or killed. Asked for a few seconds (a
/// killed run's session takes a moment to end); `None`: another run holds it.
///
/// # Errors
/// A database error.
pub async fn lock_imports(pool: &sqlx::PgPool) -> Result<Option<sqlx::PgConnection>, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    for _ in 0..50 {
        let locked: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('escrow-ledger import', 0))",
        )
        .fetch_one(&mut conn)
        .await?;
        if locked {
            return Ok(Some(conn));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(None)
}
