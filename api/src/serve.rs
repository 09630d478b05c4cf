//! `escrow-ledger serve`: the HTTP API over the service's pool, until Ctrl-C or SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use clap::Args;
use ledger::store::{self, PoolSettings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::auth::Tokens;
use crate::commands::GroupCommit;
use crate::db;
use crate::http::{app, AppState};

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Do not run the projectors in this process.
    #[arg(long)]
    pub no_projectors: bool,
    /// The tokens file (`<role> <name> <sha256 hex>` lines).
    #[arg(long, env = "API_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
    /// Append every command in a transaction of its own instead of grouping the commands
    /// decided at the same moment into one (for comparison; grouping changes no answer).
    #[arg(long)]
    pub no_group_commit: bool,
    /// Most database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub max_connections: u32,
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (tests): ours then only renders empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves until Ctrl-C or SIGTERM.
///
/// # Errors
/// The database, the tokens file or the address cannot be used.
pub async fn run(
    url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
    args: ServeArgs,
) -> anyhow::Result<ExitCode> {
    let options = db::resolve(url, data_dir).await?;
    let tokens = if let Some(path) = &args.tokens_file {
        Tokens::load(path)?
    } else {
        tracing::warn!("no API_TOKENS_FILE: every request needing a token will be refused");
        Tokens::default()
    };
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    let pool = store::connect(
        options,
        &PoolSettings {
            max_connections: args.max_connections,
            ..PoolSettings::default()
        },
    )
    .await
    .with_context(|| format!("cannot connect to the database at {target} (DATABASE_URL)"))?;
    let commits = if args.no_group_commit {
        GroupCommit::disabled(&pool)
    } else {
        GroupCommit::spawn(&pool)
    };
    let state = AppState {
        notifier: ledger::store::Notifier::spawn(pool.clone()),
        commits,
        pool,
        tokens: Arc::new(tokens),
        metrics: metrics_handle(),
    };
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {} (--bind)", args.bind))?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    std::io::stdout().flush()?;
    tracing::info!(%local, projectors = !args.no_projectors, "serving");
    let projectors =
        (!args.no_projectors).then(|| crate::project::Projectors::spawn(state.pool.clone()));
    // The pool's connections and a margin for files, logs and the runtime stay outside
    // the cap on client connections.
    let limits =
        crate::http::listen::Limits::for_this_process(u64::from(args.max_connections) + 64);
    tracing::info!(
        max_connections = limits.max_connections,
        "client connection cap"
    );
    crate::http::listen::serve(listener, app(state), limits, shutdown()).await;
    if let Some(p) = projectors {
        p.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown() {
    crate::project::signalled().await;
    tracing::info!("shutting down");
}
