//! The payment stream's events: their stored shapes (type name = variant name, payload =
//! the variant's struct, amounts as strings, schema version 1) and the double-entry legs
//! each one moves. Every money event's legs sum to zero and no leg is ever zero.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::account::{Account, Reference};
use crate::decode::event_codec;
use crate::dispute::{DisputeStatus, Outcome};
use crate::event::{Metadata, NewEvent};
use crate::money::Asset;
use crate::posting::{transfer, Posting};

use super::imported::{LedgerEntryImported, PaymentImported};

/// The stream type of payment streams (stream id = payment id): a contract.
pub const STREAM_TYPE: &str = "payment";

/// Which platform account a fee goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeKind {
    /// The platform fee, to `platform:fees`.
    Fee,
    /// The anti-money-laundering fee, to `platform:aml_fees`.
    AmlFee,
}

impl FeeKind {
    /// The platform account this kind of fee is credited to.
    pub fn account(self) -> Account {
        match self {
            FeeKind::Fee => Account::PlatformFees,
            FeeKind::AmlFee => Account::PlatformAmlFees,
        }
    }
}

/// A fee taken out of money leaving escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fee {
    /// Which fee.
    pub kind: FeeKind,
    /// How much; positive.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// The exact sum of a list of fees.
///
/// # Errors
/// [`PaymentError::AmountOutOfRange`](super::PaymentError::AmountOutOfRange) when it does
/// not fit the decimal type exactly.
pub fn total_fees(fees: &[Fee]) -> Result<Decimal, super::PaymentError> {
    crate::money::exact_sum(fees.iter().map(|f| f.amount))
        .ok_or(super::PaymentError::AmountOutOfRange)
}

/// A party of a payment that can hold a share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The seller (`seller:<ref>`).
    Seller,
    /// The buyer (`buyer:<ref>`).
    Buyer,
}

/// A payment was created: the buyer is to put `amount` into escrow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCreated {
    /// The payment's id (= its stream id).
    pub payment_id: Uuid,
    /// Who pays.
    pub buyer: Reference,
    /// Who is paid.
    pub seller: Reference,
    /// The purchase request paid for. Always given by a live payment; `None` only for a
    /// legacy payment imported without one (`legacy-mongo.md`: a Mixed reference that is
    /// null or absent is no reference).
    pub purchase_request: Option<Reference>,
    /// The seller's offer accepted, if any.
    #[serde(default)]
    pub seller_offer: Option<Reference>,
    /// What the buyer must deposit.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The asset of every amount of this payment.
    pub asset: Asset,
    /// The payment provider (`[a-z0-9_]+`): names `external:<provider>`.
    pub provider: String,
    /// Free-form data carried for the caller.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Money came in: `external:<provider>` → `escrow:<payment>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsDeposited {
    /// The whole deposit, excess included.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The provider's reference (chain tx hash, charge id).
    pub reference: String,
    /// Whether the caller allowed a deposit beyond the payment's amount.
    pub allow_excess: bool,
    /// The part of `amount` beyond the payment's amount (0 normally); refundable only.
    #[serde(with = "rust_decimal::serde::str")]
    pub excess: Decimal,
}

/// Money left escrow for the seller: escrow −amount, seller +seller_amount, fees to platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsReleased {
    /// Gross: what leaves escrow.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Fees taken out of `amount`.
    #[serde(default)]
    pub fees: Vec<Fee>,
    /// Net to the seller: `amount − fees` (may be 0: then no seller leg).
    #[serde(with = "rust_decimal::serde::str")]
    pub seller_amount: Decimal,
}

/// Money left escrow for the buyer: escrow −amount, buyer +buyer_amount, fees to platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsRefunded {
    /// Gross: what leaves escrow.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Fees taken out of `amount`.
    #[serde(default)]
    pub fees: Vec<Fee>,
    /// Net to the buyer: `amount − fees` (may be 0: then no buyer leg).
    #[serde(with = "rust_decimal::serde::str")]
    pub buyer_amount: Decimal,
}

/// A party's share was paid out: `seller:`/`buyer:` → `external:<provider>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutMade {
    /// Whose share.
    pub party: Party,
    /// How much.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The provider's reference of the payout.
    pub reference: String,
}

/// The payment was cancelled; it takes no more deposits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCancelled {
    /// Why.
    pub reason: String,
}

/// A dispute opened: the escrow moves only by that dispute's resolution until unfrozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowFrozen {
    /// The dispute holding the freeze.
    pub dispute_id: Uuid,
}

/// The dispute ended without moving money (rejected, withdrawn, closed, or resolved with
/// `no_action`); the escrow stays held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowUnfrozen {
    /// The dispute that held the freeze.
    pub dispute_id: Uuid,
    /// The status it ended in.
    pub dispute_status: DisputeStatus,
}

/// The money of a dispute's resolution: escrow → seller (net of fees), escrow → buyer,
/// fees to platform accounts; ends the freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeSettled {
    /// The dispute resolved.
    pub dispute_id: Uuid,
    /// Its outcome (`release_to_seller`, `refund_to_buyer` or `split`).
    pub outcome: Outcome,
    /// Net to the seller (may be 0).
    #[serde(with = "rust_decimal::serde::str")]
    pub seller_amount: Decimal,
    /// Net to the buyer (may be 0).
    #[serde(with = "rust_decimal::serde::str")]
    pub buyer_amount: Decimal,
    /// Fees, out of the seller's part (out of the buyer's for `refund_to_buyer`).
    #[serde(default)]
    pub fees: Vec<Fee>,
}

impl DisputeSettled {
    /// What leaves escrow: seller + buyer + fees.
    ///
    /// # Errors
    /// [`PaymentError::AmountOutOfRange`](super::PaymentError::AmountOutOfRange) when the
    /// sum does not fit the decimal type exactly (never for a settlement a command decided).
    pub fn gross(&self) -> Result<Decimal, super::PaymentError> {
        let parts = super::add(self.seller_amount, self.buyer_amount)?;
        super::add(parts, total_fees(&self.fees)?)
    }
}

/// A manual correction touching this payment's escrow, seller or buyer account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentPosted {
    /// The adjustment's id.
    pub adjustment_id: Uuid,
    /// Debited account.
    pub from: Account,
    /// Credited account.
    pub to: Account,
    /// How much; positive.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The asset (the payment's).
    pub asset: Asset,
    /// Why.
    pub reason: String,
}

/// Every event of a payment stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum PaymentEvent {
    /// See [`PaymentCreated`].
    PaymentCreated(PaymentCreated),
    /// See [`FundsDeposited`].
    FundsDeposited(FundsDeposited),
    /// See [`FundsReleased`].
    FundsReleased(FundsReleased),
    /// See [`FundsRefunded`].
    FundsRefunded(FundsRefunded),
    /// See [`PayoutMade`].
    PayoutMade(PayoutMade),
    /// See [`PaymentCancelled`].
    PaymentCancelled(PaymentCancelled),
    /// See [`EscrowFrozen`].
    EscrowFrozen(EscrowFrozen),
    /// See [`EscrowUnfrozen`].
    EscrowUnfrozen(EscrowUnfrozen),
    /// See [`DisputeSettled`].
    DisputeSettled(DisputeSettled),
    /// See [`AdjustmentPosted`].
    AdjustmentPosted(AdjustmentPosted),
    /// See [`PaymentImported`].
    PaymentImported(PaymentImported),
    /// See [`LedgerEntryImported`].
    LedgerEntryImported(LedgerEntryImported),
}

event_codec!(PaymentEvent {
    PaymentCreated,
    FundsDeposited,
    FundsReleased,
    FundsRefunded,
    PayoutMade,
    PaymentCancelled,
    EscrowFrozen,
    EscrowUnfrozen,
    DisputeSettled,
    AdjustmentPosted,
    PaymentImported,
    LedgerEntryImported,
});

/// The accounts a payment's events post to. Built from the payment's terms
/// ([`Payment::accounts`](super::Payment::accounts)); the importer may put
/// `platform:suspense` where an orphan entry's missing payment would have named a party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAccounts {
    /// `escrow:<payment>`.
    pub escrow: Account,
    /// `seller:<seller>`.
    pub seller: Account,
    /// `buyer:<buyer>`.
    pub buyer: Account,
    /// `external:<provider>`.
    pub external: Account,
    /// The payment's asset.
    pub asset: Asset,
}

impl PaymentAccounts {
    /// The accounts of a payment with these terms.
    pub fn of(created: &PaymentCreated) -> Self {
        PaymentAccounts {
            escrow: Account::Escrow(created.payment_id),
            seller: Account::Seller(created.seller.clone()),
            buyer: Account::Buyer(created.buyer.clone()),
            external: Account::External(created.provider.clone()),
            asset: created.asset,
        }
    }

    fn leg(&self, account: &Account, amount: Decimal, legs: &mut Vec<Posting>) {
        if !amount.is_zero() {
            legs.push(Posting {
                account: account.clone(),
                asset: self.asset,
                amount,
            });
        }
    }

    fn fee_legs(&self, fees: &[Fee], legs: &mut Vec<Posting>) {
        for fee in fees {
            self.leg(&fee.kind.account(), fee.amount, legs);
        }
    }
}

impl PaymentEvent {
    /// The double-entry legs this event moves, posted to `accounts`; empty for events that
    /// move no money. Zero legs are left out, so a fee equal to the whole amount posts no
    /// seller (or buyer) leg.
    pub fn postings(&self, accounts: &PaymentAccounts) -> Vec<Posting> {
        let mut legs = Vec::new();
        match self {
            PaymentEvent::FundsDeposited(e) => {
                accounts.leg(&accounts.external, -e.amount, &mut legs);
                accounts.leg(&accounts.escrow, e.amount, &mut legs);
            }
            PaymentEvent::FundsReleased(e) => {
                accounts.leg(&accounts.escrow, -e.amount, &mut legs);
                accounts.leg(&accounts.seller, e.seller_amount, &mut legs);
                accounts.fee_legs(&e.fees, &mut legs);
            }
            PaymentEvent::FundsRefunded(e) => {
                accounts.leg(&accounts.escrow, -e.amount, &mut legs);
                accounts.leg(&accounts.buyer, e.buyer_amount, &mut legs);
                accounts.fee_legs(&e.fees, &mut legs);
            }
            PaymentEvent::PayoutMade(e) => {
                let from = match e.party {
                    Party::Seller => &accounts.seller,
                    Party::Buyer => &accounts.buyer,
                };
                accounts.leg(from, -e.amount, &mut legs);
                accounts.leg(&accounts.external, e.amount, &mut legs);
            }
            PaymentEvent::DisputeSettled(e) => {
                // A gross beyond the type (never decided by a command) leaves the escrow
                // leg out: the legs then do not balance and the store refuses the append.
                if let Ok(gross) = e.gross() {
                    accounts.leg(&accounts.escrow, -gross, &mut legs);
                }
                accounts.leg(&accounts.seller, e.seller_amount, &mut legs);
                accounts.leg(&accounts.buyer, e.buyer_amount, &mut legs);
                accounts.fee_legs(&e.fees, &mut legs);
            }
            PaymentEvent::AdjustmentPosted(e) => {
                if !e.amount.is_zero() {
                    legs.extend(transfer(e.from.clone(), e.to.clone(), e.asset, e.amount));
                }
            }
            PaymentEvent::LedgerEntryImported(e) => {
                if !e.amount.is_zero() {
                    legs.extend(transfer(e.from.clone(), e.to.clone(), e.asset, e.amount));
                }
            }
            PaymentEvent::PaymentCreated(_)
            | PaymentEvent::PaymentImported(_)
            | PaymentEvent::PaymentCancelled(_)
            | PaymentEvent::EscrowFrozen(_)
            | PaymentEvent::EscrowUnfrozen(_) => {}
        }
        legs
    }

    /// This event as a [`NewEvent`] to append, with the given legs, metadata and time.
    pub fn to_new_event(
        &self,
        postings: Vec<Posting>,
        metadata: &Metadata,
        occurred_at: DateTime<Utc>,
    ) -> NewEvent {
        NewEvent::new(
            self.event_type(),
            self.payload(),
            metadata,
            occurred_at,
            postings,
        )
    }
}
