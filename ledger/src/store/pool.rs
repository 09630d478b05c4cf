//! Connecting as the service: every pooled connection acts as the service role, which can
//! only read and insert events, and cannot sit idle inside a transaction for long.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection, PgPool};

/// The role the service acts as (`SELECT, INSERT` on the store).
pub const SERVICE_ROLE: &str = "escrow_ledger_app";

/// The role that owns the tables (the migrations make it so): only it may truncate,
/// analyze or replace what the service only reads and writes.
pub const OWNER_ROLE: &str = "escrow_ledger_owner";

/// How to build the service's pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections open at once.
    pub max_connections: u32,
    /// How long a session may stay idle inside a transaction before PostgreSQL ends it;
    /// such a session holds back every feed reader.
    pub idle_in_transaction_timeout: Duration,
    /// How long to wait for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            idle_in_transaction_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Opens a pool whose connections `SET ROLE` to [`SERVICE_ROLE`] and cap idle transactions.
///
/// # Errors
/// The database is unreachable, or the role does not exist yet (run `migrate`).
pub async fn connect(
    options: PgConnectOptions,
    settings: &PoolSettings,
) -> Result<PgPool, sqlx::Error> {
    // One connection first, outside the pool: a role missing (a server never migrated)
    // is then its own error at once, where the pool would retry it until its acquire
    // timeout and answer "pool timed out".
    let mut probe = connect_once(&options).await?;
    probe
        .execute(format!("SET ROLE {SERVICE_ROLE}").as_str())
        .await?;
    probe.close().await?;
    let idle_ms = settings.idle_in_transaction_timeout.as_millis();
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                let sql = format!(
                    "SET ROLE {SERVICE_ROLE}; SET idle_in_transaction_session_timeout = {idle_ms}"
                );
                conn.execute(sql.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await
}

/// The longest a first connection may take: a server that accepts the TCP connection and
/// never answers (a hung host, a wrong port taken by another program) would otherwise
/// hold a starting process silent for good.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// One connection, or an error once [`CONNECT_LIMIT`] has passed without an answer.
///
/// # Errors
/// The database is unreachable, refuses us, or does not answer in time.
pub async fn connect_once(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    match tokio::time::timeout(CONNECT_LIMIT, PgConnection::connect_with(options)).await {
        Ok(conn) => conn,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the database did not answer within {} s",
                CONNECT_LIMIT.as_secs()
            ),
        ))),
    }
}
