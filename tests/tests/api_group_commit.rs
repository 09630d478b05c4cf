//! Group commit over real HTTP: commands on many payments at once share transactions, and
//! a group holding a command that must be refused (a reference already deposited, a key
//! already used) still gives every command its own answer, writing each accepted one once.

#![allow(clippy::too_many_lines)] // the scenario reads best whole

use std::sync::Arc;

use e2e::server::Server;
use e2e::TestDb;
use futures::future::join_all;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

/// Status and exact body text of a POST.
async fn post(server: &Server, path: &str, body: &str, key: &str) -> (u16, String) {
    let resp = server
        .http
        .post(format!("{}{path}", server.base))
        .bearer_auth(&server.tokens.coordinator)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("send request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn code(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One request of a wave: path, body, idempotency key.
type Req = (String, String, String);

/// Sends one request in a task of its own.
fn spawn_post(
    server: &Arc<Server>,
    (path, body, key): Req,
) -> tokio::task::JoinHandle<(u16, String)> {
    let server = Arc::clone(server);
    tokio::spawn(async move { post(&server, &path, &body, &key).await })
}

/// Sends every request at once; answers in the same order.
async fn wave(server: &Arc<Server>, requests: &[Req]) -> Vec<(u16, String)> {
    let answers = join_all(requests.iter().cloned().map(|r| spawn_post(server, r))).await;
    answers
        .into_iter()
        .map(|a| a.expect("request task"))
        .collect()
}

#[tokio::test]
async fn groups_answer_each_command_and_a_refused_member_does_not_sink_the_rest() {
    const PAYMENTS: usize = 40;
    const WRITTEN: i64 = 120; // three events (and keys) per payment
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));

    // Wave 0: the payments, all at once.
    let creations: Vec<Req> = (0..PAYMENTS)
        .map(|i| {
            let body = json!({
                "buyer": {"kind": "entity", "id": Uuid::new_v4()},
                "seller": {"kind": "entity", "id": Uuid::new_v4()},
                "purchase_request": {"kind": "external", "ref": format!("pr-{i}")},
                "amount": "20.00", "asset": "USD", "provider": "stripe"});
            (
                "/v1/payments".to_owned(),
                body.to_string(),
                Uuid::new_v4().to_string(),
            )
        })
        .collect();
    let created = wave(&server, &creations).await;
    let ids: Vec<Uuid> = created
        .iter()
        .map(|(s, text)| {
            assert_eq!(*s, 201, "{text}");
            let v: Value = serde_json::from_str(text).expect("json");
            Uuid::parse_str(v["id"].as_str().expect("id")).expect("uuid")
        })
        .collect();

    // Wave 1: a first deposit of 5.00 on each, reference ch1-i.
    let first: Vec<Req> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("/v1/payments/{id}/deposits"),
                json!({"amount": "5.00", "reference": format!("ch1-{i}")}).to_string(),
                Uuid::new_v4().to_string(),
            )
        })
        .collect();
    let first_answers = wave(&server, &first).await;
    for (s, text) in &first_answers {
        assert_eq!(*s, 200, "{text}");
    }

    // Wave 2, all at once: a second deposit on each (new reference, new key); ten deposits
    // reusing a reference of wave 1 on another payment; ten retries of wave 1 requests
    // (same key, same body); five requests reusing a wave 1 key with another body.
    let mut second: Vec<Req> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                format!("/v1/payments/{id}/deposits"),
                json!({"amount": "5.00", "reference": format!("ch2-{i}")}).to_string(),
                Uuid::new_v4().to_string(),
            )
        })
        .collect();
    for (i, id) in ids.iter().enumerate().take(10) {
        second.push((
            format!("/v1/payments/{id}/deposits"),
            json!({"amount": "1.00", "reference": format!("ch1-{}", i + 10)}).to_string(),
            Uuid::new_v4().to_string(),
        ));
    }
    second.extend(first.iter().skip(20).take(10).cloned());
    for (path, _, key) in first.iter().skip(30).take(5) {
        second.push((
            path.clone(),
            json!({"amount": "2.00", "reference": "other"}).to_string(),
            key.clone(),
        ));
    }
    let answers = wave(&server, &second).await;
    for (s, text) in &answers[..PAYMENTS] {
        assert_eq!(*s, 200, "every fresh deposit is accepted: {text}");
    }
    for (s, text) in &answers[PAYMENTS..PAYMENTS + 10] {
        assert_eq!(
            (*s, code(text)),
            (409, "duplicate_reference".into()),
            "{text}"
        );
    }
    for (i, (s, text)) in answers[PAYMENTS + 10..PAYMENTS + 20].iter().enumerate() {
        assert_eq!(*s, 200, "{text}");
        assert_eq!(
            text,
            &first_answers[20 + i].1,
            "a retry is answered byte for byte with its first answer"
        );
    }
    for (s, text) in &answers[PAYMENTS + 20..] {
        assert_eq!(
            (*s, code(text)),
            (422, "idempotency_key_reused".into()),
            "{text}"
        );
    }

    // Each payment (of 20.00, so no deposit here is past its amount): created and deposited
    // twice, 10.00 held, nothing else written.
    for id in &ids {
        let (events, held): (i64, Option<Decimal>) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE stream_id = $1), \
                    (SELECT sum(amount) FROM postings WHERE account = 'escrow:' || $1::text)",
        )
        .bind(id)
        .fetch_one(&db.admin)
        .await
        .expect("count");
        assert_eq!(events, 3, "payment {id}");
        assert_eq!(held, Some(Decimal::new(1000, 2)), "payment {id}");
    }
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.admin)
        .await
        .expect("count");
    assert_eq!(total, WRITTEN);
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&db.admin)
        .await
        .expect("count");
    assert_eq!(keys, WRITTEN, "one key per accepted command");

    // Commands of different payments did share transactions.
    let widest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(DISTINCT stream_id) AS n FROM events GROUP BY tx_id) t",
    )
    .fetch_one(&db.admin)
    .await
    .expect("widest");
    assert!(widest >= 2, "no transaction held two payments' events");

    // Every command that had to be refused went through a group first and made it fail
    // (its reference or key is only found taken by the insert): each was run again alone.
    let (_, _, metrics) = server.send("GET", "/metrics", None, None, &[]).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    let alone: f64 = metrics
        .lines()
        .find(|l| l.starts_with("group_commit_commands_total{outcome=\"alone\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(alone >= 25.0, "{metrics}");

    // The hash chains hold across grouped appends.
    e2e::assert_verifies(&db);
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn without_group_commit_each_command_is_its_own_transaction() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(
        &db,
        &["--no-projectors", "--no-group-commit"],
    ));
    let creations: Vec<Req> = (0..20)
        .map(|i| {
            let body = json!({
                "buyer": {"kind": "entity", "id": Uuid::new_v4()},
                "seller": {"kind": "entity", "id": Uuid::new_v4()},
                "purchase_request": {"kind": "external", "ref": format!("pr-{i}")},
                "amount": "10.00", "asset": "USD", "provider": "stripe"});
            (
                "/v1/payments".to_owned(),
                body.to_string(),
                Uuid::new_v4().to_string(),
            )
        })
        .collect();
    for (s, text) in wave(&server, &creations).await {
        assert_eq!(s, 201, "{text}");
    }
    let widest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM events GROUP BY tx_id) t",
    )
    .fetch_one(&db.admin)
    .await
    .expect("widest");
    assert_eq!(widest, 1);
    drop(server);
    db.drop_db().await;
}

/// A group that cannot commit for a while (here: its idempotency key's row is held by an
/// open transaction) holds its payment's stream. A command on that payment decided
/// meanwhile waits for the group instead of burning its retries on it, and both commands
/// are accepted once the group can go on: nothing answers 409 for a stream that never
/// moved under it.
#[tokio::test]
async fn a_command_behind_a_stalled_group_waits_for_it_and_is_accepted() {
    let db = TestDb::new().await;
    let server = Arc::new(Server::start(&db, &["--no-projectors"]));
    let body = json!({
        "buyer": {"kind": "entity", "id": Uuid::new_v4()},
        "seller": {"kind": "entity", "id": Uuid::new_v4()},
        "purchase_request": {"kind": "external", "ref": "pr"},
        "amount": "20.00", "asset": "USD", "provider": "stripe"});
    let (s, text) = post(&server, "/v1/payments", &body.to_string(), "create-1").await;
    assert_eq!(s, 201, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let id = v["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/payments/{id}/deposits");

    // Hold the key the first deposit will use: its group's insert of the key waits.
    let mut holder = db.admin.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO idempotency_keys (client, key, request_hash, status, response, position) \
         SELECT 'checkout', 'held-key', '\\x00', 200, '\\x00', min(position) FROM events",
    )
    .execute(&mut *holder)
    .await
    .expect("hold the key");

    let deposit = |body: &str, key: &str| (path.clone(), body.to_owned(), key.to_owned());
    let first = spawn_post(
        &server,
        deposit(r#"{"amount": "5.00", "reference": "ch-a"}"#, "held-key"),
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let second = spawn_post(
        &server,
        deposit(r#"{"amount": "7.00", "reference": "ch-b"}"#, "free-key"),
    );
    // Longer than 25 lost races' sleeps take: the second command must still be waiting.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        !second.is_finished(),
        "the second command gave up behind the group"
    );
    holder.rollback().await.expect("let the key go");

    let (s1, t1) = first.await.expect("first");
    let (s2, t2) = second.await.expect("second");
    assert_eq!(s1, 200, "{t1}");
    assert_eq!(s2, 200, "{t2}");
    let held: Option<Decimal> =
        sqlx::query_scalar("SELECT sum(amount) FROM postings WHERE account = 'escrow:' || $1")
            .bind(&id)
            .fetch_one(&db.admin)
            .await
            .expect("held");
    assert_eq!(held, Some(Decimal::new(1200, 2)));
    drop(server);
    db.drop_db().await;
}
