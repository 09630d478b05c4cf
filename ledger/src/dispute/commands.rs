//! The dispute's commands: each checks the dispute's state and decides the events to
//! append, or refuses with a [`DisputeError`].

use rust_decimal::Decimal;
use uuid::Uuid;

use super::AuthorRole;
use super::{
    AdminAssigned, Dispute, DisputeError, DisputeEvent, DisputeOpened, DisputeReason,
    DisputeResolved, DisputeStatus, EvidenceSubmitted, EvidenceType, MessagePosted, Outcome,
    PartyRole, Priority, PriorityChanged, StatusChanged,
};
use crate::account::Reference;
use crate::payment::Fee;

/// Open a dispute on a payment (the caller also appends `Payment::freeze`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenDispute {
    /// The new dispute's id.
    pub dispute_id: Uuid,
    /// The disputed payment (its existence is the caller's check, through `freeze`).
    pub payment_id: Uuid,
    /// Who opens it.
    pub opened_by: Reference,
    /// As which party.
    pub role: PartyRole,
    /// Why.
    pub reason: DisputeReason,
    /// The party's account; not empty.
    pub description: String,
    /// Initial priority (`Priority::default()` = medium).
    pub priority: Priority,
}

/// Submit evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitEvidence {
    /// The evidence's id.
    pub evidence_id: Uuid,
    /// Who submits it.
    pub submitted_by: Reference,
    /// What kind.
    pub evidence_type: EvidenceType,
    /// Where it is.
    pub url: Option<String>,
    /// What it shows.
    pub description: Option<String>,
}

/// Post a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostMessage {
    /// The message's id.
    pub message_id: Uuid,
    /// Who writes.
    pub author: Reference,
    /// As whom.
    pub author_role: AuthorRole,
    /// The text; may be empty only with attachments.
    pub body: String,
    /// Attachments.
    pub attachments: Vec<String>,
}

/// Resolve the dispute (the caller also appends `Payment::settle_dispute`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolve {
    /// The decision.
    pub outcome: Outcome,
    /// For `split` only: the seller's part, gross of fees.
    pub seller_amount: Option<Decimal>,
    /// For `split` only: the buyer's part.
    pub buyer_amount: Option<Decimal>,
    /// Fees (not with `no_action`).
    pub fees: Vec<Fee>,
    /// The admin's note.
    pub note: Option<String>,
}

type Decided = Result<Vec<DisputeEvent>, DisputeError>;

fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

impl Dispute {
    /// The dispute's state check for every command but `open`: it exists and has not ended.
    fn live(&self) -> Result<(), DisputeError> {
        if !self.exists() {
            return Err(DisputeError::NotOpened);
        }
        if self.status.is_terminal() {
            return Err(DisputeError::DisputeEnded {
                status: self.status,
            });
        }
        Ok(())
    }

    /// Opens the dispute.
    ///
    /// # Errors
    /// `AlreadyExists`, `EmptyText`.
    pub fn open(&self, cmd: OpenDispute) -> Decided {
        if self.exists() {
            return Err(DisputeError::AlreadyExists {
                dispute_id: cmd.dispute_id,
            });
        }
        if blank(&cmd.description) {
            return Err(DisputeError::EmptyText {
                field: "description",
            });
        }
        Ok(vec![DisputeEvent::DisputeOpened(DisputeOpened {
            dispute_id: cmd.dispute_id,
            payment_id: cmd.payment_id,
            opened_by: cmd.opened_by,
            role: cmd.role,
            reason: cmd.reason,
            description: cmd.description,
            priority: cmd.priority,
        })])
    }

    /// Adds evidence; it needs a URL or a description.
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`, `EmptyEvidence`.
    pub fn submit_evidence(&self, cmd: SubmitEvidence) -> Decided {
        self.live()?;
        let given = |t: &Option<String>| t.as_deref().is_some_and(|t| !blank(t));
        if !given(&cmd.url) && !given(&cmd.description) {
            return Err(DisputeError::EmptyEvidence);
        }
        Ok(vec![DisputeEvent::EvidenceSubmitted(EvidenceSubmitted {
            evidence_id: cmd.evidence_id,
            submitted_by: cmd.submitted_by,
            evidence_type: cmd.evidence_type,
            url: cmd.url,
            description: cmd.description,
        })])
    }

    /// Posts a message; its body may be empty only if it has attachments.
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`, `EmptyText`.
    pub fn post_message(&self, cmd: PostMessage) -> Decided {
        self.live()?;
        if blank(&cmd.body) && cmd.attachments.is_empty() {
            return Err(DisputeError::EmptyText { field: "body" });
        }
        Ok(vec![DisputeEvent::MessagePosted(MessagePosted {
            message_id: cmd.message_id,
            author: cmd.author,
            author_role: cmd.author_role,
            body: cmd.body,
            attachments: cmd.attachments,
        })])
    }

    /// Assigns an admin (re-assigning replaces the previous one).
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`.
    pub fn assign(&self, admin: Reference) -> Decided {
        self.live()?;
        Ok(vec![DisputeEvent::AdminAssigned(AdminAssigned { admin })])
    }

    /// Sets the priority.
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`.
    pub fn set_priority(&self, priority: Priority) -> Decided {
        self.live()?;
        Ok(vec![DisputeEvent::PriorityChanged(PriorityChanged {
            priority,
        })])
    }

    /// Changes the status to anything but `resolved`. If the new status ends the dispute
    /// ([`DisputeStatus::is_terminal`]; also [`DisputeEvent::ends_dispute`] on the result),
    /// the caller must append `Payment::unfreeze(dispute_id, status)` in the same
    /// transaction.
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`, `ResolvedOnlyByResolution`.
    pub fn change_status(&self, status: DisputeStatus, note: Option<String>) -> Decided {
        self.live()?;
        if status == DisputeStatus::Resolved {
            return Err(DisputeError::ResolvedOnlyByResolution);
        }
        Ok(vec![DisputeEvent::StatusChanged(StatusChanged {
            status,
            note,
        })])
    }

    /// Resolves the dispute. Checks only the shape of the decision (amounts only for a
    /// split, and both of them; no fees with `no_action`); the money is checked by
    /// `Payment::settle_dispute`, which the caller appends in the same transaction.
    ///
    /// # Errors
    /// `NotOpened`, `DisputeEnded`, `MissingSplitAmounts`, `UnexpectedAmounts`,
    /// `InvalidAmount`.
    pub fn resolve(&self, cmd: Resolve) -> Decided {
        self.live()?;
        match (cmd.outcome, cmd.seller_amount, cmd.buyer_amount) {
            (Outcome::Split, Some(s), Some(b)) => {
                for part in [s, b] {
                    if part < Decimal::ZERO {
                        return Err(DisputeError::InvalidAmount { amount: part });
                    }
                }
            }
            (Outcome::Split, _, _) => return Err(DisputeError::MissingSplitAmounts),
            (_, None, None) => {}
            _ => return Err(DisputeError::UnexpectedAmounts),
        }
        if cmd.outcome == Outcome::NoAction && !cmd.fees.is_empty() {
            return Err(DisputeError::UnexpectedAmounts);
        }
        if let Some(fee) = cmd.fees.iter().find(|f| f.amount <= Decimal::ZERO) {
            return Err(DisputeError::InvalidAmount { amount: fee.amount });
        }
        Ok(vec![DisputeEvent::DisputeResolved(DisputeResolved {
            outcome: cmd.outcome,
            seller_amount: cmd.seller_amount,
            buyer_amount: cmd.buyer_amount,
            fees: cmd.fees,
            note: cmd.note,
        })])
    }
}

impl DisputeStatus {
    /// Whether a status change to this status must unfreeze the payment's escrow: the
    /// ending statuses but `resolved` (a resolution settles instead).
    pub fn unfreezes_escrow(self) -> bool {
        self.is_terminal() && self != DisputeStatus::Resolved
    }
}
