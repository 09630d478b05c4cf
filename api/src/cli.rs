//! The command line of `contract.md`: one binary, one subcommand per job. Options read the
//! environment here and nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ledger::store::{self, PoolSettings};

use crate::db;

/// The event-sourced escrow ledger.
#[derive(Debug, Parser)]
#[command(name = "escrow-ledger", version, about)]
pub struct Cli {
    /// Where the database is. Unset: a private PostgreSQL cluster of this binary's own.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The private cluster's data folder (default: /var/tmp/escrow-ledger/<hash of cwd>).
    #[arg(long, env = "ESCROW_LEDGER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply the SQL migrations (idempotent).
    Migrate,
    /// Serve the HTTP API (with the projectors unless --no-projectors).
    Serve(crate::serve::ServeArgs),
    /// Run the projectors alone: catch up and exit, or keep following.
    Project {
        /// Keep following the feed.
        #[arg(long)]
        follow: bool,
    },
    /// Rebuild read tables from the event store without stopping readers.
    Rebuild {
        /// The projection to rebuild.
        projection: Option<String>,
        /// Rebuild them all.
        #[arg(long)]
        all: bool,
    },
    /// The one-shot cutover import of a legacy domain, and its parity check.
    Import(crate::import::ImportArgs),
    /// Check the event store's integrity and print its digest.
    Verify(VerifyArgs),
    /// The quick start: a database, an escrow story end to end, what to look at.
    Demo(crate::demo::DemoArgs),
    /// Print a new bearer token and the line to add to the tokens file.
    Token {
        /// coordinator, admin or finance.
        #[arg(long)]
        role: String,
        /// Who the token is for (recorded as the actor of every event it causes).
        #[arg(long)]
        name: String,
        /// Append the token's line to this tokens file (created, readable by its owner
        /// only, if absent) and print only the token: the file stays one `serve` accepts.
        #[arg(long, value_name = "FILE")]
        tokens_file: Option<std::path::PathBuf>,
    },
    /// Benchmarks (not tests): `bench append`, `bench import`, `bench rebuild`.
    Bench(crate::bench::BenchArgs),
}

/// Options of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A digest printed by an earlier `verify`, as POSITION:HEX: prove nothing up to that
    /// position was changed or removed since.
    #[arg(long)]
    pub digest: Option<String>,
}

/// Runs the parsed command line; the exit code is the command's verdict.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes in one line, each said once (a driver's error often repeats
/// its source's text), with a hint when the schema is missing: a command run against a
/// database never migrated fails on a table that does not exist.
fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let mut out = parts.join(": ");
    let undefined_table = err.chain().any(|c| {
        c.downcast_ref::<sqlx::Error>()
            .and_then(sqlx::Error::as_database_error)
            .and_then(sqlx::error::DatabaseError::code)
            .as_deref()
            == Some("42P01")
    });
    // A server never migrated has not even the service's role.
    let no_role = parts.iter().any(|p| {
        p.contains(&format!(
            "role \"{}\" does not exist",
            ledger::store::SERVICE_ROLE
        ))
    });
    if undefined_table || no_role {
        out.push_str(" (is the database migrated? run `escrow-ledger migrate`)");
    }
    out
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.database_url.as_deref();
    match cli.command {
        Command::Token {
            role,
            name,
            tokens_file,
        } => crate::auth::print_new_token(&role, &name, tokens_file.as_deref()),
        Command::Migrate => {
            let options = db::resolve(url, cli.data_dir).await?;
            let applied = db::migrate(&options).await?;
            if applied.is_empty() {
                println!("migrations: up to date");
            } else {
                println!("migrations: applied {applied:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(args) => {
            let expected = args
                .digest
                .as_deref()
                .map(store::parse_digest)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--digest: {e}"))?;
            let options = db::resolve(url, cli.data_dir).await?;
            let pool = store::connect(options, &PoolSettings::default()).await?;
            let report = store::verify(&pool, expected).await?;
            println!(
                "verified {} events in {} streams up to position {}",
                report.events, report.streams, report.last_position
            );
            for fault in &report.faults {
                println!("FAULT: {fault}");
            }
            println!("digest: {}", report.digest_text());
            if report.faults.is_empty() {
                println!("ok: every hash chain holds and every event's postings balance");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} fault(s) found", report.faults.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Serve(args) => crate::serve::run(url, cli.data_dir, args).await,
        Command::Bench(args) => crate::bench::run(url, cli.data_dir, args).await,
        Command::Project { follow } => crate::project::run_project(url, cli.data_dir, follow).await,
        Command::Rebuild { projection, all } => {
            crate::project::run_rebuild(url, cli.data_dir, projection.as_deref(), all).await
        }
        Command::Import(args) => crate::import::run(url, cli.data_dir, args).await,
        Command::Demo(args) => crate::demo::run(url, cli.data_dir, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let err = anyhow::Error::new(io).context("cannot read tokens file t: No such file");
        assert_eq!(describe(&err), "cannot read tokens file t: No such file");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(describe(&err), "outer: inner");
    }

    #[test]
    fn a_server_without_the_service_role_gets_the_migrate_hint() {
        let err = anyhow::anyhow!(
            "error returned from database: role \"escrow_ledger_app\" does not exist"
        );
        assert!(describe(&err).ends_with("run `escrow-ledger migrate`)"));
        let err = anyhow::anyhow!("role \"someone_else\" does not exist");
        assert!(!describe(&err).contains("migrate"));
    }
}
