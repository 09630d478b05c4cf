//! The disputes projector: folds each dispute stream through `Dispute::apply`, keeps the
//! fold's state in `disputes_<side>` (the evidence and message ids in their child tables,
//! in order), appends evidence, messages and one timeline row per event. The admin queue
//! reads `disputes` by (status, priority) and (admin, status), most urgent first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use ledger::dispute::{
    Dispute, DisputeEvent, DisputeOpened, DisputeResolved, Priority, STREAM_TYPE,
};
use ledger::payment::{Fee, FeeKind};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::feed::FeedEvent;
use crate::text::{enum_name, parse_enum, parse_reference, reference_key};
use crate::{Projection, ProjectionError, Side};

const NAME: &str = "disputes";

/// A row of `projection.disputes_<side>`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
struct DisputeRow {
    dispute_id: Uuid,
    payment_id: Uuid,
    version: i64,
    status: String,
    priority: String,
    priority_rank: i16,
    admin: Option<String>,
    opened_by: String,
    opened_by_role: String,
    reason: String,
    description: String,
    initial_priority: String,
    outcome: Option<String>,
    resolution_seller_amount: Option<Decimal>,
    resolution_buyer_amount: Option<Decimal>,
    resolution_fees: Option<Decimal>,
    resolution_aml_fees: Option<Decimal>,
    resolution_note: Option<String>,
    evidence_count: i32,
    message_count: i32,
    opened_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    last_position: i64,
}

#[derive(Debug, Serialize)]
struct EvidenceRow {
    dispute_id: Uuid,
    seq: i32,
    evidence_id: Uuid,
    submitted_by: String,
    evidence_type: String,
    url: Option<String>,
    description: Option<String>,
    submitted_at: DateTime<Utc>,
    position: i64,
}

#[derive(Debug, Serialize)]
struct MessageRow {
    dispute_id: Uuid,
    seq: i32,
    message_id: Uuid,
    author: String,
    author_role: String,
    body: String,
    attachments: Vec<String>,
    posted_at: DateTime<Utc>,
    position: i64,
}

#[derive(Debug, Serialize)]
struct TimelineRow {
    dispute_id: Uuid,
    version: i64,
    entry: i32,
    position: i64,
    event_type: String,
    occurred_at: DateTime<Utc>,
    actor_name: Option<String>,
    actor_role: Option<String>,
    status: String,
    priority: String,
    admin: Option<String>,
    note: Option<String>,
}

/// The queue's order: a higher rank is more urgent.
fn rank(p: Priority) -> i16 {
    match p {
        Priority::Low => 0,
        Priority::Medium => 1,
        Priority::High => 2,
        Priority::Urgent => 3,
    }
}

fn fee_total(fees: &[Fee], kind: FeeKind) -> Decimal {
    fees.iter()
        .filter(|f| f.kind == kind)
        .map(|f| f.amount)
        .sum()
}

impl DisputeRow {
    /// The aggregate's state (with the evidence and message ids read from their tables).
    /// A resolution's fees are kept as one total per kind.
    fn to_state(&self, evidence: Vec<Uuid>, messages: Vec<Uuid>) -> Result<Dispute, String> {
        let opened = DisputeOpened {
            dispute_id: self.dispute_id,
            payment_id: self.payment_id,
            opened_by: parse_reference("opened_by", &self.opened_by)?,
            role: parse_enum("opened_by_role", &self.opened_by_role)?,
            reason: parse_enum("reason", &self.reason)?,
            description: self.description.clone(),
            priority: parse_enum("initial_priority", &self.initial_priority)?,
        };
        let resolution = match &self.outcome {
            None => None,
            Some(outcome) => {
                let mut fees = Vec::new();
                for (kind, amount) in [
                    (FeeKind::Fee, self.resolution_fees),
                    (FeeKind::AmlFee, self.resolution_aml_fees),
                ] {
                    if let Some(amount) = amount.filter(|a| !a.is_zero()) {
                        fees.push(Fee { kind, amount });
                    }
                }
                Some(DisputeResolved {
                    outcome: parse_enum("outcome", outcome)?,
                    seller_amount: self.resolution_seller_amount,
                    buyer_amount: self.resolution_buyer_amount,
                    fees,
                    note: self.resolution_note.clone(),
                })
            }
        };
        Ok(Dispute {
            opened: Some(opened),
            status: parse_enum("status", &self.status)?,
            priority: parse_enum("priority", &self.priority)?,
            admin: self
                .admin
                .as_deref()
                .map(|a| parse_reference("admin", a))
                .transpose()?,
            evidence,
            messages,
            resolution,
            opened_at: Some(self.opened_at),
            updated_at: Some(self.updated_at),
            ended_at: self.ended_at,
            version: self.version,
        })
    }

    fn from_state(id: Uuid, d: &Dispute, last_position: i64) -> Result<DisputeRow, String> {
        let (Some(opened), Some(opened_at), Some(updated_at)) =
            (&d.opened, d.opened_at, d.updated_at)
        else {
            return Err(format!(
                "dispute stream {id} has events but no DisputeOpened before them"
            ));
        };
        let count = |n: usize| i32::try_from(n).map_err(|_| format!("dispute {id} is too long"));
        let r = d.resolution.as_ref();
        Ok(DisputeRow {
            dispute_id: opened.dispute_id,
            payment_id: opened.payment_id,
            version: d.version,
            status: d.status.as_str().to_owned(),
            priority: enum_name(&d.priority),
            priority_rank: rank(d.priority),
            admin: d.admin.as_ref().map(reference_key),
            opened_by: reference_key(&opened.opened_by),
            opened_by_role: enum_name(&opened.role),
            reason: enum_name(&opened.reason),
            description: opened.description.clone(),
            initial_priority: enum_name(&opened.priority),
            outcome: r.map(|r| enum_name(&r.outcome)),
            resolution_seller_amount: r.and_then(|r| r.seller_amount),
            resolution_buyer_amount: r.and_then(|r| r.buyer_amount),
            resolution_fees: r.map(|r| fee_total(&r.fees, FeeKind::Fee)),
            resolution_aml_fees: r.map(|r| fee_total(&r.fees, FeeKind::AmlFee)),
            resolution_note: r.and_then(|r| r.note.clone()),
            evidence_count: count(d.evidence.len())?,
            message_count: count(d.messages.len())?,
            opened_at,
            updated_at,
            ended_at: d.ended_at,
            last_position,
        })
    }
}

/// What one batch writes.
#[derive(Default)]
struct Writes {
    evidence: Vec<EvidenceRow>,
    messages: Vec<MessageRow>,
    timeline: Vec<TimelineRow>,
}

/// Applies a batch to the disputes tables.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    side: Side,
    events: &[FeedEvent],
) -> Result<(), ProjectionError> {
    let ours: Vec<&FeedEvent> = events
        .iter()
        .filter(|e| e.stream_type == STREAM_TYPE)
        .collect();
    if ours.is_empty() {
        return Ok(());
    }
    let halt = |reason: String| ProjectionError::halt(NAME, reason);
    let t = |base: &str| Projection::table(base, side);
    let mut ids: Vec<Uuid> = ours.iter().map(|e| e.stream_id).collect();
    ids.sort_unstable();
    ids.dedup();

    let before: Vec<DisputeRow> = sqlx::query_as(&format!(
        "SELECT * FROM {} WHERE dispute_id = ANY($1)",
        t("disputes")
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut children: HashMap<(Uuid, bool), Vec<Uuid>> = HashMap::new();
    let listed: Vec<(Uuid, bool, i32, Uuid)> = sqlx::query_as(&format!(
        "SELECT dispute_id, true AS evidence, seq, evidence_id FROM {} WHERE dispute_id = ANY($1) \
         UNION ALL \
         SELECT dispute_id, false, seq, message_id FROM {} WHERE dispute_id = ANY($1) \
         ORDER BY 1, 2, 3",
        t("dispute_evidence"),
        t("dispute_messages")
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for (dispute, is_evidence, _, id) in listed {
        children.entry((dispute, is_evidence)).or_default().push(id);
    }
    let mut states: HashMap<Uuid, (Dispute, i64)> = HashMap::with_capacity(ids.len());
    for row in &before {
        let evidence = children.remove(&(row.dispute_id, true)).unwrap_or_default();
        let messages = children
            .remove(&(row.dispute_id, false))
            .unwrap_or_default();
        let state = row.to_state(evidence, messages).map_err(&halt)?;
        states.insert(row.dispute_id, (state, row.last_position));
    }

    let mut writes = Writes::default();
    for e in &ours {
        let (dispute, last_position) = states.entry(e.stream_id).or_default();
        if e.version != dispute.version + 1 {
            return Err(halt(format!(
                "dispute {} is at version {} but the next event in the feed (position {}) has version {}",
                e.stream_id, dispute.version, e.position, e.version
            )));
        }
        let event =
            DisputeEvent::decode(&e.event_type, e.schema_version, &e.payload).map_err(|err| {
                halt(format!(
                    "event at position {} does not decode: {err}",
                    e.position
                ))
            })?;
        dispute.apply(&event, e.occurred_at);
        dispute.version = e.version;
        *last_position = e.position;
        record(&mut writes, e, &event, dispute).map_err(&halt)?;
    }

    let mut after = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some((dispute, last)) = states.get(id) {
            after.push(DisputeRow::from_state(*id, dispute, *last).map_err(&halt)?);
        }
    }
    let disputes = t("disputes");
    sqlx::query(&format!(
        "DELETE FROM {disputes} WHERE dispute_id = ANY($1)"
    ))
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    insert(conn, &disputes, &after).await?;
    insert(conn, &t("dispute_evidence"), &writes.evidence).await?;
    insert(conn, &t("dispute_messages"), &writes.messages).await?;
    insert(conn, &t("dispute_timeline"), &writes.timeline).await?;
    Ok(())
}

/// The child rows one event adds. Live events add one timeline row (entry 0); an
/// imported dispute adds its legacy evidence, messages and timeline entries (entries
/// 0..n, each with its own time) and then the row of the import itself.
fn record(
    writes: &mut Writes,
    e: &FeedEvent,
    event: &DisputeEvent,
    d: &Dispute,
) -> Result<(), String> {
    let int =
        |n: usize| i32::try_from(n).map_err(|_| format!("dispute {} is too long", e.stream_id));
    let mut note = None;
    let mut entry = 0;
    match event {
        DisputeEvent::EvidenceSubmitted(x) => writes.evidence.push(EvidenceRow {
            dispute_id: e.stream_id,
            seq: int(d.evidence.len())?,
            evidence_id: x.evidence_id,
            submitted_by: reference_key(&x.submitted_by),
            evidence_type: enum_name(&x.evidence_type),
            url: x.url.clone(),
            description: x.description.clone(),
            submitted_at: e.occurred_at,
            position: e.position,
        }),
        DisputeEvent::MessagePosted(x) => writes.messages.push(MessageRow {
            dispute_id: e.stream_id,
            seq: int(d.messages.len())?,
            message_id: x.message_id,
            author: reference_key(&x.author),
            author_role: enum_name(&x.author_role),
            body: x.body.clone(),
            attachments: x.attachments.clone(),
            posted_at: e.occurred_at,
            position: e.position,
        }),
        DisputeEvent::StatusChanged(x) => note.clone_from(&x.note),
        DisputeEvent::DisputeResolved(x) => note.clone_from(&x.note),
        DisputeEvent::DisputeImported(x) => {
            for (i, v) in x.evidence.iter().enumerate() {
                writes.evidence.push(EvidenceRow {
                    dispute_id: e.stream_id,
                    seq: int(i + 1)?,
                    evidence_id: v.evidence_id,
                    submitted_by: reference_key(&v.submitted_by),
                    evidence_type: enum_name(&v.evidence_type),
                    url: v.url.clone(),
                    description: v.description.clone(),
                    submitted_at: v.submitted_at,
                    position: e.position,
                });
            }
            for (i, m) in x.messages.iter().enumerate() {
                writes.messages.push(MessageRow {
                    dispute_id: e.stream_id,
                    seq: int(i + 1)?,
                    message_id: m.message_id,
                    author: reference_key(&m.author),
                    author_role: enum_name(&m.author_role),
                    body: m.body.clone(),
                    attachments: m.attachments.clone(),
                    posted_at: m.posted_at,
                    position: e.position,
                });
            }
            for t in &x.timeline {
                writes.timeline.push(TimelineRow {
                    dispute_id: e.stream_id,
                    version: e.version,
                    entry,
                    position: e.position,
                    event_type: "LegacyTimelineEntry".into(),
                    occurred_at: t.at,
                    actor_name: t.by.as_ref().map(reference_key),
                    actor_role: None,
                    status: t.status.as_str().to_owned(),
                    priority: enum_name(&d.priority),
                    admin: d.admin.as_ref().map(reference_key),
                    note: t.note.clone(),
                });
                entry += 1;
            }
        }
        _ => {}
    }
    writes.timeline.push(TimelineRow {
        dispute_id: e.stream_id,
        version: e.version,
        entry,
        position: e.position,
        event_type: e.event_type.clone(),
        occurred_at: e.occurred_at,
        actor_name: e.actor_name.clone(),
        actor_role: e.actor_role.clone(),
        status: d.status.as_str().to_owned(),
        priority: enum_name(&d.priority),
        admin: d.admin.as_ref().map(reference_key),
        note,
    });
    Ok(())
}

/// The most JSON one insert statement carries. PostgreSQL refuses a jsonb array past
/// 256 MB, and a dispute's messages may hold a megabyte each (legacy ones do): a batch of
/// a thousand such events in one statement failed, and failed again on every retry.
pub const STATEMENT_BYTES: usize = 32 * 1024 * 1024;

/// Inserts `rows` into `table`, as many statements as [`STATEMENT_BYTES`] requires.
async fn insert<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    rows: &[T],
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {table} SELECT * FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb)"
    );
    let mut chunk = String::from("[");
    for row in rows {
        let json = serde_json::to_string(row).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        if chunk.len() > 1 && chunk.len() + json.len() >= STATEMENT_BYTES {
            chunk.push(']');
            sqlx::query(&sql).bind(&chunk).execute(&mut *conn).await?;
            chunk.clear();
            chunk.push('[');
        }
        if chunk.len() > 1 {
            chunk.push(',');
        }
        chunk.push_str(&json);
    }
    if chunk.len() > 1 {
        chunk.push(']');
        sqlx::query(&sql).bind(&chunk).execute(&mut *conn).await?;
    }
    Ok(())
}
