//! An account's balance from its postings, read under a lock that serializes what takes
//! money out of it. For the fee accounts, which no stream holds: an adjustment may not
//! give back more than was taken, and no stream version can order two adjustments.

use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::account::Account;
use crate::money::Asset;

/// Locks the outflows of `account` in `asset` until the caller's transaction ends: two
/// transactions that check its balance before taking money out of it take turns. What
/// only pays into it needs no lock: it cannot make a checked balance short.
///
/// # Errors
/// A database error.
pub async fn lock_outflows(
    conn: &mut PgConnection,
    account: &Account,
    asset: Asset,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("escrow-ledger outflows {account} {asset}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// The balance of `account` in `asset`: the sum of its postings committed so far.
///
/// # Errors
/// A database error, or a sum beyond what a decimal holds.
pub async fn balance_of(
    conn: &mut PgConnection,
    account: &Account,
    asset: Asset,
) -> Result<Decimal, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(amount), 0) FROM postings WHERE account = $1 AND asset = $2",
    )
    .bind(account.to_string())
    .bind(asset.to_string())
    .fetch_one(conn)
    .await
}
