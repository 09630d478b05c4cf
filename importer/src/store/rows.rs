//! What one batch writes: its rows, gathered by the translation before the write.

use chrono::{DateTime, Utc};
use ledger::event::StreamAppend;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::legacy::Anomaly;

/// A row of the id map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex.
    pub object_id: String,
    /// The UUID it became.
    pub id: Uuid,
    /// Its stream.
    pub stream_id: Uuid,
    /// The stream's type.
    pub stream_type: &'static str,
    /// Digest of its canonical Extended JSON.
    pub digest: String,
    /// Payments: the account key of the purchase request.
    pub purchase_request: Option<String>,
}

/// A rejected document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex (or its Extended JSON when not an ObjectId).
    pub object_id: String,
    /// The reason's code.
    pub code: String,
    /// The field at fault.
    pub field: Option<String>,
    /// The reason in words.
    pub reason: String,
    /// The document as Extended JSON text.
    pub raw_ejson: String,
    /// The document's bytes as read.
    pub raw_bson: Vec<u8>,
    /// Payments: the account key of its `purchaseRequestId`, when readable (disputes
    /// without `paymentId` are matched against rejected payments too).
    pub purchase_request: Option<String>,
}

/// An anomaly of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRow {
    /// The legacy collection.
    pub collection: &'static str,
    /// The `_id` in hex.
    pub object_id: String,
    /// What.
    pub anomaly: Anomaly,
}

/// A provider reference deposited by an imported entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRef {
    /// The provider.
    pub provider: String,
    /// The reference.
    pub reference: String,
    /// The payment.
    pub payment_id: Uuid,
    /// The event that deposited it.
    pub event_id: Uuid,
}

/// Everything one batch writes.
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// Appends, one per stream, events in order.
    pub appends: Vec<StreamAppend>,
    /// Id map rows.
    pub id_map: Vec<IdMapRow>,
    /// Rejects (upserted: a reject seen again is updated).
    pub rejects: Vec<RejectRow>,
    /// Rejects now imported by a retry: (collection, object id).
    pub resolved: Vec<(&'static str, String)>,
    /// Anomalies (each kind once per document).
    pub anomalies: Vec<AnomalyRow>,
    /// Deposit references.
    pub deposits: Vec<DepositRef>,
    /// The checkpoint: (collection, last `_id`, documents in the batch).
    pub checkpoint: Option<(&'static str, String, i64)>,
    /// Ledger entries with a reference, for later batches' duplicate check.
    pub references: Vec<EntryReference>,
}

/// A legacy ledger entry with a reference, as parsed: what the duplicate-webhook check
/// compares (`translate::duplicates_of`).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryReference {
    /// Its `_id` (24 hex digits).
    pub object_id: String,
    /// Its reference.
    pub reference: String,
    /// Its type (`"deposit"`).
    pub kind: String,
    /// Its magnitude.
    pub amount: Decimal,
    /// Its `createdAt`.
    pub created_at: DateTime<Utc>,
    /// Whether it became an event (not rejected).
    pub imported: bool,
}

impl BatchWrite {
    /// Adds events to `stream_id`'s append, creating it (with `expected`) if new.
    pub fn push_events(
        &mut self,
        stream_id: Uuid,
        stream_type: &str,
        expected: ledger::ExpectedVersion,
        events: Vec<ledger::NewEvent>,
    ) {
        if let Some(a) = self.appends.iter_mut().find(|a| a.stream_id == stream_id) {
            a.events.extend(events);
        } else {
            self.appends.push(StreamAppend {
                stream_id,
                stream_type: stream_type.to_owned(),
                expected,
                events,
            });
        }
    }

    /// The number of events to append.
    pub fn event_count(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }
}
