//! Adjustments: manual corrections between this payment's escrow, seller or buyer account
//! and a platform account. No share goes below zero; a frozen payment takes none.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::commands::{check_positive, insufficient, Decided};
use super::{AdjustmentPosted, Payment, PaymentCreated, PaymentError, PaymentEvent};
use crate::account::Account;
use crate::money::Asset;

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

impl Payment {
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
        let to = share_of(terms, &cmd.to)?;
        if let Some(dispute_id) = self.frozen_by {
            return Err(PaymentError::EscrowFrozen { dispute_id });
        }
        // A cancelled payment holds nothing and takes no money again: its escrow may be
        // corrected down (imported history may have left money in it), never up.
        if matches!(to, Share::Escrow) && self.cancelled_at.is_some() {
            return Err(PaymentError::Cancelled);
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
        self.folding(vec![PaymentEvent::AdjustmentPosted(AdjustmentPosted {
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
