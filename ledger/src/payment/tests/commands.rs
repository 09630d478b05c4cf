//! One test per payment command and per refusal (settlements are in `settlement.rs`).

use chrono::Duration;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::account::{Account, Reference};
use crate::dispute::DisputeStatus;
use crate::refusal::RefusalKind;

fn release(amount: Option<&str>, fees: Vec<Fee>) -> Release {
    Release {
        amount: amount.map(d),
        fees,
    }
}

fn deposit(amount: &str, allow_excess: bool) -> Deposit {
    Deposit {
        amount: d(amount),
        reference: "ch_1".into(),
        occurred_at: now(),
        allow_excess,
    }
}

#[test]
fn create_makes_a_payment_awaiting_deposit() {
    let events = Payment::default().create(create_cmd()).unwrap();
    let payment = then(&Payment::default(), &events);
    assert_eq!(payment.id(), Some(PAYMENT));
    assert_eq!(payment.status, PaymentStatus::AwaitingDeposit);
    assert_eq!(payment.version, 1);
    assert_eq!(payment.created_at, Some(now()));
}

#[test]
fn create_refuses_an_existing_stream_a_bad_provider_and_a_bad_amount() {
    assert_eq!(
        funded().create(create_cmd()),
        Err(PaymentError::AlreadyExists {
            payment_id: PAYMENT
        })
    );
    let mut cmd = create_cmd();
    cmd.provider = "Stripe".into();
    assert!(matches!(
        Payment::default().create(cmd),
        Err(PaymentError::InvalidProvider { .. })
    ));
    let mut cmd = create_cmd();
    cmd.amount = d("1.005");
    assert!(matches!(
        Payment::default().create(cmd),
        Err(PaymentError::InvalidAmount { .. })
    ));
}

#[test]
fn commands_on_no_stream_are_not_found() {
    let none = Payment::default();
    let err = none.deposit(&deposit("1", false), now()).unwrap_err();
    assert_eq!(err, PaymentError::NotCreated);
    assert_eq!(err.kind(), RefusalKind::NotFound);
    assert_eq!(
        none.release(&Release::default()),
        Err(PaymentError::NotCreated)
    );
}

#[test]
fn deposits_fund_the_payment_step_by_step() {
    let p = given(&[created()]);
    let events = p.deposit(&deposit("40", false), now()).unwrap();
    let p = then(&p, &events);
    assert_eq!(p.status, PaymentStatus::PartiallyFunded);
    assert_eq!(p.held, d("40"));
    let p = then(&p, &p.deposit(&deposit("60", false), now()).unwrap());
    assert_eq!(p.status, PaymentStatus::Funded);
    assert_eq!(p.funded_at, Some(now()));
}

#[test]
fn a_deposit_past_the_amount_is_refused_unless_excess_allowed() {
    let p = given(&[created(), deposited("80")]);
    let err = p.deposit(&deposit("30", false), now()).unwrap_err();
    assert_eq!(
        err,
        PaymentError::DepositExceedsAmount {
            deposit: d("30"),
            deposited: d("80"),
            amount: d("100")
        }
    );
    assert_eq!(err.kind(), RefusalKind::InvalidState);
    let events = p.deposit(&deposit("30", true), now()).unwrap();
    let PaymentEvent::FundsDeposited(e) = &events[0] else {
        panic!()
    };
    assert_eq!(e.excess, d("10"));
    let p = then(&p, &events);
    assert_eq!(
        (p.held, p.excess_held, p.releasable()),
        (d("110"), d("10"), d("100"))
    );
}

#[test]
fn a_deposit_must_be_recent_and_not_in_the_future() {
    let p = given(&[created()]);
    let mut cmd = deposit("10", false);
    cmd.occurred_at = now() + Duration::seconds(1);
    assert!(matches!(
        p.deposit(&cmd, now()),
        Err(PaymentError::DepositInFuture { .. })
    ));
    cmd.occurred_at = now() - Duration::hours(72) - Duration::seconds(1);
    let err = p.deposit(&cmd, now()).unwrap_err();
    assert!(matches!(err, PaymentError::DepositTooOld { .. }));
    assert_eq!(err.kind(), RefusalKind::Validation);
    cmd.occurred_at = now() - Duration::hours(72);
    assert!(p.deposit(&cmd, now()).is_ok());
}

#[test]
fn a_deposit_needs_a_reference_and_a_live_payment() {
    let p = given(&[created()]);
    let mut cmd = deposit("10", false);
    cmd.reference = String::new();
    assert_eq!(p.deposit(&cmd, now()), Err(PaymentError::InvalidReference));
    // The reference is a key of the once-only deposit references: bounded like one.
    cmd.reference = "r".repeat(crate::account::MAX_KEY_LEN + 1);
    assert_eq!(p.deposit(&cmd, now()), Err(PaymentError::InvalidReference));
    cmd.reference = "r".repeat(crate::account::MAX_KEY_LEN);
    assert!(p.deposit(&cmd, now()).is_ok());
    let cancelled = then(&p, &p.cancel(&Cancel { reason: "x".into() }).unwrap());
    assert_eq!(
        cancelled.deposit(&deposit("10", false), now()),
        Err(PaymentError::Cancelled)
    );
}

#[test]
fn a_frozen_escrow_still_takes_deposits() {
    let p = given(&[created(), deposited("50"), frozen()]);
    assert!(p.deposit(&deposit("50", false), now()).is_ok());
}

#[test]
fn release_defaults_to_all_held() {
    let p = funded();
    let events = p.release(&Release::default()).unwrap();
    let legs = legs(&p, &events);
    assert_eq!(legs.len(), 2);
    let p = then(&p, &events);
    assert_eq!(p.status, PaymentStatus::Released);
    assert_eq!(
        (p.held, p.released, p.seller_share),
        (Decimal::ZERO, d("100"), d("100"))
    );
}

#[test]
fn a_release_with_fees_is_one_event_with_all_its_legs() {
    let p = funded();
    let fees = vec![fee(FeeKind::Fee, "2.50"), fee(FeeKind::AmlFee, "0.50")];
    let events = p.release(&release(Some("60"), fees)).unwrap();
    assert_eq!(events.len(), 1);
    let legs = legs(&p, &events);
    assert_eq!(legs.len(), 4);
    assert_eq!(leg_of(&legs, &Account::Escrow(PAYMENT)), d("-60"));
    assert_eq!(
        leg_of(&legs, &Account::Seller(Reference::entity(SELLER))),
        d("57")
    );
    assert_eq!(leg_of(&legs, &Account::PlatformFees), d("2.50"));
    assert_eq!(leg_of(&legs, &Account::PlatformAmlFees), d("0.50"));
    let p = then(&p, &events);
    assert_eq!(p.status, PaymentStatus::PartiallyReleased);
    assert_eq!(
        (p.held, p.fees, p.aml_fees, p.seller_share),
        (d("40"), d("2.5"), d("0.5"), d("57"))
    );
}

#[test]
fn fees_equal_to_the_amount_post_no_seller_leg() {
    let p = funded();
    let events = p
        .release(&release(Some("3"), vec![fee(FeeKind::Fee, "3")]))
        .unwrap();
    let legs = legs(&p, &events);
    assert_eq!(legs.len(), 2);
    assert!(legs
        .iter()
        .all(|l| !matches!(l.account, Account::Seller(_))));
}

#[test]
fn release_refuses_more_than_held_fees_beyond_the_amount_and_an_empty_escrow() {
    let p = funded();
    let err = p.release(&release(Some("100.01"), vec![])).unwrap_err();
    assert_eq!(
        err,
        PaymentError::InsufficientFunds {
            requested: d("100.01"),
            available: d("100")
        }
    );
    assert_eq!(err.kind(), RefusalKind::InsufficientFunds);
    assert_eq!(
        p.release(&release(Some("5"), vec![fee(FeeKind::Fee, "6")])),
        Err(PaymentError::InsufficientFunds {
            requested: d("6"),
            available: d("5")
        })
    );
    let empty = given(&[created()]);
    assert!(matches!(
        empty.release(&Release::default()),
        Err(PaymentError::InsufficientFunds { .. })
    ));
}

#[test]
fn an_excess_can_only_be_refunded() {
    let p = given(&[created(), deposited_excess("110", "10")]);
    assert_eq!(
        p.release(&release(Some("101"), vec![])),
        Err(PaymentError::InsufficientFunds {
            requested: d("101"),
            available: d("100")
        })
    );
    let released = then(&p, &p.release(&Release::default()).unwrap());
    assert_eq!(released.held, d("10"));
    let refunded = then(&released, &released.refund(&Refund::default()).unwrap());
    assert_eq!(
        (refunded.held, refunded.buyer_share),
        (Decimal::ZERO, d("10"))
    );
    assert_eq!(refunded.status, PaymentStatus::Settled);
}

#[test]
fn a_frozen_escrow_refuses_release_refund_and_cancel() {
    let p = given(&[created(), deposited("100"), frozen()]);
    let err = p.release(&Release::default()).unwrap_err();
    assert_eq!(
        err,
        PaymentError::EscrowFrozen {
            dispute_id: DISPUTE
        }
    );
    assert_eq!(err.kind(), RefusalKind::EscrowFrozen);
    assert_eq!(
        p.refund(&Refund::default()),
        Err(PaymentError::EscrowFrozen {
            dispute_id: DISPUTE
        })
    );
    assert_eq!(p.status, PaymentStatus::Disputed);
}

#[test]
fn refund_with_fees_goes_to_the_buyer() {
    let p = funded();
    let events = p
        .refund(&Refund {
            amount: Some(d("30")),
            fees: vec![fee(FeeKind::AmlFee, "1")],
        })
        .unwrap();
    let legs = legs(&p, &events);
    assert_eq!(
        leg_of(&legs, &Account::Buyer(Reference::entity(BUYER))),
        d("29")
    );
    let p = then(&p, &events);
    assert_eq!(p.status, PaymentStatus::PartiallyRefunded);
    let p = then(&p, &p.refund(&Refund::default()).unwrap());
    assert_eq!(
        (p.status, p.refunded, p.buyer_share),
        (PaymentStatus::Refunded, d("100"), d("99"))
    );
}

#[test]
fn refund_refuses_more_than_held() {
    assert!(matches!(
        funded().refund(&Refund {
            amount: Some(d("101")),
            fees: vec![]
        }),
        Err(PaymentError::InsufficientFunds { .. })
    ));
}

#[test]
fn payout_pays_a_share_out_even_while_frozen() {
    let p = funded();
    let p = then(&p, &p.release(&release(Some("50"), vec![])).unwrap());
    let p = then(&p, &[frozen()]);
    let cmd = Payout {
        party: Party::Seller,
        amount: d("50"),
        reference: "po_1".into(),
    };
    let events = p.payout(&cmd).unwrap();
    let legs = legs(&p, &events);
    assert_eq!(leg_of(&legs, &Account::External("stripe".into())), d("50"));
    let p = then(&p, &events);
    assert_eq!(
        (p.seller_share, p.paid_out_seller),
        (Decimal::ZERO, d("50"))
    );
}

#[test]
fn payout_refuses_more_than_the_share() {
    let p = funded();
    let p = then(
        &p,
        &p.refund(&Refund {
            amount: Some(d("20")),
            fees: vec![],
        })
        .unwrap(),
    );
    let cmd = Payout {
        party: Party::Buyer,
        amount: d("20.01"),
        reference: "po".into(),
    };
    assert_eq!(
        p.payout(&cmd),
        Err(PaymentError::InsufficientFunds {
            requested: d("20.01"),
            available: d("20")
        })
    );
    let seller = Payout {
        party: Party::Seller,
        amount: d("1"),
        reference: "po".into(),
    };
    assert!(matches!(
        p.payout(&seller),
        Err(PaymentError::InsufficientFunds { .. })
    ));
}

#[test]
fn cancel_only_while_nothing_is_held() {
    let reason = Cancel {
        reason: "expired".into(),
    };
    let p = given(&[created()]);
    let c = then(&p, &p.cancel(&reason).unwrap());
    assert_eq!(c.status, PaymentStatus::Cancelled);
    assert_eq!(c.cancel(&reason), Err(PaymentError::Cancelled));
    let err = funded().cancel(&reason).unwrap_err();
    assert_eq!(err, PaymentError::FundsHeld { held: d("100") });
    assert_eq!(err.kind(), RefusalKind::InvalidState);
    // All refunded: may be cancelled. All released: may not.
    let f = funded();
    let refunded = then(&f, &f.refund(&Refund::default()).unwrap());
    assert!(refunded.cancel(&reason).is_ok());
    let released = then(&f, &f.release(&Release::default()).unwrap());
    assert_eq!(
        released.cancel(&reason),
        Err(PaymentError::AlreadyReleased { released: d("100") })
    );
}

#[test]
fn freeze_once_and_not_when_cancelled() {
    let p = funded();
    let p2 = then(&p, &p.freeze(DISPUTE).unwrap());
    assert_eq!(p2.frozen_by, Some(DISPUTE));
    assert_eq!(
        p2.freeze(Uuid::from_u128(9)),
        Err(PaymentError::DisputeAlreadyOpen {
            dispute_id: DISPUTE
        })
    );
    let c = given(&[
        created(),
        PaymentEvent::PaymentCancelled(PaymentCancelled { reason: "x".into() }),
    ]);
    assert_eq!(c.freeze(DISPUTE), Err(PaymentError::Cancelled));
}

#[test]
fn unfreeze_by_the_freezing_dispute_with_an_ending_status() {
    let p = given(&[created(), deposited("100"), frozen()]);
    let p2 = then(&p, &p.unfreeze(DISPUTE, DisputeStatus::Withdrawn).unwrap());
    assert_eq!(
        (p2.frozen_by, p2.status, p2.held),
        (None, PaymentStatus::Funded, d("100"))
    );
    let other = Uuid::from_u128(9);
    assert_eq!(
        p.unfreeze(other, DisputeStatus::Closed),
        Err(PaymentError::NotFrozenByDispute {
            dispute_id: other,
            frozen_by: Some(DISPUTE)
        })
    );
    assert_eq!(
        p.unfreeze(DISPUTE, DisputeStatus::UnderReview),
        Err(PaymentError::DisputeNotEnded {
            status: DisputeStatus::UnderReview
        })
    );
}

#[test]
fn status_follows_the_money() {
    use PaymentStatus as S;
    type Step = fn(&Payment) -> Vec<PaymentEvent>;
    let mut p = given(&[created()]);
    let mut seen = vec![p.status];
    let steps: Vec<Step> = vec![
        |p| p.deposit(&deposit("50", false), now()).unwrap(),
        |p| p.deposit(&deposit("50", false), now()).unwrap(),
        |p| p.freeze(DISPUTE).unwrap(),
        |p| p.unfreeze(DISPUTE, DisputeStatus::Rejected).unwrap(),
        |p| p.release(&release(Some("60"), vec![])).unwrap(),
        |p| p.refund(&Refund::default()).unwrap(),
    ];
    for step in steps {
        let events = step(&p);
        p = then(&p, &events);
        seen.push(p.status);
    }
    assert_eq!(
        seen,
        [
            S::AwaitingDeposit,
            S::PartiallyFunded,
            S::Funded,
            S::Disputed,
            S::Funded,
            S::PartiallyReleased,
            S::Settled
        ]
    );
    assert_eq!(p.version, 7);
}
