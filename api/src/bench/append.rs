//! `escrow-ledger bench append`: the event store's append rate against a raw `INSERT` of
//! the same bytes, measured in the same run on the same database (the machine is shared
//! and noisy, so only ratios mean something).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger::event::{Actor, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use ledger::store::{self, EventStore, PoolSettings};
use serde_json::json;
use sqlx::{Executor, PgPool};
use uuid::Uuid;

use sqlx::postgres::PgConnectOptions;

/// Measures appends from each writer count, then batches of 1,000, each against a raw
/// insert of the same rows measured just before it.
///
/// # Errors
/// The database cannot be reached or a write fails.
pub async fn run(
    options: PgConnectOptions,
    seconds: u64,
    writers: &[usize],
) -> anyhow::Result<ExitCode> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(40)
        .connect_with(options.clone())
        .await?;
    admin
        .execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS bench_scratch (x int); DROP TABLE bench_scratch; \
             CREATE TABLE IF NOT EXISTS bench_raw (stream_id uuid, version int8, event_type text, \
             payload jsonb, metadata jsonb, occurred_at timestamptz, hash bytea); \
             GRANT INSERT ON bench_raw TO escrow_ledger_app",
        )
        .await?;
    let settings = PoolSettings {
        max_connections: 40,
        ..PoolSettings::default()
    };
    let pool = store::connect(options, &settings).await?;
    let store = EventStore::new(pool.clone());
    let dur = Duration::from_secs(seconds);
    println!("bench append: {seconds} s per measurement");
    println!(
        "{:<28} {:>12} {:>12} {:>7}",
        "case", "append ev/s", "raw ev/s", "ratio"
    );
    for &n in writers {
        let raw = raw_rate(&pool, n, dur, 1).await?;
        let app = append_rate(&store, n, dur, 1).await?;
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>7.2}",
            format!("single event, {n} writers"),
            app,
            raw,
            app / raw
        );
    }
    let raw = raw_rate(&pool, 1, dur, 1000).await?;
    let app = append_rate(&store, 1, dur, 1000).await?;
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}",
        "batches of 1000, 1 writer",
        app,
        raw,
        app / raw
    );
    admin.execute("DROP TABLE bench_raw").await?;
    Ok(ExitCode::SUCCESS)
}

fn sample_event(meta: &Metadata) -> NewEvent {
    NewEvent::new(
        "BenchEvent",
        json!({"amount": "125.50", "asset": "USD", "reference": "0x5f2a9c", "note": "a benchmark event"}),
        meta,
        Utc::now(),
        Vec::new(),
    )
}

fn bench_meta() -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: "bench".into(),
            role: "cli".into(),
        },
        source: "bench".into(),
        legacy: None,
    }
}

async fn append_rate(
    store: &EventStore,
    writers: usize,
    dur: Duration,
    batch: usize,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let meta = bench_meta();
            let stream = Uuid::new_v4();
            let mut version = 0_i64;
            while start.elapsed() < dur {
                let appends: Vec<StreamAppend> = if batch == 1 {
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(version)
                    };
                    vec![StreamAppend {
                        stream_id: stream,
                        stream_type: "bench".into(),
                        expected,
                        events: vec![sample_event(&meta)],
                    }]
                } else {
                    (0..batch)
                        .map(|_| StreamAppend {
                            stream_id: Uuid::new_v4(),
                            stream_type: "bench".into(),
                            expected: ExpectedVersion::NoStream,
                            events: vec![sample_event(&meta)],
                        })
                        .collect()
                };
                store.append(&appends).await?;
                version += 1;
                count.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rate(count.load(Ordering::Relaxed), start.elapsed()))
}

async fn raw_rate(
    pool: &PgPool,
    writers: usize,
    dur: Duration,
    batch: usize,
) -> anyhow::Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let pool = pool.clone();
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let meta = bench_meta();
            let e = sample_event(&meta);
            let stream = Uuid::new_v4();
            let mut version = 0_i64;
            while start.elapsed() < dur {
                if batch == 1 {
                    version += 1;
                    sqlx::query("INSERT INTO bench_raw VALUES ($1, $2, $3, $4, $5, $6, $7)")
                        .bind(stream)
                        .bind(version)
                        .bind(&e.event_type)
                        .bind(&e.payload)
                        .bind(&e.metadata)
                        .bind(e.occurred_at)
                        .bind(vec![7_u8; 32])
                        .execute(&pool)
                        .await?;
                } else {
                    // The same rows the batched append sends, each one shipped, not
                    // repeated on the server.
                    let streams: Vec<Uuid> = (0..batch).map(|_| Uuid::new_v4()).collect();
                    sqlx::query(
                        "INSERT INTO bench_raw SELECT * FROM UNNEST($1::uuid[], $2::int8[], \
                         $3::text[], $4::jsonb[], $5::jsonb[], $6::timestamptz[], $7::bytea[])",
                    )
                    .bind(&streams)
                    .bind(vec![1_i64; batch])
                    .bind(vec![e.event_type.clone(); batch])
                    .bind(vec![e.payload.clone(); batch])
                    .bind(vec![e.metadata.clone(); batch])
                    .bind(vec![e.occurred_at; batch])
                    .bind(vec![vec![7_u8; 32]; batch])
                    .execute(&pool)
                    .await?;
                }
                count.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(rate(count.load(Ordering::Relaxed), start.elapsed()))
}

#[allow(clippy::cast_precision_loss)]
fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}
