//! The legacy side of the importer's tests: the MongoDB-wire server `scripts/test.sh`
//! starts (`TEST_MONGO_URI`), a fresh legacy database per test, and the real binary's
//! `import` subcommands run against it.

use std::process::{Command, Output};

use bson::RawDocumentBuf;
use mongodb::{Client, Database};
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
