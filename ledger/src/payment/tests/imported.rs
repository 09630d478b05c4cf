//! Imported history: an imported payment and its entries fold like live events, and the
//! commands keep their invariants on it.

use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::account::{Account, Reference};
use crate::decode::DecodeError;

fn imported(status: &str) -> PaymentEvent {
    let PaymentEvent::PaymentCreated(terms) = created() else {
        unreachable!()
    };
    PaymentEvent::PaymentImported(PaymentImported {
        terms,
        legacy_status: status.into(),
        mapped_status: PaymentStatus::from_legacy(status).unwrap(),
        created_at: t0(),
        created_at_from_object_id: false,
        updated_at: Some(t0()),
        paid_at: None,
        released_at: None,
        refunded_at: None,
        cancelled_at: None,
        blockchain: None,
        document: json!({"status": status}),
    })
}

fn seller() -> Account {
    Account::Seller(Reference::entity(SELLER))
}

fn buyer() -> Account {
    Account::Buyer(Reference::entity(BUYER))
}

fn entry(kind: EntryKind, amount: &str, from: Account, to: Account) -> PaymentEvent {
    PaymentEvent::LedgerEntryImported(LedgerEntryImported {
        entry_id: Uuid::from_u128(99),
        payment_id: Some(PAYMENT),
        kind,
        direction: None,
        account: None,
        party: (kind == EntryKind::Payout).then_some(if from == buyer() {
            Party::Buyer
        } else {
            Party::Seller
        }),
        amount: d(amount),
        asset: Asset::Usd,
        from,
        to,
        reference: Some("tx1".into()),
        note: None,
        created_by: None,
        purchase_request: None,
        balance_after: None,
        sign_dropped: false,
        placement: EntryPlacement::Payment,
        document: json!({}),
    })
}

fn external() -> Account {
    Account::External("stripe".into())
}

fn escrow() -> Account {
    Account::Escrow(PAYMENT)
}

fn deposit(amount: &str) -> PaymentEvent {
    entry(EntryKind::Deposit, amount, external(), escrow())
}

/// One event of each imported type, for the codec tests.
pub(super) fn samples() -> Vec<PaymentEvent> {
    vec![imported("funded"), deposit("12.5")]
}

#[test]
fn an_imported_dispute_freezes_a_legacy_cancelled_payment_holding_money_a_live_one_does_not() {
    const DISPUTE: Uuid = Uuid::from_u128(77);
    let holding = given(&[imported("cancelled"), deposit("100")]);
    assert!(holding.cancelled_at.is_some());
    let frozen = then(&holding, &holding.freeze_imported(DISPUTE).unwrap());
    assert_eq!(frozen.frozen_by, Some(DISPUTE));
    // A live dispute on it is still refused, as on any cancelled payment.
    assert_eq!(holding.freeze(DISPUTE), Err(PaymentError::Cancelled));
    let empty = given(&[imported("cancelled")]);
    assert_eq!(empty.freeze_imported(DISPUTE), Err(PaymentError::Cancelled));
}

#[test]
fn an_imported_payment_has_the_terms_of_a_created_one() {
    let p = given(&[imported("pending")]);
    assert_eq!(p.terms, given(&[created()]).terms);
    assert_eq!(p.status, PaymentStatus::AwaitingDeposit);
    assert_eq!(p.created_at, Some(t0()));
    assert!(p.accounts().is_some());
}

#[test]
fn imported_entries_move_money_like_live_events() {
    let p = given(&[
        imported("released"),
        deposit("100"),
        entry(EntryKind::Fee, "3", escrow(), Account::PlatformFees),
        entry(EntryKind::AmlFee, "1", escrow(), Account::PlatformAmlFees),
        entry(EntryKind::Release, "96", escrow(), seller()),
        entry(EntryKind::Payout, "50", seller(), external()),
    ]);
    assert_eq!(
        (p.deposited, p.held, p.released, p.fees, p.aml_fees),
        (d("100"), Decimal::ZERO, d("96"), d("3"), d("1"))
    );
    assert_eq!((p.seller_share, p.paid_out_seller), (d("46"), d("50")));
    assert_eq!(p.status, PaymentStatus::Released);
    assert_eq!(p.funded_at, Some(t0()));
}

#[test]
fn an_imported_refund_and_adjustments_update_the_shares() {
    let p = given(&[
        imported("partially_refunded"),
        deposit("100"),
        entry(EntryKind::Refund, "40", escrow(), buyer()),
        entry(
            EntryKind::Adjustment,
            "5",
            Account::PlatformAdjustments,
            escrow(),
        ),
        entry(
            EntryKind::Adjustment,
            "2",
            buyer(),
            Account::PlatformAdjustments,
        ),
    ]);
    assert_eq!(
        (p.held, p.refunded, p.buyer_share),
        (d("65"), d("40"), d("38"))
    );
    assert_eq!(p.status, PaymentStatus::PartiallyRefunded);
}

#[test]
fn an_imported_deposit_beyond_the_amount_is_an_excess() {
    let p = given(&[imported("funded"), deposit("80"), deposit("30")]);
    assert_eq!((p.excess, p.excess_held), (d("10"), d("10")));
    assert_eq!(p.releasable(), d("100"));
}

#[test]
fn imported_postings_are_the_carried_transfer() {
    let e = entry(EntryKind::Release, "10", escrow(), seller());
    let accounts = given(&[imported("funded")]).accounts().unwrap();
    let legs = e.postings(&accounts);
    crate::posting::check_balanced(&legs).unwrap();
    assert_eq!(legs.len(), 2);
    assert_eq!(
        (legs[0].account.clone(), legs[0].amount),
        (escrow(), d("-10"))
    );
    assert!(imported("funded").postings(&accounts).is_empty());
}

#[test]
fn imported_negative_escrow_blocks_money_moving_out() {
    let p = given(&[
        imported("released"),
        deposit("50"),
        entry(EntryKind::Release, "80", escrow(), seller()),
    ]);
    assert_eq!(p.held, d("-30"));
    assert_eq!(
        p.release(&Release::default()).unwrap_err().kind(),
        crate::refusal::RefusalKind::InsufficientFunds
    );
    assert!(matches!(
        p.refund(&Refund {
            amount: Some(d("1")),
            fees: vec![]
        }),
        Err(PaymentError::InsufficientFunds { .. })
    ));
    assert!(matches!(
        p.cancel(&Cancel { reason: "x".into() }),
        Err(PaymentError::FundsHeld { .. })
    ));
    // An adjustment into the escrow makes it whole: zero, so still nothing to release.
    let fix = p
        .adjust(&Adjustment {
            adjustment_id: Uuid::from_u128(7),
            from: Account::PlatformAdjustments,
            to: escrow(),
            amount: d("30"),
            asset: Asset::Usd,
            reason: "import shortfall".into(),
        })
        .unwrap();
    let p = then(&p, &fix);
    assert_eq!(p.held, Decimal::ZERO);
    assert!(matches!(
        p.release(&Release::default()),
        Err(PaymentError::InsufficientFunds { .. })
    ));
}

#[test]
fn a_legacy_cancelled_payment_is_cancelled() {
    for status in ["cancelled", "expired", "failed"] {
        let p = given(&[imported(status)]);
        assert_eq!(p.status, PaymentStatus::Cancelled, "{status}");
        assert_eq!(
            p.deposit(
                &Deposit {
                    amount: d("1"),
                    reference: "r".into(),
                    occurred_at: now(),
                    allow_excess: false
                },
                now()
            ),
            Err(PaymentError::Cancelled)
        );
    }
}

#[test]
fn commands_work_on_an_imported_payment() {
    let p = given(&[imported("funded"), deposit("100")]);
    let events = p
        .release(&Release {
            amount: Some(d("60")),
            fees: vec![fee(FeeKind::Fee, "2")],
        })
        .unwrap();
    let p = then(&p, &events);
    assert_eq!((p.held, p.seller_share), (d("40"), d("58")));
    let frozen = p.freeze(DISPUTE).unwrap();
    let p = then(&p, &frozen);
    assert_eq!(p.status, PaymentStatus::Disputed);
}

#[test]
fn imported_events_round_trip_through_the_codec() {
    for event in [
        imported("confirming"),
        entry(EntryKind::Payout, "1.5", buyer(), external()),
    ] {
        let decoded = PaymentEvent::decode(event.event_type(), 1, &event.payload()).unwrap();
        assert_eq!(decoded, event);
    }
    assert!(PaymentEvent::EVENT_TYPES.contains(&"PaymentImported"));
    assert!(PaymentEvent::EVENT_TYPES.contains(&"LedgerEntryImported"));
    assert!(matches!(
        PaymentEvent::decode("LedgerEntryImported", 1, &json!({"kind": "deposit"})),
        Err(DecodeError::Payload { .. })
    ));
}

#[test]
fn entry_kinds_have_their_legacy_names() {
    for kind in EntryKind::ALL {
        assert_eq!(EntryKind::from_legacy(kind.as_str()), Some(kind));
    }
    assert_eq!(EntryKind::from_legacy("Deposit"), None);
}
