//! The `escrow-ledger` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = api::cli::Cli::parse();
    api::telemetry::init();
    api::cli::run(cli).await
}
