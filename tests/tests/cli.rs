//! The binary's command line: `migrate` is idempotent, `token` prints a token and its
//! tokens-file line (the hash only), and with `DATABASE_URL` unset the binary runs a
//! private cluster of its own.

use e2e::{run_binary, TestDb};
use sha2::Digest;

#[tokio::test]
async fn migrate_twice_changes_nothing() {
    let db = TestDb::new().await;
    let out = run_binary(&["migrate"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "migrations: up to date"
    );
    db.drop_db().await;
}

/// A `DATABASE_URL` set but empty (a deploy template's blank) is refused, not taken for
/// unset: that would migrate a throwaway private cluster and report success.
#[test]
fn an_empty_database_url_is_refused_not_taken_for_unset() {
    let out = run_binary(&["migrate"], &[("DATABASE_URL", "")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set but empty"), "{err}");
    // A malformed one names the setting, not only the URL parser's words.
    let out = run_binary(&["migrate"], &[("DATABASE_URL", "notaurl")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DATABASE_URL") && err.contains("not a usable"),
        "{err}"
    );
}

#[test]
fn token_prints_a_token_and_only_its_hash_for_the_file() {
    let out = run_binary(&["token", "--role", "finance", "--name", "month-end"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .trim();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("tokens file line: "))
        .unwrap()
        .trim();
    let hash = hex_lower(&sha2::Sha256::digest(token.as_bytes()));
    assert_eq!(line, format!("finance month-end {hash}"));
    assert!(!line.contains(token));
    let bad = run_binary(&["token", "--role", "root", "--name", "x"], &[]);
    assert!(!bad.status.success());
}

/// `--tokens-file` appends the line (the file created for its owner alone) and prints the
/// token only; a token that would make the file one `serve` refuses adds nothing.
#[test]
fn token_appends_to_a_tokens_file_and_keeps_it_valid() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("el-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    let _ = std::fs::remove_file(&file);
    let f = file.to_str().unwrap();
    let mint = |role: &str, name: &str| {
        run_binary(
            &["token", "--role", role, "--name", name, "--tokens-file", f],
            &[],
        )
    };
    let first = mint("coordinator", "checkout");
    assert!(first.status.success(), "{first:?}");
    let out = String::from_utf8_lossy(&first.stdout);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(!out.contains("tokens file line"), "{out}");
    assert!(mint("admin", "ops").status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    let hash = hex_lower(&sha2::Sha256::digest(token.as_bytes()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], format!("coordinator checkout {hash}"));
    assert!(lines[1].starts_with("admin ops "), "{text}");
    assert!(!text.contains(&token));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let clash = mint("admin", "checkout");
    assert_eq!(clash.status.code(), Some(1));
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        err.contains("nothing added") && err.contains("one name, one role"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A database address that takes the connection and never answers (a hung host) stops
/// `migrate` with a clear error after the connect limit, not silence for good (review
/// helper-37).
#[test]
fn a_database_that_never_answers_is_an_error_not_a_hang() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "postgres://postgres@{}/escrow",
        silent.local_addr().unwrap()
    );
    let started = std::time::Instant::now();
    let out = run_binary(&["migrate"], &[("DATABASE_URL", url.as_str())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer within 10 s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    drop(silent);
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn without_database_url_the_binary_runs_a_private_cluster() {
    let dir = std::path::PathBuf::from(format!(
        "/var/tmp/el-cli-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let data = dir.to_string_lossy().into_owned();
    let env = [("ESCROW_LEDGER_DATA_DIR", data.as_str())];
    let mut cmd = std::process::Command::new(e2e::binary());
    cmd.arg("migrate").env_remove("DATABASE_URL").envs(env);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("private PostgreSQL cluster"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("migrations: applied"));
    // The second command finds it running and migrated.
    let mut cmd = std::process::Command::new(e2e::binary());
    cmd.arg("verify").env_remove("DATABASE_URL").envs(env);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("verified 0 events"));
    stop_cluster(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

fn stop_cluster(dir: &std::path::Path) {
    let pg_ctl = ["/usr/local/bin/pg_ctl"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .chain(
            std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin/pg_ctl")),
        )
        .find(|p| p.exists())
        .expect("pg_ctl");
    let status = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_ctl)
        .args(["-D"])
        .arg(dir)
        .args(["-m", "fast", "-w", "stop"])
        .current_dir("/")
        .status()
        .unwrap();
    assert!(status.success());
}

/// The quick start on a fresh database, with `--no-serve`: a day of 300 payments played
/// over HTTP, the trial balance and the reconciliation report printed, and no tokens or
/// URLs of a server that is gone when it exits.
#[tokio::test]
async fn demo_plays_a_day_and_prints_what_to_look_at() {
    let db = TestDb::new().await;
    let out = run_binary(
        &["demo", "--no-serve", "--bind", "127.0.0.1:0"],
        &[("DATABASE_URL", db.url.as_str())],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "TRIAL BALANCE",
        "balanced: true",
        "RECONCILIATION",
        "playing through http://127.0.0.1:",
        "finance.reconciliation_buckets",
    ] {
        assert!(stdout.contains(part), "no {part:?} in:\n{stdout}");
    }
    // Nothing serves once it has printed: no tokens or curl lines that cannot work.
    for part in ["EXPLORE", "Bearer", "serving on"] {
        assert!(!stdout.contains(part), "{part:?} in:\n{stdout}");
    }
    let scalar = |sql: &'static str| {
        let admin = db.admin.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&admin)
                .await
                .unwrap()
        }
    };
    assert_eq!(scalar("SELECT count(*) FROM finance.payments").await, 300);
    assert_eq!(
        scalar("SELECT count(*) FROM finance.trial_balance WHERE total <> 0").await,
        0
    );
    assert!(scalar("SELECT count(*) FROM finance.trial_balance").await > 0);
    assert!(
        scalar(
            "SELECT count(*) FROM events WHERE event_type = 'DisputeResolved' \
             AND payload->>'outcome' = 'split'"
        )
        .await
            > 0
    );
    assert!(scalar("SELECT count(*) FROM finance.dispute_evidence").await > 0);
    db.drop_db().await;
}
