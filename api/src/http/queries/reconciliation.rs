//! Finance's reconciliation reads: `GET /v1/reconciliation/buckets` (count and money sums
//! of payments by provider, status, asset and UTC day of creation) and
//! `GET /v1/reconciliation/trial-balance` (every account's balance per asset and the
//! per-asset totals, which must be zero). Both answer CSV for `Accept: text/csv`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use projections::Projection;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

use super::{
    csv, instant, money_text, non_empty_range, provider_param, query, status_param, wait_projected,
    wants_csv, whole_day,
};
use crate::auth::Role;
use crate::http::extract::Caller;
use crate::http::problem::ApiError;
use crate::http::AppState;

const READERS: &[Role] = &[Role::Finance];
const DIMENSIONS: [&str; 4] = ["provider", "status", "asset", "day"];
const SUMS: [&str; 9] = [
    "amount",
    "deposited",
    "held",
    "released",
    "refunded",
    "fees",
    "aml_fees",
    "paid_out",
    "excess",
];

/// What to group by and which days.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BucketQuery {
    /// Comma-separated among `provider,status,asset,day` (default: all four). Money is
    /// never summed across assets: `asset` is always part of the grouping.
    pub group_by: Option<String>,
    /// First UTC day of creation, inclusive (`YYYY-MM-DD`).
    #[param(format = Date)]
    pub from: Option<String>,
    /// Last UTC day of creation, inclusive (`YYYY-MM-DD`).
    #[param(format = Date)]
    pub to: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this asset.
    pub asset: Option<String>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
}

/// One bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    /// Provider (absent when not grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Payment status (absent when not grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Asset.
    pub asset: String,
    /// UTC day of creation (absent when not grouped by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<NaiveDate>,
    /// Payments counted.
    pub payments: i64,
    /// Sum of their amounts.
    pub amount: String,
    /// Sum of their deposits.
    pub deposited: String,
    /// Sum held in escrow.
    pub held: String,
    /// Sum released (gross).
    pub released: String,
    /// Sum refunded (gross).
    pub refunded: String,
    /// Sum of platform fees.
    pub fees: String,
    /// Sum of AML fees.
    pub aml_fees: String,
    /// Sum paid out.
    pub paid_out: String,
    /// Sum of excess deposits.
    pub excess: String,
}

/// The bucket report.
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketReport {
    /// The grouping used.
    pub group_by: Vec<String>,
    /// The buckets, ordered by the grouping.
    pub buckets: Vec<BucketView>,
}

/// Count and money sums of payments per bucket.
#[utoipa::path(get, path = "/v1/reconciliation/buckets", tag = "queries", params(BucketQuery),
    responses((status = 200, body = BucketReport), (status = 400), (status = 503)))]
pub async fn buckets(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<BucketQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(READERS, "read reconciliation reports")?;
    let q = query(q)?;
    let group = grouping(q.group_by.as_deref())?;
    let from = q
        .from
        .as_deref()
        .map(|t| whole_day("from", t))
        .transpose()?;
    let to = q.to.as_deref().map(|t| whole_day("to", t)).transpose()?;
    non_empty_range(from, to, true)?;
    // A filter no payment can match is a typo, not "no payments".
    if let Some(provider) = q.provider.as_deref() {
        provider_param(provider)?;
    }
    if let Some(status) = q.status.as_deref() {
        status_param(status)?;
    }
    if let Some(asset) = q.asset.as_deref() {
        if asset.parse::<ledger::Asset>().is_err() {
            return Err(ApiError::validation(format!(
                "asset {asset:?} is not an asset code (USD, EUR, USDT, USDC, BTC, ETH)"
            )));
        }
    }
    wait_projected(&state, &[Projection::Payments], q.min_position).await?;
    let filter = BucketFilter {
        from,
        to,
        provider: q.provider.as_deref(),
        status: q.status.as_deref(),
        asset: q.asset.as_deref(),
    };
    let rows = bucket_rows(&state.pool, &group, &filter).await?;
    let has = |d: &str| group.contains(&d);
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let asset: String = r.try_get("asset")?;
        let m = |name: &str| -> Result<String, sqlx::Error> {
            Ok(money_text(&asset, &r.try_get::<String, _>(name)?))
        };
        out.push(BucketView {
            provider: if has("provider") {
                r.try_get("provider")?
            } else {
                None
            },
            status: if has("status") {
                r.try_get("status")?
            } else {
                None
            },
            day: if has("day") { r.try_get("day")? } else { None },
            payments: r.try_get("payments")?,
            amount: m("amount")?,
            deposited: m("deposited")?,
            held: m("held")?,
            released: m("released")?,
            refunded: m("refunded")?,
            fees: m("fees")?,
            aml_fees: m("aml_fees")?,
            paid_out: m("paid_out")?,
            excess: m("excess")?,
            asset,
        });
    }
    if wants_csv(&headers) {
        return Ok(bucket_csv(&group, out));
    }
    Ok(Json(BucketReport {
        group_by: group.iter().map(|s| (*s).to_owned()).collect(),
        buckets: out,
    })
    .into_response())
}

/// Which payments a bucket report counts.
struct BucketFilter<'a> {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    provider: Option<&'a str>,
    status: Option<&'a str>,
    asset: Option<&'a str>,
}

/// One statement of the bucket report: sums grouped by `group` (from [`grouping`]).
async fn bucket_rows(
    pool: &sqlx::PgPool,
    group: &[&'static str],
    f: &BucketFilter<'_>,
) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
    // The grouping columns come from the fixed list above, never from the request.
    let cols = group.join(", ");
    // Sums as text: exact whatever their size (see `money_text`).
    let sums: Vec<String> = SUMS
        .iter()
        .map(|s| format!("sum({s})::text AS {s}"))
        .collect();
    let sql = format!(
        "SELECT {cols}, sum(payments)::int8 AS payments, {} FROM finance.reconciliation_buckets \
         WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2) \
           AND ($3::text IS NULL OR provider = $3) AND ($4::text IS NULL OR status = $4) \
           AND ($5::text IS NULL OR asset = $5) \
         GROUP BY {cols} ORDER BY {cols}",
        sums.join(", ")
    );
    sqlx::query(&sql)
        .bind(f.from)
        .bind(f.to)
        .bind(f.provider)
        .bind(f.status)
        .bind(f.asset)
        .fetch_all(pool)
        .await
}

/// The bucket report of the UTC days `from..=to` as `GET /v1/reconciliation/buckets` reads
/// it, grouped by `group_by` (as the endpoint's parameter; `None`: all four dimensions):
/// the same statement, for `bench rebuild`. Returns the buckets read.
///
/// # Errors
/// An unknown dimension in `group_by`, or a database error.
pub(crate) async fn period_buckets(
    pool: &sqlx::PgPool,
    from: NaiveDate,
    to: NaiveDate,
    group_by: Option<&str>,
) -> anyhow::Result<usize> {
    let group = grouping(group_by).map_err(|e| anyhow::anyhow!("group_by: {e}"))?;
    let filter = BucketFilter {
        from: Some(from),
        to: Some(to),
        provider: None,
        status: None,
        asset: None,
    };
    Ok(bucket_rows(pool, &group, &filter).await?.len())
}

/// The grouping asked for, in a fixed order, `asset` always in it.
fn grouping(text: Option<&str>) -> Result<Vec<&'static str>, ApiError> {
    let mut group: Vec<&'static str> = match text.map(str::trim) {
        None | Some("") => DIMENSIONS.to_vec(),
        Some(text) => {
            let mut g = Vec::new();
            for part in text.split(',').map(str::trim) {
                let Some(dim) = DIMENSIONS.iter().find(|d| **d == part) else {
                    return Err(ApiError::validation(format!(
                        "group_by {part:?} is not one of provider, status, asset, day"
                    )));
                };
                if !g.contains(dim) {
                    g.push(*dim);
                }
            }
            g
        }
    };
    if !group.contains(&"asset") {
        group.push("asset");
    }
    group.sort_by_key(|d| DIMENSIONS.iter().position(|x| x == d));
    Ok(group)
}

fn bucket_csv(group: &[&'static str], buckets: Vec<BucketView>) -> Response {
    let mut head: Vec<&str> = group.to_vec();
    head.push("payments");
    head.extend(SUMS);
    let rows = buckets.into_iter().map(|b| {
        let mut row = Vec::new();
        for d in group {
            row.push(match *d {
                "provider" => b.provider.clone().unwrap_or_default(),
                "status" => b.status.clone().unwrap_or_default(),
                "asset" => b.asset.clone(),
                _ => b.day.map(|d| d.to_string()).unwrap_or_default(),
            });
        }
        row.extend([
            b.payments.to_string(),
            b.amount,
            b.deposited,
            b.held,
            b.released,
            b.refunded,
            b.fees,
            b.aml_fees,
            b.paid_out,
            b.excess,
        ]);
        row
    });
    csv("reconciliation-buckets", &head, rows)
}

/// Which instant.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TrialBalanceQuery {
    /// Balances as the sums of postings whose `occurred_at` is at or before this instant
    /// (RFC 3339); default: now.
    #[param(format = DateTime)]
    pub as_of: Option<String>,
    /// Answer once the projections passed the event at this position (feed order).
    pub min_position: Option<i64>,
    /// List the accounts whose balance is zero too (every account that ever had a
    /// posting); default false: a settled payment's escrow account is zero for good.
    pub include_zero: Option<bool>,
}

/// One asset's total.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialBalanceTotal {
    /// Asset code.
    pub asset: String,
    /// The sum of every account's balance: zero in a sound ledger.
    pub total: String,
    /// Accounts listed for this asset (those with a balance other than zero, unless
    /// `include_zero`).
    pub accounts: i64,
}

/// The trial balance.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrialBalance {
    /// The instant asked for, if any.
    pub as_of: Option<DateTime<Utc>>,
    /// Whether every asset's total is zero.
    pub balanced: bool,
    /// Per asset.
    pub totals: Vec<TrialBalanceTotal>,
    /// Every account's balance per asset (zero balances left out unless `include_zero`).
    pub accounts: Vec<super::accounts::AccountBalanceView>,
}

/// Every account's balance per asset, and the per-asset totals, which must be zero.
#[utoipa::path(get, path = "/v1/reconciliation/trial-balance", tag = "queries",
    params(TrialBalanceQuery),
    responses((status = 200, body = TrialBalance), (status = 400), (status = 503)))]
pub async fn trial_balance(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<TrialBalanceQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(READERS, "read reconciliation reports")?;
    let q = query(q)?;
    let as_of = q
        .as_of
        .as_deref()
        .map(|t| instant("as_of", t))
        .transpose()?;
    let include_zero = q.include_zero.unwrap_or(false);
    wait_projected(&state, &[Projection::Balances], q.min_position).await?;
    // One statement: one side of the views, one snapshot. Balances and totals as text,
    // summed by PostgreSQL: exact whatever their size (see `money_text`).
    let rows: Vec<(String, String, String, String, bool)> = match as_of {
        None => {
            sqlx::query_as(
                "SELECT asset, account, balance::text, (sum(balance) OVER w)::text, \
                        sum(balance) OVER w = 0 \
                 FROM finance.account_balances WHERE balance <> 0 OR $1 \
                 WINDOW w AS (PARTITION BY asset) ORDER BY asset, account",
            )
            .bind(include_zero)
            .fetch_all(&state.pool)
            .await?
        }
        Some(t) => {
            sqlx::query_as(
                "SELECT asset, account, balance::text, (sum(balance) OVER w)::text, \
                        sum(balance) OVER w = 0 \
                 FROM (SELECT asset, account, sum(amount) AS balance \
                       FROM finance.balance_history WHERE occurred_at <= $1 \
                       GROUP BY asset, account HAVING sum(amount) <> 0 OR $2) AS b \
                 WINDOW w AS (PARTITION BY asset) ORDER BY asset, account",
            )
            .bind(t)
            .bind(include_zero)
            .fetch_all(&state.pool)
            .await?
        }
    };
    let mut totals: Vec<TrialBalanceTotal> = Vec::new();
    for (asset, _, _, total, _) in &rows {
        if let Some(t) = totals.last_mut().filter(|t| &t.asset == asset) {
            t.accounts += 1;
        } else {
            totals.push(TrialBalanceTotal {
                asset: asset.clone(),
                total: money_text(asset, total),
                accounts: 1,
            });
        }
    }
    let balanced = rows.iter().all(|r| r.4);
    let rows: Vec<(String, String, String)> = rows
        .into_iter()
        .map(|(asset, account, balance, _, _)| (asset, account, balance))
        .collect();
    if wants_csv(&headers) {
        let lines = rows
            .into_iter()
            .map(|(asset, account, balance)| {
                let amount = money_text(&asset, &balance);
                vec![asset, account, amount]
            })
            .chain(
                totals
                    .iter()
                    .map(|t| vec![t.asset.clone(), "TOTAL".to_owned(), t.total.clone()]),
            );
        return Ok(csv(
            "trial-balance",
            &["asset", "account", "balance"],
            lines,
        ));
    }
    Ok(Json(TrialBalance {
        as_of,
        balanced,
        totals,
        accounts: rows
            .into_iter()
            .map(
                |(asset, account, balance)| super::accounts::AccountBalanceView {
                    balance: money_text(&asset, &balance),
                    account,
                    asset,
                },
            )
            .collect(),
    })
    .into_response())
}
