//! `escrow-ledger bench rebuild`: the projections' rebuild over a large store, against a
//! plain sequential read of the same events measured in the same run. It fills the store
//! through the append path (a simulated marketplace, [`generate`]) unless `--reuse` finds
//! it full enough, brings the live projectors up to date, reads the events once plainly,
//! then rebuilds every projection with the code `escrow-ledger rebuild --all` runs while a
//! live projector follows a small live load ([`live`]), and last times the admin queue and
//! a one-month bucket report with the SQL their endpoints run. Each figure is printed with
//! its target and whether this run met it.

mod generate;
mod live;
mod plan;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Datelike, Months, NaiveDate, Utc};
use futures::TryStreamExt;
use ledger::store::{self, EventStore, PoolSettings};
use projections::{Projection, RebuildSettings, RunnerSettings};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::project::Projectors;

/// Rebuild rate to reach, events per second.
const TARGET_RATE: f64 = 25_000.0;
/// Rebuild time to stay under, in plain reads of the same events.
const TARGET_RATIO: f64 = 6.0;
/// Lag to stay under during the rebuild.
const TARGET_LAG: Duration = Duration::from_secs(1);
/// p99 to stay under for the read queries.
const TARGET_QUERY_P99: Duration = Duration::from_millis(20);
/// Writers filling the store at once.
const WRITERS: u64 = 3;
/// Timed runs of each read query.
const QUERY_RUNS: usize = 200;

/// Runs the benchmark: at least `events` events in the store (generated unless `reuse`
/// finds enough), then the figures. Exit code 1 when a target is missed.
///
/// # Errors
/// The database cannot be reached, or a step fails.
pub async fn run(options: PgConnectOptions, events: u64, reuse: bool) -> anyhow::Result<ExitCode> {
    let admin = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await?;
    let service = store::connect(
        options.clone(),
        &PoolSettings {
            max_connections: 16,
            ..PoolSettings::default()
        },
    )
    .await?;
    let have = count_events(&admin).await?;
    let need = if reuse {
        events.saturating_sub(have)
    } else {
        events
    };
    if need == 0 {
        say(&format!(
            "store: reusing the {have} events already there (--reuse)"
        ));
    } else {
        fill(&service, need).await?;
    }

    // This cluster runs with autovacuum off; a production one would have analyzed the
    // store after a million inserts, and the projectors' plans count on it.
    let started = Instant::now();
    sqlx::query("ANALYZE events, postings")
        .execute(&admin)
        .await?;
    say(&format!(
        "store analyzed (autovacuum is off here) in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    bring_up_to_date(&options, &service).await?;

    let total = count_events(&admin).await?;
    let (read_events, read_time) = plain_read_best_of_two(&admin).await?;
    let read_rate = rate(read_events, read_time);
    say(&format!(
        "baseline: plain sequential read (SELECT * FROM events ORDER BY position, streamed), \
         {read_events} events in {:.2} s: {read_rate:.0} events/s (the faster of two runs)",
        read_time.as_secs_f64()
    ));

    // The baseline: psql's own read of the same statement (about 130,000 events/s
    // where the target was set). Slower than the driver's streamed read, which is printed
    // beside it; when psql is missing, the streamed read is the baseline.
    let psql = psql_read_best_of_two(&options).await;
    match &psql {
        Ok(t) => say(&format!(
            "baseline: psql -At -c 'SELECT * FROM events ORDER BY position' > /dev/null, \
             {:.2} s: {:.0} events/s (the faster of two runs)",
            t.as_secs_f64(),
            rate(read_events, *t)
        )),
        Err(e) => say(&format!(
            "baseline: psql's read could not run ({e}); the streamed read is the baseline"
        )),
    }
    let baseline = psql.as_ref().map_or(read_time, |t| *t);

    let (rebuilt, rebuild_time, lagged) = rebuild_under_load(&options, &service, total).await?;
    let mut verdicts = Vec::new();
    let rebuild_rate = rate(rebuilt, rebuild_time);
    let ratio = rebuild_time.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    let streamed_ratio = rebuild_time.as_secs_f64() / read_time.as_secs_f64().max(1e-9);
    say(&format!(
        "rebuild --all: {rebuilt} events in {:.1} s: {rebuild_rate:.0} events/s  \
         (target >= {TARGET_RATE:.0}: {})",
        rebuild_time.as_secs_f64(),
        verdict(&mut verdicts, rebuild_rate >= TARGET_RATE)
    ));
    say(&format!(
        "  rebuild time / {} read time: {ratio:.2}  (target <= {TARGET_RATIO:.0}: {})",
        if psql.is_ok() { "psql's" } else { "streamed" },
        verdict(&mut verdicts, ratio <= TARGET_RATIO)
    ));
    say(&format!(
        "  rebuild time / streamed read time: {streamed_ratio:.2}  (for comparison)"
    ));
    report_live(&lagged, &mut verdicts);

    report_queries(&service, &mut verdicts).await?;
    let missed = verdicts.iter().filter(|ok| !**ok).count();
    if missed == 0 {
        say("all targets met");
        Ok(ExitCode::SUCCESS)
    } else {
        say(&format!("{missed} target(s) missed"));
        Ok(ExitCode::from(1))
    }
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn verdict(verdicts: &mut Vec<bool>, ok: bool) -> &'static str {
    verdicts.push(ok);
    if ok {
        "target met"
    } else {
        "target missed"
    }
}

#[allow(clippy::cast_precision_loss)]
fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

async fn count_events(pool: &PgPool) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n)?)
}

/// Appends `need` events of the simulated market from [`WRITERS`] writers, business time
/// from the first day of the month before last up to three days ago.
async fn fill(service: &PgPool, need: u64) -> anyhow::Result<()> {
    let now = Utc::now();
    let start = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.checked_sub_months(Months::new(2)))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| anyhow::anyhow!("no start date"))?;
    let end = now - chrono::Duration::days(3);
    let seed = 0x00e5_c0de;
    let per_payment = plan::average_events(seed);
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let slot_ms = ((end - start).num_milliseconds() as f64 * per_payment / need as f64) as i64;
    let slot = chrono::Duration::milliseconds(slot_ms.max(1));
    say(&format!(
        "generating {need} events through the append path: {WRITERS} writers, \
         ~{per_payment:.1} events a payment, business time {} .. {}",
        start.format("%Y-%m-%d"),
        now.format("%Y-%m-%d")
    ));
    let store = EventStore::new(service.clone());
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    for writer in 0..WRITERS {
        let counter = Arc::new(AtomicU64::new(0));
        counters.push(counter.clone());
        let settings = generate::MarketSettings {
            writer,
            writers: WRITERS,
            events: need / WRITERS + u64::from(writer < need % WRITERS),
            start,
            slot,
            now,
            batch_events: 2000,
        };
        tasks.push(tokio::spawn(generate::run_market(
            store.clone(),
            settings,
            seed + writer + 1,
            counter,
        )));
    }
    let progress = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let n: u64 = counters.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            say(&format!(
                "  {n} events appended, {:.0} events/s",
                rate(n, started.elapsed())
            ));
        }
    });
    let mut written = generate::Written::default();
    for t in tasks {
        let w = t.await??;
        written.events += w.events;
        written.payments += w.payments;
        written.disputes += w.disputes;
    }
    progress.abort();
    let took = started.elapsed();
    say(&format!(
        "generated {} events ({} payments, {} disputes) in {:.1} s: {:.0} events/s",
        written.events,
        written.payments,
        written.disputes,
        took.as_secs_f64(),
        rate(written.events, took)
    ));
    Ok(())
}

/// Brings the live tables up to date before the measured rebuild: far behind (a freshly
/// filled store), with an unmeasured first rebuild, as one would; else by catching up.
async fn bring_up_to_date(options: &PgConnectOptions, service: &PgPool) -> anyhow::Result<()> {
    let started = Instant::now();
    let behind = projections::status(service)
        .await?
        .iter()
        .map(|s| s.lag_events)
        .max()
        .unwrap_or(0);
    if behind > 10_000 {
        let owner = projections::rebuild::connect(options.clone(), 10).await?;
        projections::rebuild(
            &owner,
            &Projection::ALL,
            &RebuildSettings::default(),
            |_| {},
        )
        .await?;
    }
    projections::catch_up(service, &RunnerSettings::default()).await?;
    say(&format!(
        "live tables brought up to date ({behind} events behind{}) in {:.1} s",
        if behind > 10_000 {
            ", by a first, unmeasured rebuild"
        } else {
            ""
        },
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn plain_read_best_of_two(pool: &PgPool) -> anyhow::Result<(u64, Duration)> {
    let first = plain_read(pool).await?;
    let second = plain_read(pool).await?;
    Ok(if second.1 < first.1 { second } else { first })
}

/// Every event, every column, in one streamed statement: what reading the store costs
/// before anything is done with it.
async fn plain_read(pool: &PgPool) -> anyhow::Result<(u64, Duration)> {
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    let mut rows = sqlx::query("SELECT * FROM events ORDER BY position").fetch(&mut *conn);
    let mut n = 0_u64;
    while rows.try_next().await?.is_some() {
        n += 1;
    }
    Ok((n, started.elapsed()))
}

async fn psql_read_best_of_two(options: &PgConnectOptions) -> anyhow::Result<Duration> {
    let first = psql_read(options).await?;
    let second = psql_read(options).await?;
    Ok(first.min(second))
}

/// The same read by `psql -At` into `/dev/null`: the client the figure came from.
async fn psql_read(options: &PgConnectOptions) -> anyhow::Result<Duration> {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("SELECT * FROM events ORDER BY position")
        .env("PGHOST", options.get_host())
        .env("PGPORT", options.get_port().to_string())
        .env("PGUSER", options.get_username())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(db) = options.get_database() {
        cmd.env("PGDATABASE", db);
    }
    let started = Instant::now();
    let out = cmd.output().await?;
    let took = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(took)
}

/// Rebuilds every projection as `rebuild --all` does, while the live projectors follow a
/// live load. Returns the events rebuilt, the time, and what the live side saw.
async fn rebuild_under_load(
    options: &PgConnectOptions,
    service: &PgPool,
    total: u64,
) -> anyhow::Result<(u64, Duration, live::LiveFigures)> {
    let projectors = Projectors::spawn(service.clone());
    let (stop, stopped) = watch::channel(false);
    let live = tokio::spawn(live::run(
        service.clone(),
        Duration::from_millis(250),
        stopped,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner = projections::rebuild::connect(options.clone(), 10).await?;
    say(&format!(
        "rebuilding payments, balances, disputes over {total} events, \
         a live projector following 4 appends/s meanwhile"
    ));
    let started = Instant::now();
    let mut last = Instant::now();
    let result = projections::rebuild(&owner, &Projection::ALL, &RebuildSettings::default(), |p| {
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            say(&format!(
                "  {} events read, {:.0} events/s",
                p.events,
                rate(p.events, started.elapsed())
            ));
        }
    })
    .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(true);
    let lagged = live.await??;
    projectors.stop().await;
    let reports = result?;
    let events = reports.iter().map(|r| r.events).max().unwrap_or(0);
    Ok((events, took, lagged))
}

/// The `q`-quantile of sorted durations (nearest rank).
fn quantile(sorted: &[Duration], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn report_live(live: &live::LiveFigures, verdicts: &mut Vec<bool>) {
    let mut projected = live.projected.clone();
    projected.extend(&live.unprojected);
    projected.sort_unstable();
    let max = projected.last().copied().unwrap_or_default();
    say(&format!(
        "  live projector during the rebuild: {} appends, commit to applied by all three \
         projectors p50 {}, p99 {}, max {}{}  (target max < 1 s: {})",
        live.appends,
        ms(quantile(&projected, 500)),
        ms(quantile(&projected, 990)),
        ms(max),
        if live.unprojected.is_empty() {
            String::new()
        } else {
            format!(" ({} not applied at the end)", live.unprojected.len())
        },
        verdict(verdicts, max < TARGET_LAG && !projected.is_empty())
    ));
    let mut held = live.watermark.clone();
    held.sort_unstable();
    let max = held.last().copied().unwrap_or_default();
    say(&format!(
        "  watermark lag (held_back_ms of /readyz) sampled every 100 ms: {} samples, \
         p50 {}, p99 {}, max {}  (target max < 1 s: {})",
        held.len(),
        ms(quantile(&held, 500)),
        ms(quantile(&held, 990)),
        ms(max),
        verdict(verdicts, max < TARGET_LAG)
    ));
}

/// Times the admin queue and a one-month bucket report, [`QUERY_RUNS`] runs each after a
/// few to warm up, on the service's pool as the HTTP handlers run them.
async fn report_queries(service: &PgPool, verdicts: &mut Vec<bool>) -> anyhow::Result<()> {
    let first: Option<NaiveDate> =
        sqlx::query_scalar("SELECT min(day) FROM finance.reconciliation_buckets")
            .fetch_one(service)
            .await?;
    let first = first.ok_or_else(|| anyhow::anyhow!("no payments projected"))?;
    // The first whole month of the data.
    let month = if first.day() == 1 {
        Some(first)
    } else {
        first
            .with_day(1)
            .and_then(|d| d.checked_add_months(Months::new(1)))
    }
    .ok_or_else(|| anyhow::anyhow!("no month after {first}"))?;
    let last = month
        .checked_add_months(Months::new(1))
        .and_then(|d| d.pred_opt())
        .ok_or_else(|| anyhow::anyhow!("no end of the month {month}"))?;
    let cases: [(&str, Option<&str>); 2] = [
        ("by provider and asset", Some("provider,asset")),
        ("by provider, status, asset and day", None),
    ];
    let queue = time_runs(|| crate::http::queries::default_queue_page(service)).await?;
    report_query(
        "admin queue (GET /v1/disputes, first page)",
        &queue,
        verdicts,
    );
    for (name, group) in cases {
        let runs = time_runs(|| async move {
            crate::http::queries::period_buckets(service, month, last, group).await
        })
        .await?;
        let title = format!(
            "bucket report {} .. {last} {name} (GET /v1/reconciliation/buckets)",
            month.format("%Y-%m-%d")
        );
        report_query(&title, &runs, verdicts);
    }
    Ok(())
}

/// Durations of [`QUERY_RUNS`] runs (after 10 unmeasured ones), sorted, and the rows the
/// last one read.
async fn time_runs<F, Fut, E>(mut query: F) -> anyhow::Result<(Vec<Duration>, usize)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, E>>,
    anyhow::Error: From<E>,
{
    for _ in 0..10 {
        query().await?;
    }
    let mut times = Vec::with_capacity(QUERY_RUNS);
    let mut rows = 0;
    for _ in 0..QUERY_RUNS {
        let started = Instant::now();
        rows = query().await?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok((times, rows))
}

fn report_query(name: &str, (times, rows): &(Vec<Duration>, usize), verdicts: &mut Vec<bool>) {
    let p99 = quantile(times, 990);
    say(&format!(
        "{name}: {} runs, {rows} rows, p50 {}, p99 {}  (target p99 < 20 ms: {})",
        times.len(),
        ms(quantile(times, 500)),
        ms(p99),
        verdict(verdicts, p99 < TARGET_QUERY_P99)
    ));
}
