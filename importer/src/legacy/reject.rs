//! Why a document is rejected, and the oddities of documents that still import. Codes are
//! stored (rejects and anomalies tables, reports): they are a contract.

use serde::{Deserialize, Serialize};

/// The reason a document is outside the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The BSON itself does not parse.
    MalformedBson,
    /// A key appears twice in one (sub)document.
    DuplicateKey,
    /// A string or key is not valid UTF-8.
    InvalidUtf8,
    /// A BSON type the contract never uses (Symbol, Timestamp, MinKey, MaxKey, Binary, ...).
    UnsupportedBsonType,
    /// `_id` is not an ObjectId.
    BadId,
    /// A required field is absent or null.
    MissingField,
    /// A field has a BSON type the contract does not allow there.
    WrongType,
    /// A field's value is not one the contract lists (status, type, role, ...).
    InvalidValue,
    /// A currency code the ledger does not know.
    UnknownCurrency,
    /// An entry's currency is not its payment's.
    CurrencyMismatch,
    /// Money text that is not a plain decimal.
    NotPlainDecimal,
    /// Money that is NaN.
    NotANumber,
    /// Money that is infinite.
    Infinite,
    /// Money that is negative zero.
    NegativeZero,
    /// A double with more than 15 significant digits (float noise).
    FloatNoise,
    /// Money beyond what the ledger's decimal type holds.
    OutOfRange,
    /// Money finer than the asset's scale.
    TooFine,
    /// Money that is zero where an amount must move.
    ZeroAmount,
    /// A negative amount where a sign cannot be dropped.
    NegativeAmount,
    /// A date outside years 1 to 9999.
    DateOutOfRange,
    /// An empty string where a reference is expected.
    EmptyReference,
    /// A `paymentId` that does not name a document of ours (not 24 hex digits).
    PaymentIdNotObjectId,
    /// An adjustment without a payment naming an account other than `platform`.
    AdjustmentNeedsPayment,
    /// A dispute's payment cannot be found (by `paymentId` or `purchaseRequestId`).
    PaymentNotFound,
    /// Several payments match a dispute's `purchaseRequestId`.
    AmbiguousPayment,
    /// A dispute's payment exists in MongoDB but was not imported (rejected or later).
    PaymentNotImported,
    /// A retried payment whose ledger entries were imported into suspense while it was
    /// rejected: importing it now would split its money between two histories.
    EntriesInSuspense,
    /// A retried ledger entry whose payment has had events of its own since the import (a
    /// dispute's freeze, live commands): appended now, legacy money would land after what
    /// was decided on the payment since, past a frozen escrow or a paid-out share.
    PaymentMovedOn,
}

impl RejectCode {
    /// The stored code (`"too_fine"`).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::MalformedBson => "malformed_bson",
            RejectCode::DuplicateKey => "duplicate_key",
            RejectCode::InvalidUtf8 => "invalid_utf8",
            RejectCode::UnsupportedBsonType => "unsupported_bson_type",
            RejectCode::BadId => "bad_id",
            RejectCode::MissingField => "missing_field",
            RejectCode::WrongType => "wrong_type",
            RejectCode::InvalidValue => "invalid_value",
            RejectCode::UnknownCurrency => "unknown_currency",
            RejectCode::CurrencyMismatch => "currency_mismatch",
            RejectCode::NotPlainDecimal => "not_plain_decimal",
            RejectCode::NotANumber => "not_a_number",
            RejectCode::Infinite => "infinite",
            RejectCode::NegativeZero => "negative_zero",
            RejectCode::FloatNoise => "float_noise",
            RejectCode::OutOfRange => "out_of_range",
            RejectCode::TooFine => "too_fine",
            RejectCode::ZeroAmount => "zero_amount",
            RejectCode::NegativeAmount => "negative_amount",
            RejectCode::DateOutOfRange => "date_out_of_range",
            RejectCode::EmptyReference => "empty_reference",
            RejectCode::PaymentIdNotObjectId => "payment_id_not_object_id",
            RejectCode::AdjustmentNeedsPayment => "adjustment_needs_payment",
            RejectCode::PaymentNotFound => "payment_not_found",
            RejectCode::AmbiguousPayment => "ambiguous_payment",
            RejectCode::PaymentNotImported => "payment_not_imported",
            RejectCode::EntriesInSuspense => "entries_in_suspense",
            RejectCode::PaymentMovedOn => "payment_moved_on",
        }
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document rejected: the reason's code, the field at fault, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}{}: {detail}", field.as_deref().map(|f| format!(" at {f}")).unwrap_or_default())]
pub struct Reject {
    /// Why.
    pub code: RejectCode,
    /// The field's path (`"amount"`, `"messages.3.body"`), when one is at fault.
    pub field: Option<String>,
    /// What was found, for a person.
    pub detail: String,
}

impl Reject {
    /// A reject at `field`.
    pub fn at(code: RejectCode, field: &str, detail: impl Into<String>) -> Reject {
        Reject {
            code,
            field: Some(field.to_owned()),
            detail: detail.into(),
        }
    }

    /// A reject of the whole document.
    pub fn whole(code: RejectCode, detail: impl Into<String>) -> Reject {
        Reject {
            code,
            field: None,
            detail: detail.into(),
        }
    }
}

/// A kind of oddity that still imports, listed by id in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// A reference given as a string of 24 hex digits, taken as the ObjectId.
    AmbiguousReference,
    /// U+0000 replaced by U+FFFD in a text field.
    ReplacedNul,
    /// A field the contract does not list, carried verbatim.
    UnknownField,
    /// `createdAt` absent: the time in the `_id` was used.
    CreatedAtFromObjectId,
    /// A negative debit whose sign was dropped (entries of 2020).
    SignDropped,
    /// An entry whose `paymentId` names no payment: sides in `platform:suspense`.
    OrphanEntry,
    /// An entry of a rejected payment: imported like an orphan.
    EntryOfRejectedPayment,
    /// An entry of a payment that exists but was not imported by this domain's run.
    EntryOfUnimportedPayment,
    /// Two entries with the same reference, type and amount less than 10 minutes apart.
    DuplicateWebhook,
    /// History drove the payment's escrow below zero.
    NegativeEscrow,
    /// The projected status disagrees with the mapped legacy status.
    StatusDisagreement,
    /// A cancelled (expired, failed) payment whose escrow still holds money.
    CancelledWithFundsHeld,
    /// A dispute's status disagrees with its last timeline entry.
    TimelineDisagreement,
    /// A dispute with no timeline.
    EmptyTimeline,
    /// A dispute found through `purchaseRequestId` (no `paymentId`).
    PaymentFoundByPurchaseRequest,
    /// A dispute open at cutover whose payment could not be frozen (cancelled holding
    /// nothing, or frozen by another open dispute).
    OpenDisputeNotFrozen,
    /// A resolution on a dispute whose status is not `resolved`.
    ResolutionOnUnresolved,
}

impl AnomalyKind {
    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::AmbiguousReference => "ambiguous_reference",
            AnomalyKind::ReplacedNul => "replaced_nul",
            AnomalyKind::UnknownField => "unknown_field",
            AnomalyKind::CreatedAtFromObjectId => "created_at_from_object_id",
            AnomalyKind::SignDropped => "sign_dropped",
            AnomalyKind::OrphanEntry => "orphan_entry",
            AnomalyKind::EntryOfRejectedPayment => "entry_of_rejected_payment",
            AnomalyKind::EntryOfUnimportedPayment => "entry_of_unimported_payment",
            AnomalyKind::DuplicateWebhook => "duplicate_webhook",
            AnomalyKind::NegativeEscrow => "negative_escrow",
            AnomalyKind::StatusDisagreement => "status_disagreement",
            AnomalyKind::CancelledWithFundsHeld => "cancelled_with_funds_held",
            AnomalyKind::TimelineDisagreement => "timeline_disagreement",
            AnomalyKind::EmptyTimeline => "empty_timeline",
            AnomalyKind::PaymentFoundByPurchaseRequest => "payment_found_by_purchase_request",
            AnomalyKind::OpenDisputeNotFrozen => "open_dispute_not_frozen",
            AnomalyKind::ResolutionOnUnresolved => "resolution_on_unresolved",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One oddity of one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// What kind.
    pub kind: AnomalyKind,
    /// The particulars (the field, the other document, the amounts).
    pub detail: String,
}

impl Anomaly {
    /// An anomaly of `kind`.
    pub fn new(kind: AnomalyKind, detail: impl Into<String>) -> Anomaly {
        Anomaly {
            kind,
            detail: detail.into(),
        }
    }
}
