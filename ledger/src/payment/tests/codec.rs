//! Stored shapes: every event round-trips, every money event balances, history rebuilds.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::account::{Account, Reference};
use crate::decode::DecodeError;
use crate::dispute::{DisputeStatus, Outcome};
use crate::event::{Actor, Metadata, RecordedEvent};
use crate::posting::check_balanced;

fn every_event() -> Vec<PaymentEvent> {
    let mut created = created();
    if let PaymentEvent::PaymentCreated(c) = &mut created {
        c.seller_offer = Some(Reference::entity(Uuid::from_u128(5)));
        c.metadata = Some(json!({"order": 7}));
    }
    vec![
        created,
        deposited_excess("110.5", "10.5"),
        PaymentEvent::FundsReleased(FundsReleased {
            amount: d("60"),
            fees: vec![fee(FeeKind::Fee, "2"), fee(FeeKind::AmlFee, "1")],
            seller_amount: d("57"),
        }),
        PaymentEvent::FundsRefunded(FundsRefunded {
            amount: d("10"),
            fees: vec![fee(FeeKind::Fee, "1")],
            buyer_amount: d("9"),
        }),
        PaymentEvent::PayoutMade(PayoutMade {
            party: Party::Seller,
            amount: d("57"),
            reference: "po".into(),
        }),
        PaymentEvent::PaymentCancelled(PaymentCancelled { reason: "r".into() }),
        frozen(),
        PaymentEvent::EscrowUnfrozen(EscrowUnfrozen {
            dispute_id: DISPUTE,
            dispute_status: DisputeStatus::Closed,
        }),
        PaymentEvent::DisputeSettled(DisputeSettled {
            dispute_id: DISPUTE,
            outcome: Outcome::Split,
            seller_amount: d("20"),
            buyer_amount: d("18"),
            fees: vec![fee(FeeKind::Fee, "2.5")],
        }),
        PaymentEvent::AdjustmentPosted(AdjustmentPosted {
            adjustment_id: Uuid::from_u128(8),
            from: Account::PlatformAdjustments,
            to: Account::Escrow(PAYMENT),
            amount: d("0.01"),
            asset: Asset::Usd,
            reason: "fix".into(),
        }),
    ]
    .into_iter()
    .chain(super::imported::samples())
    .collect()
}

#[test]
fn every_event_round_trips_through_its_stored_shape() {
    let events = every_event();
    assert_eq!(events.len(), PaymentEvent::EVENT_TYPES.len());
    for event in events {
        let decoded = PaymentEvent::decode(event.event_type(), 1, &event.payload()).unwrap();
        assert_eq!(decoded, event);
    }
}

#[test]
fn amounts_are_stored_as_strings_and_types_by_name() {
    let e = deposited_excess("110.5", "10.5");
    assert_eq!(e.event_type(), "FundsDeposited");
    assert_eq!(e.payload()["amount"], json!("110.5"));
    let r = PaymentEvent::FundsReleased(FundsReleased {
        amount: d("3"),
        fees: vec![fee(FeeKind::AmlFee, "3")],
        seller_amount: d("0"),
    });
    assert_eq!(
        r.payload()["fees"][0],
        json!({"kind": "aml_fee", "amount": "3"})
    );
}

#[test]
fn every_money_event_balances_per_asset() {
    let accounts = funded().accounts().unwrap();
    for event in every_event() {
        let legs = event.postings(&accounts);
        assert_eq!(check_balanced(&legs), Ok(()), "{}", event.event_type());
        let moves_money = !matches!(
            event,
            PaymentEvent::PaymentCreated(_)
                | PaymentEvent::PaymentImported(_)
                | PaymentEvent::PaymentCancelled(_)
                | PaymentEvent::EscrowFrozen(_)
                | PaymentEvent::EscrowUnfrozen(_)
        );
        assert_eq!(!legs.is_empty(), moves_money, "{}", event.event_type());
    }
}

#[test]
fn decode_refuses_unknown_types_versions_and_shapes() {
    assert_eq!(
        PaymentEvent::decode("FundsStolen", 1, &json!({})),
        Err(DecodeError::UnknownEventType {
            event_type: "FundsStolen".into()
        })
    );
    assert!(matches!(
        PaymentEvent::decode("PaymentCancelled", 2, &json!({"reason": "x"})),
        Err(DecodeError::UnsupportedSchemaVersion {
            schema_version: 2,
            ..
        })
    ));
    assert!(matches!(
        PaymentEvent::decode("FundsDeposited", 1, &json!({"amount": 5})),
        Err(DecodeError::Payload { .. })
    ));
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: Uuid::from_u128(11),
        causation_id: None,
        actor: Actor {
            name: "test".into(),
            role: "coordinator".into(),
        },
        source: "api".into(),
        legacy: None,
    }
}

#[test]
fn new_events_post_to_the_payment_accounts_and_history_rebuilds() {
    let none = Payment::default();
    let mut decided = none.create(create_cmd()).unwrap();
    let after_create = then(&none, &decided);
    decided.extend(
        after_create
            .deposit(
                &Deposit {
                    amount: d("100"),
                    reference: "ch".into(),
                    occurred_at: now(),
                    allow_excess: false,
                },
                now(),
            )
            .unwrap(),
    );
    let new = none.new_events(&decided, &metadata(), now());
    assert_eq!(new.len(), 2);
    assert!(new[0].postings.is_empty());
    assert_eq!(new[1].postings.len(), 2);
    assert_eq!(new[1].event_type, "FundsDeposited");
    let recorded: Vec<RecordedEvent> = new
        .into_iter()
        .enumerate()
        .map(|(i, e)| RecordedEvent {
            position: i64::try_from(i).unwrap() + 1,
            tx_id: 1,
            stream_id: PAYMENT,
            stream_type: STREAM_TYPE.into(),
            version: i64::try_from(i).unwrap() + 1,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            occurred_at: e.occurred_at,
            recorded_at: Utc::now(),
            postings: e.postings,
            prev_hash: vec![],
            hash: vec![],
        })
        .collect();
    let rebuilt = Payment::from_history(&recorded).unwrap();
    assert_eq!(
        (rebuilt.version, rebuilt.status, rebuilt.held),
        (2, PaymentStatus::Funded, d("100"))
    );
}

#[test]
fn every_legacy_status_maps() {
    use PaymentStatus as S;
    for (legacy, ours) in [
        ("pending", S::AwaitingDeposit),
        ("awaiting_deposit", S::AwaitingDeposit),
        ("confirming", S::AwaitingDeposit),
        ("funded", S::Funded),
        ("released", S::Released),
        ("partially_refunded", S::PartiallyRefunded),
        ("refunded", S::Refunded),
        ("disputed", S::Disputed),
        ("cancelled", S::Cancelled),
        ("expired", S::Cancelled),
        ("failed", S::Cancelled),
    ] {
        assert_eq!(S::from_legacy(legacy), Some(ours), "{legacy}");
    }
    assert_eq!(S::from_legacy("lost"), None);
    assert_eq!(
        serde_json::to_value(S::PartiallyFunded).unwrap(),
        json!("partially_funded")
    );
}
