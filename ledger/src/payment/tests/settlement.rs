//! Dispute settlements: the money of a resolution, and its refusals.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::account::{Account, Reference};
use crate::dispute::{DisputeStatus, Outcome};
use crate::refusal::RefusalKind;

fn disputed() -> Payment {
    given(&[created(), deposited("100"), frozen()])
}

fn settle(
    outcome: Outcome,
    seller: Option<&str>,
    buyer: Option<&str>,
    fees: Vec<Fee>,
) -> Settlement {
    Settlement {
        dispute_id: DISPUTE,
        outcome,
        seller_amount: seller.map(d),
        buyer_amount: buyer.map(d),
        fees,
    }
}

fn seller() -> Account {
    Account::Seller(Reference::entity(SELLER))
}

fn buyer() -> Account {
    Account::Buyer(Reference::entity(BUYER))
}

#[test]
fn release_to_seller_moves_all_held_with_fees() {
    let p = disputed();
    let events = p
        .settle_dispute(&settle(
            Outcome::ReleaseToSeller,
            None,
            None,
            vec![fee(FeeKind::Fee, "4")],
        ))
        .unwrap();
    let legs = legs(&p, &events);
    assert_eq!(leg_of(&legs, &seller()), d("96"));
    assert_eq!(leg_of(&legs, &Account::PlatformFees), d("4"));
    let p = then(&p, &events);
    assert_eq!(
        (p.held, p.frozen_by, p.status),
        (Decimal::ZERO, None, PaymentStatus::Released)
    );
    assert_eq!((p.released, p.seller_share), (d("100"), d("96")));
}

#[test]
fn release_to_seller_gives_an_excess_back_to_the_buyer() {
    let p = given(&[created(), deposited_excess("110", "10"), frozen()]);
    let events = p
        .settle_dispute(&settle(Outcome::ReleaseToSeller, None, None, vec![]))
        .unwrap();
    let legs = legs(&p, &events);
    assert_eq!(
        (leg_of(&legs, &seller()), leg_of(&legs, &buyer())),
        (d("100"), d("10"))
    );
    assert_eq!(then(&p, &events).status, PaymentStatus::Settled);
}

#[test]
fn refund_to_buyer_takes_fees_out_of_the_buyer_part() {
    let p = disputed();
    let events = p
        .settle_dispute(&settle(
            Outcome::RefundToBuyer,
            None,
            None,
            vec![fee(FeeKind::AmlFee, "1")],
        ))
        .unwrap();
    let legs = legs(&p, &events);
    assert_eq!(leg_of(&legs, &buyer()), d("99"));
    assert_eq!(leg_of(&legs, &seller()), Decimal::ZERO);
    let p = then(&p, &events);
    assert_eq!(
        (p.status, p.refunded, p.buyer_share),
        (PaymentStatus::Refunded, d("100"), d("99"))
    );
}

#[test]
fn a_split_with_fees_takes_them_from_the_seller_part() {
    let p = disputed();
    let fees = vec![fee(FeeKind::Fee, "3"), fee(FeeKind::AmlFee, "1")];
    let events = p
        .settle_dispute(&settle(Outcome::Split, Some("70"), Some("30"), fees))
        .unwrap();
    assert_eq!(events.len(), 1);
    let legs = legs(&p, &events);
    assert_eq!(legs.len(), 5);
    assert_eq!(leg_of(&legs, &Account::Escrow(PAYMENT)), d("-100"));
    assert_eq!(leg_of(&legs, &seller()), d("66"));
    assert_eq!(leg_of(&legs, &buyer()), d("30"));
    let p = then(&p, &events);
    assert_eq!(
        (p.status, p.released, p.refunded),
        (PaymentStatus::Settled, d("70"), d("30"))
    );
}

#[test]
fn a_split_must_equal_what_is_held() {
    let p = disputed();
    let over = p
        .settle_dispute(&settle(Outcome::Split, Some("70"), Some("31"), vec![]))
        .unwrap_err();
    assert_eq!(
        over,
        PaymentError::SplitMismatch {
            requested: d("101"),
            held: d("100")
        }
    );
    assert_eq!(over.kind(), RefusalKind::InsufficientFunds);
    let under = p
        .settle_dispute(&settle(Outcome::Split, Some("70"), Some("29"), vec![]))
        .unwrap_err();
    assert_eq!(under.kind(), RefusalKind::InvalidState);
}

#[test]
fn a_split_refuses_fees_beyond_the_seller_part_and_missing_amounts() {
    let p = disputed();
    assert_eq!(
        p.settle_dispute(&settle(
            Outcome::Split,
            Some("2"),
            Some("98"),
            vec![fee(FeeKind::Fee, "3")]
        )),
        Err(PaymentError::InsufficientFunds {
            requested: d("3"),
            available: d("2")
        })
    );
    assert_eq!(
        p.settle_dispute(&settle(Outcome::Split, Some("2"), None, vec![])),
        Err(PaymentError::MissingSplitAmounts)
    );
    assert_eq!(
        p.settle_dispute(&settle(Outcome::RefundToBuyer, Some("2"), None, vec![])),
        Err(PaymentError::UnexpectedAmounts)
    );
}

#[test]
fn no_action_unfreezes_and_moves_nothing() {
    let p = disputed();
    let events = p
        .settle_dispute(&settle(Outcome::NoAction, None, None, vec![]))
        .unwrap();
    assert_eq!(
        events,
        vec![PaymentEvent::EscrowUnfrozen(EscrowUnfrozen {
            dispute_id: DISPUTE,
            dispute_status: DisputeStatus::Resolved
        })]
    );
    assert!(legs(&p, &events).is_empty());
    assert_eq!(then(&p, &events).status, PaymentStatus::Funded);
    assert_eq!(
        p.settle_dispute(&settle(
            Outcome::NoAction,
            None,
            None,
            vec![fee(FeeKind::Fee, "1")]
        )),
        Err(PaymentError::UnexpectedAmounts)
    );
}

#[test]
fn only_the_freezing_dispute_settles() {
    let mut cmd = settle(Outcome::ReleaseToSeller, None, None, vec![]);
    cmd.dispute_id = Uuid::from_u128(9);
    let err = disputed().settle_dispute(&cmd).unwrap_err();
    assert!(matches!(err, PaymentError::NotFrozenByDispute { .. }));
    assert_eq!(err.kind(), RefusalKind::InvalidState);
    assert!(matches!(
        funded().settle_dispute(&settle(Outcome::ReleaseToSeller, None, None, vec![])),
        Err(PaymentError::NotFrozenByDispute {
            frozen_by: None,
            ..
        })
    ));
}

#[test]
fn settlement_from_a_resolution() {
    use crate::dispute::DisputeResolved;
    let resolution = DisputeResolved {
        outcome: Outcome::Split,
        seller_amount: Some(d("60")),
        buyer_amount: Some(d("40")),
        fees: vec![],
        note: None,
    };
    let cmd = Settlement::from_resolution(DISPUTE, &resolution);
    assert!(disputed().settle_dispute(&cmd).is_ok());
}
