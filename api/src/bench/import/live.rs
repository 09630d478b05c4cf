//! The live side of `bench import`: the projectors `serve` and `project --follow` run,
//! following the feed while the import writes, and two samplers: the feed's watermark lag
//! (`held_back_ms`, the figure `/readyz` reports) every 100 ms, and the projectors' own lag
//! (the oldest committed event the slowest one has not applied) every second.

use std::time::Duration;

use ledger::store;
use projections::RunnerSettings;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the samplers saw.
#[derive(Debug, Default, Clone)]
pub struct LiveFigures {
    /// Watermark lag samples, every 100 ms.
    pub watermark: Vec<Duration>,
    /// The slowest projector's lag, every second.
    pub projectors: Vec<Duration>,
}

/// Projectors and samplers running in the background.
pub struct Live {
    stop: watch::Sender<bool>,
    projectors: JoinHandle<()>,
    watermark: JoinHandle<anyhow::Result<Vec<Duration>>>,
    projector_lag: JoinHandle<anyhow::Result<Vec<Duration>>>,
}

impl Live {
    /// Starts the projectors and the samplers on `pool` (the service role's).
    pub fn start(pool: &PgPool) -> Live {
        let (stop, stopped) = watch::channel(false);
        let projectors = tokio::spawn(projections::follow(
            pool.clone(),
            RunnerSettings::default(),
            stopped.clone(),
        ));
        let watermark = tokio::spawn(sample(
            pool.clone(),
            Duration::from_millis(100),
            stopped.clone(),
            watermark_lag,
        ));
        let projector_lag = tokio::spawn(sample(
            pool.clone(),
            Duration::from_secs(1),
            stopped,
            slowest_projector,
        ));
        Live {
            stop,
            projectors,
            watermark,
            projector_lag,
        }
    }

    /// Stops the samplers and the projectors, and returns the samples.
    ///
    /// # Errors
    /// A sample failed.
    pub async fn stop(self) -> anyhow::Result<LiveFigures> {
        let _ = self.stop.send(true);
        let watermark = self.watermark.await??;
        let projectors = self.projector_lag.await??;
        let _ = self.projectors.await;
        Ok(LiveFigures {
            watermark,
            projectors,
        })
    }
}

async fn sample<F, Fut>(
    pool: PgPool,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    measure: F,
) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => out.push(measure(pool.clone()).await?),
            _ = stop.changed() => return Ok(out),
        }
        if *stop.borrow() {
            return Ok(out);
        }
    }
}

async fn watermark_lag(pool: PgPool) -> anyhow::Result<Duration> {
    let w = store::watermark(&pool).await?;
    Ok(millis(w.held_back_ms))
}

async fn slowest_projector(pool: PgPool) -> anyhow::Result<Duration> {
    let all = projections::status(&pool).await?;
    Ok(millis(all.iter().map(|s| s.lag_ms).max().unwrap_or(0)))
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
