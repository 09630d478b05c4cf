//! Double-entry postings: a movement of money is a set of signed legs that sum to zero per
//! asset. Moving `x` from A to B posts `-x` to A and `+x` to B.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::Account;
use crate::money::Asset;

/// One signed leg of a movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// The account the leg is posted to.
    pub account: Account,
    /// The asset.
    pub asset: Asset,
    /// Signed amount: negative leaves the account, positive enters it. Never zero.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
}

/// Why a set of postings is not a valid movement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostingError {
    /// A leg of zero.
    #[error("a posting to {0} is zero")]
    ZeroLeg(String),
    /// The legs of one asset do not sum to zero.
    #[error("postings in {asset} sum to {sum}, not zero")]
    Unbalanced {
        /// The asset whose legs do not balance.
        asset: Asset,
        /// Their sum.
        sum: Decimal,
    },
    /// The legs of one asset add up beyond what the decimal type holds exactly.
    #[error("postings in {asset} add up beyond the decimal type")]
    OutOfRange {
        /// The asset whose legs overflow.
        asset: Asset,
    },
}

/// Builds the two legs of moving `amount` from `from` to `to`.
pub fn transfer(from: Account, to: Account, asset: Asset, amount: Decimal) -> [Posting; 2] {
    [
        Posting {
            account: from,
            asset,
            amount: -amount,
        },
        Posting {
            account: to,
            asset,
            amount,
        },
    ]
}

/// Checks that no leg is zero and that the legs sum to zero per asset.
///
/// # Errors
/// [`PostingError`] naming the first fault.
pub fn check_balanced(postings: &[Posting]) -> Result<(), PostingError> {
    let mut sums: BTreeMap<Asset, Decimal> = BTreeMap::new();
    for p in postings {
        if p.amount.is_zero() {
            return Err(PostingError::ZeroLeg(p.account.to_string()));
        }
        let sum = sums.entry(p.asset).or_default();
        *sum = crate::money::exact_add(*sum, p.amount)
            .ok_or(PostingError::OutOfRange { asset: p.asset })?;
    }
    match sums.into_iter().find(|(_, sum)| !sum.is_zero()) {
        Some((asset, sum)) => Err(PostingError::Unbalanced { asset, sum }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_balances() {
        let legs = transfer(
            Account::PlatformFees,
            Account::PlatformSuspense,
            Asset::Usd,
            Decimal::TEN,
        );
        assert_eq!(check_balanced(&legs), Ok(()));
        assert_eq!(legs[0].amount, -Decimal::TEN);
    }

    #[test]
    fn unbalanced_and_zero_legs_are_refused() {
        let mut legs = transfer(
            Account::PlatformFees,
            Account::PlatformSuspense,
            Asset::Usd,
            Decimal::TEN,
        )
        .to_vec();
        legs[1].amount = Decimal::ONE;
        assert!(matches!(
            check_balanced(&legs),
            Err(PostingError::Unbalanced { .. })
        ));
        legs[1].amount = Decimal::ZERO;
        assert!(matches!(
            check_balanced(&legs),
            Err(PostingError::ZeroLeg(_))
        ));
    }

    #[test]
    fn each_asset_balances_on_its_own() {
        let mut legs = transfer(
            Account::PlatformFees,
            Account::PlatformSuspense,
            Asset::Usd,
            Decimal::TEN,
        )
        .to_vec();
        legs[1].asset = Asset::Eur;
        assert!(matches!(
            check_balanced(&legs),
            Err(PostingError::Unbalanced { .. })
        ));
    }
}
