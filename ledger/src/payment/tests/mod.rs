//! Given/when/then tests of the payment aggregate: a history of events is given, a
//! command is decided, and the events (or the refusal) are checked.

mod adjust;
mod codec;
mod commands;
mod imported;
mod overflow;
mod settlement;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::account::Reference;
use crate::money::Asset;

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

pub(super) fn now() -> DateTime<Utc> {
    t0() + Duration::hours(1)
}

pub(super) fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

pub(super) const PAYMENT: Uuid = Uuid::from_u128(1);
pub(super) const DISPUTE: Uuid = Uuid::from_u128(2);
pub(super) const SELLER: Uuid = Uuid::from_u128(3);
pub(super) const BUYER: Uuid = Uuid::from_u128(4);

pub(super) fn create_cmd() -> CreatePayment {
    CreatePayment {
        payment_id: PAYMENT,
        buyer: Reference::entity(BUYER),
        seller: Reference::entity(SELLER),
        purchase_request: Reference::external("tmpl_8f2a"),
        seller_offer: None,
        amount: d("100"),
        asset: Asset::Usd,
        provider: "stripe".into(),
        metadata: None,
    }
}

pub(super) fn created() -> PaymentEvent {
    Payment::default().create(create_cmd()).unwrap().remove(0)
}

pub(super) fn deposited(amount: &str) -> PaymentEvent {
    PaymentEvent::FundsDeposited(FundsDeposited {
        amount: d(amount),
        reference: format!("ch_{amount}"),
        allow_excess: false,
        excess: Decimal::ZERO,
    })
}

pub(super) fn deposited_excess(amount: &str, excess: &str) -> PaymentEvent {
    PaymentEvent::FundsDeposited(FundsDeposited {
        amount: d(amount),
        reference: "ch_x".into(),
        allow_excess: true,
        excess: d(excess),
    })
}

pub(super) fn frozen() -> PaymentEvent {
    PaymentEvent::EscrowFrozen(EscrowFrozen {
        dispute_id: DISPUTE,
    })
}

pub(super) fn fee(kind: FeeKind, amount: &str) -> Fee {
    Fee {
        kind,
        amount: d(amount),
    }
}

/// A payment with this history.
pub(super) fn given(events: &[PaymentEvent]) -> Payment {
    let mut payment = Payment::default();
    for e in events {
        payment.apply(e, t0());
    }
    payment
}

/// A funded payment of 100 USD.
pub(super) fn funded() -> Payment {
    given(&[created(), deposited("100")])
}

/// Applies decided events and returns the new state.
pub(super) fn then(payment: &Payment, events: &[PaymentEvent]) -> Payment {
    let mut next = payment.clone();
    for e in events {
        next.apply(e, now());
    }
    next
}

/// The legs of decided events, as `new_events` would post them, checked balanced.
pub(super) fn legs(payment: &Payment, events: &[PaymentEvent]) -> Vec<crate::posting::Posting> {
    let accounts = payment.accounts().unwrap();
    let legs: Vec<_> = events.iter().flat_map(|e| e.postings(&accounts)).collect();
    crate::posting::check_balanced(&legs).unwrap();
    legs
}

pub(super) fn leg_of(
    legs: &[crate::posting::Posting],
    account: &crate::account::Account,
) -> Decimal {
    legs.iter()
        .filter(|p| &p.account == account)
        .map(|p| p.amount)
        .sum()
}
