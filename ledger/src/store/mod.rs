//! The PostgreSQL event store: appending with optimistic concurrency, reading streams and
//! the global feed in feed order, and verifying the store's integrity. The domain knows
//! nothing of this module; this module knows nothing of what events mean.

mod append;
mod balance;
mod error;
pub mod hash;
mod notify;
mod pool;
mod read;
mod verify;

pub use append::{append, append_or_refuse, Appended, AppendedEvent};
pub use balance::{balance_of, lock_outflows};
pub use error::{is_unavailable, StoreError};
pub use notify::{Notifier, CHANNEL};
pub use pool::{connect, connect_once, PoolSettings, CONNECT_LIMIT, OWNER_ROLE, SERVICE_ROLE};
pub use read::{
    feed_position_of, read_feed, read_stream, read_streams, stream_version, watermark, Watermark,
};
pub use verify::{parse_digest, verify, Fault, VerifyReport};

use sqlx::PgPool;

use crate::event::StreamAppend;

/// The event store over a connection pool; the use case that needs more than one append
/// in a transaction calls [`append`] with its own transaction instead (and pokes the
/// [`Notifier`] after its commit).
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: PgPool,
    notifier: Notifier,
}

impl EventStore {
    /// A store over `pool` (connected as the service role) that notifies nobody.
    pub fn new(pool: PgPool) -> Self {
        EventStore {
            pool,
            notifier: Notifier::disabled(),
        }
    }

    /// The same store, announcing its commits through `notifier`.
    #[must_use]
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// The pool, for queries beside the store.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends to one or more streams as one statement, its own transaction: all or
    /// nothing, one round trip.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a stream is not at its expected version (with the
    /// actual version), [`StoreError::InvalidAppend`] for an empty append or a payload that
    /// is not an object, [`StoreError::Database`] otherwise.
    pub async fn append(&self, appends: &[StreamAppend]) -> Result<Vec<AppendedEvent>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        match append(&mut conn, appends).await {
            Ok(done) => {
                self.notifier.committed();
                Ok(done)
            }
            Err(err) => {
                drop(conn);
                Err(self.fill_conflict(err, appends).await)
            }
        }
    }

    /// After a conflict found by the unique constraint, names the stream and its version.
    async fn fill_conflict(&self, err: StoreError, appends: &[StreamAppend]) -> StoreError {
        let StoreError::Conflict { actual: None, .. } = err else {
            return err;
        };
        for a in appends {
            if let Ok(actual) = stream_version(&self.pool, a.stream_id).await {
                if !a.expected.admits(actual) {
                    return StoreError::Conflict {
                        stream_id: a.stream_id,
                        expected: a.expected,
                        actual: Some(actual),
                    };
                }
            }
        }
        err
    }
}
