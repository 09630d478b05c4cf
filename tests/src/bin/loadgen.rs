//! `loadgen`: the HTTP command path's benchmark (not a test).
//!
//! Drives the full story — create a payment, deposit its amount, release it with a fee —
//! over HTTP from N concurrent clients against a running `escrow-ledger serve` for D
//! seconds, and in the same run, against the same database and from the same number of
//! connections, measures
//!   (a) the raw single-row `INSERT` rate (autocommit, an event-sized row), and
//!   (b) the bare SQL of the same three commands run by `pgbench` (`--pgbench-script`).
//! Prints commands/s, p50/p99 latency and both ratios. The machine is shared and noisy:
//! only the ratios, measured in the same run, mean much.
//!
//! ```text
//! loadgen --base http://127.0.0.1:8080 --token <coordinator token> \
//!         --database-url postgres://... [--clients 32] [--seconds 10] [--warmup 2] \
//!         [--pgbench-script scripts/bench/story.sql] [--pgbench pgbench]
//! ```
//! `scripts/bench/http.sh` sets all of it up and tears it down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::Executor;
use uuid::Uuid;

const USAGE: &str = "usage: loadgen --base URL --token TOKEN --database-url URL [--clients 32] \
[--seconds 10] [--warmup 2] [--pgbench-script FILE] [--pgbench pgbench]
  (LOADGEN_BASE, LOADGEN_TOKEN and DATABASE_URL stand in for the first three)";

/// The command line.
#[derive(Debug, Clone)]
struct Opts {
    base: String,
    token: String,
    database_url: String,
    clients: usize,
    seconds: u64,
    warmup: u64,
    pgbench_script: Option<PathBuf>,
    pgbench: String,
}

impl Opts {
    fn parse() -> anyhow::Result<Opts> {
        let mut o = Opts {
            base: std::env::var("LOADGEN_BASE").unwrap_or_default(),
            token: std::env::var("LOADGEN_TOKEN").unwrap_or_default(),
            database_url: std::env::var("DATABASE_URL").unwrap_or_default(),
            clients: 32,
            seconds: 10,
            warmup: 2,
            pgbench_script: None,
            pgbench: "pgbench".into(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--base" => value.trim_end_matches('/').clone_into(&mut o.base),
                "--token" => o.token = value,
                "--database-url" => o.database_url = value,
                "--clients" => o.clients = value.parse().context("--clients")?,
                "--seconds" => o.seconds = value.parse().context("--seconds")?,
                "--warmup" => o.warmup = value.parse().context("--warmup")?,
                "--pgbench-script" => o.pgbench_script = Some(value.into()),
                "--pgbench" => o.pgbench = value,
                other => bail!("unknown option {other} (try --help)"),
            }
        }
        if !o.base.is_empty() && !o.base.contains("://") {
            o.base = format!("http://{}", o.base);
        }
        if o.base.is_empty() || o.token.is_empty() || o.database_url.is_empty() {
            bail!("--base, --token and --database-url (or DATABASE_URL) are required");
        }
        if o.clients == 0 || o.seconds == 0 {
            bail!("--clients and --seconds must be positive");
        }
        Ok(o)
    }
}

/// What the HTTP phase measured.
struct HttpFigures {
    commands: usize,
    stories: usize,
    errors: usize,
    first_error: Option<String>,
    /// Every command's latency, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl HttpFigures {
    fn rate(&self) -> f64 {
        per_second(self.commands, self.elapsed)
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

#[allow(clippy::cast_precision_loss)]
fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One client's share of the HTTP phase.
#[derive(Default)]
struct ClientTally {
    latencies: Vec<Duration>,
    stories: usize,
    errors: usize,
    first_error: Option<String>,
}

/// Sends one command; its latency, or what went wrong.
async fn command(
    http: &reqwest::Client,
    o: &Opts,
    path: &str,
    body: String,
    key: bool,
) -> Result<(Duration, String), String> {
    let mut req = http
        .post(format!("{}{path}", o.base))
        .bearer_auth(&o.token)
        .header("content-type", "application/json")
        .body(body);
    if key {
        req = req.header("idempotency-key", Uuid::new_v4().to_string());
    }
    let start = Instant::now();
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let took = start.elapsed();
    if status.is_success() {
        Ok((took, text))
    } else {
        Err(format!("{path}: {status} {text}"))
    }
}

/// Runs stories until `until`; counts only commands that ended before it when `record`.
async fn client(http: reqwest::Client, o: Arc<Opts>, until: Instant, record: bool) -> ClientTally {
    let mut t = ClientTally::default();
    let fail = |t: &mut ClientTally, e: String| {
        t.errors += 1;
        t.first_error.get_or_insert(e);
    };
    'stories: while Instant::now() < until {
        let create = json!({
            "buyer": {"kind": "entity", "id": Uuid::new_v4()},
            "seller": {"kind": "entity", "id": Uuid::new_v4()},
            "purchase_request": {"kind": "external", "ref": "loadgen"},
            "amount": "125.50", "asset": "USD", "provider": "stripe",
        });
        let mut payment = String::new();
        for step in 0..3 {
            let (path, body, key) = match step {
                0 => ("/v1/payments".to_owned(), create.to_string(), false),
                1 => (
                    format!("/v1/payments/{payment}/deposits"),
                    json!({"amount": "125.50", "reference": format!("ch_{}", Uuid::new_v4().simple())})
                        .to_string(),
                    true,
                ),
                _ => (
                    format!("/v1/payments/{payment}/releases"),
                    json!({"fees": [{"kind": "fee", "amount": "2.50"}]}).to_string(),
                    true,
                ),
            };
            match command(&http, &o, &path, body, key).await {
                Ok((took, text)) => {
                    if Instant::now() > until {
                        break 'stories;
                    }
                    if record {
                        t.latencies.push(took);
                    }
                    if step == 0 {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                        v["id"]
                            .as_str()
                            .unwrap_or_default()
                            .clone_into(&mut payment);
                    }
                }
                Err(e) => {
                    fail(&mut t, e);
                    continue 'stories;
                }
            }
        }
        t.stories += 1;
    }
    t
}

async fn http_phase(o: &Arc<Opts>, seconds: u64, record: bool) -> anyhow::Result<HttpFigures> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(o.clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..o.clients)
        .map(|_| tokio::spawn(client(http.clone(), o.clone(), until, record)))
        .collect();
    let mut f = HttpFigures {
        commands: 0,
        stories: 0,
        errors: 0,
        first_error: None,
        latencies: Vec::new(),
        elapsed: Duration::from_secs(seconds),
    };
    for t in futures::future::join_all(tasks).await {
        let t = t?;
        f.stories += t.stories;
        f.errors += t.errors;
        if f.first_error.is_none() {
            f.first_error = t.first_error;
        }
        f.latencies.extend(t.latencies);
    }
    f.commands = f.latencies.len();
    f.latencies.sort_unstable();
    Ok(f)
}

/// (a): single-row autocommit `INSERT`s of an event-sized row into a scratch table, one
/// connection per client.
async fn raw_insert_rate(o: &Opts) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(o.clients)?)
        .connect(&o.database_url)
        .await
        .context("connect for the raw INSERT rate")?;
    pool.execute(
        "DROP TABLE IF EXISTS loadgen_raw; \
         CREATE TABLE loadgen_raw (stream_id uuid, version int8, event_type text, payload jsonb, \
                                   metadata jsonb, occurred_at timestamptz, hash bytea)",
    )
    .await?;
    let payload = json!({"amount": "125.50", "reference": "ch_5f2a9c0d1e", "allow_excess": false, "excess": "0"});
    let metadata = json!({"actor": {"name": "loadgen", "role": "coordinator"}, "source": "api",
                          "correlation_id": Uuid::new_v4(), "causation_id": Uuid::new_v4(), "legacy": null});
    let start = Instant::now();
    let until = start + Duration::from_secs(o.seconds);
    let tasks: Vec<_> = (0..o.clients)
        .map(|_| {
            let pool = pool.clone();
            let payload = payload.clone();
            let metadata = metadata.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await?;
                let stream = Uuid::new_v4();
                let mut n = 0_usize;
                while Instant::now() < until {
                    sqlx::query(
                        "INSERT INTO loadgen_raw VALUES ($1, $2, 'FundsDeposited', $3, $4, now(), $5)",
                    )
                    .bind(stream)
                    .bind(i64::try_from(n)?)
                    .bind(&payload)
                    .bind(&metadata)
                    .bind(vec![7_u8; 32])
                    .execute(&mut *conn)
                    .await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in futures::future::join_all(tasks).await {
        total += t??;
    }
    let rate = per_second(total, start.elapsed());
    pool.execute("DROP TABLE loadgen_raw").await?;
    pool.close().await;
    Ok(rate)
}

/// Analyzes the database (the store's tables and the commands' tables).
async fn analyze(o: &Opts) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&o.database_url)
        .await
        .context("connect to analyze")?;
    pool.execute("ANALYZE").await.context("ANALYZE")?;
    pool.close().await;
    Ok(())
}

/// What pgbench measured: script runs (stories) per second and their mean latency.
struct PgbenchFigures {
    stories_per_s: f64,
    latency_ms: Option<f64>,
    failed: Option<String>,
}

/// (b): the story's bare SQL through `pgbench`, same clients, same duration.
async fn pgbench_rate(o: &Opts, script: &PathBuf) -> anyhow::Result<PgbenchFigures> {
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(o.clients);
    let out = tokio::process::Command::new(&o.pgbench)
        .args(["-n", "-M", "prepared"])
        .args(["-c", &o.clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &o.seconds.to_string(), "-f"])
        .arg(script)
        .arg(&o.database_url)
        .output()
        .await
        .with_context(|| format!("run {}", o.pgbench))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("pgbench failed ({}):\n{stdout}\n{stderr}", out.status);
    }
    let field = |prefix: &str| -> Option<f64> {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l[prefix.len()..].split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let stories_per_s = field("tps = ").with_context(|| format!("no tps in:\n{stdout}"))?;
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("number of failed transactions") && !l.contains(": 0 "))
        .map(str::to_owned);
    Ok(PgbenchFigures {
        stories_per_s,
        latency_ms: field("latency average = "),
        failed,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Arc::new(Opts::parse()?);
    println!(
        "loadgen: {} clients, {} s per measurement, against {}",
        o.clients, o.seconds, o.base
    );
    if o.warmup > 0 {
        let w = http_phase(&o, o.warmup, false).await?;
        if w.errors > 0 && w.stories == 0 {
            bail!("the warm-up failed: {}", w.first_error.unwrap_or_default());
        }
    }
    // Statistics first, before each phase that reads the store, as autovacuum would
    // have gathered them on a live server: without them the prepared statements' generic
    // plans turn to whole-table scans as the tables grow (pgbench fell to a tenth).
    analyze(&o).await?;
    let h = http_phase(&o, o.seconds, true).await?;
    let http_rate = h.rate();
    let (p50, p99) = (h.percentile(0.50), h.percentile(0.99));
    println!(
        "HTTP story (create, deposit, release with a fee): {} stories, {} commands in {:.1} s",
        h.stories,
        h.commands,
        h.elapsed.as_secs_f64()
    );
    println!(
        "  {http_rate:.0} commands/s, latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, errors {}",
        ms(p50),
        ms(p99),
        ms(h.latencies.last().copied().unwrap_or_default()),
        h.errors
    );
    if let Some(e) = &h.first_error {
        println!("  first error: {e}");
    }
    let raw = raw_insert_rate(&o).await?;
    println!(
        "(a) raw single-row INSERT, {} connections: {raw:.0} rows/s",
        o.clients
    );
    let bench = match &o.pgbench_script {
        Some(script) => {
            analyze(&o).await?;
            Some(pgbench_rate(&o, script).await?)
        }
        None => None,
    };
    if let Some(b) = &bench {
        println!(
            "(b) pgbench, the three commands' bare SQL, {} clients: {:.0} commands/s ({:.0} stories/s{})",
            o.clients,
            b.stories_per_s * 3.0,
            b.stories_per_s,
            b.latency_ms
                .map(|l| format!(", {l:.1} ms per story"))
                .unwrap_or_default()
        );
        if let Some(f) = &b.failed {
            println!("  pgbench: {f}");
        }
    }
    println!("ratios:");
    println!(
        "  HTTP / (a) raw INSERT   = {:.2}   (target >= 0.30)",
        http_rate / raw
    );
    if let Some(b) = &bench {
        println!(
            "  HTTP / (b) pgbench SQL  = {:.2}   (target >= 0.80)",
            http_rate / (b.stories_per_s * 3.0)
        );
    }
    println!(
        "  p99 {:.1} ms            {}   (target < 50 ms)",
        ms(p99),
        if p99 < Duration::from_millis(50) {
            "met"
        } else {
            "missed"
        }
    );
    if h.errors > 0 {
        bail!("{} command(s) failed", h.errors);
    }
    Ok(())
}
