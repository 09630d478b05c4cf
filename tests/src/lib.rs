//! The end-to-end test harness: a fresh PostgreSQL database per test (migrated by the real
//! binary), the binary's path, and helpers to run it. Tests talk to a real PostgreSQL.

pub mod legacy;
pub mod server;

use std::path::PathBuf;
use std::process::Output;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Executor, PgPool};
use uuid::Uuid;

/// The server every test database is created on: `TEST_DATABASE_URL`, else the local one.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The `escrow-ledger` binary built beside the test executables.
///
/// # Panics
/// If it cannot be found (build it with `cargo build --bin escrow-ledger`).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("ESCROW_LEDGER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("escrow-ledger");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --bin escrow-ledger`",
        bin.display()
    );
    bin
}

/// A database of its own for one test, migrated; dropped by [`TestDb::drop_db`].
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Its URL, as the connecting (super)user.
    pub url: String,
    /// A pool as the connecting user (the owner's powers: for setting up faults).
    pub admin: PgPool,
}

impl TestDb {
    /// Creates and migrates a fresh database.
    ///
    /// # Panics
    /// When PostgreSQL cannot be reached or migration fails: the test cannot run.
    pub async fn new() -> TestDb {
        let admin_url = admin_url();
        let template = template_database(&admin_url).await;
        let server = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        let name = format!("el_test_{}", Uuid::new_v4().simple());
        server
            .execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str())
            .await
            .expect("create test database");
        server.close().await;
        let options = PgConnectOptions::from_str(&admin_url)
            .expect("admin url")
            .database(&name);
        let url = url_with_database(&admin_url, &name);
        let admin = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("connect to test database");
        TestDb { name, url, admin }
    }

    /// A pool that acts as the service role, like the server's.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn service_pool(&self, max: u32) -> PgPool {
        let options = PgConnectOptions::from_str(&self.url).expect("url");
        ledger::store::connect(
            options,
            &ledger::store::PoolSettings {
                max_connections: max,
                ..Default::default()
            },
        )
        .await
        .expect("service pool")
    }

    /// Drops the database (best effort).
    pub async fn drop_db(self) {
        self.admin.close().await;
        if let Ok(server) = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin_url())
            .await
        {
            let _ = server
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

/// A database migrated once by the real binary, named after the migrations' content, that
/// every test database is copied from. Roles are cluster-wide, so migrating many databases
/// at once would race on them; the template is built under a lock held on the server's
/// maintenance database, which every test process shares.
async fn template_database(admin_url: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in &files {
        std::hash::Hash::hash(&std::fs::read(f).expect("read migration"), &mut hasher);
    }
    let name = format!("el_tpl_{:016x}", std::hash::Hasher::finish(&hasher));
    let server = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    let mut conn = server.acquire().await.expect("connection");
    conn.execute("SELECT pg_advisory_lock(7240001)")
        .await
        .expect("lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut *conn)
            .await
            .expect("look up template");
    if !exists {
        let building = format!("{name}_building");
        conn.execute(format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)").as_str())
            .await
            .expect("drop half-built template");
        conn.execute(format!("CREATE DATABASE {building}").as_str())
            .await
            .expect("create template");
        let url = url_with_database(admin_url, &building);
        let out = run_binary(&["migrate"], &[("DATABASE_URL", url.as_str())]);
        assert!(
            out.status.success(),
            "migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        conn.execute(format!("ALTER DATABASE {building} RENAME TO {name}").as_str())
            .await
            .expect("rename template");
    }
    conn.execute("SELECT pg_advisory_unlock(7240001)")
        .await
        .expect("unlock");
    drop(conn);
    server.close().await;
    name
}

/// `url` with its database replaced by `name`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = base.rsplit_once('/').map_or(base, |(p, _)| p);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Runs `escrow-ledger verify` on the test database and asserts it passes (hash chains,
/// balanced postings, ...), showing its report when it does not.
///
/// # Panics
/// When verify finds a fault or cannot be run.
pub fn assert_verifies(db: &TestDb) {
    let out = run_binary(&["verify"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(
        out.status.success(),
        "verify failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs the binary to completion with extra environment.
///
/// # Panics
/// When it cannot be started.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(binary());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run escrow-ledger")
}
