//! The dispute aggregate: one dispute's state, rebuilt by folding its events, and the
//! commands deciding new events from it. Pure: no I/O; time and ids are passed in. It keeps
//! the contract's rules: `resolved` only through a resolution, and an ended dispute
//! (resolved, rejected, withdrawn, closed) takes nothing more. Freezing and settling the
//! payment's escrow is the payment aggregate's part, appended in the same transaction.

mod commands;
mod error;
mod events;
mod imported;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_imported;
mod types;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::account::Reference;
use crate::decode::DecodeError;
use crate::event::RecordedEvent;

pub use commands::{OpenDispute, PostMessage, Resolve, SubmitEvidence};
pub use error::DisputeError;
pub use events::{
    new_events, AdminAssigned, DisputeEvent, DisputeOpened, DisputeResolved, EvidenceSubmitted,
    MessagePosted, PriorityChanged, StatusChanged, STREAM_TYPE,
};
pub use imported::{
    DisputeImported, ImportedEvidence, ImportedMessage, ImportedResolution, ImportedTimelineEntry,
};
pub use types::{
    AuthorRole, DisputeReason, DisputeStatus, EvidenceType, Outcome, PartyRole, Priority,
};

/// The state of one dispute. `Dispute::default()` is a dispute whose stream does not exist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dispute {
    /// How it was opened; `None` while the stream does not exist.
    pub opened: Option<DisputeOpened>,
    /// Current status.
    pub status: DisputeStatus,
    /// Current priority (default `medium`).
    pub priority: Priority,
    /// The assigned admin.
    pub admin: Option<Reference>,
    /// Ids of the evidence submitted, in order.
    pub evidence: Vec<Uuid>,
    /// Ids of the messages posted, in order.
    pub messages: Vec<Uuid>,
    /// The resolution, once resolved.
    pub resolution: Option<DisputeResolved>,
    /// When it was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// When its last event happened.
    pub updated_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// The stream's version: the number of events folded (0 = no stream).
    pub version: i64,
}

impl Dispute {
    /// Rebuilds a dispute from its stored events, in stream order.
    ///
    /// # Errors
    /// [`DecodeError`] if an event does not decode.
    pub fn from_history<'a>(
        events: impl IntoIterator<Item = &'a RecordedEvent>,
    ) -> Result<Dispute, DecodeError> {
        let mut dispute = Dispute::default();
        for recorded in events {
            let event = DisputeEvent::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.payload,
            )?;
            dispute.apply(&event, recorded.occurred_at);
            dispute.version = recorded.version;
        }
        Ok(dispute)
    }

    /// Whether the stream exists.
    pub fn exists(&self) -> bool {
        self.opened.is_some()
    }

    /// The disputed payment, if the dispute exists.
    pub fn payment_id(&self) -> Option<Uuid> {
        self.opened.as_ref().map(|o| o.payment_id)
    }

    /// Whether the dispute has ended (resolved, rejected, withdrawn or closed).
    pub fn is_ended(&self) -> bool {
        self.exists() && self.status.is_terminal()
    }

    /// Folds one event into the state.
    pub fn apply(&mut self, event: &DisputeEvent, occurred_at: DateTime<Utc>) {
        match event {
            DisputeEvent::DisputeOpened(e) => {
                self.opened = Some(e.clone());
                self.status = DisputeStatus::Open;
                self.priority = e.priority;
                self.opened_at = Some(occurred_at);
            }
            DisputeEvent::EvidenceSubmitted(e) => self.evidence.push(e.evidence_id),
            DisputeEvent::MessagePosted(e) => self.messages.push(e.message_id),
            DisputeEvent::AdminAssigned(e) => self.admin = Some(e.admin.clone()),
            DisputeEvent::PriorityChanged(e) => self.priority = e.priority,
            DisputeEvent::StatusChanged(e) => self.status = e.status,
            DisputeEvent::DisputeResolved(e) => {
                self.status = DisputeStatus::Resolved;
                self.resolution = Some(e.clone());
            }
            DisputeEvent::DisputeImported(e) => {
                // Its own times: the state is as of the legacy `updatedAt`.
                self.apply_imported(e);
                self.version += 1;
                return;
            }
        }
        if event.ends_dispute().is_some() {
            self.ended_at = Some(occurred_at);
        }
        self.updated_at = Some(occurred_at);
        self.version += 1;
    }
}
