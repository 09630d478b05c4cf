//! What can stop a projector, and how its caller should handle each.

/// An error of a projector.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The ledger looks inconsistent to this projector (a trial balance that is not zero,
    /// a version gap, an event it cannot decode). The projector stops and records why;
    /// nothing of the offending batch is committed. A person must look; a rebuild (after
    /// the fix) clears it.
    #[error("projector {projector} halted: {reason}")]
    Halted {
        /// The projector.
        projector: &'static str,
        /// Why, for a person.
        reason: String,
    },
    /// The database refused or could not be reached. Retry later if transient.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl ProjectionError {
    /// A halt of `projector` for `reason`.
    pub(crate) fn halt(projector: &'static str, reason: impl Into<String>) -> Self {
        ProjectionError::Halted {
            projector,
            reason: reason.into(),
        }
    }
}
