//! Adjustments: corrections between this payment's accounts and platform accounts, and
//! imported history that drove the escrow below zero.

use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::account::{Account, Reference};
use crate::refusal::RefusalKind;

fn adjustment(from: Account, to: Account, amount: &str) -> Adjustment {
    Adjustment {
        adjustment_id: Uuid::from_u128(7),
        from,
        to,
        amount: d(amount),
        asset: Asset::Usd,
        reason: "fix".into(),
    }
}

#[test]
fn adjust_moves_a_share_against_a_platform_account() {
    let p = funded();
    let cmd = adjustment(Account::Escrow(PAYMENT), Account::PlatformAdjustments, "5");
    let events = p.adjust(&cmd).unwrap();
    legs(&p, &events);
    let p = then(&p, &events);
    assert_eq!(p.held, d("95"));
    // What explains `held` beside the deposit: 100 in, 5 adjusted out.
    assert_eq!(p.escrow_adjusted, d("-5"));
    assert_eq!(
        p.deposited - p.released - p.refunded + p.escrow_adjusted,
        p.held
    );
    let cmd = adjustment(
        Account::PlatformSuspense,
        Account::Seller(Reference::entity(SELLER)),
        "5",
    );
    let p = then(&p, &p.adjust(&cmd).unwrap());
    assert_eq!(p.seller_share, d("5"));
}

#[test]
fn adjust_refusals() {
    let p = funded();
    let seller = Account::Seller(Reference::entity(SELLER));
    let stranger = Account::Seller(Reference::entity(Uuid::from_u128(99)));
    let adj = Account::PlatformAdjustments;
    let err = p
        .adjust(&adjustment(stranger.clone(), adj.clone(), "1"))
        .unwrap_err();
    assert!(matches!(err, PaymentError::AccountNotOfPayment { .. }));
    assert_eq!(err.kind(), RefusalKind::Validation);
    assert_eq!(
        p.adjust(&adjustment(seller.clone(), adj.clone(), "1")),
        Err(PaymentError::InsufficientFunds {
            requested: d("1"),
            available: Decimal::ZERO
        })
    );
    assert_eq!(
        p.adjust(&adjustment(Account::Escrow(PAYMENT), seller.clone(), "1")),
        Err(PaymentError::NoPlatformCounterpart)
    );
    assert_eq!(
        p.adjust(&adjustment(adj.clone(), adj.clone(), "1")),
        Err(PaymentError::SameAccount)
    );
    let mut eur = adjustment(adj.clone(), seller.clone(), "1");
    eur.asset = Asset::Eur;
    assert!(matches!(
        p.adjust(&eur),
        Err(PaymentError::WrongAsset { .. })
    ));
    let f = then(&p, &[frozen()]);
    assert_eq!(
        f.adjust(&adjustment(adj, seller, "1")),
        Err(PaymentError::EscrowFrozen {
            dispute_id: DISPUTE
        })
    );
}

#[test]
fn an_imported_negative_escrow_moves_nothing_out_until_made_whole() {
    let p = given(&[
        created(),
        PaymentEvent::FundsReleased(FundsReleased {
            amount: d("30"),
            fees: vec![],
            seller_amount: d("30"),
        }),
    ]);
    assert_eq!(p.held, d("-30"));
    assert!(matches!(
        p.release(&Release::default()),
        Err(PaymentError::InsufficientFunds { .. })
    ));
    assert!(matches!(
        p.refund(&Refund::default()),
        Err(PaymentError::InsufficientFunds { .. })
    ));
    let fix = adjustment(Account::PlatformAdjustments, Account::Escrow(PAYMENT), "40");
    let p = then(&p, &p.adjust(&fix).unwrap());
    assert_eq!(p.held, d("10"));
    assert_eq!(p.escrow_adjusted, d("40"));
    assert!(p.release(&Release::default()).is_ok());
}

#[test]
fn a_cancelled_payments_escrow_takes_no_money_by_adjustment() {
    let p = given(&[created()]);
    let p = then(
        &p,
        &p.cancel(&Cancel {
            reason: "buyer left".into(),
        })
        .unwrap(),
    );
    let into_escrow = adjustment(Account::PlatformAdjustments, Account::Escrow(PAYMENT), "10");
    let err = p.adjust(&into_escrow).unwrap_err();
    assert_eq!(err, PaymentError::Cancelled);
    assert_eq!(err.kind(), RefusalKind::InvalidState);
    // Its parties' shares may still be corrected.
    let to_buyer = adjustment(
        Account::PlatformAdjustments,
        Account::Buyer(Reference::entity(BUYER)),
        "10",
    );
    assert!(p.adjust(&to_buyer).is_ok());
}
