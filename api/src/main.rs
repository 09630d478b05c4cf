//! The `escrow-ledger` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: the importer, the projectors and the HTTP path
/// allocate and free many short-lived buffers (BSON batches, JSON payloads, statement
/// parameters), and `perf` showed glibc's allocator (`malloc_consolidate`, `_int_free`)
/// taking about two thirds of the importer's own CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = api::cli::Cli::parse();
    api::telemetry::init();
    api::cli::run(cli).await
}
