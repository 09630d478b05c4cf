//! `escrow-ledger import payments|disputes` and `import verify <domain>`: the command line
//! of the cutover importer (`contract.md`). Prints progress on standard error, the report
//! on standard output, and writes the JSON report to `--report FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use importer::{Domain, ImportOptions, ProgressMode};
use ledger::store::{self, PoolSettings};

use crate::db;

/// Options of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import or check.
    #[command(subcommand)]
    pub what: ImportWhat,
}

/// The import subcommands.
#[derive(Debug, Subcommand)]
pub enum ImportWhat {
    /// Import `payments`, then `fundsledgerentries`.
    Payments(RunArgs),
    /// Import `disputes` (refused until the payments domain has finished).
    Disputes(RunArgs),
    /// Parity of MongoDB against the ledger for a domain; exit 1 on an unexplained
    /// difference.
    Verify(VerifyArgs),
}

/// Where the legacy MongoDB is.
#[derive(Debug, Args)]
pub struct MongoArgs {
    /// The legacy MongoDB's URI.
    #[arg(long, env = "MONGO_URI", hide_env_values = true)]
    pub mongo_uri: String,
    /// The legacy database's name (default: the one the URI names, else `escrow`).
    #[arg(long)]
    pub mongo_db: Option<String>,
}

impl MongoArgs {
    /// The database to read: `--mongo-db`, else the URI's (`mongodb://host/legacy`), else
    /// `escrow`. A URI naming one database while the import read another would be a
    /// quiet, empty import.
    ///
    /// # Errors
    /// A malformed URI.
    pub async fn database(&self) -> anyhow::Result<String> {
        if let Some(db) = &self.mongo_db {
            return Ok(db.clone());
        }
        Ok(importer::mongo::database_of(&self.mongo_uri)
            .await?
            .unwrap_or_else(|| "escrow".into()))
    }
}

/// Options of `import payments|disputes`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The legacy MongoDB.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Documents per batch (one short transaction each).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Do everything but write (one transaction, rolled back), and print the same report.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the open rejects again (after they were fixed in MongoDB) and import those
    /// now valid.
    #[arg(long)]
    pub retry_rejects: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Log lines instead of a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress_bar: bool,
}

/// The domains `verify` checks.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DomainArg {
    /// Payments and their ledger entries.
    Payments,
    /// Disputes.
    Disputes,
}

/// Options of `import verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The domain to check.
    pub domain: DomainArg,
    /// The legacy MongoDB.
    #[command(flatten)]
    pub mongo: MongoArgs,
    /// Also write the differences as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seconds to wait for the payments projector to apply every event: statuses and
    /// buckets are compared with the projections, so verify fails when it has not.
    #[arg(long, default_value_t = 60)]
    pub wait_projections: u64,
}

/// Runs an import subcommand.
///
/// # Errors
/// The database or MongoDB cannot be reached, the run is refused, or the report file
/// cannot be written.
pub async fn run(
    url: Option<&str>,
    data_dir: Option<PathBuf>,
    args: ImportArgs,
) -> anyhow::Result<ExitCode> {
    let options = db::resolve(url, data_dir).await?;
    let pool = store::connect(
        options,
        &PoolSettings {
            // The import lock's, the batch committing, the next batch's lookups, a background
            // ANALYZE and the NOTIFY to live projectors, with room to spare.
            max_connections: 7,
            ..PoolSettings::default()
        },
    )
    .await?;
    match args.what {
        ImportWhat::Payments(a) => run_import(&pool, Domain::Payments, a).await,
        ImportWhat::Disputes(a) => run_import(&pool, Domain::Disputes, a).await,
        ImportWhat::Verify(a) => {
            let domain = match a.domain {
                DomainArg::Payments => Domain::Payments,
                DomainArg::Disputes => Domain::Disputes,
            };
            let mongo_db = a.mongo.database().await?;
            let outcome = importer::verify::verify(
                &pool,
                domain,
                &a.mongo.mongo_uri,
                &mongo_db,
                std::time::Duration::from_secs(a.wait_projections),
            )
            .await?;
            write_out(&outcome.to_text())?;
            if let Some(path) = &a.report {
                std::fs::write(path, serde_json::to_vec_pretty(&outcome)?)?;
            }
            Ok(if outcome.unexplained() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

async fn run_import(pool: &sqlx::PgPool, domain: Domain, a: RunArgs) -> anyhow::Result<ExitCode> {
    let mongo_db = a.mongo.database().await?;
    let opts = ImportOptions {
        domain,
        mongo_uri: a.mongo.mongo_uri,
        mongo_db,
        batch_size: a.batch_size,
        dry_run: a.dry_run,
        retry_rejects: a.retry_rejects,
        progress: if a.no_progress_bar {
            ProgressMode::Log
        } else {
            ProgressMode::Auto
        },
        report_file: a.report,
    };
    let outcome = tokio::select! {
        outcome = importer::import(pool, &opts) => outcome,
        code = crate::project::stop_signal() => {
            // The batch being committed, if any, commits or not as a whole: the checkpoint
            // is in its transaction, and the next run resumes after the last one kept.
            if let Some(path) = &opts.report_file {
                let mut partial = path.clone().into_os_string();
                partial.push(".partial");
                let _ = std::fs::remove_file(partial);
            }
            if opts.dry_run {
                eprintln!("import {}: dry run stopped by a signal; nothing was kept", domain.name());
            } else {
                eprintln!(
                    "import {}: stopped by a signal; the batches committed so far are kept: run the same command again to resume",
                    domain.name()
                );
            }
            return Ok(ExitCode::from(code));
        }
    };
    let report = match outcome {
        Ok(report) => report,
        Err(importer::ImportError::Report {
            path,
            source,
            report: Some(report),
        }) => {
            // The import is done: say what it did, then why the file is missing.
            write_out(&report.to_text())?;
            anyhow::bail!(
                "the import is done, but its report could not be written to {}: {source}",
                path.display()
            );
        }
        Err(e) => return Err(e.into()),
    };
    write_out(&report.to_text())?;
    // Done, but not final: a script must not go on to the next step of the cutover.
    Ok(if report.legacy_writers_running {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints a report to standard output; a reader that went away (`| head`) is no error:
/// the report is the command's output, not its outcome.
fn write_out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
