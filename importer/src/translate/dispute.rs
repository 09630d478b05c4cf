//! `disputes` documents → [`DisputeImported`]: parsed alone first (evidence, messages,
//! timeline, resolution), then finished with its payment (found by `paymentId`, or by
//! `purchaseRequestId` for older disputes: the caller's lookup). The status, priority and
//! admin are as of `updatedAt`; the timeline is history, and a disagreement between the
//! two is listed, not resolved.

use bson::RawDocument;
use chrono::{DateTime, Utc};
use ledger::account::Reference;
use ledger::dispute::{
    AuthorRole, DisputeImported, DisputeOpened, DisputeReason, DisputeStatus, EvidenceType,
    ImportedEvidence, ImportedMessage, ImportedResolution, ImportedTimelineEntry, Outcome,
    PartyRole, Priority,
};
use ledger::money::Asset;
use uuid::Uuid;

use super::payment::dedup;
use super::{at_scale, created_at, open, Source};
use crate::ids::Collection;
use crate::legacy::{object_id_time, Amount, Anomaly, AnomalyKind, Doc, Reject, RejectCode};

const KNOWN: [&str; 18] = [
    "_id",
    "paymentId",
    "purchaseRequestId",
    "chatId",
    "openedBy",
    "openedByRole",
    "reason",
    "description",
    "status",
    "priority",
    "adminId",
    "evidence",
    "messages",
    "timeline",
    "resolution",
    "createdAt",
    "updatedAt",
    "__v",
];

/// A legacy resolution before its payment's asset is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedResolution {
    /// The decision.
    pub outcome: Outcome,
    /// The seller's part, as read.
    pub seller_amount: Option<Amount>,
    /// The buyer's part, as read.
    pub buyer_amount: Option<Amount>,
    /// Who decided.
    pub resolved_by: Option<Reference>,
    /// When.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The admin's note.
    pub note: Option<String>,
}

/// A dispute read alone, before its payment is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedDispute {
    /// The dispute's id.
    pub dispute_id: Uuid,
    /// Its `paymentId` as 24 lower-case hex digits, if any.
    pub payment_hex: Option<String>,
    /// The event, with a nil payment id until finished.
    pub imported: DisputeImported,
    /// The resolution as read.
    pub resolution: Option<ParsedResolution>,
    /// Id, canonical form, digest, oddities.
    pub source: Source,
}

/// The dispute's payment, as found by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisputePayment {
    /// Its id.
    pub payment_id: Uuid,
    /// Its asset (resolution amounts are checked at its scale).
    pub asset: Asset,
    /// Whether it was found through `purchaseRequestId`.
    pub by_purchase_request: bool,
}

fn status(text: &str) -> Option<DisputeStatus> {
    Some(match text {
        "open" => DisputeStatus::Open,
        "under_review" => DisputeStatus::UnderReview,
        "awaiting_buyer" => DisputeStatus::AwaitingBuyer,
        "awaiting_seller" => DisputeStatus::AwaitingSeller,
        "resolved" => DisputeStatus::Resolved,
        "rejected" => DisputeStatus::Rejected,
        "withdrawn" => DisputeStatus::Withdrawn,
        "closed" => DisputeStatus::Closed,
        _ => return None,
    })
}

/// Parses a legacy enum value through its snake_case serde name.
fn named<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn required<T>(doc: &Doc<'_>, key: &str, value: Option<T>) -> Result<T, Reject> {
    value.ok_or_else(|| Reject::at(RejectCode::MissingField, &doc.path(key), "absent or null"))
}

/// Reads a dispute document alone.
///
/// # Errors
/// A [`Reject`] naming the first field outside the contract.
#[allow(clippy::too_many_lines)]
pub fn parse_dispute(raw: &RawDocument) -> Result<ParsedDispute, Reject> {
    let (doc, mut source, mut notes) = open(raw)?;
    let dispute_id = Collection::Disputes.uuid_of(&source.object_id);
    let payment_hex = doc.our_id("paymentId", &mut notes)?;
    let purchase_request = doc.mixed(
        "purchaseRequestId",
        Collection::PurchaseRequests,
        &mut notes,
    )?;
    let chat = doc.mixed("chatId", Collection::Chats, &mut notes)?;
    let opened_by = doc.entity("openedBy", Collection::Users)?;
    let role: PartyRole = required(
        &doc,
        "openedByRole",
        doc.choice("openedByRole", named, &mut notes)?,
    )?;
    let reason: DisputeReason = required(&doc, "reason", doc.choice("reason", named, &mut notes)?)?;
    let description = doc.required_text("description", &mut notes)?;
    let current = required(&doc, "status", doc.choice("status", status, &mut notes)?)?;
    let priority: Priority = doc
        .choice("priority", named, &mut notes)?
        .unwrap_or_default();
    let admin = doc
        .object_id("adminId")?
        .map(|o| Reference::entity(Collection::Users.uuid_of(&o.to_hex())));
    let (created, _) = created_at(&doc, &mut notes)?;
    let updated = doc.date("updatedAt")?.unwrap_or(created);

    let mut evidence = Vec::new();
    for item in doc.sub_documents("evidence")? {
        let id = item.id()?;
        evidence.push(ImportedEvidence {
            evidence_id: Collection::DisputeEvidence.uuid_of(&id.to_hex()),
            submitted_by: required(
                &item,
                "submittedBy",
                item.mixed("submittedBy", Collection::Users, &mut notes)?,
            )?,
            evidence_type: required(
                &item,
                "type",
                item.choice::<EvidenceType>("type", named, &mut notes)?,
            )?,
            url: item.text("url", &mut notes)?,
            description: item.text("description", &mut notes)?,
            submitted_at: item
                .date("submittedAt")?
                .unwrap_or_else(|| object_id_time(id)),
        });
    }
    let mut messages = Vec::new();
    for item in doc.sub_documents("messages")? {
        let id = item.id()?;
        messages.push(ImportedMessage {
            message_id: Collection::DisputeMessages.uuid_of(&id.to_hex()),
            author: required(
                &item,
                "author",
                item.mixed("author", Collection::Users, &mut notes)?,
            )?,
            author_role: required(
                &item,
                "authorRole",
                item.choice::<AuthorRole>("authorRole", named, &mut notes)?,
            )?,
            body: item.text("body", &mut notes)?.unwrap_or_default(),
            attachments: item.strings("attachments", &mut notes)?,
            posted_at: item
                .date("createdAt")?
                .unwrap_or_else(|| object_id_time(id)),
        });
    }
    let mut timeline = Vec::new();
    for item in doc.sub_documents("timeline")? {
        timeline.push(ImportedTimelineEntry {
            status: required(&item, "status", item.choice("status", status, &mut notes)?)?,
            at: required(&item, "at", item.date("at")?)?,
            by: item.mixed("by", Collection::Users, &mut notes)?,
            note: item.text("note", &mut notes)?,
        });
    }
    let resolution = match doc.get("resolution") {
        None => None,
        Some(bson::RawBsonRef::Document(_)) => {
            let subs = resolution_doc(&doc)?;
            Some(ParsedResolution {
                outcome: required(
                    &subs,
                    "outcome",
                    subs.choice::<Outcome>("outcome", named, &mut notes)?,
                )?,
                seller_amount: subs.money("sellerAmount")?,
                buyer_amount: subs.money("buyerAmount")?,
                resolved_by: subs.mixed("resolvedBy", Collection::Users, &mut notes)?,
                resolved_at: subs.date("resolvedAt")?,
                note: subs.text("note", &mut notes)?,
            })
        }
        Some(other) => {
            return Err(Reject::at(
                RejectCode::WrongType,
                "resolution",
                format!("expected object, found {:?}", other.element_type()),
            ))
        }
    };

    match timeline.last() {
        None => notes.add(AnomalyKind::EmptyTimeline, "no timeline entries"),
        Some(last) if last.status != current => notes.add(
            AnomalyKind::TimelineDisagreement,
            format!(
                "status {} but the last timeline entry says {}",
                current.as_str(),
                last.status.as_str()
            ),
        ),
        Some(_) => {}
    }
    if resolution.is_some() && current != DisputeStatus::Resolved {
        notes.add(
            AnomalyKind::ResolutionOnUnresolved,
            format!("a resolution on a dispute in status {}", current.as_str()),
        );
    }
    let ended_at = current.is_terminal().then(|| {
        resolution
            .as_ref()
            .and_then(|r| r.resolved_at)
            .filter(|_| current == DisputeStatus::Resolved)
            .or_else(|| {
                timeline
                    .iter()
                    .rev()
                    .find(|t| t.status == current)
                    .map(|t| t.at)
            })
            .unwrap_or(updated)
    });
    let extra = doc.unknown_json(&KNOWN, &mut notes);
    doc.note_unknown(&KNOWN, &mut notes);
    source.anomalies = dedup(notes.anomalies);
    let imported = DisputeImported {
        opened: DisputeOpened {
            dispute_id,
            payment_id: Uuid::nil(),
            opened_by,
            role,
            reason,
            description,
            priority,
        },
        status: current,
        priority,
        admin,
        purchase_request,
        chat,
        payment_from_purchase_request: false,
        evidence,
        messages,
        timeline,
        resolution: None,
        created_at: created,
        updated_at: updated,
        ended_at,
        extra,
    };
    Ok(ParsedDispute {
        dispute_id,
        payment_hex,
        imported,
        resolution,
        source,
    })
}

fn resolution_doc<'a>(doc: &Doc<'a>) -> Result<Doc<'a>, Reject> {
    match doc.get("resolution") {
        Some(bson::RawBsonRef::Document(d)) => Doc::read(d, "resolution"),
        _ => Err(Reject::at(
            RejectCode::WrongType,
            "resolution",
            "expected object",
        )),
    }
}

/// Finishes a parsed dispute with its payment: the payment id, and the resolution's amounts
/// checked at the payment's scale (a part may be zero, never negative).
///
/// # Errors
/// `NegativeAmount`, `TooFine`.
pub fn finish_dispute(
    parsed: &ParsedDispute,
    payment: DisputePayment,
) -> Result<(DisputeImported, Vec<Anomaly>), Reject> {
    let mut imported = parsed.imported.clone();
    let mut anomalies = parsed.source.anomalies.clone();
    imported.opened.payment_id = payment.payment_id;
    imported.payment_from_purchase_request = payment.by_purchase_request;
    if payment.by_purchase_request {
        anomalies.push(Anomaly::new(
            AnomalyKind::PaymentFoundByPurchaseRequest,
            format!(
                "no paymentId; payment {} found by purchaseRequestId",
                payment.payment_id
            ),
        ));
    }
    if let Some(r) = &parsed.resolution {
        let part = |field: &str, a: Option<Amount>| -> Result<_, Reject> {
            a.map(|a| {
                if a.value.is_sign_negative() && !a.value.is_zero() {
                    return Err(Reject::at(
                        RejectCode::NegativeAmount,
                        field,
                        a.value.to_string(),
                    ));
                }
                at_scale(field, a.value, payment.asset)
            })
            .transpose()
        };
        imported.resolution = Some(ImportedResolution {
            outcome: r.outcome,
            seller_amount: part("resolution.sellerAmount", r.seller_amount)?,
            buyer_amount: part("resolution.buyerAmount", r.buyer_amount)?,
            resolved_by: r.resolved_by.clone(),
            resolved_at: r.resolved_at,
            note: r.note.clone(),
        });
    }
    Ok((imported, anomalies))
}
