//! The envelope every event travels in: what the store writes and hands back. Domain
//! events (payments, disputes) become [`NewEvent`]s; the store knows nothing of their
//! meaning, only of streams, versions, postings and the audit metadata.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::posting::Posting;

/// Who caused an event: the token's name and role, or a tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The name the token was issued to (`"checkout-coordinator"`), or a tool's name.
    pub name: String,
    /// The role (`coordinator`, `admin`, `importer`, `cli`).
    pub role: String,
}

/// The audit metadata every event carries: who, why and from where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything one business request caused.
    pub correlation_id: Uuid,
    /// The request or event that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who.
    pub actor: Actor,
    /// Which door the event came in by: `api`, `import`, `cli`, `bench`.
    pub source: String,
    /// The legacy collection and `_id` an imported event was made from, and alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Value>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique id; the importer derives it from the legacy document so re-runs collide.
    pub event_id: Uuid,
    /// Stored name of the event type (`"FundsDeposited"`): a contract.
    pub event_type: String,
    /// Version of the payload's shape, for upcasting.
    pub schema_version: i32,
    /// The event's data; must be a JSON object.
    pub payload: Value,
    /// Audit data; must be a JSON object.
    pub metadata: Value,
    /// Business time: when it happened (legacy timestamp for imported history).
    pub occurred_at: DateTime<Utc>,
    /// The money it moves; empty for events that move none. Must balance per asset.
    pub postings: Vec<Posting>,
}

impl NewEvent {
    /// An event with a random id and schema version 1.
    pub fn new(
        event_type: impl Into<String>,
        payload: Value,
        metadata: &Metadata,
        occurred_at: DateTime<Utc>,
        postings: Vec<Posting>,
    ) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: serde_json::to_value(metadata).unwrap_or(Value::Null),
            occurred_at: occurred_at.trunc_subsecs(6),
            postings,
        }
    }
}

/// What the caller expects a stream's current version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0 = no stream) satisfies this expectation.
    pub fn admits(self, actual: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

/// Events to append to one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAppend {
    /// The stream (a payment's or a dispute's id).
    pub stream_id: Uuid,
    /// `"payment"`, `"dispute"`, ...
    pub stream_type: String,
    /// The concurrency check.
    pub expected: ExpectedVersion,
    /// At least one event.
    pub events: Vec<NewEvent>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Global position: unique, increasing within a transaction.
    pub position: i64,
    /// The id of the transaction that wrote it (feed order is by this, then position).
    pub tx_id: i64,
    /// The stream.
    pub stream_id: Uuid,
    /// The stream's type.
    pub stream_type: String,
    /// The version within its stream, from 1.
    pub version: i64,
    /// The event's unique id.
    pub event_id: Uuid,
    /// Stored type name.
    pub event_type: String,
    /// Payload shape version.
    pub schema_version: i32,
    /// The data.
    pub payload: Value,
    /// Audit metadata.
    pub metadata: Value,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// When the store wrote it.
    pub recorded_at: DateTime<Utc>,
    /// The money it moved.
    pub postings: Vec<Posting>,
    /// Hash of the stream's previous event (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// Hash of this event over its canonical encoding and `prev_hash`.
    pub hash: Vec<u8>,
}

/// A place in the global feed: the event at `position`, written by transaction `tx_id`.
/// Feed order is `(tx_id, position)`; `FeedPosition::START` comes before every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The writing transaction's id.
    pub tx_id: i64,
    /// The event's global position.
    pub position: i64,
}

impl FeedPosition {
    /// Before the first event.
    pub const START: FeedPosition = FeedPosition {
        tx_id: 0,
        position: 0,
    };
}

impl RecordedEvent {
    /// This event's place in the feed.
    pub fn feed_position(&self) -> FeedPosition {
        FeedPosition {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}
