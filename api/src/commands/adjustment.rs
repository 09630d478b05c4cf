//! Deciding adjustments: a correction between two accounts, one of them
//! `platform:adjustments` or `platform:suspense`. One touching a payment's escrow, seller or
//! buyer account goes to that payment's stream, so its shares are checked there; one
//! between platform or provider accounts gets a stream of its own.

use ledger::event::{ExpectedVersion, NewEvent, StreamAppend};
use ledger::payment::{Adjustment, AdjustmentPosted};
use ledger::posting::transfer;
use ledger::Account;
use sqlx::PgConnection;
use uuid::Uuid;

use super::payment::{payment_append, payment_refusal};
use super::{load_payment, Ctx, Decision, Reads};
use crate::http::problem::ApiError;

/// The stream type of adjustments not tied to a payment.
pub const STREAM_TYPE: &str = "adjustment";

/// An adjustment, with the payment it concerns if any.
#[derive(Debug, Clone)]
pub struct AdjustCommand {
    /// The correction.
    pub adjustment: Adjustment,
    /// The payment whose escrow, seller or buyer account it touches.
    pub payment_id: Option<Uuid>,
}

fn is_payment_account(a: &Account) -> bool {
    matches!(
        a,
        Account::Escrow(_) | Account::Seller(_) | Account::Buyer(_)
    )
}

/// Checks what needs no state.
///
/// # Errors
/// [`ApiError::Validation`].
pub fn check_shape(cmd: &AdjustCommand) -> Result<(), ApiError> {
    let a = &cmd.adjustment;
    if a.from == a.to {
        return Err(ApiError::validation(
            "from and to must be different accounts",
        ));
    }
    let counter =
        |x: &Account| matches!(x, Account::PlatformAdjustments | Account::PlatformSuspense);
    if !counter(&a.from) && !counter(&a.to) {
        return Err(ApiError::validation(
            "one side of an adjustment must be platform:adjustments or platform:suspense",
        ));
    }
    if (is_payment_account(&a.from) || is_payment_account(&a.to)) && cmd.payment_id.is_none() {
        return Err(ApiError::validation(
            "an adjustment of an escrow, seller or buyer account must name its payment_id",
        ));
    }
    if a.reason.trim().is_empty() {
        return Err(ApiError::validation("reason must not be empty"));
    }
    // A provider's account named here may be new: bounded like a provider of a payment.
    // (A seller or buyer account must be its payment's own, so it is no new name.)
    for account in [&a.from, &a.to] {
        if matches!(account, Account::External(_)) && !account.is_bounded() {
            return Err(ApiError::validation(format!(
                "a provider's name may be at most {} bytes long",
                ledger::account::MAX_KEY_LEN
            )));
        }
    }
    Ok(())
}

/// What an adjustment out of a platform account that may not go below zero takes: the
/// fee accounts (a fee given back must have been taken). Not checked: the clearing
/// accounts, `platform:adjustments` (the counter-account of corrections) and
/// `platform:suspense` (an orphan deposit the import could not place leaves it below
/// zero, its money in `escrow:<payment>`, and placing such money is an adjustment out of
/// it), and the provider accounts (negative by the sign rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Outflow {
    /// The account debited.
    pub account: Account,
    /// Its asset.
    pub asset: ledger::Asset,
    /// How much.
    pub amount: rust_decimal::Decimal,
}

/// The outflow to check before `cmd` is appended, if it has one.
pub fn outflow(cmd: &AdjustCommand) -> Option<Outflow> {
    let a = &cmd.adjustment;
    matches!(a.from, Account::PlatformFees | Account::PlatformAmlFees).then(|| Outflow {
        account: a.from.clone(),
        asset: a.asset,
        amount: a.amount,
    })
}

/// Refuses the outflow if its account holds less, reading the balance under the account's
/// outflow lock, in the transaction that then appends the adjustment.
///
/// # Errors
/// `insufficient_funds`, or a database error.
pub async fn check_outflow(conn: &mut PgConnection, o: &Outflow) -> Result<(), ApiError> {
    ledger::store::lock_outflows(conn, &o.account, o.asset).await?;
    let held = ledger::store::balance_of(conn, &o.account, o.asset).await?;
    if held < o.amount {
        return Err(ApiError::InsufficientFunds(format!(
            "{} holds {} {}; the adjustment would take {} out of it",
            o.account,
            o.asset.format(held),
            o.asset,
            o.asset.format(o.amount)
        )));
    }
    Ok(())
}

pub(super) async fn decide(
    reads: &mut Reads<'_>,
    cmd: &AdjustCommand,
    ctx: &Ctx,
) -> Result<Decision, ApiError> {
    check_shape(cmd)?;
    let a = &cmd.adjustment;
    if let Some(payment_id) = cmd.payment_id {
        let payment = load_payment(reads, payment_id, false).await?;
        if !payment.exists() {
            return Err(ApiError::NotFound(format!("no payment {payment_id}")));
        }
        ctx.check_if_match(payment.version)?;
        let events = payment.adjust(a).map_err(|e| payment_refusal(&e))?;
        return Ok(Decision {
            id: a.adjustment_id,
            main_stream: payment_id,
            created: true,
            appends: vec![payment_append(&payment, &events, ctx, ctx.now)],
            deposit_reference: None,
        });
    }
    // Its own stream, new: version 0.
    ctx.check_if_match(0)?;
    ledger::money::check_scale(a.asset, a.amount)
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let posted = AdjustmentPosted {
        adjustment_id: a.adjustment_id,
        from: a.from.clone(),
        to: a.to.clone(),
        amount: a.amount,
        asset: a.asset,
        reason: a.reason.clone(),
    };
    let payload = serde_json::to_value(&posted).map_err(|e| ApiError::Internal(e.into()))?;
    let event = NewEvent::new(
        "AdjustmentPosted",
        payload,
        &ctx.metadata,
        ctx.now,
        transfer(a.from.clone(), a.to.clone(), a.asset, a.amount).to_vec(),
    );
    Ok(Decision {
        id: a.adjustment_id,
        main_stream: a.adjustment_id,
        created: true,
        appends: vec![StreamAppend {
            stream_id: a.adjustment_id,
            stream_type: STREAM_TYPE.into(),
            expected: ExpectedVersion::NoStream,
            events: vec![event],
        }],
        deposit_reference: None,
    })
}
