//! The dispute vocabulary: the legacy enums (`legacy-mongo.md`), kept with exactly the
//! legacy values so imported and new disputes read alike.

use serde::{Deserialize, Serialize};

/// Why a dispute was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeReason {
    /// `item_not_received`.
    ItemNotReceived,
    /// `not_as_described`.
    NotAsDescribed,
    /// `payment_issue`.
    PaymentIssue,
    /// `fraud`.
    Fraud,
    /// `other`.
    Other,
}

/// Where a dispute stands. `resolved`, `rejected`, `withdrawn` and `closed` end it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// `open`: just opened.
    #[default]
    Open,
    /// `under_review`: an admin is looking at it.
    UnderReview,
    /// `awaiting_buyer`: waiting for the buyer.
    AwaitingBuyer,
    /// `awaiting_seller`: waiting for the seller.
    AwaitingSeller,
    /// `resolved`: decided by a resolution (ends it; only through the resolution).
    Resolved,
    /// `rejected`: refused by an admin (ends it).
    Rejected,
    /// `withdrawn`: withdrawn by the party (ends it).
    Withdrawn,
    /// `closed`: closed without a decision (ends it).
    Closed,
}

impl DisputeStatus {
    /// Whether a dispute in this status has ended: it takes no more commands, and its
    /// payment's escrow must be unfrozen (or settled, for `resolved`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DisputeStatus::Resolved
                | DisputeStatus::Rejected
                | DisputeStatus::Withdrawn
                | DisputeStatus::Closed
        )
    }

    /// The stored / shown name (`"under_review"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DisputeStatus::Open => "open",
            DisputeStatus::UnderReview => "under_review",
            DisputeStatus::AwaitingBuyer => "awaiting_buyer",
            DisputeStatus::AwaitingSeller => "awaiting_seller",
            DisputeStatus::Resolved => "resolved",
            DisputeStatus::Rejected => "rejected",
            DisputeStatus::Withdrawn => "withdrawn",
            DisputeStatus::Closed => "closed",
        }
    }
}

/// How urgent a dispute is. Ordered: `Low < Medium < High < Urgent`, so the admin queue
/// sorts by `priority` descending.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// `low`.
    Low,
    /// `medium` (the default, also for legacy disputes without one).
    #[default]
    Medium,
    /// `high`.
    High,
    /// `urgent`: the most urgent.
    Urgent,
}

/// What kind of evidence was submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceType {
    /// `image`.
    Image,
    /// `document`.
    Document,
    /// `link`.
    Link,
    /// `text`.
    Text,
}

/// Who wrote a dispute message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorRole {
    /// `buyer`.
    Buyer,
    /// `seller`.
    Seller,
    /// `admin`.
    Admin,
    /// `system`.
    System,
}

/// Which party opened a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyRole {
    /// `buyer`.
    Buyer,
    /// `seller`.
    Seller,
}

/// What a dispute's resolution decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// `release_to_seller`: all that is held goes to the seller (fees as for a release).
    ReleaseToSeller,
    /// `refund_to_buyer`: all that is held goes to the buyer.
    RefundToBuyer,
    /// `split`: what is held, divided between them as stated.
    Split,
    /// `no_action`: nothing moves; the escrow is unfrozen and stays held.
    NoAction,
}
