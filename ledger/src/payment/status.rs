//! Payment statuses: our design, derived from the money a payment holds and has moved, and
//! the mapping of every legacy MongoDB status onto them.

use serde::{Deserialize, Serialize};

/// Where a payment stands. Derived after every event, in this order of precedence:
///
/// | status | when |
/// |---|---|
/// | `cancelled` | the payment was cancelled |
/// | `disputed` | a dispute is open (escrow frozen): overrides every status below |
/// | `awaiting_deposit` | nothing moved out, nothing deposited |
/// | `partially_funded` | nothing moved out, 0 < deposited < amount |
/// | `funded` | nothing moved out, deposited ≥ amount |
/// | `partially_released` | money moved out only to the seller (and fees), some still held |
/// | `partially_refunded` | money moved out to the buyer (possibly also to the seller), some still held |
/// | `released` | nothing held, money left only to the seller (and fees) |
/// | `refunded` | nothing held, money left only to the buyer (and fees) |
/// | `settled` | nothing held, money left to both seller and buyer (a split) |
///
/// "Moved out" counts releases, refunds and dispute settlements (gross, fees included),
/// not payouts (those leave a party's account, not escrow) nor adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing deposited yet.
    #[default]
    AwaitingDeposit,
    /// Some, not all, of the amount deposited.
    PartiallyFunded,
    /// The amount (or more) deposited, nothing moved out.
    Funded,
    /// Some released to the seller, some still held.
    PartiallyReleased,
    /// Some refunded to the buyer, some still held.
    PartiallyRefunded,
    /// Everything left escrow to the seller.
    Released,
    /// Everything left escrow to the buyer.
    Refunded,
    /// Everything left escrow, split between seller and buyer.
    Settled,
    /// A dispute is open; the escrow is frozen.
    Disputed,
    /// Cancelled; takes no more deposits.
    Cancelled,
}

impl PaymentStatus {
    /// The stored / shown name (`"partially_funded"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::AwaitingDeposit => "awaiting_deposit",
            PaymentStatus::PartiallyFunded => "partially_funded",
            PaymentStatus::Funded => "funded",
            PaymentStatus::PartiallyReleased => "partially_released",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Released => "released",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::Settled => "settled",
            PaymentStatus::Disputed => "disputed",
            PaymentStatus::Cancelled => "cancelled",
        }
    }

    /// Maps a legacy MongoDB payment status onto ours; `None` for an unknown one.
    ///
    /// | legacy | ours |
    /// |---|---|
    /// | `pending` | `awaiting_deposit` |
    /// | `awaiting_deposit` | `awaiting_deposit` |
    /// | `confirming` | `awaiting_deposit` (a deposit seen on chain, not yet confirmed: no money in escrow) |
    /// | `funded` | `funded` |
    /// | `released` | `released` |
    /// | `partially_refunded` | `partially_refunded` |
    /// | `refunded` | `refunded` |
    /// | `disputed` | `disputed` |
    /// | `cancelled` | `cancelled` |
    /// | `expired` | `cancelled` |
    /// | `failed` | `cancelled` |
    pub fn from_legacy(legacy: &str) -> Option<PaymentStatus> {
        Some(match legacy {
            "pending" | "awaiting_deposit" | "confirming" => PaymentStatus::AwaitingDeposit,
            "funded" => PaymentStatus::Funded,
            "released" => PaymentStatus::Released,
            "partially_refunded" => PaymentStatus::PartiallyRefunded,
            "refunded" => PaymentStatus::Refunded,
            "disputed" => PaymentStatus::Disputed,
            "cancelled" | "expired" | "failed" => PaymentStatus::Cancelled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
