//! Why the dispute aggregate refuses a command, each variant named for the refusing state;
//! [`DisputeError::kind`] maps it to the contract's problem codes.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::DisputeStatus;
use crate::refusal::RefusalKind;

/// A refused dispute command. Nothing was decided; nothing is to be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisputeError {
    /// The dispute stream already exists: use another id.
    #[error("dispute {dispute_id} already exists")]
    AlreadyExists {
        /// The dispute's id.
        dispute_id: Uuid,
    },
    /// No such dispute: answer `not_found`.
    #[error("no such dispute")]
    NotOpened,
    /// The dispute has ended (resolved, rejected, withdrawn, closed): it takes nothing more.
    #[error("the dispute has ended as {status:?}")]
    DisputeEnded {
        /// How it ended.
        status: DisputeStatus,
    },
    /// `resolved` was asked through a status change: resolve it with a resolution instead.
    #[error("a dispute is resolved only by a resolution")]
    ResolvedOnlyByResolution,
    /// A required text (description, message body without attachments) is empty.
    #[error("{field} is empty")]
    EmptyText {
        /// The field.
        field: &'static str,
    },
    /// Evidence with neither a URL nor a description.
    #[error("evidence needs a url or a description")]
    EmptyEvidence,
    /// A `split` resolution without both `seller_amount` and `buyer_amount`.
    #[error("a split needs both seller_amount and buyer_amount")]
    MissingSplitAmounts,
    /// Amounts or fees given with an outcome that takes none (amounts only for `split`,
    /// nothing for `no_action`).
    #[error("amounts or fees given that the outcome does not take")]
    UnexpectedAmounts,
    /// A negative split part or a fee that is not positive.
    #[error("{amount} is not a valid amount here")]
    InvalidAmount {
        /// The amount given.
        amount: Decimal,
    },
}

impl DisputeError {
    /// How the API reports this refusal.
    pub fn kind(&self) -> RefusalKind {
        match self {
            DisputeError::NotOpened => RefusalKind::NotFound,
            DisputeError::AlreadyExists { .. }
            | DisputeError::DisputeEnded { .. }
            | DisputeError::ResolvedOnlyByResolution => RefusalKind::InvalidState,
            DisputeError::EmptyText { .. }
            | DisputeError::EmptyEvidence
            | DisputeError::MissingSplitAmounts
            | DisputeError::UnexpectedAmounts
            | DisputeError::InvalidAmount { .. } => RefusalKind::Validation,
        }
    }
}
