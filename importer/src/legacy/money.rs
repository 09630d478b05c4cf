//! Legacy money, exactly: `Decimal128` decoded from its bits (never through its `Display`,
//! which may print `1.05E+3`), plain decimal strings through the ledger's exact parse
//! (`Decimal::from_str` rounds), doubles through their shortest round-trip text with at
//! most 15 significant digits, and integers as they are. NaN, infinities, negative zero and
//! values beyond the ledger's decimal type are refused, never clamped or rounded. Amounts
//! compare by value: `Decimal128` `2.00` and `2.0` are the same money.

use bson::{Decimal128, RawBsonRef};
use ledger::money::{parse_decimal_exact, MoneyError};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Reject, RejectCode};

/// The BSON type an amount was stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountSource {
    /// `Decimal128`.
    Decimal128,
    /// A string of plain decimal text.
    String,
    /// A binary double (documents written before 2021).
    Double,
    /// `Int32`.
    Int32,
    /// `Int64`.
    Int64,
}

/// An exact amount read from a legacy document, sign included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// The value (by value: `2.00` equals `2.0`).
    pub value: Decimal,
    /// How it was stored.
    pub source: AmountSource,
}

/// The largest coefficient a canonical `Decimal128` holds: 10^34 − 1.
const MAX_COEFFICIENT: u128 = 9_999_999_999_999_999_999_999_999_999_999_999;
/// The largest mantissa of `rust_decimal::Decimal`: 2^96 − 1.
const MAX_MANTISSA: u128 = (1 << 96) - 1;
/// The most fractional digits `rust_decimal::Decimal` holds.
const MAX_SCALE: u32 = 28;

/// Reads an amount of any money type the contract allows.
///
/// # Errors
/// A [`Reject`] at `field`: `WrongType` for another BSON type, or the money reasons.
pub fn amount(field: &str, value: RawBsonRef<'_>) -> Result<Amount, Reject> {
    let (value, source) = match value {
        RawBsonRef::Decimal128(d) => (decimal128(field, d)?, AmountSource::Decimal128),
        RawBsonRef::String(s) => (text(field, s)?, AmountSource::String),
        RawBsonRef::Double(f) => (double(field, f)?, AmountSource::Double),
        RawBsonRef::Int32(i) => (Decimal::from(i), AmountSource::Int32),
        RawBsonRef::Int64(i) => (Decimal::from(i), AmountSource::Int64),
        other => {
            return Err(Reject::at(
                RejectCode::WrongType,
                field,
                format!("money as {:?}", other.element_type()),
            ))
        }
    };
    Ok(Amount { value, source })
}

fn text(field: &str, s: &str) -> Result<Decimal, Reject> {
    let value = parse_decimal_exact(s).map_err(|e| match e {
        MoneyError::OutOfRange(_) => Reject::at(RejectCode::OutOfRange, field, e.to_string()),
        _ => Reject::at(RejectCode::NotPlainDecimal, field, e.to_string()),
    })?;
    // `"-0"` reads as zero; the contract rejects a negative zero whatever its type, as it
    // does the Decimal128 and double ones.
    if value.is_zero() && s.trim_start().starts_with('-') {
        return Err(Reject::at(
            RejectCode::NegativeZero,
            field,
            format!("{s:?}"),
        ));
    }
    Ok(value)
}

/// A double through its shortest round-trip decimal text (`0.1` → `0.1`).
///
/// # Errors
/// `NotANumber`, `Infinite`, `NegativeZero`, `FloatNoise` (more than 15 significant
/// digits), `OutOfRange`.
pub fn double(field: &str, f: f64) -> Result<Decimal, Reject> {
    if f.is_nan() {
        return Err(Reject::at(RejectCode::NotANumber, field, "NaN"));
    }
    if f.is_infinite() {
        return Err(Reject::at(RejectCode::Infinite, field, format!("{f}")));
    }
    if f == 0.0 && f.is_sign_negative() {
        return Err(Reject::at(RejectCode::NegativeZero, field, "-0.0"));
    }
    // Rust prints a double as the shortest text that reads back as the same double, in
    // plain notation.
    let shortest = format!("{f}");
    let digits: String = shortest.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    if significant > 15 {
        return Err(Reject::at(
            RejectCode::FloatNoise,
            field,
            format!("double {shortest} has {significant} significant digits (float noise)"),
        ));
    }
    text(field, &shortest)
}

/// A `Decimal128` decoded from its bits (IEEE 754-2008 BID encoding).
///
/// # Errors
/// `NotANumber`, `Infinite`, `NegativeZero`, `OutOfRange` (also for a non-canonical
/// coefficient, which the standard reads as zero: corrupt, not zero).
pub fn decimal128(field: &str, d: Decimal128) -> Result<Decimal, Reject> {
    let bytes = d.bytes();
    let mut lo_bytes = [0_u8; 8];
    let mut hi_bytes = [0_u8; 8];
    lo_bytes.copy_from_slice(&bytes[..8]);
    hi_bytes.copy_from_slice(&bytes[8..]);
    let lo = u64::from_le_bytes(lo_bytes);
    let hi = u64::from_le_bytes(hi_bytes);
    let negative = hi >> 63 == 1;
    let combination = (hi >> 58) & 0x1f;
    if combination == 0x1f {
        return Err(Reject::at(RejectCode::NotANumber, field, "Decimal128 NaN"));
    }
    if combination == 0x1e {
        return Err(Reject::at(
            RejectCode::Infinite,
            field,
            "Decimal128 Infinity",
        ));
    }
    if (hi >> 61) & 0b11 == 0b11 {
        // The large-coefficient form always exceeds 10^34 − 1 for 128 bits.
        return Err(Reject::at(
            RejectCode::OutOfRange,
            field,
            "non-canonical Decimal128 coefficient",
        ));
    }
    let biased = i64::try_from((hi >> 49) & 0x3fff).unwrap_or(0);
    let exponent = biased - 6176;
    let mut coefficient = (u128::from(hi & 0x1_ffff_ffff_ffff) << 64) | u128::from(lo);
    let shown = || format!("{d}");
    if coefficient > MAX_COEFFICIENT {
        return Err(Reject::at(
            RejectCode::OutOfRange,
            field,
            format!("non-canonical Decimal128 coefficient ({})", shown()),
        ));
    }
    if coefficient == 0 {
        if negative {
            return Err(Reject::at(RejectCode::NegativeZero, field, shown()));
        }
        return Ok(Decimal::ZERO);
    }
    let out_of_range = || {
        Reject::at(
            RejectCode::OutOfRange,
            field,
            format!("Decimal128 {} is beyond the ledger's decimal type", shown()),
        )
    };
    let mut scale: u32 = 0;
    if exponent > 0 {
        for _ in 0..exponent {
            coefficient = coefficient.checked_mul(10).ok_or_else(out_of_range)?;
            if coefficient > MAX_MANTISSA {
                return Err(out_of_range());
            }
        }
    } else {
        scale = u32::try_from(-exponent).map_err(|_| out_of_range())?;
        // Trailing zeros carry no value: drop them only when needed to fit.
        while (scale > MAX_SCALE || coefficient > MAX_MANTISSA)
            && scale > 0
            && coefficient % 10 == 0
        {
            coefficient /= 10;
            scale -= 1;
        }
    }
    if scale > MAX_SCALE || coefficient > MAX_MANTISSA {
        return Err(out_of_range());
    }
    let signed = i128::try_from(coefficient).map_err(|_| out_of_range())?;
    let signed = if negative { -signed } else { signed };
    Decimal::try_from_i128_with_scale(signed, scale).map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn d128(text: &str) -> Decimal128 {
        Decimal128::from_str(text).unwrap()
    }

    fn dec(text: &str) -> Decimal {
        parse_decimal_exact(text).unwrap()
    }

    fn code(r: Result<Decimal, Reject>) -> RejectCode {
        r.unwrap_err().code
    }

    #[test]
    fn decimal128_is_decoded_from_its_bits_not_its_display() {
        let shown = d128("1.05E+3");
        assert_eq!(format!("{shown}"), "1.05E+3");
        assert_eq!(decimal128("a", shown).unwrap(), dec("1050"));
        assert_eq!(decimal128("a", d128("125.50")).unwrap(), dec("125.5"));
        assert_eq!(decimal128("a", d128("-3")).unwrap(), dec("-3"));
        assert_eq!(decimal128("a", d128("0.000001")).unwrap(), dec("0.000001"));
        assert_eq!(decimal128("a", d128("0")).unwrap(), Decimal::ZERO);
    }

    #[test]
    fn decimal128_equality_is_by_value_here() {
        // The two encodings differ bytewise; the amounts do not.
        assert_ne!(d128("2.00").bytes(), d128("2.0").bytes());
        assert_eq!(
            decimal128("a", d128("2.00")).unwrap(),
            decimal128("a", d128("2.0")).unwrap()
        );
    }

    #[test]
    fn decimal128_refuses_what_the_ledger_cannot_hold() {
        assert_eq!(code(decimal128("a", d128("NaN"))), RejectCode::NotANumber);
        assert_eq!(
            code(decimal128("a", d128("Infinity"))),
            RejectCode::Infinite
        );
        assert_eq!(
            code(decimal128("a", d128("-Infinity"))),
            RejectCode::Infinite
        );
        assert_eq!(code(decimal128("a", d128("-0"))), RejectCode::NegativeZero);
        assert_eq!(code(decimal128("a", d128("1E+40"))), RejectCode::OutOfRange);
        assert_eq!(
            code(decimal128("a", d128("1234567890123456789012345678901234"))),
            RejectCode::OutOfRange
        );
        assert_eq!(code(decimal128("a", d128("1E-40"))), RejectCode::OutOfRange);
        // Trailing zeros past the scale limit carry no value and are dropped.
        assert_eq!(
            decimal128("a", d128("1.000000000000000000000000000000")).unwrap(),
            Decimal::ONE
        );
    }

    #[test]
    fn strings_are_parsed_exactly_or_refused() {
        assert_eq!(text("a", "125.50").unwrap(), dec("125.5"));
        assert_eq!(code(text("a", "1e2")), RejectCode::NotPlainDecimal);
        assert_eq!(code(text("a", " 1")), RejectCode::NotPlainDecimal);
        assert_eq!(code(text("a", "NaN")), RejectCode::NotPlainDecimal);
        // Decimal::from_str would round this; the exact parse refuses.
        assert_eq!(
            code(text("a", "1.00000000000000000000000000001")),
            RejectCode::OutOfRange
        );
        assert!(Decimal::from_str("1.00000000000000000000000000001").is_ok());
    }

    #[test]
    fn doubles_go_through_their_shortest_text() {
        assert_eq!(double("a", 0.1).unwrap(), dec("0.1"));
        assert_eq!(double("a", 125.5).unwrap(), dec("125.5"));
        assert_eq!(double("a", 1e15).unwrap(), dec("1000000000000000"));
        assert_eq!(
            double("a", 0.1 + 0.2).unwrap_err().code,
            RejectCode::FloatNoise
        );
        assert_eq!(
            double("a", f64::NAN).unwrap_err().code,
            RejectCode::NotANumber
        );
        assert_eq!(
            double("a", f64::INFINITY).unwrap_err().code,
            RejectCode::Infinite
        );
        assert_eq!(
            double("a", -0.0).unwrap_err().code,
            RejectCode::NegativeZero
        );
        assert_eq!(double("a", 1e300).unwrap_err().code, RejectCode::OutOfRange);
        assert_eq!(double("a", 0.0).unwrap(), Decimal::ZERO);
    }

    #[test]
    fn every_money_type_reads_and_others_are_refused() {
        let ok = |v: RawBsonRef<'_>| amount("a", v).unwrap();
        assert_eq!(ok(RawBsonRef::Int32(5)).value, dec("5"));
        assert_eq!(ok(RawBsonRef::Int64(-7)).source, AmountSource::Int64);
        assert_eq!(ok(RawBsonRef::String("0.5")).source, AmountSource::String);
        for negative_zero in ["-0", "-0.00", "-0.0"] {
            assert_eq!(
                code(text("a", negative_zero)),
                RejectCode::NegativeZero,
                "{negative_zero}"
            );
        }
        assert_eq!(ok(RawBsonRef::String("0")).value, Decimal::ZERO);
        assert_eq!(
            amount("a", RawBsonRef::Boolean(true)).unwrap_err().code,
            RejectCode::WrongType
        );
    }
}
