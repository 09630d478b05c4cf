//! Why the payment aggregate refuses a command. Each variant names the state that refuses
//! it and says how a caller should handle it; [`PaymentError::kind`] maps it to the
//! contract's problem codes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::dispute::DisputeStatus;
use crate::money::Asset;
use crate::refusal::RefusalKind;

/// A refused payment command. Nothing was decided; nothing is to be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PaymentError {
    /// The payment stream already exists: use another id, or read the existing payment.
    #[error("payment {payment_id} already exists")]
    AlreadyExists {
        /// The payment's id.
        payment_id: Uuid,
    },
    /// No such payment: answer `not_found`.
    #[error("no such payment")]
    NotCreated,
    /// More money asked for than is there (escrow, releasable part, fee base or share).
    /// Retrying will not help until money comes in.
    #[error("{requested} requested but only {available} available")]
    InsufficientFunds {
        /// What the command would move.
        requested: Decimal,
        /// What is there to move it from.
        available: Decimal,
    },
    /// The escrow is frozen by an open dispute: only its resolution moves it.
    #[error("escrow is frozen by dispute {dispute_id}")]
    EscrowFrozen {
        /// The open dispute.
        dispute_id: Uuid,
    },
    /// The deposit would take the payment past its amount and no excess was allowed.
    /// Retry with `allow_excess` if the excess is meant to be kept (refundable only).
    #[error("a deposit of {deposit} on {deposited} deposited exceeds the amount {amount}")]
    DepositExceedsAmount {
        /// The deposit refused.
        deposit: Decimal,
        /// What was deposited before.
        deposited: Decimal,
        /// The payment's amount.
        amount: Decimal,
    },
    /// The deposit's `occurred_at` is later than now: fix the caller's clock or input.
    #[error("deposit time {occurred_at} is in the future (now {now})")]
    DepositInFuture {
        /// The time given.
        occurred_at: DateTime<Utc>,
        /// The time the command was decided.
        now: DateTime<Utc>,
    },
    /// The deposit's `occurred_at` is more than 72 hours before now.
    #[error("deposit time {occurred_at} is more than 72 hours before {now}")]
    DepositTooOld {
        /// The time given.
        occurred_at: DateTime<Utc>,
        /// The time the command was decided.
        now: DateTime<Utc>,
    },
    /// Cancellation refused: money is held in escrow (refund it first).
    #[error("{held} is held in escrow")]
    FundsHeld {
        /// The escrow balance (may be negative through imported history).
        held: Decimal,
    },
    /// Cancellation refused: money was already released to the seller.
    #[error("{released} was already released")]
    AlreadyReleased {
        /// Gross released so far.
        released: Decimal,
    },
    /// The payment is cancelled: it takes no deposits, releases, refunds or disputes.
    #[error("the payment is cancelled")]
    Cancelled,
    /// The escrow is not frozen by this dispute (not frozen, or by another one).
    #[error("escrow is not frozen by dispute {dispute_id}")]
    NotFrozenByDispute {
        /// The dispute named by the command.
        dispute_id: Uuid,
        /// The dispute actually holding the freeze, if any.
        frozen_by: Option<Uuid>,
    },
    /// Another dispute is open on this payment: one at a time.
    #[error("dispute {dispute_id} is already open on this payment")]
    DisputeAlreadyOpen {
        /// The open dispute.
        dispute_id: Uuid,
    },
    /// The status given to unfreeze with does not end a dispute (a caller bug).
    #[error("dispute status {status:?} does not end a dispute")]
    DisputeNotEnded {
        /// The status given.
        status: DisputeStatus,
    },
    /// A split's `seller_amount + buyer_amount` is not exactly what is held.
    #[error("split of {requested} does not equal the {held} held")]
    SplitMismatch {
        /// seller_amount + buyer_amount.
        requested: Decimal,
        /// The escrow balance.
        held: Decimal,
    },
    /// A `split` settlement without both `seller_amount` and `buyer_amount`.
    #[error("a split needs both seller_amount and buyer_amount")]
    MissingSplitAmounts,
    /// Amounts or fees given with an outcome that takes none (amounts only for `split`,
    /// nothing for `no_action`).
    #[error("amounts or fees given that the outcome does not take")]
    UnexpectedAmounts,
    /// An adjustment's escrow, seller or buyer account (or an external one) is not this
    /// payment's.
    #[error("account {account} is not one of this payment's")]
    AccountNotOfPayment {
        /// The account named.
        account: String,
    },
    /// An adjustment with neither side `platform:adjustments` nor `platform:suspense`.
    #[error("an adjustment needs platform:adjustments or platform:suspense on one side")]
    NoPlatformCounterpart,
    /// An adjustment from an account to itself.
    #[error("an adjustment needs two different accounts")]
    SameAccount,
    /// An amount in another asset than the payment's.
    #[error("asset {given} is not the payment's {expected}")]
    WrongAsset {
        /// The payment's asset.
        expected: Asset,
        /// The asset given.
        given: Asset,
    },
    /// An amount that is not positive (or negative, for split parts) or finer than the
    /// asset's scale.
    #[error("{amount} is not a valid amount here")]
    InvalidAmount {
        /// The amount given.
        amount: Decimal,
    },
    /// A provider that is not `[a-z0-9_]+`.
    #[error("{provider:?} is not a provider name")]
    InvalidProvider {
        /// The name given.
        provider: String,
    },
    /// An empty deposit or payout reference, or one longer than
    /// [`crate::account::MAX_KEY_LEN`] bytes.
    #[error(
        "the reference must be 1 to {} bytes long",
        crate::account::MAX_KEY_LEN
    )]
    InvalidReference,
    /// The command would take one of the payment's sums (deposited, held, released, fees,
    /// a share...) or its own total of fees beyond what the ledger's decimal type holds
    /// exactly (28 significant digits): refused rather than rounded or wrapped. Not
    /// retryable as is; such amounts are beyond any real payment.
    #[error("the amounts would add up beyond what the ledger can hold exactly")]
    AmountOutOfRange,
}

impl PaymentError {
    /// How the API reports this refusal.
    pub fn kind(&self) -> RefusalKind {
        match self {
            PaymentError::NotCreated => RefusalKind::NotFound,
            PaymentError::InsufficientFunds { .. } => RefusalKind::InsufficientFunds,
            PaymentError::SplitMismatch { requested, held } if requested > held => {
                RefusalKind::InsufficientFunds
            }
            PaymentError::EscrowFrozen { .. } => RefusalKind::EscrowFrozen,
            // A split short of what is held is right for another state of the payment
            // (what it holds is state, and deposits can still arrive): not malformed input.
            PaymentError::SplitMismatch { .. }
            | PaymentError::AlreadyExists { .. }
            | PaymentError::DepositExceedsAmount { .. }
            | PaymentError::FundsHeld { .. }
            | PaymentError::AlreadyReleased { .. }
            | PaymentError::Cancelled
            | PaymentError::NotFrozenByDispute { .. }
            | PaymentError::DisputeAlreadyOpen { .. } => RefusalKind::InvalidState,
            PaymentError::DepositInFuture { .. }
            | PaymentError::DepositTooOld { .. }
            | PaymentError::DisputeNotEnded { .. }
            | PaymentError::MissingSplitAmounts
            | PaymentError::UnexpectedAmounts
            | PaymentError::AccountNotOfPayment { .. }
            | PaymentError::NoPlatformCounterpart
            | PaymentError::SameAccount
            | PaymentError::WrongAsset { .. }
            | PaymentError::InvalidAmount { .. }
            | PaymentError::InvalidProvider { .. }
            | PaymentError::InvalidReference
            | PaymentError::AmountOutOfRange => RefusalKind::Validation,
        }
    }
}
