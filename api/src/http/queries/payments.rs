//! `GET /v1/payments/{id}` and `GET /v1/payments`: from `finance.payments`.

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
    cursor_in, cursor_out, instant, money, non_empty_range, page_size, provider_param, query,
    reference, reference_param, status_param, wait_projected,
};
use crate::auth::Role;
use crate::http::dto;
use crate::http::extract::Caller;
use crate::http::problem::ApiError;
use crate::http::AppState;

const READERS: &[Role] = &[Role::Coordinator, Role::Admin, Role::Finance];

#[derive(Debug, sqlx::FromRow)]
struct Row {
    payment_id: Uuid,
    status: String,
    asset: String,
    provider: String,
    buyer: String,
    seller: String,
    purchase_request: Option<String>,
    seller_offer: Option<String>,
    amount: Decimal,
    deposited: Decimal,
    held: Decimal,
    released: Decimal,
    refunded: Decimal,
    fees: Decimal,
    aml_fees: Decimal,
    paid_out: Decimal,
    paid_out_seller: Decimal,
    paid_out_buyer: Decimal,
    escrow_adjusted: Decimal,
    excess: Decimal,
    open_dispute_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    funded_at: Option<DateTime<Utc>>,
    released_at: Option<DateTime<Utc>>,
    refunded_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
    disputed_at: Option<DateTime<Utc>>,
    paid_out_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    version: i64,
    last_position: i64,
    metadata: Option<Value>,
}

/// A row of a page: the payment and its creation's place in the feed (the page order).
#[derive(sqlx::FromRow)]
struct ListRow {
    #[sqlx(flatten)]
    row: Row,
    created_tx: i64,
    created_position: i64,
}

const COLUMNS: &str = "payment_id, status, asset, provider, buyer, seller, purchase_request, \
    seller_offer, amount, deposited, held, released, refunded, fees, aml_fees, paid_out, \
    paid_out_seller, paid_out_buyer, escrow_adjusted, excess, open_dispute_id, created_at, funded_at, \
    released_at, refunded_at, cancelled_at, disputed_at, paid_out_at, updated_at, version, \
    last_position, metadata";

/// A payment's current state.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// The payment's id.
    pub id: Uuid,
    /// Status (see the status table in the README).
    pub status: String,
    /// Asset code.
    pub asset: String,
    /// Payment provider.
    pub provider: String,
    /// Who pays.
    #[schema(value_type = Object)]
    pub buyer: Value,
    /// Who is paid.
    #[schema(value_type = Object)]
    pub seller: Value,
    /// The purchase request; null only for a legacy payment imported without one.
    #[schema(value_type = Option<Object>)]
    pub purchase_request: Option<Value>,
    /// The seller's offer.
    #[schema(value_type = Option<Object>)]
    pub seller_offer: Option<Value>,
    /// What the buyer must deposit.
    pub amount: String,
    /// All deposits, excess included.
    pub deposited: String,
    /// In escrow now.
    pub held: String,
    /// Gross released to the seller (fees included).
    pub released: String,
    /// Gross refunded to the buyer (fees included).
    pub refunded: String,
    /// Platform fees taken.
    pub fees: String,
    /// AML fees taken.
    pub aml_fees: String,
    /// Paid out to seller and buyer.
    pub paid_out: String,
    /// Paid out to the seller.
    pub paid_out_seller: String,
    /// Paid out to the buyer.
    pub paid_out_buyer: String,
    /// Net adjustments into (positive) or out of (negative) the escrow by an
    /// administrator (`POST /v1/adjustments`) or imported: with deposits, releases and
    /// refunds, what explains `held`.
    pub escrow_adjusted: String,
    /// Deposits beyond the amount (refundable only).
    pub excess: String,
    /// The open dispute freezing the escrow.
    pub dispute_id: Option<Uuid>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Deposits first reached the amount.
    pub funded_at: Option<DateTime<Utc>>,
    /// Money last left escrow for the seller.
    pub released_at: Option<DateTime<Utc>>,
    /// Money last left escrow for the buyer.
    pub refunded_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Last frozen by a dispute.
    pub disputed_at: Option<DateTime<Utc>>,
    /// Last paid out.
    pub paid_out_at: Option<DateTime<Utc>>,
    /// Its last event's time.
    pub updated_at: DateTime<Utc>,
    /// The stream's version.
    pub stream_version: i64,
    /// The position of its last event.
    pub position: i64,
    /// The caller's free-form data.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

impl From<Row> for PaymentView {
    fn from(r: Row) -> Self {
        let m = |d: Decimal| money(&r.asset, d);
        PaymentView {
            id: r.payment_id,
            status: r.status.clone(),
            asset: r.asset.clone(),
            provider: r.provider.clone(),
            buyer: reference(&r.buyer),
            seller: reference(&r.seller),
            purchase_request: r.purchase_request.as_deref().map(reference),
            seller_offer: r.seller_offer.as_deref().map(reference),
            amount: m(r.amount),
            deposited: m(r.deposited),
            held: m(r.held),
            released: m(r.released),
            refunded: m(r.refunded),
            fees: m(r.fees),
            aml_fees: m(r.aml_fees),
            paid_out: m(r.paid_out),
            paid_out_seller: m(r.paid_out_seller),
            paid_out_buyer: m(r.paid_out_buyer),
            escrow_adjusted: m(r.escrow_adjusted),
            excess: m(r.excess),
            dispute_id: r.open_dispute_id,
            created_at: r.created_at,
            funded_at: r.funded_at,
            released_at: r.released_at,
            refunded_at: r.refunded_at,
            cancelled_at: r.cancelled_at,
            disputed_at: r.disputed_at,
            paid_out_at: r.paid_out_at,
            updated_at: r.updated_at,
            stream_version: r.version,
            position: r.last_position,
            metadata: r.metadata,
        }
    }
}

/// Read-your-writes only.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// A payment's current state.
#[utoipa::path(get, operation_id = "get_payment", path = "/v1/payments/{id}", tag = "queries",
    params(("id" = Uuid, Path, description = "payment id"), OneQuery),
    responses((status = 200, body = PaymentView), (status = 404), (status = 503)))]
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<OneQuery>, QueryRejection>,
) -> Result<Json<PaymentView>, ApiError> {
    caller.require(READERS, "read payments")?;
    let q = query(q)?;
    let id = dto::path_id(&id)?;
    wait_projected(&state, &[Projection::Payments], q.min_position).await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM finance.payments WHERE payment_id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    row.map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::NotFound(format!("no payment {id}")))
}

/// Filters and paging of the payments list (in the order the ledger recorded them).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this buyer: a UUID or `ext:<reference>`.
    pub buyer: Option<String>,
    /// Only this seller: a UUID or `ext:<reference>`.
    pub seller: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Created before (RFC 3339).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// A page of payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentPage {
    /// The payments, in the order their creation was recorded (feed order).
    pub payments: Vec<PaymentView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Payments, filtered, in the order the ledger recorded their creation, a page at a time:
/// a payment recorded while a client pages comes after every page already handed out.
#[utoipa::path(get, operation_id = "list_payments", path = "/v1/payments", tag = "queries", params(ListQuery),
    responses((status = 200, body = PaymentPage), (status = 400), (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<PaymentPage>, ApiError> {
    caller.require(READERS, "read payments")?;
    let q = query(q)?;
    let limit = page_size(q.limit)?;
    // A status or provider that cannot exist is a typo, not "no payments".
    if let Some(status) = q.status.as_deref() {
        status_param(status)?;
    }
    if let Some(provider) = q.provider.as_deref() {
        provider_param(provider)?;
    }
    let buyer = q
        .buyer
        .as_deref()
        .map(|b| reference_param("buyer", b))
        .transpose()?;
    let seller = q
        .seller
        .as_deref()
        .map(|s| reference_param("seller", s))
        .transpose()?;
    let from = q.from.as_deref().map(|t| instant("from", t)).transpose()?;
    let to = q.to.as_deref().map(|t| instant("to", t)).transpose()?;
    non_empty_range(from, to, false)?;
    // Pages follow the payments' creation in feed order (transaction, position), the
    // order in which their rows become visible: a payment whose creation commits while
    // a reader pages sorts after every payment already shown, so no page skips it (by
    // `created_at`, stamped before the commit, one could land behind the cursor).
    let after: Option<(i64, i64)> = cursor_in(q.cursor.as_deref())?;
    wait_projected(&state, &[Projection::Payments], q.min_position).await?;
    let mut rows: Vec<ListRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, created_tx, created_position FROM finance.payments \
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR provider = $2) \
           AND ($3::text IS NULL OR buyer = $3) AND ($4::text IS NULL OR seller = $4) \
           AND ($5::timestamptz IS NULL OR created_at >= $5) \
           AND ($6::timestamptz IS NULL OR created_at < $6) \
           AND ($7::int8 IS NULL OR (created_tx, created_position) > ($7, $8)) \
         ORDER BY created_tx, created_position LIMIT $9"
    ))
    .bind(q.status.as_deref())
    .bind(q.provider.as_deref())
    .bind(buyer)
    .bind(seller)
    .bind(from)
    .bind(to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| cursor_out(&(r.created_tx, r.created_position)))
        })
        .flatten();
    Ok(Json(PaymentPage {
        payments: rows.into_iter().map(|r| PaymentView::from(r.row)).collect(),
        next_cursor,
    }))
}
