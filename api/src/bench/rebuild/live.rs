//! The live side of `bench rebuild`: while a rebuild runs, a small stream of payments is
//! appended (created, then funded), each announced on the store's channel as the service
//! does; a watcher measures how long each append takes to be applied by the live
//! projectors (the runner `serve` and `project --follow` run), and a sampler reads the
//! feed's watermark lag every 100 ms, the `held_back_ms` of `/readyz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger::event::{Actor, ExpectedVersion, Metadata, StreamAppend};
use ledger::payment::{self, CreatePayment, Deposit, Payment};
use ledger::store::{self, EventStore};
use ledger::{Asset, FeedPosition, Reference};
use projections::Projection;
use rust_decimal::Decimal;
use sqlx::PgPool;
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

/// What the live side saw.
#[derive(Debug, Default, Clone)]
pub struct LiveFigures {
    /// Appends made.
    pub appends: usize,
    /// For each append, from its commit to all projectors having applied it.
    pub projected: Vec<Duration>,
    /// Appends not yet applied when the measurement stopped, and how long they had waited.
    pub unprojected: Vec<Duration>,
    /// The watermark lag (`held_back_ms`), sampled every 100 ms.
    pub watermark: Vec<Duration>,
}

type Pending = Arc<Mutex<Vec<(FeedPosition, Instant)>>>;

/// Runs the live appends, the lag watcher and the watermark sampler until `stop` turns
/// true, then returns what they saw. `pool` acts as the service role.
///
/// # Errors
/// An append or a measurement failed.
pub async fn run(
    pool: PgPool,
    every: Duration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<LiveFigures> {
    let pending: Pending = Arc::default();
    let appender = tokio::spawn(appends(pool.clone(), every, pending.clone(), stop.clone()));
    let watcher = tokio::spawn(watch_lag(pool.clone(), pending, stop.clone()));
    let sampler = tokio::spawn(sample_watermark(pool, stop));
    let appends = appender.await??;
    let (projected, unprojected) = watcher.await??;
    let watermark = sampler.await??;
    Ok(LiveFigures {
        appends,
        projected,
        unprojected,
        watermark,
    })
}

async fn appends(
    pool: PgPool,
    every: Duration,
    pending: Pending,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let store = EventStore::new(pool.clone());
    let meta = Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: "live-coordinator".into(),
            role: "coordinator".into(),
        },
        source: "bench".into(),
        legacy: None,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut count = 0;
    let mut unfunded: Option<Payment> = None;
    while !*stop.borrow() {
        tick.tick().await;
        let now = Utc::now();
        let amount = Decimal::new(4_250, 2);
        let (state, decided) = match unfunded.take() {
            None => {
                let state = Payment::default();
                let decided = state.create(CreatePayment {
                    payment_id: Uuid::new_v4(),
                    buyer: Reference::entity(Uuid::new_v4()),
                    seller: Reference::external("live-shop"),
                    purchase_request: Reference::entity(Uuid::new_v4()),
                    seller_offer: None,
                    amount,
                    asset: Asset::Usd,
                    provider: "stripe".into(),
                    metadata: None,
                })?;
                (state, decided)
            }
            Some(state) => {
                let decided = state.deposit(
                    &Deposit {
                        amount,
                        reference: format!("live-{}", Uuid::new_v4().simple()),
                        occurred_at: now,
                        allow_excess: false,
                    },
                    now,
                )?;
                (state, decided)
            }
        };
        let mut next = state.clone();
        for e in &decided {
            next.apply(e, now);
        }
        let append = StreamAppend {
            stream_id: next.id().unwrap_or_default(),
            stream_type: payment::STREAM_TYPE.into(),
            expected: if state.version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(state.version)
            },
            events: state.new_events(&decided, &meta, now),
        };
        let done = store.append(&[append]).await?;
        let committed = Instant::now();
        // As the service does after its commits: wake the projectors now.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(projections::CHANNEL)
            .execute(&pool)
            .await?;
        if let Some(last) = done.last() {
            if let Some(at) = store::feed_position_of(&pool, last.position).await? {
                pending.lock().await.push((at, committed));
            }
        }
        if next.deposited.is_zero() {
            unfunded = Some(next);
        }
        count += 1;
    }
    Ok(count)
}

/// Every 10 ms: the slowest projector's checkpoint; each append it passed is done.
async fn watch_lag(
    pool: PgPool,
    pending: Pending,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let names: Vec<&str> = Projection::ALL.iter().map(|p| p.name()).collect();
    let mut lags = Vec::new();
    let mut stopped: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT checkpoint_tx, checkpoint_position FROM projection.projector_state \
             WHERE projector = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&pool)
        .await?;
        let slowest = rows
            .into_iter()
            .map(|(tx_id, position)| FeedPosition { tx_id, position })
            .min()
            .unwrap_or(FeedPosition::START);
        let now = Instant::now();
        let mut p = pending.lock().await;
        p.retain(|(at, committed)| {
            if *at <= slowest {
                lags.push(now.duration_since(*committed));
                false
            } else {
                true
            }
        });
        // After the stop, the last appends get up to five seconds to be applied.
        if *stop.borrow() {
            let since = *stopped.get_or_insert(now);
            if p.is_empty() || now.duration_since(since) > Duration::from_secs(5) {
                let left = p.iter().map(|(_, c)| now.duration_since(*c)).collect();
                return Ok((lags, left));
            }
        }
    }
}

/// Every 100 ms: how long the oldest committed event the feed cannot hand out yet has
/// waited (`held_back_ms` of `ledger::store::watermark`, which `/readyz` reports; read
/// here with only that part of its statement, which the feed index answers, so that the
/// sampling does not load the machine being measured).
async fn sample_watermark(
    pool: PgPool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !*stop.borrow() {
        tick.tick().await;
        let ms: i64 = sqlx::query_scalar(
            "SELECT coalesce((extract(epoch FROM clock_timestamp() - min(recorded_at)) * 1000)::int8, 0) \
             FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())",
        )
        .fetch_one(&pool)
        .await?;
        out.push(Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    }
    Ok(out)
}
