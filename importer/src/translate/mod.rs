//! Pure translation of legacy documents into the ledger's imported events
//! (`legacy-mongo.md`): no I/O, every rule unit-tested on documents. What depends on other
//! documents (an entry's payment, a dispute's payment) is passed in as context.

mod dispute;
mod entry;
mod payment;
#[cfg(test)]
mod tests;

use bson::RawDocument;
use chrono::{DateTime, Utc};
use ledger::money::{check_scale, Asset};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::legacy::{ejson, Anomaly, AnomalyKind, Doc, Notes, Reject, RejectCode};

pub use dispute::{finish_dispute, parse_dispute, DisputePayment, ParsedDispute, ParsedResolution};
pub use entry::{duplicates_of, parse_entry, place_entry, ParsedEntry, PaymentContext, Placed};
pub use payment::{payment, payment_asset, purchase_request_key, KNOWN_PAYMENT_FIELDS};

/// What every translated document carries: its id, its canonical form and digest, and the
/// oddities met.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The `_id` as 24 lower-case hex digits.
    pub object_id: String,
    /// The document as canonical Extended JSON, U+0000 replaced.
    pub document: Value,
    /// SHA-256 of the document's canonical Extended JSON text (before any replacement).
    pub digest: String,
    /// The oddities met, in order.
    pub anomalies: Vec<Anomaly>,
}

/// Checks a raw document and prepares its [`Source`] (the anomalies are filled later).
///
/// # Errors
/// The document-wide rejects (duplicate key, invalid UTF-8, unsupported type, bad `_id`).
pub fn open(raw: &RawDocument) -> Result<(Doc<'_>, Source, Notes), Reject> {
    let doc = Doc::read(raw, "")?;
    let id = doc.id()?;
    let mut document = ejson::canonical(raw)
        .map_err(|e| Reject::whole(RejectCode::MalformedBson, e.to_string()))?;
    let digest = ejson::digest(&document);
    let mut notes = Notes::default();
    // The fields that hold text say where a U+0000 was; this catches the rest.
    let had_nul = ejson::replace_nul(&mut document);
    let source = Source {
        object_id: id.to_hex(),
        document,
        digest,
        anomalies: Vec::new(),
    };
    if had_nul {
        notes.add(AnomalyKind::ReplacedNul, "document");
    }
    Ok((doc, source, notes))
}

/// The legacy `createdAt`, or the `_id`'s time (noted).
///
/// # Errors
/// `WrongType`, `DateOutOfRange`.
pub fn created_at(doc: &Doc<'_>, notes: &mut Notes) -> Result<(DateTime<Utc>, bool), Reject> {
    if let Some(at) = doc.date("createdAt")? {
        return Ok((at, false));
    }
    let id = doc.id()?;
    notes.add(AnomalyKind::CreatedAtFromObjectId, "createdAt absent");
    Ok((crate::legacy::object_id_time(id), true))
}

/// The currency, upper-cased, as a ledger asset.
///
/// # Errors
/// `MissingField`, `WrongType`, `UnknownCurrency`.
pub fn asset(doc: &Doc<'_>, key: &str, notes: &mut Notes) -> Result<Asset, Reject> {
    let code = doc.required_text(key, notes)?;
    code.to_ascii_uppercase().parse::<Asset>().map_err(|_| {
        Reject::at(
            RejectCode::UnknownCurrency,
            &doc.path(key),
            format!("{code:?} is not a currency the ledger knows"),
        )
    })
}

/// Checks a positive amount at the asset's scale.
///
/// # Errors
/// `ZeroAmount`, `NegativeAmount`, `TooFine`.
pub fn positive(field: &str, value: Decimal, asset: Asset) -> Result<Decimal, Reject> {
    if value.is_zero() {
        return Err(Reject::at(RejectCode::ZeroAmount, field, "zero"));
    }
    if value.is_sign_negative() {
        return Err(Reject::at(
            RejectCode::NegativeAmount,
            field,
            format!("{value} is negative"),
        ));
    }
    at_scale(field, value, asset)
}

/// Checks an amount's fractional digits against the asset's scale, by value.
///
/// # Errors
/// `TooFine`.
pub fn at_scale(field: &str, value: Decimal, asset: Asset) -> Result<Decimal, Reject> {
    check_scale(asset, value).map_err(|e| Reject::at(RejectCode::TooFine, field, e.to_string()))
}
