//! The idle side's secondary indexes, set aside while a rebuild fills it and built once at
//! the end. Filling rewrites a payment's row in every batch its events fall in, and each
//! write went through every index of the table; building an index once over the finished
//! table is a sort. Only non-unique indexes that back no constraint are set aside: the
//! primary keys and unique indexes stay, since the fill looks rows up and upserts by them.
//! Nobody reads the idle side (the views point at the live one), so its plans lose nothing.
//!
//! The definitions are taken from the idle side before dropping and, for any it lacks
//! (a rebuild killed between the drop and the build), from the live side with the side's
//! letter swapped: both sides are made by the same migrations, with names
//! `<table>_<side>_<what>`.

use sqlx::PgPool;

use crate::state::Side;
use crate::Projection;

/// A secondary index of a table of the idle side: its name and `CREATE INDEX` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SecondaryIndex {
    name: String,
    definition: String,
}

/// The secondary indexes `side`'s tables of `projection` should have.
async fn wanted(
    pool: &PgPool,
    projection: Projection,
    side: Side,
) -> Result<Vec<SecondaryIndex>, sqlx::Error> {
    let mut out: Vec<SecondaryIndex> = Vec::new();
    for base in projection.tables() {
        let ours = Projection::table(base, side);
        let theirs = Projection::table(base, side.other());
        for (table, rename) in [(&ours, false), (&theirs, true)] {
            let bare = table.trim_start_matches("projection.");
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT ic.relname::text, pg_get_indexdef(ic.oid) \
                 FROM pg_index x \
                 JOIN pg_class ic ON ic.oid = x.indexrelid \
                 JOIN pg_class t ON t.oid = x.indrelid \
                 WHERE t.relnamespace = 'projection'::regnamespace AND t.relname = $1 \
                   AND NOT x.indisunique \
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ic.oid) \
                 ORDER BY 1",
            )
            .bind(bare)
            .fetch_all(pool)
            .await?;
            let (from, to) = (
                theirs.trim_start_matches("projection."),
                ours.trim_start_matches("projection."),
            );
            for (name, definition) in rows {
                let (name, definition) = if rename {
                    (name.replace(from, to), definition.replace(from, to))
                } else {
                    (name, definition)
                };
                if !out.iter().any(|i| i.name == name) {
                    out.push(SecondaryIndex { name, definition });
                }
            }
        }
    }
    Ok(out)
}

/// Drops the secondary indexes of `side`'s tables of `projection` (which must be idle)
/// and returns what to build again with [`build`].
///
/// # Errors
/// A database error.
pub(super) async fn set_aside(
    pool: &PgPool,
    projection: Projection,
    side: Side,
) -> Result<Vec<SecondaryIndex>, sqlx::Error> {
    let indexes = wanted(pool, projection, side).await?;
    for i in &indexes {
        sqlx::query(&format!("DROP INDEX IF EXISTS projection.{}", i.name))
            .execute(pool)
            .await?;
    }
    Ok(indexes)
}

/// Builds the indexes [`set_aside`] dropped, `CONCURRENTLY`: a plain `CREATE INDEX` holds
/// a transaction id for the whole build (a second and more over the balance history), and
/// the feed's watermark is the oldest running transaction, so every live projector would
/// wait for it. Two tables at a time (one a core); a table's indexes one after the other,
/// as two concurrent builds on one table deadlock. An index a failed build left invalid is
/// built again.
///
/// # Errors
/// A database error.
pub(super) async fn build(pool: &PgPool, indexes: &[SecondaryIndex]) -> Result<(), sqlx::Error> {
    let mut by_table: Vec<Vec<SecondaryIndex>> = Vec::new();
    for i in indexes {
        match by_table.iter_mut().find(|g| g[0].table() == i.table()) {
            Some(group) => group.push(i.clone()),
            None => by_table.push(vec![i.clone()]),
        }
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(by_table));
    let mut lanes: tokio::task::JoinSet<Result<(), sqlx::Error>> = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let (pool, queue) = (pool.clone(), queue.clone());
        lanes.spawn(async move {
            loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(group) = next else { return Ok(()) };
                for i in &group {
                    build_one(&pool, i).await?;
                }
            }
        });
    }
    while let Some(done) = lanes.join_next().await {
        done.map_err(|e| sqlx::Error::Protocol(format!("an index build task failed: {e}")))??;
    }
    Ok(())
}

impl SecondaryIndex {
    /// The table it indexes, as its definition names it (`... ON projection.t USING ...`).
    fn table(&self) -> &str {
        self.definition
            .split(" ON ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("")
    }
}

async fn build_one(pool: &PgPool, i: &SecondaryIndex) -> Result<(), sqlx::Error> {
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT x.indisvalid FROM pg_class c JOIN pg_index x ON x.indexrelid = c.oid \
         WHERE c.relnamespace = 'projection'::regnamespace AND c.relname = $1",
    )
    .bind(&i.name)
    .fetch_optional(pool)
    .await?;
    match valid {
        Some(true) => return Ok(()),
        Some(false) => {
            sqlx::query(&format!("DROP INDEX projection.{}", i.name))
                .execute(pool)
                .await?;
        }
        None => {}
    }
    let concurrently = i
        .definition
        .replacen("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1);
    sqlx::query(&concurrently).execute(pool).await?;
    Ok(())
}
