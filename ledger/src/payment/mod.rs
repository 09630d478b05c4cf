//! The payment aggregate: the state of one escrow payment, rebuilt by folding its events,
//! and the commands deciding new events from it. Pure: no I/O; time and ids are passed in.
//! It keeps the contract's money invariants per payment: escrow, seller and buyer shares
//! never go below zero through a command, deposits never pass the amount unless an excess
//! was allowed (and an excess is only ever refunded), and a frozen escrow moves only by its
//! dispute's resolution.

mod adjust;
mod commands;
mod error;
mod events;
mod imported;
mod settlement;
mod status;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::account::Account;
use crate::decode::DecodeError;
use crate::dispute::Outcome;
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::money;

pub use adjust::Adjustment;
pub use commands::{
    Cancel, CreatePayment, Deposit, Payout, Refund, Release, MAX_DEPOSIT_AGE_HOURS,
};
pub use error::PaymentError;
pub use events::{
    total_fees, AdjustmentPosted, DisputeSettled, EscrowFrozen, EscrowUnfrozen, Fee, FeeKind,
    FundsDeposited, FundsRefunded, FundsReleased, Party, PaymentAccounts, PaymentCancelled,
    PaymentCreated, PaymentEvent, PayoutMade, STREAM_TYPE,
};
pub use imported::{
    entry_stream_id, EntryDirection, EntryKind, EntryPlacement, LedgerEntryImported,
    PaymentImported, ENTRY_STREAM_TYPE,
};
pub use settlement::Settlement;
pub use status::PaymentStatus;

/// The state of one payment. `Payment::default()` is a payment whose stream does not exist.
///
/// Amounts are in the payment's asset. Gross amounts include the fees taken out of them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payment {
    /// The terms the payment was created with; `None` while the stream does not exist.
    pub terms: Option<PaymentCreated>,
    /// The derived status (see [`PaymentStatus`]).
    pub status: PaymentStatus,
    /// All deposits, excess included.
    pub deposited: Decimal,
    /// The part of deposits beyond the amount, allowed explicitly.
    pub excess: Decimal,
    /// The part of the excess still in escrow: it can only be refunded.
    pub excess_held: Decimal,
    /// The escrow balance; negative only through imported history.
    pub held: Decimal,
    /// Gross released to the seller (releases and the seller part of settlements).
    pub released: Decimal,
    /// Gross refunded to the buyer (refunds and the buyer part of settlements).
    pub refunded: Decimal,
    /// Platform fees taken.
    pub fees: Decimal,
    /// AML fees taken.
    pub aml_fees: Decimal,
    /// This payment's share of the seller's account: credited net, minus paid out,
    /// plus/minus adjustments.
    pub seller_share: Decimal,
    /// This payment's share of the buyer's account, likewise.
    pub buyer_share: Decimal,
    /// Paid out to the seller.
    pub paid_out_seller: Decimal,
    /// Paid out to the buyer.
    pub paid_out_buyer: Decimal,
    /// Net money adjustments moved into (+) or out of (−) the escrow: what explains
    /// `held` beside deposits, releases and refunds once an administrator corrected it.
    pub escrow_adjusted: Decimal,
    /// The open dispute freezing the escrow, if any.
    pub frozen_by: Option<Uuid>,
    /// When it was created.
    pub created_at: Option<DateTime<Utc>>,
    /// When deposits first reached the amount.
    pub funded_at: Option<DateTime<Utc>>,
    /// When money last left escrow for the seller.
    pub released_at: Option<DateTime<Utc>>,
    /// When money last left escrow for the buyer.
    pub refunded_at: Option<DateTime<Utc>>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The stream's version: the number of events folded (0 = no stream).
    pub version: i64,
}

/// Why a payment's stored history does not fold into a state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An event does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Folding the event at this stream version would take a sum beyond what `Decimal`
    /// holds exactly. Commands never write such an event (see [`Payment::apply`]); finding
    /// one means the store holds history from elsewhere that must be looked at.
    #[error("event at version {version} takes a sum beyond the decimal type")]
    OutOfRange {
        /// The stream version of the event.
        version: i64,
    },
}

/// `a + b` exactly, or the refusal every sum of this aggregate makes.
pub(crate) fn add(a: Decimal, b: Decimal) -> Result<Decimal, PaymentError> {
    money::exact_add(a, b).ok_or(PaymentError::AmountOutOfRange)
}

/// `a - b` exactly, or the refusal every sum of this aggregate makes.
pub(crate) fn sub(a: Decimal, b: Decimal) -> Result<Decimal, PaymentError> {
    money::exact_sub(a, b).ok_or(PaymentError::AmountOutOfRange)
}

impl Payment {
    /// Rebuilds a payment from its stored events, in stream order.
    ///
    /// # Errors
    /// [`HistoryError::Decode`] if an event does not decode, [`HistoryError::OutOfRange`]
    /// if one takes a sum beyond the decimal type.
    pub fn from_history<'a>(
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Result<Payment, HistoryError> {
        let mut payment = Payment::default();
        for recorded in events {
            let event = PaymentEvent::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )?;
            payment
                .try_apply(&event, recorded.occurred_at)
                .map_err(|_| HistoryError::OutOfRange {
                    version: recorded.version,
                })?;
            payment.version = recorded.version;
        }
        Ok(payment)
    }

    /// Whether the stream exists.
    pub fn exists(&self) -> bool {
        self.terms.is_some()
    }

    /// The payment's id, if it exists.
    pub fn id(&self) -> Option<Uuid> {
        self.terms.as_ref().map(|t| t.payment_id)
    }

    /// The accounts this payment's events post to, if it exists.
    pub fn accounts(&self) -> Option<PaymentAccounts> {
        self.terms.as_ref().map(PaymentAccounts::of)
    }

    /// What a release may take: the escrow less the excess still held (an excess is only
    /// refundable). Negative when imported history drove the escrow below zero.
    ///
    /// Exact for every state folded by [`Payment::try_apply`] (which checks this very
    /// difference), since `0 <= excess_held <= max(held, 0)` after each event.
    pub fn releasable(&self) -> Decimal {
        self.held - self.excess_held
    }

    /// Folds one event into the state, infallibly, for callers replaying stored events.
    ///
    /// Every sum is exact ([`money::exact_add`]); none can fail for events this aggregate's
    /// commands decided, because every command folds what it decides with
    /// [`Payment::try_apply`] first and refuses with [`PaymentError::AmountOutOfRange`]
    /// when a sum would not fit: no event that overflows is ever written by a command. If
    /// an event from elsewhere would overflow anyway, its money is left out (the state is
    /// as before it, but for the version) rather than panicking, rounding or saturating;
    /// use [`Payment::try_apply`] or [`Payment::from_history`] to be told.
    pub fn apply(&mut self, event: &PaymentEvent, occurred_at: DateTime<Utc>) {
        if self.try_apply(event, occurred_at).is_err() {
            self.version += 1;
        }
    }

    /// Folds one event into the state with exact sums.
    ///
    /// # Errors
    /// [`PaymentError::AmountOutOfRange`] when a sum would not fit the decimal type
    /// exactly; the state is then left as it was.
    pub fn try_apply(
        &mut self,
        event: &PaymentEvent,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        // Every field but the terms is `Copy`, and only events that cannot fail set the
        // terms: a copy of the rest restores the state without allocating.
        let saved = Payment {
            terms: None,
            ..*self
        };
        if let Err(e) = self.fold(event, occurred_at) {
            let terms = self.terms.take();
            *self = Payment { terms, ..saved };
            return Err(e);
        }
        Ok(())
    }

    /// Checks that `events`, decided on this state, fold with exact sums, and returns them.
    ///
    /// # Errors
    /// [`PaymentError::AmountOutOfRange`].
    pub(crate) fn folding(
        &self,
        events: Vec<PaymentEvent>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let mut next = self.clone();
        for event in &events {
            // The time is not part of any sum.
            next.try_apply(event, DateTime::<Utc>::UNIX_EPOCH)?;
        }
        Ok(events)
    }

    fn fold(
        &mut self,
        event: &PaymentEvent,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        match event {
            PaymentEvent::PaymentCreated(e) => {
                self.terms = Some(e.clone());
                self.created_at = Some(occurred_at);
            }
            PaymentEvent::FundsDeposited(e) => {
                self.deposited = add(self.deposited, e.amount)?;
                self.held = add(self.held, e.amount)?;
                self.excess = add(self.excess, e.excess)?;
                self.excess_held = add(self.excess_held, e.excess)?;
                let amount = self.terms.as_ref().map_or(Decimal::ZERO, |t| t.amount);
                if self.funded_at.is_none() && self.deposited >= amount {
                    self.funded_at = Some(occurred_at);
                }
            }
            PaymentEvent::FundsReleased(e) => {
                self.held = sub(self.held, e.amount)?;
                self.released = add(self.released, e.amount)?;
                self.seller_share = add(self.seller_share, e.seller_amount)?;
                self.take_fees(&e.fees)?;
                self.released_at = Some(occurred_at);
            }
            PaymentEvent::FundsRefunded(e) => {
                self.held = sub(self.held, e.amount)?;
                self.refunded = add(self.refunded, e.amount)?;
                self.buyer_share = add(self.buyer_share, e.buyer_amount)?;
                self.take_fees(&e.fees)?;
                // A refund gives back the excess first.
                self.excess_held = sub(self.excess_held, e.amount)?.max(Decimal::ZERO);
                self.refunded_at = Some(occurred_at);
            }
            PaymentEvent::PayoutMade(e) => match e.party {
                Party::Seller => {
                    self.seller_share = sub(self.seller_share, e.amount)?;
                    self.paid_out_seller = add(self.paid_out_seller, e.amount)?;
                }
                Party::Buyer => {
                    self.buyer_share = sub(self.buyer_share, e.amount)?;
                    self.paid_out_buyer = add(self.paid_out_buyer, e.amount)?;
                }
            },
            PaymentEvent::PaymentCancelled(_) => self.cancelled_at = Some(occurred_at),
            PaymentEvent::EscrowFrozen(e) => self.frozen_by = Some(e.dispute_id),
            PaymentEvent::EscrowUnfrozen(_) => self.frozen_by = None,
            PaymentEvent::DisputeSettled(e) => self.apply_settlement(e, occurred_at)?,
            PaymentEvent::AdjustmentPosted(e) => {
                self.adjust_share(&e.from, -e.amount)?;
                self.adjust_share(&e.to, e.amount)?;
            }
            PaymentEvent::PaymentImported(e) => self.apply_payment_imported(e, occurred_at),
            PaymentEvent::LedgerEntryImported(e) => self.apply_entry_imported(e, occurred_at)?,
        }
        self.excess_held = self.excess_held.min(self.held.max(Decimal::ZERO));
        // What `releasable` will compute must be exact too.
        sub(self.held, self.excess_held)?;
        self.version += 1;
        self.status = self.derive_status();
        Ok(())
    }

    fn apply_settlement(
        &mut self,
        e: &DisputeSettled,
        at: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        let fees = total_fees(&e.fees)?;
        let (to_seller, to_buyer) = if e.outcome == Outcome::RefundToBuyer {
            (e.seller_amount, add(e.buyer_amount, fees)?)
        } else {
            (add(e.seller_amount, fees)?, e.buyer_amount)
        };
        self.held = sub(self.held, add(to_seller, to_buyer)?)?;
        self.released = add(self.released, to_seller)?;
        self.refunded = add(self.refunded, to_buyer)?;
        self.seller_share = add(self.seller_share, e.seller_amount)?;
        self.buyer_share = add(self.buyer_share, e.buyer_amount)?;
        self.take_fees(&e.fees)?;
        self.excess_held = sub(self.excess_held, to_buyer)?.max(Decimal::ZERO);
        if !to_seller.is_zero() {
            self.released_at = Some(at);
        }
        if !to_buyer.is_zero() {
            self.refunded_at = Some(at);
        }
        self.frozen_by = None;
        Ok(())
    }

    fn take_fees(&mut self, fees: &[Fee]) -> Result<(), PaymentError> {
        for fee in fees {
            match fee.kind {
                FeeKind::Fee => self.fees = add(self.fees, fee.amount)?,
                FeeKind::AmlFee => self.aml_fees = add(self.aml_fees, fee.amount)?,
            }
        }
        Ok(())
    }

    /// Adds `delta` to the share `account` stands for, if it is this payment's.
    fn adjust_share(&mut self, account: &Account, delta: Decimal) -> Result<(), PaymentError> {
        let Some(terms) = &self.terms else {
            return Ok(());
        };
        match account {
            Account::Escrow(id) if *id == terms.payment_id => {
                self.held = add(self.held, delta)?;
                self.escrow_adjusted = add(self.escrow_adjusted, delta)?;
            }
            Account::Seller(r) if *r == terms.seller => {
                self.seller_share = add(self.seller_share, delta)?;
            }
            Account::Buyer(r) if *r == terms.buyer => {
                self.buyer_share = add(self.buyer_share, delta)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn derive_status(&self) -> PaymentStatus {
        let amount = self.terms.as_ref().map_or(Decimal::ZERO, |t| t.amount);
        let out_seller = self.released > Decimal::ZERO;
        let out_buyer = self.refunded > Decimal::ZERO;
        if self.cancelled_at.is_some() {
            PaymentStatus::Cancelled
        } else if self.frozen_by.is_some() {
            PaymentStatus::Disputed
        } else if !out_seller && !out_buyer {
            if self.deposited <= Decimal::ZERO {
                PaymentStatus::AwaitingDeposit
            } else if self.deposited < amount {
                PaymentStatus::PartiallyFunded
            } else {
                PaymentStatus::Funded
            }
        } else if self.held > Decimal::ZERO {
            if out_buyer {
                PaymentStatus::PartiallyRefunded
            } else {
                PaymentStatus::PartiallyReleased
            }
        } else if out_seller && out_buyer {
            PaymentStatus::Settled
        } else if out_seller {
            PaymentStatus::Released
        } else {
            PaymentStatus::Refunded
        }
    }

    /// Turns decided events into [`NewEvent`]s to append to this payment's stream, each
    /// with its legs posted to this payment's accounts (the accounts of a `PaymentCreated`
    /// among them for the events after it).
    pub fn new_events(
        &self,
        events: &[PaymentEvent],
        metadata: &Metadata,
        occurred_at: DateTime<Utc>,
    ) -> Vec<NewEvent> {
        let mut state = self.clone();
        events
            .iter()
            .map(|event| {
                let postings = state
                    .accounts()
                    .map(|accounts| event.postings(&accounts))
                    .unwrap_or_default();
                state.apply(event, occurred_at);
                event.to_new_event(postings, metadata, occurred_at)
            })
            .collect()
    }
}
