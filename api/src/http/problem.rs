//! The API's one error type: every refusal is an RFC 9457 problem with a `code` from
//! `contract.md`. A database fault reaches the client as a fixed message and the log once,
//! with its cause.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A refusal or failure, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input; fix the request. 400.
    #[error("{0}")]
    Validation(String),
    /// No token or an unknown one. 401.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// The token's role may not do this. 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing. 404.
    #[error("{0}")]
    NotFound(String),
    /// `If-Match` names a version the stream has left. 412.
    #[error("{0}")]
    PreconditionFailed(String),
    /// Internal retries on a contended stream ran out. 409.
    #[error("{0}")]
    RetriesExhausted(String),
    /// The idempotency key was used with another request. 422.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// More than is there. 422.
    #[error("{0}")]
    InsufficientFunds(String),
    /// The escrow is frozen by a dispute. 422.
    #[error("{0}")]
    EscrowFrozen(String),
    /// Not allowed in the current state. 422.
    #[error("{0}")]
    InvalidState(String),
    /// The provider reference was already deposited. 409.
    #[error("{0}")]
    DuplicateReference(String),
    /// Body over the limit. 413.
    #[error("the request body is larger than 2 MiB")]
    PayloadTooLarge,
    /// The path exists but not with this method (code `method_not_allowed`, not in the
    /// contract's table: the router's own refusal, given a problem body like every
    /// other). 405; the `Allow` header lists the methods the path takes.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The database is unreachable, or a wait ran out. 503.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of ours. 500; the cause is logged, not shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// An RFC 9457 problem, as every refusal answers (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem's kind: `https://escrow-ledger.dev/problems/<code>`, the
    /// code's underscores written as hyphens.
    #[serde(rename = "type")]
    #[schema(example = "https://escrow-ledger.dev/problems/insufficient-funds")]
    pub kind: String,
    /// A short, fixed summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
    /// The contract's code (`validation_failed`, `insufficient_funds`, ...), or
    /// `method_not_allowed` for a method a known path does not take.
    #[schema(example = "insufficient_funds")]
    pub code: &'static str,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::RetriesExhausted(_) | ApiError::DuplicateReference(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused
            | ApiError::InsufficientFunds(_)
            | ApiError::EscrowFrozen(_)
            | ApiError::InvalidState(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The contract's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::PreconditionFailed(_) | ApiError::RetriesExhausted(_) => "version_conflict",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::InsufficientFunds(_) => "insufficient_funds",
            ApiError::EscrowFrozen(_) => "escrow_frozen",
            ApiError::InvalidState(_) => "invalid_state",
            ApiError::DuplicateReference(_) => "duplicate_reference",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "The request is not valid",
            ApiError::Unauthorized => "Not authenticated",
            ApiError::Forbidden(_) => "Not allowed for this role",
            ApiError::NotFound(_) => "Not found",
            ApiError::PreconditionFailed(_) | ApiError::RetriesExhausted(_) => "Version conflict",
            ApiError::IdempotencyKeyReused => "Idempotency key reused",
            ApiError::InsufficientFunds(_) => "Insufficient funds",
            ApiError::EscrowFrozen(_) => "Escrow frozen by a dispute",
            ApiError::InvalidState(_) => "Not allowed in the current state",
            ApiError::DuplicateReference(_) => "Duplicate provider reference",
            ApiError::PayloadTooLarge => "Payload too large",
            ApiError::MethodNotAllowed(_) => "Method not allowed",
            ApiError::Unavailable(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal error",
        }
    }

    /// A validation error.
    pub fn validation(msg: impl Into<String>) -> Self {
        ApiError::Validation(msg.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match retry_message(&err) {
            Some(message) => {
                tracing::error!(error = %err, "{message}");
                ApiError::Unavailable(message.to_owned())
            }
            None => ApiError::Internal(err.into()),
        }
    }
}

/// The `unavailable` (503, retry) message for a database error that is not the server's
/// fault, or `None` for one that is (500): the database unreachable, its schema behind
/// this server, or a statement stopped at a limit the server set.
pub(crate) fn retry_message(err: &sqlx::Error) -> Option<&'static str> {
    if ledger::store::is_unavailable(err) {
        Some("the database is unavailable")
    } else if schema_behind(err) {
        Some("the database is not migrated for this server (run `escrow-ledger migrate`)")
    } else if timed_out(err) {
        Some("the database did not answer in time; nothing was written, retry")
    } else {
        None
    }
}

/// Whether a statement named a table, column, function or schema the database does not
/// have (SQLSTATE 42P01, 42703, 42883, 3F000): a server started before `migrate` ran, or
/// on a database never migrated. Not ready rather than broken: `/readyz` says the same.
fn schema_behind(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("42P01" | "42703" | "42883" | "3F000")))
}

/// Whether PostgreSQL cancelled the statement at a limit the server set (a statement or a
/// lock wait ran too long, SQLSTATE 57014 or 55P03): its transaction is rolled back.
fn timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("57014" | "55P03")))
}

impl From<ledger::store::StoreError> for ApiError {
    fn from(err: ledger::store::StoreError) -> Self {
        match err {
            ledger::store::StoreError::Database(e) => e.into(),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                "an internal error occurred; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let code = self.code();
        let body = Problem {
            kind: format!(
                "https://escrow-ledger.dev/problems/{}",
                code.replace('_', "-")
            ),
            title: self.title(),
            status: status.as_u16(),
            detail,
            code,
        };
        let mut response = (status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme the client must use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"escrow-ledger\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
