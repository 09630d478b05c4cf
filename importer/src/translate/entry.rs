//! `fundsledgerentries` documents → [`LedgerEntryImported`]: parsed alone first, then placed
//! with what is known of their payment (imported, rejected, missing), by the double-entry
//! table of `legacy-mongo.md`. Orphans and entries of rejected payments get a stream of
//! their own with the sides only their payment could name in `platform:suspense`; an
//! adjustment tied to no payment gets a stream of its own with platform accounts only.

use bson::RawDocument;
use chrono::{DateTime, Duration, Utc};
use ledger::account::{Account, Reference};
use ledger::money::Asset;
use ledger::payment::{
    EntryDirection, EntryKind, EntryPlacement, LedgerEntryImported, Party, PaymentAccounts,
    PaymentCreated, ENTRY_STREAM_TYPE, STREAM_TYPE,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::payment::dedup;
use super::{asset, at_scale, created_at, open, Source};
use crate::ids::Collection;
use crate::legacy::{Anomaly, AnomalyKind, Reject, RejectCode};

const KNOWN: [&str; 13] = [
    "_id",
    "paymentId",
    "purchaseRequestId",
    "createdBy",
    "type",
    "direction",
    "account",
    "amount",
    "currency",
    "reference",
    "note",
    "balanceAfter",
    "createdAt",
];

/// An entry read alone, before its payment is known.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedEntry {
    /// The entry's id.
    pub entry_id: Uuid,
    /// Its `paymentId` as 24 lower-case hex digits, if any.
    pub payment_hex: Option<String>,
    /// The type.
    pub kind: EntryKind,
    /// The direction, when given.
    pub direction: Option<EntryDirection>,
    /// The `account` text, when given.
    pub account: Option<String>,
    /// The magnitude; positive, at the asset's scale.
    pub amount: Decimal,
    /// Whether a negative debit's sign was dropped.
    pub sign_dropped: bool,
    /// The asset.
    pub asset: Asset,
    /// Chain tx hash or provider charge id.
    pub reference: Option<String>,
    /// The legacy note.
    pub note: Option<String>,
    /// Who wrote it.
    pub created_by: Option<Reference>,
    /// The legacy purchase request.
    pub purchase_request: Option<Reference>,
    /// The legacy running balance, as text.
    pub balance_after: Option<String>,
    /// Its `createdAt` (or its `_id`'s time).
    pub created_at: DateTime<Utc>,
    /// Id, canonical form, digest, oddities.
    pub source: Source,
}

/// What is known of an entry's payment.
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentContext {
    /// Imported: these are its terms.
    Imported(Box<PaymentCreated>),
    /// Rejected by the import, for this reason; its currency when that could be read.
    Rejected(String, Option<Asset>),
    /// In MongoDB and valid, but not imported (written after its pass, or a dry run of a
    /// domain not yet imported never gets here: it sees the terms); its currency.
    NotImported(Asset),
    /// No such payment document.
    Missing,
}

/// An entry placed: its event and the stream it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The event.
    pub event: LedgerEntryImported,
    /// The stream: its payment's, or its own.
    pub stream_id: Uuid,
    /// `payment` or `legacy_entry`.
    pub stream_type: &'static str,
    /// The entry's oddities, placement ones included.
    pub anomalies: Vec<Anomaly>,
}

fn is_debit(kind: EntryKind, direction: Option<EntryDirection>) -> bool {
    match kind {
        EntryKind::Deposit => false,
        EntryKind::Adjustment => direction == Some(EntryDirection::Debit),
        _ => true,
    }
}

/// Reads an entry document alone.
///
/// # Errors
/// A [`Reject`] naming the first field outside the contract.
#[allow(clippy::too_many_lines)]
pub fn parse_entry(raw: &RawDocument) -> Result<ParsedEntry, Reject> {
    let (doc, mut source, mut notes) = open(raw)?;
    let kind = doc
        .choice("type", EntryKind::from_legacy, &mut notes)?
        .ok_or_else(|| Reject::at(RejectCode::MissingField, "type", "absent or null"))?;
    let direction = doc.choice(
        "direction",
        |d| match d {
            "credit" => Some(EntryDirection::Credit),
            "debit" => Some(EntryDirection::Debit),
            _ => None,
        },
        &mut notes,
    )?;
    let account = doc.text("account", &mut notes)?;
    match kind {
        EntryKind::Payout if !matches!(account.as_deref(), Some("seller" | "buyer")) => {
            return Err(Reject::at(
                RejectCode::InvalidValue,
                "account",
                format!("a payout names seller or buyer, not {account:?}"),
            ));
        }
        EntryKind::Adjustment => {
            if direction.is_none() {
                return Err(Reject::at(
                    RejectCode::MissingField,
                    "direction",
                    "an adjustment needs one",
                ));
            }
            if !matches!(
                account.as_deref(),
                Some("escrow" | "seller" | "buyer" | "platform")
            ) {
                return Err(Reject::at(
                    RejectCode::InvalidValue,
                    "account",
                    format!(
                        "an adjustment names escrow, seller, buyer or platform, not {account:?}"
                    ),
                ));
            }
        }
        _ => {}
    }
    let asset = asset(&doc, "currency", &mut notes)?;
    let signed = doc.required_money("amount")?.value;
    if signed.is_zero() {
        return Err(Reject::at(RejectCode::ZeroAmount, "amount", "zero"));
    }
    let debit = is_debit(kind, direction);
    let sign_dropped = signed.is_sign_negative();
    if sign_dropped {
        if !debit {
            return Err(Reject::at(
                RejectCode::NegativeAmount,
                "amount",
                format!(
                    "{signed} on a {}: its sign cannot be dropped",
                    kind.as_str()
                ),
            ));
        }
        notes.add(
            AnomalyKind::SignDropped,
            format!("{} of {signed} taken as {}", kind.as_str(), signed.abs()),
        );
    }
    let amount = at_scale("amount", signed.abs(), asset)?;
    let payment_hex = doc.our_id("paymentId", &mut notes)?;
    if payment_hex.is_none() {
        if kind != EntryKind::Adjustment {
            return Err(Reject::at(
                RejectCode::MissingField,
                "paymentId",
                format!("a {} needs a payment", kind.as_str()),
            ));
        }
        if account.as_deref() != Some("platform") {
            return Err(Reject::at(
                RejectCode::AdjustmentNeedsPayment,
                "account",
                format!("an adjustment without a payment may only name platform, not {account:?}"),
            ));
        }
    }
    let balance_after = doc.get("balanceAfter").map(|v| {
        match crate::legacy::money::amount("balanceAfter", v) {
            Ok(a) => a.value.to_string(),
            // Never trusted, so never a reason to reject: carried as it was.
            Err(_) => bson::Bson::try_from(v.to_raw_bson())
                .map(|b| b.into_canonical_extjson().to_string())
                .unwrap_or_default(),
        }
    });

    let (created, _) = created_at(&doc, &mut notes)?;
    let reference = doc.key_text("reference", &mut notes)?;
    let note = doc.text("note", &mut notes)?;
    let created_by = doc.mixed("createdBy", Collection::Users, &mut notes)?;
    let purchase_request = doc.mixed(
        "purchaseRequestId",
        Collection::PurchaseRequests,
        &mut notes,
    )?;
    doc.note_unknown(&KNOWN, &mut notes);
    source.anomalies = dedup(notes.anomalies);
    Ok(ParsedEntry {
        entry_id: Collection::FundsLedgerEntries.uuid_of(&source.object_id),
        payment_hex,
        kind,
        direction,
        account,
        amount,
        sign_dropped,
        asset,
        reference,
        note,
        created_by,
        purchase_request,
        balance_after,
        created_at: created,
        source,
    })
}

/// Places a parsed entry: its accounts and stream, given what is known of its payment
/// (`None` only for an adjustment tied to no payment).
///
/// # Errors
/// `CurrencyMismatch` when the entry's currency is not its payment's (imported or not,
/// when the payment's currency can be read).
#[allow(clippy::too_many_lines)]
pub fn place_entry(e: &ParsedEntry, payment: Option<&PaymentContext>) -> Result<Placed, Reject> {
    let mut anomalies = e.source.anomalies.clone();
    let payment_id = e
        .payment_hex
        .as_deref()
        .map(|h| Collection::Payments.uuid_of(h));
    let (accounts, placement, stream_id, stream_type) = match (payment_id, payment) {
        (Some(pid), Some(PaymentContext::Imported(terms))) => {
            if terms.asset != e.asset {
                return Err(Reject::at(
                    RejectCode::CurrencyMismatch,
                    "currency",
                    format!("{} on a payment in {}", e.asset, terms.asset),
                ));
            }
            (
                PaymentAccounts::of(terms),
                EntryPlacement::Payment,
                pid,
                STREAM_TYPE,
            )
        }
        (Some(pid), context) => {
            // The currency rule holds whether or not the payment imported: an entry in
            // another currency than its payment's is refused, not put in suspense.
            let known = match context {
                Some(PaymentContext::Rejected(_, asset)) => *asset,
                Some(PaymentContext::NotImported(asset)) => Some(*asset),
                _ => None,
            };
            if let Some(asset) = known.filter(|a| *a != e.asset) {
                return Err(Reject::at(
                    RejectCode::CurrencyMismatch,
                    "currency",
                    format!("{} on a payment in {asset}", e.asset),
                ));
            }
            let (placement, kind, why) = match context {
                Some(PaymentContext::Rejected(reason, _)) => (
                    EntryPlacement::RejectedPayment,
                    AnomalyKind::EntryOfRejectedPayment,
                    format!("payment {} was rejected: {reason}", hex(e)),
                ),
                Some(PaymentContext::NotImported(_)) => (
                    EntryPlacement::Orphan,
                    AnomalyKind::EntryOfUnimportedPayment,
                    format!("payment {} exists but was not imported", hex(e)),
                ),
                _ => (
                    EntryPlacement::Orphan,
                    AnomalyKind::OrphanEntry,
                    format!("payment {} does not exist", hex(e)),
                ),
            };
            anomalies.push(Anomaly::new(kind, why));
            let suspense = PaymentAccounts {
                escrow: Account::Escrow(pid),
                seller: Account::PlatformSuspense,
                buyer: Account::PlatformSuspense,
                external: Account::PlatformSuspense,
                asset: e.asset,
            };
            (suspense, placement, e.entry_id, ENTRY_STREAM_TYPE)
        }
        (None, _) => {
            let platform = PaymentAccounts {
                escrow: Account::PlatformSuspense,
                seller: Account::PlatformSuspense,
                buyer: Account::PlatformSuspense,
                external: Account::PlatformSuspense,
                asset: e.asset,
            };
            (
                platform,
                EntryPlacement::Unattached,
                e.entry_id,
                ENTRY_STREAM_TYPE,
            )
        }
    };
    let named = |account: Option<&str>| match account {
        Some("escrow") => accounts.escrow.clone(),
        Some("seller") => accounts.seller.clone(),
        Some("buyer") => accounts.buyer.clone(),
        _ => Account::PlatformFees,
    };
    let party = match (e.kind, e.account.as_deref()) {
        (EntryKind::Payout, Some("buyer")) => Some(Party::Buyer),
        (EntryKind::Payout, _) => Some(Party::Seller),
        _ => None,
    };
    let (from, to) = match e.kind {
        EntryKind::Deposit => (accounts.external.clone(), accounts.escrow.clone()),
        EntryKind::Release => (accounts.escrow.clone(), accounts.seller.clone()),
        EntryKind::Refund => (accounts.escrow.clone(), accounts.buyer.clone()),
        EntryKind::Fee => (accounts.escrow.clone(), Account::PlatformFees),
        EntryKind::AmlFee => (accounts.escrow.clone(), Account::PlatformAmlFees),
        EntryKind::Payout => (named(e.account.as_deref()), accounts.external.clone()),
        EntryKind::Adjustment => {
            if e.direction == Some(EntryDirection::Debit) {
                (named(e.account.as_deref()), Account::PlatformAdjustments)
            } else {
                (Account::PlatformAdjustments, named(e.account.as_deref()))
            }
        }
    };
    let event = LedgerEntryImported {
        entry_id: e.entry_id,
        payment_id,
        kind: e.kind,
        direction: e.direction,
        account: e.account.clone(),
        party,
        amount: e.amount,
        asset: e.asset,
        from,
        to,
        reference: e.reference.clone(),
        note: e.note.clone(),
        created_by: e.created_by.clone(),
        purchase_request: e.purchase_request.clone(),
        balance_after: e.balance_after.clone(),
        sign_dropped: e.sign_dropped,
        placement,
        document: e.source.document.clone(),
    };
    Ok(Placed {
        event,
        stream_id,
        stream_type,
        anomalies,
    })
}

fn hex(e: &ParsedEntry) -> &str {
    e.payment_hex.as_deref().unwrap_or("-")
}

/// The other entries among `candidates` that look like a retried webhook's copy of `e`:
/// same reference, same type, same amount (by value), less than 10 minutes apart.
pub fn duplicates_of<'a>(e: &ParsedEntry, candidates: &'a [ParsedEntry]) -> Vec<&'a ParsedEntry> {
    let Some(reference) = e.reference.as_deref() else {
        return Vec::new();
    };
    candidates
        .iter()
        .filter(|c| {
            c.source.object_id != e.source.object_id
                && c.reference.as_deref() == Some(reference)
                && c.kind == e.kind
                && c.amount == e.amount
                && (c.created_at - e.created_at).abs() < Duration::minutes(10)
        })
        .collect()
}
