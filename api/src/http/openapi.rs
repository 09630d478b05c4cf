//! `GET /openapi.json`: the OpenAPI document generated from the handlers and bodies.

use axum::Json;
use utoipa::OpenApi;

use super::{adjustments, disputes, dto, events, payments};
use crate::commands::Accepted;

/// The API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "escrow-ledger",
        description = "The event-sourced escrow ledger's HTTP API. Every request but /healthz, /readyz and /metrics carries `Authorization: Bearer <token>`; errors are RFC 9457 problems with a `code`."
    ),
    paths(
        payments::create,
        payments::deposit,
        payments::release,
        payments::refund,
        payments::payout,
        payments::cancel,
        disputes::open,
        disputes::evidence,
        disputes::message,
        disputes::assign,
        disputes::priority,
        disputes::status,
        disputes::resolve,
        adjustments::adjust,
        events::payment_events,
        events::feed,
    ),
    components(schemas(
        Accepted,
        dto::FeeBody,
        dto::CreatePaymentBody,
        dto::DepositBody,
        dto::MoveBody,
        dto::PayoutBody,
        dto::CancelBody,
        dto::OpenDisputeBody,
        dto::EvidenceBody,
        dto::MessageBody,
        dto::AssignBody,
        dto::PriorityBody,
        dto::StatusBody,
        dto::ResolutionBody,
        dto::AdjustmentBody,
        events::EventView,
        events::EventPage,
        events::PostingView,
    ))
)]
pub struct ApiDoc;

/// Serves the document.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(<super::queries::QueriesDoc as OpenApi>::openapi());
    Json(doc)
}
