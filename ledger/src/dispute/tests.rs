//! Given/when/then tests of the dispute aggregate, and its stored shapes.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::account::Reference;
use crate::decode::DecodeError;
use crate::payment::{Fee, FeeKind};
use crate::refusal::RefusalKind;

const DISPUTE: Uuid = Uuid::from_u128(2);
const PAYMENT: Uuid = Uuid::from_u128(1);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn open_cmd() -> OpenDispute {
    OpenDispute {
        dispute_id: DISPUTE,
        payment_id: PAYMENT,
        opened_by: Reference::entity(Uuid::from_u128(4)),
        role: PartyRole::Buyer,
        reason: DisputeReason::ItemNotReceived,
        description: "never arrived".into(),
        priority: Priority::default(),
    }
}

fn given(events: &[DisputeEvent]) -> Dispute {
    let mut dispute = Dispute::default();
    for e in events {
        dispute.apply(e, t0());
    }
    dispute
}

fn opened() -> Dispute {
    given(&Dispute::default().open(open_cmd()).unwrap())
}

fn then(dispute: &Dispute, events: &[DisputeEvent]) -> Dispute {
    let mut next = dispute.clone();
    for e in events {
        next.apply(e, t0());
    }
    next
}

fn ended(status: DisputeStatus) -> Dispute {
    let d = opened();
    if status == DisputeStatus::Resolved {
        then(&d, &d.resolve(resolve(Outcome::NoAction)).unwrap())
    } else {
        then(&d, &d.change_status(status, None).unwrap())
    }
}

fn resolve(outcome: Outcome) -> Resolve {
    Resolve {
        outcome,
        seller_amount: None,
        buyer_amount: None,
        fees: vec![],
        note: None,
    }
}

fn evidence() -> SubmitEvidence {
    SubmitEvidence {
        evidence_id: Uuid::from_u128(20),
        submitted_by: Reference::entity(Uuid::from_u128(4)),
        evidence_type: EvidenceType::Link,
        url: Some("https://example.com/track".into()),
        description: None,
    }
}

fn message(body: &str) -> PostMessage {
    PostMessage {
        message_id: Uuid::from_u128(30),
        author: Reference::external("system"),
        author_role: AuthorRole::System,
        body: body.into(),
        attachments: vec![],
    }
}

#[test]
fn open_starts_an_open_dispute_of_medium_priority() {
    let d = opened();
    assert_eq!(
        (d.status, d.priority, d.payment_id(), d.version),
        (DisputeStatus::Open, Priority::Medium, Some(PAYMENT), 1)
    );
    assert!(!d.is_ended());
}

#[test]
fn open_refuses_an_existing_stream_and_an_empty_description() {
    assert_eq!(
        opened().open(open_cmd()),
        Err(DisputeError::AlreadyExists {
            dispute_id: DISPUTE
        })
    );
    let mut cmd = open_cmd();
    cmd.description = "  ".into();
    let err = Dispute::default().open(cmd).unwrap_err();
    assert_eq!(err.kind(), RefusalKind::Validation);
}

#[test]
fn commands_on_no_stream_are_not_found() {
    let err = Dispute::default()
        .assign(Reference::external("admin:ann"))
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.kind()),
        (DisputeError::NotOpened, RefusalKind::NotFound)
    );
}

#[test]
fn evidence_is_recorded_and_must_say_something() {
    let d = opened();
    let d2 = then(&d, &d.submit_evidence(evidence()).unwrap());
    assert_eq!(d2.evidence, vec![Uuid::from_u128(20)]);
    let mut empty = evidence();
    empty.url = None;
    assert_eq!(d.submit_evidence(empty), Err(DisputeError::EmptyEvidence));
}

#[test]
fn messages_are_posted_and_need_a_body_or_attachments() {
    let d = opened();
    let d2 = then(&d, &d.post_message(message("hello")).unwrap());
    assert_eq!(d2.messages.len(), 1);
    assert_eq!(
        d.post_message(message("")),
        Err(DisputeError::EmptyText { field: "body" })
    );
    let mut with_file = message("");
    with_file.attachments = vec!["photo.jpg".into()];
    assert!(d.post_message(with_file).is_ok());
}

#[test]
fn assign_and_set_priority() {
    let d = opened();
    let admin = Reference::entity(Uuid::from_u128(40));
    let d = then(&d, &d.assign(admin.clone()).unwrap());
    let d = then(&d, &d.set_priority(Priority::Urgent).unwrap());
    assert_eq!((d.admin, d.priority), (Some(admin), Priority::Urgent));
    assert!(
        Priority::Urgent > Priority::High
            && Priority::High > Priority::Medium
            && Priority::Medium > Priority::Low
    );
}

#[test]
fn status_changes_and_which_end_the_dispute() {
    let d = opened();
    let events = d
        .change_status(DisputeStatus::UnderReview, Some("looking".into()))
        .unwrap();
    assert_eq!(events[0].ends_dispute(), None);
    let d = then(&d, &events);
    assert_eq!(d.status, DisputeStatus::UnderReview);
    let events = d.change_status(DisputeStatus::Withdrawn, None).unwrap();
    assert_eq!(events[0].ends_dispute(), Some(DisputeStatus::Withdrawn));
    let d = then(&d, &events);
    assert!(d.is_ended());
    assert_eq!(d.ended_at, Some(t0()));
    assert!(DisputeStatus::Closed.unfreezes_escrow());
    assert!(!DisputeStatus::Resolved.unfreezes_escrow());
    assert!(!DisputeStatus::AwaitingSeller.unfreezes_escrow());
}

#[test]
fn resolved_only_through_a_resolution() {
    let err = opened()
        .change_status(DisputeStatus::Resolved, None)
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.kind()),
        (
            DisputeError::ResolvedOnlyByResolution,
            RefusalKind::InvalidState
        )
    );
}

#[test]
fn an_ended_dispute_refuses_everything() {
    for status in [
        DisputeStatus::Resolved,
        DisputeStatus::Rejected,
        DisputeStatus::Withdrawn,
        DisputeStatus::Closed,
    ] {
        let d = ended(status);
        let refused = DisputeError::DisputeEnded { status };
        assert_eq!(
            d.change_status(DisputeStatus::Open, None),
            Err(refused.clone())
        );
        assert_eq!(d.resolve(resolve(Outcome::NoAction)), Err(refused.clone()));
        assert_eq!(d.submit_evidence(evidence()), Err(refused.clone()));
        assert_eq!(d.post_message(message("hi")), Err(refused.clone()));
        assert_eq!(d.assign(Reference::external("a")), Err(refused.clone()));
        assert_eq!(d.set_priority(Priority::Low), Err(refused.clone()));
        assert_eq!(refused.kind(), RefusalKind::InvalidState);
    }
}

#[test]
fn resolve_records_the_decision() {
    let d = opened();
    let cmd = Resolve {
        outcome: Outcome::Split,
        seller_amount: Some(dec("60")),
        buyer_amount: Some(dec("40")),
        fees: vec![Fee {
            kind: FeeKind::Fee,
            amount: dec("1"),
        }],
        note: Some("half-ish".into()),
    };
    let events = d.resolve(cmd).unwrap();
    assert_eq!(events[0].ends_dispute(), Some(DisputeStatus::Resolved));
    let d = then(&d, &events);
    assert_eq!(d.status, DisputeStatus::Resolved);
    assert_eq!(d.resolution.map(|r| r.outcome), Some(Outcome::Split));
}

#[test]
fn resolve_checks_the_shape_of_the_decision() {
    let d = opened();
    let mut split = resolve(Outcome::Split);
    split.seller_amount = Some(dec("1"));
    assert_eq!(
        d.resolve(split.clone()),
        Err(DisputeError::MissingSplitAmounts)
    );
    split.buyer_amount = Some(dec("-1"));
    assert_eq!(
        d.resolve(split),
        Err(DisputeError::InvalidAmount { amount: dec("-1") })
    );
    let mut release = resolve(Outcome::ReleaseToSeller);
    release.buyer_amount = Some(dec("1"));
    assert_eq!(d.resolve(release), Err(DisputeError::UnexpectedAmounts));
    let mut none = resolve(Outcome::NoAction);
    none.fees = vec![Fee {
        kind: FeeKind::Fee,
        amount: dec("1"),
    }];
    assert_eq!(d.resolve(none), Err(DisputeError::UnexpectedAmounts));
}

fn every_event() -> Vec<DisputeEvent> {
    let d = opened();
    let mut events = Dispute::default().open(open_cmd()).unwrap();
    events.extend(d.submit_evidence(evidence()).unwrap());
    let mut m = message("see attached");
    m.attachments = vec!["a.pdf".into()];
    events.extend(d.post_message(m).unwrap());
    events.extend(d.assign(Reference::entity(Uuid::from_u128(40))).unwrap());
    events.extend(d.set_priority(Priority::High).unwrap());
    events.extend(
        d.change_status(DisputeStatus::AwaitingSeller, Some("n".into()))
            .unwrap(),
    );
    let mut r = resolve(Outcome::Split);
    r.seller_amount = Some(dec("10.5"));
    r.buyer_amount = Some(dec("0"));
    events.extend(d.resolve(r).unwrap());
    events.push(DisputeEvent::DisputeImported(
        super::tests_imported::sample(),
    ));
    events
}

#[test]
fn every_event_round_trips_and_uses_the_legacy_names() {
    let events = every_event();
    assert_eq!(events.len(), DisputeEvent::EVENT_TYPES.len());
    for event in &events {
        assert_eq!(
            &DisputeEvent::decode(event.event_type(), 1, &event.payload()).unwrap(),
            event
        );
    }
    assert_eq!(events[0].payload()["reason"], json!("item_not_received"));
    assert_eq!(events[1].payload()["type"], json!("link"));
    assert_eq!(events[6].payload()["seller_amount"], json!("10.5"));
    assert_eq!(
        DisputeEvent::decode("Nope", 1, &json!({})),
        Err(DecodeError::UnknownEventType {
            event_type: "Nope".into()
        })
    );
}

#[test]
fn dispute_events_carry_no_postings() {
    let meta = crate::event::Metadata {
        correlation_id: Uuid::nil(),
        causation_id: None,
        actor: crate::event::Actor {
            name: "t".into(),
            role: "admin".into(),
        },
        source: "api".into(),
        legacy: None,
    };
    let new = new_events(&every_event(), &meta, t0());
    assert!(new
        .iter()
        .all(|e| e.postings.is_empty() && e.schema_version == 1));
    assert_eq!(new[0].event_type, "DisputeOpened");
}

#[test]
fn the_legacy_enum_values_parse() {
    let s: DisputeStatus = serde_json::from_value(json!("awaiting_buyer")).unwrap();
    assert_eq!(s, DisputeStatus::AwaitingBuyer);
    let o: Outcome = serde_json::from_value(json!("release_to_seller")).unwrap();
    assert_eq!(o, Outcome::ReleaseToSeller);
    let r: AuthorRole = serde_json::from_value(json!("system")).unwrap();
    assert_eq!(r, AuthorRole::System);
    assert!(serde_json::from_value::<Priority>(json!("critical")).is_err());
}
