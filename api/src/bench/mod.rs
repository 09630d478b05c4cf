//! `escrow-ledger bench ...`: benchmarks, not tests. Each prints its figures beside a
//! baseline measured in the same run against the same database, because the machine is
//! shared and noisy and only ratios mean something.

mod append;
mod import;
mod rebuild;

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::db;

/// Options of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Appends from 1, 8 and 32 writers and batches of 1,000 against raw inserts.
    Append {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Writer counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        writers: Vec<usize>,
    },
    /// Rebuild of every projection over a large store against a plain read of its events,
    /// with a live projector's lag meanwhile, then the admin queue and a month's buckets.
    Rebuild {
        /// Events the store should hold (generated through the append path).
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Generate only what the store lacks of `--events`, so a re-run measures again.
        #[arg(long)]
        reuse: bool,
    },
    /// The importer against a plain sorted scan of the same collections, with its peak
    /// memory and the watermark lag a live projector sees meanwhile.
    Import(import::ImportBenchArgs),
}

/// Runs a benchmark and prints its figures.
///
/// # Errors
/// The database cannot be reached, or a step of the benchmark fails.
pub async fn run(
    url: Option<&str>,
    data_dir: Option<std::path::PathBuf>,
    args: BenchArgs,
) -> anyhow::Result<ExitCode> {
    let options = db::resolve(url, data_dir).await?;
    db::migrate(&options).await?;
    match args.what {
        BenchWhat::Append { seconds, writers } => append::run(options, seconds, &writers).await,
        BenchWhat::Import(args) => import::run(options, args).await,
        BenchWhat::Rebuild { events, reuse } => rebuild::run(options, events, reuse).await,
    }
}
