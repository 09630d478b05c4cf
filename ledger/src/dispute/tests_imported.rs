//! Given/when/then tests of imported disputes: the state as of `updatedAt`, and the
//! commands that work on them afterwards.

use chrono::{Duration, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::account::Reference;

const DISPUTE: Uuid = Uuid::from_u128(2);
const PAYMENT: Uuid = Uuid::from_u128(1);

fn imported(status: DisputeStatus) -> DisputeImported {
    let created = Utc.with_ymd_and_hms(2022, 5, 1, 9, 0, 0).unwrap();
    let updated = created + Duration::days(3);
    DisputeImported {
        opened: DisputeOpened {
            dispute_id: DISPUTE,
            payment_id: PAYMENT,
            opened_by: Reference::entity(Uuid::from_u128(4)),
            role: PartyRole::Buyer,
            reason: DisputeReason::NotAsDescribed,
            description: "broken".into(),
            priority: Priority::High,
        },
        status,
        priority: Priority::High,
        admin: Some(Reference::entity(Uuid::from_u128(9))),
        purchase_request: None,
        chat: None,
        payment_from_purchase_request: false,
        evidence: vec![ImportedEvidence {
            evidence_id: Uuid::from_u128(20),
            submitted_by: Reference::entity(Uuid::from_u128(4)),
            evidence_type: EvidenceType::Image,
            url: Some("https://img".into()),
            description: None,
            submitted_at: created,
        }],
        messages: vec![ImportedMessage {
            message_id: Uuid::from_u128(30),
            author: Reference::external("system"),
            author_role: AuthorRole::System,
            body: "hello".into(),
            attachments: vec!["a.png".into()],
            posted_at: created,
        }],
        timeline: vec![ImportedTimelineEntry {
            status: DisputeStatus::Open,
            at: created,
            by: None,
            note: None,
        }],
        resolution: (status == DisputeStatus::Resolved).then(|| ImportedResolution {
            outcome: Outcome::RefundToBuyer,
            seller_amount: None,
            buyer_amount: None,
            resolved_by: None,
            resolved_at: Some(updated),
            note: Some("refunded".into()),
        }),
        created_at: created,
        updated_at: updated,
        ended_at: status.is_terminal().then_some(updated),
        extra: None,
    }
}

/// An imported dispute, for the codec tests.
pub(super) fn sample() -> DisputeImported {
    imported(DisputeStatus::AwaitingBuyer)
}

fn given(e: DisputeImported) -> Dispute {
    let mut d = Dispute::default();
    let at = e.created_at;
    d.apply(&DisputeEvent::DisputeImported(e), at);
    d
}

#[test]
fn an_imported_open_dispute_carries_its_state_as_of_updated_at() {
    let e = imported(DisputeStatus::UnderReview);
    let d = given(e.clone());
    assert_eq!(d.status, DisputeStatus::UnderReview);
    assert_eq!(d.priority, Priority::High);
    assert_eq!(d.admin, Some(Reference::entity(Uuid::from_u128(9))));
    assert_eq!(d.evidence, vec![Uuid::from_u128(20)]);
    assert_eq!(d.messages, vec![Uuid::from_u128(30)]);
    assert_eq!(
        (d.opened_at, d.updated_at),
        (Some(e.created_at), Some(e.updated_at))
    );
    assert_eq!((d.ended_at, d.version), (None, 1));
    assert!(!d.is_ended());
}

#[test]
fn commands_work_on_an_imported_open_dispute() {
    let d = given(imported(DisputeStatus::Open));
    let events = d
        .post_message(PostMessage {
            message_id: Uuid::from_u128(31),
            author: Reference::external("admin:ann"),
            author_role: AuthorRole::Admin,
            body: "looking".into(),
            attachments: vec![],
        })
        .unwrap();
    assert_eq!(events.len(), 1);
    let resolved = d
        .resolve(Resolve {
            outcome: Outcome::NoAction,
            seller_amount: None,
            buyer_amount: None,
            fees: vec![],
            note: None,
        })
        .unwrap();
    assert_eq!(resolved[0].ends_dispute(), Some(DisputeStatus::Resolved));
}

#[test]
fn an_imported_resolved_dispute_has_ended_and_takes_nothing() {
    let e = imported(DisputeStatus::Resolved);
    let d = given(e.clone());
    assert!(d.is_ended());
    assert_eq!(d.ended_at, Some(e.updated_at));
    assert_eq!(
        d.resolution.as_ref().map(|r| r.outcome),
        Some(Outcome::RefundToBuyer)
    );
    assert!(matches!(
        d.change_status(DisputeStatus::Open, None),
        Err(DisputeError::DisputeEnded { .. })
    ));
}

#[test]
fn the_import_event_ends_nothing_and_round_trips() {
    let event = DisputeEvent::DisputeImported(imported(DisputeStatus::Closed));
    assert_eq!(event.ends_dispute(), None);
    let decoded = DisputeEvent::decode(event.event_type(), 1, &event.payload()).unwrap();
    assert_eq!(decoded, event);
    assert!(DisputeEvent::EVENT_TYPES.contains(&"DisputeImported"));
    assert!(event.to_new_event_postings_free());
}

impl DisputeEvent {
    fn to_new_event_postings_free(&self) -> bool {
        let meta = crate::event::Metadata {
            correlation_id: Uuid::nil(),
            causation_id: None,
            actor: crate::event::Actor {
                name: "importer".into(),
                role: "importer".into(),
            },
            source: "import".into(),
            legacy: None,
        };
        self.to_new_event(&meta, Utc::now()).postings.is_empty()
    }
}
