//! `GET /openapi.json`: the OpenAPI document generated from the handlers and bodies.

use axum::Json;
use utoipa::OpenApi;

use super::{adjustments, disputes, dto, events, legacy, payments};
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
        legacy::lookup,
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
        legacy::LegacyId,
    ))
)]
pub struct ApiDoc;

/// Serves the document.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.merge(<super::queries::QueriesDoc as OpenApi>::openapi());
    Json(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the router (`super::app` and `queries::routes`), by method.
    const ROUTES: &[(&str, &str)] = &[
        ("post", "/v1/payments"),
        ("get", "/v1/payments"),
        ("get", "/v1/payments/{id}"),
        ("post", "/v1/payments/{id}/deposits"),
        ("post", "/v1/payments/{id}/releases"),
        ("post", "/v1/payments/{id}/refunds"),
        ("post", "/v1/payments/{id}/payouts"),
        ("post", "/v1/payments/{id}/cancellation"),
        ("get", "/v1/payments/{id}/events"),
        ("post", "/v1/disputes"),
        ("get", "/v1/disputes"),
        ("get", "/v1/disputes/{id}"),
        ("post", "/v1/disputes/{id}/evidence"),
        ("post", "/v1/disputes/{id}/messages"),
        ("post", "/v1/disputes/{id}/assignment"),
        ("post", "/v1/disputes/{id}/priority"),
        ("post", "/v1/disputes/{id}/status"),
        ("post", "/v1/disputes/{id}/resolution"),
        ("post", "/v1/adjustments"),
        ("get", "/v1/events"),
        ("get", "/v1/accounts"),
        ("get", "/v1/accounts/{account}"),
        ("get", "/v1/reconciliation/buckets"),
        ("get", "/v1/reconciliation/trial-balance"),
        ("get", "/v1/legacy/{collection}/{object_id}"),
    ];

    #[tokio::test]
    async fn the_document_describes_every_v1_route() {
        let axum::Json(doc) = serve().await;
        let doc = serde_json::to_value(doc).unwrap_or_default();
        let missing: Vec<_> = ROUTES
            .iter()
            .filter(|(method, path)| !doc["paths"][path][method].is_object())
            .collect();
        assert!(missing.is_empty(), "not in /openapi.json: {missing:?}");
        let described = doc["paths"].as_object().map_or(0, |p| {
            p.iter()
                .filter(|(path, _)| path.starts_with("/v1/"))
                .map(|(_, ops)| ops.as_object().map_or(0, serde_json::Map::len))
                .sum::<usize>()
        });
        assert_eq!(
            described,
            ROUTES.len(),
            "a described route the router lacks"
        );
    }
}
