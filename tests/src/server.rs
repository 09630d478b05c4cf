//! A real `escrow-ledger serve` process on a free port, with a tokens file holding one
//! token per role, and a small HTTP client for it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::{binary, TestDb};

/// The tokens the test server knows.
#[derive(Debug, Clone)]
pub struct TestTokens {
    /// Role coordinator, name `checkout`.
    pub coordinator: String,
    /// Role admin, name `ops-admin`.
    pub admin: String,
    /// Role finance, name `finance-team`.
    pub finance: String,
}

/// A running server; killed when dropped.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// One token per role.
    pub tokens: TestTokens,
    /// The client.
    pub http: reqwest::Client,
    child: Child,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = ledger_sha256(text.as_bytes());
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn ledger_sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl Server {
    /// Starts `serve` against `db` with extra arguments (e.g. `--no-projectors`).
    ///
    /// # Panics
    /// When the server does not come up within 30 s.
    pub fn start(db: &TestDb, extra: &[&str]) -> Server {
        Server::start_with(db, extra, None)
    }

    /// Like [`Server::start`], with the server's logs at `info` written to `log` instead of
    /// the test's standard error, for tests that read what the server logs.
    ///
    /// # Panics
    /// When the file cannot be made or the server does not come up within 30 s.
    pub fn start_logging_to(db: &TestDb, extra: &[&str], log: &std::path::Path) -> Server {
        Server::start_with(db, extra, Some(log))
    }

    fn start_with(db: &TestDb, extra: &[&str], log: Option<&std::path::Path>) -> Server {
        let dir = std::env::temp_dir().join(format!("el-server-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tokens = TestTokens {
            coordinator: format!("el_test_coord_{}", uuid::Uuid::new_v4().simple()),
            admin: format!("el_test_admin_{}", uuid::Uuid::new_v4().simple()),
            finance: format!("el_test_fin_{}", uuid::Uuid::new_v4().simple()),
        };
        let file = dir.join("tokens");
        std::fs::write(
            &file,
            format!(
                "# test tokens\ncoordinator checkout {}\nadmin ops-admin {}\nfinance finance-team {}\n",
                sha256_hex(&tokens.coordinator),
                sha256_hex(&tokens.admin),
                sha256_hex(&tokens.finance)
            ),
        )
        .expect("tokens file");
        let mut child = Command::new(binary())
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(extra)
            .env("DATABASE_URL", &db.url)
            .env("API_TOKENS_FILE", &file)
            .env(
                "RUST_LOG",
                match log {
                    Some(_) => "info".into(),
                    None => std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                },
            )
            .env_remove("LOG_FORMAT")
            .env("NO_COLOR", if log.is_some() { "1" } else { "" })
            .stdout(Stdio::piped())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
                None => Stdio::inherit(),
            })
            .spawn()
            .expect("start escrow-ledger serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server did not say where it listens");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_mins(1))
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        Server {
            base,
            tokens,
            http,
            child,
            _dir: TempDir(dir),
        }
    }

    /// Sends SIGTERM to the server, as an orchestrator stopping it does.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the server process to exit, at most `within`: its exit status, or `None`
    /// when it is still running.
    ///
    /// # Panics
    /// When the process cannot be waited for.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a request and returns the status, headers and the body as JSON (or a string).
    ///
    /// # Panics
    /// When the request cannot be sent.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.expect("send request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, value)
    }

    /// POSTs JSON with an idempotency key.
    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let text = body.to_string();
        let mut headers = Vec::new();
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        let (s, _, v) = self
            .send("POST", path, Some(token), Some(&text), &headers)
            .await;
        (s, v)
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.send("GET", path, Some(token), None, &[]).await;
        (s, v)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
