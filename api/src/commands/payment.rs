//! Deciding the payment commands: load the payment, let it decide, append to its stream.

use ledger::event::StreamAppend;
use ledger::payment::{
    Cancel, CreatePayment, Deposit, Payment, PaymentError, Payout, Refund, Release, STREAM_TYPE,
};
use uuid::Uuid;

use super::{after, load_payment, refusal, Ctx, Decision, Reads};
use crate::http::problem::ApiError;

/// A payment command.
#[derive(Debug, Clone)]
pub enum PaymentCommand {
    /// Create a payment.
    Create(CreatePayment),
    /// Record a deposit.
    Deposit(Uuid, Deposit),
    /// Release escrow to the seller.
    Release(Uuid, Release),
    /// Refund escrow to the buyer.
    Refund(Uuid, Refund),
    /// Pay a share out.
    Payout(Uuid, Payout),
    /// Cancel.
    Cancel(Uuid, Cancel),
}

impl PaymentCommand {
    /// A short name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            PaymentCommand::Create(_) => "create_payment",
            PaymentCommand::Deposit(..) => "deposit",
            PaymentCommand::Release(..) => "release",
            PaymentCommand::Refund(..) => "refund",
            PaymentCommand::Payout(..) => "payout",
            PaymentCommand::Cancel(..) => "cancel_payment",
        }
    }
}

/// Maps a payment's refusal to the contract's problem.
pub fn payment_refusal(e: &PaymentError) -> ApiError {
    if matches!(e, PaymentError::NotCreated) {
        return ApiError::NotFound("no such payment".into());
    }
    refusal(e.kind(), e.to_string())
}

pub(super) async fn decide(
    reads: &mut Reads<'_>,
    command: &PaymentCommand,
    ctx: &Ctx,
) -> Result<Decision, ApiError> {
    let id = match command {
        PaymentCommand::Create(c) => c.payment_id,
        PaymentCommand::Deposit(id, _)
        | PaymentCommand::Release(id, _)
        | PaymentCommand::Refund(id, _)
        | PaymentCommand::Payout(id, _)
        | PaymentCommand::Cancel(id, _) => *id,
    };
    let creating = matches!(command, PaymentCommand::Create(_));
    let payment = load_payment(reads, id, creating).await?;
    // A payment that does not exist is answered as such (404), whatever If-Match says.
    if creating || payment.exists() {
        ctx.check_if_match(payment.version)?;
    }
    let mut occurred_at = ctx.now;
    let mut deposit_reference = None;
    let decided = match command {
        PaymentCommand::Create(c) => payment.create(c.clone()),
        PaymentCommand::Deposit(_, c) => {
            occurred_at = c.occurred_at;
            if let Some(terms) = &payment.terms {
                deposit_reference = Some((terms.provider.clone(), c.reference.clone()));
            }
            payment.deposit(c, ctx.now)
        }
        PaymentCommand::Release(_, c) => payment.release(c),
        PaymentCommand::Refund(_, c) => payment.refund(c),
        PaymentCommand::Payout(_, c) => payment.payout(c),
        PaymentCommand::Cancel(_, c) => payment.cancel(c),
    }
    .map_err(|e| payment_refusal(&e))?;
    Ok(Decision {
        id,
        main_stream: id,
        created: matches!(command, PaymentCommand::Create(_)),
        appends: vec![payment_append(&payment, &decided, ctx, occurred_at)],
        deposit_reference,
    })
}

/// The append of decided events to a payment's stream, after its loaded version.
pub(super) fn payment_append(
    payment: &Payment,
    events: &[ledger::payment::PaymentEvent],
    ctx: &Ctx,
    occurred_at: chrono::DateTime<chrono::Utc>,
) -> StreamAppend {
    let stream_id = payment
        .id()
        .or_else(|| {
            events.iter().find_map(|e| match e {
                ledger::payment::PaymentEvent::PaymentCreated(c) => Some(c.payment_id),
                _ => None,
            })
        })
        .unwrap_or_default();
    StreamAppend {
        stream_id,
        stream_type: STREAM_TYPE.into(),
        expected: after(payment.version),
        events: payment.new_events(events, &ctx.metadata, occurred_at),
    }
}
