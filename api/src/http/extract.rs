//! Extractors that speak our error format: the caller behind the bearer token, the body
//! (2 MiB at most), JSON that refuses unknown fields, and the command headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::problem::ApiError;
use super::AppState;
use crate::auth::{Principal, Role};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// Refuses unless the caller has one of `roles`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn require(&self, roles: &[Role], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not {what}",
                self.0.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        state
            .tokens
            .authenticate(token)
            .map(Caller)
            .ok_or(ApiError::Unauthorized)
    }
}

/// The raw body, with the size limit turned into `payload_too_large`.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::validation(rejection.body_text())),
        }
    }
}

impl Body {
    /// Parses the body as `T` (whose fields deny unknown ones).
    ///
    /// # Errors
    /// [`ApiError::Validation`] saying what is wrong and where.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.0.is_empty() {
            return Err(ApiError::validation("a JSON body is required"));
        }
        if has_nul_escape(&self.0) {
            return Err(ApiError::validation(
                "text may not contain U+0000 (\\u0000): the ledger's store cannot hold it",
            ));
        }
        serde_json::from_slice(&self.0)
            .map_err(|e| ApiError::validation(format!("invalid JSON body: {e}")))
    }

    /// The body as a JSON value, for hashing the request independently of whitespace and
    /// key order.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// Whether JSON text holds the escape `\u0000` (a NUL in a string; JSON has no other way
/// to write one): an escape, not a backslash written as `\\` followed by `u0000`.
fn has_nul_escape(json: &[u8]) -> bool {
    json.windows(6).enumerate().any(|(i, w)| {
        w == b"\\u0000" && json[..i].iter().rev().take_while(|b| **b == b'\\').count() % 2 == 0
    })
}

/// The headers every command may carry.
#[derive(Debug, Clone)]
pub struct CommandHeaders {
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `If-Match: "<version>"`.
    pub if_match: Option<i64>,
    /// `X-Correlation-Id`, recorded as every written event's `correlation_id`: a UUID is
    /// kept as given; any other non-empty text becomes the UUID v5 of that text in the
    /// URL namespace (`Uuid::new_v5(&Uuid::NAMESPACE_URL, text)`: the same text always
    /// gives the same id, so a caller's non-UUID ids still group); absent, a new UUID v4.
    pub correlation_id: Uuid,
    /// The request id (`X-Request-Id`, set by the server to a new UUID when the caller
    /// gives none, and echoed in the response), recorded as every written event's
    /// `causation_id` when it is a UUID; a caller's non-UUID request id leaves it null.
    pub request_id: Option<Uuid>,
}

impl CommandHeaders {
    /// Reads and checks the headers.
    ///
    /// # Errors
    /// [`ApiError::Validation`] for a malformed header.
    pub fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(|s| s.trim().to_owned())
                        .map_err(|_| ApiError::validation(format!("{name} is not visible ASCII")))
                })
                .transpose()
        };
        let idempotency_key = text("idempotency-key")?;
        if let Some(k) = &idempotency_key {
            if k.is_empty() || k.len() > 255 {
                return Err(ApiError::validation(
                    "Idempotency-Key must be 1 to 255 characters",
                ));
            }
        }
        let if_match = text("if-match")?
            .map(|v| {
                v.trim_start_matches("W/")
                    .trim_matches('"')
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| {
                        ApiError::validation("If-Match must be a stream version, like \"3\"")
                    })
            })
            .transpose()?;
        let correlation_id = match text("x-correlation-id")? {
            Some(c) if !c.is_empty() => Uuid::parse_str(&c)
                .unwrap_or_else(|_| Uuid::new_v5(&Uuid::NAMESPACE_URL, c.as_bytes())),
            _ => Uuid::new_v4(),
        };
        let request_id = text("x-request-id")?.and_then(|r| Uuid::parse_str(&r).ok());
        Ok(CommandHeaders {
            idempotency_key,
            if_match,
            correlation_id,
            request_id,
        })
    }

    /// Refuses a money-moving command without an `Idempotency-Key`.
    ///
    /// # Errors
    /// [`ApiError::Validation`].
    pub fn require_key(&self) -> Result<(), ApiError> {
        if self.idempotency_key.is_none() {
            return Err(ApiError::validation(
                "this command moves money: an Idempotency-Key header is required",
            ));
        }
        Ok(())
    }
}

/// An empty query parameter means the parameter is absent, on every route alike:
/// `contract.md` writes its filters as `?status=&provider=&...`, and a client filling
/// that template leaves the ones it does not use empty. Without this, an empty `status`
/// filtered on the empty text while an empty `limit` was refused.
pub async fn empty_query_params_are_absent(mut req: Request) -> Request {
    let Some(query) = req.uri().query() else {
        return req;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect();
    if kept.len() == query.split('&').count() {
        return req;
    }
    let path = req.uri().path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = axum::http::uri::PathAndQuery::try_from(path_and_query) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(has_nul_escape(br#"{"ref": "a\u0000b"}"#));
        assert!(has_nul_escape(br#"{"ref": "\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"ref": "\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"ref": "u0000"}"#));
        assert!(has_nul_escape(br#"{"ref": "\u00001"}"#));
    }
}
