//! Money: assets with a fixed scale and exact amounts. Every amount that enters the ledger
//! is parsed here, by value, at its asset's scale: nothing is rounded, nothing is a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// An asset the ledger holds, with the number of fractional digits it is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Asset {
    /// US dollar, 2 decimals.
    Usd,
    /// Euro, 2 decimals.
    Eur,
    /// Tether, 6 decimals.
    Usdt,
    /// USD Coin, 6 decimals.
    Usdc,
    /// Bitcoin, 8 decimals.
    Btc,
    /// Ether, 18 decimals.
    Eth,
}

impl Asset {
    /// Every asset, in a stable order (for reports that list them all).
    pub const ALL: [Asset; 6] = [
        Asset::Usd,
        Asset::Eur,
        Asset::Usdt,
        Asset::Usdc,
        Asset::Btc,
        Asset::Eth,
    ];

    /// The maximum number of fractional digits an amount of this asset may carry.
    pub fn scale(self) -> u32 {
        match self {
            Asset::Usd | Asset::Eur => 2,
            Asset::Usdt | Asset::Usdc => 6,
            Asset::Btc => 8,
            Asset::Eth => 18,
        }
    }

    /// The upper-case code (`"USD"`), as stored and shown.
    pub fn code(self) -> &'static str {
        match self {
            Asset::Usd => "USD",
            Asset::Eur => "EUR",
            Asset::Usdt => "USDT",
            Asset::Usdc => "USDC",
            Asset::Btc => "BTC",
            Asset::Eth => "ETH",
        }
    }

    /// Formats `amount` at this asset's scale (`125.5` USD → `"125.50"`).
    pub fn format(self, amount: Decimal) -> String {
        let mut a = amount;
        a.rescale(self.scale());
        a.to_string()
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Asset {
    type Err = MoneyError;

    /// Parses an upper-case code exactly; lower case is the importer's business.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Asset::ALL
            .into_iter()
            .find(|a| a.code() == s)
            .ok_or_else(|| MoneyError::UnknownAsset(s.to_owned()))
    }
}

/// Why a text or number is not an amount the ledger accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The asset code is not one the ledger knows.
    #[error("unknown asset {0:?}")]
    UnknownAsset(String),
    /// The text is not a plain decimal (`"1e3"`, `"NaN"`, `" 1"`, `"+1"`, `"1."`).
    #[error("{0:?} is not a plain decimal number")]
    NotPlainDecimal(String),
    /// More significant digits than the ledger's decimal type holds (28).
    #[error("{0:?} has more digits than the ledger can hold exactly")]
    OutOfRange(String),
    /// More fractional digits than the asset's scale, by value (`"125.505"` USD).
    #[error("{value} is finer than {asset}'s scale of {scale} decimals")]
    TooFine {
        /// The amount as given.
        value: String,
        /// The asset.
        asset: Asset,
        /// The asset's scale.
        scale: u32,
    },
    /// Zero or negative where a positive amount is required.
    #[error("{0} is not a positive amount")]
    NotPositive(String),
}

/// Parses a plain decimal text exactly (`"125.50"`, `"-3"`, `"0.000001"`).
///
/// Unlike `Decimal::from_str`, this refuses (never rounds) text with more digits than
/// `Decimal` holds, and refuses exponents, signs other than a leading `-`, and blanks.
///
/// # Errors
/// [`MoneyError::NotPlainDecimal`] or [`MoneyError::OutOfRange`].
pub fn parse_decimal_exact(text: &str) -> Result<Decimal, MoneyError> {
    let not_plain = || MoneyError::NotPlainDecimal(text.to_owned());
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_plain());
    }
    if let Some(f) = frac_part {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_plain());
        }
    }
    // Trailing fractional zeros and leading integer zeros carry no value: drop them before
    // counting, so "125.500" is as exact as "125.5".
    let frac = frac_part.unwrap_or("").trim_end_matches('0');
    let int = int_part.trim_start_matches('0');
    let significant = int.len() + frac.len();
    if significant > 28 || frac.len() > 28 {
        return Err(MoneyError::OutOfRange(text.to_owned()));
    }
    let mantissa_text = format!("{int}{frac}");
    let mantissa: i128 = if mantissa_text.is_empty() {
        0
    } else {
        mantissa_text
            .parse()
            .map_err(|_| MoneyError::OutOfRange(text.to_owned()))?
    };
    let scale = u32::try_from(frac.len()).map_err(|_| MoneyError::OutOfRange(text.to_owned()))?;
    let mut value = Decimal::try_from_i128_with_scale(mantissa, scale)
        .map_err(|_| MoneyError::OutOfRange(text.to_owned()))?;
    if text.starts_with('-') {
        value.set_sign_negative(true);
    }
    if value.is_zero() {
        value.set_sign_positive(true);
    }
    Ok(value)
}

/// Checks that `value` has no more fractional digits than `asset` allows, by value.
///
/// # Errors
/// [`MoneyError::TooFine`].
pub fn check_scale(asset: Asset, value: Decimal) -> Result<Decimal, MoneyError> {
    let normalized = value.normalize();
    if normalized.scale() > asset.scale() {
        return Err(MoneyError::TooFine {
            value: value.to_string(),
            asset,
            scale: asset.scale(),
        });
    }
    Ok(normalized)
}

/// Parses a strictly positive amount of `asset` from plain decimal text.
///
/// # Errors
/// Any [`MoneyError`] but `UnknownAsset`.
pub fn parse_positive_amount(asset: Asset, text: &str) -> Result<Decimal, MoneyError> {
    let value = check_scale(asset, parse_decimal_exact(text)?)?;
    if value <= Decimal::ZERO {
        return Err(MoneyError::NotPositive(text.to_owned()));
    }
    Ok(value)
}

/// `a + b` exactly, or `None` when the sum does not fit `Decimal` without rounding.
///
/// `Decimal`'s `+` panics past its 96-bit mantissa, and `checked_add` silently drops
/// fractional digits when the integer part grows into them: money is refused rather than
/// rounded. Exactness is proven by value (the sum less either operand gives back the
/// other), not by scale: `rust_decimal` returns the other operand, with its own scale,
/// when one side is zero, so `0.00 + 5` is an exact `5`.
pub fn exact_add(a: Decimal, b: Decimal) -> Option<Decimal> {
    let sum = a.checked_add(b)?;
    (sum.checked_sub(b)? == a && sum.checked_sub(a)? == b).then_some(sum)
}

/// `a - b` exactly, or `None` (see [`exact_add`]).
pub fn exact_sub(a: Decimal, b: Decimal) -> Option<Decimal> {
    let diff = a.checked_sub(b)?;
    (diff.checked_add(b)? == a && a.checked_sub(diff)? == b).then_some(diff)
}

/// The exact sum of `amounts`, or `None` when a partial sum does not fit (see
/// [`exact_add`]).
pub fn exact_sum(amounts: impl IntoIterator<Item = Decimal>) -> Option<Decimal> {
    amounts.into_iter().try_fold(Decimal::ZERO, exact_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse_decimal_exact("125.50").unwrap().to_string(), "125.5");
        assert_eq!(parse_decimal_exact("-3").unwrap().to_string(), "-3");
        assert_eq!(parse_decimal_exact("0.000").unwrap(), Decimal::ZERO);
        assert_eq!(
            parse_decimal_exact("1234567890123456789012345678")
                .unwrap()
                .to_string(),
            "1234567890123456789012345678"
        );
    }

    #[test]
    fn refuses_what_is_not_plain() {
        for bad in [
            "1e3", "NaN", "", "-", "1.", ".5", " 1", "+1", "1,5", "Infinity", "0x10",
        ] {
            assert!(
                matches!(
                    parse_decimal_exact(bad),
                    Err(MoneyError::NotPlainDecimal(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_rather_than_rounds_too_many_digits() {
        assert!(matches!(
            parse_decimal_exact("123456789012345678901234567890"),
            Err(MoneyError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_decimal_exact("0.12345678901234567890123456789"),
            Err(MoneyError::OutOfRange(_))
        ));
    }

    #[test]
    fn scale_is_checked_by_value() {
        assert_eq!(
            parse_positive_amount(Asset::Usd, "125.500")
                .unwrap()
                .to_string(),
            "125.5"
        );
        assert!(matches!(
            parse_positive_amount(Asset::Usd, "125.505"),
            Err(MoneyError::TooFine { .. })
        ));
        assert!(matches!(
            parse_positive_amount(Asset::Usd, "0.001"),
            Err(MoneyError::TooFine { .. })
        ));
        assert!(parse_positive_amount(Asset::Eth, "0.000000000000000001").is_ok());
    }

    #[test]
    fn zero_and_negative_are_not_positive() {
        assert!(matches!(
            parse_positive_amount(Asset::Usd, "0"),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            parse_positive_amount(Asset::Usd, "-5"),
            Err(MoneyError::NotPositive(_))
        ));
    }

    #[test]
    fn asset_codes_and_format() {
        assert_eq!("USDT".parse::<Asset>().unwrap(), Asset::Usdt);
        assert!("usdt".parse::<Asset>().is_err());
        assert_eq!(Asset::Usd.format(Decimal::new(1255, 1)), "125.50");
        assert_eq!(Asset::Btc.format(Decimal::ONE), "1.00000000");
    }

    #[test]
    fn exact_sums_refuse_to_overflow_or_round() {
        let max = Decimal::MAX;
        assert_eq!(exact_add(max, Decimal::ONE), None, "past the mantissa");
        assert_eq!(exact_sub(Decimal::MIN, Decimal::ONE), None);
        // 27 integer digits and 2 fractional ones: the sum needs a 97-bit mantissa, which
        // `checked_add` answers by rounding to one decimal.
        let big = Decimal::from_i128_with_scale(79_228_162_514_264_337_593_543_950_335, 2);
        let cent = parse_decimal_exact("0.01").unwrap();
        assert!(
            big.checked_add(Decimal::ONE).is_some(),
            "rust_decimal rounds here"
        );
        assert_eq!(exact_add(big, Decimal::ONE), None);
        assert_eq!(exact_add(big, cent).map(|d| d.to_string()), None);
        assert_eq!(
            exact_add(parse_decimal_exact("1.5").unwrap(), cent).map(|d| d.to_string()),
            Some("1.51".to_owned())
        );
        assert_eq!(
            exact_sum([cent, cent, cent]).map(|d| d.to_string()),
            Some("0.03".to_owned())
        );
        assert_eq!(exact_sum([max, max]), None);
    }

    #[test]
    fn a_zero_with_decimals_adds_exactly() {
        // rust_decimal answers 0.00 + 5 with the `5` it was given (scale 0).
        let zero = Decimal::new(0, 2);
        let five = Decimal::from(5);
        assert_eq!(exact_add(zero, five), Some(five));
        assert_eq!(exact_add(five, zero), Some(five));
        assert_eq!(exact_sub(zero, five), Some(-five));
        assert_eq!(exact_sub(five, zero), Some(five));
        assert_eq!(exact_sum([zero, five, zero]), Some(five));
    }
}
