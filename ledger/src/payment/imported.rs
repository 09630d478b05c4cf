//! Imported history: the events the cutover importer writes for legacy MongoDB payments and
//! ledger entries (`legacy-mongo.md`). A [`PaymentImported`] opens a payment stream like a
//! `PaymentCreated` and moves no money; each [`LedgerEntryImported`] moves money exactly as
//! the live event of the same meaning would, so an imported payment is an ordinary one from
//! then on, its invariants counted on its imported history (an escrow driven below zero by
//! history blocks further movement out until an adjustment makes it whole).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{add, sub, Party, Payment, PaymentCreated, PaymentError, PaymentStatus};
use crate::account::{Account, Reference};
use crate::money::Asset;

/// A legacy payment document was imported: the first event of its stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentImported {
    /// The terms, as a live `PaymentCreated` would carry them.
    pub terms: PaymentCreated,
    /// The legacy status, verbatim (`"confirming"`).
    pub legacy_status: String,
    /// The legacy status mapped onto ours ([`PaymentStatus::from_legacy`]).
    pub mapped_status: PaymentStatus,
    /// The legacy `createdAt` (or the time in the `_id` when it was absent).
    pub created_at: DateTime<Utc>,
    /// Whether `created_at` came from the `_id` ObjectId.
    #[serde(default)]
    pub created_at_from_object_id: bool,
    /// The legacy `updatedAt`.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The legacy `paidAt`.
    #[serde(default)]
    pub paid_at: Option<DateTime<Utc>>,
    /// The legacy `releasedAt`.
    #[serde(default)]
    pub released_at: Option<DateTime<Utc>>,
    /// The legacy `refundedAt`.
    #[serde(default)]
    pub refunded_at: Option<DateTime<Utc>>,
    /// The legacy `cancelledAt`.
    #[serde(default)]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The legacy `blockchain` object, carried (its `rawAmount` is never computed with).
    #[serde(default)]
    pub blockchain: Option<Value>,
    /// Every legacy field: the source document as canonical Extended JSON (U+0000 replaced).
    /// Null when read without it: the projectors' feed leaves it out (it is most of the
    /// payload, and nothing projected comes from it).
    #[serde(default)]
    pub document: Value,
}

impl PaymentImported {
    /// When a payment whose legacy status maps to `cancelled` counts as cancelled:
    /// `cancelledAt`, else `updatedAt`, else `created_at`.
    pub fn cancellation_time(&self) -> Option<DateTime<Utc>> {
        (self.mapped_status == PaymentStatus::Cancelled).then(|| {
            self.cancelled_at
                .or(self.updated_at)
                .unwrap_or(self.created_at)
        })
    }
}

/// The type of a legacy ledger entry (`fundsledgerentries.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// `external:<provider>` → `escrow:<payment>`.
    Deposit,
    /// `escrow:<payment>` → `seller:<seller>`.
    Release,
    /// `escrow:<payment>` → `buyer:<buyer>`.
    Refund,
    /// `escrow:<payment>` → `platform:fees`.
    Fee,
    /// `escrow:<payment>` → `platform:aml_fees`.
    AmlFee,
    /// `seller:`/`buyer:` → `external:<provider>`.
    Payout,
    /// Between `platform:adjustments` and the named account.
    Adjustment,
}

impl EntryKind {
    /// Every kind, in a stable order.
    pub const ALL: [EntryKind; 7] = [
        EntryKind::Deposit,
        EntryKind::Release,
        EntryKind::Refund,
        EntryKind::Fee,
        EntryKind::AmlFee,
        EntryKind::Payout,
        EntryKind::Adjustment,
    ];

    /// The legacy name (`"aml_fee"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Fee => "fee",
            EntryKind::AmlFee => "aml_fee",
            EntryKind::Payout => "payout",
            EntryKind::Adjustment => "adjustment",
        }
    }

    /// Parses a legacy name exactly.
    pub fn from_legacy(text: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A legacy entry's `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryDirection {
    /// Money into the named account.
    Credit,
    /// Money out of the named account.
    Debit,
}

/// Where an imported entry's stream and accounts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryPlacement {
    /// On its imported payment's stream, posted to that payment's accounts.
    Payment,
    /// Its `paymentId` names no payment: a stream of its own, unplaceable sides in
    /// `platform:suspense`.
    Orphan,
    /// Its payment was rejected by the import: like an orphan.
    RejectedPayment,
    /// An adjustment tied to no payment: a stream of its own, platform accounts only.
    Unattached,
}

/// A legacy ledger entry was imported: money moved, as history says it did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntryImported {
    /// The entry's id (from its `_id`).
    pub entry_id: Uuid,
    /// The payment its `paymentId` maps to, if any (even when that payment is missing).
    #[serde(default)]
    pub payment_id: Option<Uuid>,
    /// The legacy type.
    pub kind: EntryKind,
    /// The legacy direction, when given.
    #[serde(default)]
    pub direction: Option<EntryDirection>,
    /// The legacy `account` text, when given (`"seller"`, `"platform"`).
    #[serde(default)]
    pub account: Option<String>,
    /// For a payout: whose share was paid out.
    #[serde(default)]
    pub party: Option<Party>,
    /// The magnitude moved; positive.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// The asset.
    pub asset: Asset,
    /// Debited account.
    pub from: Account,
    /// Credited account.
    pub to: Account,
    /// Chain transaction hash or provider charge id.
    #[serde(default)]
    pub reference: Option<String>,
    /// The legacy note.
    #[serde(default)]
    pub note: Option<String>,
    /// Who wrote it (user or string actor).
    #[serde(default)]
    pub created_by: Option<Reference>,
    /// The legacy purchase request.
    #[serde(default)]
    pub purchase_request: Option<Reference>,
    /// The legacy running balance, carried as text and never trusted.
    #[serde(default)]
    pub balance_after: Option<String>,
    /// Whether a negative debit's sign was dropped (entries of 2020).
    #[serde(default)]
    pub sign_dropped: bool,
    /// Where it was placed.
    pub placement: EntryPlacement,
    /// The source document as canonical Extended JSON (U+0000 replaced). Null when read
    /// without it (the projectors' feed, as for [`PaymentImported::document`]).
    #[serde(default)]
    pub document: Value,
}

impl Payment {
    /// Folds an imported payment: its terms, like `PaymentCreated`, and a legacy cancellation.
    pub(super) fn apply_payment_imported(&mut self, e: &PaymentImported, at: DateTime<Utc>) {
        self.terms = Some(e.terms.clone());
        self.created_at = Some(at);
        if let Some(cancelled) = e.cancellation_time() {
            self.cancelled_at = Some(cancelled);
        }
    }

    /// Folds an imported entry exactly as the live event of the same meaning.
    pub(super) fn apply_entry_imported(
        &mut self,
        e: &LedgerEntryImported,
        at: DateTime<Utc>,
    ) -> Result<(), PaymentError> {
        let a = e.amount;
        match e.kind {
            EntryKind::Deposit => {
                let amount = self.terms.as_ref().map_or(Decimal::ZERO, |t| t.amount);
                let after = add(self.deposited, a)?;
                let excess = sub(after, self.deposited.max(amount))?.max(Decimal::ZERO);
                self.deposited = after;
                self.held = add(self.held, a)?;
                self.excess = add(self.excess, excess)?;
                self.excess_held = add(self.excess_held, excess)?;
                if self.funded_at.is_none() && self.deposited >= amount {
                    self.funded_at = Some(at);
                }
            }
            EntryKind::Release => {
                self.held = sub(self.held, a)?;
                self.released = add(self.released, a)?;
                self.seller_share = add(self.seller_share, a)?;
                self.released_at = Some(at);
            }
            EntryKind::Refund => {
                self.held = sub(self.held, a)?;
                self.refunded = add(self.refunded, a)?;
                self.buyer_share = add(self.buyer_share, a)?;
                self.excess_held = sub(self.excess_held, a)?.max(Decimal::ZERO);
                self.refunded_at = Some(at);
            }
            EntryKind::Fee => {
                self.held = sub(self.held, a)?;
                self.fees = add(self.fees, a)?;
            }
            EntryKind::AmlFee => {
                self.held = sub(self.held, a)?;
                self.aml_fees = add(self.aml_fees, a)?;
            }
            EntryKind::Payout => {
                if e.party == Some(Party::Buyer) {
                    self.buyer_share = sub(self.buyer_share, a)?;
                    self.paid_out_buyer = add(self.paid_out_buyer, a)?;
                } else {
                    self.seller_share = sub(self.seller_share, a)?;
                    self.paid_out_seller = add(self.paid_out_seller, a)?;
                }
            }
            EntryKind::Adjustment => {
                self.adjust_share(&e.from, -a)?;
                self.adjust_share(&e.to, a)?;
            }
        }
        Ok(())
    }
}

/// The id of a legacy entry's own stream (orphans, unattached adjustments): the entry's id.
pub fn entry_stream_id(entry_id: Uuid) -> Uuid {
    entry_id
}

/// The stream type of an entry's own stream: a contract.
pub const ENTRY_STREAM_TYPE: &str = "legacy_entry";
