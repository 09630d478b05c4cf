//! The payment's commands: each checks the payment's state and decides the events to
//! append, or refuses with a [`PaymentError`]. Amounts arrive parsed (positive, at the
//! asset's scale); what depends on state is checked here.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use super::{
    add, sub, total_fees, Fee, FundsDeposited, FundsRefunded, FundsReleased, Party, Payment,
    PaymentCancelled, PaymentCreated, PaymentError, PaymentEvent, PayoutMade,
};
use crate::account::{is_valid_key_text, is_valid_provider, Reference};
use crate::money::{check_scale, Asset};

/// How far back a deposit's `occurred_at` may lie.
pub const MAX_DEPOSIT_AGE_HOURS: i64 = 72;

/// Create a payment awaiting funds.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePayment {
    /// The new payment's id (the API makes one when the caller gives none).
    pub payment_id: Uuid,
    /// Who pays.
    pub buyer: Reference,
    /// Who is paid.
    pub seller: Reference,
    /// The purchase request paid for.
    pub purchase_request: Reference,
    /// The seller's offer, if any.
    pub seller_offer: Option<Reference>,
    /// What the buyer must deposit; positive.
    pub amount: Decimal,
    /// The asset.
    pub asset: Asset,
    /// The provider (`[a-z0-9_]+`).
    pub provider: String,
    /// Free-form data.
    pub metadata: Option<Value>,
}

/// Record money that came in from the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    /// How much; positive.
    pub amount: Decimal,
    /// The provider's reference (uniqueness per provider is the store's check).
    pub reference: String,
    /// When it happened (the API defaults it to now); append the event with this time.
    pub occurred_at: DateTime<Utc>,
    /// Whether a deposit beyond the amount is kept as a (refundable) excess.
    pub allow_excess: bool,
}

/// Release escrow to the seller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Release {
    /// What leaves escrow; `None`: all that may be released.
    pub amount: Option<Decimal>,
    /// Fees taken out of it.
    pub fees: Vec<Fee>,
}

/// Refund escrow to the buyer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Refund {
    /// What leaves escrow; `None`: all that is held.
    pub amount: Option<Decimal>,
    /// Fees taken out of it.
    pub fees: Vec<Fee>,
}

/// Pay a party's share out to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// Whose share.
    pub party: Party,
    /// How much; positive.
    pub amount: Decimal,
    /// The provider's reference.
    pub reference: String,
}

/// Cancel the payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    /// Why.
    pub reason: String,
}

pub(super) type Decided = Result<Vec<PaymentEvent>, PaymentError>;

pub(super) fn insufficient(requested: Decimal, available: Decimal) -> PaymentError {
    PaymentError::InsufficientFunds {
        requested,
        available,
    }
}

pub(super) fn check_positive(asset: Asset, amount: Decimal) -> Result<(), PaymentError> {
    if amount <= Decimal::ZERO || check_scale(asset, amount).is_err() {
        return Err(PaymentError::InvalidAmount { amount });
    }
    Ok(())
}

pub(super) fn check_fees(asset: Asset, fees: &[Fee]) -> Result<Decimal, PaymentError> {
    for fee in fees {
        check_positive(asset, fee.amount)?;
    }
    total_fees(fees)
}

impl Payment {
    pub(super) fn existing(&self) -> Result<&PaymentCreated, PaymentError> {
        self.terms.as_ref().ok_or(PaymentError::NotCreated)
    }

    /// The terms, if the payment exists, is not cancelled and its escrow is not frozen.
    fn movable(&self) -> Result<&PaymentCreated, PaymentError> {
        let terms = self.existing()?;
        if self.cancelled_at.is_some() {
            return Err(PaymentError::Cancelled);
        }
        if let Some(dispute_id) = self.frozen_by {
            return Err(PaymentError::EscrowFrozen { dispute_id });
        }
        Ok(terms)
    }

    /// Creates the payment.
    ///
    /// # Errors
    /// `AlreadyExists`, `InvalidAmount`, `InvalidProvider`.
    pub fn create(&self, cmd: CreatePayment) -> Decided {
        if self.exists() {
            return Err(PaymentError::AlreadyExists {
                payment_id: cmd.payment_id,
            });
        }
        check_positive(cmd.asset, cmd.amount)?;
        if !is_valid_provider(&cmd.provider) || !is_valid_key_text(&cmd.provider) {
            return Err(PaymentError::InvalidProvider {
                provider: cmd.provider,
            });
        }
        self.folding(vec![PaymentEvent::PaymentCreated(PaymentCreated {
            payment_id: cmd.payment_id,
            buyer: cmd.buyer,
            seller: cmd.seller,
            purchase_request: Some(cmd.purchase_request),
            seller_offer: cmd.seller_offer,
            amount: cmd.amount,
            asset: cmd.asset,
            provider: cmd.provider,
            metadata: cmd.metadata,
        })])
    }

    /// Records a deposit. A frozen escrow still takes deposits: money coming in does not
    /// move what the dispute is about, and refusing it would leave the provider's money
    /// unrecorded.
    ///
    /// # Errors
    /// `NotCreated`, `Cancelled`, `InvalidAmount`, `InvalidReference`, `DepositInFuture`,
    /// `DepositTooOld`, `DepositExceedsAmount`, `AmountOutOfRange`.
    pub fn deposit(&self, cmd: &Deposit, now: DateTime<Utc>) -> Decided {
        let terms = self.existing()?;
        check_positive(terms.asset, cmd.amount)?;
        if !is_valid_key_text(&cmd.reference) {
            return Err(PaymentError::InvalidReference);
        }
        if cmd.occurred_at > now {
            return Err(PaymentError::DepositInFuture {
                occurred_at: cmd.occurred_at,
                now,
            });
        }
        if cmd.occurred_at < now - Duration::hours(MAX_DEPOSIT_AGE_HOURS) {
            return Err(PaymentError::DepositTooOld {
                occurred_at: cmd.occurred_at,
                now,
            });
        }
        if self.cancelled_at.is_some() {
            return Err(PaymentError::Cancelled);
        }
        let after = add(self.deposited, cmd.amount)?;
        let excess = sub(after, self.deposited.max(terms.amount))?.max(Decimal::ZERO);
        if excess > Decimal::ZERO && !cmd.allow_excess {
            return Err(PaymentError::DepositExceedsAmount {
                deposit: cmd.amount,
                deposited: self.deposited,
                amount: terms.amount,
            });
        }
        self.folding(vec![PaymentEvent::FundsDeposited(FundsDeposited {
            amount: cmd.amount,
            reference: cmd.reference.clone(),
            allow_excess: cmd.allow_excess,
            excess,
        })])
    }

    /// Releases escrow to the seller, fees to the platform, in one event. An excess still
    /// held cannot be released.
    ///
    /// # Errors
    /// `NotCreated`, `InvalidAmount`, `Cancelled`, `EscrowFrozen`, `InsufficientFunds`.
    pub fn release(&self, cmd: &Release) -> Decided {
        let amount = self.outgoing(cmd.amount, &cmd.fees, self.releasable())?;
        let seller_amount = sub(amount, total_fees(&cmd.fees)?)?;
        self.folding(vec![PaymentEvent::FundsReleased(FundsReleased {
            amount,
            fees: cmd.fees.clone(),
            seller_amount,
        })])
    }

    /// Refunds escrow (excess included) to the buyer, fees to the platform, in one event.
    ///
    /// # Errors
    /// `NotCreated`, `InvalidAmount`, `Cancelled`, `EscrowFrozen`, `InsufficientFunds`.
    pub fn refund(&self, cmd: &Refund) -> Decided {
        let amount = self.outgoing(cmd.amount, &cmd.fees, self.held)?;
        let buyer_amount = sub(amount, total_fees(&cmd.fees)?)?;
        self.folding(vec![PaymentEvent::FundsRefunded(FundsRefunded {
            amount,
            fees: cmd.fees.clone(),
            buyer_amount,
        })])
    }

    /// Checks a release or refund of `amount` (default: all `available`) with `fees`.
    fn outgoing(
        &self,
        amount: Option<Decimal>,
        fees: &[Fee],
        available: Decimal,
    ) -> Result<Decimal, PaymentError> {
        let terms = self.existing()?;
        if let Some(amount) = amount {
            check_positive(terms.asset, amount)?;
        }
        let fee_total = check_fees(terms.asset, fees)?;
        self.movable()?;
        let requested = amount.unwrap_or(available);
        if requested <= Decimal::ZERO || requested > available {
            return Err(insufficient(requested, available));
        }
        if fee_total > requested {
            return Err(insufficient(fee_total, requested));
        }
        Ok(requested)
    }

    /// Pays out a party's share. Allowed while a dispute is open: that money has left
    /// escrow already. Allowed on a cancelled payment too (a refunded buyer must be paid).
    ///
    /// # Errors
    /// `NotCreated`, `InvalidAmount`, `InvalidReference`, `InsufficientFunds`.
    pub fn payout(&self, cmd: &Payout) -> Decided {
        let terms = self.existing()?;
        check_positive(terms.asset, cmd.amount)?;
        if !is_valid_key_text(&cmd.reference) {
            return Err(PaymentError::InvalidReference);
        }
        let share = match cmd.party {
            Party::Seller => self.seller_share,
            Party::Buyer => self.buyer_share,
        };
        if cmd.amount > share {
            return Err(insufficient(cmd.amount, share));
        }
        self.folding(vec![PaymentEvent::PayoutMade(PayoutMade {
            party: cmd.party,
            amount: cmd.amount,
            reference: cmd.reference.clone(),
        })])
    }

    /// Cancels the payment: only while nothing is held and nothing was released to the
    /// seller. A payment whose deposits were all refunded may be cancelled.
    ///
    /// # Errors
    /// `NotCreated`, `Cancelled`, `EscrowFrozen`, `FundsHeld`, `AlreadyReleased`.
    pub fn cancel(&self, cmd: &Cancel) -> Decided {
        self.movable()?;
        if !self.held.is_zero() {
            return Err(PaymentError::FundsHeld { held: self.held });
        }
        if self.released > Decimal::ZERO {
            return Err(PaymentError::AlreadyReleased {
                released: self.released,
            });
        }
        self.folding(vec![PaymentEvent::PaymentCancelled(PaymentCancelled {
            reason: cmd.reason.clone(),
        })])
    }
}
