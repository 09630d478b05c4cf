//! Passes over a collection: read in `_id` order from the checkpoint, or the open
//! rejects again by `_id` (`--retry-rejects`).

use bson::oid::ObjectId;

use super::db::Writing;
use super::{object_id_of, ImportError, Pass, Run, LEGACY_WRITERS};
use crate::ids::Collection;
use crate::mongo::PendingCount;
use crate::progress::Progress;
use crate::report::CollectionReport;
use crate::store;

/// A batch of more bytes than this (its documents as read) is not overlapped with the
/// next one's translation. Batches of ordinary documents are far smaller (500 entries:
/// about 0.2 MB); a batch can reach [`crate::mongo::MAX_BATCH_BYTES`].
const OVERLAP_MAX_BYTES: usize = 4 * 1024 * 1024;

impl Run<'_> {
    /// Reads one collection through. Its counts (documents after the checkpoint at the
    /// start and at the end of the pass) come in the background: see [`Run::pass_counted`].
    /// From the collection's start (no checkpoint), the count at the start is `total`, the
    /// run's count of the whole collection (a write between the run's start and the pass's
    /// is then the pass's to report).
    pub(super) async fn pass(
        &mut self,
        collection: Collection,
        total: &mut PendingCount,
    ) -> Result<Pass, ImportError> {
        let name = collection.name();
        let after = {
            let mut c = self.db.conn().await?;
            self.entries_started = store::checkpoint(&mut c, Collection::FundsLedgerEntries.name())
                .await?
                .is_some();
            store::checkpoint(&mut c, name)
                .await?
                .and_then(|(last, _)| ObjectId::parse_str(&last).ok())
        };
        let mut own = after.map(|a| self.legacy.count_in_background(name, Some(a)));
        let at_start: &mut PendingCount = match own.as_mut() {
            Some(count) => count,
            None => total,
        };
        let mut counted = false;
        let mut progress = Progress::start(self.opts.progress, name, None);
        let mut figures = CollectionReport {
            collection: name.into(),
            ..CollectionReport::default()
        };
        let mut rx = self.legacy.batches(name, after, self.opts.batch_size);
        // Analyze after the first batches and each time the pass quadrupled.
        let mut analyze_at = u64::from(self.opts.batch_size) * 2;
        let mut seen = 0_u64;
        // A live run translates a batch while the one before it commits. That one commits
        // before this one is sent: batches commit in `_id` order, one uncommitted at a
        // time, so a killed run resumes right after the last committed checkpoint, and a
        // translation sees every earlier batch in PostgreSQL or in `Run::uncommitted`.
        // Disputes are translated against their payments' state, which the batch before
        // may change (a resolution moves money): they wait for it.
        let overlaps = collection != Collection::Disputes;
        let mut in_flight: Option<(Writing, u64)> = None;
        while let Some(batch) = rx.recv().await {
            let translated = match batch {
                Ok(docs) => self
                    .translate(collection, &docs, &mut figures)
                    .await
                    .map(|write| {
                        let bytes: usize = docs.iter().map(|d| d.as_bytes().len()).sum();
                        (write, docs.len() as u64, bytes)
                    }),
                Err(e) => Err(e.into()),
            };
            if let Some((writing, n)) = in_flight.take() {
                self.land(writing, n, &mut figures, &mut progress).await?;
            }
            // Nothing is in flight from here to `start_write`: an error leaves no task
            // committing behind the run's back.
            let (write, n, bytes) = translated?;
            if !counted && at_start.is_ready() {
                figures.documents_at_start = at_start.get().await?;
                progress.set_total(figures.documents_at_start);
                counted = true;
            }
            // `seen` counts the documents translated, `figures.read` those committed.
            seen += n;
            // A batch of large documents is committed before the next is translated: two
            // translated batches held at once would double the run's peak memory.
            let references =
                (overlaps && bytes <= OVERLAP_MAX_BYTES).then(|| write.references.clone());
            let writing = self.db.start_write(write).await?;
            match references {
                Some(references) if writing.is_committing() => {
                    self.uncommitted = references;
                    in_flight = Some((writing, n));
                }
                _ => self.land(writing, n, &mut figures, &mut progress).await?,
            }
            if seen >= analyze_at {
                analyze_at = seen.saturating_mul(4);
                self.db.analyze_in_background();
            }
        }
        if let Some((writing, n)) = in_flight.take() {
            self.land(writing, n, &mut figures, &mut progress).await?;
        }
        if !counted {
            figures.documents_at_start = at_start.get().await?;
            progress.set_total(figures.documents_at_start);
        }
        progress.finish();
        let at_end = self.legacy.count_in_background(name, after);
        self.db.analyze().await;
        let mut c = self.db.conn().await?;
        store::complete_collection(&mut c, name).await?;
        drop(c);
        Ok(Pass {
            figures,
            at_end,
            from_start: after.is_none(),
        })
    }

    /// Waits for a batch of `n` documents to commit, then counts it in the pass's figures,
    /// the run's and the progress bar.
    async fn land(
        &mut self,
        writing: Writing,
        n: u64,
        figures: &mut CollectionReport,
        progress: &mut Progress,
    ) -> Result<(), ImportError> {
        let written = writing.finish().await?;
        self.uncommitted.clear();
        figures.read += n;
        figures.events_written += written;
        self.report.events_written += written;
        progress.advance(n);
        Ok(())
    }

    /// A batch of documents into the writes of one transaction, its checkpoint the last
    /// `_id` read (when an ObjectId).
    async fn translate(
        &mut self,
        collection: Collection,
        docs: &[bson::RawDocumentBuf],
        figures: &mut CollectionReport,
    ) -> Result<store::BatchWrite, ImportError> {
        let mut write = self.process(collection, docs, false, figures).await?;
        if let Some(last) = docs.last() {
            let last = object_id_of(last);
            if crate::ids::is_object_id_hex(&last) {
                let n = i64::try_from(docs.len()).unwrap_or(0);
                write.checkpoint = Some((collection.name(), last, n));
            }
        }
        Ok(write)
    }

    /// Completes a pass's figures with its count at the end, and says loudly when the
    /// collection changed while it was read. Returns that count.
    pub(super) async fn pass_counted(&mut self, pass: Pass) -> Result<u64, ImportError> {
        let Pass {
            mut figures,
            at_end,
            ..
        } = pass;
        figures.documents_at_end = at_end.value().await?;
        if figures.documents_at_end != figures.documents_at_start {
            let warning = format!(
                "{}: {} documents to read at the start but {} at the end: {LEGACY_WRITERS}; stop them and run the import again",
                figures.collection, figures.documents_at_start, figures.documents_at_end
            );
            tracing::warn!("{warning}");
            self.report.warnings.push(warning);
            self.report.legacy_writers_running = true;
        }
        let at_end = figures.documents_at_end;
        self.report.collections.push(figures);
        Ok(at_end)
    }

    pub(super) async fn retry(&mut self, collection: Collection) -> Result<(), ImportError> {
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
        let mut gone = 0_u64;
        for part in ids.chunks(chunk) {
            let docs = self.legacy.by_ids(name, part).await?;
            let n = docs.len() as u64;
            let mut write = self.process(collection, &docs, true, &mut figures).await?;
            // A rejected document deleted from MongoDB since: its reject is closed (it
            // would otherwise count against the collection in verify for good).
            let missing: Vec<(&'static str, String)> = part
                .iter()
                .map(|o| o.to_hex())
                .filter(|hex| !docs.iter().any(|d| object_id_of(d) == *hex))
                .map(|hex| (name, hex))
                .collect();
            gone += missing.len() as u64;
            write.resolved.extend(missing);
            let written = self.db.write(write).await?;
            figures.read += n;
            figures.events_written += written;
            self.report.events_written += written;
            progress.advance(part.len() as u64);
        }
        progress.finish();
        if gone > 0 {
            let warning = format!(
                "{name}: {gone} rejected document(s) no longer in MongoDB: their rejects are closed"
            );
            tracing::warn!("{warning}");
            self.report.warnings.push(warning);
        }
        self.report.collections.push(figures);
        Ok(())
    }
}
