//! The whole escrow story over real HTTP against `escrow-ledger serve`: create, deposit,
//! dispute, evidence, a split resolution with a fee, payouts; and who may do what.

#![allow(clippy::too_many_lines)] // a story test reads best as one story

use e2e::server::Server;
use e2e::TestDb;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

async fn balance(pool: &PgPool, account: &str) -> Decimal {
    sqlx::query_scalar("SELECT coalesce(sum(amount), 0) FROM postings WHERE account = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn key() -> String {
    Uuid::new_v4().to_string()
}

#[tokio::test]
async fn the_whole_story_moves_money_exactly() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let coord = server.tokens.coordinator.clone();
    let admin = server.tokens.admin.clone();
    let buyer = Uuid::new_v4();
    let seller = Uuid::new_v4();

    let (s, created) = server
        .post(
            "/v1/payments",
            &coord,
            &json!({
                "buyer": {"kind": "entity", "id": buyer},
                "seller": {"kind": "entity", "id": seller},
                "purchase_request": {"kind": "external", "ref": "tmpl_8f2a"},
                "amount": "125.50", "asset": "USD", "provider": "stripe",
                "metadata": {"order": 42}
            }),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let payment = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["stream_version"], 1);
    assert!(created["position"].as_i64().unwrap() > 0);

    let (s, dep) = server
        .post(
            &format!("/v1/payments/{payment}/deposits"),
            &coord,
            &json!({"amount": "125.50", "reference": "ch_1"}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dep}");
    assert_eq!(dep["stream_version"], 2);

    let (s, opened) = server
        .post(
            "/v1/disputes",
            &coord,
            &json!({"payment_id": payment, "opened_by": {"kind": "entity", "id": buyer}, "role": "buyer",
                    "reason": "not_as_described", "description": "the colour is wrong"}),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{opened}");
    let dispute = opened["id"].as_str().unwrap().to_owned();

    // Frozen: a release is refused while the dispute is open.
    let (s, refused) = server
        .post(
            &format!("/v1/payments/{payment}/releases"),
            &coord,
            &json!({}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused["code"], "escrow_frozen");

    let (s, ev) = server
        .post(
            &format!("/v1/disputes/{dispute}/evidence"),
            &coord,
            &json!({"submitted_by": {"kind": "entity", "id": buyer}, "type": "image", "url": "https://img.example/1.png"}),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ev}");
    let (s, _) = server
        .post(
            &format!("/v1/disputes/{dispute}/assignment"),
            &admin,
            &json!({"admin": {"kind": "external", "ref": "admin:alice"}}),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, resolved) = server
        .post(
            &format!("/v1/disputes/{dispute}/resolution"),
            &admin,
            &json!({"outcome": "split", "seller_amount": "100.50", "buyer_amount": "25.00",
                    "fees": [{"kind": "fee", "amount": "2.50"}], "note": "partial refund"}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{resolved}");

    let seller_acct = format!("seller:{seller}");
    let buyer_acct = format!("buyer:{buyer}");
    assert_eq!(
        balance(&db.admin, &format!("escrow:{payment}")).await,
        Decimal::ZERO
    );
    assert_eq!(
        balance(&db.admin, &seller_acct).await,
        Decimal::new(9800, 2)
    );
    assert_eq!(balance(&db.admin, &buyer_acct).await, Decimal::new(2500, 2));
    assert_eq!(
        balance(&db.admin, "platform:fees").await,
        Decimal::new(250, 2)
    );

    let (s, paid) = server
        .post(
            &format!("/v1/payments/{payment}/payouts"),
            &coord,
            &json!({"party": "seller", "amount": "98.00", "reference": "po_1"}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{paid}");
    let (s, too_much) = server
        .post(
            &format!("/v1/payments/{payment}/payouts"),
            &coord,
            &json!({"party": "buyer", "amount": "25.01", "reference": "po_2"}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(too_much["code"], "insufficient_funds");
    let (s, _) = server
        .post(
            &format!("/v1/payments/{payment}/payouts"),
            &coord,
            &json!({"party": "buyer", "amount": "25", "reference": "po_2"}),
            Some(&key()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(balance(&db.admin, &seller_acct).await, Decimal::ZERO);
    assert_eq!(
        balance(&db.admin, "external:stripe").await,
        Decimal::new(-250, 2)
    );

    // Every asset's postings sum to zero over the whole store.
    let total: Decimal = sqlx::query_scalar("SELECT coalesce(sum(amount), 0) FROM postings")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(total, Decimal::ZERO);

    // The audit trail: every event with who and why.
    let (s, trail) = server
        .get(
            &format!("/v1/payments/{payment}/events"),
            &server.tokens.finance,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let types: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "PaymentCreated",
            "FundsDeposited",
            "EscrowFrozen",
            "DisputeSettled",
            "PayoutMade",
            "PayoutMade"
        ]
    );
    let settled = &trail["events"][3];
    assert_eq!(
        settled["metadata"]["actor"],
        json!({"name": "ops-admin", "role": "admin"})
    );
    assert_eq!(settled["postings"].as_array().unwrap().len(), 4);
    assert!(settled["metadata"]["correlation_id"].is_string());

    // The dispute stream got its resolution, without postings.
    let dispute_postings: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM postings p JOIN events e USING (position) WHERE e.stream_id = $1",
    )
    .bind(Uuid::parse_str(&dispute).unwrap())
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!(dispute_postings, 0);
    e2e::assert_verifies(&db);
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn roles_decide_who_may_post_what() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let body = json!({
        "buyer": {"kind": "entity", "id": Uuid::new_v4()}, "seller": {"kind": "entity", "id": Uuid::new_v4()},
        "purchase_request": {"kind": "entity", "id": Uuid::new_v4()}, "amount": "10", "asset": "EUR", "provider": "manual"
    });
    let (s, v) = server
        .post("/v1/payments", &server.tokens.finance, &body, None)
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, Value::from("forbidden"))
    );
    let (s, v) = server
        .post("/v1/payments", "el_not_a_token", &body, None)
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::UNAUTHORIZED, Value::from("unauthorized"))
    );
    let (s, _, v) = server
        .send("POST", "/v1/payments", None, Some(&body.to_string()), &[])
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::UNAUTHORIZED, Value::from("unauthorized"))
    );
    let (s, v) = server
        .post("/v1/adjustments", &server.tokens.coordinator,
              &json!({"from": "platform:suspense", "to": "platform:fees", "amount": "1", "asset": "USD", "reason": "x"}), Some("k"))
        .await;
    assert_eq!(
        (s, v["code"].clone()),
        (StatusCode::FORBIDDEN, Value::from("forbidden"))
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.admin)
        .await
        .unwrap();
    assert_eq!(events, 0);
    let (s, created) = server
        .post("/v1/payments", &server.tokens.coordinator, &body, None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    // Health and metrics need no token; the OpenAPI document, like the rest, needs one.
    let (s, _, _) = server.send("GET", "/healthz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, ready) = server.send("GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    let (s, _, refused) = server.send("GET", "/openapi.json", None, None, &[]).await;
    assert_eq!(
        (s, refused["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, doc) = server.get("/openapi.json", &server.tokens.finance).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        doc["paths"]["/v1/payments/{id}/releases"]["post"].is_object(),
        "{doc}"
    );
    let (s, _, metrics) = server.send("GET", "/metrics", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    let text = metrics.as_str().unwrap_or("");
    for series in [
        "commands_total{command=\"create_payment\",outcome=\"accepted\"} ",
        "http_requests_total{method=\"POST\",path=\"/v1/payments\",status=\"201\"} ",
        "http_requests_total{method=\"GET\",path=\"/openapi.json\",status=\"401\"} 1\n",
        "http_request_duration_seconds_count{method=\"POST\",path=\"/v1/payments\"} ",
    ] {
        assert!(text.contains(series), "no {series} in\n{text}");
    }
    drop(server);
    db.drop_db().await;
}

/// The README's session is `scripts/story.sh`: it runs against a live server, checks each
/// answer's status, and tells a new story each time (its keys and deposit reference are
/// the new payment's), so a second run succeeds too.
#[tokio::test]
async fn the_readme_story_script_runs_and_runs_again() {
    let db = TestDb::new().await;
    let server = Server::start(&db, &["--no-projectors"]);
    let dir = std::env::temp_dir().join(format!("el-story-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, token) in [
        ("c.txt", &server.tokens.coordinator),
        ("a.txt", &server.tokens.admin),
        ("f.txt", &server.tokens.finance),
    ] {
        std::fs::write(dir.join(file), format!("token: {token}\n")).unwrap();
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/story.sh");
    for run in 1..=2 {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .current_dir(&dir)
            .env("API", &server.base)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\"code\":\"escrow_frozen\""), "{stdout}");
        assert!(stdout.contains("\"code\":\"forbidden\""), "{stdout}");
        assert!(stdout.contains("DisputeSettled"), "{stdout}");
        assert_eq!(stdout.matches(" PayoutMade ").count(), 2, "{stdout}");
    }
    let pool = db.service_pool(1).await;
    assert_eq!(balance(&pool, "platform:fees").await, Decimal::new(500, 2));
    assert_eq!(
        balance(&pool, "external:stripe").await,
        Decimal::new(-500, 2)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    db.drop_db().await;
}
