//! The legacy side of the importer's tests: the MongoDB-wire server `scripts/test.sh`
//! starts (`TEST_MONGO_URI`), a fresh legacy database per test, and the real binary's
//! `import` subcommands run against it.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bson::RawDocumentBuf;
use chrono::{DateTime, Utc};
use mongodb::{Client, Database};
use serde_json::Value;
use uuid::Uuid;

use crate::{binary, TestDb};

/// The MongoDB-wire server's URI.
///
/// # Panics
/// When `TEST_MONGO_URI` is unset (saying how to get a server).
pub fn mongo_uri() -> String {
    std::env::var("TEST_MONGO_URI").unwrap_or_else(|_| {
        panic!(
            "TEST_MONGO_URI is not set: the importer's tests need the MongoDB-wire server. \
             Run them through scripts/test.sh (which starts secantusd-py), or set \
             TEST_MONGO_URI=mongodb://host:port"
        )
    })
}

/// A fresh, empty legacy database of its own for one test: the handle and its name.
///
/// # Panics
/// When the server cannot be reached.
pub async fn legacy_db(tag: &str) -> (Database, String) {
    let client = Client::with_uri_str(mongo_uri())
        .await
        .expect("connect to MongoDB");
    let name = format!("legacy_{tag}_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let db = client.database(&name);
    db.drop().await.expect("drop legacy db");
    (db, name)
}

/// Inserts documents as they are (raw BSON, exact types), a thousand at a time.
///
/// # Panics
/// When the server refuses them.
pub async fn insert(db: &Database, collection: &str, docs: Vec<RawDocumentBuf>) {
    for chunk in docs.chunks(1000) {
        db.collection::<RawDocumentBuf>(collection)
            .insert_many(chunk.to_vec())
            .await
            .expect("insert legacy documents");
    }
}

/// `d` without the field `key` (a legacy document missing one).
///
/// # Panics
/// When `d` does not parse.
pub fn without(d: &RawDocumentBuf, key: &str) -> RawDocumentBuf {
    let mut out = RawDocumentBuf::new();
    for item in d {
        let (k, v) = item.expect("field");
        if k != key {
            out.append(k, v.to_raw_bson());
        }
    }
    out
}

/// Runs `escrow-ledger import <args> --mongo-uri … --mongo-db <mongo_db>` on `db`.
///
/// # Panics
/// When the binary cannot be started.
pub fn import(db: &TestDb, mongo_db: &str, args: &[&str]) -> Output {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    let uri = mongo_uri();
    all.extend_from_slice(&["--mongo-uri", &uri, "--mongo-db", mongo_db]);
    Command::new(binary())
        .args(&all)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run escrow-ledger import")
}

/// The standard output of a run that must have succeeded.
///
/// # Panics
/// When it did not, with both outputs.
pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Starts `escrow-ledger import <args>` on `db` in the background (stderr discarded), for
/// a test that kills it or writes to MongoDB while it runs.
///
/// # Panics
/// When the binary cannot be started.
pub fn spawn_import(db: &TestDb, args: &[&str], stdout: Stdio) -> Child {
    Command::new(binary())
        .arg("import")
        .args(args)
        .env("DATABASE_URL", &db.url)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn import")
}

/// Waits until `collection`'s import checkpoint counts at least `documents`, or `within`
/// has passed (the caller then finds the run finished, or not started, and says so).
///
/// # Panics
/// When the checkpoint cannot be read.
pub async fn wait_for_checkpoint(db: &TestDb, collection: &str, documents: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let done: Option<i64> = sqlx::query_scalar(
            "SELECT documents FROM legacy_import.checkpoints WHERE collection = $1",
        )
        .bind(collection)
        .fetch_optional(&db.admin)
        .await
        .expect("checkpoint");
        if done.unwrap_or(0) >= documents || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `collection`'s checkpoint counts `documents` (within `within`), then
/// kills `child` with SIGKILL (no chance to finish the batch in hand or to clean up),
/// asserting it was still running: a kill that came too late proves nothing.
///
/// # Panics
/// When the import had already ended, or cannot be killed.
pub async fn kill_at_checkpoint(
    db: &TestDb,
    child: &mut Child,
    collection: &str,
    documents: i64,
    within: Duration,
) {
    wait_for_checkpoint(db, collection, documents, within).await;
    let still_running = child.try_wait().expect("wait").is_none();
    child.kill().expect("kill");
    let _ = child.wait();
    assert!(
        still_running,
        "the import finished before it could be killed"
    );
}

/// An event as two imports of the same documents must agree on it: id, stream, version,
/// type, payload, `occurred_at`, and its postings as `[[account, amount], ...]`.
pub type EventRow = (Uuid, Uuid, i64, String, Value, DateTime<Utc>, Value);

/// Every event of `db` with its postings, in event id order.
///
/// # Panics
/// When the store cannot be read.
pub async fn event_rows(db: &TestDb) -> Vec<EventRow> {
    sqlx::query_as(
        "SELECT e.event_id, e.stream_id, e.version, e.event_type, e.payload, e.occurred_at, \
           (SELECT coalesce(jsonb_agg(jsonb_build_array(p.account, p.amount::text) ORDER BY p.leg), '[]') \
              FROM postings p WHERE p.position = e.position) \
         FROM events e ORDER BY e.event_id",
    )
    .fetch_all(&db.admin)
    .await
    .expect("events")
}
