//! One import run of a domain: `payments` (the `payments` pass, then
//! `fundsledgerentries`, then the status and escrow checks) or `disputes` (refused until
//! payments has finished). Each batch is one short PostgreSQL transaction holding its
//! events, id map rows, rejects, anomalies and checkpoint; a killed run resumes from the
//! checkpoint (`_id > last`) and ends with exactly the events of an uninterrupted one. A dry
//! run does everything inside one transaction that is rolled back, so its report is the
//! real one's. `--retry-rejects` reads the open rejects again by `_id`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bson::oid::ObjectId;
use bson::RawDocumentBuf;
use chrono::Utc;
use futures::TryStreamExt;
use ledger::event::{Actor, Metadata, NewEvent};
use ledger::payment::{EntryKind, EntryPlacement, PaymentCreated, PaymentEvent, STREAM_TYPE};
use ledger::posting::transfer;
use ledger::store::Notifier;
use ledger::ExpectedVersion;
use serde_json::json;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::check::{fold_payments, reconcile_payments};
use crate::ids::{event_id, Collection};
use crate::legacy::{ejson, AnomalyKind, Reject, RejectCode};
use crate::mongo::{Legacy, MongoError, PendingCount};
use crate::progress::{Progress, ProgressMode};
use crate::report::{CollectionReport, JsonLists, Report, SAMPLE};
use crate::store::{self, AnomalyRow, BatchWrite, DepositRef, IdMapRow, RejectRow, StoreFailure};
use crate::translate::{
    duplicates_of, finish_dispute, parse_dispute, parse_entry, payment, place_entry,
    DisputePayment, ParsedEntry, PaymentContext,
};

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

/// The database a run writes to: batches committed one by one, or one transaction rolled
/// back at the end (dry run).
enum Db {
    Live(PgPool, Notifier),
    Dry(Box<Transaction<'static, Postgres>>),
}

/// A connection of the run: pooled, or the dry run's transaction.
enum Conn<'a> {
    Pooled(PoolConnection<Postgres>),
    Borrowed(&'a mut PgConnection),
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Borrowed(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Pooled(c) => c,
            Conn::Borrowed(c) => c,
        }
    }
}

impl Db {
    async fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        Ok(match self {
            Db::Live(pool, _) => Conn::Pooled(pool.acquire().await?),
            Db::Dry(tx) => Conn::Borrowed(tx),
        })
    }

    /// Analyzes the tables the import fills (not in a dry run: its rows are its own).
    /// Never fails the import: statistics are an optimization, so a failure is logged.
    async fn analyze(&mut self) {
        if let Db::Live(pool, _) = self {
            let done = match pool.acquire().await {
                Ok(mut conn) => store::analyze(&mut conn).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("cannot act as the tables' owner: left to autovacuum");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not analyze the import's tables; going on");
                }
            }
        }
    }

    async fn write(&mut self, batch: BatchWrite) -> Result<u64, StoreFailure> {
        match self {
            Db::Live(pool, notifier) => {
                let mut tx = pool.begin().await?;
                let n = store::write_batch(&mut tx, batch).await?;
                tx.commit().await?;
                notifier.committed();
                Ok(n)
            }
            Db::Dry(tx) => store::write_batch(tx, batch).await,
        }
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
        Ok(Some(other)) => bson::Bson::try_from(other.to_raw_bson())
            .map_or_else(|_| "?".into(), |b| b.into_canonical_extjson().to_string()),
        _ => "?".into(),
    }
}

/// A finished pass, its count at the end still coming.
struct Pass {
    figures: CollectionReport,
    at_end: PendingCount,
}

struct Run<'a> {
    opts: &'a ImportOptions,
    legacy: Legacy,
    db: Db,
    report: Report,
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
    let db = if opts.dry_run {
        let mut tx = pool.begin().await?;
        // The dry run's one transaction waits on MongoDB between batches.
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0")
            .execute(&mut *tx)
            .await?;
        Db::Dry(Box::new(tx))
    } else {
        // Live projectors learn of each committed batch (NOTIFY outside the batches).
        Db::Live(pool.clone(), Notifier::spawn(pool.clone()))
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
        {
            let mut c = self.db.conn().await?;
            store::mark_domain(&mut c, domain.name(), false).await?;
        }
        // Every collection of the domain is counted before the first pass and after the
        // last: a pass only sees its own collection change while it reads it. The counts
        // run in the background and are compared once the passes are done.
        let totals: Vec<PendingCount> = domain
            .collections()
            .iter()
            .map(|c| self.legacy.count_in_background(c.name(), None))
            .collect();
        let mut passes = Vec::new();
        for &collection in domain.collections() {
            if self.opts.retry_rejects {
                self.retry(collection).await?;
            } else {
                passes.push(self.pass(collection).await?);
            }
        }
        let ends: Vec<PendingCount> = domain
            .collections()
            .iter()
            .map(|c| self.legacy.count_in_background(c.name(), None))
            .collect();
        {
            let mut c = self.db.conn().await?;
            reconcile_payments(&mut c, domain == Domain::Disputes).await?;
        }
        for pass in passes {
            self.pass_counted(pass).await?;
        }
        for ((&collection, before), after) in domain.collections().iter().zip(totals).zip(ends) {
            let name = collection.name();
            let (before, after) = (before.value().await?, after.value().await?);
            let already = self.report.warnings.iter().any(|w| w.starts_with(name));
            if after != before && !already {
                let warning = format!(
                    "{name}: {before} documents when the run started but {after} when it ended: LEGACY WRITERS ARE STILL RUNNING; stop them and run the import again"
                );
                tracing::warn!("{warning}");
                self.report.warnings.push(warning);
            }
        }
        {
            let mut c = self.db.conn().await?;
            store::mark_domain(&mut c, domain.name(), true).await?;
        }
        self.fill_lists().await?;
        Ok(())
    }
    /// Reads one collection through. Its counts (documents after the checkpoint at the
    /// start and at the end of the pass) come in the background: see [`Run::pass_counted`].
    async fn pass(&mut self, collection: Collection) -> Result<Pass, ImportError> {
        let name = collection.name();
        let after = {
            let mut c = self.db.conn().await?;
            store::checkpoint(&mut c, name)
                .await?
                .and_then(|(last, _)| ObjectId::parse_str(&last).ok())
        };
        let mut at_start = Some(self.legacy.count_in_background(name, after));
        let mut progress = Progress::start(self.opts.progress, name, None);
        let mut figures = CollectionReport {
            collection: name.into(),
            ..CollectionReport::default()
        };
        let mut rx = self.legacy.batches(name, after, self.opts.batch_size);
        // Analyze after the first batches and each time the pass quadrupled.
        let mut analyze_at = u64::from(self.opts.batch_size) * 2;
        while let Some(batch) = rx.recv().await {
            let docs = batch?;
            let n = docs.len() as u64;
            let mut write = self.process(collection, &docs, false, &mut figures).await?;
            if let Some(last) = docs.last() {
                let last = object_id_of(last);
                if crate::ids::is_object_id_hex(&last) {
                    write.checkpoint = Some((name, last, i64::try_from(n).unwrap_or(0)));
                }
            }
            let written = self.db.write(write).await?;
            figures.read += n;
            figures.events_written += written;
            self.report.events_written += written;
            progress.advance(n);
            if let Some(count) = at_start.take_if(|c| c.is_ready()) {
                figures.documents_at_start = count.value().await?;
                progress.set_total(figures.documents_at_start);
            }
            if figures.read >= analyze_at {
                analyze_at = figures.read.saturating_mul(4);
                self.db.analyze().await;
            }
        }
        if let Some(count) = at_start {
            figures.documents_at_start = count.value().await?;
            progress.set_total(figures.documents_at_start);
        }
        progress.finish();
        let at_end = self.legacy.count_in_background(name, after);
        self.db.analyze().await;
        let mut c = self.db.conn().await?;
        store::complete_collection(&mut c, name).await?;
        drop(c);
        Ok(Pass { figures, at_end })
    }

    /// Completes a pass's figures with its count at the end, and says loudly when the
    /// collection changed while it was read.
    async fn pass_counted(&mut self, pass: Pass) -> Result<(), ImportError> {
        let Pass {
            mut figures,
            at_end,
        } = pass;
        figures.documents_at_end = at_end.value().await?;
        if figures.documents_at_end != figures.documents_at_start {
            let warning = format!(
                "{}: {} documents to read at the start but {} at the end: LEGACY WRITERS ARE STILL RUNNING; stop them and run the import again",
                figures.collection, figures.documents_at_start, figures.documents_at_end
            );
            tracing::warn!("{warning}");
            self.report.warnings.push(warning);
        }
        self.report.collections.push(figures);
        Ok(())
    }

    async fn retry(&mut self, collection: Collection) -> Result<(), ImportError> {
        let name = collection.name();
        let ids: Vec<ObjectId> = {
            let mut c = self.db.conn().await?;
            store::open_rejects(&mut c, name)
                .await?
                .iter()
                .filter_map(|h| ObjectId::parse_str(h).ok())
                .collect()
        };
        let mut figures = CollectionReport {
            collection: name.into(),
            documents_at_start: ids.len() as u64,
            documents_at_end: ids.len() as u64,
            ..CollectionReport::default()
        };
        let mut progress = Progress::start(self.opts.progress, name, Some(ids.len() as u64));
        let chunk = usize::try_from(self.opts.batch_size).unwrap_or(500).max(1);
        for part in ids.chunks(chunk) {
            let docs = self.legacy.by_ids(name, part).await?;
            let n = docs.len() as u64;
            let write = self.process(collection, &docs, true, &mut figures).await?;
            let written = self.db.write(write).await?;
            figures.read += n;
            figures.events_written += written;
            self.report.events_written += written;
            progress.advance(n);
        }
        progress.finish();
        self.report.collections.push(figures);
        Ok(())
    }

    async fn process(
        &mut self,
        collection: Collection,
        docs: &[RawDocumentBuf],
        retry: bool,
        figures: &mut CollectionReport,
    ) -> Result<BatchWrite, ImportError> {
        let mut write = BatchWrite::default();
        match collection {
            Collection::Payments => {
                payments_batch(docs, &mut write);
                if retry {
                    self.keep_payments_with_suspense_entries(docs, &mut write)
                        .await?;
                }
            }
            Collection::FundsLedgerEntries => self.entries_batch(docs, &mut write).await?,
            Collection::Disputes => self.disputes_batch(docs, &mut write).await?,
            _ => {}
        }
        figures.rejected += write.rejects.len() as u64;
        figures.imported += write.id_map.len() as u64;
        if retry {
            write.resolved = write
                .id_map
                .iter()
                .map(|r| (r.collection, r.object_id.clone()))
                .collect();
        }
        Ok(write)
    }

    /// A retried payment whose ledger entries were imported while it was rejected stays
    /// rejected (`entries_in_suspense`). Those entries sit on their own streams, their
    /// money in `escrow:<payment>` and `platform:suspense`: a payment imported now would
    /// have a history holding nothing while its escrow account holds that money. The way
    /// out is an adjustment out of suspense, or a fresh import (`docs/import.md`).
    async fn keep_payments_with_suspense_entries(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let accounts: Vec<String> = write
            .appends
            .iter()
            .map(|a| ledger::Account::Escrow(a.stream_id).to_string())
            .collect();
        if accounts.is_empty() {
            return Ok(());
        }
        let held: Vec<(String, i64)> = {
            let mut c = self.db.conn().await?;
            store::postings_of_accounts(&mut c, &accounts).await?
        };
        for (account, postings) in held {
            let Some(a) = write
                .appends
                .iter()
                .position(|a| ledger::Account::Escrow(a.stream_id).to_string() == account)
            else {
                continue;
            };
            let stream_id = write.appends.remove(a).stream_id;
            let Some(m) = write.id_map.iter().position(|r| r.id == stream_id) else {
                continue;
            };
            let hex = write.id_map.remove(m).object_id;
            write.anomalies.retain(|r| r.object_id != hex);
            if let Some(raw) = docs.iter().find(|d| object_id_of(d) == hex) {
                let why = Reject::whole(
                    RejectCode::EntriesInSuspense,
                    format!(
                        "{postings} postings of its ledger entries were imported into {account} and \
                         platform:suspense while it was rejected; move them with an adjustment \
                         out of suspense, or import into a fresh database"
                    ),
                );
                write
                    .rejects
                    .push(reject_row(Collection::Payments, raw, &why));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    async fn entries_batch(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let parsed: Vec<Result<ParsedEntry, Reject>> =
            docs.iter().map(|d| parse_entry(d)).collect();
        let mut hexes: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().and_then(|p| p.payment_hex.clone()))
            .collect();
        hexes.sort();
        hexes.dedup();
        let uuids: Vec<Uuid> = hexes
            .iter()
            .map(|h| Collection::Payments.uuid_of(h))
            .collect();
        let terms = {
            let mut c = self.db.conn().await?;
            store::payment_terms(&mut c, &uuids).await?
        };
        let mut contexts: HashMap<String, PaymentContext> = HashMap::new();
        let mut unknown = Vec::new();
        for h in &hexes {
            match terms.get(&Collection::Payments.uuid_of(h)) {
                Some(t) => {
                    contexts.insert(h.clone(), PaymentContext::Imported(Box::new(t.clone())));
                }
                None => unknown.push(h.clone()),
            }
        }
        let oids: Vec<ObjectId> = unknown
            .iter()
            .filter_map(|h| ObjectId::parse_str(h).ok())
            .collect();
        for d in self
            .legacy
            .by_ids(Collection::Payments.name(), &oids)
            .await?
        {
            let context = match payment(&d) {
                Ok(_) => PaymentContext::NotImported,
                Err(r) => PaymentContext::Rejected(r.to_string()),
            };
            contexts.insert(object_id_of(&d), context);
        }
        // Duplicate candidates: this batch's entries in memory, earlier batches' from
        // PostgreSQL by an indexed lookup. (Asking MongoDB for the references made it scan
        // the whole collection for every batch: it has no index on `reference`.)
        let references: Vec<String> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().and_then(|p| p.reference.clone()))
            .collect();
        let earlier = {
            let mut c = self.db.conn().await?;
            store::entries_with_references(&mut c, &references).await?
        };
        let candidates: Vec<ParsedEntry> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().filter(|p| p.reference.is_some()).cloned())
            .collect();
        for (raw, p) in docs.iter().zip(parsed) {
            let p = match p {
                Ok(p) => p,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::FundsLedgerEntries, raw, &r));
                    continue;
                }
            };
            let context = p
                .payment_hex
                .as_ref()
                .map(|h| contexts.get(h).cloned().unwrap_or(PaymentContext::Missing));
            let placed = place_entry(&p, context.as_ref());
            if let Some(reference) = &p.reference {
                write.references.push(store::EntryReference {
                    object_id: p.source.object_id.clone(),
                    reference: reference.clone(),
                    kind: p.kind.as_str().to_owned(),
                    amount: p.amount,
                    created_at: p.created_at,
                    imported: placed.is_ok(),
                });
            }
            let placed = match placed {
                Ok(placed) => placed,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::FundsLedgerEntries, raw, &r));
                    continue;
                }
            };
            let hex = &p.source.object_id;
            let mut anomalies = placed.anomalies.clone();
            // The copies, this batch's and earlier batches', named in `_id` order whatever
            // order the lookup returned them in: a resumed run words the detail the same.
            let mut copies: Vec<(&str, chrono::DateTime<Utc>, bool)> =
                duplicates_of(&p, &candidates)
                    .into_iter()
                    .map(|o| (o.source.object_id.as_str(), o.created_at, false))
                    .chain(
                        earlier_duplicates(&p, &earlier)
                            .into_iter()
                            .map(|o| (o.object_id.as_str(), o.created_at, o.imported)),
                    )
                    .collect();
            copies.sort_by(|a, b| a.0.cmp(b.0));
            copies.dedup_by(|a, b| a.0 == b.0);
            for (other, at, written_earlier) in copies {
                anomalies.push(duplicate_anomaly(&p, other, at));
                if written_earlier {
                    // The earlier entry was written before this one was read: list it now.
                    let back = duplicate_anomaly(&p, hex, at);
                    push_anomalies(write, Collection::FundsLedgerEntries, other, vec![back]);
                }
            }
            let e = &placed.event;
            let event = NewEvent {
                event_id: event_id(
                    Collection::FundsLedgerEntries,
                    hex,
                    0,
                    "LedgerEntryImported",
                ),
                event_type: "LedgerEntryImported".into(),
                schema_version: 1,
                payload: PaymentEvent::LedgerEntryImported(e.clone()).payload(),
                metadata: metadata(Collection::FundsLedgerEntries, hex, &p.source.digest, 0),
                occurred_at: p.created_at,
                postings: transfer(e.from.clone(), e.to.clone(), e.asset, e.amount).to_vec(),
            };
            if let (EntryKind::Deposit, EntryPlacement::Payment, Some(reference), Some(pid)) =
                (e.kind, e.placement, e.reference.as_ref(), e.payment_id)
            {
                if let Some(PaymentContext::Imported(t)) = &context {
                    write.deposits.push(DepositRef {
                        provider: t.provider.clone(),
                        reference: reference.clone(),
                        payment_id: pid,
                        event_id: event.event_id,
                    });
                }
            }
            write.push_events(
                placed.stream_id,
                placed.stream_type,
                ExpectedVersion::Any,
                vec![event],
            );
            write.id_map.push(IdMapRow {
                collection: Collection::FundsLedgerEntries.name(),
                object_id: hex.clone(),
                id: p.entry_id,
                stream_id: placed.stream_id,
                stream_type: placed.stream_type,
                digest: p.source.digest.clone(),
                purchase_request: None,
            });
            push_anomalies(write, Collection::FundsLedgerEntries, hex, anomalies);
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    async fn disputes_batch(
        &mut self,
        docs: &[RawDocumentBuf],
        write: &mut BatchWrite,
    ) -> Result<(), ImportError> {
        let parsed: Vec<_> = docs.iter().map(|d| parse_dispute(d)).collect();
        // Find each dispute's payment: by paymentId, else by purchaseRequestId.
        let mut found: Vec<Result<Uuid, Reject>> = Vec::with_capacity(parsed.len());
        for p in &parsed {
            let Ok(p) = p else {
                found.push(Err(Reject::whole(RejectCode::MalformedBson, "")));
                continue;
            };
            let result = if let Some(h) = &p.payment_hex {
                Ok(Collection::Payments.uuid_of(h))
            } else if let Some(pr) = &p.imported.purchase_request {
                let mut c = self.db.conn().await?;
                let (imported, rejected) =
                    store::payments_of_purchase_request(&mut c, &pr.account_key()).await?;
                match (imported.as_slice(), rejected) {
                    ([one], 0) => Ok(*one),
                    ([], 0) => Err(Reject::at(
                        RejectCode::PaymentNotFound,
                        "purchaseRequestId",
                        "no paymentId and no legacy payment has this purchaseRequestId",
                    )),
                    ([], 1) => Err(Reject::at(
                        RejectCode::PaymentNotImported,
                        "purchaseRequestId",
                        "no paymentId and the one payment with this purchaseRequestId was rejected",
                    )),
                    (found, rejected) => Err(Reject::at(
                        RejectCode::AmbiguousPayment,
                        "purchaseRequestId",
                        format!(
                            "no paymentId and several payments have this purchaseRequestId ({} imported, {rejected} rejected)",
                            found.len()
                        ),
                    )),
                }
            } else {
                Err(Reject::at(
                    RejectCode::PaymentNotFound,
                    "paymentId",
                    "neither paymentId nor purchaseRequestId",
                ))
            };
            found.push(result);
        }
        let ids: Vec<Uuid> = found
            .iter()
            .filter_map(|f| f.as_ref().ok().copied())
            .collect();
        let (terms, mut states) = {
            let mut c = self.db.conn().await?;
            let terms: HashMap<Uuid, PaymentCreated> = store::payment_terms(&mut c, &ids).await?;
            let states = fold_payments(&mut c, &ids).await?;
            (terms, states)
        };
        // Payments named by paymentId but not imported: rejected, or absent from MongoDB.
        let missing: Vec<ObjectId> = parsed
            .iter()
            .zip(&found)
            .filter_map(|(p, f)| match (p, f) {
                (Ok(p), Ok(id)) if !terms.contains_key(id) => p
                    .payment_hex
                    .as_deref()
                    .and_then(|h| ObjectId::parse_str(h).ok()),
                _ => None,
            })
            .collect();
        let mut in_mongo: HashMap<String, String> = HashMap::new();
        for d in self
            .legacy
            .by_ids(Collection::Payments.name(), &missing)
            .await?
        {
            let why = match payment(&d) {
                Ok(_) => "it was not imported".to_owned(),
                Err(r) => format!("it was rejected: {r}"),
            };
            in_mongo.insert(object_id_of(&d), why);
        }
        for ((raw, p), f) in docs.iter().zip(parsed).zip(found) {
            let p = match p {
                Ok(p) => p,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::Disputes, raw, &r));
                    continue;
                }
            };
            let finished = f.and_then(|payment_id| {
                let t = terms.get(&payment_id).ok_or_else(|| {
                    let hex = p.payment_hex.clone().unwrap_or_default();
                    match in_mongo.get(&hex) {
                        Some(why) => Reject::at(
                            RejectCode::PaymentNotImported,
                            "paymentId",
                            format!("payment {hex}: {why}"),
                        ),
                        None => Reject::at(
                            RejectCode::PaymentNotFound,
                            "paymentId",
                            format!("payment {hex} does not exist"),
                        ),
                    }
                })?;
                finish_dispute(
                    &p,
                    DisputePayment {
                        payment_id,
                        asset: t.asset,
                        by_purchase_request: p.payment_hex.is_none(),
                    },
                )
            });
            let (imported, mut anomalies) = match finished {
                Ok(x) => x,
                Err(r) => {
                    write
                        .rejects
                        .push(reject_row(Collection::Disputes, raw, &r));
                    continue;
                }
            };
            let hex = p.source.object_id.clone();
            let payment_id = imported.opened.payment_id;
            let dispute_id = p.dispute_id;
            let event = ledger::dispute::DisputeEvent::DisputeImported(imported.clone());
            write.push_events(
                dispute_id,
                ledger::dispute::STREAM_TYPE,
                ExpectedVersion::NoStream,
                vec![NewEvent {
                    event_id: event_id(Collection::Disputes, &hex, 0, "DisputeImported"),
                    event_type: "DisputeImported".into(),
                    schema_version: 1,
                    payload: event.payload(),
                    metadata: metadata(Collection::Disputes, &hex, &p.source.digest, 0),
                    occurred_at: imported.created_at,
                    postings: Vec::new(),
                }],
            );
            if !imported.status.is_terminal() {
                let state = states.entry(payment_id).or_default();
                match state.payment.freeze(dispute_id) {
                    Ok(events) => {
                        for e in &events {
                            state.payment.apply(e, imported.created_at);
                        }
                        let frozen = &events[0];
                        write.push_events(
                            payment_id,
                            STREAM_TYPE,
                            ExpectedVersion::Any,
                            vec![NewEvent {
                                event_id: event_id(Collection::Disputes, &hex, 1, "EscrowFrozen"),
                                event_type: "EscrowFrozen".into(),
                                schema_version: 1,
                                payload: frozen.payload(),
                                metadata: metadata(Collection::Disputes, &hex, &p.source.digest, 1),
                                occurred_at: imported.created_at,
                                postings: Vec::new(),
                            }],
                        );
                    }
                    Err(e) => anomalies.push(crate::legacy::Anomaly::new(
                        AnomalyKind::OpenDisputeNotFrozen,
                        format!("payment {payment_id} could not be frozen: {e}"),
                    )),
                }
            }
            write.id_map.push(IdMapRow {
                collection: Collection::Disputes.name(),
                object_id: hex.clone(),
                id: dispute_id,
                stream_id: dispute_id,
                stream_type: ledger::dispute::STREAM_TYPE,
                digest: p.source.digest.clone(),
                purchase_request: None,
            });
            push_anomalies(write, Collection::Disputes, &hex, anomalies);
        }
        Ok(())
    }

    /// The collections whose rejects and anomalies belong in this run's report.
    fn listed_collections(&self) -> Vec<&'static str> {
        let mut names: Vec<&str> = self
            .opts
            .domain
            .collections()
            .iter()
            .map(|c| c.name())
            .collect();
        if self.opts.domain == Domain::Disputes {
            names.push(Collection::Payments.name());
        }
        names
    }

    /// Fills the report's counts and samples from the tables: complete across resumed
    /// runs, and of bounded size (the full lists go to the JSON file, [`Run::write_report`]).
    async fn fill_lists(&mut self) -> Result<(), ImportError> {
        let names = self.listed_collections();
        let mut c = self.db.conn().await?;
        let rejected =
            store::listed_sample(&mut c, store::Listing::Rejects, &names, SAMPLE).await?;
        let anomalies =
            store::listed_sample(&mut c, store::Listing::Anomalies, &names, SAMPLE).await?;
        drop(c);
        (self.report.rejected_counts, self.report.rejected) = rejected;
        (self.report.anomaly_counts, self.report.anomalies) = anomalies;
        Ok(())
    }

    /// Writes the JSON report to `path`, every listed id streamed from the tables.
    async fn write_report(&mut self, path: &Path) -> Result<(), ImportError> {
        let failed = |source: std::io::Error| ImportError::Report {
            path: path.to_owned(),
            source,
            report: None,
        };
        let names = self.listed_collections();
        let file = std::fs::File::create(path).map_err(failed)?;
        let mut json =
            JsonLists::start(std::io::BufWriter::new(file), &self.report).map_err(failed)?;
        let mut c = self.db.conn().await?;
        for (name, listing) in [
            ("rejected", store::Listing::Rejects),
            ("anomalies", store::Listing::Anomalies),
        ] {
            json.begin(name).map_err(failed)?;
            let mut rows = store::listed(&mut c, listing, &names);
            while let Some((key, item)) = rows.try_next().await? {
                json.item(&key, &item).map_err(failed)?;
            }
            drop(rows);
            json.end().map_err(failed)?;
        }
        json.finish().map_err(failed)?;
        Ok(())
    }
}

/// Translates a batch of payments (no lookups needed).
fn payments_batch(docs: &[RawDocumentBuf], write: &mut BatchWrite) {
    for raw in docs {
        match payment(raw) {
            Ok((imported, source)) => {
                let hex = source.object_id.clone();
                let id = imported.terms.payment_id;
                let purchase_request = Some(imported.terms.purchase_request.account_key());
                let event = PaymentEvent::PaymentImported(imported.clone());
                write.push_events(
                    id,
                    STREAM_TYPE,
                    ExpectedVersion::NoStream,
                    vec![NewEvent {
                        event_id: event_id(Collection::Payments, &hex, 0, "PaymentImported"),
                        event_type: "PaymentImported".into(),
                        schema_version: 1,
                        payload: event.payload(),
                        metadata: metadata(Collection::Payments, &hex, &source.digest, 0),
                        occurred_at: imported.created_at,
                        postings: Vec::new(),
                    }],
                );
                write.id_map.push(IdMapRow {
                    collection: Collection::Payments.name(),
                    object_id: hex.clone(),
                    id,
                    stream_id: id,
                    stream_type: STREAM_TYPE,
                    digest: source.digest.clone(),
                    purchase_request,
                });
                push_anomalies(write, Collection::Payments, &hex, source.anomalies);
            }
            Err(r) => write
                .rejects
                .push(reject_row(Collection::Payments, raw, &r)),
        }
    }
}

/// The duplicate-webhook anomaly of an entry like `p`, naming `other_hex`.
fn duplicate_anomaly(
    p: &ParsedEntry,
    other_hex: &str,
    other_created_at: chrono::DateTime<Utc>,
) -> crate::legacy::Anomaly {
    crate::legacy::Anomaly::new(
        AnomalyKind::DuplicateWebhook,
        format!(
            "same reference {:?}, type and amount as {} ({} s apart)",
            p.reference.as_deref().unwrap_or(""),
            other_hex,
            (other_created_at - p.created_at).num_seconds().abs()
        ),
    )
}

/// The entries of earlier batches that `e` duplicates, by the rule of
/// [`duplicates_of`].
fn earlier_duplicates<'a>(
    e: &ParsedEntry,
    earlier: &'a [store::EntryReference],
) -> Vec<&'a store::EntryReference> {
    let Some(reference) = e.reference.as_deref() else {
        return Vec::new();
    };
    earlier
        .iter()
        .filter(|c| {
            c.object_id != e.source.object_id
                && c.reference == reference
                && c.kind == e.kind.as_str()
                && c.amount == e.amount
                && (c.created_at - e.created_at).abs() < chrono::Duration::minutes(10)
        })
        .collect()
}

fn push_anomalies(
    write: &mut BatchWrite,
    collection: Collection,
    hex: &str,
    anomalies: Vec<crate::legacy::Anomaly>,
) {
    for anomaly in anomalies {
        // One row per kind and document: merge the details of repeats.
        if let Some(row) = write.anomalies.iter_mut().find(|r| {
            r.object_id == hex
                && r.anomaly.kind == anomaly.kind
                && r.collection == collection.name()
        }) {
            row.anomaly.detail.push_str("; ");
            row.anomaly.detail.push_str(&anomaly.detail);
        } else {
            write.anomalies.push(AnomalyRow {
                collection: collection.name(),
                object_id: hex.to_owned(),
                anomaly,
            });
        }
    }
}

fn reject_row(collection: Collection, raw: &RawDocumentBuf, r: &Reject) -> RejectRow {
    let ejson = ejson::text(&ejson::lossy(raw));
    RejectRow {
        collection: collection.name(),
        object_id: object_id_of(raw),
        code: r.code.as_str().into(),
        field: r.field.clone(),
        reason: r.to_string().replace('\0', "\u{fffd}"),
        raw_ejson: ejson,
        raw_bson: raw.as_bytes().to_vec(),
        purchase_request: if collection == Collection::Payments {
            crate::translate::purchase_request_key(raw)
        } else {
            None
        },
    }
}
