//! `payments` documents → [`PaymentImported`]: the terms, the raw and mapped status, the
//! legacy timestamps and every legacy field. No money moves here.

use bson::RawDocument;
use ledger::account::Reference;
use ledger::money::Asset;
use ledger::payment::{PaymentCreated, PaymentImported, PaymentStatus};

use super::{asset, created_at, open, positive, Source};
use crate::ids::Collection;
use crate::legacy::{Reject, RejectCode};

/// The fields of a payment document the contract lists.
pub const KNOWN_PAYMENT_FIELDS: [&str; 17] = [
    "_id",
    "purchaseRequestId",
    "sellerOfferId",
    "sellerId",
    "buyerId",
    "amount",
    "currency",
    "provider",
    "status",
    "blockchain",
    "metadata",
    "paidAt",
    "releasedAt",
    "refundedAt",
    "cancelledAt",
    "createdAt",
    "updatedAt",
];

/// The legacy providers.
const PROVIDERS: [&str; 4] = ["trezor", "coinbase_commerce", "stripe", "manual"];

/// Translates a payment document.
///
/// # Errors
/// A [`Reject`] naming the first field outside the contract.
pub fn payment(raw: &RawDocument) -> Result<(PaymentImported, Source), Reject> {
    let (doc, mut source, mut notes) = open(raw)?;
    let payment_id = Collection::Payments.uuid_of(&source.object_id);
    // Null or absent: no reference (`legacy-mongo.md`, Mixed references); only `sellerId`
    // and `buyerId` are required. Such a payment cannot be found by a dispute that names
    // only its purchase request.
    let purchase_request = doc.mixed_key(
        "purchaseRequestId",
        Collection::PurchaseRequests,
        &mut notes,
    )?;
    let seller_offer = doc.mixed("sellerOfferId", Collection::SellerOffers, &mut notes)?;
    let seller: Reference = doc
        .mixed_key("sellerId", Collection::Users, &mut notes)?
        .ok_or_else(|| Reject::at(RejectCode::MissingField, "sellerId", "absent or null"))?;
    let buyer = doc.entity("buyerId", Collection::Users)?;
    let asset = asset(&doc, "currency", &mut notes)?;
    let amount = positive("amount", doc.required_money("amount")?.value, asset)?;
    let provider = doc
        .choice(
            "provider",
            |p| PROVIDERS.contains(&p).then(|| p.to_owned()),
            &mut notes,
        )?
        .ok_or_else(|| Reject::at(RejectCode::MissingField, "provider", "absent or null"))?;
    let legacy_status = doc.required_text("status", &mut notes)?;
    let mapped_status = PaymentStatus::from_legacy(&legacy_status).ok_or_else(|| {
        Reject::at(
            RejectCode::InvalidValue,
            "status",
            format!("{legacy_status:?} is not a legacy payment status"),
        )
    })?;
    let blockchain = doc.object_json("blockchain", &mut notes)?;
    let metadata = doc.object_json("metadata", &mut notes)?;
    let (created, from_id) = created_at(&doc, &mut notes)?;
    let imported = PaymentImported {
        terms: PaymentCreated {
            payment_id,
            buyer,
            seller,
            purchase_request,
            seller_offer,
            amount,
            asset,
            provider,
            metadata,
        },
        legacy_status,
        mapped_status,
        created_at: created,
        created_at_from_object_id: from_id,
        updated_at: doc.date("updatedAt")?,
        paid_at: doc.date("paidAt")?,
        released_at: doc.date("releasedAt")?,
        refunded_at: doc.date("refundedAt")?,
        cancelled_at: doc.date("cancelledAt")?,
        blockchain,
        document: source.document.clone(),
    };
    doc.note_unknown(&KNOWN_PAYMENT_FIELDS, &mut notes);
    source.anomalies = dedup(notes.anomalies);
    Ok((imported, source))
}

/// Drops repeats of the same anomaly (the document-wide U+0000 note and a field's).
pub(super) fn dedup(mut anomalies: Vec<crate::legacy::Anomaly>) -> Vec<crate::legacy::Anomaly> {
    let field_level_nul = anomalies
        .iter()
        .filter(|a| a.kind == crate::legacy::AnomalyKind::ReplacedNul && a.detail != "document")
        .count();
    if field_level_nul > 0 {
        anomalies.retain(|a| {
            !(a.kind == crate::legacy::AnomalyKind::ReplacedNul && a.detail == "document")
        });
    }
    let mut seen = std::collections::HashSet::new();
    anomalies.retain(|a| seen.insert((a.kind, a.detail.clone())));
    anomalies
}

/// The account key of a payment document's `purchaseRequestId`, read as [`payment`]
/// reads it, even when the document is rejected for another field; `None` when the
/// document or that field cannot be read.
pub fn purchase_request_key(raw: &RawDocument) -> Option<String> {
    let (doc, _, mut notes) = open(raw).ok()?;
    doc.mixed_key(
        "purchaseRequestId",
        Collection::PurchaseRequests,
        &mut notes,
    )
    .ok()
    .flatten()
    .map(|r| r.account_key())
}

/// The currency of a payment document, read as [`payment`] reads it, even when the
/// document is rejected for another field; `None` when the document or that field cannot
/// be read. An entry of that payment must be in that currency (`legacy-mongo.md`).
pub fn payment_asset(raw: &RawDocument) -> Option<Asset> {
    let (doc, _, mut notes) = open(raw).ok()?;
    super::asset(&doc, "currency", &mut notes).ok()
}
