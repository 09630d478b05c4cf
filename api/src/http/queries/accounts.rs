//! `GET /v1/accounts/{account}` (with `as_of`) and `GET /v1/accounts?prefix=`: from
//! `finance.account_balances` and `finance.balance_history`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use ledger::Account;
use projections::Projection;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{cursor_in, cursor_out, instant, money_text, page_size, query, wait_projected};
use crate::auth::Role;
use crate::http::extract::Caller;
use crate::http::problem::ApiError;
use crate::http::AppState;

const READERS: &[Role] = &[Role::Admin, Role::Finance];

/// One asset's balance of an account.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    /// Asset code.
    pub asset: String,
    /// The sum of the account's postings in that asset (as of `as_of` if given).
    pub balance: String,
    /// How many postings make it.
    pub postings: i64,
    /// The position of the last posting counted.
    pub last_position: Option<i64>,
}

/// An account's balances.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    /// The account's name.
    pub account: String,
    /// The instant asked for, if any.
    pub as_of: Option<DateTime<Utc>>,
    /// One entry per asset it ever held.
    pub balances: Vec<BalanceView>,
}

/// Read-your-writes and `as_of`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OneQuery {
    /// The sum of the postings whose `occurred_at` is at or before this instant (RFC 3339).
    #[param(format = DateTime)]
    pub as_of: Option<String>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// An account's balance per asset, now or as of an instant.
#[utoipa::path(get, operation_id = "get_account", path = "/v1/accounts/{account}", tag = "queries",
    params(("account" = String, Path, description = "account name, e.g. platform:fees"), OneQuery),
    responses((status = 200, body = AccountView), (status = 404), (status = 503)))]
pub async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(account): Path<String>,
    q: Result<Query<OneQuery>, QueryRejection>,
) -> Result<Json<AccountView>, ApiError> {
    caller.require(READERS, "read accounts")?;
    let q = query(q)?;
    let account = account
        .parse::<Account>()
        .map_err(|e| ApiError::validation(e.to_string()))?
        .to_string();
    let as_of = q
        .as_of
        .as_deref()
        .map(|t| instant("as_of", t))
        .transpose()?;
    wait_projected(&state, &[Projection::Balances], q.min_position).await?;
    // Balances as text: exact whatever their size (see `money_text`).
    let rows: Vec<(String, String, i64, Option<i64>)> = match as_of {
        None => sqlx::query_as(
            "SELECT asset, balance::text, postings, last_position FROM finance.account_balances \
                 WHERE account = $1 ORDER BY asset",
        )
        .bind(&account)
        .fetch_all(&state.pool)
        .await?,
        Some(t) => {
            sqlx::query_as(
                "SELECT b.asset, coalesce(h.balance, 0)::text, coalesce(h.n, 0), h.last_position \
                 FROM finance.account_balances b \
                 LEFT JOIN (SELECT asset, sum(amount) AS balance, count(*) AS n, \
                                   max(position) AS last_position \
                            FROM finance.balance_history \
                            WHERE account = $1 AND occurred_at <= $2 GROUP BY asset) h \
                   USING (asset) \
                 WHERE b.account = $1 ORDER BY b.asset",
            )
            .bind(&account)
            .bind(t)
            .fetch_all(&state.pool)
            .await?
        }
    };
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no postings were ever made to {account}"
        )));
    }
    Ok(Json(AccountView {
        account,
        as_of,
        balances: rows
            .into_iter()
            .map(|(asset, balance, postings, last_position)| BalanceView {
                balance: money_text(&asset, &balance),
                asset,
                postings,
                last_position,
            })
            .collect(),
    }))
}

/// Which accounts, and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Accounts whose name starts with this (`seller:`, `platform:`, `external:stripe`).
    pub prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// One account's balance in one asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBalanceView {
    /// The account's name.
    pub account: String,
    /// Asset code.
    pub asset: String,
    /// The sum of its postings in that asset.
    pub balance: String,
}

/// A page of balances, by account name then asset.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountPage {
    /// The balances.
    pub accounts: Vec<AccountBalanceView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Balances of the accounts whose name starts with `prefix`, paged.
#[utoipa::path(get, operation_id = "list_accounts", path = "/v1/accounts", tag = "queries", params(ListQuery),
    responses((status = 200, body = AccountPage), (status = 400), (status = 503)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<AccountPage>, ApiError> {
    caller.require(READERS, "read accounts")?;
    let q = query(q)?;
    let limit = page_size(q.limit)?;
    let after: Option<(String, String)> = cursor_in(q.cursor.as_deref())?;
    let pattern = format!(
        "{}%",
        q.prefix
            .as_deref()
            .unwrap_or("")
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    wait_projected(&state, &[Projection::Balances], q.min_position).await?;
    let mut rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT account, asset, balance::text FROM finance.account_balances \
         WHERE account LIKE $1 AND ($2::text IS NULL OR (account, asset) > ($2 COLLATE \"C\", $3)) \
         ORDER BY account, asset LIMIT $4",
    )
    .bind(&pattern)
    .bind(after.as_ref().map(|a| a.0.as_str()))
    .bind(after.as_ref().map(|a| a.1.as_str()))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let n = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > n;
    rows.truncate(n);
    let next_cursor = more
        .then(|| rows.last().map(|r| cursor_out(&(&r.0, &r.1))))
        .flatten();
    Ok(Json(AccountPage {
        accounts: rows
            .into_iter()
            .map(|(account, asset, balance)| AccountBalanceView {
                balance: money_text(&asset, &balance),
                account,
                asset,
            })
            .collect(),
        next_cursor,
    }))
}
