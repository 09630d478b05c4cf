//! Sums at the edge of the decimal type: a command whose sums would not fit exactly is
//! refused with `AmountOutOfRange` (400 `validation_failed`), never panics and never
//! rounds; folding stored history that overflows is an error, not a panic.

use super::*;
use crate::event::RecordedEvent;
use crate::refusal::RefusalKind;

/// 28 nines: the most digits an amount may have (`parse_decimal_exact`).
const HUGE: &str = "9999999999999999999999999999";

fn excess_deposit(amount: &str, reference: &str) -> Deposit {
    Deposit {
        amount: d(amount),
        reference: reference.into(),
        occurred_at: now(),
        allow_excess: true,
    }
}

/// A payment of `amount` USD with `deposits` huge excess deposits folded in.
fn huge_history(deposits: usize) -> Payment {
    let mut payment = given(&[created()]);
    for i in 0..deposits {
        let events = payment
            .deposit(&excess_deposit(HUGE, &format!("r{i}")), now())
            .unwrap();
        payment = then(&payment, &events);
    }
    payment
}

#[test]
fn deposits_past_the_type_are_refused_not_panicking() {
    // 28 nines fit once but not eight times (the mantissa holds 7.9e28).
    let mut payment = given(&[created()]);
    let mut refused = None;
    for i in 0..10 {
        match payment.deposit(&excess_deposit(HUGE, &format!("r{i}")), now()) {
            Ok(events) => payment = then(&payment, &events),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert_eq!(refused, Some(PaymentError::AmountOutOfRange));
    assert_eq!(
        PaymentError::AmountOutOfRange.kind(),
        RefusalKind::Validation
    );
    assert_eq!(payment.deposited, d(HUGE) * Decimal::from(7));
}

#[test]
fn a_sum_that_would_round_is_refused() {
    // 27 digits and cents: adding more cents would need a 97-bit mantissa, which
    // rust_decimal answers by dropping a decimal. The ledger refuses instead.
    let big = "99999999999999999999999999.99";
    let mut payment = given(&[created()]);
    for i in 0..7 {
        let events = payment
            .deposit(&excess_deposit(big, &format!("r{i}")), now())
            .unwrap();
        payment = then(&payment, &events);
    }
    assert_eq!(payment.deposited.scale(), 2);
    assert_eq!(
        payment.deposit(&excess_deposit(big, "r7"), now()),
        Err(PaymentError::AmountOutOfRange)
    );
    assert_eq!(
        payment
            .deposit(&excess_deposit("0.01", "r8"), now())
            .map(|_| ()),
        Ok(()),
        "a small deposit still fits exactly"
    );
}

#[test]
fn fees_and_split_parts_past_the_type_are_refused() {
    let payment = funded();
    // Eight fees of 28 nines add up past the mantissa.
    let fees: Vec<Fee> = (0..8)
        .map(|i| {
            fee(
                if i % 2 == 0 {
                    FeeKind::Fee
                } else {
                    FeeKind::AmlFee
                },
                HUGE,
            )
        })
        .collect();
    let release = Release {
        amount: None,
        fees: fees.clone(),
    };
    assert_eq!(
        payment.release(&release),
        Err(PaymentError::AmountOutOfRange)
    );
    let refund = Refund { amount: None, fees };
    assert_eq!(payment.refund(&refund), Err(PaymentError::AmountOutOfRange));

    let disputed = then(&payment, &[frozen()]);
    let split = Settlement {
        dispute_id: DISPUTE,
        outcome: crate::dispute::Outcome::Split,
        seller_amount: Some(Decimal::MAX),
        buyer_amount: Some(Decimal::MAX),
        fees: Vec::new(),
    };
    assert_eq!(
        disputed.settle_dispute(&split),
        Err(PaymentError::AmountOutOfRange)
    );
}

#[test]
fn folding_history_that_overflows_is_an_error_not_a_panic() {
    let payment = huge_history(7);
    let before = payment.clone();
    let mut next = payment.clone();
    let overflowing = deposited_excess(HUGE, HUGE);
    assert_eq!(
        next.try_apply(&overflowing, now()),
        Err(PaymentError::AmountOutOfRange)
    );
    assert_eq!(next, before, "a refused fold leaves the state as it was");
    // `apply` is infallible: it leaves the event's money out and counts the version.
    next.apply(&overflowing, now());
    assert_eq!(next.deposited, before.deposited);
    assert_eq!(next.version, before.version + 1);

    // Stored history of the same shape: `from_history` says which event.
    let mut events = vec![created()];
    events.extend((0..8).map(|_| deposited_excess(HUGE, HUGE)));
    let recorded: Vec<RecordedEvent> = events
        .iter()
        .zip(1..)
        .map(|(e, version)| RecordedEvent {
            position: version,
            tx_id: 1,
            stream_id: PAYMENT,
            stream_type: STREAM_TYPE.into(),
            version,
            event_id: Uuid::new_v4(),
            event_type: e.event_type().into(),
            schema_version: 1,
            payload: e.payload(),
            metadata: serde_json::Value::Null,
            occurred_at: t0(),
            recorded_at: t0(),
            postings: Vec::new(),
            prev_hash: vec![],
            hash: vec![],
        })
        .collect();
    assert_eq!(
        Payment::from_history(&recorded),
        Err(HistoryError::OutOfRange { version: 9 })
    );
}
