//! The payment side of disputes: freezing the escrow when one opens, unfreezing it when
//! one ends without moving money, and settling the money of a resolution. A frozen escrow
//! moves only by the freezing dispute's settlement.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::commands::{check_fees, insufficient, Decided};
use super::{
    add, sub, DisputeSettled, EscrowFrozen, EscrowUnfrozen, Fee, Payment, PaymentError,
    PaymentEvent,
};
use crate::dispute::{DisputeResolved, DisputeStatus, Outcome};
use crate::money::check_scale;

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

impl Payment {
    /// Freezes the escrow for a dispute that opens (append in the dispute's transaction).
    ///
    /// # Errors
    /// `NotCreated`, `Cancelled`, `DisputeAlreadyOpen`.
    pub fn freeze(&self, dispute_id: Uuid) -> Decided {
        if self.cancelled_at.is_some() {
            self.existing()?;
            return Err(PaymentError::Cancelled);
        }
        self.freeze_imported(dispute_id)
    }

    /// [`Payment::freeze`] for a legacy dispute open at cutover: a legacy payment may have
    /// been cancelled while it still held money (a live one never is), and a dispute open
    /// over that money freezes it like any other (`legacy-mongo.md`: "A dispute still
    /// open at cutover freezes its payment's escrow from then on"). A cancelled payment
    /// holding nothing is not frozen. The live API keeps refusing disputes on cancelled
    /// payments.
    ///
    /// # Errors
    /// `NotCreated`, `Cancelled`, `DisputeAlreadyOpen`.
    pub fn freeze_imported(&self, dispute_id: Uuid) -> Decided {
        self.existing()?;
        if self.cancelled_at.is_some() && self.held <= Decimal::ZERO {
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
                let requested = add(s, b)?;
                if requested != self.held {
                    return Err(PaymentError::SplitMismatch {
                        requested,
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
                    buyer_amount: sub(self.held, fee_total)?,
                    fees: cmd.fees.clone(),
                };
                return self.folding(vec![PaymentEvent::DisputeSettled(settled)]);
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
        self.folding(vec![PaymentEvent::DisputeSettled(DisputeSettled {
            dispute_id: cmd.dispute_id,
            outcome: cmd.outcome,
            seller_amount: sub(seller_gross, fee_total)?,
            buyer_amount,
            fees: cmd.fees.clone(),
        })])
    }
}

impl Settlement {
    /// The settlement a dispute's resolution calls for.
    pub fn from_resolution(dispute_id: Uuid, resolution: &DisputeResolved) -> Self {
        Settlement {
            dispute_id,
            outcome: resolution.outcome,
            seller_amount: resolution.seller_amount,
            buyer_amount: resolution.buyer_amount,
            fees: resolution.fees.clone(),
        }
    }
}
