//! The MongoDB side: raw documents only (`RawDocumentBuf`, never deserialized twice), read
//! by `_id` in ascending order with the driver's batch cursor, resumed with `_id > last`
//! and every `_id` that is no ObjectId (never `skip`), in batches handed to the writer through a bounded channel so that reading
//! overlaps writing while memory stays flat (at most a few batches, each capped in bytes).

use std::time::Duration;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection, Database};
use tokio::sync::mpsc;

/// A batch is flushed at this many bytes even before `batch_size` documents (1 MB
/// messages exist).
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// The legacy collections the importer reads: a database holding none of them is not the
/// legacy one (see [`Legacy::require_any`]).
pub const LEGACY_COLLECTIONS: [&str; 3] = ["payments", "fundsledgerentries", "disputes"];

/// Batches read ahead of the writer.
pub const READ_AHEAD: usize = 2;

/// An error of the MongoDB side.
#[derive(Debug, thiserror::Error)]
pub enum MongoError {
    /// The driver failed (unreachable, refused, ...).
    #[error("MongoDB: {0}")]
    Driver(#[from] mongodb::error::Error),
    /// The legacy database holds none of the collections asked for.
    #[error("the MongoDB database {database:?} has no collection {wanted} (its collections: {present}); is the database name in --mongo-uri or --mongo-db right?")]
    NoSuchCollections {
        /// The database.
        database: String,
        /// The collections looked for.
        wanted: String,
        /// The collections it has.
        present: String,
    },
    /// A background read (a count) stopped before answering.
    #[error("MongoDB: a background count did not finish: {0}")]
    Background(String),
}

/// A count running in the background. Counting reads a whole collection on some servers
/// (several seconds per 100,000 documents on the test server), so the import does not
/// wait for the counts it only needs for its progress bar and its legacy-writer check,
/// and asks for each count once where two figures are the same count.
/// Dropped before its value is taken (a run failing), it stops the count.
#[derive(Debug)]
pub struct PendingCount {
    task: Option<tokio::task::JoinHandle<Result<u64, MongoError>>>,
    value: Option<u64>,
}

impl PendingCount {
    /// Whether the count has answered ([`PendingCount::get`] will not wait).
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
            || self
                .task
                .as_ref()
                .is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// The count, once it has answered; asked again, the same count.
    ///
    /// # Errors
    /// A driver error, or the count's task stopped (then every later call fails too).
    pub async fn get(&mut self) -> Result<u64, MongoError> {
        if let Some(value) = self.value {
            return Ok(value);
        }
        let Some(task) = self.task.take() else {
            return Err(MongoError::Background("it failed before".into()));
        };
        let value = task
            .await
            .map_err(|e| MongoError::Background(e.to_string()))??;
        self.value = Some(value);
        Ok(value)
    }

    /// The count, once it has answered.
    ///
    /// # Errors
    /// As [`PendingCount::get`].
    pub async fn value(mut self) -> Result<u64, MongoError> {
        self.get().await
    }
}

impl Drop for PendingCount {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The legacy database.
#[derive(Debug, Clone)]
pub struct Legacy {
    db: Database,
}

impl Legacy {
    /// Connects to `uri` and opens database `db`.
    ///
    /// # Errors
    /// A malformed URI or an unreachable server.
    pub async fn connect(uri: &str, db: &str) -> Result<Legacy, MongoError> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("escrow-ledger-import".into());
        options.server_selection_timeout = Some(Duration::from_secs(10));
        let client = Client::with_options(options)?;
        let db = client.database(db);
        db.run_command(doc! { "ping": 1 }).await?;
        Ok(Legacy { db })
    }

    /// Refuses a legacy database that holds none of `collections`: a misspelt database
    /// name reads as an empty database (MongoDB creates nothing and refuses nothing), and an
    /// import of nothing would mark its domain finished.
    ///
    /// # Errors
    /// [`MongoError::NoSuchCollections`], or a driver error.
    pub async fn require_any(&self, collections: &[&str]) -> Result<(), MongoError> {
        let present = match self.db.list_collection_names().await {
            Ok(names) => names,
            // A login allowed to read the collections but not to list them (error 13,
            // Unauthorized): the check cannot be made, and is no reason to refuse.
            Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 13) => {
                tracing::warn!("cannot list the legacy database's collections (not authorized): the database name is not checked");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if collections.iter().any(|c| present.iter().any(|p| p == c)) {
            return Ok(());
        }
        Err(MongoError::NoSuchCollections {
            database: self.db.name().to_owned(),
            wanted: collections.join(", "),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })
    }

    /// A collection of raw documents.
    pub fn raw(&self, name: &str) -> Collection<RawDocumentBuf> {
        self.db.collection::<RawDocumentBuf>(name)
    }

    /// The number of documents in a collection (after `after`, when given).
    ///
    /// # Errors
    /// A driver error.
    pub async fn count(&self, name: &str, after: Option<ObjectId>) -> Result<u64, MongoError> {
        Ok(self.raw(name).count_documents(after_filter(after)).await?)
    }

    /// Starts counting the documents of `name` (after `after`) in the background.
    pub fn count_in_background(&self, name: &str, after: Option<ObjectId>) -> PendingCount {
        let legacy = self.clone();
        let name = name.to_owned();
        PendingCount {
            task: Some(tokio::spawn(
                async move { legacy.count(&name, after).await },
            )),
            value: None,
        }
    }

    /// Reads `name` in `_id` order after `after`, in batches of at most `batch_size`
    /// documents and [`MAX_BATCH_BYTES`], at most [`READ_AHEAD`] batches ahead.
    pub fn batches(
        &self,
        name: &str,
        after: Option<ObjectId>,
        batch_size: u32,
    ) -> mpsc::Receiver<Result<Vec<RawDocumentBuf>, MongoError>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let coll = self.raw(name);
        tokio::spawn(async move {
            let result = read_all(&coll, after, batch_size, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    /// The documents of `name` whose `_id` is among `ids`, in `_id` order.
    ///
    /// # Errors
    /// A driver error.
    pub async fn by_ids(
        &self,
        name: &str,
        ids: &[ObjectId],
    ) -> Result<Vec<RawDocumentBuf>, MongoError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<Bson> = ids.iter().map(|i| Bson::ObjectId(*i)).collect();
        self.collect(name, doc! { "_id": { "$in": list } }).await
    }

    /// The documents of `name` matching `filter`, in `_id` order.
    ///
    /// # Errors
    /// A driver error.
    pub async fn collect(
        &self,
        name: &str,
        filter: Document,
    ) -> Result<Vec<RawDocumentBuf>, MongoError> {
        let mut cursor = self.raw(name).find(filter).sort(doc! { "_id": 1 }).await?;
        let mut out = Vec::new();
        while cursor.advance().await? {
            out.push(cursor.current().to_raw_document_buf());
        }
        Ok(out)
    }
}

/// The documents a pass reads when it resumes after `after`: the ObjectIds past it, and
/// every `_id` of another type. A comparison with an ObjectId matches ObjectIds only, so
/// `_id > after` alone would pass over the documents whose `_id` is a boolean or a date
/// (they sort after every ObjectId), and a resumed run would neither import nor reject
/// them. Those documents are rejected (`bad_id`) whenever read; read again, their reject
/// is updated, not repeated.
fn after_filter(after: Option<ObjectId>) -> Document {
    after.map_or_else(Document::new, |a| {
        doc! { "$or": [
            { "_id": { "$gt": a } },
            { "_id": { "$not": { "$type": "objectId" } } },
        ] }
    })
}

async fn read_all(
    coll: &Collection<RawDocumentBuf>,
    after: Option<ObjectId>,
    batch_size: u32,
    tx: &mpsc::Sender<Result<Vec<RawDocumentBuf>, MongoError>>,
) -> Result<(), MongoError> {
    let mut cursor = coll
        .find(after_filter(after))
        .sort(doc! { "_id": 1 })
        .batch_size(batch_size)
        .await?;
    let cap = usize::try_from(batch_size).unwrap_or(usize::MAX).max(1);
    let mut batch = Vec::with_capacity(cap);
    let mut bytes = 0;
    while cursor.advance().await? {
        let current = cursor.current();
        bytes += current.as_bytes().len();
        batch.push(current.to_raw_document_buf());
        if batch.len() >= cap || bytes >= MAX_BATCH_BYTES {
            if tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
                return Ok(());
            }
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    Ok(())
}

/// The database named in a MongoDB URI's path (`mongodb://host/legacy` → `legacy`).
///
/// # Errors
/// A malformed URI.
pub async fn database_of(uri: &str) -> Result<Option<String>, MongoError> {
    Ok(ClientOptions::parse(uri).await?.default_database)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(result: Result<u64, MongoError>) -> PendingCount {
        PendingCount {
            task: Some(tokio::spawn(async move { result })),
            value: None,
        }
    }

    #[tokio::test]
    async fn a_count_asked_twice_answers_the_same_without_counting_again() {
        let mut count = pending(Ok(42));
        assert_eq!(count.get().await.ok(), Some(42));
        assert!(count.is_ready());
        assert_eq!(count.get().await.ok(), Some(42));
        assert_eq!(count.value().await.ok(), Some(42));
    }

    #[tokio::test]
    async fn a_failed_count_fails_every_time_it_is_asked() {
        let mut count = pending(Err(MongoError::Background("gone".into())));
        assert!(matches!(count.get().await, Err(MongoError::Background(m)) if m == "gone"));
        assert!(matches!(count.get().await, Err(MongoError::Background(_))));
    }
}
