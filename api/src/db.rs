//! Where the database is: `DATABASE_URL`, or the private cluster; and the migrations.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// The SQL migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Resolves the database to use: the given URL, or a private cluster brought up now.
///
/// # Errors
/// A malformed URL, or a private cluster that cannot be brought up (with the reason).
pub async fn resolve(
    database_url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<PgConnectOptions> {
    let url = match database_url {
        Some(url) if !url.is_empty() => url.to_owned(),
        _ => {
            let cluster = crate::cluster::ensure_running(data_dir).await?;
            cluster.url
        }
    };
    Ok(PgConnectOptions::from_str(&url)?)
}

/// Applies the migrations (idempotent) as the connecting user.
///
/// # Errors
/// The database is unreachable or a migration fails.
pub async fn migrate(options: &PgConnectOptions) -> anyhow::Result<Vec<i64>> {
    let mut conn = PgConnection::connect_with(options).await?;
    let before: Vec<i64> = applied(&mut conn).await.unwrap_or_default();
    MIGRATOR.run(&mut conn).await?;
    let after = applied(&mut conn).await?;
    conn.close().await?;
    Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
}

async fn applied(conn: &mut PgConnection) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await
}
