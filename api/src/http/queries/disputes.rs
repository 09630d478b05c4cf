//! `GET /v1/disputes` (the admin queue, most urgent first) and `GET /v1/disputes/{id}`
//! (with evidence, messages and timeline): from the `finance.dispute*` views.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use projections::Projection;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{
    cursor_in, cursor_out, money_opt, page_size, query, reference, reference_param, wait_projected,
};
use crate::auth::Role;
use crate::http::dto;
use crate::http::extract::Caller;
use crate::http::problem::ApiError;
use crate::http::AppState;

const READERS: &[Role] = &[Role::Coordinator, Role::Admin, Role::Finance];
const STATUSES: &[&str] = &[
    "open",
    "under_review",
    "awaiting_buyer",
    "awaiting_seller",
    "resolved",
    "rejected",
    "withdrawn",
    "closed",
];
const ACTIVE: &[&str] = &["open", "under_review", "awaiting_buyer", "awaiting_seller"];
const PRIORITIES: &[&str] = &["low", "medium", "high", "urgent"];

#[derive(Debug, sqlx::FromRow)]
struct Row {
    dispute_id: Uuid,
    payment_id: Uuid,
    status: String,
    priority: String,
    priority_rank: i16,
    admin: Option<String>,
    opened_by: String,
    opened_by_role: String,
    reason: String,
    evidence_count: i32,
    message_count: i32,
    opened_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    version: i64,
}

const COLUMNS: &str = "dispute_id, payment_id, status, priority, priority_rank, admin, \
    opened_by, opened_by_role, reason, evidence_count, message_count, opened_at, updated_at, \
    ended_at, version";

/// A dispute in the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeSummary {
    /// The dispute's id.
    pub id: Uuid,
    /// The disputed payment.
    pub payment_id: Uuid,
    /// Status.
    pub status: String,
    /// Priority.
    pub priority: String,
    /// The assigned admin.
    #[schema(value_type = Option<Object>)]
    pub admin: Option<Value>,
    /// Who opened it.
    #[schema(value_type = Object)]
    pub opened_by: Value,
    /// As which party.
    pub role: String,
    /// Why.
    pub reason: String,
    /// Evidence submitted.
    pub evidence_count: i32,
    /// Messages posted.
    pub message_count: i32,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Its last event.
    pub updated_at: DateTime<Utc>,
    /// Ended (resolved, rejected, withdrawn, closed).
    pub ended_at: Option<DateTime<Utc>>,
    /// The stream's version.
    pub stream_version: i64,
}

impl From<Row> for DisputeSummary {
    fn from(r: Row) -> Self {
        DisputeSummary {
            id: r.dispute_id,
            payment_id: r.payment_id,
            status: r.status,
            priority: r.priority,
            admin: r.admin.as_deref().map(reference),
            opened_by: reference(&r.opened_by),
            role: r.opened_by_role,
            reason: r.reason,
            evidence_count: r.evidence_count,
            message_count: r.message_count,
            opened_at: r.opened_at,
            updated_at: r.updated_at,
            ended_at: r.ended_at,
            stream_version: r.version,
        }
    }
}

/// Filters of the queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    /// Comma-separated statuses, or `all` (default: the active ones: open, under_review,
    /// awaiting_buyer, awaiting_seller).
    pub status: Option<String>,
    /// Comma-separated priorities (default: all).
    pub priority: Option<String>,
    /// Only disputes assigned to this admin (a UUID or `ext:<reference>`), or `none` for
    /// unassigned ones.
    pub admin: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// A page of the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeQueue {
    /// Most urgent first, then oldest first.
    pub disputes: Vec<DisputeSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn list(
    field: &str,
    text: Option<&str>,
    known: &[&str],
    default: &[&str],
) -> Result<Vec<String>, ApiError> {
    match text.map(str::trim) {
        None | Some("") => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        Some("all") => Ok(known.iter().map(|s| (*s).to_owned()).collect()),
        Some(t) => t
            .split(',')
            .map(|s| {
                let s = s.trim();
                if known.contains(&s) {
                    Ok(s.to_owned())
                } else {
                    Err(ApiError::validation(format!(
                        "{field} {s:?} is not one of {}",
                        known.join(", ")
                    )))
                }
            })
            .collect(),
    }
}

/// The admin queue: most urgent first, then oldest first.
#[utoipa::path(get, path = "/v1/disputes", tag = "queries", params(QueueQuery),
    responses((status = 200, body = DisputeQueue), (status = 400), (status = 503)))]
pub async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Json<DisputeQueue>, ApiError> {
    caller.require(READERS, "read disputes")?;
    let q = query(q)?;
    let limit = page_size(q.limit)?;
    let statuses = list("status", q.status.as_deref(), STATUSES, ACTIVE)?;
    let priorities = list("priority", q.priority.as_deref(), PRIORITIES, PRIORITIES)?;
    let (admin, unassigned) = match q.admin.as_deref().map(str::trim) {
        None | Some("") => (None, false),
        Some("none") => (None, true),
        Some(a) => (Some(reference_param("admin", a)?), false),
    };
    let after: Option<(i16, DateTime<Utc>, Uuid)> = cursor_in(q.cursor.as_deref())?;
    wait_projected(&state, &[Projection::Disputes], q.min_position).await?;
    let mut rows = queue_rows(
        &state.pool,
        &statuses,
        &priorities,
        admin,
        unassigned,
        after,
        limit + 1,
    )
    .await?;
    let n = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > n;
    rows.truncate(n);
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| cursor_out(&(r.priority_rank, r.opened_at, r.dispute_id)))
        })
        .flatten();
    Ok(Json(DisputeQueue {
        disputes: rows.into_iter().map(DisputeSummary::from).collect(),
        next_cursor,
    }))
}

/// One statement of the queue: `limit` disputes among `statuses` and `priorities`, most
/// urgent first, then oldest first, after the cursor `after`.
async fn queue_rows(
    pool: &sqlx::PgPool,
    statuses: &[String],
    priorities: &[String],
    admin: Option<String>,
    unassigned: bool,
    after: Option<(i16, DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM finance.disputes \
         WHERE status = ANY($1) AND priority = ANY($2) \
           AND ($3::text IS NULL OR admin = $3) AND (NOT $4 OR admin IS NULL) \
           AND ($5::int2 IS NULL OR (-priority_rank, opened_at, dispute_id) > (-$5, $6, $7)) \
         ORDER BY priority_rank DESC, opened_at, dispute_id LIMIT $8"
    ))
    .bind(statuses)
    .bind(priorities)
    .bind(admin)
    .bind(unassigned)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(after.map(|a| a.2))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The first page of the admin queue as `GET /v1/disputes` reads it with no filters (the
/// active statuses, every priority, 50 a page): the same statement, for `bench rebuild`.
/// Returns the disputes read.
///
/// # Errors
/// A database error.
pub(crate) async fn default_queue_page(pool: &sqlx::PgPool) -> Result<usize, sqlx::Error> {
    let statuses: Vec<String> = ACTIVE.iter().map(|s| (*s).to_owned()).collect();
    let priorities: Vec<String> = PRIORITIES.iter().map(|s| (*s).to_owned()).collect();
    let limit = page_size(None).unwrap_or(50);
    let rows = queue_rows(pool, &statuses, &priorities, None, false, None, limit + 1).await?;
    Ok(rows.len())
}

/// A piece of evidence.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvidenceView {
    /// Its id.
    pub id: Uuid,
    /// Who submitted it.
    #[schema(value_type = Object)]
    pub submitted_by: Value,
    /// `image`, `document`, `link`, `text`.
    #[serde(rename = "type")]
    pub evidence_type: String,
    /// Where it is.
    pub url: Option<String>,
    /// What it shows.
    pub description: Option<String>,
    /// When.
    pub submitted_at: DateTime<Utc>,
}

/// A message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// Its id.
    pub id: Uuid,
    /// Who wrote it.
    #[schema(value_type = Object)]
    pub author: Value,
    /// As whom.
    pub author_role: String,
    /// The text.
    pub body: String,
    /// Attachments.
    pub attachments: Vec<String>,
    /// When.
    pub posted_at: DateTime<Utc>,
}

/// One step of a dispute's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    /// What happened (the event type; `LegacyTimelineEntry` for imported history).
    pub event: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (the token's name, or the legacy user).
    pub actor: Option<String>,
    /// As which role.
    pub actor_role: Option<String>,
    /// The status after it.
    pub status: String,
    /// The priority after it.
    pub priority: String,
    /// The note given.
    pub note: Option<String>,
    /// The event's global position.
    pub position: i64,
}

/// A dispute with everything it holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    /// The summary.
    #[serde(flatten)]
    pub summary: DisputeSummary,
    /// The party's account of it.
    pub description: String,
    /// The resolution: outcome, amounts and note.
    #[schema(value_type = Option<Object>)]
    pub resolution: Option<Value>,
    /// Evidence, in order.
    pub evidence: Vec<EvidenceView>,
    /// Messages, in order.
    pub messages: Vec<MessageView>,
    /// Every step, in order.
    pub timeline: Vec<TimelineView>,
}

/// Read-your-writes only.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Detail {
    description: String,
    outcome: Option<String>,
    resolution_seller_amount: Option<Decimal>,
    resolution_buyer_amount: Option<Decimal>,
    resolution_fees: Option<Decimal>,
    resolution_aml_fees: Option<Decimal>,
    resolution_note: Option<String>,
    asset: Option<String>,
}

#[derive(sqlx::FromRow)]
struct EvidenceRow {
    evidence_id: Uuid,
    submitted_by: String,
    evidence_type: String,
    url: Option<String>,
    description: Option<String>,
    submitted_at: DateTime<Utc>,
}

impl From<EvidenceRow> for EvidenceView {
    fn from(r: EvidenceRow) -> Self {
        EvidenceView {
            id: r.evidence_id,
            submitted_by: reference(&r.submitted_by),
            evidence_type: r.evidence_type,
            url: r.url,
            description: r.description,
            submitted_at: r.submitted_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    message_id: Uuid,
    author: String,
    author_role: String,
    body: String,
    attachments: Vec<String>,
    posted_at: DateTime<Utc>,
}

impl From<MessageRow> for MessageView {
    fn from(r: MessageRow) -> Self {
        MessageView {
            id: r.message_id,
            author: reference(&r.author),
            author_role: r.author_role,
            body: r.body,
            attachments: r.attachments,
            posted_at: r.posted_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TimelineRow {
    event_type: String,
    occurred_at: DateTime<Utc>,
    actor_name: Option<String>,
    actor_role: Option<String>,
    status: String,
    priority: String,
    note: Option<String>,
    position: i64,
}

impl From<TimelineRow> for TimelineView {
    fn from(r: TimelineRow) -> Self {
        TimelineView {
            event: r.event_type,
            at: r.occurred_at,
            actor: r.actor_name,
            actor_role: r.actor_role,
            status: r.status,
            priority: r.priority,
            note: r.note,
            position: r.position,
        }
    }
}

/// A dispute with its evidence, messages and timeline.
#[utoipa::path(get, operation_id = "get_dispute", path = "/v1/disputes/{id}", tag = "queries",
    params(("id" = Uuid, Path, description = "dispute id"), OneQuery),
    responses((status = 200, body = DisputeView), (status = 404), (status = 503)))]
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<OneQuery>, QueryRejection>,
) -> Result<Json<DisputeView>, ApiError> {
    caller.require(READERS, "read disputes")?;
    let q = query(q)?;
    let id = dto::path_id(&id)?;
    wait_projected(
        &state,
        &[Projection::Disputes, Projection::Payments],
        q.min_position,
    )
    .await?;
    // One snapshot for the dispute and its children.
    let mut tx = state.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM finance.disputes WHERE dispute_id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no dispute {id}")))?;
    let d: Detail = sqlx::query_as(
        "SELECT d.description, d.outcome, d.resolution_seller_amount, d.resolution_buyer_amount, \
                d.resolution_fees, d.resolution_aml_fees, d.resolution_note, p.asset \
         FROM finance.disputes d LEFT JOIN finance.payments p USING (payment_id) \
         WHERE d.dispute_id = $1",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    let evidence: Vec<EvidenceRow> = sqlx::query_as(
        "SELECT evidence_id, submitted_by, evidence_type, url, description, submitted_at \
         FROM finance.dispute_evidence WHERE dispute_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let messages: Vec<MessageRow> = sqlx::query_as(
        "SELECT message_id, author, author_role, body, attachments, posted_at \
         FROM finance.dispute_messages WHERE dispute_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let timeline: Vec<TimelineRow> = sqlx::query_as(
        "SELECT event_type, occurred_at, actor_name, actor_role, status, priority, note, position \
         FROM finance.dispute_timeline WHERE dispute_id = $1 ORDER BY version, entry",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let asset = d.asset.unwrap_or_default();
    let resolution = d.outcome.map(|outcome| {
        serde_json::json!({
            "outcome": outcome,
            "seller_amount": money_opt(&asset, d.resolution_seller_amount),
            "buyer_amount": money_opt(&asset, d.resolution_buyer_amount),
            "fees": money_opt(&asset, d.resolution_fees),
            "aml_fees": money_opt(&asset, d.resolution_aml_fees),
            "note": d.resolution_note,
        })
    });
    Ok(Json(DisputeView {
        summary: row.into(),
        description: d.description,
        resolution,
        evidence: evidence.into_iter().map(EvidenceView::from).collect(),
        messages: messages.into_iter().map(MessageView::from).collect(),
        timeline: timeline.into_iter().map(TimelineView::from).collect(),
    }))
}
