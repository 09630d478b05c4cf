//! What can go wrong with the store, and how a caller should handle each.

use uuid::Uuid;

use crate::event::ExpectedVersion;

/// An error of the event store. Nothing was written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream moved on (or already exists). Reload its state and decide again, or
    /// report a version conflict to a caller that asked for an exact version.
    #[error("stream {stream_id} is not at {expected:?} (actual: {actual:?})")]
    Conflict {
        /// The stream.
        stream_id: Uuid,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// Its version when checked, if known (a race found by the unique constraint
        /// inside a transaction is filled in after the rollback).
        actual: Option<i64>,
    },
    /// An event with this id is already stored: the append was made before (imports use
    /// this to be idempotent). Not retryable.
    #[error("event {0} is already stored")]
    DuplicateEvent(Uuid),
    /// The append itself is malformed (no events, a payload that is not an object,
    /// unbalanced postings). A bug in the caller; not retryable.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The database refused or could not be reached. Retry later if transient.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether this is an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

impl StoreError {
    /// Whether the database could not be reached or dropped the connection: the caller
    /// should answer "unavailable, retry later", not report a bug. See [`is_unavailable`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(e) if is_unavailable(e))
    }
}

/// Whether `err` means the database is unreachable or went away, rather than that it
/// refused a statement: no connection to be had (pool timed out or closed, a network
/// error), a connection exception (SQLSTATE class 08), the server shutting down or
/// terminating the session (57P01, 57P02, 57P03), too many connections (53300), the
/// database gone (3D000) or not accepting connections (55000 with that message; the
/// server's English text, so a server answering in another language gives "no" here).
/// A connection lost during a commit may have committed: a caller retries such work
/// only where it is idempotent (an `Idempotency-Key`, an expected version).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            code.starts_with("08")
                || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "3D000")
                || (code == "55000" && db.message().contains("accepting connections"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_pool_is_unavailable_and_a_decode_error_is_not() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_unavailable());
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!StoreError::InvalidAppend("x".into()).is_unavailable());
    }
}
