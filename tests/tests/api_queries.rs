//! The query endpoints over real HTTP against `escrow-ledger serve` with its projectors:
//! read-your-writes with `min_position`, filters and cursors, `as_of`, the admin queue,
//! CSV, read rights per role, and projection lag in `/readyz` and `/metrics`.

#![allow(clippy::too_many_lines)] // a story test reads best as one story
#![allow(clippy::many_single_char_names)] // (status, value, position) triples, read top to bottom

use std::time::{Duration, Instant};

use e2e::server::Server;
use e2e::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Executor;
use uuid::Uuid;

fn key() -> String {
    Uuid::new_v4().to_string()
}

async fn create(server: &Server, seller: Uuid, amount: &str, provider: &str) -> (String, i64) {
    let (s, v) = server
        .post(
            "/v1/payments",
            &server.tokens.coordinator,
            &json!({
                "buyer": {"kind": "entity", "id": Uuid::new_v4()},
                "seller": {"kind": "entity", "id": seller},
                "purchase_request": {"kind": "external", "ref": "pr-1"},
                "amount": amount, "asset": "USD", "provider": provider
            }),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["position"].as_i64().unwrap(),
    )
}

async fn command(server: &Server, token: &str, path: &str, body: &Value) -> i64 {
    let (s, v) = server.post(path, token, body, Some(&key())).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v["position"].as_i64().unwrap()
}

#[tokio::test]
async fn queries_read_their_writes_page_filter_and_check_rights() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &[]);
    let coord = server.tokens.coordinator.clone();
    let admin = server.tokens.admin.clone();
    let finance = server.tokens.finance.clone();
    let seller = Uuid::new_v4();

    // Read-your-writes: right after each command, its effect is visible.
    let (payment, p) = create(&server, seller, "125.50", "stripe").await;
    let (s, v) = server
        .get(&format!("/v1/payments/{payment}?min_position={p}"), &coord)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "awaiting_deposit");
    assert_eq!(v["amount"], "125.50");
    assert_eq!(v["held"], "0.00");
    assert_eq!(
        v["purchase_request"],
        json!({"kind": "external", "ref": "pr-1"})
    );

    let two_hours_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(2)).to_rfc3339();
    let p = command(
        &server,
        &coord,
        &format!("/v1/payments/{payment}/deposits"),
        &json!({"amount": "125.50", "reference": "ch_1", "occurred_at": two_hours_ago}),
    )
    .await;
    let (_, v) = server
        .get(&format!("/v1/payments/{payment}?min_position={p}"), &coord)
        .await;
    assert_eq!(
        (v["status"].as_str(), v["held"].as_str()),
        (Some("funded"), Some("125.50"))
    );
    assert!(v["funded_at"].is_string());

    let p = command(
        &server,
        &coord,
        &format!("/v1/payments/{payment}/releases"),
        &json!({"amount": "100.00", "fees": [{"kind": "fee", "amount": "2.50"}]}),
    )
    .await;
    let (_, v) = server
        .get(&format!("/v1/payments/{payment}?min_position={p}"), &admin)
        .await;
    assert_eq!(v["status"], "partially_released");
    assert_eq!(
        (v["released"].as_str(), v["fees"].as_str()),
        (Some("100.00"), Some("2.50"))
    );
    assert_eq!(v["held"], "25.50");

    // Accounts: admin and finance; as_of sums postings up to an instant.
    let (s, v) = server
        .get(
            &format!("/v1/accounts/platform:fees?min_position={p}"),
            &admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["balances"][0],
        json!({"asset": "USD", "balance": "2.50", "postings": 1, "last_position": p})
    );
    let (s, _) = server.get("/v1/accounts/platform:fees", &coord).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let escrow = format!("escrow:{payment}");
    let three_hours_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(3)).to_rfc3339();
    let (_, v) = server
        .get(
            &format!(
                "/v1/accounts/{escrow}?as_of={}",
                urlencode(&three_hours_ago)
            ),
            &finance,
        )
        .await;
    assert_eq!(v["balances"][0]["balance"], "0.00", "{v}");
    let one_hour_ago = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let (_, v) = server
        .get(
            &format!("/v1/accounts/{escrow}?as_of={}", urlencode(&one_hour_ago)),
            &finance,
        )
        .await;
    assert_eq!(v["balances"][0]["balance"], "125.50", "{v}");
    let (_, v) = server
        .get(&format!("/v1/accounts/{escrow}"), &finance)
        .await;
    assert_eq!(v["balances"][0]["balance"], "25.50");
    let (s, _) = server
        .get(&format!("/v1/accounts/escrow:{}", Uuid::new_v4()), &finance)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = server.get("/v1/accounts/nonsense", &finance).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // More payments for lists, filters and cursors.
    let mut last = 0;
    for (i, provider) in ["wire", "wire", "stripe", "wire"].iter().enumerate() {
        let (id, _) = create(&server, seller, &format!("{}.00", 10 + i), provider).await;
        last = command(
            &server,
            &coord,
            &format!("/v1/payments/{id}/deposits"),
            &json!({"amount": "1.00", "reference": format!("w{i}")}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, v) = server
            .get(
                &format!("/v1/payments?provider=wire&limit=2&min_position={last}&cursor={cursor}"),
                &coord,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for p in v["payments"].as_array().unwrap() {
            assert_eq!(p["provider"], "wire");
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 3);
    let (_, v) = server
        .get(
            &format!("/v1/payments?seller={seller}&status=partially_funded"),
            &coord,
        )
        .await;
    assert_eq!(v["payments"].as_array().unwrap().len(), 4);
    let (s, _) = server.get("/v1/payments?colour=red", &coord).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = server.get("/v1/payments?status=fundd", &coord).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "validation_failed");
    // Empty parameters, as contract.md writes the template, are absent parameters.
    let (s, all) = server
        .get(&format!("/v1/payments?min_position={last}"), &coord)
        .await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert!(!all["payments"].as_array().unwrap().is_empty());
    let (s, empty) = server
        .get(
            &format!(
                "/v1/payments?status=&provider=&buyer=&seller=&from=&to=&cursor=&limit=&min_position={last}"
            ),
            &coord,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{empty}");
    assert_eq!(empty, all);
    let (s, feed) = server.get("/v1/events?after=&limit=", &admin).await;
    assert_eq!(s, StatusCode::OK, "{feed}");
    assert_eq!(feed, server.get("/v1/events", &admin).await.1);
    // The reads straight from the store take min_position like every query (met at
    // once) and refuse what they do not know, as the projections' reads do.
    let first = seen[0].clone();
    let trail = server
        .get(&format!("/v1/payments/{first}/events"), &coord)
        .await;
    assert_eq!(trail.0, StatusCode::OK, "{}", trail.1);
    let (s, v) = server
        .get(
            &format!("/v1/payments/{first}/events?min_position={last}"),
            &coord,
        )
        .await;
    assert_eq!((s, &v), (StatusCode::OK, &trail.1));
    for bad in ["limit=5", "min_position=-1", "min_position=x"] {
        let (s, v) = server
            .get(&format!("/v1/payments/{first}/events?{bad}"), &coord)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["code"], "validation_failed", "{bad}");
        let legacy = format!("/v1/legacy/payments/{}?{bad}", "ab".repeat(12));
        let (s, v) = server.get(&legacy, &coord).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{legacy}: {v}");
    }
    let (s, _) = server.get("/v1/events?min_position=-1", &admin).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = server.get("/v1/payments?cursor=zz", &coord).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (_, v) = server
        .get(
            &format!("/v1/accounts?prefix=seller:&limit=1&min_position={last}"),
            &admin,
        )
        .await;
    assert_eq!(v["accounts"][0]["account"], format!("seller:{seller}"));
    assert_eq!(v["accounts"][0]["balance"], "97.50");

    // The admin queue, most urgent first, and a dispute with its children.
    let (s, opened) = server
        .post(
            "/v1/disputes",
            &coord,
            &json!({"payment_id": payment, "opened_by": {"kind": "entity", "id": Uuid::new_v4()},
                    "role": "buyer", "reason": "not_as_described", "description": "scratched"}),
            Some(&key()),
        )
        .await;
    assert!(s.is_success(), "{opened}");
    let dispute = opened["id"].as_str().unwrap().to_owned();
    let (other, _) = create(&server, seller, "5.00", "stripe").await;
    command(
        &server,
        &coord,
        &format!("/v1/payments/{other}/deposits"),
        &json!({"amount": "5.00", "reference": "o1"}),
    )
    .await;
    let (_, second) = server
        .post(
            "/v1/disputes",
            &coord,
            &json!({"payment_id": other, "opened_by": {"kind": "entity", "id": Uuid::new_v4()},
                    "role": "buyer", "reason": "item_not_received", "description": "nothing"}),
            Some(&key()),
        )
        .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let admin_id = Uuid::new_v4();
    command(
        &server,
        &admin,
        &format!("/v1/disputes/{second_id}/priority"),
        &json!({"priority": "urgent"}),
    )
    .await;
    command(
        &server,
        &admin,
        &format!("/v1/disputes/{dispute}/assignment"),
        &json!({"admin": {"kind": "entity", "id": admin_id}}),
    )
    .await;
    command(&server, &coord, &format!("/v1/disputes/{dispute}/evidence"),
        &json!({"submitted_by": {"kind": "entity", "id": Uuid::new_v4()}, "type": "image", "url": "https://x/y.jpg"})).await;
    let p = command(&server, &coord, &format!("/v1/disputes/{dispute}/messages"),
        &json!({"author": {"kind": "entity", "id": admin_id}, "author_role": "admin", "body": "looking"})).await;
    let (_, q) = server
        .get(&format!("/v1/disputes?min_position={p}"), &admin)
        .await;
    let ids: Vec<&str> = q["disputes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![second_id.as_str(), dispute.as_str()], "{q}");
    let (_, q) = server
        .get(
            &format!("/v1/disputes?admin={admin_id}&status=open"),
            &coord,
        )
        .await;
    assert_eq!(q["disputes"].as_array().unwrap().len(), 1);
    let (_, d) = server.get(&format!("/v1/disputes/{dispute}"), &coord).await;
    assert_eq!(d["evidence"].as_array().unwrap().len(), 1);
    assert_eq!(d["messages"][0]["body"], "looking");
    let events: Vec<&str> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        vec![
            "DisputeOpened",
            "AdminAssigned",
            "EvidenceSubmitted",
            "MessagePosted"
        ]
    );
    let (_, v) = server
        .get(&format!("/v1/payments/{payment}?min_position={p}"), &coord)
        .await;
    assert_eq!(
        (v["status"].as_str(), v["dispute_id"].as_str()),
        (Some("disputed"), Some(dispute.as_str()))
    );

    // Split resolution, then the finance reports.
    let p = command(&server, &admin, &format!("/v1/disputes/{dispute}/resolution"),
        &json!({"outcome": "split", "seller_amount": "15.50", "buyer_amount": "10.00", "fees": [{"kind": "fee", "amount": "0.50"}]})).await;
    let (_, d) = server
        .get(&format!("/v1/disputes/{dispute}?min_position={p}"), &admin)
        .await;
    assert_eq!(d["status"], "resolved");
    assert_eq!(d["resolution"]["outcome"], "split");
    let (s, r) = server
        .get(
            &format!("/v1/reconciliation/buckets?group_by=provider&min_position={p}"),
            &finance,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["group_by"], json!(["provider", "asset"]));
    let stripe = r["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["provider"] == "stripe")
        .unwrap();
    assert_eq!(stripe["payments"], 3);
    assert_eq!(stripe["fees"], "3.00");
    let (s, headers, body) = server
        .send(
            "GET",
            "/v1/reconciliation/buckets",
            Some(&finance),
            None,
            &[("accept", "text/csv")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = body.as_str().unwrap();
    assert!(
        text.starts_with("provider,status,asset,day,payments,amount,"),
        "{text}"
    );
    let (_, all) = server.get("/v1/reconciliation/buckets", &finance).await;
    assert_eq!(
        text.lines().count(),
        1 + all["buckets"].as_array().unwrap().len()
    );
    let (s, _) = server.get("/v1/reconciliation/buckets", &admin).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Filters no payment can match are typos, not "zero payments"; buckets are whole days.
    for bad in [
        "status=relased",
        "asset=usd",
        "asset=XYZ",
        "provider=STRIPE",
        "from=2026-12-03&to=2026-12-02",
        "to=2026-12-02T10:00:00Z",
    ] {
        let (s, v) = server
            .get(&format!("/v1/reconciliation/buckets?{bad}"), &finance)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["code"], "validation_failed", "{bad}");
    }
    let (s, v) = server.get("/v1/payments?provider=STRIPE", &finance).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = server
        .get(
            "/v1/payments?from=2026-12-03T00:00:00Z&to=2026-12-01T00:00:00Z",
            &finance,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = server
        .get("/v1/reconciliation/buckets?from=2026-12-02&to=2026-12-02&asset=USD&status=funded&provider=stripe", &finance)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, tb) = server
        .get(
            &format!("/v1/reconciliation/trial-balance?min_position={p}"),
            &finance,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{tb}");
    assert_eq!(tb["balanced"], true);
    assert_eq!(
        tb["totals"],
        json!([{"asset": "USD", "total": "0.00", "accounts": tb["totals"][0]["accounts"]}])
    );
    // Every account, zero balances too, on request (contract: "every account's balance").
    let (_, every) = server
        .get(
            &format!("/v1/reconciliation/trial-balance?min_position={p}&include_zero=true"),
            &finance,
        )
        .await;
    let (all, nonzero): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE balance <> 0) FROM finance.account_balances",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert!(all > nonzero, "the story leaves no zero balance to list");
    let listed = |v: &Value| i64::try_from(v["accounts"].as_array().unwrap().len()).unwrap();
    assert_eq!((listed(&every), listed(&tb)), (all, nonzero), "{every}");
    assert_eq!(every["balanced"], true);
    let (_, tb) = server
        .get(
            &format!(
                "/v1/reconciliation/trial-balance?as_of={}",
                urlencode(&three_hours_ago)
            ),
            &finance,
        )
        .await;
    assert_eq!(tb["accounts"].as_array().unwrap().len(), 0, "{tb}");

    // Lag per projector in /readyz and /metrics.
    let (s, ready) = server.get("/readyz", &finance).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ready["projections"]["balances"]["halted"], Value::Null);
    assert!(
        ready["projections"]["payments"]["lag_events"].is_i64(),
        "{ready}"
    );
    let (_, _, metrics) = server.send("GET", "/metrics", None, None, &[]).await;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("projection_lag_events{projector=\"payments\"}"));
    db.drop_db().await;
}

#[tokio::test]
async fn min_position_not_reached_answers_503_with_retry_after() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let (payment, p) = create(&server, Uuid::new_v4(), "1.00", "stripe").await;
    let started = Instant::now();
    let (s, headers, v) = server
        .send(
            "GET",
            &format!("/v1/payments/{payment}?min_position={p}"),
            Some(&server.tokens.coordinator),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], "unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(started.elapsed() >= Duration::from_secs(4));
    // Without min_position the (stale) projection answers at once.
    let (s, _) = server
        .get(
            &format!("/v1/payments/{payment}"),
            &server.tokens.coordinator,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    db.drop_db().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

/// Dispute rows are written in statements of bounded JSON: PostgreSQL refuses a jsonb
/// array past 256 MB, and one projector batch of large messages (a legacy import holds
/// 1 MB ones) failed, and failed again on every retry. Here 40 MB of messages in one
/// batch take two statements and all arrive.
#[tokio::test]
async fn a_batch_of_large_dispute_messages_projects_in_several_statements() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let coord = server.tokens.coordinator.clone();
    let (payment, _) = create(&server, Uuid::new_v4(), "10.00", "stripe").await;
    let buyer = json!({"kind": "entity", "id": Uuid::new_v4()});
    let (s, v) = server
        .post(
            "/v1/disputes",
            &coord,
            &json!({"payment_id": payment, "opened_by": buyer, "role": "buyer",
                    "reason": "not_as_described", "description": "x"}),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let dispute = v["id"].as_str().unwrap().to_owned();
    let body = "m".repeat(2_000_000);
    let n = 20;
    for _ in 0..n {
        command(
            &server,
            &coord,
            &format!("/v1/disputes/{dispute}/messages"),
            &json!({"author": buyer, "author_role": "buyer", "body": body}),
        )
        .await;
    }
    drop(server);
    project_now(&db);
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(length(body)), 0)::int8 FROM finance.dispute_messages \
         WHERE dispute_id = $1::uuid",
    )
    .bind(&dispute)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((count, bytes), (n, n * 2_000_000));
    assert!(
        usize::try_from(bytes).unwrap() > projections::DISPUTE_STATEMENT_BYTES,
        "the batch must need more than one statement"
    );
    db.drop_db().await;
}

/// Payment rows are written in statements of bounded metadata: a `jsonb[]` parameter may
/// not pass 1 GB, and a payment's metadata may take most of a 2 MiB request. Here 40 MB
/// of metadata in one batch take two statements and all arrive.
#[tokio::test]
async fn a_batch_of_payments_with_large_metadata_projects_in_several_statements() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let coord = server.tokens.coordinator.clone();
    let note = "n".repeat(2_000_000);
    let n = 20;
    for _ in 0..n {
        command(
            &server,
            &coord,
            "/v1/payments",
            &json!({
                "buyer": {"kind": "entity", "id": Uuid::new_v4()},
                "seller": {"kind": "entity", "id": Uuid::new_v4()},
                "purchase_request": {"kind": "external", "ref": "pr-big"},
                "amount": "1.00", "asset": "USD", "provider": "stripe",
                "metadata": {"note": note}
            }),
        )
        .await;
    }
    drop(server);
    project_now(&db);
    let (count, bytes): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(length(metadata ->> 'note')), 0)::int8 \
         FROM finance.payments",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((count, bytes), (n, n * 2_000_000));
    assert!(
        usize::try_from(bytes).unwrap() > projections::PAYMENT_STATEMENT_BYTES,
        "the batch must need more than one statement"
    );
    db.drop_db().await;
}

/// A projector whose steps fail on a database error retries; `/readyz` and `/metrics`
/// say so (since when, and the error) instead of calling it healthy, and clear it once a
/// step succeeds again.
#[tokio::test]
async fn a_failing_projector_shows_in_readyz_and_clears_when_it_recovers() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &[]);
    let finance = server.tokens.finance.clone();
    db.admin
        .execute("REVOKE INSERT ON projection.payments_a FROM escrow_ledger_app")
        .await
        .unwrap();
    create(&server, Uuid::new_v4(), "5.00", "stripe").await;
    let failing = |ready: &Value| ready["projections"]["payments"]["failing"].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (s, ready) = server.get("/readyz", &finance).await;
        assert_eq!(s, StatusCode::OK, "{ready}");
        if !failing(&ready).is_null() || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = failing(&ready)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("permission denied"), "{ready}");
    assert!(failing(&ready)["since"].is_string(), "{ready}");
    // Finance sees it too, in its own schema.
    let mut tx = db.admin.begin().await.unwrap();
    tx.execute("SET LOCAL ROLE escrow_ledger_finance")
        .await
        .unwrap();
    let seen: Option<String> = sqlx::query_scalar(
        "SELECT last_error FROM finance.projector_status WHERE projector = 'payments'",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert!(
        seen.is_some_and(|e| e.contains("permission denied")),
        "finance.projector_status"
    );
    drop(tx);
    assert_eq!(ready["projections"]["payments"]["halted"], Value::Null);
    let (_, _, metrics) = server.send("GET", "/metrics", None, None, &[]).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("projection_failing{projector=\"payments\"} 1"),
        "{metrics}"
    );

    db.admin
        .execute("GRANT INSERT ON projection.payments_a TO escrow_ledger_app")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let (_, ready) = server.get("/readyz", &finance).await;
        let done = failing(&ready).is_null() && ready["projections"]["payments"]["lag_events"] == 0;
        if done || Instant::now() > deadline {
            break ready;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(failing(&ready).is_null(), "{ready}");
    assert_eq!(ready["projections"]["payments"]["lag_events"], 0, "{ready}");
    db.drop_db().await;
}

/// Runs `escrow-ledger project` (the projectors once through) on `db`.
fn project_now(db: &TestDb) {
    let out = e2e::run_binary(&["project"], &[("DATABASE_URL", db.url.as_str())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A payment stamped before the cursor's last payment but committed after a page was
/// handed out (as a command decided earlier and committed later is) is on a later page,
/// never skipped: pages follow the feed, the order rows become visible in.
#[tokio::test]
async fn a_payment_committed_while_a_client_pages_is_not_skipped() {
    use ledger::event::{Actor, ExpectedVersion, Metadata, NewEvent, StreamAppend};
    use ledger::payment::PaymentCreated;
    use ledger::{Asset, Reference};

    let db = TestDb::new().await;
    let server = Server::start(&db, &[]);
    let coord = server.tokens.coordinator.clone();
    let seller = Uuid::new_v4();
    let (first, _) = create(&server, seller, "10.00", "stripe").await;
    let (second, p) = create(&server, seller, "11.00", "stripe").await;
    let page = |cursor: String, min: i64| {
        let server = &server;
        let coord = &coord;
        async move {
            let (s, v) = server
                .get(
                    &format!(
                        "/v1/payments?seller={seller}&limit=1&min_position={min}&cursor={cursor}"
                    ),
                    coord,
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            let ids: Vec<String> = v["payments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect();
            (ids, v["next_cursor"].as_str().map(str::to_owned))
        }
    };
    let (ids, cursor) = page(String::new(), p).await;
    assert_eq!(ids, vec![first.clone()]);
    let mut cursor = cursor.expect("a second page");

    // Created a minute before both, committed now.
    let late = Uuid::new_v4();
    let created = PaymentCreated {
        payment_id: late,
        buyer: Reference::Entity { id: Uuid::new_v4() },
        seller: Reference::Entity { id: seller },
        purchase_request: Some(Reference::Entity { id: Uuid::new_v4() }),
        seller_offer: None,
        amount: rust_decimal::Decimal::new(1200, 2),
        asset: Asset::Usd,
        provider: "stripe".into(),
        metadata: None,
    };
    let meta = Metadata {
        correlation_id: Uuid::new_v4(),
        causation_id: None,
        actor: Actor {
            name: "late-writer".into(),
            role: "coordinator".into(),
        },
        source: "test".into(),
        legacy: None,
    };
    let store = ledger::store::EventStore::new(db.service_pool(1).await);
    let appended = store
        .append(&[StreamAppend {
            stream_id: late,
            stream_type: "payment".into(),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent::new(
                "PaymentCreated",
                serde_json::to_value(&created).unwrap(),
                &meta,
                chrono::Utc::now() - chrono::TimeDelta::minutes(1),
                Vec::new(),
            )],
        }])
        .await
        .unwrap();
    let min = appended.last().unwrap().position;

    let mut rest = Vec::new();
    loop {
        let (ids, next) = page(cursor.clone(), min).await;
        rest.extend(ids);
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    assert_eq!(rest, vec![second, late.to_string()]);
    db.drop_db().await;
}

/// Money an administrator moved out of a payment's escrow shows in the payment's row
/// (review helper-36: it read funded, 0.00 held, nothing released or refunded, and no
/// figure said where the 100.00 went): deposited − released − refunded + escrow_adjusted
/// is what is held.
#[tokio::test]
async fn an_escrow_adjustment_shows_in_the_payment() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &[]);
    let coord = server.tokens.coordinator.clone();
    let admin = server.tokens.admin.clone();
    let (id, _) = create(&server, Uuid::new_v4(), "100.00", "stripe").await;
    command(
        &server,
        &coord,
        &format!("/v1/payments/{id}/deposits"),
        &json!({"amount": "100.00", "reference": "ch_adj"}),
    )
    .await;
    let p = command(
        &server,
        &admin,
        "/v1/adjustments",
        &json!({"from": format!("escrow:{id}"), "to": "platform:adjustments",
                "amount": "100.00", "asset": "USD", "reason": "chargeback outside the ledger",
                "payment_id": id}),
    )
    .await;
    let (s, v) = server
        .get(&format!("/v1/payments/{id}?min_position={p}"), &coord)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["held"], "0.00", "{v}");
    assert_eq!(v["deposited"], "100.00", "{v}");
    assert_eq!(v["escrow_adjusted"], "-100.00", "{v}");
    let sql: String = sqlx::query_scalar(
        "SELECT escrow_adjusted::text FROM finance.payments WHERE payment_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(
        sql.parse::<rust_decimal::Decimal>().unwrap(),
        rust_decimal::Decimal::new(-10000, 2)
    );
    db.drop_db().await;
}
