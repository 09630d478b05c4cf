//! The query endpoints of `contract.md` ("Queries"): reads from the projections through
//! the `finance` views. Every query takes `min_position=N` (read-your-writes: answer once
//! the projections it reads have passed the event at N in feed order, else `503` with
//! `Retry-After` after a bounded wait), pages with an opaque `cursor`, and checks the
//! contract's read rights: coordinator reads payments and disputes, admin also accounts,
//! finance everything.

mod accounts;
mod disputes;
mod payments;
mod reconciliation;

pub(crate) use disputes::default_queue_page;
pub(crate) use reconciliation::period_buckets;

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use ledger::{Account, Asset, Reference};
use projections::{Passed, Projection};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::OpenApi;

use super::problem::ApiError;
use super::AppState;

/// How long a query waits for `min_position` before answering 503.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// The query routes, merged into the app's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/payments", get(payments::list))
        .route("/v1/payments/{id}", get(payments::one))
        .route("/v1/accounts", get(accounts::list))
        .route("/v1/accounts/{account}", get(accounts::one))
        .route("/v1/disputes", get(disputes::queue))
        .route("/v1/disputes/{id}", get(disputes::one))
        .route("/v1/reconciliation/buckets", get(reconciliation::buckets))
        .route(
            "/v1/reconciliation/trial-balance",
            get(reconciliation::trial_balance),
        )
}

/// The OpenAPI description of the query endpoints (merged into `/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    paths(
        payments::one,
        payments::list,
        accounts::one,
        accounts::list,
        disputes::queue,
        disputes::one,
        reconciliation::buckets,
        reconciliation::trial_balance,
    ),
    components(schemas(
        payments::PaymentView,
        payments::PaymentPage,
        accounts::AccountView,
        accounts::BalanceView,
        accounts::AccountPage,
        accounts::AccountBalanceView,
        disputes::DisputeSummary,
        disputes::DisputeQueue,
        disputes::DisputeView,
        disputes::EvidenceView,
        disputes::MessageView,
        disputes::TimelineView,
        reconciliation::BucketView,
        reconciliation::BucketReport,
        reconciliation::TrialBalance,
        reconciliation::TrialBalanceTotal,
    ))
)]
pub struct QueriesDoc;

/// Refuses a negative `min_position`: every read takes it, the store's reads too.
///
/// # Errors
/// `validation_failed`.
pub fn check_min_position(min_position: Option<i64>) -> Result<(), ApiError> {
    if min_position.is_some_and(|p| p < 0) {
        return Err(ApiError::validation("min_position must be 0 or more"));
    }
    Ok(())
}

/// Waits until `projections` have passed `min_position` (if given).
///
/// # Errors
/// `validation_failed` for a negative position, `unavailable` (503, `Retry-After`) when
/// they did not pass it within [`MIN_POSITION_WAIT`].
pub async fn wait_projected(
    state: &AppState,
    projections: &[Projection],
    min_position: Option<i64>,
) -> Result<(), ApiError> {
    check_min_position(min_position)?;
    let Some(position) = min_position else {
        return Ok(());
    };
    match projections::wait_for(&state.pool, projections, position, MIN_POSITION_WAIT).await {
        Ok(Passed::Yes) => Ok(()),
        Ok(Passed::No) => Err(ApiError::Unavailable(format!(
            "the projections have not passed position {position} yet; retry shortly"
        ))),
        Err(projections::ProjectionError::Database(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

/// The query string, with the extractor's rejection as our problem.
fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::validation(e.body_text()))
}

/// A page size: 1 to 500, default 50.
fn page_size(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=500).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::validation("limit must be between 1 and 500"))
    }
}

/// An opaque cursor: the key of the last row handed out, as hex of its JSON.
fn cursor_out<T: Serialize>(key: &T) -> String {
    hex::encode(serde_json::to_vec(key).unwrap_or_default())
}

fn cursor_in<T: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    cursor
        .filter(|c| !c.is_empty())
        .map(|c| {
            hex::decode(c)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| ApiError::validation("cursor is not one this API handed out"))
        })
        .transpose()
}

/// An RFC 3339 instant.
fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::validation(format!("{field} must be an RFC 3339 time")))
}

/// A UTC day, `YYYY-MM-DD`: buckets are whole days, so an instant (which would widen to
/// its whole day, silently) is refused.
fn whole_day(field: &str, text: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        ApiError::validation(format!(
            "{field} must be a UTC day (YYYY-MM-DD): buckets hold whole days"
        ))
    })
}

/// Refuses a `from`/`to` range that holds nothing: a typo, not "no payments". `from` is
/// inclusive; with an exclusive `to`, `from == to` is empty too.
fn non_empty_range<T: PartialOrd + std::fmt::Display>(
    from: Option<T>,
    to: Option<T>,
    to_inclusive: bool,
) -> Result<(), ApiError> {
    match (from, to) {
        (Some(f), Some(t)) if f > t || (!to_inclusive && f == t) => {
            Err(ApiError::validation(format!(
                "from ({f}) to ({t}) is an empty range (to is {})",
                if to_inclusive {
                    "inclusive"
                } else {
                    "exclusive"
                }
            )))
        }
        _ => Ok(()),
    }
}

/// A provider filter: a provider name can only be `[a-z0-9_]+`, so anything else is a
/// typo that would read as "no payments".
fn provider_param(provider: &str) -> Result<(), ApiError> {
    if ledger::account::is_valid_provider(provider) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "provider {provider:?} is not a provider name ([a-z0-9_]+)"
        )))
    }
}

/// A payment status filter: one the ledger knows.
fn status_param(status: &str) -> Result<(), ApiError> {
    let value = serde_json::Value::String(status.to_owned());
    if serde_json::from_value::<ledger::payment::PaymentStatus>(value).is_ok() {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "status {status:?} is not a payment status (awaiting_deposit, partially_funded, \
             funded, partially_released, partially_refunded, released, refunded, settled, \
             disputed, cancelled)"
        )))
    }
}

/// A party reference read back from its account-key form, as the contract writes it.
fn reference(key: &str) -> Value {
    match format!("buyer:{key}").parse::<Account>() {
        Ok(Account::Buyer(r)) => serde_json::to_value(r).unwrap_or(Value::Null),
        _ => json!({"kind": "external", "ref": key}),
    }
}

/// A party reference given as a query parameter: a UUID or `ext:<text>`.
fn reference_param(field: &str, text: &str) -> Result<String, ApiError> {
    match format!("buyer:{text}").parse::<Account>() {
        Ok(Account::Buyer(r)) => Ok(Reference::account_key(&r)),
        _ => Err(ApiError::validation(format!(
            "{field} must be a party's UUID or ext:<reference>"
        ))),
    }
}

/// An amount at its asset's scale.
fn money(asset: &str, amount: Decimal) -> String {
    asset
        .parse::<Asset>()
        .map_or_else(|_| amount.normalize().to_string(), |a| a.format(amount))
}

/// A sum read from PostgreSQL as text (`numeric::text`), at its asset's scale, exactly:
/// a sum over many payments or accounts may need more digits than a `Decimal` holds
/// (18-decimal ETH past about 7.9 * 10^10), and reading it into one would round it. Text
/// that fits a `Decimal` prints as [`money`] prints it; longer text keeps every digit,
/// padded with zeros to the scale.
fn money_text(asset: &str, text: &str) -> String {
    if let Ok(exact) = Decimal::from_str_exact(text) {
        return money(asset, exact);
    }
    let Ok(scale) = asset.parse::<Asset>().map(|a| a.scale() as usize) else {
        return text.to_owned();
    };
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let fraction = fraction.trim_end_matches('0');
    let width = scale.max(fraction.len());
    if width == 0 {
        whole.to_owned()
    } else {
        format!("{whole}.{fraction:0<width$}")
    }
}

fn money_opt(asset: &str, amount: Option<Decimal>) -> Option<String> {
    amount.map(|a| money(asset, a))
}

/// Whether the client asked for CSV.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

/// A CSV document (RFC 4180) from a header and rows.
fn csv(name: &str, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Response {
    fn field(f: &str) -> String {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_owned()
        }
    }
    let mut out = head.join(",");
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = row.iter().map(|f| field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    let mut response = out.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// Projection lag per projector, set as gauges and returned for `/readyz`'s detail.
pub async fn projection_detail(state: &AppState) -> Value {
    match projections::status(&state.pool).await {
        Ok(list) => {
            let mut out = serde_json::Map::new();
            for s in list {
                let name = s.projection.name();
                #[allow(clippy::cast_precision_loss)]
                {
                    metrics::gauge!("projection_lag_events", "projector" => name)
                        .set(s.lag_events as f64);
                    metrics::gauge!("projection_lag_seconds", "projector" => name)
                        .set(s.lag_ms as f64 / 1000.0);
                    metrics::gauge!("projection_checkpoint_position", "projector" => name)
                        .set(s.checkpoint.position as f64);
                }
                metrics::gauge!("projection_halted", "projector" => name)
                    .set(if s.halted_reason.is_some() { 1.0 } else { 0.0 });
                metrics::gauge!("projection_failing", "projector" => name)
                    .set(if s.failing_since.is_some() { 1.0 } else { 0.0 });
                out.insert(
                    name.to_owned(),
                    json!({
                        "checkpoint_position": s.checkpoint.position,
                        "lag_events": s.lag_events,
                        "lag_ms": s.lag_ms,
                        "active_side": s.active_side,
                        "halted": s.halted_reason,
                        "failing": s.failing_since.map(|since| json!({
                            "since": since,
                            "error": s.last_error,
                        })),
                        "rebuilt_at": s.rebuilt_at,
                    }),
                );
            }
            Value::Object(out)
        }
        Err(e) => {
            tracing::warn!(error = %e, "projection status unavailable");
            Value::Null
        }
    }
}

#[cfg(test)]
mod money_tests {
    use super::money_text;

    #[test]
    fn sums_print_at_their_scale_with_every_digit() {
        assert_eq!(money_text("USD", "97.5"), "97.50");
        assert_eq!(money_text("USD", "0"), "0.00");
        assert_eq!(money_text("ETH", "-1.5"), "-1.500000000000000000");
        // Past what a Decimal holds: kept digit for digit, never rounded.
        assert_eq!(
            money_text("ETH", "-89999999999.999999999999999991"),
            "-89999999999.999999999999999991"
        );
        assert_eq!(
            money_text("ETH", "-22000000000000000022669157806.22731361802469238"),
            "-22000000000000000022669157806.227313618024692380"
        );
        assert_eq!(
            money_text("USD", "1000000000000000000000000000000.10"),
            "1000000000000000000000000000000.10"
        );
    }
}
