//! The HTTP API: `app(state)` builds the router with its layers (request ids, tracing,
//! body limit, timeout, metrics). Routes live one group per file.

pub mod adjustments;
pub mod disputes;
pub mod dto;
pub mod events;
pub mod extract;
pub mod health;
pub mod legacy;
pub mod listen;
pub mod openapi;
pub mod payments;
pub mod problem;
pub mod queries;
pub mod schema;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use ledger::store::Notifier;

use crate::auth::Tokens;
use crate::commands::{self, Answer, Command};
use extract::{Body, Caller, CommandHeaders};
use problem::ApiError;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// How long a request may take before it is answered `unavailable` (503).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Connections acting as the service role.
    pub pool: PgPool,
    /// The known tokens.
    pub tokens: Arc<Tokens>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Announces committed commands to projectors (outside the commands' transactions).
    pub notifier: Notifier,
    /// Appends commands decided at the same moment in one transaction.
    pub commits: commands::GroupCommit,
}

/// Builds the whole router over `state`.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let v1 = Router::new()
        .route("/v1/payments", post(payments::create))
        .route("/v1/payments/{id}/deposits", post(payments::deposit))
        .route("/v1/payments/{id}/releases", post(payments::release))
        .route("/v1/payments/{id}/refunds", post(payments::refund))
        .route("/v1/payments/{id}/payouts", post(payments::payout))
        .route("/v1/payments/{id}/cancellation", post(payments::cancel))
        .route("/v1/payments/{id}/events", get(events::payment_events))
        .route("/v1/disputes", post(disputes::open))
        .route("/v1/disputes/{id}/evidence", post(disputes::evidence))
        .route("/v1/disputes/{id}/messages", post(disputes::message))
        .route("/v1/disputes/{id}/assignment", post(disputes::assign))
        .route("/v1/disputes/{id}/priority", post(disputes::priority))
        .route("/v1/disputes/{id}/status", post(disputes::status))
        .route("/v1/disputes/{id}/resolution", post(disputes::resolve))
        .route("/v1/adjustments", post(adjustments::adjust))
        .route("/v1/events", get(events::feed))
        .route("/v1/legacy/{collection}/{object_id}", get(legacy::lookup))
        .merge(queries::routes())
        .layer(middleware::map_request(
            extract::empty_query_params_are_absent,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        // After every route: it applies to the routes registered before it.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(refuse_declared_oversize))
        .layer(middleware::from_fn(|req: Request, next: Next| {
            time_limit(REQUEST_TIMEOUT, req, next)
        }))
        // Outside the time limit, so a request that timed out is counted and logged too.
        .layer(middleware::from_fn(track))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Answers a request that runs past `limit` with the contract's `unavailable` problem (503
/// with `Retry-After`), not a bare 408: the client may retry, and a command that timed out
/// either committed (a retry with its `Idempotency-Key` replays it) or wrote nothing.
pub async fn time_limit(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => timed_out(limit).into_response(),
    }
}

/// The problem a request that ran past `limit` gets.
pub fn timed_out(limit: Duration) -> ApiError {
    ApiError::Unavailable(format!(
        "the request timed out after {} s; retry (with the same Idempotency-Key for a command)",
        limit.as_secs()
    ))
}

/// Answers 413 at once for a body declared (`Content-Length`) over [`BODY_LIMIT`], rather
/// than waiting for a body that may never come: the limit on what is read stays with
/// `DefaultBodyLimit` (chunked bodies, lying lengths).
async fn refuse_declared_oversize(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// The method as a metrics label: the methods the API knows, every other one as `other`
/// (a label per client-made method would let anyone grow `/metrics` without bound).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The problem for a method a known path does not take (the router adds `Allow`).
async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}

/// Counts requests and their latency by route and status, and logs one INFO line per
/// request at its response: method, path, status, latency and the request id (the
/// `X-Request-Id` given, or the one made for it), so a client's report can be found.
async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let method_label = method_label(req.method());
    let uri_path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let latency = start.elapsed();
    tracing::info!(
        method = %method,
        path = %uri_path,
        status = %status,
        latency_ms = latency.as_secs_f64() * 1000.0,
        request_id = %request_id,
        "request"
    );
    metrics::counter!("http_requests_total", "method" => method_label, "path" => path.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method_label, "path" => path)
        .record(latency.as_secs_f64());
    response
}

/// Runs a parsed command for a caller and answers with its exact (possibly replayed) body.
///
/// # Errors
/// Whatever the command path refuses with.
pub async fn run_command(
    state: &AppState,
    caller: &Caller,
    headers: &CommandHeaders,
    method: &Method,
    path: &str,
    body: &Body,
    command: Command,
) -> Result<Response, ApiError> {
    let mut canonical = Vec::new();
    ledger::store::hash::canonical_json(&body.value(), &mut canonical);
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(&canonical);
    let request = commands::Request {
        caller: caller.0.clone(),
        idempotency_key: headers.idempotency_key.clone(),
        if_match: headers.if_match,
        correlation_id: headers.correlation_id,
        causation_id: headers.request_id,
        request_hash: h.finalize().into(),
    };
    let name = command.name();
    let result = commands::execute(&state.pool, &state.commits, &request, &command).await;
    if matches!(&result, Ok(a) if !a.replayed) {
        state.notifier.committed();
    }
    let outcome = match &result {
        Ok(a) if a.replayed => "replayed",
        Ok(_) => "accepted",
        Err(e) => e.code(),
    };
    metrics::counter!("commands_total", "command" => name, "outcome" => outcome).increment(1);
    let Answer { status, body, .. } = result?;
    Ok((
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// `State` re-exported for the route files.
pub type AppStateExtract = State<AppState>;

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_the_time_limit_is_an_unavailable_problem() {
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }))
            .layer(middleware::from_fn(|req: Request, next: Next| {
                time_limit(Duration::from_millis(50), req, next)
            }));
        let get_ = |path: &str| {
            axum::http::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let fast = router.clone().oneshot(get_("/fast")).await.unwrap();
        assert_eq!(fast.status(), axum::http::StatusCode::OK);
        let slow = router.oneshot(get_("/slow")).await.unwrap();
        assert_eq!(slow.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            slow.headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert!(slow.headers().contains_key(axum::http::header::RETRY_AFTER));
        let body = axum::body::to_bytes(slow.into_body(), 1 << 16)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["code"], "unavailable");
        assert_eq!(problem["status"], 503);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("timed out"), "{detail}");
    }
}
