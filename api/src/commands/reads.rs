//! Stream reads for deciding: one statement for the streams of every command waiting to
//! decide at the same moment, the read side of [`super::GroupCommit`].
//!
//! A command reads each stream it decides on as it did alone: all of one stream's events
//! from one snapshot, outside any transaction (the append checks the versions it saw).
//! Gathering the reads of many commands into one `stream_id = ANY(...)` statement saves
//! each command a pooled connection's check and a statement of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ledger::event::RecordedEvent;
use ledger::store;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::http::problem::{retry_message, ApiError};

/// The most streams one read statement asks for.
const MAX_READ: usize = 64;

/// How many read statements may run at once (each on its own connection).
const READERS: usize = 2;

/// Reads waiting for a reader, most of them.
const QUEUE: usize = 1024;

/// The longest a gathered read may take (a half-open connection, a lock held by a
/// migration): past it its readers hear the database is unavailable (503, retry).
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Where the command path reads streams from: the pool directly, or gathered readers.
#[derive(Debug, Clone)]
pub struct StreamReads {
    pool: PgPool,
    queue: Option<mpsc::Sender<Wanted>>,
}

/// A stream someone waits to read.
#[derive(Debug)]
struct Wanted {
    stream_id: Uuid,
    reply: oneshot::Sender<Result<Vec<RecordedEvent>, Fault>>,
}

/// A read statement's failure, told to each of its readers.
#[derive(Debug, Clone)]
struct Fault {
    /// The 503 message when the client should retry (see [`retry_message`]).
    retry: Option<&'static str>,
    message: String,
}

impl Fault {
    fn of(err: &sqlx::Error) -> Self {
        Fault {
            retry: retry_message(err),
            message: err.to_string(),
        }
    }
}

impl From<Fault> for ApiError {
    fn from(f: Fault) -> Self {
        match f.retry {
            Some(message) => ApiError::Unavailable(message.to_owned()),
            None => ApiError::Internal(anyhow::anyhow!(f.message)),
        }
    }
}

impl StreamReads {
    /// Gathered reads over `pool`; the readers stop when every handle is dropped.
    pub fn spawn(pool: &PgPool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..READERS {
            tokio::spawn(reader(pool.clone(), Arc::clone(&receiver)));
        }
        StreamReads {
            pool: pool.clone(),
            queue: Some(sender),
        }
    }

    /// Each read its own statement on a pooled connection.
    pub fn direct(pool: &PgPool) -> Self {
        StreamReads {
            pool: pool.clone(),
            queue: None,
        }
    }

    /// A stream's events in version order.
    ///
    /// # Errors
    /// The database is unavailable, or a fault reading or decoding the events.
    pub async fn read(&self, stream_id: Uuid) -> Result<Vec<RecordedEvent>, ApiError> {
        if let Some(queue) = &self.queue {
            let (reply, answer) = oneshot::channel();
            if queue.send(Wanted { stream_id, reply }).await.is_ok() {
                if let Ok(events) = answer.await {
                    return events.map_err(ApiError::from);
                }
            }
            // The readers are gone (shutting down, or one panicked): read directly.
        }
        Ok(store::read_stream(&self.pool, stream_id).await?)
    }
}

/// Takes the waiting reads as one statement, answers each, and again.
async fn reader(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Wanted>>>) {
    loop {
        let Some(waiting) = super::gather::next_batch(&receiver, MAX_READ).await else {
            return;
        };
        let mut ids: Vec<Uuid> = waiting.iter().map(|w| w.stream_id).collect();
        ids.sort_unstable();
        ids.dedup();
        let read = match tokio::time::timeout(READ_LIMIT, store::read_streams(&pool, &ids)).await {
            Ok(read) => read,
            Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a gathered stream read ran past {READ_LIMIT:?}"),
            ))),
        };
        match read {
            Err(e @ (sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. }))
                if ids.len() > 1 =>
            {
                // One stream that cannot be decoded must not fail the others' commands:
                // each is read on its own, all within the same limit.
                tracing::warn!(error = %e, "a gathered stream read failed; reading one by one");
                one_by_one(&pool, waiting).await;
            }
            Ok(events) => {
                let mut by_stream: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
                for e in events {
                    by_stream.entry(e.stream_id).or_default().push(e);
                }
                let mut readers: HashMap<Uuid, usize> = HashMap::new();
                for w in &waiting {
                    *readers.entry(w.stream_id).or_default() += 1;
                }
                for w in waiting {
                    // The last reader of a stream takes its events; any other gets a copy.
                    let left = readers.entry(w.stream_id).or_default();
                    *left = left.saturating_sub(1);
                    let events = if *left == 0 {
                        by_stream.remove(&w.stream_id).unwrap_or_default()
                    } else {
                        by_stream.get(&w.stream_id).cloned().unwrap_or_default()
                    };
                    let _ = w.reply.send(Ok(events));
                }
            }
            Err(e) => {
                let fault = Fault::of(&e);
                tracing::error!(error = %e, streams = ids.len(), "a gathered stream read failed");
                for w in waiting {
                    let _ = w.reply.send(Err(fault.clone()));
                }
            }
        }
    }
}

/// What a decision reads its streams through: the connection the command will append on
/// (a command running alone), or the gathered readers (a command whose append is grouped).
#[derive(Debug)]
pub enum Reads<'a> {
    /// Its own connection.
    Conn(&'a mut sqlx::PgConnection),
    /// Gathered with other commands' reads.
    Gathered(&'a StreamReads),
}

impl Reads<'_> {
    /// A stream's events in version order.
    ///
    /// # Errors
    /// The database is unavailable, or a fault reading or decoding the events.
    pub async fn stream(&mut self, stream_id: Uuid) -> Result<Vec<RecordedEvent>, ApiError> {
        match self {
            Reads::Conn(conn) => Ok(store::read_stream(&mut **conn, stream_id).await?),
            Reads::Gathered(reads) => reads.read(stream_id).await,
        }
    }
}

/// Reads each waiting stream with a statement of its own, within [`READ_LIMIT`] in all:
/// those not read by then hear the database is unavailable.
async fn one_by_one(pool: &PgPool, waiting: Vec<Wanted>) {
    let deadline = tokio::time::Instant::now() + READ_LIMIT;
    for w in waiting {
        let read = tokio::time::timeout_at(deadline, store::read_stream(pool, w.stream_id)).await;
        let read = match read {
            Ok(read) => read.map_err(|e| Fault::of(&e)),
            Err(_) => Err(Fault {
                retry: Some("the database is unavailable"),
                message: format!("stream reads ran past {READ_LIMIT:?}"),
            }),
        };
        let _ = w.reply.send(read);
    }
}
