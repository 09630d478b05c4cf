//! The payment's commands: each checks the payment's state and decides the events to
//! append, or refuses with a [`PaymentError`]. Amounts arrive parsed (positive, at the
//! asset's scale); what depends on state is checked here.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::Value;
use uuid::Uuid;

use super::{
    total_fees, AdjustmentPosted, DisputeSettled, EscrowFrozen, EscrowUnfrozen, Fee,
    FundsDeposited, FundsRefunded, FundsReleased, Party, Payment, PaymentCancelled, PaymentCreated,
    PaymentError, PaymentEvent, PayoutMade,
};
use crate::account::{is_valid_provider, Account, Reference};
use crate::dispute::{DisputeStatus, Outcome};
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

/// Move the money a dispute's resolution decided (see [`Settlement::from_resolution`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The dispute resolved; it must hold the freeze.
    pub dispute_id: Uuid,
    /// Its outcome.
    pub outcome: Outcome,
    /// For `split`: the seller's part, gross of fees.
    pub seller_amount: Option<Decimal>,
    /// For `split`: the buyer's part.
    pub buyer_amount: Option<Decimal>,
    /// Fees, out of the seller's part (the buyer's for `refund_to_buyer`).
    pub fees: Vec<Fee>,
}

/// A manual correction between an account of this payment and a platform account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    /// The adjustment's id.
    pub adjustment_id: Uuid,
    /// Debited account.
    pub from: Account,
    /// Credited account.
    pub to: Account,
    /// How much; positive.
    pub amount: Decimal,
    /// The asset; must be the payment's.
    pub asset: Asset,
    /// Why.
    pub reason: String,
}

/// Which of a payment's balances an account stands for.
enum Share {
    Escrow,
    Seller,
    Buyer,
    Platform,
}

type Decided = Result<Vec<PaymentEvent>, PaymentError>;

fn insufficient(requested: Decimal, available: Decimal) -> PaymentError {
    PaymentError::InsufficientFunds {
        requested,
        available,
    }
}

fn check_positive(asset: Asset, amount: Decimal) -> Result<(), PaymentError> {
    if amount <= Decimal::ZERO || check_scale(asset, amount).is_err() {
        return Err(PaymentError::InvalidAmount { amount });
    }
    Ok(())
}

fn check_fees(asset: Asset, fees: &[Fee]) -> Result<Decimal, PaymentError> {
    for fee in fees {
        check_positive(asset, fee.amount)?;
    }
    Ok(total_fees(fees))
}

impl Payment {
    fn existing(&self) -> Result<&PaymentCreated, PaymentError> {
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
        if !is_valid_provider(&cmd.provider) {
            return Err(PaymentError::InvalidProvider {
                provider: cmd.provider,
            });
        }
        Ok(vec![PaymentEvent::PaymentCreated(PaymentCreated {
            payment_id: cmd.payment_id,
            buyer: cmd.buyer,
            seller: cmd.seller,
            purchase_request: cmd.purchase_request,
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
    /// `NotCreated`, `Cancelled`, `InvalidAmount`, `EmptyReference`, `DepositInFuture`,
    /// `DepositTooOld`, `DepositExceedsAmount`.
    pub fn deposit(&self, cmd: &Deposit, now: DateTime<Utc>) -> Decided {
        let terms = self.existing()?;
        check_positive(terms.asset, cmd.amount)?;
        if cmd.reference.is_empty() {
            return Err(PaymentError::EmptyReference);
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
        let after = self.deposited + cmd.amount;
        let excess = (after - self.deposited.max(terms.amount)).max(Decimal::ZERO);
        if excess > Decimal::ZERO && !cmd.allow_excess {
            return Err(PaymentError::DepositExceedsAmount {
                deposit: cmd.amount,
                deposited: self.deposited,
                amount: terms.amount,
            });
        }
        Ok(vec![PaymentEvent::FundsDeposited(FundsDeposited {
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
        let seller_amount = amount - total_fees(&cmd.fees);
        Ok(vec![PaymentEvent::FundsReleased(FundsReleased {
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
        let buyer_amount = amount - total_fees(&cmd.fees);
        Ok(vec![PaymentEvent::FundsRefunded(FundsRefunded {
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
    /// `NotCreated`, `InvalidAmount`, `EmptyReference`, `InsufficientFunds`.
    pub fn payout(&self, cmd: &Payout) -> Decided {
        let terms = self.existing()?;
        check_positive(terms.asset, cmd.amount)?;
        if cmd.reference.is_empty() {
            return Err(PaymentError::EmptyReference);
        }
        let share = match cmd.party {
            Party::Seller => self.seller_share,
            Party::Buyer => self.buyer_share,
        };
        if cmd.amount > share {
            return Err(insufficient(cmd.amount, share));
        }
        Ok(vec![PaymentEvent::PayoutMade(PayoutMade {
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
        Ok(vec![PaymentEvent::PaymentCancelled(PaymentCancelled {
            reason: cmd.reason.clone(),
        })])
    }

    /// Freezes the escrow for a dispute that opens (append in the dispute's transaction).
    ///
    /// # Errors
    /// `NotCreated`, `Cancelled`, `DisputeAlreadyOpen`.
    pub fn freeze(&self, dispute_id: Uuid) -> Decided {
        self.existing()?;
        if self.cancelled_at.is_some() {
            return Err(PaymentError::Cancelled);
        }
        if let Some(open) = self.frozen_by {
            return Err(PaymentError::DisputeAlreadyOpen { dispute_id: open });
        }
        Ok(vec![PaymentEvent::EscrowFrozen(EscrowFrozen {
            dispute_id,
        })])
    }

    /// Unfreezes the escrow when its dispute ends without moving money (`status`: how it
    /// ended; see [`DisputeStatus::is_terminal`]). The money stays held.
    ///
    /// # Errors
    /// `NotCreated`, `DisputeNotEnded`, `NotFrozenByDispute`.
    pub fn unfreeze(&self, dispute_id: Uuid, status: DisputeStatus) -> Decided {
        self.existing()?;
        if !status.is_terminal() {
            return Err(PaymentError::DisputeNotEnded { status });
        }
        self.frozen_by_check(dispute_id)?;
        Ok(vec![PaymentEvent::EscrowUnfrozen(EscrowUnfrozen {
            dispute_id,
            dispute_status: status,
        })])
    }

    fn frozen_by_check(&self, dispute_id: Uuid) -> Result<(), PaymentError> {
        if self.frozen_by == Some(dispute_id) {
            Ok(())
        } else {
            Err(PaymentError::NotFrozenByDispute {
                dispute_id,
                frozen_by: self.frozen_by,
            })
        }
    }

    /// Moves the money of a dispute's resolution and ends the freeze.
    ///
    /// - `release_to_seller`: all that is held; the seller gets the releasable part less
    ///   fees, and an excess still held goes back to the buyer (an excess is only refunded).
    /// - `refund_to_buyer`: all that is held to the buyer, fees out of it.
    /// - `split`: `seller_amount + buyer_amount` must equal what is held; fees come out of
    ///   the seller's part; the seller's part may not include the excess.
    /// - `no_action`: moves nothing; the escrow is unfrozen (`EscrowUnfrozen`, `resolved`).
    ///
    /// # Errors
    /// `NotCreated`, `InvalidAmount`, `MissingSplitAmounts`, `UnexpectedAmounts`,
    /// `NotFrozenByDispute`, `SplitMismatch`, `InsufficientFunds`.
    pub fn settle_dispute(&self, cmd: &Settlement) -> Decided {
        let terms = self.existing()?;
        let fee_total = check_fees(terms.asset, &cmd.fees)?;
        let split_parts = match (cmd.outcome, cmd.seller_amount, cmd.buyer_amount) {
            (Outcome::Split, Some(s), Some(b)) => Some((s, b)),
            (Outcome::Split, _, _) => return Err(PaymentError::MissingSplitAmounts),
            (_, None, None) => None,
            _ => return Err(PaymentError::UnexpectedAmounts),
        };
        if cmd.outcome == Outcome::NoAction && !cmd.fees.is_empty() {
            return Err(PaymentError::UnexpectedAmounts);
        }
        if let Some((s, b)) = split_parts {
            for part in [s, b] {
                if part < Decimal::ZERO || check_scale(terms.asset, part).is_err() {
                    return Err(PaymentError::InvalidAmount { amount: part });
                }
            }
        }
        self.frozen_by_check(cmd.dispute_id)?;
        let releasable = self.releasable();
        let (seller_gross, buyer_amount) = match (cmd.outcome, split_parts) {
            (Outcome::NoAction, _) => {
                return Ok(vec![PaymentEvent::EscrowUnfrozen(EscrowUnfrozen {
                    dispute_id: cmd.dispute_id,
                    dispute_status: DisputeStatus::Resolved,
                })]);
            }
            (Outcome::Split, Some((s, b))) => {
                if s + b != self.held {
                    return Err(PaymentError::SplitMismatch {
                        requested: s + b,
                        held: self.held,
                    });
                }
                if s > releasable {
                    return Err(insufficient(s, releasable));
                }
                (s, b)
            }
            (Outcome::RefundToBuyer, _) => {
                if self.held < Decimal::ZERO || fee_total > self.held {
                    return Err(insufficient(fee_total, self.held));
                }
                let settled = DisputeSettled {
                    dispute_id: cmd.dispute_id,
                    outcome: cmd.outcome,
                    seller_amount: Decimal::ZERO,
                    buyer_amount: self.held - fee_total,
                    fees: cmd.fees.clone(),
                };
                return Ok(vec![PaymentEvent::DisputeSettled(settled)]);
            }
            _ => {
                if self.held < Decimal::ZERO {
                    return Err(insufficient(Decimal::ZERO, self.held));
                }
                (releasable, self.excess_held)
            }
        };
        if fee_total > seller_gross {
            return Err(insufficient(fee_total, seller_gross));
        }
        Ok(vec![PaymentEvent::DisputeSettled(DisputeSettled {
            dispute_id: cmd.dispute_id,
            outcome: cmd.outcome,
            seller_amount: seller_gross - fee_total,
            buyer_amount,
            fees: cmd.fees.clone(),
        })])
    }

    /// Posts a correction between this payment's escrow, seller or buyer account and
    /// `platform:adjustments` or `platform:suspense` (or between platform accounts, tagged
    /// with this payment). Refused on a frozen payment, whatever the accounts: the contract
    /// allows no adjustment of a disputed payment but by its resolution.
    ///
    /// # Errors
    /// `NotCreated`, `WrongAsset`, `InvalidAmount`, `SameAccount`, `NoPlatformCounterpart`,
    /// `AccountNotOfPayment`, `EscrowFrozen`, `InsufficientFunds`.
    pub fn adjust(&self, cmd: &Adjustment) -> Decided {
        let terms = self.existing()?;
        if cmd.asset != terms.asset {
            return Err(PaymentError::WrongAsset {
                expected: terms.asset,
                given: cmd.asset,
            });
        }
        check_positive(terms.asset, cmd.amount)?;
        if cmd.from == cmd.to {
            return Err(PaymentError::SameAccount);
        }
        let counterpart =
            |a: &Account| matches!(a, Account::PlatformAdjustments | Account::PlatformSuspense);
        if !counterpart(&cmd.from) && !counterpart(&cmd.to) {
            return Err(PaymentError::NoPlatformCounterpart);
        }
        let from = share_of(terms, &cmd.from)?;
        share_of(terms, &cmd.to)?;
        if let Some(dispute_id) = self.frozen_by {
            return Err(PaymentError::EscrowFrozen { dispute_id });
        }
        let available = match from {
            Share::Escrow => Some(self.held),
            Share::Seller => Some(self.seller_share),
            Share::Buyer => Some(self.buyer_share),
            Share::Platform => None,
        };
        if let Some(available) = available {
            if cmd.amount > available {
                return Err(insufficient(cmd.amount, available));
            }
        }
        Ok(vec![PaymentEvent::AdjustmentPosted(AdjustmentPosted {
            adjustment_id: cmd.adjustment_id,
            from: cmd.from.clone(),
            to: cmd.to.clone(),
            amount: cmd.amount,
            asset: cmd.asset,
            reason: cmd.reason.clone(),
        })])
    }
}

fn share_of(terms: &PaymentCreated, account: &Account) -> Result<Share, PaymentError> {
    match account {
        Account::Escrow(id) if *id == terms.payment_id => Ok(Share::Escrow),
        Account::Seller(r) if *r == terms.seller => Ok(Share::Seller),
        Account::Buyer(r) if *r == terms.buyer => Ok(Share::Buyer),
        Account::PlatformFees
        | Account::PlatformAmlFees
        | Account::PlatformAdjustments
        | Account::PlatformSuspense => Ok(Share::Platform),
        _ => Err(PaymentError::AccountNotOfPayment {
            account: account.to_string(),
        }),
    }
}

impl Settlement {
    /// The settlement a dispute's resolution calls for.
    pub fn from_resolution(dispute_id: Uuid, resolution: &crate::dispute::DisputeResolved) -> Self {
        Settlement {
            dispute_id,
            outcome: resolution.outcome,
            seller_amount: resolution.seller_amount,
            buyer_amount: resolution.buyer_amount,
            fees: resolution.fees.clone(),
        }
    }
}
