//! Deciding the dispute commands. Opening, ending and resolving a dispute append to the
//! dispute's and the payment's streams in one transaction, so the freeze and the money
//! move with the decision.

use ledger::dispute::{
    self, Dispute, DisputeError, DisputeStatus, OpenDispute, PostMessage, Priority, Resolve,
    SubmitEvidence,
};
use ledger::event::StreamAppend;
use ledger::payment::Settlement;
use ledger::Reference;
use uuid::Uuid;

use super::payment::{payment_append, payment_refusal};
use super::{after, check_stream_type, load_payment, refusal, Ctx, Decision, Reads};
use crate::http::problem::ApiError;

/// A dispute command.
#[derive(Debug, Clone)]
pub enum DisputeCommand {
    /// Open a dispute on a payment.
    Open(OpenDispute),
    /// Add evidence.
    Evidence(Uuid, SubmitEvidence),
    /// Post a message.
    Message(Uuid, PostMessage),
    /// Assign an admin.
    Assign(Uuid, Reference),
    /// Set the priority.
    Priority(Uuid, Priority),
    /// Change the status (not to `resolved`).
    Status(Uuid, DisputeStatus, Option<String>),
    /// Resolve, moving the money decided.
    Resolve(Uuid, Resolve),
}

impl DisputeCommand {
    /// A short name for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            DisputeCommand::Open(_) => "open_dispute",
            DisputeCommand::Evidence(..) => "submit_evidence",
            DisputeCommand::Message(..) => "post_message",
            DisputeCommand::Assign(..) => "assign_admin",
            DisputeCommand::Priority(..) => "set_priority",
            DisputeCommand::Status(..) => "change_dispute_status",
            DisputeCommand::Resolve(..) => "resolve_dispute",
        }
    }
}

fn dispute_refusal(e: &DisputeError) -> ApiError {
    if matches!(e, DisputeError::NotOpened) {
        return ApiError::NotFound("no such dispute".into());
    }
    refusal(e.kind(), e.to_string())
}

/// Loads a dispute's state and version; another type's stream under the id is refused
/// (see [`super::load_payment`]).
async fn load_dispute(
    reads: &mut Reads<'_>,
    id: Uuid,
    creating: bool,
) -> Result<Dispute, ApiError> {
    let events = reads.stream(id).await?;
    check_stream_type(&events, id, dispute::STREAM_TYPE, creating)?;
    Dispute::from_history(&events).map_err(|e| ApiError::Internal(e.into()))
}

fn dispute_append(
    id: Uuid,
    state: &Dispute,
    events: &[dispute::DisputeEvent],
    ctx: &Ctx,
) -> StreamAppend {
    StreamAppend {
        stream_id: id,
        stream_type: dispute::STREAM_TYPE.into(),
        expected: after(state.version),
        events: dispute::new_events(events, &ctx.metadata, ctx.now),
    }
}

pub(super) async fn decide(
    reads: &mut Reads<'_>,
    command: &DisputeCommand,
    ctx: &Ctx,
) -> Result<Decision, ApiError> {
    let (id, created) = match command {
        DisputeCommand::Open(c) => (c.dispute_id, true),
        DisputeCommand::Evidence(id, _)
        | DisputeCommand::Message(id, _)
        | DisputeCommand::Assign(id, _)
        | DisputeCommand::Priority(id, _)
        | DisputeCommand::Status(id, _, _)
        | DisputeCommand::Resolve(id, _) => (*id, false),
    };
    let state = load_dispute(reads, id, created).await?;
    // A dispute that does not exist is answered as such (404), whatever If-Match says.
    if created || state.exists() {
        ctx.check_if_match(state.version)?;
    }
    let refuse = |e: DisputeError| dispute_refusal(&e);
    let mut appends = Vec::new();
    match command {
        DisputeCommand::Open(c) => {
            let payment = load_payment(reads, c.payment_id, false).await?;
            if !payment.exists() {
                return Err(ApiError::NotFound(format!("no payment {}", c.payment_id)));
            }
            let events = state.open(c.clone()).map_err(refuse)?;
            let frozen = payment.freeze(id).map_err(|e| payment_refusal(&e))?;
            appends.push(dispute_append(id, &state, &events, ctx));
            appends.push(payment_append(&payment, &frozen, ctx, ctx.now));
        }
        DisputeCommand::Evidence(_, c) => {
            let events = state.submit_evidence(c.clone()).map_err(refuse)?;
            appends.push(dispute_append(id, &state, &events, ctx));
        }
        DisputeCommand::Message(_, c) => {
            let events = state.post_message(c.clone()).map_err(refuse)?;
            appends.push(dispute_append(id, &state, &events, ctx));
        }
        DisputeCommand::Assign(_, admin) => {
            let events = state.assign(admin.clone()).map_err(refuse)?;
            appends.push(dispute_append(id, &state, &events, ctx));
        }
        DisputeCommand::Priority(_, p) => {
            let events = state.set_priority(*p).map_err(refuse)?;
            appends.push(dispute_append(id, &state, &events, ctx));
        }
        DisputeCommand::Status(_, status, note) => {
            let events = state.change_status(*status, note.clone()).map_err(refuse)?;
            appends.push(dispute_append(id, &state, &events, ctx));
            if status.unfreezes_escrow() {
                let payment_id = state
                    .payment_id()
                    .ok_or_else(|| ApiError::NotFound("no such dispute".into()))?;
                let payment = load_payment(reads, payment_id, false).await?;
                let unfrozen = payment
                    .unfreeze(id, *status)
                    .map_err(|e| payment_refusal(&e))?;
                if !unfrozen.is_empty() {
                    appends.push(payment_append(&payment, &unfrozen, ctx, ctx.now));
                }
            }
        }
        DisputeCommand::Resolve(_, c) => {
            let events = state.resolve(c.clone()).map_err(refuse)?;
            let payment_id = state
                .payment_id()
                .ok_or_else(|| ApiError::NotFound("no such dispute".into()))?;
            let payment = load_payment(reads, payment_id, false).await?;
            let resolved = events.iter().find_map(|e| match e {
                dispute::DisputeEvent::DisputeResolved(r) => Some(r),
                _ => None,
            });
            let resolved = resolved.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("resolve decided no resolution"))
            })?;
            let money = payment
                .settle_dispute(&Settlement::from_resolution(id, resolved))
                .map_err(|e| payment_refusal(&e))?;
            appends.push(dispute_append(id, &state, &events, ctx));
            appends.push(payment_append(&payment, &money, ctx, ctx.now));
        }
    }
    Ok(Decision {
        id,
        main_stream: id,
        created,
        appends,
        deposit_reference: None,
    })
}
