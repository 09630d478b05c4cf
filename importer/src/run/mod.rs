//! One import run of a domain: `payments` (the `payments` pass, then
//! `fundsledgerentries`, then the status and escrow checks) or `disputes` (refused until
//! payments has finished). Each batch is one short PostgreSQL transaction holding its
//! events, id map rows, rejects, anomalies and checkpoint; a killed run resumes from the
//! checkpoint (`_id > last`) and ends with exactly the events of an uninterrupted one. A
//! live run translates the next batch while one commits (one in flight at a time). A dry
//! run does everything inside one transaction that is rolled back, so its report is the
//! real one's. `--retry-rejects` reads the open rejects again by `_id`.

use std::path::PathBuf;
use std::time::Instant;

use bson::RawDocumentBuf;
use chrono::Utc;
use ledger::event::{Actor, Metadata};
use ledger::store::Notifier;
use serde_json::json;
use sqlx::PgPool;

use crate::check::reconcile_payments;
use crate::ids::Collection;
use crate::mongo::{Legacy, MongoError, PendingCount, LEGACY_COLLECTIONS};
use crate::progress::ProgressMode;
use crate::report::{CollectionReport, Report};
use crate::store::{self, StoreFailure};

mod batch;
mod db;
mod disputes;
mod entries;
mod output;
mod pass;

use db::Db;

/// The loud words of the warning that a collection's count moved during a run.
pub(super) const LEGACY_WRITERS: &str = "LEGACY WRITERS ARE STILL RUNNING";

/// A domain imported in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `payments` then `fundsledgerentries`.
    Payments,
    /// `disputes`.
    Disputes,
}

impl Domain {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Payments => "payments",
            Domain::Disputes => "disputes",
        }
    }

    /// Its collections, in import order.
    pub fn collections(self) -> &'static [Collection] {
        match self {
            Domain::Payments => &[Collection::Payments, Collection::FundsLedgerEntries],
            Domain::Disputes => &[Collection::Disputes],
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The domain.
    pub domain: Domain,
    /// The legacy MongoDB.
    pub mongo_uri: String,
    /// Its database.
    pub mongo_db: String,
    /// Documents per batch (and per transaction).
    pub batch_size: u32,
    /// Write nothing.
    pub dry_run: bool,
    /// Read the open rejects again instead of the collections.
    pub retry_rejects: bool,
    /// How to show progress.
    pub progress: ProgressMode,
    /// Where to write the JSON report (`--report FILE`): every rejected document and
    /// every anomaly, streamed from the tables at the end of the run (a dry run's before
    /// its transaction is rolled back).
    pub report_file: Option<PathBuf>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// MongoDB failed.
    #[error(transparent)]
    Mongo(#[from] MongoError),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] StoreFailure),
    /// The run may not start (disputes before payments, ...).
    #[error("{0}")]
    Refused(String),
    /// The task committing a batch stopped without an answer (it panicked or was
    /// cancelled).
    #[error("the batch writer stopped: {0}")]
    Writer(String),
    /// The JSON report could not be written: before the run (nothing imported), or after
    /// it (the import is done, and `report` holds what the file would have).
    #[error("could not write the report to {}: {source}", path.display())]
    Report {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
        /// The finished run's report, when the run was done.
        report: Option<Box<Report>>,
    },
}

impl From<sqlx::Error> for ImportError {
    fn from(e: sqlx::Error) -> Self {
        ImportError::Store(StoreFailure::Database(e))
    }
}

/// The metadata of an event made from a legacy document.
pub fn metadata(
    collection: Collection,
    object_id: &str,
    digest: &str,
    index: u32,
) -> serde_json::Value {
    let m = Metadata {
        correlation_id: collection.uuid_of(object_id),
        causation_id: None,
        actor: Actor {
            name: "escrow-ledger import".into(),
            role: "importer".into(),
        },
        source: "import".into(),
        legacy: Some(json!({
            "collection": collection.name(),
            "object_id": object_id,
            "digest": digest,
            "index": index,
        })),
    };
    serde_json::to_value(m).unwrap_or_default()
}

fn object_id_of(raw: &RawDocumentBuf) -> String {
    match raw.get("_id") {
        Ok(Some(bson::RawBsonRef::ObjectId(o))) => o.to_hex(),
        Ok(Some(other)) => bson::Bson::try_from(other.to_raw_bson()).map_or_else(
            |_| "?".into(),
            |b| long_id(b.into_canonical_extjson().to_string()),
        ),
        _ => "?".into(),
    }
}

/// The id text of a document whose `_id` is no ObjectId (it is rejected, `bad_id`): its
/// Extended JSON, or, beyond [`ledger::account::MAX_KEY_LEN`] bytes, `sha256:<hex>` of it,
/// since it keys the rejects and anomalies (an index refuses an entry over about 2.7 kB).
/// The reject keeps the whole document.
fn long_id(text: String) -> String {
    use sha2::Digest;
    if text.len() <= ledger::account::MAX_KEY_LEN {
        text
    } else {
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(text.as_bytes()))
        )
    }
}

/// A finished pass, its count at the end still coming.
struct Pass {
    figures: CollectionReport,
    at_end: PendingCount,
    /// Read from the collection's first document (no checkpoint): its counts are counts
    /// of the whole collection, the same as the run's.
    from_start: bool,
}

struct Run<'a> {
    opts: &'a ImportOptions,
    legacy: Legacy,
    db: Db,
    report: Report,
    /// The entries with a reference of the batch a live run is still committing while it
    /// translates the next: not in PostgreSQL yet, and the next batch's duplicate-webhook
    /// check needs them. Empty whenever no batch is in flight.
    uncommitted: Vec<store::EntryReference>,
    /// The entries pass has begun in this database (this run's or an earlier one's): a
    /// payment read now may have entries in suspense already.
    entries_started: bool,
}

/// Runs an import (or a dry run, or a retry of rejects) and returns its report.
///
/// # Errors
/// [`ImportError`]: MongoDB or PostgreSQL failed, or the run may not start. Whatever
/// batches committed before stay committed (the next run resumes after them).
pub async fn import(pool: &PgPool, opts: &ImportOptions) -> Result<Report, ImportError> {
    let started = Instant::now();
    // The report file is written beside its place and renamed at the end (never half a
    // file); made now, so that a path that cannot be written fails before the import.
    let report_file = opts
        .report_file
        .as_ref()
        .map(|path| {
            if path.is_dir() {
                return Err(ImportError::Report {
                    path: path.clone(),
                    source: std::io::Error::other("a folder: --report takes a file's path"),
                    report: None,
                });
            }
            let mut partial = path.clone().into_os_string();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            std::fs::File::create(&partial)
                .map(|_| (path.clone(), partial.clone()))
                .map_err(|source| ImportError::Report {
                    path: partial,
                    source,
                    report: None,
                })
        })
        .transpose()?;
    let outcome = run_import(pool, opts, started, report_file.as_ref()).await;
    if outcome.is_err() {
        if let Some((_, partial)) = &report_file {
            let _ = std::fs::remove_file(partial);
        }
    }
    outcome
}

async fn run_import(
    pool: &PgPool,
    opts: &ImportOptions,
    started: Instant,
    report_file: Option<&(PathBuf, PathBuf)>,
) -> Result<Report, ImportError> {
    let legacy = Legacy::connect(&opts.mongo_uri, &opts.mongo_db).await?;
    legacy.require_any(&LEGACY_COLLECTIONS).await?;
    // Held until the run ends (its connection closes with it).
    let _one_at_a_time = store::lock_imports(pool).await?.ok_or_else(|| {
        ImportError::Refused(
            "another import is running on this database; wait for it to end (one import at a time)"
                .into(),
        )
    })?;
    let db = if opts.dry_run {
        let mut tx = pool.begin().await?;
        // The dry run's one transaction waits on MongoDB between batches.
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
            .execute(&mut *tx)
            .await?;
        Db::Dry(Box::new(tx))
    } else {
        // Live projectors learn of each committed batch (NOTIFY outside the batches).
        Db::Live {
            pool: pool.clone(),
            notifier: Notifier::spawn(pool.clone()),
            analyzing: None,
        }
    };
    let mut run = Run {
        opts,
        legacy,
        db,
        report: Report {
            domain: opts.domain.name().into(),
            mode: if opts.dry_run {
                "dry_run".into()
            } else if opts.retry_rejects {
                "retry_rejects".into()
            } else {
                "import".into()
            },
            started_at: Some(Utc::now()),
            dry_run: opts.dry_run,
            ..Report::default()
        },
        uncommitted: Vec::new(),
        entries_started: false,
    };
    run.go().await?;
    run.report.finished_at = Some(Utc::now());
    run.report.seconds = started.elapsed().as_secs_f64();
    if let Some((path, partial)) = report_file {
        if let Err(e) = run.write_report(partial).await {
            return Err(match e {
                ImportError::Report { path, source, .. } => ImportError::Report {
                    path,
                    source,
                    report: Some(Box::new(run.report)),
                },
                other => other,
            });
        }
        std::fs::rename(partial, path).map_err(|source| ImportError::Report {
            path: path.clone(),
            source,
            report: Some(Box::new(run.report.clone())),
        })?;
    }
    if let Db::Dry(tx) = run.db {
        tx.rollback().await?;
    }
    Ok(run.report)
}

impl Run<'_> {
    async fn go(&mut self) -> Result<(), ImportError> {
        let domain = self.opts.domain;
        if domain == Domain::Disputes {
            let mut c = self.db.conn().await?;
            if !store::domain_completed(&mut c, "payments").await? {
                return Err(ImportError::Refused(
                    "import disputes refuses to start: the payments domain has not finished (run `import payments` first)".into(),
                ));
            }
        }
        if self.opts.retry_rejects {
            let mut c = self.db.conn().await?;
            if !store::domain_completed(&mut c, domain.name()).await? {
                return Err(ImportError::Refused(format!(
                    "--retry-rejects reads again the rejects of a finished import, and import {0} has not finished here (run `import {0}` first)",
                    domain.name()
                )));
            }
        }
        {
            let mut c = self.db.conn().await?;
            store::mark_domain(&mut c, domain.name(), false).await?;
        }
        // Every collection of the domain is counted before the first pass and after the
        // last: a pass only sees its own collection change while it reads it. The counts
        // run in the background and are compared once the passes are done. A pass from a
        // collection's start takes the run's first count as its own; the last pass's count
        // at its end is the run's last count of that collection.
        let mut totals: Vec<PendingCount> = domain
            .collections()
            .iter()
            .map(|c| self.legacy.count_in_background(c.name(), None))
            .collect();
        let mut passes = Vec::new();
        for (&collection, total) in domain.collections().iter().zip(totals.iter_mut()) {
            if self.opts.retry_rejects {
                self.retry(collection).await?;
            } else {
                passes.push(self.pass(collection, total).await?);
            }
        }
        let last = domain.collections().len().saturating_sub(1);
        let ends: Vec<Option<PendingCount>> = domain
            .collections()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let shared = i == last && passes.get(i).is_some_and(|p| p.from_start);
                (!shared).then(|| self.legacy.count_in_background(c.name(), None))
            })
            .collect();
        {
            let mut c = self.db.conn().await?;
            let disputes = domain == Domain::Disputes
                || store::domain_completed(&mut c, Domain::Disputes.name()).await?;
            reconcile_payments(&mut c, disputes).await?;
        }
        let mut pass_ends = Vec::with_capacity(passes.len());
        for pass in passes {
            pass_ends.push(self.pass_counted(pass).await?);
        }
        for (i, ((&collection, mut before), after)) in domain
            .collections()
            .iter()
            .zip(totals)
            .zip(ends)
            .enumerate()
        {
            let name = collection.name();
            let before = before.get().await?;
            let after = match after {
                Some(count) => count.value().await?,
                None => pass_ends.get(i).copied().unwrap_or(before),
            };
            // Said once per collection (a pass may have said it); other warnings about the
            // collection (rejects of deleted documents closed) do not count.
            let already = self
                .report
                .warnings
                .iter()
                .any(|w| w.starts_with(name) && w.contains(LEGACY_WRITERS));
            if after != before && !already {
                let warning = format!(
                    "{name}: {before} documents when the run started but {after} when it ended: {LEGACY_WRITERS}; stop them and run the import again"
                );
                tracing::warn!("{warning}");
                self.report.warnings.push(warning);
                self.report.legacy_writers_running = true;
            }
        }
        {
            let mut c = self.db.conn().await?;
            store::mark_domain(&mut c, domain.name(), true).await?;
        }
        self.fill_lists().await?;
        Ok(())
    }
}
