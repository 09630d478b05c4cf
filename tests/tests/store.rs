//! The event store against a real PostgreSQL: appends, conflicts, immutability, and the
//! global feed's order under both commit inversions.

use std::time::{Duration, Instant};

use chrono::Utc;
use e2e::TestDb;
use ledger::event::{Actor, ExpectedVersion, FeedPosition, Metadata, NewEvent, StreamAppend};
use ledger::posting::transfer;
use ledger::store::{self, EventStore, StoreError};
use ledger::{Account, Asset};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Connection, Executor, PgPool};
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

fn event(kind: &str) -> NewEvent {
    NewEvent::new(
        kind,
        json!({"n": 1, "text": "é"}),
        &meta(),
        Utc::now(),
        Vec::new(),
    )
}

fn one(stream_id: Uuid, expected: ExpectedVersion, events: Vec<NewEvent>) -> Vec<StreamAppend> {
    vec![StreamAppend {
        stream_id,
        stream_type: "test".into(),
        expected,
        events,
    }]
}

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Follows the feed until `want` events arrived after `from` or 20 s passed.
async fn follow(pool: &PgPool, from: FeedPosition, want: usize) -> Vec<i64> {
    let mut got = Vec::new();
    let mut at = from;
    let start = Instant::now();
    while got.len() < want && start.elapsed() < Duration::from_secs(20) {
        let batch = store::read_feed(pool, at, 100).await.unwrap();
        if let Some(last) = batch.last() {
            at = last.feed_position();
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        got.extend(batch.iter().map(|e| e.position));
    }
    got
}

#[tokio::test]
async fn appends_read_back_with_versions_hashes_and_postings() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.service_pool(4).await);
    let s = Uuid::new_v4();
    let mut moving = event("Moved");
    moving.postings = transfer(
        Account::External("stripe".into()),
        Account::Escrow(s),
        Asset::Usd,
        Decimal::new(12550, 2),
    )
    .to_vec();
    let done = store
        .append(&one(s, ExpectedVersion::NoStream, vec![event("A"), moving]))
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(done[0].position < done[1].position);
    store
        .append(&one(s, ExpectedVersion::Exact(2), vec![event("B")]))
        .await
        .unwrap();
    let events = store::read_stream(store.pool(), s).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        vec!["A", "Moved", "B"]
    );
    assert_eq!(events[1].postings.len(), 2);
    assert_eq!(events[1].postings[1].amount, Decimal::new(12550, 2));
    assert_eq!(events[1].prev_hash, events[0].hash);
    assert_eq!(events[0].payload["text"], "é");
    db.drop_db().await;
}

#[tokio::test]
async fn two_appends_at_one_version_exactly_one_wins() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.service_pool(8).await);
    for _ in 0..20 {
        let s = Uuid::new_v4();
        store
            .append(&one(s, ExpectedVersion::NoStream, vec![event("A")]))
            .await
            .unwrap();
        let (first, second) = (
            one(s, ExpectedVersion::Exact(1), vec![event("B")]),
            one(s, ExpectedVersion::Exact(1), vec![event("C")]),
        );
        let (a, b) = tokio::join!(store.append(&first), store.append(&second));
        assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "{a:?} {b:?}");
        let err = a.err().or(b.err()).unwrap();
        match err {
            StoreError::Conflict {
                stream_id,
                expected,
                actual,
            } => {
                assert_eq!(stream_id, s);
                assert_eq!(expected, ExpectedVersion::Exact(1));
                assert_eq!(actual, Some(2));
            }
            other => panic!("not a conflict: {other:?}"),
        }
        assert_eq!(store::stream_version(store.pool(), s).await.unwrap(), 2);
    }
    db.drop_db().await;
}

#[tokio::test]
async fn bad_appends_are_typed_and_write_nothing() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.service_pool(4).await);
    let s = Uuid::new_v4();
    store
        .append(&one(s, ExpectedVersion::NoStream, vec![event("A")]))
        .await
        .unwrap();
    let before = count(store.pool()).await;

    let wrong = store
        .append(&one(s, ExpectedVersion::Exact(5), vec![event("B")]))
        .await;
    assert!(
        matches!(
            wrong,
            Err(StoreError::Conflict {
                actual: Some(1),
                ..
            })
        ),
        "{wrong:?}"
    );
    let exists = store
        .append(&one(s, ExpectedVersion::NoStream, vec![event("B")]))
        .await;
    assert!(matches!(exists, Err(StoreError::Conflict { .. })));
    let empty = store.append(&one(s, ExpectedVersion::Any, vec![])).await;
    assert!(matches!(empty, Err(StoreError::InvalidAppend(_))));
    let mut not_object = event("B");
    not_object.payload = json!([1, 2]);
    let r = store
        .append(&one(s, ExpectedVersion::Any, vec![not_object]))
        .await;
    assert!(matches!(r, Err(StoreError::InvalidAppend(_))));
    let mut unbalanced = event("B");
    unbalanced.postings = transfer(
        Account::PlatformFees,
        Account::PlatformSuspense,
        Asset::Usd,
        Decimal::ONE,
    )
    .to_vec();
    unbalanced.postings[1].amount = Decimal::TWO;
    let r = store
        .append(&one(s, ExpectedVersion::Any, vec![unbalanced]))
        .await;
    assert!(matches!(r, Err(StoreError::InvalidAppend(_))));
    let mut nul = event("B");
    nul.payload = json!({"t": "a\u{0}b"});
    let r = store.append(&one(s, ExpectedVersion::Any, vec![nul])).await;
    assert!(matches!(r, Err(StoreError::InvalidAppend(_))));

    // A multi-stream append whose second stream conflicts writes neither stream.
    let fresh = Uuid::new_v4();
    let mut both = one(fresh, ExpectedVersion::NoStream, vec![event("X")]);
    both.extend(one(s, ExpectedVersion::NoStream, vec![event("Y")]));
    assert!(store.append(&both).await.unwrap_err().is_conflict());
    assert_eq!(store::stream_version(store.pool(), fresh).await.unwrap(), 0);
    assert_eq!(count(store.pool()).await, before);
    db.drop_db().await;
}

#[tokio::test]
async fn the_database_refuses_unbalanced_postings_at_commit() {
    let db = TestDb::new().await;
    let pool = db.service_pool(2).await;
    let mut tx = pool.begin().await.unwrap();
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version, payload, \
         metadata, occurred_at, recorded_at, prev_hash, hash) VALUES ($1, 't', 1, $2, 'X', 1, '{}', '{}', now(), \
         now(), '\\x0000000000000000000000000000000000000000000000000000000000000000', \
         '\\x0000000000000000000000000000000000000000000000000000000000000000') RETURNING position",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO postings VALUES ($1, 0, 'platform:fees', 'USD', -5), ($1, 1, 'platform:suspense', 'USD', 4)")
        .bind(position)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx.commit().await.unwrap_err();
    let db_err = err.as_database_error().expect("a database error");
    assert_eq!(db_err.constraint(), Some("postings_balanced"));
    assert_eq!(count(&pool).await, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn events_cannot_be_changed_by_the_service_the_owner_or_replica_mode() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.service_pool(2).await);
    let s = Uuid::new_v4();
    let mut e = event("A");
    e.postings = transfer(
        Account::PlatformFees,
        Account::PlatformSuspense,
        Asset::Usd,
        Decimal::ONE,
    )
    .to_vec();
    store
        .append(&one(s, ExpectedVersion::NoStream, vec![e]))
        .await
        .unwrap();

    let attempts = [
        "UPDATE events SET payload = '{\"n\": 2}'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
        "UPDATE postings SET amount = 100",
        "DELETE FROM postings",
        "TRUNCATE postings",
        "ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete",
    ];
    // As the service role.
    for sql in attempts {
        assert!(
            store.pool().execute(sql).await.is_err(),
            "service role could: {sql}"
        );
    }
    // As the owner role, and as a superuser in replica mode: the triggers fire ALWAYS.
    for setup in [
        "SET ROLE escrow_ledger_owner",
        "SET session_replication_role = replica",
    ] {
        for sql in &attempts[..6] {
            let mut conn = db.admin.acquire().await.unwrap();
            conn.execute(setup).await.unwrap();
            let r = conn.execute(*sql).await;
            conn.execute("RESET ALL; RESET ROLE").await.unwrap();
            assert!(r.is_err(), "{setup}: {sql} went through");
        }
    }
    let owner_can_login: bool = sqlx::query_scalar(
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'escrow_ledger_owner'",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(!owner_can_login);
    assert_eq!(count(store.pool()).await, 1);
    let payload: serde_json::Value = sqlx::query_scalar("SELECT payload FROM events")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(payload["n"], 1);
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_multi_stream_append_leaves_nothing() {
    let db = TestDb::new().await;
    let pool = db.service_pool(2).await;
    let mut conn = pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    conn.execute("BEGIN").await.unwrap();
    let mut appends = one(
        Uuid::new_v4(),
        ExpectedVersion::NoStream,
        vec![event("A"), event("B")],
    );
    appends.extend(one(
        Uuid::new_v4(),
        ExpectedVersion::NoStream,
        vec![event("C")],
    ));
    store::append(&mut conn, &appends).await.unwrap();
    // The process dies before its commit.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert!(killed);
    assert!(conn.execute("COMMIT").await.is_err());
    assert_eq!(count(&db.admin).await, 0);
    db.drop_db().await;
}

/// A lower position whose transaction commits after a higher one's: the follower must get
/// both, once each, the late one included.
#[tokio::test]
async fn feed_never_skips_a_lower_position_committed_late() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    store
        .append(&one(
            Uuid::new_v4(),
            ExpectedVersion::NoStream,
            vec![event("Z")],
        ))
        .await
        .unwrap();
    let mut seen = follow(&pool, FeedPosition::START, 1).await;
    let mut at = store::feed_position_of(&pool, seen[0])
        .await
        .unwrap()
        .unwrap();
    for _ in 0..100 {
        let mut slow = pool.begin().await.unwrap();
        let low = store::append(
            &mut slow,
            &one(
                Uuid::new_v4(),
                ExpectedVersion::NoStream,
                vec![event("Low")],
            ),
        )
        .await
        .unwrap();
        let high = store
            .append(&one(
                Uuid::new_v4(),
                ExpectedVersion::NoStream,
                vec![event("High")],
            ))
            .await
            .unwrap();
        assert!(low[0].position < high[0].position);
        // While the low one is uncommitted, the high one is not handed out either.
        let early = store::read_feed(&pool, at, 100).await.unwrap();
        assert!(
            early.iter().all(|e| e.position != high[0].position),
            "handed out past a running transaction"
        );
        slow.commit().await.unwrap();
        let got = follow(&pool, at, 2).await;
        assert_eq!(got, vec![low[0].position, high[0].position]);
        at = store::feed_position_of(&pool, got[1])
            .await
            .unwrap()
            .unwrap();
        seen.extend(got);
    }
    assert_eq!(seen.len(), 201);
    db.drop_db().await;
}

/// An older transaction that inserts after a younger one committed takes a higher
/// position but comes first in feed order; the follower still gets both, once each.
#[tokio::test]
async fn feed_never_skips_a_late_insert_by_an_older_transaction() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    store
        .append(&one(
            Uuid::new_v4(),
            ExpectedVersion::NoStream,
            vec![event("Z")],
        ))
        .await
        .unwrap();
    let first = follow(&pool, FeedPosition::START, 1).await;
    let mut at = store::feed_position_of(&pool, first[0])
        .await
        .unwrap()
        .unwrap();
    let mut total = 1;
    for _ in 0..100 {
        let mut old = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *old)
            .await
            .unwrap();
        let young = store
            .append(&one(
                Uuid::new_v4(),
                ExpectedVersion::NoStream,
                vec![event("Young")],
            ))
            .await
            .unwrap();
        let early = store::read_feed(&pool, at, 100).await.unwrap();
        assert!(
            early.iter().all(|e| e.position != young[0].position),
            "handed out past an older running transaction"
        );
        let late = store::append(
            &mut old,
            &one(
                Uuid::new_v4(),
                ExpectedVersion::NoStream,
                vec![event("Old")],
            ),
        )
        .await
        .unwrap();
        assert!(late[0].position > young[0].position);
        old.commit().await.unwrap();
        let got = follow(&pool, at, 2).await;
        assert_eq!(
            got,
            vec![late[0].position, young[0].position],
            "feed order is (transaction, position)"
        );
        at = store::feed_position_of(&pool, got[1])
            .await
            .unwrap()
            .unwrap();
        total += got.len();
    }
    assert_eq!(total, 201);
    db.drop_db().await;
}

#[tokio::test]
async fn a_session_idle_in_transaction_holds_the_feed_back_no_longer_than_its_limit() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    let mut idle = sqlx::PgConnection::connect(&db.url).await.unwrap();
    idle.execute(
        "SET ROLE escrow_ledger_app; SET idle_in_transaction_session_timeout = '1s'; BEGIN",
    )
    .await
    .unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut idle)
        .await
        .unwrap();
    let start = Instant::now();
    let done = store
        .append(&one(
            Uuid::new_v4(),
            ExpectedVersion::NoStream,
            vec![event("A")],
        ))
        .await
        .unwrap();
    let early = store::read_feed(&pool, FeedPosition::START, 10)
        .await
        .unwrap();
    assert!(early.is_empty(), "handed out past an idle transaction");
    let mark = store::watermark(&pool).await.unwrap();
    assert_eq!(mark.head_position, done[0].position);
    assert!(mark.held_back_events >= 1);
    let got = follow(&pool, FeedPosition::START, 1).await;
    assert_eq!(got, vec![done[0].position]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "held back for {:?}",
        start.elapsed()
    );
    assert!(
        idle.execute("SELECT 1").await.is_err(),
        "the idle session should have been ended"
    );
    db.drop_db().await;
}

/// The event store against its own service role: `position` and `tx_id` come from the
/// database alone (a chosen one could sit outside the feed, unseen by the projectors and
/// by verify), a temporary table cannot shadow `postings` for the balance check, and a
/// posting holds only what the ledger can read back.
#[tokio::test]
async fn the_service_role_cannot_place_events_outside_the_feed_or_store_unreadable_postings() {
    let db = TestDb::new().await;
    let pool = db.service_pool(1).await;
    let columns =
        "stream_id, stream_type, version, event_id, event_type, schema_version, payload, \
                   metadata, occurred_at, recorded_at, prev_hash, hash";
    let values = "gen_random_uuid(), 't', 1, gen_random_uuid(), 'X', 1, '{}', '{}', now(), now(), \
                  sha256(''), sha256('')";
    let refused = |sql: String| {
        let pool = pool.clone();
        async move {
            sqlx::query(&sql)
                .execute(&pool)
                .await
                .expect_err(&sql)
                .to_string()
        }
    };
    let err = refused(format!(
        "INSERT INTO events (position, {columns}) OVERRIDING SYSTEM VALUE VALUES (-1, {values})"
    ))
    .await;
    assert!(err.contains("permission denied"), "{err}");
    let err = refused(format!(
        "INSERT INTO events (tx_id, {columns}) VALUES ('1', {values})"
    ))
    .await;
    assert!(err.contains("permission denied"), "{err}");

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("CREATE TEMP TABLE postings (position bigint, asset text, amount numeric)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let position: i64 = sqlx::query_scalar(&format!(
        "INSERT INTO events ({columns}) VALUES ({values}) RETURNING position"
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(position > 0);
    sqlx::query("INSERT INTO public.postings VALUES ($1, 0, 'platform:fees', 'USD', 1000)")
        .bind(position)
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = tx.commit().await.unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.constraint()),
        Some("postings_balanced")
    );

    for (legs, constraint) in [
        (
            "($1, 0, 'nonsense', 'EUR', -5), ($1, 1, 'nonsense2', 'EUR', 5)",
            "postings_account_name",
        ),
        (
            "($1, 0, 'platform:fees', 'EUR', -1e30), ($1, 1, 'platform:suspense', 'EUR', 1e30)",
            "postings_amount_fits",
        ),
        (
            "($1, 0, 'seller:ext:', 'EUR', -5), ($1, 1, 'platform:suspense', 'EUR', 5)",
            "postings_account_name",
        ),
    ] {
        let mut tx = pool.begin().await.unwrap();
        let position: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO events ({columns}) VALUES ({values}) RETURNING position"
        ))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let err = sqlx::query(&format!("INSERT INTO postings VALUES {legs}"))
            .bind(position)
            .execute(&mut *tx)
            .await
            .unwrap_err();
        assert_eq!(
            err.as_database_error().and_then(|e| e.constraint()),
            Some(constraint),
            "{legs}: {err}"
        );
    }
    assert_eq!(count(&pool).await, 0);
    db.drop_db().await;
}

/// The group commit's store calls: an append over several streams that two of them refuse
/// names both with their versions, inserts nothing and leaves the transaction usable, and
/// the same append without them then commits; `read_streams` gives each stream's events
/// as `read_stream` does.
#[tokio::test]
async fn append_or_refuse_names_every_moved_stream_and_read_streams_reads_them_together() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let store = EventStore::new(pool.clone());
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for s in [a, b] {
        store
            .append(&one(s, ExpectedVersion::NoStream, vec![event("First")]))
            .await
            .unwrap();
    }
    let before = count(&db.admin).await;
    let appends = |with_moved: bool| {
        let mut all = one(c, ExpectedVersion::NoStream, vec![event("C1"), event("C2")]);
        all.extend(one(
            a,
            ExpectedVersion::Exact(i64::from(!with_moved)), // 0 is stale: a is at 1
            vec![event("A2")],
        ));
        if with_moved {
            all.extend(one(b, ExpectedVersion::NoStream, vec![event("B2")]));
        }
        all
    };
    let mut tx = pool.begin().await.unwrap();
    match store::append_or_refuse(&mut tx, &appends(true))
        .await
        .unwrap()
    {
        store::Appended::Refused(moved) => {
            assert_eq!(moved.len(), 2, "{moved:?}");
            assert_eq!(moved.get(&a), Some(&1));
            assert_eq!(moved.get(&b), Some(&1));
        }
        other @ store::Appended::Done(_) => panic!("expected a refusal, got {other:?}"),
    }
    let done = match store::append_or_refuse(&mut tx, &appends(false))
        .await
        .unwrap()
    {
        store::Appended::Done(done) => done,
        other @ store::Appended::Refused(_) => panic!("expected the append, got {other:?}"),
    };
    assert_eq!(done.len(), 3);
    tx.commit().await.unwrap();
    assert_eq!(
        count(&db.admin).await,
        before + 3,
        "the refused try wrote nothing"
    );

    let missing = Uuid::new_v4();
    let together = store::read_streams(&pool, &[c, a, missing]).await.unwrap();
    let mut alone = Vec::new();
    for s in [a, c] {
        alone.extend(store::read_stream(&pool, s).await.unwrap());
    }
    let key = |e: &ledger::event::RecordedEvent| (e.stream_id, e.version);
    let mut expected = alone.clone();
    expected.sort_by_key(key);
    assert_eq!(together, expected);
    assert_eq!(together.iter().filter(|e| e.stream_id == c).count(), 2);
    db.drop_db().await;
}

/// Two transactions appending to two new streams in opposite orders deadlock; PostgreSQL
/// aborts one (40P01), and the store reports that as a lost race (a conflict the command
/// path decides again), not as a database fault. The other commits.
#[tokio::test]
async fn a_deadlock_between_appends_is_a_conflict() {
    let db = TestDb::new().await;
    let pool = db.service_pool(4).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut first = pool.begin().await.unwrap();
    let mut second = pool.begin().await.unwrap();
    store::append(
        &mut first,
        &one(a, ExpectedVersion::NoStream, vec![event("A")]),
    )
    .await
    .unwrap();
    store::append(
        &mut second,
        &one(b, ExpectedVersion::NoStream, vec![event("B")]),
    )
    .await
    .unwrap();
    // Each now inserts the stream the other holds: each waits for the other.
    let crossing = tokio::spawn(async move {
        let done = store::append(
            &mut first,
            &one(b, ExpectedVersion::NoStream, vec![event("B")]),
        )
        .await;
        (first, done)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second_done = store::append(
        &mut second,
        &one(a, ExpectedVersion::NoStream, vec![event("A")]),
    )
    .await;
    let (first, first_done) = crossing.await.unwrap();
    let results = [&first_done, &second_done];
    let deadlocked = results
        .iter()
        .filter(|r| matches!(r, Err(StoreError::Conflict { actual: None, .. })))
        .count();
    assert_eq!(deadlocked, 1, "{first_done:?} {second_done:?}");
    // The survivor waited for the victim's rollback, then found its stream free.
    if first_done.is_ok() {
        second.rollback().await.unwrap();
        first.commit().await.unwrap();
    } else {
        first.rollback().await.unwrap();
        second.commit().await.unwrap();
    }
    assert_eq!(count(&db.admin).await, 2);
    db.drop_db().await;
}
