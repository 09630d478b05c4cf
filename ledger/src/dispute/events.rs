//! The dispute stream's events: stored shapes (type name = variant name, payload = the
//! variant's struct, schema version 1). Dispute events never move money: the money of a
//! resolution is the payment stream's `DisputeSettled`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{AuthorRole, DisputeReason, DisputeStatus, EvidenceType, Outcome, PartyRole, Priority};
use crate::account::Reference;
use crate::decode::event_codec;
use crate::event::{Metadata, NewEvent};
use crate::payment::Fee;

use super::imported::DisputeImported;

/// The stream type of dispute streams (stream id = dispute id): a contract.
pub const STREAM_TYPE: &str = "dispute";

/// A party opened a dispute on a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeOpened {
    /// The dispute's id (= its stream id).
    pub dispute_id: Uuid,
    /// The disputed payment.
    pub payment_id: Uuid,
    /// Who opened it.
    pub opened_by: Reference,
    /// As which party.
    pub role: PartyRole,
    /// Why.
    pub reason: DisputeReason,
    /// The party's account of it.
    pub description: String,
    /// Initial priority.
    #[serde(default)]
    pub priority: Priority,
}

/// Evidence was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceSubmitted {
    /// The evidence's id.
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
}

/// A message was posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagePosted {
    /// The message's id.
    pub message_id: Uuid,
    /// Who wrote it.
    pub author: Reference,
    /// As whom.
    pub author_role: AuthorRole,
    /// The text.
    pub body: String,
    /// Attachment URLs or names.
    #[serde(default)]
    pub attachments: Vec<String>,
}

/// An admin was assigned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAssigned {
    /// The admin.
    pub admin: Reference,
}

/// The priority changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityChanged {
    /// The new priority.
    pub priority: Priority,
}

/// The status changed (never to `resolved`: that is [`DisputeResolved`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChanged {
    /// The new status.
    pub status: DisputeStatus,
    /// Why.
    #[serde(default)]
    pub note: Option<String>,
}

/// The dispute was resolved (status `resolved`). Records the decision only: the money it
/// moves is the payment's `DisputeSettled`, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeResolved {
    /// The decision.
    pub outcome: Outcome,
    /// For `split`: the seller's part, gross of fees.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub seller_amount: Option<Decimal>,
    /// For `split`: the buyer's part.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub buyer_amount: Option<Decimal>,
    /// Fees taken.
    #[serde(default)]
    pub fees: Vec<Fee>,
    /// The admin's note.
    #[serde(default)]
    pub note: Option<String>,
}

/// Every event of a dispute stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum DisputeEvent {
    /// See [`DisputeOpened`].
    DisputeOpened(DisputeOpened),
    /// See [`EvidenceSubmitted`].
    EvidenceSubmitted(EvidenceSubmitted),
    /// See [`MessagePosted`].
    MessagePosted(MessagePosted),
    /// See [`AdminAssigned`].
    AdminAssigned(AdminAssigned),
    /// See [`PriorityChanged`].
    PriorityChanged(PriorityChanged),
    /// See [`StatusChanged`].
    StatusChanged(StatusChanged),
    /// See [`DisputeResolved`].
    DisputeResolved(DisputeResolved),
    /// See [`DisputeImported`].
    DisputeImported(DisputeImported),
}

event_codec!(DisputeEvent {
    DisputeOpened,
    EvidenceSubmitted,
    MessagePosted,
    AdminAssigned,
    PriorityChanged,
    StatusChanged,
    DisputeResolved,
    DisputeImported,
});

impl DisputeEvent {
    /// The status this event ends the dispute in, if it does: `Some(rejected | withdrawn |
    /// closed)` for a `StatusChanged` to an ending status — the caller must then append
    /// `Payment::unfreeze(dispute_id, status)` in the same transaction — and
    /// `Some(resolved)` for `DisputeResolved` — the caller must append
    /// `Payment::settle_dispute(&Settlement::from_resolution(..))`. `None` for
    /// `DisputeImported`: an imported ended dispute never froze the escrow, and its money
    /// was imported as ledger entries.
    pub fn ends_dispute(&self) -> Option<DisputeStatus> {
        match self {
            DisputeEvent::StatusChanged(e) if e.status.is_terminal() => Some(e.status),
            DisputeEvent::DisputeResolved(_) => Some(DisputeStatus::Resolved),
            _ => None,
        }
    }

    /// This event as a [`NewEvent`] to append (dispute events carry no postings).
    pub fn to_new_event(&self, metadata: &Metadata, occurred_at: DateTime<Utc>) -> NewEvent {
        NewEvent::new(
            self.event_type(),
            self.payload(),
            metadata,
            occurred_at,
            Vec::new(),
        )
    }
}

/// Turns decided dispute events into [`NewEvent`]s to append.
pub fn new_events(
    events: &[DisputeEvent],
    metadata: &Metadata,
    occurred_at: DateTime<Utc>,
) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| e.to_new_event(metadata, occurred_at))
        .collect()
}
