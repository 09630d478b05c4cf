//! `POST /v1/adjustments`: an administrator's correction between two accounts.

use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use ledger::payment::Adjustment;
use ledger::Account;
use uuid::Uuid;

use super::dto::{self, AdjustmentBody};
use super::extract::{Body, Caller, CommandHeaders};
use super::problem::ApiError;
use super::{run_command, AppState};
use crate::auth::Role;
use crate::commands::{adjustment_shape, Accepted, AdjustCommand, Command};

/// Posts an adjustment.
#[utoipa::path(post, path = "/v1/adjustments", request_body = AdjustmentBody, tag = "adjustments",
    responses((status = 201, body = Accepted), (status = 400), (status = 403), (status = 404), (status = 422)))]
pub async fn adjust(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin], "post adjustments")?;
    let h = CommandHeaders::parse(&headers)?;
    h.require_key()?;
    let b: AdjustmentBody = body.json()?;
    let account = |field: &str, text: &str| {
        text.parse::<Account>()
            .map_err(|e| ApiError::validation(format!("{field}: {e}")))
    };
    let asset = dto::asset(&b.asset)?;
    let cmd = AdjustCommand {
        adjustment: Adjustment {
            adjustment_id: Uuid::new_v4(),
            from: account("from", &b.from)?,
            to: account("to", &b.to)?,
            amount: dto::amount_of("amount", asset, &b.amount)?,
            asset,
            reason: b.reason,
        },
        payment_id: b.payment_id,
    };
    adjustment_shape(&cmd)?;
    run_command(
        &state,
        &caller,
        &h,
        &Method::POST,
        "/v1/adjustments",
        &body,
        Command::Adjust(cmd),
    )
    .await
}
