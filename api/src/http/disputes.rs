//! `POST /v1/disputes...`: parties open disputes and add evidence and messages;
//! administrators assign, prioritize, change status and resolve.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use ledger::dispute::{OpenDispute, PostMessage, Priority, Resolve, SubmitEvidence};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::dto::{
    self, AssignBody, EvidenceBody, MessageBody, OpenDisputeBody, PriorityBody, ResolutionBody,
    StatusBody,
};
use super::extract::{Body, Caller, CommandHeaders};
use super::problem::ApiError;
use super::{run_command, AppState};
use crate::auth::Role;
use crate::commands::{Accepted, Command, DisputeCommand};

const PARTIES: &[Role] = &[Role::Coordinator, Role::Admin];
const ADMIN: &[Role] = &[Role::Admin];

async fn run(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    path: &str,
    body: &Body,
    cmd: DisputeCommand,
) -> Result<Response, ApiError> {
    let h = CommandHeaders::parse(headers)?;
    run_command(
        state,
        caller,
        &h,
        &Method::POST,
        path,
        body,
        Command::Dispute(cmd),
    )
    .await
}

/// Opens a dispute and freezes the payment's escrow.
#[utoipa::path(post, path = "/v1/disputes", request_body = OpenDisputeBody, tag = "disputes",
    responses((status = 201, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(PARTIES, "open disputes")?;
    let b: OpenDisputeBody = body.json()?;
    dto::required_text("description", &b.description)?;
    let cmd = OpenDispute {
        dispute_id: Uuid::new_v4(),
        payment_id: b.payment_id,
        opened_by: b.opened_by,
        role: b.role,
        reason: b.reason,
        description: b.description,
        priority: Priority::Medium,
    };
    run(
        &state,
        &caller,
        &headers,
        "/v1/disputes",
        &body,
        DisputeCommand::Open(cmd),
    )
    .await
}

/// Adds evidence.
#[utoipa::path(post, path = "/v1/disputes/{id}/evidence", request_body = EvidenceBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn evidence(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(PARTIES, "submit evidence")?;
    let id = dto::path_id(&id)?;
    let b: EvidenceBody = body.json()?;
    let cmd = SubmitEvidence {
        evidence_id: Uuid::new_v4(),
        submitted_by: b.submitted_by,
        evidence_type: b.evidence_type,
        url: b.url,
        description: b.description,
    };
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/evidence"),
        &body,
        DisputeCommand::Evidence(id, cmd),
    )
    .await
}

/// Posts a message.
#[utoipa::path(post, path = "/v1/disputes/{id}/messages", request_body = MessageBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(PARTIES, "post messages")?;
    let id = dto::path_id(&id)?;
    let b: MessageBody = body.json()?;
    let cmd = PostMessage {
        message_id: Uuid::new_v4(),
        author: b.author,
        author_role: b.author_role,
        body: b.body,
        attachments: b.attachments,
    };
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/messages"),
        &body,
        DisputeCommand::Message(id, cmd),
    )
    .await
}

/// Assigns an administrator.
#[utoipa::path(post, path = "/v1/disputes/{id}/assignment", request_body = AssignBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 403), (status = 404), (status = 422)))]
pub async fn assign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(ADMIN, "assign disputes")?;
    let id = dto::path_id(&id)?;
    let b: AssignBody = body.json()?;
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/assignment"),
        &body,
        DisputeCommand::Assign(id, b.admin),
    )
    .await
}

/// Sets the priority.
#[utoipa::path(post, path = "/v1/disputes/{id}/priority", request_body = PriorityBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 403), (status = 404), (status = 422)))]
pub async fn priority(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(ADMIN, "set dispute priorities")?;
    let id = dto::path_id(&id)?;
    let b: PriorityBody = body.json()?;
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/priority"),
        &body,
        DisputeCommand::Priority(id, b.priority),
    )
    .await
}

/// Changes the status; `rejected`, `withdrawn` and `closed` end the dispute and unfreeze.
#[utoipa::path(post, path = "/v1/disputes/{id}/status", request_body = StatusBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 403), (status = 404), (status = 422)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(ADMIN, "change dispute statuses")?;
    let id = dto::path_id(&id)?;
    let b: StatusBody = body.json()?;
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/status"),
        &body,
        DisputeCommand::Status(id, b.status, b.note),
    )
    .await
}

fn part(field: &str, text: Option<&str>) -> Result<Option<Decimal>, ApiError> {
    text.map(|t| {
        let v = ledger::money::parse_decimal_exact(t)
            .map_err(|e| ApiError::validation(format!("{field}: {e}")))?;
        if v < Decimal::ZERO {
            return Err(ApiError::validation(format!(
                "{field} must not be negative"
            )));
        }
        Ok(v)
    })
    .transpose()
}

/// Resolves the dispute and moves the money it decides, in one transaction.
#[utoipa::path(post, path = "/v1/disputes/{id}/resolution", request_body = ResolutionBody, tag = "disputes",
    params(("id" = Uuid, Path, description = "dispute id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 403), (status = 404), (status = 422)))]
pub async fn resolve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(ADMIN, "resolve disputes")?;
    let id = dto::path_id(&id)?;
    // A resolution moves money: the key is checked before the body, as for the payment
    // commands, so a request without one is told so whatever its body.
    CommandHeaders::parse(&headers)?.require_key()?;
    let b: ResolutionBody = body.json()?;
    let cmd = Resolve {
        outcome: b.outcome,
        seller_amount: part("seller_amount", b.seller_amount.as_deref())?,
        buyer_amount: part("buyer_amount", b.buyer_amount.as_deref())?,
        fees: dto::fees(&b.fees)?,
        note: b.note,
    };
    run(
        &state,
        &caller,
        &headers,
        &format!("/v1/disputes/{id}/resolution"),
        &body,
        DisputeCommand::Resolve(id, cmd),
    )
    .await
}
