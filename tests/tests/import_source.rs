//! The legacy source failing under a running import: the MongoDB-wire server stopped in
//! the middle of the entries pass. The import must stop with a MongoDB error (not hang,
//! not report success), keep what it committed, and, once the source is back, resume to
//! exactly the events of an uninterrupted run.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::legacy::{event_rows, import, legacy_db, mongo_uri, ok, wait_for_checkpoint};
use e2e::{binary, TestDb};
use importer::mongo::Legacy;
use importer::sample::{self, Sizes};

/// The MongoDB-wire server's program: `TEST_SECANTUSD` (scripts/test.sh sets it), else the
/// project's `.venv`.
fn secantusd() -> PathBuf {
    std::env::var_os("TEST_SECANTUSD").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/secantusd-py"),
        PathBuf::from,
    )
}

/// A MongoDB-wire server of this test's own, in memory, stopped when dropped.
struct PrivateMongo {
    child: Child,
    port: u16,
}

impl PrivateMongo {
    fn start(port: u16) -> PrivateMongo {
        let program = secantusd();
        let child = Command::new(&program)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run through scripts/test.sh, or set TEST_SECANTUSD",
                    program.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "secantusd-py did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateMongo { child, port }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

const PAYMENTS: u64 = 2_000;

async fn load(uri: &str, db: &str) {
    let legacy = Legacy::connect(uri, db).await.expect("connect");
    sample::load(&legacy, Sizes::for_payments(PAYMENTS), 1_000)
        .await
        .expect("load the legacy documents");
}

#[tokio::test]
async fn the_source_stopping_mid_pass_fails_the_run_and_a_resume_matches_an_uninterrupted_one() {
    // The reference: the same documents, imported without trouble.
    let (shared, name) = legacy_db("source").await;
    load(&mongo_uri(), &name).await;
    let whole = TestDb::new().await;
    ok(&import(&whole, &name, &["payments", "--batch-size", "20"]));

    let port = free_port();
    let mut source = PrivateMongo::start(port);
    load(&source.uri(), "legacy").await;
    let cut = TestDb::new().await;
    let run = |uri: &str| {
        Command::new(binary())
            .args([
                "import",
                "payments",
                "--batch-size",
                "20",
                "--no-progress-bar",
            ])
            .args(["--mongo-uri", uri, "--mongo-db", "legacy"])
            .env("DATABASE_URL", &cut.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn import")
    };
    let mut child = run(&source.uri());
    wait_for_checkpoint(&cut, "fundsledgerentries", 200, Duration::from_mins(1)).await;
    source.stop();
    let stopped = Instant::now();

    // The run stops, with a MongoDB error, well before a minute.
    let deadline = stopped + Duration::from_mins(1);
    while child.try_wait().expect("poll the import").is_none() {
        assert!(
            Instant::now() < deadline,
            "the import hangs on a stopped source"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the import stopped {:?} after its source",
        stopped.elapsed()
    );
    let out = child.wait_with_output().expect("import output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a run whose source stopped must fail\n{stderr}"
    );
    assert!(stderr.contains("MongoDB"), "{stderr}");
    let (documents, finished): (i64, bool) = sqlx::query_as(
        "SELECT documents, completed_at IS NOT NULL FROM legacy_import.checkpoints \
         WHERE collection = 'fundsledgerentries'",
    )
    .fetch_one(&cut.admin)
    .await
    .expect("checkpoint");
    assert!(!finished, "the entries pass did not finish");
    assert!(
        (200..i64::try_from(PAYMENTS * 3).expect("n")).contains(&documents),
        "committed batches stay: {documents}"
    );

    // The source back (the same documents), the same command resumes.
    let source = PrivateMongo::start(port);
    load(&source.uri(), "legacy").await;
    let again = run(&source.uri()).wait_with_output().expect("resume");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(event_rows(&cut).await, event_rows(&whole).await);

    drop(source);
    shared.drop().await.expect("drop");
    whole.drop_db().await;
    cut.drop_db().await;
}
