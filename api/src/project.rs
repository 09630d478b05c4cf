//! `escrow-ledger project [--follow]`, `escrow-ledger rebuild <projection>|--all`, and the
//! projectors `serve` runs beside the API.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ledger::store::{self, PoolSettings};
use projections::{Projection, ProjectionError, RebuildError, RebuildSettings, RunnerSettings};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::db;

/// Projectors running in the background of this process.
pub struct Projectors {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Projectors {
    /// Starts every projector on `pool` (the service's), following the feed.
    pub fn spawn(pool: PgPool) -> Projectors {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(projections::follow(
            pool,
            RunnerSettings::default(),
            stopped,
        ));
        Projectors { stop, task }
    }

    /// Stops them between batches and waits.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// `project`: catch up and exit (exit 1 when a projector is halted), or with `follow`
/// keep following until Ctrl-C or SIGTERM.
///
/// # Errors
/// The database cannot be reached.
pub async fn run_project(
    url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let options = db::resolve(url, data_dir).await?;
    let pool = store::connect(
        options,
        &PoolSettings {
            max_connections: 8,
            ..PoolSettings::default()
        },
    )
    .await?;
    if follow {
        println!("following the feed; Ctrl-C to stop");
        std::io::stdout().flush()?;
        let projectors = Projectors::spawn(pool);
        signalled().await;
        projectors.stop().await;
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    match projections::catch_up(&pool, &RunnerSettings::default()).await {
        Ok(done) => {
            for c in done {
                println!(
                    "{}: applied {} events, checkpoint position {} (tx {})",
                    c.projection, c.events, c.checkpoint.position, c.checkpoint.tx_id
                );
            }
            println!("caught up in {:.1?}", started.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(ProjectionError::Halted { projector, reason }) => {
            println!("HALTED: projector {projector}: {reason}");
            println!("fix the cause, then `escrow-ledger rebuild {projector}`");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}

/// `rebuild`: fills fresh tables beside the live ones, checks them, swaps them in.
///
/// # Errors
/// The database cannot be reached; a failed rebuild is exit code 1 with the reason.
pub async fn run_rebuild(
    url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
    projection: Option<&str>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let chosen: Vec<Projection> = match (projection, all) {
        (None, true) => Projection::ALL.to_vec(),
        (Some(name), false) => {
            let Some(p) = Projection::parse(name) else {
                eprintln!(
                    "error: unknown projection {name:?} (payments, reconciliation, balances, trial-balance, disputes, or --all)"
                );
                return Ok(ExitCode::from(2));
            };
            vec![p]
        }
        _ => {
            eprintln!("error: name one projection or --all");
            return Ok(ExitCode::from(2));
        }
    };
    let options = db::resolve(url, data_dir).await?;
    let pool = projections::rebuild::connect(options, 10)
        .await
        .map_err(|e| anyhow::anyhow!("cannot act as {}: {e}", projections::rebuild::OWNER_ROLE))?;
    let names: Vec<&str> = chosen.iter().map(|p| p.name()).collect();
    println!("rebuilding {} beside the live tables", names.join(", "));
    let started = Instant::now();
    let mut last_print = Instant::now();
    let result = projections::rebuild(&pool, &chosen, &RebuildSettings::default(), |p| {
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            #[allow(clippy::cast_precision_loss)]
            let rate = p.events as f64 / started.elapsed().as_secs_f64().max(0.001);
            println!(
                "  {} events read (position {}), {rate:.0} events/s",
                p.events, p.position
            );
            let _ = std::io::stdout().flush();
        }
    })
    .await;
    match result {
        Ok(reports) => {
            for r in reports {
                println!(
                    "{}: {} events, side {} is live at position {}",
                    r.projection,
                    r.events,
                    r.side.as_str(),
                    r.checkpoint.position
                );
                for c in r.checks {
                    println!("  ok: {c}");
                }
            }
            println!("rebuilt in {:.1?}", started.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        Err(RebuildError::Projection(ProjectionError::Database(e))) => Err(e.into()),
        Err(e) => {
            println!("REBUILD FAILED: {e}");
            println!("the live tables were left in place");
            Ok(ExitCode::from(1))
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn signalled() {
    stop_signal().await;
}

/// Waits for Ctrl-C or SIGTERM; returns the exit code a shell gives a process the signal
/// ended: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
pub async fn stop_signal() -> u8 {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => 130,
        () = term => 143,
    }
}
