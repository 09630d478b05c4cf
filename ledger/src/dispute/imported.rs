//! Imported history: the event the cutover importer writes for a legacy MongoDB dispute
//! (`legacy-mongo.md`). One [`DisputeImported`] opens the dispute's stream with everything the
//! legacy document held: its evidence, messages and timeline, each with its own time, and
//! the status, priority and admin as of `updatedAt`. It moves no money: the money of a
//! legacy resolution was written as ledger entries, imported on the payment's stream.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{
    AuthorRole, Dispute, DisputeOpened, DisputeResolved, DisputeStatus, EvidenceType, Outcome,
    Priority,
};
use crate::account::Reference;

/// One piece of legacy evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedEvidence {
    /// Its id (from its `_id`).
    pub evidence_id: Uuid,
    /// Who submitted it.
    pub submitted_by: Reference,
    /// What kind (stored as `"type"`).
    #[serde(rename = "type")]
    pub evidence_type: EvidenceType,
    /// Where it is.
    #[serde(default)]
    pub url: Option<String>,
    /// What it shows.
    #[serde(default)]
    pub description: Option<String>,
    /// When it was submitted (the `_id`'s time when absent).
    pub submitted_at: DateTime<Utc>,
}

/// One legacy message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedMessage {
    /// Its id (from its `_id`).
    pub message_id: Uuid,
    /// Who wrote it.
    pub author: Reference,
    /// As whom.
    pub author_role: AuthorRole,
    /// The text (U+0000 replaced by U+FFFD).
    pub body: String,
    /// Attachments.
    #[serde(default)]
    pub attachments: Vec<String>,
    /// When it was posted (the `_id`'s time when absent).
    pub posted_at: DateTime<Utc>,
}

/// One legacy timeline entry (pushed by a pre-save hook on each status change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedTimelineEntry {
    /// The status entered.
    pub status: DisputeStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// By whom (a user, or `"system"`).
    #[serde(default)]
    pub by: Option<Reference>,
    /// Why.
    #[serde(default)]
    pub note: Option<String>,
}

/// A legacy resolution: the decision only (its money was imported as ledger entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedResolution {
    /// The decision.
    pub outcome: Outcome,
    /// The seller's part, when stated.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub seller_amount: Option<Decimal>,
    /// The buyer's part, when stated.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub buyer_amount: Option<Decimal>,
    /// Who decided.
    #[serde(default)]
    pub resolved_by: Option<Reference>,
    /// When.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// The admin's note.
    #[serde(default)]
    pub note: Option<String>,
}

/// A legacy dispute document was imported: the first event of its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeImported {
    /// How it was opened (`priority` here is the priority as of `updatedAt`: the legacy
    /// document keeps no initial one).
    pub opened: DisputeOpened,
    /// The status as of `updatedAt`.
    pub status: DisputeStatus,
    /// The priority as of `updatedAt` (absent: medium).
    pub priority: Priority,
    /// The admin assigned as of `updatedAt`.
    #[serde(default)]
    pub admin: Option<Reference>,
    /// The legacy purchase request.
    #[serde(default)]
    pub purchase_request: Option<Reference>,
    /// The legacy chat.
    #[serde(default)]
    pub chat: Option<Reference>,
    /// Whether the payment was found through `purchaseRequestId` (no `paymentId`).
    #[serde(default)]
    pub payment_from_purchase_request: bool,
    /// Evidence, in document order.
    #[serde(default)]
    pub evidence: Vec<ImportedEvidence>,
    /// Messages, in document order.
    #[serde(default)]
    pub messages: Vec<ImportedMessage>,
    /// The timeline, in document order (may be empty for old disputes).
    #[serde(default)]
    pub timeline: Vec<ImportedTimelineEntry>,
    /// The resolution, if any.
    #[serde(default)]
    pub resolution: Option<ImportedResolution>,
    /// The legacy `createdAt` (or the `_id`'s time).
    pub created_at: DateTime<Utc>,
    /// The legacy `updatedAt` (or `createdAt`).
    pub updated_at: DateTime<Utc>,
    /// When it ended, for an ended dispute: the resolution's time, else the last timeline
    /// entry into its status, else `updatedAt`.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Legacy fields outside the contract's list, carried verbatim (Extended JSON).
    #[serde(default)]
    pub extra: Option<Value>,
}

impl DisputeImported {
    /// The resolution as the live `DisputeResolved` would record it (no fees: the legacy
    /// fee entries are on the payment's stream).
    pub fn resolved(&self) -> Option<DisputeResolved> {
        self.resolution.as_ref().map(|r| DisputeResolved {
            outcome: r.outcome,
            seller_amount: r.seller_amount,
            buyer_amount: r.buyer_amount,
            fees: Vec::new(),
            note: r.note.clone(),
        })
    }
}

impl Dispute {
    /// Folds an imported dispute: its state as of `updatedAt`.
    pub(super) fn apply_imported(&mut self, e: &DisputeImported) {
        self.opened = Some(e.opened.clone());
        self.status = e.status;
        self.priority = e.priority;
        self.admin.clone_from(&e.admin);
        self.evidence = e.evidence.iter().map(|x| x.evidence_id).collect();
        self.messages = e.messages.iter().map(|x| x.message_id).collect();
        self.resolution = e.resolved();
        self.opened_at = Some(e.created_at);
        self.updated_at = Some(e.updated_at);
        self.ended_at = if e.status.is_terminal() {
            Some(e.ended_at.unwrap_or(e.updated_at))
        } else {
            None
        };
    }
}
