//! Reads straight from the event store: a payment's audit trail, and the global feed in
//! feed order for downstream consumers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use ledger::event::RecordedEvent;
use ledger::store;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::dto;
use super::extract::Caller;
use super::problem::ApiError;
use super::queries::check_min_position;
use super::AppState;
use crate::auth::Role;

/// A posting as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct PostingView {
    /// Account name.
    pub account: String,
    /// Asset code.
    pub asset: String,
    /// Signed amount at the asset's scale.
    pub amount: String,
}

/// An event as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Global position.
    pub position: i64,
    /// Stream id.
    pub stream_id: Uuid,
    /// Stream type.
    pub stream_type: String,
    /// Version in the stream.
    pub stream_version: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Event type.
    pub event_type: String,
    /// Payload shape version.
    pub schema_version: i32,
    /// The data.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Actor, correlation, causation, source.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// Store time.
    pub recorded_at: DateTime<Utc>,
    /// Money moved.
    pub postings: Vec<PostingView>,
    /// This event's hash (hex).
    pub hash: String,
}

impl From<RecordedEvent> for EventView {
    fn from(e: RecordedEvent) -> Self {
        EventView {
            position: e.position,
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            stream_version: e.version,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            occurred_at: e.occurred_at,
            recorded_at: e.recorded_at,
            postings: e
                .postings
                .into_iter()
                .map(|p| PostingView {
                    account: p.account.to_string(),
                    asset: p.asset.code().to_owned(),
                    amount: p.asset.format(p.amount),
                })
                .collect(),
            hash: hex::encode(e.hash),
        }
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    /// The events, in order.
    pub events: Vec<EventView>,
    /// Pass as `after` for the next page (the last position handed out).
    pub next_after: i64,
}

/// The query of a read straight from the store (or the importer's id map): nothing but
/// `min_position`, which every query takes (`contract.md`). It is met as soon as it is
/// asked: a read that is no projection's sees every committed event.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StoreReadQuery {
    /// Accepted for uniformity with the projections' reads (0 or more): this read sees
    /// every committed event.
    pub min_position: Option<i64>,
}

impl StoreReadQuery {
    /// The query checked: unknown parameters and a negative position are refused.
    ///
    /// # Errors
    /// `validation_failed`.
    pub fn checked(q: Result<Query<Self>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(q) = q.map_err(|e| ApiError::validation(e.body_text()))?;
        check_min_position(q.min_position)?;
        Ok(q)
    }
}

/// A payment's audit trail, in stream order.
#[utoipa::path(get, path = "/v1/payments/{id}/events", tag = "payments",
    params(("id" = Uuid, Path, description = "payment id"), StoreReadQuery),
    responses((status = 200, body = EventPage), (status = 400), (status = 404)))]
pub async fn payment_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<StoreReadQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(
        &[Role::Coordinator, Role::Admin, Role::Finance],
        "read payments",
    )?;
    StoreReadQuery::checked(q)?;
    let id = dto::path_id(&id)?;
    let events = store::read_stream(&state.pool, id).await?;
    if events
        .first()
        .is_none_or(|e| e.stream_type != ledger::payment::STREAM_TYPE)
    {
        return Err(ApiError::NotFound(format!("no payment {id}")));
    }
    let next_after = events.last().map_or(0, |e| e.position);
    Ok(Json(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}

/// Query of the feed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// After the event at this position, in feed order (0: from the start).
    pub after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Accepted for uniformity with other reads; the feed is read from the store itself.
    pub min_position: Option<i64>,
}

/// The global feed in feed order: (committing transaction, position), only once every
/// transaction that could come before has ended.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(FeedQuery),
    responses((status = 200, body = EventPage), (status = 400)))]
pub async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(&[Role::Finance, Role::Admin], "read the event feed")?;
    let Query(q) = query.map_err(|e| ApiError::validation(e.body_text()))?;
    check_min_position(q.min_position)?;
    let after = q.after.unwrap_or(0);
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 1000"));
    }
    let from = store::feed_position_of(&state.pool, after)
        .await?
        .ok_or_else(|| ApiError::validation(format!("there is no event at position {after}")))?;
    let events = store::read_feed(&state.pool, from, limit).await?;
    let next_after = events.last().map_or(after, |e| e.position);
    Ok(Json(EventPage {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}
