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
    // Set but empty is a mistake (a deploy template's blank), not "unset": it would
    // otherwise migrate a throwaway private cluster and report success.
    let empty = || {
        anyhow::anyhow!(
            "DATABASE_URL (or --database-url) is set but empty: give the database's URL, or \
             unset it to use the private cluster"
        )
    };
    let url = match database_url {
        Some("") => return Err(empty()),
        Some(url) => url.to_owned(),
        None if std::env::var_os("DATABASE_URL").is_some_and(|v| v.is_empty()) => {
            return Err(empty())
        }
        None => crate::cluster::ensure_running(data_dir).await?.url,
    };
    // The parser's own words ("relative URL without a base") do not say which setting.
    PgConnectOptions::from_str(&url).map_err(|e| {
        let reason = match e {
            sqlx::Error::Configuration(inner) => inner.to_string(),
            other => other.to_string(),
        };
        anyhow::anyhow!(
            "DATABASE_URL (or --database-url) is not a usable PostgreSQL URL \
             (postgres://user@host:port/database?options): {reason}"
        )
    })
}

/// Applies the migrations (idempotent) as the connecting user.
///
/// # Errors
/// The database is unreachable or a migration fails.
pub async fn migrate(options: &PgConnectOptions) -> anyhow::Result<Vec<i64>> {
    let mut conn = ledger::store::connect_once(options).await?;
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
