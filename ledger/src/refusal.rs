//! The kinds of refusal every aggregate error falls into, so the API can map any domain
//! error to the contract's problem codes without knowing each aggregate's variants.

use serde::{Deserialize, Serialize};

/// How a refused command should be reported to the caller (`contract.md`, "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// More money was asked for than is there (`insufficient_funds`, 422).
    InsufficientFunds,
    /// The payment's escrow is frozen by an open dispute (`escrow_frozen`, 422).
    EscrowFrozen,
    /// The payment or dispute is not in a state that allows this (`invalid_state`, 422).
    InvalidState,
    /// The command itself is malformed or inconsistent (`validation_failed`, 400).
    Validation,
    /// The payment or dispute does not exist (`not_found`, 404).
    NotFound,
}

impl RefusalKind {
    /// The contract's problem `code` for this kind of refusal.
    pub fn code(self) -> &'static str {
        match self {
            RefusalKind::InsufficientFunds => "insufficient_funds",
            RefusalKind::EscrowFrozen => "escrow_frozen",
            RefusalKind::InvalidState => "invalid_state",
            RefusalKind::Validation => "validation_failed",
            RefusalKind::NotFound => "not_found",
        }
    }
}
