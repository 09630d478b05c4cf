//! `POST /v1/payments...`: the payment coordinator's commands.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use chrono::Utc;
use ledger::account::{is_valid_key_text, is_valid_provider};
use ledger::payment::{Cancel, CreatePayment, Deposit, Payout, Refund, Release};
use uuid::Uuid;

use super::dto::{self, CancelBody, CreatePaymentBody, DepositBody, MoveBody, PayoutBody};
use super::extract::{Body, Caller, CommandHeaders};
use super::problem::ApiError;
use super::{run_command, AppState};
use crate::auth::Role;
use crate::commands::{Accepted, Command, PaymentCommand};

const WHO: &[Role] = &[Role::Coordinator];

/// Creates a payment awaiting funds.
#[utoipa::path(post, path = "/v1/payments", request_body = CreatePaymentBody, tag = "payments",
    responses((status = 201, body = Accepted), (status = 400), (status = 401), (status = 403), (status = 422)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "create payments")?;
    let h = CommandHeaders::parse(&headers)?;
    let b: CreatePaymentBody = body.json()?;
    let asset = dto::asset(&b.asset)?;
    if !is_valid_provider(&b.provider) || !is_valid_key_text(&b.provider) {
        return Err(ApiError::validation(
            "provider must match [a-z0-9_]+ and be at most 256 bytes",
        ));
    }
    if b.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(ApiError::validation(
            "metadata must be a JSON object (or null)",
        ));
    }
    let cmd = CreatePayment {
        payment_id: b.payment_id.unwrap_or_else(Uuid::new_v4),
        buyer: b.buyer,
        seller: b.seller,
        purchase_request: b.purchase_request,
        seller_offer: b.seller_offer,
        amount: dto::amount_of("amount", asset, &b.amount)?,
        asset,
        provider: b.provider,
        metadata: b.metadata,
    };
    let cmd = Command::Payment(PaymentCommand::Create(cmd));
    run_command(
        &state,
        &caller,
        &h,
        &Method::POST,
        "/v1/payments",
        &body,
        cmd,
    )
    .await
}

/// Records a deposit: `external:<provider>` → `escrow:<payment>`.
#[utoipa::path(post, path = "/v1/payments/{id}/deposits", request_body = DepositBody, tag = "payments",
    params(("id" = Uuid, Path, description = "payment id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 409), (status = 422)))]
pub async fn deposit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "record deposits")?;
    let id = dto::path_id(&id)?;
    let h = CommandHeaders::parse(&headers)?;
    h.require_key()?;
    let b: DepositBody = body.json()?;
    dto::required_text("reference", &b.reference)?;
    let cmd = Deposit {
        amount: dto::amount("amount", &b.amount)?,
        reference: b.reference,
        occurred_at: b.occurred_at.unwrap_or_else(Utc::now),
        allow_excess: b.allow_excess,
    };
    let path = format!("/v1/payments/{id}/deposits");
    run_command(
        &state,
        &caller,
        &h,
        &Method::POST,
        &path,
        &body,
        Command::Payment(PaymentCommand::Deposit(id, cmd)),
    )
    .await
}

fn move_body(
    body: &Body,
) -> Result<(Option<rust_decimal::Decimal>, Vec<ledger::payment::Fee>), ApiError> {
    let b: MoveBody = if body.0.is_empty() {
        MoveBody::default()
    } else {
        body.json()?
    };
    let amount = b
        .amount
        .as_deref()
        .map(|a| dto::amount("amount", a))
        .transpose()?;
    Ok((amount, dto::fees(&b.fees)?))
}

/// Releases escrow to the seller, fees to the platform, in one event.
#[utoipa::path(post, path = "/v1/payments/{id}/releases", request_body = MoveBody, tag = "payments",
    params(("id" = Uuid, Path, description = "payment id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "release funds")?;
    let id = dto::path_id(&id)?;
    let h = CommandHeaders::parse(&headers)?;
    h.require_key()?;
    let (amount, fees) = move_body(&body)?;
    let path = format!("/v1/payments/{id}/releases");
    let cmd = Command::Payment(PaymentCommand::Release(id, Release { amount, fees }));
    run_command(&state, &caller, &h, &Method::POST, &path, &body, cmd).await
}

/// Refunds escrow to the buyer.
#[utoipa::path(post, path = "/v1/payments/{id}/refunds", request_body = MoveBody, tag = "payments",
    params(("id" = Uuid, Path, description = "payment id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "refund funds")?;
    let id = dto::path_id(&id)?;
    let h = CommandHeaders::parse(&headers)?;
    h.require_key()?;
    let (amount, fees) = move_body(&body)?;
    let path = format!("/v1/payments/{id}/refunds");
    let cmd = Command::Payment(PaymentCommand::Refund(id, Refund { amount, fees }));
    run_command(&state, &caller, &h, &Method::POST, &path, &body, cmd).await
}

/// Pays a party's share of this payment out to the provider.
#[utoipa::path(post, path = "/v1/payments/{id}/payouts", request_body = PayoutBody, tag = "payments",
    params(("id" = Uuid, Path, description = "payment id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn payout(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "pay out")?;
    let id = dto::path_id(&id)?;
    let h = CommandHeaders::parse(&headers)?;
    h.require_key()?;
    let b: PayoutBody = body.json()?;
    dto::required_text("reference", &b.reference)?;
    let cmd = Payout {
        party: b.party,
        amount: dto::amount("amount", &b.amount)?,
        reference: b.reference,
    };
    let path = format!("/v1/payments/{id}/payouts");
    run_command(
        &state,
        &caller,
        &h,
        &Method::POST,
        &path,
        &body,
        Command::Payment(PaymentCommand::Payout(id, cmd)),
    )
    .await
}

/// Cancels a payment that holds nothing.
#[utoipa::path(post, path = "/v1/payments/{id}/cancellation", request_body = CancelBody, tag = "payments",
    params(("id" = Uuid, Path, description = "payment id")),
    responses((status = 200, body = Accepted), (status = 400), (status = 404), (status = 422)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(WHO, "cancel payments")?;
    let id = dto::path_id(&id)?;
    let h = CommandHeaders::parse(&headers)?;
    let b: CancelBody = body.json()?;
    dto::required_text("reason", &b.reason)?;
    let path = format!("/v1/payments/{id}/cancellation");
    let cmd = Command::Payment(PaymentCommand::Cancel(id, Cancel { reason: b.reason }));
    run_command(&state, &caller, &h, &Method::POST, &path, &body, cmd).await
}
