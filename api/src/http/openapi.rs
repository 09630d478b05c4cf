//! `GET /openapi.json`: the OpenAPI document generated from the handlers and bodies.

use axum::Json;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Type};
use utoipa::{Modify, OpenApi};

use super::{adjustments, disputes, dto, events, legacy, payments};
use crate::commands::Accepted;

/// The commands that move money, which refuse a request without `Idempotency-Key`
/// (`validation_failed`); every other command accepts one. A test over HTTP checks that
/// the server requires exactly these.
pub const KEY_REQUIRED: &[&str] = &[
    "/v1/payments/{id}/deposits",
    "/v1/payments/{id}/releases",
    "/v1/payments/{id}/refunds",
    "/v1/payments/{id}/payouts",
    "/v1/disputes/{id}/resolution",
    "/v1/adjustments",
];

/// What the command headers mean, as the document says it.
const IDEMPOTENCY_KEY: &str = "1 to 255 characters. The same key with the same body returns the \
first successful response again with no second effect; with another body it is refused \
(`idempotency_key_reused`). A refused command is not remembered.";
const IF_MATCH: &str = "`\"<stream version>\"`: refuse with 412 `version_conflict` if the \
stream has moved on. Without it, a lost race is decided again on fresh state.";
const CORRELATION_ID: &str = "Recorded as `correlation_id` in the metadata of every event the \
command writes. A UUID is kept as given; any other text is recorded as the UUID v5 of that \
text in the URL namespace (the same text always gives the same id); absent, a new UUID v4.";
const REQUEST_ID: &str = "Echoed in the response (one is made when absent). When it is a UUID \
(always, when the server made it), it is recorded as `causation_id` in the metadata of the \
events the command writes; otherwise `causation_id` is null.";

/// Adds to the generated document what the handlers' annotations do not carry: the bearer
/// security scheme, the command headers on every command, and the problem body of every
/// error response.
struct Contract;

fn header(name: &str, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

fn problem_bodies(op: &mut Operation) {
    for (status, response) in &mut op.responses.responses {
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        if let RefOr::T(response) = response {
            response.content.insert(
                "application/problem+json".to_owned(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
        }
    }
}

impl Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <token>`; the token's role (coordinator, admin, finance) decides what it may do",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        for (path, item) in &mut openapi.paths.paths {
            if let Some(op) = item.post.as_mut() {
                let params = op.parameters.get_or_insert_with(Vec::new);
                params.push(header(
                    "Idempotency-Key",
                    KEY_REQUIRED.contains(&path.as_str()),
                    IDEMPOTENCY_KEY,
                ));
                params.push(header("If-Match", false, IF_MATCH));
                params.push(header("X-Correlation-Id", false, CORRELATION_ID));
                params.push(header("X-Request-Id", false, REQUEST_ID));
            }
            for (op, command) in [(item.get.as_mut(), false), (item.post.as_mut(), true)] {
                if let Some(op) = op {
                    common_responses(op, command);
                    problem_bodies(op);
                }
            }
        }
        for (path, what) in [
            ("/healthz", "The process answers (no token)."),
            (
                "/readyz",
                "The database answers and every migration is applied: 200, else 503; with the feed's and each projector's lag (no token).",
            ),
            ("/metrics", "Prometheus text (no token)."),
        ] {
            let mut op = OperationBuilder::new()
                .operation_id(Some(path.trim_start_matches('/')))
                .tag("health")
                .description(Some(what))
                .security(SecurityRequirement::default())
                .response("200", ResponseBuilder::new().description("ok").build());
            if path == "/readyz" {
                op = op.response(
                    "503",
                    ResponseBuilder::new()
                        .description("not ready: the database does not answer or a migration is missing")
                        .build(),
                );
            }
            let op = op.build();
            openapi
                .paths
                .paths
                .insert(path.to_owned(), PathItem::new(HttpMethod::Get, op));
        }
    }
}

/// The answers every operation may give besides its own, as the server gives them: 400
/// (a malformed request or id), 401 (no or unknown token), 403 (the role may not), 503
/// (the database unreachable, or `min_position` not reached); for commands also 409
/// (retries exhausted, a deposit reference taken), 412 (`If-Match`), 413 (over 2 MiB) and
/// 422 (a refusal the payment's state calls for). Every response carries `X-Request-Id`.
fn common_responses(op: &mut Operation, command: bool) {
    let mut codes = vec![
        ("400", "validation_failed"),
        ("401", "unauthorized"),
        ("403", "forbidden"),
        ("503", "unavailable"),
    ];
    if command {
        codes.extend([
            ("409", "version_conflict (retries exhausted) or duplicate_reference"),
            ("412", "version_conflict: If-Match names a version the stream has left"),
            ("413", "payload_too_large"),
            ("422", "a refusal the state calls for (insufficient_funds, escrow_frozen, invalid_state, idempotency_key_reused)"),
        ]);
    }
    for (status, what) in codes {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(what).build()));
    }
    for response in op.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("X-Request-Id".to_owned())
                .or_insert_with(|| {
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .description(Some("The request's id, echoed or made."))
                        .build()
                });
        }
    }
}

/// The API's OpenAPI description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "escrow-ledger",
        description = "The event-sourced escrow ledger's HTTP API. Every request but /healthz, /readyz and /metrics carries `Authorization: Bearer <token>`; errors are RFC 9457 problems (`Problem`) with a `code`, including `method_not_allowed` (405) for a method a known path does not take and `unavailable` (503) for a request that timed out. Every response carries `X-Request-Id`. Commands take `Idempotency-Key` (required on those that move money), `If-Match` and `X-Correlation-Id`: a correlation id that is not a UUID is recorded as the UUID v5 of its text in the URL namespace; `causation_id` is the request id when it is a UUID."
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
        super::problem::Problem,
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
///
/// Any role may read it; like every route but `/healthz`, `/readyz` and `/metrics`
/// (`contract.md`), it needs a token.
pub async fn serve(_caller: super::extract::Caller) -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// The whole document: the commands', the queries', and what [`Contract`] adds to both.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(<super::queries::QueriesDoc as OpenApi>::openapi());
    Contract.modify(&mut doc);
    doc
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
        let doc = document();
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
