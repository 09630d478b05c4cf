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
