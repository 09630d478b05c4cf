//! `escrow-ledger serve`: the HTTP API.

use std::process::ExitCode;

use clap::Args;

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// Do not run the projectors in this process.
    #[arg(long)]
    pub no_projectors: bool,
    /// The tokens file (`<role> <name> <sha256 hex>` lines).
    #[arg(long, env = "API_TOKENS_FILE")]
    pub tokens_file: Option<std::path::PathBuf>,
}

/// Serves until Ctrl-C.
///
/// # Errors
/// The database or the address cannot be used.
#[allow(clippy::unused_async)]
pub async fn run(_url: Option<&str>, _data_dir: Option<std::path::PathBuf>, _args: ServeArgs) -> anyhow::Result<ExitCode> {
    eprintln!("escrow-ledger serve: not built yet (it comes with the escrow commands issue)");
    Ok(ExitCode::from(2))
}
