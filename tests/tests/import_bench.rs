//! `escrow-ledger bench import` at a small size, in CI: the real binary loads synthetic
//! legacy collections into the MongoDB-wire server (`TEST_MONGO_URI`, started by
//! `scripts/test.sh`), scans them, runs the real import as child processes with the live
//! projectors following, and prints every figure with its verdict. The test checks the run
//! completes with every document either imported or rejected and each figure printed; the
//! targets themselves are for the full size (README, Benchmarks), not for this one.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::legacy::mongo_uri;
use e2e::{binary, TestDb};
use mongodb::Client;
use uuid::Uuid;

#[tokio::test]
async fn bench_import_runs_end_to_end_and_prints_its_figures() {
    let db = TestDb::new().await;
    let mongo_db = format!("legacy_bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let started = Instant::now();
    let out = Command::new(binary())
        .args([
            "bench",
            "import",
            "--payments",
            "2000",
            "--batch-size",
            "250",
        ])
        .args(["--mongo-uri", &mongo_uri(), "--mongo-db", &mongo_db])
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run escrow-ledger bench import");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for line in [
        "payments             documents 2000 = read 2000 = imported 1999 + rejected 1: ok",
        "fundsledgerentries   documents 6000 = read 6000 = imported 6000 + rejected 0: ok",
        "disputes             documents 200 = read 200 = imported 200 + rejected 0: ok",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    // Every figure is printed with its verdict. The memory target must hold at this size
    // too. The ratio may miss (2 cores, see README), and so may the watermark lag here: it
    // is the cluster's (the feed waits for the oldest open transaction of any database),
    // and in a test run other tests' transactions share the cluster, so it measures them
    // as much as the import. `bench import` on a quiet cluster meets it (README).
    for (figure, must_meet) in [
        ("import time / plain scan", false),
        (
            "importer peak RSS (getrusage RUSAGE_CHILDREN ru_maxrss)",
            true,
        ),
        ("watermark lag, max of", false),
        ("watermark lag, p99", false),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(figure))
            .unwrap_or_else(|| panic!("no {figure:?} figure in\n{stdout}"));
        if must_meet {
            assert!(line.ends_with("target met"), "{line}\n{stdout}");
        } else {
            assert!(
                line.ends_with("target met") || line.ends_with("target missed"),
                "{line}"
            );
        }
    }
    // The generated history is consistent: the imported events hold together.
    let verify = Command::new(binary())
        .arg("verify")
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run escrow-ledger verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(took < Duration::from_mins(2), "took {took:?}");

    let client = Client::with_uri_str(mongo_uri()).await.expect("connect");
    client.database(&mongo_db).drop().await.expect("drop");
    db.drop_db().await;
}

/// A retried webhook whose two documents land in different batches is still flagged on
/// both: the later one finds the earlier in `legacy_import.entry_references`.
#[tokio::test]
async fn a_duplicate_across_batches_is_flagged_on_both_entries() {
    use bson::{RawBson, RawDocumentBuf};
    let db = TestDb::new().await;
    let mongo_db = format!("legacy_dup_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let client = Client::with_uri_str(mongo_uri()).await.expect("connect");
    let legacy = client.database(&mongo_db);
    let [deposit, fee, release] = importer::sample::entries(0);
    let first_id = deposit.get_object_id("_id").expect("_id");
    let created = deposit.get_datetime("createdAt").expect("createdAt");
    // The retry: a new _id two minutes later, every other field the same.
    let later = bson::DateTime::from_millis(created.timestamp_millis() + 120_000);
    let mut retry = RawDocumentBuf::new();
    for item in &deposit {
        let (k, v) = item.expect("field");
        match k {
            "_id" => retry.append(
                k,
                bson::oid::ObjectId::from_bytes({
                    let mut b = first_id.bytes();
                    b[11] = 0xff;
                    b[0..4].copy_from_slice(
                        &u32::try_from(later.timestamp_millis() / 1000)
                            .expect("secs")
                            .to_be_bytes(),
                    );
                    b
                }),
            ),
            "createdAt" => retry.append(k, RawBson::DateTime(later)),
            _ => retry.append(k, v.to_raw_bson()),
        }
    }
    legacy
        .collection::<RawDocumentBuf>("payments")
        .insert_many(vec![importer::sample::payment(0)])
        .await
        .expect("insert payment");
    legacy
        .collection::<RawDocumentBuf>("fundsledgerentries")
        .insert_many(vec![deposit, fee, release, retry])
        .await
        .expect("insert entries");
    let report_path = std::env::temp_dir().join(format!("dup-{}.json", Uuid::new_v4()));
    let out = Command::new(binary())
        .args([
            "import",
            "payments",
            "--batch-size",
            "1",
            "--mongo-uri",
            &mongo_uri(),
        ])
        .args(["--mongo-db", &mongo_db, "--report"])
        .arg(&report_path)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run escrow-ledger import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    let flagged = report["anomalies"]["duplicate_webhook"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(flagged, 2, "{:#}", report["anomalies"]);
    legacy.drop().await.expect("drop");
    db.drop_db().await;
}
