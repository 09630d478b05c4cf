//! `escrow-ledger verify` against a real store: passes when intact, and names the fault
//! after a superuser alters a payload or deletes a stream's last event.

use chrono::Utc;
use e2e::{run_binary, TestDb};
use ledger::event::{Actor, ExpectedVersion, Metadata, NewEvent, StreamAppend};
use ledger::posting::transfer;
use ledger::store::EventStore;
use ledger::{Account, Asset};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::Executor;
use uuid::Uuid;

fn meta() -> Metadata {
    Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: "test".into(),
            role: "cli".into(),
        },
        source: "test".into(),
        legacy: None,
    }
}

/// The position of `stream`'s event at `version`.
async fn position_of(db: &TestDb, stream: Uuid, version: i64) -> i64 {
    sqlx::query_scalar("SELECT position FROM events WHERE stream_id = $1 AND version = $2")
        .bind(stream)
        .bind(version)
        .fetch_one(&db.admin)
        .await
        .unwrap()
}

async fn populate(db: &TestDb, streams: usize) -> Vec<Uuid> {
    let store = EventStore::new(db.service_pool(4).await);
    let mut ids = Vec::new();
    for i in 0..streams {
        let s = Uuid::new_v4();
        let mut moving = NewEvent::new(
            "Moved",
            json!({"i": i, "float": -0.0, "big": 1e300}),
            &meta(),
            Utc::now(),
            Vec::new(),
        );
        moving.postings = transfer(
            Account::External("stripe".into()),
            Account::Escrow(s),
            Asset::Usd,
            Decimal::new(1050, 2),
        )
        .to_vec();
        let events = vec![
            NewEvent::new(
                "Opened",
                json!({"i": i, "nested": {"b": [1, 2], "a": "x"}}),
                &meta(),
                Utc::now(),
                Vec::new(),
            ),
            moving,
            NewEvent::new("Noted", json!({"i": i}), &meta(), Utc::now(), Vec::new()),
        ];
        store
            .append(&[StreamAppend {
                stream_id: s,
                stream_type: "test".into(),
                expected: ExpectedVersion::NoStream,
                events,
            }])
            .await
            .unwrap();
        ids.push(s);
    }
    ids
}

fn verify(db: &TestDb, args: &[&str]) -> (i32, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = run_binary(&all, &[("DATABASE_URL", db.url.as_str())]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn digest_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn verify_passes_on_an_intact_store_and_its_digest_is_stable() {
    let db = TestDb::new().await;
    populate(&db, 20).await;
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified 60 events in 20 streams"), "{out}");
    let digest = digest_of(&out);
    let (code, out) = verify(&db, &["--digest", &digest]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(digest_of(&out), digest);
    // More events later: the old digest still proves the prefix.
    populate(&db, 2).await;
    let (code, out) = verify(&db, &["--digest", &digest]);
    assert_eq!(code, 0, "{out}");
    db.drop_db().await;
}

#[tokio::test]
async fn verify_names_an_event_a_superuser_altered() {
    let db = TestDb::new().await;
    let streams = populate(&db, 5).await;
    let position: i64 = position_of(&db, streams[2], 1).await;
    db.admin
        .execute(
            format!(
                "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
                 UPDATE events SET payload = payload || '{{\"i\": 99}}' WHERE position = {position}; \
                 ALTER TABLE events ENABLE ALWAYS TRIGGER events_refuse_update_delete"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "event at position {position} (stream {}",
            streams[2]
        )),
        "{out}"
    );
    assert!(out.contains("was altered"), "{out}");
    db.drop_db().await;
}

#[tokio::test]
async fn verify_with_an_earlier_digest_finds_a_deleted_last_event() {
    let db = TestDb::new().await;
    let streams = populate(&db, 5).await;
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 0, "{out}");
    let digest = digest_of(&out);
    // The last event of a stream: its chain alone cannot show it is gone.
    db.admin
        .execute(
            format!(
                "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
                 DELETE FROM events WHERE stream_id = '{}' AND version = 3; \
                 ALTER TABLE events ENABLE ALWAYS TRIGGER events_refuse_update_delete",
                streams[1]
            )
            .as_str(),
        )
        .await
        .unwrap();
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 0, "without a digest the chains still hold: {out}");
    let (code, out) = verify(&db, &["--digest", &digest]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("differs from the recorded digest"), "{out}");
    // Removing the very event the digest names is named as such.
    let last: i64 = digest.split(':').next().unwrap().parse().unwrap();
    db.admin
        .execute(
            format!(
                "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete; \
                 DELETE FROM events WHERE position = {last}; \
                 ALTER TABLE events ENABLE ALWAYS TRIGGER events_refuse_update_delete"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let (code, out) = verify(&db, &["--digest", &digest]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("recorded digest's position {last} is no longer")),
        "{out}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn verify_refuses_a_malformed_digest() {
    let db = TestDb::new().await;
    let (code, _) = verify(&db, &["--digest", "12:nothex"]);
    assert_ne!(code, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn verify_names_an_event_whose_postings_a_superuser_unbalanced() {
    let db = TestDb::new().await;
    let streams = populate(&db, 3).await;
    // The moving event (version 2) of the second stream.
    let position: i64 = position_of(&db, streams[1], 2).await;
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 0, "intact before: {out}");
    // The balance trigger fires for every role (ENABLE ALWAYS): only a superuser switching
    // it off can store an unbalanced leg.
    db.admin
        .execute(
            format!(
                "ALTER TABLE postings DISABLE TRIGGER postings_balanced; \
                 INSERT INTO postings (position, leg, account, asset, amount) \
                     VALUES ({position}, 7, 'platform:suspense', 'USD', 0.01); \
                 ALTER TABLE postings ENABLE ALWAYS TRIGGER postings_balanced"
            )
            .as_str(),
        )
        .await
        .unwrap();
    let (code, out) = verify(&db, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "postings of the event at position {position} do not sum to zero in USD"
        )),
        "{out}"
    );
    assert_eq!(
        out.matches("do not sum to zero").count(),
        1,
        "only that event is unbalanced: {out}"
    );
    db.drop_db().await;
}
